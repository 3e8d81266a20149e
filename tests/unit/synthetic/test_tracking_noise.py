"""noisy_tracking: a capture's copy whose head poses and landmarks carry stated noise, checked against the clean
capture it was made from (rigid fits of the written meshes, a hand-written pinhole for the landmarks)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from headfields.data import SPLITS, composited_over, load_insta_dataset
from headfields.parametric import load_model
from headfields.synthetic import LANDMARKS_FOLDER, SyntheticVideoConfig, TrackingNoise, make_synthetic_video, noisy_tracking

from helpers import raises_naming


@pytest.fixture(scope="module")
def clean(tmp_path_factory):
    config = SyntheticVideoConfig(num_frames=30, num_val=2, num_test=4, resolution=16, supersampling=1, episode_frames=3)
    return make_synthetic_video(tmp_path_factory.mktemp("clean"), config)


@pytest.fixture(scope="module")
def exact(clean, tmp_path_factory):
    """The copy with no noise at all."""
    return noisy_tracking(clean, tmp_path_factory.mktemp("exact") / "copy", TrackingNoise(0, 0, 0))


def kabsch(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """The rotation R minimising |R (a - mean a) - (b - mean b)| over a frame's vertices ``[V, 3]``."""
    a, b = a.double() - a.double().mean(0), b.double() - b.double().mean(0)
    u, _, vt = torch.linalg.svd(b.T @ a)
    d = torch.sign(torch.det(u @ vt))
    return u @ torch.diag(torch.tensor([1.0, 1.0, d], dtype=torch.float64)) @ vt


def pinhole(frames, points: torch.Tensor) -> torch.Tensor:
    """Pixels of world points ``[N, L, 3]`` through each frame's camera (OpenCV axes), written out by hand."""
    c2w = frames.cameras.camera_to_world.double()
    q = torch.einsum("nji,nlj->nli", c2w[:, :3, :3], points.double() - c2w[:, None, :3, 3])  # R^T (X - c)
    u = frames.cameras.fx * q[..., 0] / q[..., 2] + frames.cameras.cx
    v = frames.cameras.fy * q[..., 1] / q[..., 2] + frames.cameras.cy
    return torch.stack([u, v], dim=-1)


def test_without_noise_the_copy_is_the_capture_and_its_landmarks_the_tracked_ones(clean, exact):
    out = exact
    background = tuple(float(c) for c in SyntheticVideoConfig().background)
    assert composited_over(clean) == composited_over(out) == background  # the copy's images are read alike
    with raises_naming("split"):
        composited_over(clean, "all")
    for split in SPLITS:
        a, b = load_insta_dataset(clean, split), load_insta_dataset(out, split)
        for name in ("images", "masks", "segmentation"):
            assert torch.equal(getattr(a, name), getattr(b, name)), name
        torch.testing.assert_close(a.depths, b.depths)
        torch.testing.assert_close(a.params.pose, b.params.pose)
        torch.testing.assert_close(a.mesh_vertices, b.mesh_vertices, atol=1e-6, rtol=0)
        model = load_model(b.model_path)
        p = a.params
        truth = model(shape=p.shape, expression=p.expression, pose=p.pose, translation=p.translation).landmarks
        detected = torch.from_numpy(np.load(out / LANDMARKS_FOLDER / f"{split}.npy"))
        assert detected.shape == (len(a), model().landmarks.shape[1], 2)
        torch.testing.assert_close(detected.double(), pinhole(a, truth), atol=1e-3, rtol=0)


def test_the_noise_has_the_stated_spread(clean, exact, tmp_path):
    # Translation alone: every vertex of a frame moves by the same shift, of s.d. 5 mm per axis.
    shifted = noisy_tracking(clean, tmp_path / "shifted", TrackingNoise(rotation_deg=0, translation=0.005, landmarks=2.0))
    a, b = load_insta_dataset(clean, "train"), load_insta_dataset(shifted, "train")
    shift = b.mesh_vertices - a.mesh_vertices
    torch.testing.assert_close(shift, shift[:, :1].expand_as(shift), atol=1e-6, rtol=0)
    assert 0.004 < shift[:, 0].std() < 0.006
    clean_pixels = np.load(exact / LANDMARKS_FOLDER / "train.npy")
    error = np.load(shifted / LANDMARKS_FOLDER / "train.npy") - clean_pixels  # the detector's noise, not the pose's
    assert 1.9 < error.std() < 2.1 and abs(error.mean()) < 0.1

    # Rotation alone: each frame's mesh is the clean one turned rigidly, by angles of s.d. 3 degrees per axis.
    turned = noisy_tracking(clean, tmp_path / "turned", TrackingNoise(rotation_deg=3.0, translation=0, landmarks=0, seed=1))
    b = load_insta_dataset(turned, "train")
    angles = []
    for f in range(len(a)):
        r = kabsch(a.mesh_vertices[f], b.mesh_vertices[f])
        moved = (a.mesh_vertices[f].double() - a.mesh_vertices[f].double().mean(0)) @ r.T
        torch.testing.assert_close(moved, b.mesh_vertices[f].double() - b.mesh_vertices[f].double().mean(0), atol=1e-5, rtol=0)
        angles.append(torch.stack([r[2, 1] - r[1, 2], r[0, 2] - r[2, 0], r[1, 0] - r[0, 1]]) / 2)  # sin(angle) axis
    spread = math.degrees(float(torch.stack(angles).std()))
    assert 2.2 < spread < 3.8


def test_noisy_tracking_names_its_bad_arguments(clean, tmp_path):
    with raises_naming("rotation_deg"):
        TrackingNoise(rotation_deg=-1.0)
    with raises_naming("landmarks"):
        TrackingNoise(landmarks=math.nan)
    with raises_naming("noise"):
        noisy_tracking(clean, tmp_path / "a", noise="loud")
    (tmp_path / "taken").mkdir()
    with pytest.raises(FileExistsError, match="^out:"):
        noisy_tracking(clean, tmp_path / "taken")


def test_the_frames_of_one_timestep_share_its_error(tmp_path):
    # GaussianAvatars' novel views: each val frame sees a training timestep again, with its very tracking.
    config = SyntheticVideoConfig(
        num_frames=12, num_val=2, num_test=2, resolution=8, supersampling=1, episode_frames=3, val_view_yaw=0.3
    )
    clean = make_synthetic_video(tmp_path / "clean", config)
    noisy = noisy_tracking(clean, tmp_path / "noisy", TrackingNoise(rotation_deg=2.0, translation=0.004, landmarks=0))
    train, val = load_insta_dataset(noisy, "train"), load_insta_dataset(noisy, "val")
    clean_train, clean_val = load_insta_dataset(clean, "train"), load_insta_dataset(clean, "val")
    seen = [next(f for f in range(len(clean_train)) if torch.equal(clean_train.params.pose[f], p)) for p in clean_val.params.pose]
    for v, f in enumerate(seen):
        assert torch.equal(val.params.pose[v], train.params.pose[f])
        assert torch.equal(val.params.translation[v], train.params.translation[f])
        assert not torch.equal(val.params.translation[v], clean_val.params.translation[v])  # the error is there
    # The other training frames, each a timestep of its own, carry errors of their own.
    shifts = train.params.translation - clean_train.params.translation
    assert len({tuple(s.tolist()) for s in shifts}) == len(train)
