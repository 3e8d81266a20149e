"""The personal template from a turn's masks against the true one (portrait_person's static turn, its poses and
cameras known): the hair's surface reached from 4 cm inside it, the rest of the head and the torso kept."""

import math
from dataclasses import replace

import pytest
import torch

from headfields.cameras import project_points
from headfields.data import load_insta_dataset
from headfields.fitting import SurfaceLandmarks
from headfields.fitting.mask_template import MaskTemplateConfig, fit_mask_template
from headfields.fitting.rigid_motion import wrapped
from headfields.geometry import TriangleMesh
from headfields.geometry.queries import closest_point
from headfields.parametric import load_model
from headfields.synthetic import load_template_truth, make_synthetic_video, portrait_person

STEPS = 90  # of the default 150, for time: hair 2.7 mm here (2.0 at 150; benchmarks/portrait_template.py)


@pytest.fixture(scope="module")
def turn(tmp_path_factory):
    config, _ = portrait_person(seed=3, resolution=64, supersampling=1)
    config = replace(config, num_frames=24, num_val=1, num_test=1)
    root = make_synthetic_video(tmp_path_factory.mktemp("turn"), config)
    parts = [load_insta_dataset(root, split) for split in ("train", "val", "test")]
    c2w = torch.cat([p.cameras.camera_to_world for p in parts])
    cameras = replace(parts[0].cameras, camera_to_world=c2w)
    params = [p.params for p in parts]
    pose, translation = torch.cat([p.pose for p in params]), torch.cat([p.translation for p in params])
    return root, torch.cat([p.masks for p in parts]), cameras, pose, translation, params[0].shape


def _errors(model, vertices, truth, faces):
    """Median mm from the template's vertices to the true surface: the hair, the rest of the head, the torso."""
    distance = closest_point(TriangleMesh(truth[None], faces), vertices).distance * 1000
    region = {name: torch.zeros(len(vertices), dtype=torch.bool) for name in ("hair", "torso")}
    for name in region:
        region[name][model.regions[name]] = True
    head = ~region["hair"] & ~region["torso"]
    return {
        name: float(distance[m].median()) for name, m in (("hair", region["hair"]), ("head", head), ("torso", region["torso"]))
    }


@pytest.fixture(scope="module")
def from_masks(turn):
    """The template from the turn's masks alone, and its loss each step."""
    root, masks, cameras, pose, translation, _ = turn
    model = load_model(root / "model", model_type="smplx")
    losses = []
    config = MaskTemplateConfig(steps=STEPS)
    template = fit_mask_template(model, masks, cameras, pose, translation, config, lambda step, loss: losses.append(loss))
    return template, losses


def test_the_masks_of_a_turn_give_the_hair_and_keep_the_rest(turn, from_masks):
    root, masks, cameras, pose, translation, _ = turn
    model = load_model(root / "model", model_type="smplx")
    truth, faces = load_template_truth(root)
    template, losses = from_masks
    before = _errors(model, model().canonical_vertices, truth, faces)
    after = _errors(model, template.canonical(model), truth, faces)
    assert before["hair"] > 35.0 and after["hair"] < 3.5, (before, after)
    assert after["head"] < before["head"] + 0.3 and after["torso"] < 1.5, (before, after)
    assert len(losses) == STEPS and sum(losses[-10:]) < 0.2 * sum(losses[:10])
    # Posed by a frame's pose, the template is the canonical one turned: its offsets ride the skinning.
    posed = template.posed(model, pose[:1], translation[:1])
    assert posed.shape == (1, model.num_vertices, 3) and bool(torch.isfinite(posed).all())


def test_a_camera_count_unlike_the_masks_is_refused(turn):
    root, masks, cameras, pose, translation, _ = turn
    model = load_model(root / "model", model_type="smplx")
    with pytest.raises(ValueError, match="cameras: expected one camera a frame of the 23 masks, got 24"):
        fit_mask_template(model, masks[1:], cameras, pose[1:], translation[1:])


def test_the_landmarks_keep_the_face_where_the_hair_would_pull_it(turn, from_masks):
    """Given the frames' landmarks (the true face's points, projected, in the frames facing the camera), the template's
    face holds them: its landmark points within 2 mm of the true face's (median; 0.7 here, 2.9 from the masks alone)."""
    root, masks, cameras, pose, translation, shape = turn
    model = load_model(root / "model", model_type="smplx")
    landmarks = SurfaceLandmarks.static(model)
    truth, faces = load_template_truth(root)
    posed = model(shape=shape, pose=pose, translation=translation).vertices
    marks = landmarks.points(posed, model.faces)
    n, k = marks.shape[:2]
    points = project_points(cameras, marks.reshape(-1, 3), torch.arange(n).repeat_interleave(k)).pixels.view(n, k, 2)
    facing = wrapped(pose[:, 0, 1]).abs() < math.radians(50)
    points[~facing] = float("nan")
    config = MaskTemplateConfig(steps=STEPS)
    with_landmarks = fit_mask_template(model, masks, cameras, pose, translation, config, landmarks=landmarks, points=points)
    true_face = landmarks.points(truth[None], faces)[0]
    error = {}
    for name, template in (("masks", from_masks[0]), ("landmarks", with_landmarks)):
        face = landmarks.points(template.canonical(model)[None], model.faces)[0]
        error[name] = float((face - true_face).norm(dim=-1).median()) * 1000
    assert 2 <= int(facing.sum()) < n and error["landmarks"] < 2.0 and error["landmarks"] < error["masks"], error


def test_landmarks_without_their_points_are_refused(turn):
    root, masks, cameras, pose, translation, _ = turn
    model = load_model(root / "model", model_type="smplx")
    landmarks = SurfaceLandmarks.static(model)
    with pytest.raises(ValueError, match="points: expected the landmarks' points with landmarks"):
        fit_mask_template(model, masks, cameras, pose, translation, landmarks=landmarks)
    with pytest.raises(ValueError, match=r"points: expected .*\[24, 51, 2\]"):
        fit_mask_template(model, masks, cameras, pose, translation, landmarks=landmarks, points=torch.zeros(24, 3, 2))
