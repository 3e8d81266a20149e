"""MonoNPHM's tracking on tiny sizes: the corrected pose against the rigid deformer and an analytic rotation; the
posed anchors of an undeformed prior against their closed form, with gradients to the pose; landmark pairs against
a brute force; the photometric, silhouette and smoothness terms against hand values; a head scale fitted only with
a rate; stage 1 lowers the photometric loss and fits the identity, held-out tracking leaves it alone, stage 2
smooths; the whole reconstruction writes its metrics; bad input raises. As a run: train_run writes config.json, the
checkpoint and the metrics; load_run renders both splits' frames with their fitted codes as the reconstruction did;
render, export and the viewer open the run; the example and the train command track a saved prior."""

import dataclasses
import json
import math
import runpy
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from tiny_configs import TINY_MONONPHM

from headfields.apps.runs import RunConfig, SubjectSource, load_run, train_run
from headfields.cameras import image_pixels, pixel_rays, project_points
from headfields.data import LANDMARKS_FOLDER, load_subject, save_detected_landmarks
from headfields.data.ibug import ANCHOR_LANDMARK_PAIRS, ANCHOR_PAIR_WEIGHTS
from headfields.deformers import RigidDeformer, RigidDeformerConfig
from headfields.fitting import PosedPoints, detected_landmarks, landmark_error, scheduled, soft_jaccard
from headfields.heads import tracked_head
from headfields.models import mononphm
from headfields.models.mononphm import Nphm, identity_code, save_prior, surface_identity
from headfields.models.mononphm import tracking as mononphm_tracking
from headfields.models.registry import MODELS
from headfields.parametric import load_model
from headfields.renderers import RenderContext
from headfields.synthetic import (
    ScanSetConfig,
    SyntheticVideoConfig,
    load_ground_truth,
    make_synthetic_video,
)
from headfields.training import CHECKPOINT_NAME, CONFIG_NAME, evaluate, render_image
from headfields.training.checkpoints import load_checkpoint

from helpers import raises_naming, shapes_unchecked, tiny_flame_prior, tiny_nphm_config

TINY = tiny_nphm_config(sdf_width=16)
FEW = TINY_MONONPHM.tracking
EXAMPLES = Path(__file__).parents[3] / "examples"
SAMPLER = TINY_MONONPHM


@pytest.fixture(scope="module")
def person(tmp_path_factory):
    """A tiny video of a held-out synthetic person (personal detail, FLAME tracking), its model and ground truth."""
    root = tmp_path_factory.mktemp("person")
    flame = load_model(make_synthetic_video(root, _video_config()) / "model", "flame")
    subject = load_subject(root, eval_split="test")
    return subject, flame, load_ground_truth(root, "test")


def _video_config() -> SyntheticVideoConfig:
    identity = ScanSetConfig(num_identities=2).held_out_identity(300)
    return SyntheticVideoConfig(num_frames=10, num_val=2, num_test=3, resolution=24, supersampling=1, identity=identity)


def tiny_prior(flame, seed: int = 0) -> Nphm:
    return tiny_flame_prior(flame, TINY, seed)


def _rays(frames, frame: int = 0, count: int = 16):
    return pixel_rays(frames.cameras, frame, image_pixels(frames.cameras)[:count])


def test_corrected_pose_is_the_rigid_deformer_at_zero_and_rotates_in_the_head_frame(person):
    subject, flame, _ = person
    model = mononphm.MonoNphm(tiny_prior(flame), subject.parametric, len(subject.train), SAMPLER)
    head = model.head(subject.train)
    x = torch.randn(20, 3, generator=torch.Generator().manual_seed(0)) * 0.1
    frame = torch.arange(20) % len(subject.train)
    rigid = RigidDeformer(RigidDeformerConfig(joint=model.head_joint))
    torch.testing.assert_close(model.pose(x, head, frame, None).points, rigid(x, head, frame, None).points)
    plain = head.with_codes(None)  # a head without codes (another capture driving): no correction either
    torch.testing.assert_close(model.pose(x, plain, frame, None).points, rigid(x, head, frame, None).points)
    with torch.no_grad():  # a quarter turn about the head frame's z: exp((0, w)) turns by 2|w|
        model.track().rotation[:, 2] = math.pi / 4
    head = model.head(subject.train)  # the head carries the corrections
    turn = torch.tensor([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    expected = rigid(x, head, frame, None).points @ turn  # R_z^T applied to each row
    torch.testing.assert_close(model.pose(x, head, frame, None).points, expected, atol=1e-5, rtol=1e-5)
    with torch.no_grad():  # a head twice the size: head-frame points are world offsets halved
        model.pose.scale.fill_(2.0)
    torch.testing.assert_close(model.pose(x, head, frame, None).points, expected / 2, atol=1e-5, rtol=1e-5)


def test_colour_transform_maps_the_foreground_and_leaves_the_background(person):
    """rgb @ A + b per sample composites to (foreground @ A) + opacity x b, the white background as it was; a run
    saved before the transform existed loads with it at identity."""
    subject, flame, _ = person
    model = mononphm.MonoNphm(tiny_prior(flame), subject.parametric, len(subject.train), SAMPLER)
    rays = pixel_rays(subject.train.cameras, 1, image_pixels(subject.train.cameras)[11 * 24 : 13 * 24])  # the middle rows
    head = model.head(subject.train)
    plain = model.render(rays, head, RenderContext(torch.Generator().manual_seed(0))).composite
    matrix, shift = torch.tensor([[0.9, 0.1, 0.0], [0.0, 1.2, 0.0], [0.05, 0.0, 0.8]]), torch.tensor([0.1, -0.05, 0.02])
    with torch.no_grad():
        model.colour.matrix.copy_(matrix)
        model.colour.shift.copy_(shift)
    out = model.render(rays, head, RenderContext(torch.Generator().manual_seed(0))).composite
    alpha = plain.opacity[:, None].detach()
    assert float(alpha.min()) < 0.5 < float(alpha.max())  # some rays on the head, some past it
    expected = (plain.rgb.detach() - (1 - alpha)) @ matrix + alpha * shift + (1 - alpha)
    torch.testing.assert_close(out.rgb.detach(), expected, atol=1e-5, rtol=1e-5)
    old = {k: v for k, v in model.state_dict().items() if "colour" not in k and not k.endswith("pose.scale")}
    fresh = mononphm.MonoNphm(tiny_prior(flame), subject.parametric, len(subject.train), SAMPLER)
    fresh.load_state_dict(old, strict=True)
    assert torch.equal(fresh.colour.matrix, torch.eye(3)) and float(fresh.pose.scale.detach()) == 1.0


def test_landmark_error_weighs_each_residual(person):
    """tracking.py's landmark loss: (w (p - p_gt) / width)² averaged over the coordinates of the converged points."""
    subject, _, _ = person
    cameras = subject.train.cameras
    points = torch.tensor([[0.0, 0.0, 0.0], [0.02, 0.01, 0.05]])
    pixels = project_points(cameras, points, 1).pixels
    detected = pixels + torch.tensor([[0.1 * float(cameras.width), 0.0], [0.0, 0.0]])
    both = PosedPoints(points, torch.tensor([True, True]))
    weights = torch.tensor([10.0, 1.0])
    assert float(landmark_error(cameras, both, 1, detected, weights)) == pytest.approx((1.0**2 / 2 + 0) / 2, rel=1e-4)
    lost = PosedPoints(points, torch.tensor([True, False]))
    assert float(landmark_error(cameras, lost, 1, detected, weights)) == pytest.approx(0.5, rel=1e-4)
    assert float(landmark_error(cameras, both, 1, detected)) == pytest.approx(0.01 / 2 / 2, rel=1e-4)


def test_schedules_follow_tracking_pys_epochs():
    """Stage 1 over tracking.py's 251 epochs: landmarks 100 -> 50 -> 20 -> 10 at epochs 25, 50, 100; the pose's rate
    halves at 32 and 200; the expression's rises to the codes' at 150 (2e-4 -> 5e-4) and halves at 200 and 225.
    Stage 2: every rate halves at half and three quarters of the steps, the smoothness at half."""
    first = mononphm.MonoNphmTracking().first_frame
    landmarks = [first.landmarks * scheduled(first.schedule, "landmarks", e, 251) for e in (0, 24, 25, 49, 50, 99, 100, 250)]
    assert landmarks == pytest.approx([100, 100, 50, 50, 20, 20, 10, 10])
    pose = [scheduled(first.schedule, "pose", e, 251) for e in (31, 32, 199, 200)]
    assert pose == [1.0, 0.5, 0.5, 0.25]
    expression = [first.expression_rate * scheduled(first.schedule, "expression", e, 251) for e in (149, 150, 200, 225)]
    assert expression == pytest.approx([2e-4, 5e-4, 2.5e-4, 1.25e-4])
    assert [scheduled(first.schedule, "codes", e, 251) for e in (199, 200, 225)] == [1.0, 0.5, 0.25]
    joint = mononphm.MonoNphmTracking().joint
    assert [scheduled(joint.schedule, "lighting", e, 1000) for e in (499, 500, 750)] == [1.0, 0.5, 0.25]
    assert [scheduled(joint.schedule, "smooth_pose", e, 1000) for e in (499, 500, 999)] == [1.0, 0.5, 0.5]
    with raises_naming("schedule"):
        mononphm.StageConfig(steps=1, schedule=((0.5, "nothing", 0.5),))


def test_posed_anchors_of_an_undeformed_prior_and_their_gradients(person):
    subject, flame, _ = person
    prior = tiny_prior(flame)
    with torch.no_grad():
        prior.deformer.output.weight.zero_()  # no offsets and no hyper coordinates: posed = canonical
    model = mononphm.MonoNphm(prior, subject.parametric, len(subject.train), SAMPLER)
    ids = torch.tensor([0, 7, 64])
    with torch.no_grad():
        model.track().shift[1] = torch.tensor([0.01, 0.0, -0.02])
    head = model.head(subject.train)
    solved = model.posed_anchors(head, 1, ids)
    posed = solved.points
    assert bool(solved.converged.all())
    metres = prior.template_anchors[ids] * prior.normalize.scale + prior.normalize.center
    transform = head.joint_transforms[1, model.head_joint]
    expected = metres @ transform[:3, :3].T + transform[:3, 3] + torch.tensor([0.01, 0.0, -0.02])
    torch.testing.assert_close(posed.detach(), expected, atol=1e-5, rtol=1e-5)
    posed.sum().backward()
    track = model.track()
    assert track.rotation.grad[1].abs().sum() > 0 and track.shift.grad[1].abs().sum() > 0
    assert track.rotation.grad[0].abs().sum() == 0  # another frame's pose does not move


def test_landmark_pairs_are_mononphms_pairs_whose_anchor_sits_at_its_landmark(person):
    """The prior's anchors placed by anchor_vertices: every official pair whose iBUG point FLAME's 51 static
    landmarks hold (all but the 9 jaw-contour pairs), with tracking.py's weights; a prior whose anchors were spread
    otherwise keeps exactly the pairs that lie within the distance (brute force)."""
    subject, flame, _ = person
    prior = tiny_prior(flame)
    anchors, landmarks, weights = mononphm.landmark_pairs(prior, subject.parametric, 0.01)
    official = {(a, ibug - 17): w for (a, ibug), w in zip(ANCHOR_LANDMARK_PAIRS, ANCHOR_PAIR_WEIGHTS, strict=True) if ibug >= 17}
    assert len(official) == 26
    assert dict(zip(zip(anchors.tolist(), landmarks.tolist(), strict=True), weights.tolist(), strict=True)) == official
    assert {a for (a, _), w in official.items() if w == 100} == {16, 17, 18, 19, 20, 21, 44, 45, 46, 47, 48, 49, 50, 51}
    points = subject.parametric().landmarks[0]
    template = prior.template_anchors * prior.normalize.scale + prior.normalize.center
    assert float((template[anchors] - points[landmarks]).norm(dim=1).max()) < 0.003  # the nearest vertex to each
    shuffled = prior.template_anchors.flip(0)
    other = Nphm(shuffled * prior.normalize.scale + prior.normalize.center, prior.mirror, prior.normalize.center, 1, 1, TINY)
    with pytest.warns(UserWarning, match="only .* of the 26 anchor <-> landmark pairs"):
        anchors, landmarks, _ = mononphm.landmark_pairs(other, subject.parametric, 0.01)
    moved = shuffled * prior.normalize.scale + prior.normalize.center
    near = {(a, ibug - 17) for a, ibug in ANCHOR_LANDMARK_PAIRS if ibug >= 17 and (moved[a] - points[ibug - 17]).norm() <= 0.01}
    assert set(zip(anchors.tolist(), landmarks.tolist(), strict=True)) == near and len(near) < 26


def test_tracking_config_takes_the_pair_weights_and_the_code_gradient_norm(person, monkeypatch):
    """Both default to tracking.py's (ANCHOR_PAIR_WEIGHTS, 0.1) and are config fields: the pairs carry the weights
    given, and after each backward the identity's and the appearance's gradients are clipped to the norm given, each
    on its own (clip_grad_norm_): a gradient of norm 5 leaves at 0.25 in its own direction, one of norm 0.1 as it is."""
    subject, flame, _ = person
    prior = tiny_prior(flame)
    weights = tuple(float(k + 1) for k in range(len(ANCHOR_LANDMARK_PAIRS)))
    anchors, _, got = mononphm.landmark_pairs(prior, subject.parametric, 0.01, weights)
    by_anchor = {a: w for (a, _), w in zip(ANCHOR_LANDMARK_PAIRS, weights, strict=True)}
    assert got.tolist() == [by_anchor[a] for a in anchors.tolist()]
    model = mononphm.MonoNphm(prior, subject.parametric, len(subject.train), SAMPLER)
    hooks = []
    monkeypatch.setattr(mononphm_tracking, "run_stage", lambda groups, steps, loss, schedule, after: hooks.append(after))
    config = dataclasses.replace(FEW, code_gradient_norm=0.25)
    mononphm_tracking._track(model, subject.train, config, "train", None, None, 0)
    g = torch.Generator().manual_seed(0)
    given = {}
    for p, norm in ((model.codes.identity, 5.0), (model.codes.appearance, 0.1)):
        grad = torch.randn(p.shape, generator=g)
        given[p] = grad * (norm / grad.norm())
        p.grad = given[p].clone()
    hooks[0]()
    identity, appearance = model.codes.identity, model.codes.appearance
    assert float(identity.grad.norm()) == pytest.approx(0.25, rel=1e-5)
    torch.testing.assert_close(identity.grad, given[identity] * (0.25 / 5.0))
    torch.testing.assert_close(appearance.grad, given[appearance])
    for bad in (dict(anchor_weights=(1.0,) * 3), dict(anchor_weights=(-1.0,) * len(ANCHOR_LANDMARK_PAIRS))):
        with raises_naming("anchor_weights"):
            mononphm.MonoNphmTracking(**bad)
    with raises_naming("code_gradient_norm"):
        mononphm.MonoNphmTracking(code_gradient_norm=0.0)


def test_silhouette_and_smoothness_terms_match_hand_values(person):
    subject, flame, _ = person
    mask = torch.tensor([1.0, 1.0, 0.0, 0.0])
    assert float(soft_jaccard(mask, mask)) == pytest.approx(0.0)
    disjoint = torch.tensor([0.0, 0.0, 1.0, 1.0])
    assert float(soft_jaccard(disjoint, mask)) == pytest.approx((1 - 5 / 9) * 5)
    track = mononphm.MonoNphm(tiny_prior(flame), subject.parametric, 3, SAMPLER).track()
    with torch.no_grad():
        track.codes.copy_(torch.tensor([[0.0, 0, 0], [1.0, 0, 0], [1.0, 2.0, 0]]))
        track.shift[2] = torch.tensor([0.0, 0.0, 0.1])
    stage = mononphm.StageConfig(steps=1, smooth_expression=2.0, smooth_pose=3.0)
    # Expression: mean of 1 and 4; pose: mean of 0 and 10 x (0.1 m in MonoNPHM's 0.25 m units)^2 = 10 x 0.16.
    assert float(mononphm_tracking._smoothness(track, stage).detach()) == pytest.approx(2.0 * 2.5 + 3.0 * 0.8)


def test_code_regularisers_match_hand_values(person):
    """MonoNPHM's tracking regularisers (tracking.py, canonical_space.py get_reg_loss): the local codes' squared
    distance from their centre summed (not averaged), the global and appearance codes', the mean distance of mirrored
    anchors' local codes."""
    subject, flame, _ = person
    prior = tiny_prior(flame)
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():  # a prior whose training codes' mean is far from zero
        prior.identity_codes.codes.copy_(torch.randn(prior.identity_codes.codes.shape, generator=g) + 0.5)
        prior.appearance_codes.codes.copy_(torch.randn(prior.appearance_codes.codes.shape, generator=g) - 0.5)
    model = mononphm.MonoNphm(prior, subject.parametric, 2, SAMPLER)
    c = prior.config
    with torch.no_grad():
        model.codes.identity.copy_(torch.randn(model.codes.identity.shape, generator=g))
        model.codes.appearance.copy_(torch.randn(model.codes.appearance.shape, generator=g))
        model.track().codes.copy_(torch.randn(model.track().codes.shape, generator=g))
    mean_identity = [sum(column) / len(column) for column in zip(*prior.identity_codes.codes.tolist(), strict=True)]
    mean_appearance = [sum(column) / len(column) for column in zip(*prior.appearance_codes.codes.tolist(), strict=True)]
    identity = model.codes.identity[0].tolist()
    offset = [x - m for x, m in zip(identity, mean_identity, strict=True)]
    glob, local = offset[: c.global_dim], offset[c.global_dim :]
    appearance = [x - m for x, m in zip(model.codes.appearance[0].tolist(), mean_appearance, strict=True)]
    own = identity[c.global_dim :]  # the symmetry term compares the codes themselves
    codes = [own[k * c.local_dim : (k + 1) * c.local_dim] for k in range(prior.num_anchors)]
    mirror = prior.mirror.tolist()
    pairs = [(k, mirror[k]) for k in range(prior.num_anchors) if mirror[k] > k]
    assert pairs and c.local_dim > 0
    symmetry = sum(math.dist(codes[a], codes[b]) for a, b in pairs) / len(pairs)
    expression = [sum(x * x for x in row) for row in model.track().codes[:1].tolist()]
    weights = dict(local_code=7.0, global_code=3.0, appearance_code=5.0, expression_code=2.0, symmetry=11.0)
    stage = mononphm.StageConfig(steps=1, **weights)
    hand = (
        7.0 * sum(x * x for x in local) + 3.0 * sum(x * x for x in glob)
        + 5.0 * sum(x * x for x in appearance) + 11.0 * symmetry + 2.0 * expression[0]
    )  # fmt: skip
    value = mononphm_tracking._code_terms(model, model.track(), torch.tensor([0]), stage)
    assert float(value.detach()) == pytest.approx(hand, rel=1e-5)


def test_the_codes_start_at_their_centre_the_prior_s_mean_or_zero(person):
    """The identity and appearance codes start where their regularisers pull: the prior's training identities' mean
    codes by default, zero with ``code_centre="zero"`` (tracking.py's start); there the regularisers are the codes'
    own squared norms."""
    subject, flame, _ = person
    prior = tiny_prior(flame)
    with torch.no_grad():
        codes = prior.identity_codes.codes
        codes.copy_(torch.arange(codes.numel()).reshape(codes.shape) / 100)
    rows = prior.identity_codes.codes.tolist()
    mean = [sum(column) / len(rows) for column in zip(*rows, strict=True)]
    model = mononphm.MonoNphm(prior, subject.parametric, 2, SAMPLER)
    assert model.codes.identity[0].tolist() == pytest.approx(mean)
    assert "codes.identity_centre" not in model.state_dict()  # the prior gives it again: not saved with a run
    zero = dataclasses.replace(SAMPLER, tracking=mononphm.cpu_tracking(code_centre="zero"))
    model = mononphm.MonoNphm(prior, subject.parametric, 2, zero)
    assert not model.codes.identity.any() and not model.codes.appearance.any()
    with torch.no_grad():
        model.codes.identity.fill_(0.5)
    stage = mononphm.StageConfig(steps=1, local_code=0.0, appearance_code=0.0, expression_code=0.0, symmetry=0.0, global_code=2.0)
    value = mononphm_tracking._code_terms(model, model.track(), torch.tensor([0]), stage)
    assert float(value.detach()) == pytest.approx(2.0 * 0.25 * prior.config.global_dim)
    with pytest.raises(Exception, match="code_centre"):  # the library's ValueError, or the test run's type checker
        mononphm_tracking.MonoNphmTracking(code_centre="mean")


def test_photometric_and_silhouette_terms_of_a_frame_match_hand_values(person, monkeypatch):
    """tracking.py's colour term: the L1 over the channels of each drawn pixel on its [-1, 1] scale (twice ours),
    times its mask and the mouth interior's weight (1/25), summed and divided by the rays a step (not by the
    foreground's); plus the soft Jaccard of the opacities; no landmark term without detections."""
    from types import SimpleNamespace

    from headfields.fitting import FramePixels

    subject, flame, _ = person
    model = mononphm.MonoNphm(tiny_prior(flame), subject.parametric, len(subject.train), SAMPLER)
    data = FramePixels(subject.train, "cpu")
    pick = torch.tensor([3, 7, 11, 20])
    data.mask[1, pick] = torch.tensor([True, True, False, True])
    data.mouth = torch.zeros_like(data.mask)
    data.mouth[1, pick[1]] = True
    rgb = torch.tensor([[0.2, 0.4, 0.6], [1.0, 0.0, 0.5], [0.3, 0.3, 0.3], [0.0, 0.9, 0.1]])
    opacity = torch.tensor([0.9, 0.5, 0.2, 1.0])
    monkeypatch.setattr(data, "draw", lambda frame, count, fraction, generator: pick)
    rendered = SimpleNamespace(composite=SimpleNamespace(rgb=rgb, opacity=opacity))
    monkeypatch.setattr(model, "render", lambda rays, head, generator: rendered)
    config = dataclasses.replace(FEW, rays_per_step=10)
    no_pairs = (torch.zeros(0, dtype=torch.long),) * 2 + (torch.zeros(0),)
    tracker = mononphm_tracking._Tracker(
        model, model.track(), tracked_head(subject.parametric, subject.train), data, no_pairs, None, config,
        torch.Generator().manual_seed(0), mononphm.TrackingHistory(),
    )  # fmt: skip
    stage = mononphm.StageConfig(steps=1, rgb=3.0, mask=2.0, mouth_interior=0.25)
    loss, logs = mononphm_tracking._frame_loss(tracker, tracker.base, 1, stage, landmark_weight=100.0)
    target = data.rgb[1, pick].tolist()
    l1 = [sum(abs(2 * a - 2 * b) for a, b in zip(row, t, strict=True)) for row, t in zip(rgb.tolist(), target, strict=True)]
    colour = (l1[0] + 0.25 * l1[1] + l1[3]) / 10  # the third pixel is off the mask
    mask = [1.0, 1.0, 0.0, 1.0]
    both = sum(o * m for o, m in zip(opacity.tolist(), mask, strict=True))
    jaccard = (1 - (both + 5) / (sum(opacity.tolist()) + sum(mask) - both + 5)) * 5
    assert float(logs["rgb"]) == pytest.approx(colour, rel=1e-5) and float(logs["mask"]) == pytest.approx(jaccard, rel=1e-5)
    assert float(loss) == pytest.approx(3.0 * colour + 2.0 * jaccard, rel=1e-5) and "landmarks" not in logs


def test_the_cpu_stages_scale_the_codes_rates_to_their_fewer_steps():
    """cpu_tracking's stages are the paper's in fewer steps, the codes' and expressions' rates times the paper's steps
    over theirs (Adam moves about a rate a step); the pose, lighting, weights and schedule are the paper's, but the
    landmark pairs' weights."""
    paper, cpu = mononphm_tracking.MonoNphmTracking(), mononphm_tracking.cpu_tracking()
    for name, steps in (("first_frame", 200), ("per_frame", 20), ("joint", 300)):
        ours, theirs = getattr(cpu, name), getattr(paper, name)
        k = theirs.steps / steps  # 500 / 200, 125 / 20, 1000 / 300
        assert ours.steps == steps
        for rate in ("code_rate", "colour_rate", "expression_rate"):
            assert getattr(ours, rate) == pytest.approx(getattr(theirs, rate) * k, rel=1e-12)
        same = ("rotation_rate", "shift_rate", "lighting_rate", "scale_rate", "rgb", "landmarks", "local_code", "schedule")
        assert all(getattr(ours, f) == getattr(theirs, f) for f in same)
    assert cpu.first_frame.code_rate == pytest.approx(1.25e-3)  # 5e-4 x 500 / 200
    # Every landmark pair weighed 1 (a CPU prior's anchors miss their landmarks), where the paper's are x 100 on some.
    assert paper.anchor_weights == ANCHOR_PAIR_WEIGHTS and set(cpu.anchor_weights) == {1.0}
    assert len(cpu.anchor_weights) == len(ANCHOR_LANDMARK_PAIRS)
    with raises_naming("steps"):
        mononphm_tracking.shortened(paper.joint, 0)


@pytest.mark.unchecked
def test_a_scale_rate_fits_the_head_scale_with_the_person(person):
    """The head scale is fitted only where a stage gives it a rate (tracking.py: scale_param's Adam, but requires_grad
    False, hence 0 by default), and only with the identity (the first frame), never by held-out tracking."""
    subject, flame, _ = person
    model = mononphm.MonoNphm(
        tiny_prior(flame), subject.parametric, len(subject.train), SAMPLER, held_out_frames=len(subject.eval)
    )
    first = dataclasses.replace(FEW.first_frame, steps=4, scale_rate=5e-3)
    config = dataclasses.replace(FEW, first_frame=first, per_frame=dataclasses.replace(FEW.per_frame, steps=1, scale_rate=5e-3),
                                 joint=dataclasses.replace(FEW.joint, steps=0))  # fmt: skip
    mononphm.track_sequence(model, subject.train, config)
    fitted = float(model.pose.scale.detach())
    assert fitted != 1.0 and abs(fitted - 1.0) < 0.1  # four Adam steps of 5e-3
    mononphm.track_frames(model, subject.eval, config)
    assert float(model.pose.scale.detach()) == fitted


@pytest.mark.unchecked
def test_stage_one_fits_the_person_and_held_out_tracking_keeps_the_identity(person):
    subject, flame, _ = person
    model = mononphm.MonoNphm(
        tiny_prior(flame), subject.parametric, len(subject.train), SAMPLER, held_out_frames=len(subject.eval)
    )
    rays, target = _rays(subject.train, 0, 576), subject.train.images[0].reshape(-1, 3).float() / 255
    mask = subject.train.masks[0].reshape(-1).float()

    def first_frame_error() -> float:  # the tracking's colour term on every foreground pixel of the first frame
        return float(((model.render_rays(rays, model.head(subject.train)) - target).abs().sum(-1) * mask).sum() / mask.sum())

    before = first_frame_error()
    history = mononphm.track_sequence(model, subject.train, FEW)
    assert first_frame_error() < before
    assert not torch.equal(model.colour.matrix.detach(), torch.eye(3))  # the colour transform is fitted with the person
    assert float(model.pose.scale.detach()) == 1.0  # the head scale is not (tracking.py: requires_grad False)
    assert history.steps["stage1"] == 12 + 2 * (len(subject.train) - 1) and history.steps["stage2"] == 4
    assert float(model.codes.identity.detach().abs().sum()) > 0 and float(model.codes.appearance.detach().abs().sum()) > 0
    assert float(model.track("held_out").codes.detach().abs().sum()) == 0  # not tracked yet
    kept = (model.codes.identity, model.codes.appearance, model.lighting.coefficients, *model.track().parameters(),
            *model.colour.parameters())  # fmt: skip
    before = [t.detach().clone() for t in kept]
    mononphm.track_frames(model, subject.eval, FEW)
    assert all(torch.equal(a, b) for a, b in zip(before, kept, strict=True))  # the person and the train frames stay
    moved = model.track("held_out").codes.detach().abs().sum(dim=1)
    assert bool((moved > 0).all())  # every held-out frame moved from the mean code
    assert not any(p.requires_grad for p in model.prior.parameters())


@pytest.mark.unchecked
def test_a_budget_covers_the_evaluation_and_shares_the_rest_by_steps(person, capsys, monkeypatch):
    """With max_minutes, reconstruct sets the renders and meshes aside, says so, and gives the two tracking calls
    the rest in proportion to their steps (not the whole budget each)."""
    subject, flame, truth = person
    given = []
    track = mononphm_tracking._track
    monkeypatch.setattr(  # args[5]: max_minutes, recorded; each call then tracks on a budget of one step a stage
        mononphm_tracking, "_track", lambda *args, **kw: given.append(args[5]) or track(*args[:5], 1e-6, *args[6:], **kw)
    )
    mononphm.reconstruct(
        tiny_prior(flame), subject.train, subject.eval, subject.parametric, SAMPLER, truth=truth, eval_frames=2,
        max_minutes=0.5,
    )  # fmt: skip
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("budget 30.0s: tracking"))
    assert "then rendering 2 held-out frames" in line and "1 meshes at 24^3" in line
    train_steps = FEW.first_frame.steps + (len(subject.train) - 1) * FEW.per_frame.steps + FEW.joint.steps
    held_steps = len(subject.eval) * FEW.per_frame.steps
    assert len(given) == 2 and sum(given) < 0.5
    assert given[0] / given[1] == pytest.approx(train_steps / held_steps)


def test_bad_input_raises(person):
    subject, flame, _ = person
    model = mononphm.MonoNphm(tiny_prior(flame), subject.parametric, len(subject.train), SAMPLER)
    with raises_naming("frames"):
        mononphm.track_sequence(model, subject.eval, FEW)
    with raises_naming("rgb"):
        mononphm.StageConfig(steps=1, rgb=-1.0)
    with raises_naming("foreground_fraction"):
        mononphm.MonoNphmTracking(foreground_fraction=1.5)
    with raises_naming("num_frames"):
        mononphm.MonoNphm(tiny_prior(flame), subject.parametric, 0, SAMPLER)
    with raises_naming("split"):  # a model built without held-out frames
        mononphm.track_frames(model, subject.eval, FEW)
    with raises_naming("head"):  # codes of another model
        wrong = tracked_head(model.parametric, subject.train).with_codes(torch.zeros(len(subject.train), 2))
        model.render_rays(_rays(subject.train), wrong)
    with raises_naming("max_minutes"):
        mononphm.track_sequence(model, subject.train, FEW, max_minutes=-1.0)
    with raises_naming("geometry_frames"):
        mononphm.cpu_config(geometry_frames=-1)


def test_landmarks_given_per_frame_replace_the_projected_tracking(person):
    subject, flame, _ = person
    model = mononphm.MonoNphm(tiny_prior(flame), subject.parametric, len(subject.train), SAMPLER)
    anchors, landmarks, _ = mononphm.landmark_pairs(model.prior, model.parametric)
    head = model.head(subject.train)
    projected = detected_landmarks(model.parametric, subject.train, head, landmarks, None, model.box.device)
    count = subject.parametric().landmarks.shape[1]
    given = torch.rand(len(subject.train), count, 2) * 24
    torch.testing.assert_close(
        detected_landmarks(model.parametric, subject.train, head, landmarks, given, model.box.device), given[:, landmarks]
    )
    assert projected.shape == (len(subject.train), len(landmarks), 2)
    ibug = torch.rand(len(subject.train), 68, 2) * 24  # a detector's 68 points: FLAME's 51 are iBUG 17..67
    torch.testing.assert_close(
        detected_landmarks(model.parametric, subject.train, head, landmarks, ibug, model.box.device), ibug[:, landmarks + 17]
    )
    with raises_naming("landmarks"):
        mononphm.track_sequence(model, subject.train, FEW, landmarks=torch.zeros(len(subject.train), count + 1, 2))
    inf = ibug.clone()
    inf[0, 30] = float("inf")
    with raises_naming("landmarks"):
        detected_landmarks(model.parametric, subject.train, head, landmarks, inf, model.box.device)


def test_landmark_error_skips_points_a_detector_missed(person):
    """A NaN detection (a point not found) gives the error of the same landmarks without it, and a finite gradient."""
    subject, _, _ = person
    cameras = subject.train.cameras
    points = torch.tensor([[0.0, 0.0, 0.0], [0.02, 0.01, 0.05], [-0.01, 0.02, 0.03]], requires_grad=True)
    detected = project_points(cameras, points.detach(), 1).pixels + torch.tensor([[1.0, 0.0], [0.0, 2.0], [3.0, 1.0]])
    missed = detected.clone()
    missed[1] = float("nan")
    error = landmark_error(cameras, PosedPoints(points, torch.ones(3, dtype=torch.bool)), 1, missed)
    kept = torch.tensor([0, 2])
    alone = landmark_error(cameras, PosedPoints(points[kept], torch.ones(2, dtype=torch.bool)), 1, detected[kept])
    torch.testing.assert_close(error, alone)
    error.backward()
    assert bool(torch.isfinite(points.grad).all()) and float(points.grad[1].abs().sum()) == 0.0


def test_run_reads_the_landmarks_a_capture_holds(person, tmp_path):
    """With no --mononphm.landmarks, a capture's landmarks/ folder (what our tracker writes) is read; a folder given
    names the file it lacks."""
    subject, _, _ = person
    from headfields.models.mononphm.method import _landmarks

    assert _landmarks(SAMPLER, subject) is None  # the synthetic capture has none: the tracking's, projected
    root = tmp_path  # the capture's root: only its landmarks/ folder is read
    train = torch.rand(len(subject.train), 68, 2) * 24
    train[1] = float("nan")  # a frame without a face
    held = torch.rand(len(subject.eval), 68, 2) * 24
    save_detected_landmarks(root / LANDMARKS_FOLDER, "train", train)
    save_detected_landmarks(root / LANDMARKS_FOLDER, subject.eval.split, held)
    read = _landmarks(SAMPLER, dataclasses.replace(subject, root=root))
    torch.testing.assert_close(read[0], train, equal_nan=True)
    torch.testing.assert_close(read[1], held)
    (root / LANDMARKS_FOLDER / "train.npy").unlink()
    given = dataclasses.replace(SAMPLER, landmarks=str(root / LANDMARKS_FOLDER))
    with pytest.raises(FileNotFoundError, match="no train.npy"):
        _landmarks(given, subject)


# ------------------------------------------------------------------------------------------------------------- runs


@pytest.fixture(scope="module")
def mononphm_run(person, tmp_path_factory):
    """A MonoNPHM run folder trained by train_run on a saved tiny prior, its RunConfig and the metrics returned."""
    subject, flame, _ = person
    root = tmp_path_factory.mktemp("mononphm_run")
    save_prior(tiny_prior(flame), root / "prior.pt")
    recipe = dataclasses.replace(SAMPLER, prior=str(root / "prior.pt"))
    training = dataclasses.replace(MODELS["mononphm"].training_defaults(), eval_frames=2, render_chunk=512, seed=3)
    run = RunConfig("mononphm", recipe, training, SubjectSource(data=str(subject.root), all_held_out=False), "cpu")
    with shapes_unchecked():  # an end-to-end run (the marker's reason: a module fixture sets up before it)
        metrics = train_run(run, root / "run", "cpu")
    return root / "run", run, metrics


def test_train_run_writes_the_run_folder(mononphm_run):
    folder, run, metrics = mononphm_run
    assert RunConfig.from_dict(json.loads((folder / CONFIG_NAME).read_text())) == run
    assert json.loads((folder / "metrics.json").read_text()) == metrics
    assert metrics["recipe"] == "cpu" and metrics["eval_frames"] == [0, 2] and math.isfinite(metrics["psnr"])
    assert 0 < metrics["chamfer_flame"] < 0.02 and metrics["chamfer"] > 0
    assert set(metrics["scan"]) == set(metrics["scan_flame"]) == {"chamfer_l1_mm", "chamfer_l2_mm", "normals", "f_score"}
    assert sorted(p.name for p in (folder / "renders").iterdir()) == ["00000.png", "00002.png"]
    assert sorted(p.name for p in folder.glob("mesh_*.obj")) == [f"mesh_{f:05d}.obj" for f in metrics["geometry_frames"]]
    state = load_checkpoint(folder / CHECKPOINT_NAME)
    assert json.loads(state["run"]) == run.to_dict() and state["fingerprint"] and state["ema"] is None
    assert state["step"] == sum(metrics["tracking_steps"].values()) > 0
    for key in ("train_track.codes", "held_out_track.rotation", "codes.identity", "field.lighting.coefficients"):
        assert key in state["model"], key
    assert not any(k.startswith("parametric.") for k in state["model"])  # the subject's model files: not stored


def test_train_run_refuses_the_training_fields_the_tracking_does_not_read(tmp_path):
    """Issue 76: a training field MonoNPHM's tracking never reads is refused by name, before anything is written,
    and before the prior or the capture is opened."""
    from headfields.models.mononphm.method import RUN_TRAINING_FIELDS

    for flag, value in (("rays_per_batch", 64), ("eval_every", 5), ("ema_decay", 0.9)):
        assert flag not in RUN_TRAINING_FIELDS
        training = dataclasses.replace(MODELS["mononphm"].training_defaults(), **{flag: value})
        run = RunConfig("mononphm", SAMPLER, training, SubjectSource(data=str(tmp_path / "none")), "cpu")
        with pytest.raises(ValueError, match=f"does not use {flag}={value}: leave them at their defaults"):
            train_run(run, tmp_path / "run", "cpu")
    assert not (tmp_path / "run").exists()


def test_reconstruct_writes_the_metrics(person, mononphm_run):
    """reconstruct's metrics and files, as the run (train_run calls it) wrote them."""
    subject, _, truth = person
    folder, _, m = mononphm_run
    for key in ("psnr", "ssim", "l1", "psnr_mean_codes", "chamfer", "chamfer_flame", "chamfer_mm", "f_score"):
        assert key in m
    # The tracked FLAME mesh misses the person's detail but is close: under 2% of the head's size.
    assert 0 < m["chamfer_flame"] < 0.02 and m["chamfer_flame_mm"] == pytest.approx(
        1000 * m["chamfer_flame"] * m["head_size_m"], rel=0.05
    )
    assert (folder / "renders").is_dir() and list(folder.glob("mesh_*.obj"))
    # MonoNPHM's protocol: the face region of a scan of the true head, to the FLAME mesh after ICP: within millimetres
    flame_scan = m["scan_flame"]
    assert m["scan_region"] == "face" and set(flame_scan["f_score"]) == {"1mm", "2.5mm", "5mm", "10mm"}
    assert 0 < flame_scan["chamfer_l2_mm"] < 5 and flame_scan["chamfer_l2_mm"] <= flame_scan["chamfer_l1_mm"]
    assert 0.5 < flame_scan["normals"] <= 1 and flame_scan["f_score"]["10mm"] > 0.9
    for scan in (m["scan"], flame_scan):  # the tracked surface's, by the same protocol and keys
        assert set(scan) == {"chamfer_l1_mm", "chamfer_l2_mm", "normals", "f_score"}
        assert set(scan["f_score"]) == {"1mm", "2.5mm", "5mm", "10mm"} and all(0 <= f <= 1 for f in scan["f_score"].values())
    own = mononphm.geometry_score(truth[0][0], truth[1], truth[0][0], truth[1], subject.eval.cameras.camera_to_world[0, :3, 3])
    assert own.chamfer == pytest.approx(0.0, abs=1e-6) and own.f_score["5mm"] == pytest.approx(1.0)


def test_load_run_renders_both_splits_with_their_fitted_codes(mononphm_run):
    folder, run, metrics = mononphm_run
    loaded = load_run(folder, "cpu")
    model = loaded.model
    assert isinstance(model, mononphm.MonoNphm) and not model.training and loaded.step > 0
    state = load_checkpoint(folder / CHECKPOINT_NAME)
    for split, head in (("train", loaded.train_head), ("held_out", loaded.eval_head)):
        track = model.track(split)
        assert torch.equal(track.codes.detach(), state["model"][f"{split}_track.codes"])
        assert torch.equal(head.codes, torch.cat([track.codes, track.rotation, track.shift], dim=1).detach())
    assert float(model.track("held_out").codes.detach().abs().sum()) > 0  # the held-out frames were tracked and kept
    # The held-out renders are the reconstruction's: the same scores as its metrics.
    with torch.no_grad():
        ev = evaluate(model, loaded.subject.eval, metrics["eval_frames"], 512, loaded.device, head=loaded.eval_head)
    assert ev.psnr == pytest.approx(metrics["psnr"], abs=1e-4)
    with torch.no_grad():  # a training frame renders through the model's contract too
        image = render_image(model, loaded.subject.train, 1, 512, loaded.device, head=loaded.train_head)
    assert image.shape == (*loaded.subject.train.images.shape[1:3], 3) and torch.isfinite(image).all()


def test_a_finished_run_is_not_tracked_again_and_another_run_is_refused(mononphm_run, capsys):
    folder, run, metrics = mononphm_run
    before = (folder / CHECKPOINT_NAME).stat().st_mtime_ns
    assert train_run(run, folder, "cpu") == metrics
    assert (folder / CHECKPOINT_NAME).stat().st_mtime_ns == before
    assert "has finished" in capsys.readouterr().out
    other = dataclasses.replace(run, recipe=dataclasses.replace(run.recipe, mesh_resolution=16))
    with pytest.raises(Exception, match="made for another run"):
        train_run(other, folder, "cpu")
    missing = dataclasses.replace(run, recipe=dataclasses.replace(run.recipe, prior=None))
    with raises_naming("mononphm.prior"):
        train_run(missing, folder / "elsewhere", "cpu")


def test_render_export_and_the_viewer_open_the_run(mononphm_run, tmp_path):
    from headfields.apps.commands import main

    folder, _, _ = mononphm_run
    video = tmp_path / "track.mp4"
    assert main(["render", str(folder), "--device", "cpu", "--frames", "2", "--chunk", "512", "--out", str(video)]) == 0
    assert video.is_file() and video.stat().st_size > 0
    meshes = tmp_path / "meshes"
    assert main(["export", str(folder), "--device", "cpu", "--out", str(meshes), "--resolution", "16"]) == 0
    assert sorted(p.name for p in meshes.iterdir()) == ["canonical.ply", "test_00000.ply"]
    viser = pytest.importorskip("viser")
    del viser
    from headfields.apps.commands import parser
    from headfields.apps.commands.view import view
    from headfields.apps.viewer import AvatarViewer, ViewerState, render_avatar
    from headfields.training import render_view

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    served = view(parser().parse_args(["view", str(folder), "--device", "cpu", "--port", str(port)]), block=False)
    try:  # the view command serves the run
        assert served.server.get_port() == port
    finally:
        served.stop()
    run = load_run(folder, "cpu")
    viewer = AvatarViewer(run)  # not started: the head and the render it serves
    head = viewer.head(ViewerState(frame=1, split=run.subject.eval.split))
    torch.testing.assert_close(head.codes, run.eval_head.codes[1:2])
    cameras = run.subject.eval.cameras.select(torch.tensor([1]))
    colour = render_avatar(run.model, cameras, head, False, 512, run.device)
    # The same frame as the loaded run renders it (the viewer's head recomputes FLAME: float rounding apart).
    expected = render_view(run.model, cameras, 0, run.eval_head.select([1]), 0, 512, run.device, viewer.early_stop)
    torch.testing.assert_close(colour, expected, atol=1e-4, rtol=0)  # the fitted colour transform scales the rounding


def test_the_example_and_the_train_command_track_a_saved_prior(person, tmp_path, monkeypatch, capsys):
    subject, flame, _ = person
    save_prior(tiny_prior(flame), tmp_path / "prior.pt")
    out = tmp_path / "run"
    command = [sys.executable, str(EXAMPLES / "mononphm.py"), "--prior", str(tmp_path / "prior.pt"), "--data", str(subject.root)]
    command += ["--out", str(out), "--max-minutes", "0.05", "--eval-frames", "1", "--geometry-frames", "1"]
    command += ["--mesh-resolution", "16", "--mononphm.sampler.coarse", "8", "--mononphm.sampler.per-round", "8"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["recipe"] == "cpu" and math.isfinite(metrics["psnr"]) and math.isfinite(metrics["ssim"])
    assert 0 < metrics["chamfer_flame"] < 0.02 and metrics["chamfer"] > 0
    assert "budget 3.0s: tracking" in done.stdout  # the run's --max-minutes is the tracking's budget
    # Without a prior it is refused, naming the flag: in this process (the refusal comes before any work, and a
    # process of its own took 5 s to import what this one holds).
    monkeypatch.setattr(sys, "argv", [command[1], "--out", str(tmp_path / "none")])
    with pytest.raises(SystemExit) as missing:
        runpy.run_path(command[1], run_name="__main__")
    assert missing.value.code not in (0, None) and "--mononphm.prior" in capsys.readouterr().err
    assert not (tmp_path / "none").exists()


def test_the_ceiling_fit_recovers_a_surface_made_under_a_known_identity(person):
    """The prior's ceiling (mononphm.ceiling): a surface extracted under a known identity code, fitted from the
    model's code (the prior's mean), is matched again (its points' |SDF| falls below half the mean code's); the
    global-only fit keeps the local codes at their centre; the model's own code is untouched throughout."""
    subject, flame, _ = person
    prior = tiny_prior(flame)
    with torch.no_grad():  # no zero-initialised layer: every code moves the surface
        for p in prior.parameters():
            p.add_(torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())) * 0.05)
    model = mononphm.MonoNphm(prior, subject.parametric, len(subject.train), SAMPLER)
    head = model.head(subject.train)
    known = torch.randn(model.codes.identity.shape, generator=torch.Generator().manual_seed(0)) * 0.5
    own = model.codes.identity.detach().clone()
    with torch.no_grad(), identity_code(model, known):
        surface = model.extract_mesh(head, 0, 24)
    assert len(surface.faces) > 100

    def residual(code: torch.Tensor) -> float:  # mean |SDF| on the known surface under ``code``
        with torch.no_grad(), identity_code(model, code):
            rows = torch.zeros(len(surface.vertices), dtype=torch.long)
            return float(model.field.geometry(surface.vertices, rows, head).sdf.abs().mean())

    fitted = surface_identity(model, head, 0, surface.vertices, surface.faces, steps=30, rate=2e-2, points=256)
    assert residual(fitted) < 0.5 * residual(own)
    global_only = surface_identity(model, head, 0, surface.vertices, surface.faces, steps=3, local=False, points=64)
    g = model.prior.config.global_dim
    assert torch.equal(global_only[:, g:], model.codes.identity_centre[:, g:])
    assert not torch.equal(global_only[:, :g], model.codes.identity_centre[:, :g])
    assert torch.equal(model.codes.identity, own)
    with raises_naming("code"):
        with identity_code(model, known[:, :-1]):
            pass
