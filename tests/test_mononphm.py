"""MonoNPHM's tracking on tiny sizes: the corrected pose against the rigid deformer and an analytic rotation; the
posed anchors of an undeformed prior against their closed form, with gradients to the pose; landmark pairs against
a brute force; the silhouette and smoothness terms against hand values; stage 1 lowers the photometric loss and
fits the identity, held-out tracking leaves it alone, stage 2 smooths; the whole reconstruction writes its
metrics; bad input raises."""

import dataclasses
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from headfields.data import load_subject
from headfields.deformers import RigidDeformer, RigidDeformerConfig
from headfields.models import mononphm
from headfields.models.nphm import Nphm, save_prior
from headfields.parametric import load_model
from headfields.synthetic import (
    ScanSetConfig,
    SyntheticVideoConfig,
    anchor_vertices,
    load_ground_truth,
    make_synthetic_video,
)

from helpers import raises_naming, tiny_nphm_config

TINY = tiny_nphm_config(sdf_width=16)
FEW = mononphm.TrackingConfig(
    first_frame=dataclasses.replace(mononphm.TrackingConfig().first_frame, steps=12),
    per_frame=dataclasses.replace(mononphm.TrackingConfig().per_frame, steps=2),
    joint=dataclasses.replace(mononphm.TrackingConfig().joint, steps=4),
    rays_per_step=96,
)
EXAMPLES = Path(__file__).parents[1] / "examples"
SAMPLER = mononphm.cpu_config(sampler=dataclasses.replace(mononphm.cpu_config().sampler, coarse=8, per_round=8))


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
    ids, mirror = anchor_vertices(flame)
    neutral = flame().canonical_vertices
    torch.manual_seed(seed)
    prior = Nphm(neutral[ids], mirror, (neutral.amin(0) + neutral.amax(0)) / 2, 1, 1, TINY)
    with torch.no_grad():  # the anchor predictor at zero: anchors are the template's
        prior.anchor_offsets[-1].weight.zero_()
        prior.anchor_offsets[-1].bias.zero_()
    return prior.requires_grad_(False)


def test_corrected_pose_is_the_rigid_deformer_at_zero_and_rotates_in_the_head_frame(person):
    subject, flame, _ = person
    model = mononphm.MonoNphm(tiny_prior(flame), subject.parametric, len(subject.train), SAMPLER)
    head = model.head(subject.train)
    x = torch.randn(20, 3, generator=torch.Generator().manual_seed(0)) * 0.1
    frame = torch.arange(20) % len(subject.train)
    rigid = RigidDeformer(RigidDeformerConfig(joint=model.head_joint))
    torch.testing.assert_close(model.pose(x, head, frame, None).points, rigid(x, head, frame, None).points)
    with torch.no_grad():  # a quarter turn about the head frame's z: exp((0, w)) turns by 2|w|
        model.pose.rotation[:, 2] = math.pi / 4
    turn = torch.tensor([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    expected = rigid(x, head, frame, None).points @ turn  # R_z^T applied to each row
    torch.testing.assert_close(model.pose(x, head, frame, None).points, expected, atol=1e-5, rtol=1e-5)


def test_posed_anchors_of_an_undeformed_prior_and_their_gradients(person):
    subject, flame, _ = person
    prior = tiny_prior(flame)
    with torch.no_grad():
        prior.deformer.output.weight.zero_()  # no offsets and no hyper coordinates: posed = canonical
    model = mononphm.MonoNphm(prior, subject.parametric, len(subject.train), SAMPLER)
    head = model.head(subject.train)
    ids = torch.tensor([0, 7, 64])
    with torch.no_grad():
        model.pose.shift[1] = torch.tensor([0.01, 0.0, -0.02])
    posed, converged = model.posed_anchors(head, 1, ids)
    assert bool(converged.all())
    metres = prior.template_anchors[ids] * prior.normalize.scale + prior.normalize.center
    transform = head.joint_transforms[1, model.head_joint]
    expected = metres @ transform[:3, :3].T + transform[:3, 3] + torch.tensor([0.01, 0.0, -0.02])
    torch.testing.assert_close(posed.detach(), expected, atol=1e-5, rtol=1e-5)
    posed.sum().backward()
    assert model.pose.rotation.grad[1].abs().sum() > 0 and model.pose.shift.grad[1].abs().sum() > 0
    assert model.pose.rotation.grad[0].abs().sum() == 0  # another frame's pose does not move


def test_landmark_pairs_are_the_nearest_anchors_within_the_distance(person):
    subject, flame, _ = person
    prior = tiny_prior(flame)
    anchors, landmarks = mononphm.landmark_pairs(prior, subject.parametric, 0.01)
    assert len(anchors) > 0
    points = subject.parametric().landmarks[0]
    template = prior.template_anchors * prior.normalize.scale + prior.normalize.center
    for a, lm in zip(anchors.tolist(), landmarks.tolist(), strict=True):
        distances = (template - points[lm]).norm(dim=1)
        assert int(distances.argmin()) == a and float(distances[a]) <= 0.01
    unpaired = sorted(set(range(len(points))) - set(landmarks.tolist()))
    for lm in unpaired:
        assert float((template - points[lm]).norm(dim=1).min()) > 0.01


def test_silhouette_and_smoothness_terms_match_hand_values(person):
    subject, flame, _ = person
    mask = torch.tensor([1.0, 1.0, 0.0, 0.0])
    assert float(mononphm._soft_jaccard(mask, mask)) == pytest.approx(0.0)
    disjoint = torch.tensor([0.0, 0.0, 1.0, 1.0])
    assert float(mononphm._soft_jaccard(disjoint, mask)) == pytest.approx((1 - 5 / 9) * 5)
    model = mononphm.MonoNphm(tiny_prior(flame), subject.parametric, 3, SAMPLER)
    with torch.no_grad():
        model.expression_codes.codes.copy_(torch.tensor([[0.0, 0, 0], [1.0, 0, 0], [1.0, 2.0, 0]]))
        model.pose.shift[2] = torch.tensor([0.0, 0.0, 0.1])
    stage = mononphm.StageConfig(steps=1, smooth_expression=2.0, smooth_pose=3.0)
    # Expression: mean of 1 and 4; pose: mean of 0 and 10 x 0.01.
    assert float(mononphm._smoothness(model, stage).detach()) == pytest.approx(2.0 * 2.5 + 3.0 * 0.05)


def test_stage_one_fits_the_person_and_held_out_tracking_keeps_the_identity(person):
    subject, flame, _ = person
    model = mononphm.MonoNphm(tiny_prior(flame), subject.parametric, len(subject.train), SAMPLER)
    history = mononphm.track_sequence(model, subject.train, FEW)
    first = [log for log in history.logs if log["stage"] == "stage1"]
    assert first[-1]["rgb"] < first[0]["rgb"]  # the first frame's colour error falls
    assert history.steps["stage1"] == 12 + 2 * (len(subject.train) - 1) and history.steps["stage2"] == 4
    assert float(model.codes.identity.detach().abs().sum()) > 0 and float(model.codes.appearance.detach().abs().sum()) > 0
    held = model.with_frames(len(subject.eval))
    before = [t.detach().clone() for t in (held.codes.identity, held.codes.appearance, held.lighting.coefficients)]
    mononphm.track_frames(held, subject.eval, FEW)
    after = (held.codes.identity, held.codes.appearance, held.lighting.coefficients)
    assert all(torch.equal(a, b) for a, b in zip(before, after, strict=True))
    assert float(held.expression_codes.codes.detach().abs().sum()) > 0  # every held-out frame moved from the mean code
    assert not any(p.requires_grad for p in model.prior.parameters())


def test_reconstruct_writes_the_metrics(person, tmp_path):
    subject, flame, truth = person
    result = mononphm.reconstruct(
        tiny_prior(flame), subject.train, subject.eval, subject.parametric, SAMPLER, FEW, truth,
        eval_frames=2, geometry_frames=1, mesh_resolution=24, out=tmp_path,
    )  # fmt: skip
    m = result.metrics
    for key in ("psnr", "ssim", "l1", "psnr_mean_codes", "chamfer", "chamfer_flame", "chamfer_mm", "f_score"):
        assert key in m
    # The tracked FLAME mesh misses the person's detail but is close: under 2% of the head's size.
    assert 0 < m["chamfer_flame"] < 0.02 and m["chamfer_flame_mm"] == pytest.approx(
        1000 * m["chamfer_flame"] * m["head_size_m"], rel=0.05
    )
    assert (tmp_path / "renders").is_dir() and list(tmp_path.glob("mesh_*.obj"))
    own = mononphm.geometry_score(truth[0][0], truth[1], truth[0][0], truth[1], subject.eval.cameras.camera_to_world[0, :3, 3])
    assert own.chamfer == pytest.approx(0.0, abs=1e-6) and own.f_score["5mm"] == pytest.approx(1.0)


def test_a_budget_covers_the_evaluation_and_shares_the_rest_by_steps(person, capsys, monkeypatch):
    """With max_minutes, reconstruct sets the renders and meshes aside, says so, and gives the two tracking calls
    the rest in proportion to their steps (not the whole budget each)."""
    subject, flame, truth = person
    given = []
    track = mononphm._track
    monkeypatch.setattr(
        mononphm, "_track", lambda model, frames, c, *rest: given.append(c.max_minutes) or track(model, frames, c, *rest)
    )
    budget = dataclasses.replace(FEW, max_minutes=0.5)
    mononphm.reconstruct(
        tiny_prior(flame), subject.train, subject.eval, subject.parametric, SAMPLER, budget, truth,
        eval_frames=2, geometry_frames=1, mesh_resolution=24,
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
        mononphm.TrackingConfig(foreground_fraction=1.5)
    with raises_naming("num_frames"):
        mononphm.MonoNphm(tiny_prior(flame), subject.parametric, 0, SAMPLER)


def test_landmarks_given_per_frame_replace_the_projected_tracking(person):
    subject, flame, _ = person
    model = mononphm.MonoNphm(tiny_prior(flame), subject.parametric, len(subject.train), SAMPLER)
    anchors, landmarks = mononphm.landmark_pairs(model.prior, model.parametric)
    head = model.head(subject.train)
    projected = mononphm._detected_landmarks(model, subject.train, head, landmarks, None)
    count = subject.parametric().landmarks.shape[1]
    given = torch.rand(len(subject.train), count, 2) * 24
    torch.testing.assert_close(mononphm._detected_landmarks(model, subject.train, head, landmarks, given), given[:, landmarks])
    assert projected.shape == (len(subject.train), len(landmarks), 2)
    with raises_naming("landmarks"):
        mononphm.track_sequence(model, subject.train, FEW, landmarks=torch.zeros(len(subject.train), count + 1, 2))


def test_the_example_tracks_a_saved_prior_and_writes_its_metrics(person, tmp_path):
    subject, flame, _ = person
    save_prior(tiny_prior(flame), tmp_path / "prior.pt")
    out = tmp_path / "run"
    command = [sys.executable, str(EXAMPLES / "mononphm.py"), "--prior", str(tmp_path / "prior.pt"), "--data", str(subject.root)]
    command += [
        "--out",
        str(out),
        "--max-minutes",
        "0.05",
        "--eval-frames",
        "1",
        "--geometry-frames",
        "1",
        "--mesh-resolution",
        "16",
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["recipe"] == "cpu" and math.isfinite(metrics["psnr"]) and math.isfinite(metrics["ssim"])
    assert 0 < metrics["chamfer_flame"] < 0.02 and metrics["chamfer"] > 0
    missing = subprocess.run([*command[:2], "--prior", str(tmp_path / "none.pt")], capture_output=True, text=True, timeout=120)
    assert missing.returncode != 0 and "--prior" in missing.stderr
