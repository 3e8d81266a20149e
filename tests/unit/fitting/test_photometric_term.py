"""The face tracker's photometric stage on a synthetic video whose truth is known: its written-out Gauss-Newton
gradient against autograd through the model, the ray hits and the colours; the colours' least squares against
colours it rendered itself; and the stage lowering the face's error left by landmarks alone."""

from __future__ import annotations

import pytest
import torch

from headfields.apps.tracking.accuracy import tracking_accuracy
from headfields.cameras import project_points
from headfields.data import load_insta_dataset
from headfields.fitting.landmark_tracking import LandmarkTrackingConfig, SurfaceLandmarks, _Problem, track_landmarks
from headfields.fitting.photometric_term import PhotometricTerm
from headfields.parametric import load_model
from headfields.synthetic import SyntheticVideoConfig, make_synthetic_video

from helpers import raises_naming

RESOLUTION = 128
NOISE_PX = 1.5  # in a 512-pixel frame


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    """The synthetic video's frames, masks and truth, and its true landmarks with 1.5 px of noise (of 512)."""
    root = make_synthetic_video(
        tmp_path_factory.mktemp("video"),
        SyntheticVideoConfig(num_frames=33, num_val=1, num_test=2, resolution=RESOLUTION, supersampling=2),
    )
    train = load_insta_dataset(root, "train")
    model = load_model(root / "model")
    p = train.params
    landmarks = model(shape=p.shape, expression=p.expression, pose=p.pose, translation=p.translation).landmarks
    n, k = landmarks.shape[:2]
    pixels = project_points(train.cameras, landmarks.reshape(-1, 3), torch.arange(n).repeat_interleave(k)).pixels
    noise = torch.randn(n, k, 2, generator=torch.Generator().manual_seed(0)) * NOISE_PX * RESOLUTION / 512
    points = torch.full((n, 68, 2), float("nan"))
    points[:, 68 - k :] = pixels.reshape(n, k, 2) + noise
    return model, train, points


def _problem(video, frames: int) -> _Problem:
    """The landmark stages' problem on the first ``frames`` frames, fitted, with the photometric term set up."""
    model, train, points = video
    found = torch.ones(frames, dtype=torch.bool)
    config = LandmarkTrackingConfig(keyframes=frames)
    problem = _Problem(
        model, points[:frames, 17:].double(), found, SurfaceLandmarks.static(model), RESOLUTION, RESOLUTION, config, None, None
    )
    for stage in ("rigid", "keyframes", "frames"):
        getattr(problem, f"{stage}_stage")(5)
    problem.photometric = PhotometricTerm(model, train.images[:frames], train.masks[:frames], problem.surface.exprdirs.shape[-1])
    problem.photometric_scale = 1.0
    return problem


def test_photometric_gradient_matches_autograd(video):
    """``J^T W r`` as the stage assembles it (the surface's Jacobians, the hits' barycentrics by forward mode) is half
    the gradient of the Cauchy cost that autograd takes through the model, Warp's hits and torch's barycentrics."""
    problem = _problem(video, 3)
    term = problem.photometric
    focal = float(problem.shared[-1].exp())
    term.solve_colours(problem._world(problem.frames, problem.shared, term.surface), focal)
    frames = problem.frames.clone()
    _, g = problem._photometric_system(frames)
    frames.requires_grad_(True)
    (auto,) = torch.autograd.grad(problem._photometric_cost(frames), frames)  # the hits are fixed for a tiny step
    torch.testing.assert_close(2 * g, auto, atol=1e-6 * float(auto.abs().max()), rtol=1e-5)
    assert float(g.abs().max()) > 0


def test_colours_are_the_least_squares_fit(video):
    """Frames painted with known vertex colours (through the term's own hits and barycentrics) give those colours
    back wherever the frames see a vertex well."""
    problem = _problem(video, 2)
    term = problem.photometric
    focal = float(problem.shared[-1].exp())
    world = problem._world(problem.frames, problem.shared, term.surface)
    truth = torch.rand(term.num_vertices, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    term.colours = truth
    frame, pixel, face, _ = term.residuals(world, focal)
    painted = term.colours_seen.clone()
    corners = world[frame[:, None], term.faces[face]]
    bary = term._bary(corners, term.rays(focal)[pixel])
    painted[frame, pixel] = (bary[..., None] * truth[term.faces[face]]).sum(1)
    term.colours_seen = painted
    term.colours = torch.full_like(truth, 0.5)
    term.solve_colours(world, focal)
    residual = term.residuals(world, focal)[3]
    # The painted pixels come back (their colours are reachable: the least squares' optimum is 0); the vertices
    # themselves only where enough pixels pin them, which at 128 px is not every one.
    assert float(residual.square().mean().sqrt()) < 0.005 and float(residual.abs().max()) < 0.05, residual.abs().max()


def test_the_photometric_stage_lowers_the_error_of_landmarks_alone(video):
    model, train, points = video
    n = len(train)
    found = torch.ones(n, dtype=torch.bool)
    errors = {}
    for steps in (0, 5):
        config = LandmarkTrackingConfig(photometric_steps=steps)
        fit = track_landmarks(
            model, points, found, SurfaceLandmarks.static(model), RESOLUTION, RESOLUTION, config,
            images=train.images, masks=train.masks,
        )  # fmt: skip
        errors[steps] = tracking_accuracy(model, (fit.params, fit.cameras), (train.params, train.cameras))
    # Measured (30 frames at 128 px): 2.67 -> 0.81 mm, rotation 0.38 -> 0.35 degrees, jaw 0.33 -> 0.29.
    assert errors[5].vertex_mm < min(1.2, 0.6 * errors[0].vertex_mm), errors
    assert errors[5].rotation_deg < errors[0].rotation_deg + 0.1, errors


def test_images_without_masks_are_refused(video):
    model, train, points = video
    found = torch.ones(len(train), dtype=torch.bool)
    with pytest.raises(ValueError, match="^masks: expected the images' foreground"):
        track_landmarks(model, points, found, SurfaceLandmarks.static(model), RESOLUTION, RESOLUTION, images=train.images)
    with raises_naming("images"):  # a frame short of the landmarks
        track_landmarks(model, points, found, SurfaceLandmarks.static(model), RESOLUTION, RESOLUTION, images=train.images[1:])
    with pytest.raises(ValueError, match="^images: expected uint8 frames"):
        track_landmarks(
            model, points, found, SurfaceLandmarks.static(model), RESOLUTION, RESOLUTION,
            images=train.images[:, :-1], masks=train.masks[:, :-1],
        )  # fmt: skip
