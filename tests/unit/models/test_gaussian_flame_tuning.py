"""GaussianAvatars' FLAME fine-tuning (issue 79): each training timestep's expression, pose and translation move under
training and the posed Gaussians follow the FLAME model posed directly with the fitted values; off, the tracking is
untouched; the fitted values come back with ``load_run``, drive ``render`` of the training split and fill the export's
``flame_param.npz``; a timestep is shared by the frames that share its tracking; an older checkpoint loads; tracked
meshes without a model train on, said once; bad configs named."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch

from headfields.apps.commands import main
from headfields.apps.gaussian_avatars_run import export_gaussian_avatars_run
from headfields.apps.runs import RunConfig, SubjectSource, load_run, train_run
from headfields.heads import tracked_head
from headfields.metrics import psnr
from headfields.models.gaussian_avatars import FittedTracking, GaussianAvatar, GaussianAvatarConfig, cpu_config
from headfields.parametric import load_model
from headfields.synthetic import SyntheticVideoConfig, write_insta_capture
from headfields.training import TrainingConfig, train

from helpers import raises_naming

# Rates far above GaussianAvatars' (1e-3, 1e-5, 1e-6), so that a few steps move every fitted parameter clearly.
# Fine-tuning on (the CPU recipe leaves it off).
FAST = dict(flame_expression_lr=0.05, flame_pose_lr=0.01, flame_translation_lr=0.002, sh_degree=1, fine_tune_flame=True)
STEPS = 10


def _posed_directly(parametric, head, fitted: FittedTracking, t: int) -> torch.Tensor:
    """The FLAME model posed with timestep ``t``'s fitted values, with the head's own shape."""
    with torch.no_grad():
        return parametric(
            shape=head.shape,
            expression=fitted.expression[t : t + 1],
            pose=fitted.pose[t : t + 1],
            translation=fitted.translation[t : t + 1],
        ).vertices[0]


@pytest.fixture(scope="module")
def tuned_run(tmp_path_factory, tiny_video):
    folder = tmp_path_factory.mktemp("tuned_run")
    config = TrainingConfig(max_iterations=STEPS, eval_every=0, log_every=5)
    run = RunConfig("gaussian_avatar", cpu_config(**FAST), config, SubjectSource(data=str(tiny_video[0].root)))
    train_run(run, folder, "cpu", log=open(os.devnull, "w"))
    return folder


def test_the_fitted_parameters_move_and_the_posed_gaussians_follow_them(tiny_video, tmp_path):
    train_frames, eval_frames = tiny_video
    parametric = load_model(train_frames.model_path, train_frames.model_type)
    model = GaussianAvatar(parametric, cpu_config(**FAST))
    config = TrainingConfig(max_iterations=STEPS, eval_every=0)
    train(model, train_frames, eval_frames, tmp_path, config, log=open(os.devnull, "w"))
    head = tracked_head(parametric, train_frames)
    fitted = model.tracking
    assert fitted.num_timesteps == len(train_frames)  # a monocular video: a timestep a frame
    for name in ("expression", "pose", "translation"):
        moved = (getattr(fitted, name) - getattr(head, name)).abs().amax(dim=tuple(range(1, getattr(head, name).dim())))
        assert int((moved > 0).sum()) >= 2, name  # the frames drawn moved (10 draws of 5 frames)
    with torch.no_grad():
        for frame in range(len(train_frames)):
            want = model.gaussians.bound(_posed_directly(parametric, head, fitted, frame), head.faces)
            got = model.posed(head, frame)  # found from the frame's tracking
            torch.testing.assert_close(got.means, want.means, rtol=0, atol=1e-6)
            torch.testing.assert_close(got.scales, want.scales, rtol=1e-5, atol=1e-9)
    # An unseen timestep (a held-out frame) keeps its own tracking.
    held_out = tracked_head(parametric, eval_frames)
    with torch.no_grad():
        torch.testing.assert_close(
            model.posed(held_out, 0).means, model.gaussians.bound(held_out.vertices[0], held_out.faces).means
        )


def test_fine_tuning_off_leaves_the_tracking_untouched(tiny_video, tmp_path):
    train_frames, eval_frames = tiny_video
    parametric = load_model(train_frames.model_path, train_frames.model_type)
    model = GaussianAvatar(parametric, cpu_config(**{**FAST, "fine_tune_flame": False}))
    train(model, train_frames, eval_frames, tmp_path, TrainingConfig(max_iterations=3, eval_every=0), log=open(os.devnull, "w"))
    head = tracked_head(parametric, train_frames)
    assert model.tracking.num_timesteps == 0
    assert model.fitted_head(head) is head
    with torch.no_grad():
        torch.testing.assert_close(model.posed(head, 1).means, model.gaussians.bound(head.vertices[1], head.faces).means)
    assert "tracking.expression" in torch.load(tmp_path / "checkpoint.pt", weights_only=False)["model"]


def test_load_run_restores_the_fitted_values_and_render_uses_them(tuned_run, tmp_path, capsys):
    run = load_run(tuned_run, "cpu")
    fitted, frames = run.model.tracking, run.subject.train
    tracked = tracked_head(run.model.parametric, frames)
    assert fitted.num_timesteps == len(frames) and not torch.equal(fitted.expression, tracked.expression)
    # The run's training head is the FLAME model posed with the fitted values.
    for frame in range(len(frames)):
        want = _posed_directly(run.model.parametric, tracked, fitted, frame)
        torch.testing.assert_close(run.head("train").vertices[frame], want, rtol=0, atol=1e-6)
    # ``render`` of the training split: the images of the fitted meshes, not of the tracked ones.
    assert (
        main(["render", str(tuned_run), "--split", "train", "--frames", "1", "--out", str(tmp_path / "t.mp4"), "--device", "cpu"])
        == 0
    )
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    truth = frames.images[0].float() / 255
    model, cameras = run.model, frames.cameras
    with torch.no_grad():
        on_fitted = model.rasterize(
            model.gaussians.bound(_posed_directly(model.parametric, tracked, fitted, 0), tracked.faces), cameras, 0
        )
        on_tracked = model.rasterize(model.gaussians.bound(tracked.vertices[0], tracked.faces), cameras, 0)
    assert summary["psnr"] == pytest.approx(float(psnr(on_fitted.image.clamp(0, 1), truth)), abs=1e-4)
    assert summary["psnr"] != pytest.approx(float(psnr(on_tracked.image.clamp(0, 1), truth)), abs=1e-4)


def test_the_export_writes_the_fitted_values(tuned_run, tmp_path):
    run = load_run(tuned_run, "cpu")
    fitted, parametric = run.model.tracking, run.model.parametric
    ply = export_gaussian_avatars_run(run, tmp_path)
    arrays = np.load(ply.parent / "flame_param.npz")
    # The training timesteps come first (a monocular video: a frame each, numbered train, val, test).
    n, e = fitted.num_timesteps, fitted.expression.shape[1]
    np.testing.assert_allclose(arrays["expr"][:n, :e], fitted.expression.detach().numpy(), rtol=0, atol=1e-7)
    for key, joint in (("rotation", "global"), ("neck_pose", "neck"), ("jaw_pose", "jaw")):
        np.testing.assert_allclose(arrays[key][:n], fitted.pose[:, parametric.joint_index(joint)].detach().numpy(), atol=1e-7)
    np.testing.assert_allclose(arrays["translation"][:n], fitted.translation.detach().numpy(), rtol=0, atol=1e-7)


def test_frames_that_share_their_tracking_share_a_timestep(tiny_video):
    """A rig's cameras at one instant carry one tracking, so one set of fitted values (GaussianAvatars' timestep)."""
    frames = tiny_video[0]
    parametric = load_model(frames.model_path, frames.model_type)
    head = tracked_head(parametric, frames.select([2, 0, 2, 1, 0]))
    fitted = FittedTracking()
    assert fitted.start(head) == [0, 1, 0, 2, 1]
    assert fitted.start(head) == [0, 1, 0, 2, 1] and fitted.num_timesteps == 3  # again (a resume): values kept
    assert fitted.timesteps(tracked_head(parametric, frames)) == [1, 2, 0, None, None]


def test_an_old_checkpoint_without_fitted_values_loads(tiny_video):
    frames = tiny_video[0]
    model = GaussianAvatar(load_model(frames.model_path, frames.model_type), cpu_config())
    state = {k: v for k, v in model.state_dict().items() if not k.startswith("tracking.")}
    missing, unexpected = model.load_state_dict(state, strict=False)
    assert not unexpected and not [k for k in missing if k.startswith("tracking.")]
    assert model.tracking.num_timesteps == 0 and model.tracking.absent_from_checkpoint


def test_tracked_meshes_without_a_model_train_on_and_say_so(tmp_path):
    config = SyntheticVideoConfig(num_frames=6, num_val=1, num_test=1, resolution=16, episode_frames=2)
    capture = write_insta_capture(tmp_path / "capture", config)
    run = RunConfig(
        "gaussian_avatar",
        cpu_config(fine_tune_flame=True),
        TrainingConfig(max_iterations=2, eval_every=0),
        SubjectSource(data=str(capture)),
    )
    with pytest.warns(UserWarning, match=r"^fine_tune_flame: .*tracked meshes.*training goes on without it"):
        metrics = train_run(run, tmp_path / "run", "cpu", log=open(os.devnull, "w"))
    assert metrics["iterations"] == 2 and load_run(tmp_path / "run", "cpu").model.tracking.num_timesteps == 0


@pytest.mark.parametrize(
    ("field", "value"),
    [("flame_pose_lr", 0.0), ("flame_expression_lr", float("inf")), ("flame_translation_lr", -1e-6), ("fine_tune_flame", "yes")],
)
def test_bad_configs_are_named(field, value):
    with raises_naming(field):
        GaussianAvatarConfig(**{field: value})
