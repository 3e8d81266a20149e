"""The gaze fit against pupils whose gaze is known: the model's own posed eyeballs (its skinning, not the fit's
composition of joint transforms) projected by a camera, the head turning and the eyes converging."""

from __future__ import annotations

import math

import pytest
import torch

from headfields.cameras import PinholeCameras, look_at
from headfields.data import TrackedParams
from headfields.fitting.gaze import GazeConfig, fit_gaze
from headfields.parametric import EYE_JOINTS, load_model
from headfields.synthetic import write_synthetic_flame

from helpers import shapes_unchecked, true_pupils

FRAMES = 40
SIZE = 256


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    """A head turning and looking about (its eyes converging by 2 degrees each), a camera 60 cm in front, and each
    eye's pupil: the eyeball vertex straight ahead of its joint, posed by the model's skinning and projected."""
    model = load_model(write_synthetic_flame(tmp_path_factory.mktemp("flame")))
    t = torch.linspace(0, 1, FRAMES)[:, None]
    pose = torch.zeros(FRAMES, model.num_joints, 3)
    pose[:, model.joint_index("neck")] = torch.cat([0.2 * torch.sin(5 * t), 0.4 * torch.sin(3 * t + 1), 0.05 * t], 1)
    gaze = torch.cat([0.25 * torch.sin(7 * t), 0.3 * torch.cos(4 * t)], 1)
    vergence = math.radians(2.0)
    left, right = (model.joint_index(name) for name in EYE_JOINTS)
    pose[:, left, :2] = gaze + torch.tensor([0.0, -vergence])  # the left eye (at +x) turns inward about -y
    pose[:, right, :2] = gaze + torch.tensor([0.0, vergence])
    shape = 0.5 * torch.randn(model.num_shape, generator=torch.Generator().manual_seed(0))
    params = TrackedParams(shape, torch.zeros(FRAMES, model.num_expression), pose, torch.zeros(FRAMES, 3))
    eye = torch.tensor([[0.0, 0.0, 0.6]]).expand(FRAMES, 3)
    cameras = PinholeCameras(400.0, 400.0, SIZE / 2, SIZE / 2, SIZE, SIZE, look_at(eye, torch.zeros(FRAMES, 3)))
    return model, params, cameras, true_pupils(model, params, cameras)


def _straight(params: TrackedParams, model) -> TrackedParams:
    pose = params.pose.clone()
    pose[:, [model.joint_index(name) for name in EYE_JOINTS]] = 0.0
    return TrackedParams(params.shape, params.expression, pose, params.translation)


def _error_deg(model, pose: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
    eyes = [model.joint_index(name) for name in EYE_JOINTS]
    return torch.rad2deg((pose[:, eyes] - truth[:, eyes]).norm(dim=-1))


def test_gaze_and_vergence_from_the_pupils(scene):
    model, params, cameras, irises = scene
    seen = torch.ones(FRAMES, 2, dtype=torch.bool)
    pose = fit_gaze(model, _straight(params, model), cameras, irises, seen)
    error = _error_deg(model, pose, params.pose)
    # The gaze swings up to 17 degrees; the pupil is the eyeball vertex nearest straight ahead, a little off the
    # fit's ideal pole on the synthetic ball's grid, and the prior and smoothness pull a little.
    assert float(error.median()) < 0.5 and float(error.max()) < 1.5, error
    left, right = (model.joint_index(name) for name in EYE_JOINTS)
    vergence = torch.rad2deg(pose[:, right, 1] - pose[:, left, 1]).mean() / 2
    assert abs(float(vergence) - 2.0) < 0.3, vergence
    others = [j for j in range(model.num_joints) if j not in (left, right)]
    assert pose[:, others].equal(params.pose[:, others])  # the head and the jaw are held


def test_frames_without_irises_follow_their_neighbours(scene):
    model, params, cameras, irises = scene
    seen = torch.ones(FRAMES, 2, dtype=torch.bool)
    seen[15:20] = False  # a blink of five frames
    seen[5, 0] = False  # one eye hidden: the other still gives the shared gaze
    noisy = irises.clone()
    noisy[15:20] = 0.0  # whatever the detector said there is not read
    pose = fit_gaze(model, _straight(params, model), cameras, noisy, seen)
    error = _error_deg(model, pose, params.pose)
    assert float(error[5].max()) < 1.0, error[5]
    # The gap is bridged in a straight line between its neighbours: the smooth gaze's curve departs from it a little.
    assert float(error[15:20].max()) < 1.5, error[15:20]


def test_no_iterations_or_no_irises_leave_the_eyes(scene):
    model, params, cameras, irises = scene
    start = _straight(params, model)
    seen = torch.ones(FRAMES, 2, dtype=torch.bool)
    assert fit_gaze(model, start, cameras, irises, seen, GazeConfig(iterations=0)).equal(start.pose)
    assert fit_gaze(model, start, cameras, irises, torch.zeros_like(seen)).equal(start.pose)
    nan = torch.full_like(irises, float("nan"))
    assert fit_gaze(model, start, cameras, nan, seen).equal(start.pose)


def test_bad_input(scene):
    model, params, cameras, irises = scene
    seen = torch.ones(FRAMES, 2, dtype=torch.bool)
    with shapes_unchecked():  # the function's own message, past jaxtyping's annotation check
        with pytest.raises(ValueError, match=r"irises, seen: expected \[40, 2, 2\]"):
            fit_gaze(model, params, cameras, irises[:, :1], seen)
        with pytest.raises(ValueError, match="bool"):
            fit_gaze(model, params, cameras, irises, seen.float())
    with pytest.raises(ValueError, match="iterations"):
        GazeConfig(iterations=-1)
    with pytest.raises(ValueError, match="robust_scale"):
        GazeConfig(robust_scale=0.0)
