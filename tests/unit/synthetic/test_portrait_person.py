"""One 360-degree portrait subject's two videos (the static turn and the dynamic video) and its true template: the
same person in both, a neutral turn all the way round, and a template whose silhouette is the images' masks."""

import math
from dataclasses import replace

import pytest
import torch

from headfields.cameras import pixel_rays
from headfields.data import load_insta_dataset
from headfields.geometry import TriangleMesh, ray_intersect
from headfields.parametric import load_model
from headfields.synthetic import (
    SyntheticIdentity,
    SyntheticVideoConfig,
    load_template_truth,
    make_synthetic_video,
    portrait_person,
)
from headfields.synthetic.video import _cache_text
from headfields.synthetic.video_config import PERSON_SHAPES, PORTRAIT_EXPRESSION_GAIN

SMALL = dict(resolution=64, supersampling=1)


@pytest.fixture(scope="module")
def person(tmp_path_factory):
    turn, dynamic = portrait_person(seed=3, **SMALL)
    turn = replace(turn, num_frames=16, num_val=1, num_test=3)
    dynamic = replace(dynamic, num_frames=12, num_val=1, num_test=3, episode_frames=3)
    folder = tmp_path_factory.mktemp("person")
    return make_synthetic_video(folder / "turn", turn), make_synthetic_video(folder / "dynamic", dynamic)


def _frames(root):
    parts = [load_insta_dataset(root, split) for split in ("train", "val", "test")]
    return parts, torch.cat([p.params.pose for p in parts]), torch.cat([p.masks for p in parts])


def test_the_turn_is_neutral_and_goes_all_the_way_round(person):
    parts, pose, _ = _frames(person[0])
    assert all(float(p.params.expression.abs().max()) == 0.0 for p in parts)
    assert float(pose[:, 1:].abs().max()) == 0.0  # no joint but the root turns: jaw shut, eyes ahead, neck still
    turning = pose[: len(parts[0]) + len(parts[1]), 0, 1].double()  # the training and validation frames' one turn
    yaw = torch.sort(torch.remainder(turning, 2 * math.pi)).values
    gaps = torch.diff(torch.cat([yaw, yaw[:1] + 2 * math.pi]))
    assert float(gaps.max()) < 1.01 * 2 * math.pi / len(yaw)  # evenly round: every side seen


def test_both_videos_show_one_person(person):
    turn, dynamic = (load_insta_dataset(root, "train") for root in person)
    expected = torch.zeros(turn.params.shape.shape)
    expected[:PERSON_SHAPES] = torch.tensor(SyntheticIdentity.random(PERSON_SHAPES, seed=3).shape)
    assert torch.equal(turn.params.shape, expected.to(turn.params.shape)) and torch.equal(dynamic.params.shape, turn.params.shape)
    assert float(dynamic.params.expression.abs().max()) > 0.1  # the dynamic video's face moves
    (a, faces), (b, _) = (load_template_truth(root) for root in person)
    assert torch.equal(a, b) and faces.shape[1] == 3


def test_the_true_template_is_the_bare_body_but_for_the_hair(person):
    root = person[0]
    truth, faces = load_template_truth(root)
    model = load_model(root / "model", model_type="smplx")
    shape = load_insta_dataset(root, "train").params.shape
    body = model(shape=shape).canonical_vertices
    moved = (truth - body).norm(dim=-1)
    scalp = torch.zeros(len(body), dtype=torch.bool)
    scalp[model.regions["hair"]] = True
    assert float(moved[~scalp].median()) == 0.0  # the face, the neck and the torso: the body's own surface
    # The hair stands 1 to 6 cm off the scalp (HairVolumeConfig's thickness), most of it thick.
    assert 0.005 < float(moved[scalp].median()) and float(moved.max()) < 0.065
    assert bool(((truth - body) * (body - body[scalp].mean(0))).sum(-1)[scalp].ge(-1e-6).all())  # outwards only


@pytest.mark.parametrize("which", [0, 1])
def test_the_true_template_posed_casts_the_images_silhouettes(person, which):
    """The truth posed by each frame's true parameters (the scalp rides the head joint, as the hair does) and ray
    cast from the frame's camera covers the pixels the images' masks do; the bare body misses the hair's."""
    root = person[which]
    parts, _, masks = _frames(root)
    truth, faces = load_template_truth(root)
    model = load_model(root / "model", model_type="smplx")
    config_gain = 1.0 if which == 0 else PORTRAIT_EXPRESSION_GAIN  # what the dynamic video renders of its parameters
    params = [p.params for p in parts]
    expression = torch.cat([p.expression for p in params]) * config_gain
    pose = torch.cat([p.pose for p in params])
    pose[:, model.joint_index("jaw")] *= config_gain
    head = model(shape=params[0].shape, expression=expression, pose=pose, translation=torch.cat([p.translation for p in params]))
    rotation = torch.einsum("vj,bjrc->bvrc", model.lbs_weights, head.joint_transforms[..., :3, :3])
    posed = head.vertices + torch.einsum("bvrc,vc->bvr", rotation, truth - head.canonical_vertices)
    bodies = {"truth": TriangleMesh(posed, faces), "body": TriangleMesh(head.vertices, faces)}
    cameras = [p.cameras for p in parts]
    size = parts[0].images.shape[1]
    steps = torch.arange(size) + 0.5
    centres = torch.stack(torch.meshgrid(steps, steps, indexing="xy"), dim=-1).reshape(-1, 2)
    views = [(part, i) for part in cameras for i in range(part.num_frames)]  # the frames in the masks' order
    iou = {}
    for name, mesh in bodies.items():
        inter = union = 0
        for f, (part, i) in enumerate(views):
            rays = pixel_rays(part, i, centres)
            hit = ray_intersect(mesh, rays.origins, rays.directions, frame=f).hit.reshape(size, size)
            inter, union = inter + int((hit & masks[f]).sum()), union + int((hit | masks[f]).sum())
        iou[name] = inter / union
    assert iou["truth"] > 0.98 and iou["body"] < iou["truth"] - 0.05, iou


@pytest.mark.parametrize(
    "fields, message",
    [
        (dict(turn=True), "turn: expected the orbit video"),
        (dict(shape=(0.5, float("nan"))), "shape: expected a tuple of finite shape coefficients"),
        (dict(shape=(1.0,), identity=SyntheticIdentity.random(10, seed=0)), "shape: expected None with an identity"),
    ],
)
def test_a_bad_turn_or_shape_is_refused_by_name(fields, message):
    with pytest.raises(ValueError, match=message):
        SyntheticVideoConfig(**fields)


def test_the_videos_cached_before_keep_their_keys():
    """The new fields at their defaults leave the cache key's text as it was (the videos' output is the same)."""
    before = _cache_text(SyntheticVideoConfig.portrait360())
    assert "turn=" not in before and "shape=" not in before
    assert "turn=True" in _cache_text(portrait_person()[0]) and "shape=(" in _cache_text(portrait_person()[1])
