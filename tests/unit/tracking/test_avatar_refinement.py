"""The tracking refined through an avatar of the video: on the synthetic video, whose true parameters are known, each
frame's head turned by its own random error (what the landmark stages leave) comes back close to the truth; the
expressions and the shape are left as they were; bad settings are named."""

import io
from dataclasses import replace

import pytest
import torch

from headfields.apps.tracking import accuracy
from headfields.apps.tracking.avatar_refinement import AvatarRefinementConfig, avatar_recipe, refine_tracking
from headfields.data import TrackedParams, load_insta_dataset
from headfields.models.gaussian_avatars import cpu_config
from headfields.parametric import load_model
from headfields.synthetic import SyntheticVideoConfig, make_synthetic_video

TURN_DEGREES = 2.0  # each frame's head turned this far off the truth, about a random axis


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    config = SyntheticVideoConfig(num_frames=24, num_val=1, num_test=1, resolution=64, supersampling=1)
    root = make_synthetic_video(tmp_path_factory.mktemp("video"), config)
    return load_insta_dataset(root, "train"), load_model(root / "model")


def _turned(params: TrackedParams, degrees: float, seed: int) -> TrackedParams:
    generator = torch.Generator().manual_seed(seed)
    axes = torch.nn.functional.normalize(torch.randn(params.num_frames, 3, generator=generator, dtype=torch.float64), dim=-1)
    pose = params.pose.clone()
    pose[:, 0] += (axes * torch.deg2rad(torch.tensor(degrees, dtype=torch.float64))).to(pose)
    return replace(params, pose=pose)


def test_each_frames_turn_comes_back_to_the_truth(video, tmp_path):
    frames, model = video
    truth = (frames.params, frames.cameras)
    tracked = _turned(frames.params, TURN_DEGREES, seed=0)
    before = accuracy.tracking_accuracy(model, (tracked, frames.cameras), truth)
    config = AvatarRefinementConfig(avatar_steps=180, refit_steps=15)
    refined = refine_tracking(replace(frames, params=tracked), model, tmp_path / "avatar", config, log=io.StringIO())
    after = accuracy.tracking_accuracy(model, (refined, frames.cameras), truth)
    assert before.rotation_deg > 0.9 * TURN_DEGREES
    # Measured (180 avatar steps; 300 gave the same): 1.99 -> 0.94 degrees, the face in the image 0.66 -> 0.16 px,
    # its vertices 5.0 -> 2.1 mm.
    assert after.rotation_deg < 0.6 * before.rotation_deg and after.image_px < 0.5 * before.image_px, (before, after)
    assert torch.equal(refined.expression, tracked.expression) and torch.equal(refined.shape, tracked.shape)
    assert torch.equal(refined.pose[:, 2:], tracked.pose[:, 2:])  # the jaw and the eyes as tracked


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("avatar_steps", -1, "avatar_steps: expected"),
        ("refit_steps", 0, "refit_steps: expected"),
        ("rotation_rate", float("nan"), "rotation_rate: expected"),
        ("size", 8, "size: expected"),
    ],
)
def test_bad_settings_are_named(field, value, message):
    with pytest.raises(ValueError, match=message):
        AvatarRefinementConfig(**{field: value})


def test_frames_without_masks_are_refused(video, tmp_path):
    frames, model = video
    with pytest.raises(ValueError, match="frames: expected tracked parameters and foreground masks"):
        refine_tracking(replace(frames, masks=None), model, tmp_path / "avatar", AvatarRefinementConfig())
    assert not (tmp_path / "avatar").exists()


@pytest.mark.parametrize("steps", [1500, 3000, 6001])
def test_no_opacity_reset_falls_within_the_avatars_steps(steps):
    """A reset at the avatar's last step left it nearly transparent and the refit astray (3,000 steps: 5 dB lost)."""
    recipe, cpu = avatar_recipe(steps), cpu_config()
    assert recipe.density.opacity_reset_interval > steps
    assert recipe == cpu if steps < cpu.density.opacity_reset_interval else recipe.density != cpu.density
