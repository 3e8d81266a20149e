"""The Gaussian avatar as a run: trained a few steps on the tiny video through the train command's path, density
control on a compressed schedule; load_run, ``render`` (its replay scores the run's PSNR), ``export`` (3DGS PLY files
that read back as the model's Gaussians), the viewer's colour and depth; an exact resume; bad input."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import sys

import numpy as np
import pytest
import torch

from headfields.apps.commands import main
from headfields.apps.gaussian_avatars_run import export_gaussian_avatars_run
from headfields.apps.runs import RunConfig, SubjectSource, load_run, train_run
from headfields.apps.viewer import render_avatar
from headfields.data import load_subject
from headfields.data.splat_ply import read_bound_splat_ply, read_splat_ply
from headfields.heads import tracked_head
from headfields.models.gaussian_avatars import (
    DensityConfig,
    GaussianAvatar,
    GaussianAvatarConfig,
    cpu_config,
    position_learning_rate,
    unread_recipe_fields,
)
from headfields.models.registry import MODELS
from headfields.parametric import TrackedMeshModel, load_model
from headfields.synthetic import SyntheticVideoConfig, write_insta_capture
from headfields.training import TrainingConfig

# Densify every 3 steps from step 2 and raise the SH degree every 2 steps: a few steps exercise every part.
SCHEDULE = DensityConfig(
    densification_interval=3, densify_from=2, densify_until=100, opacity_reset_interval=7, grad_threshold=1e-7
)
TINY = cpu_config(density=SCHEDULE, sh_interval=2, sh_degree=1)


def _train(folder, video_root, steps: int, recipe=TINY, **training):
    config = TrainingConfig(max_iterations=steps, log_every=2, **training)
    run = RunConfig("gaussian_avatar", recipe, config, SubjectSource(data=str(video_root)))
    return train_run(run, folder, "cpu", log=open(os.devnull, "w"))


@pytest.fixture(scope="module")
def tiny_gaussian_run(tmp_path_factory, tiny_video):
    folder = tmp_path_factory.mktemp("gaussian_run")
    return folder, _train(folder, tiny_video[0].root, 8, eval_every=4, eval_frames=1)


def test_a_run_densifies_and_loads_with_its_gaussians(tiny_gaussian_run, tiny_video):
    folder, metrics = tiny_gaussian_run
    logged = [json.loads(line) for line in (folder / "log.jsonl").read_text().splitlines()]
    added = sum(line["terms"]["cloned"] + line["terms"]["split"] for line in logged if "terms" in line)
    assert added > 0 and metrics["gaussians"] > logged[0]["terms"]["gaussians"]
    # The shared loop's schedules: a held-out evaluation at step 4 of eval_frames frames, logged.
    assert [line["step"] for line in logged if "eval" in line] == [4]
    assert len(list((folder / "renders" / "step_000004").glob("*_compare.png"))) == 1
    run = load_run(folder, "cpu")
    assert isinstance(run.model, GaussianAvatar) and run.step == 8 == metrics["iterations"]
    assert MODELS["gaussian_avatar"].rasterised and run.model.draws_images  # what the commands read
    assert run.model.gaussians.num_gaussians == metrics["gaussians"]
    assert int(run.model.active_sh_degree) == 1  # raised at step 2, capped at the recipe's degree
    faces = run.model.parametric().faces.shape[0]
    assert bool((run.model.gaussians.parent < faces).all()) and set(run.model.gaussians.parent.tolist()) == set(range(faces))
    assert 0 < metrics["psnr"] < 60 and metrics["eval_frames"] == len(tiny_video[1])


def test_render_replays_the_runs_held_out_score(tiny_gaussian_run, tmp_path, capsys):
    folder, metrics = tiny_gaussian_run
    assert main(["render", str(folder), "--out", str(tmp_path / "replay.mp4"), "--device", "cpu"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["psnr"] == pytest.approx(metrics["psnr"], abs=1e-6)


def test_export_writes_the_posed_gaussians_as_3dgs_ply(tiny_gaussian_run, tmp_path, capsys):
    folder, _ = tiny_gaussian_run
    assert main(["export", str(folder), "--out", str(tmp_path), "--device", "cpu", "--frames", "0,1"]) == 0
    run = load_run(folder, "cpu")
    head = run.head(run.subject.eval.split)
    for frame in (0, 1):
        read = read_splat_ply(tmp_path / f"{run.subject.eval.split}_{frame:05d}.ply")
        want = run.model.splats(head, frame)
        torch.testing.assert_close(read.means, want.means, atol=1e-6, rtol=1e-6)
        torch.testing.assert_close(read.scales, want.scales, rtol=1e-5, atol=1e-9)
        torch.testing.assert_close(read.opacities, want.opacities.float(), rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(read.sh, want.sh, rtol=1e-5, atol=1e-6)
        same_rotation = (read.quats * want.quats).sum(-1).abs()  # q and -q are one rotation
        torch.testing.assert_close(same_rotation, torch.ones_like(same_rotation), atol=1e-5, rtol=0)
    canonical = read_splat_ply(tmp_path / "canonical.ply")
    assert len(canonical.means) == run.model.gaussians.num_gaussians
    # beside them, GaussianAvatars' layout (tests/unit/models/test_gaussian_avatars_export.py)
    local, binding = read_bound_splat_ply(
        tmp_path / "gaussian_avatars" / "point_cloud" / f"iteration_{run.step}" / "point_cloud.ply"
    )
    assert len(binding) == run.model.gaussians.num_gaussians and torch.equal(binding, run.model.gaussians.parent.cpu())
    params = np.load(tmp_path / "gaussian_avatars" / "point_cloud" / f"iteration_{run.step}" / "flame_param.npz")
    splits = [run.subject.train, *run.subject.held_out.values()]  # a row per timestep of every split
    assert params["expr"].shape[0] == sum(len(frames) for frames in splits) > head.num_frames


def test_a_run_exports_in_gaussian_avatars_layout(tiny_gaussian_run, tmp_path):
    # Issue 80: the local values, binding_0 and flame_param.npz at the run's iteration; the re-posing by GaussianAvatars'
    # formulas and the rows by timestep (issue 96) are tests/unit/models/test_gaussian_avatars_export.py's.
    run = load_run(tiny_gaussian_run[0], "cpu")
    ply = export_gaussian_avatars_run(run, tmp_path / "ga")
    assert ply == tmp_path / "ga" / "point_cloud" / f"iteration_{run.step}" / "point_cloud.ply"
    local, binding = read_bound_splat_ply(ply)
    assert torch.equal(binding, run.model.gaussians.parent) and len(local.means) == run.model.gaussians.num_gaussians
    # An INSTA capture lists no timestep_index: numbered as save_vhap_dataset numbers them, train, val, then test.
    expression = np.load(ply.parent / "flame_param.npz")["expr"]
    heads = [run.head(split) for split in ("train", "val", "test")]
    assert expression.shape == (sum(head.num_frames for head in heads), 100)
    e = heads[2].expression.shape[1]
    np.testing.assert_allclose(expression[-1, :e], heads[2].expression[-1].numpy(), rtol=0, atol=1e-7)


@pytest.mark.parametrize(
    "command, flag, value",
    [
        ("render", "--chunk", "4096"),
        ("render", "--early-stop", "0.01"),
        ("render", "--precision", "bfloat16"),
        ("export", "--resolution", "64"),
        ("export", "--level", "0.5"),
        ("export", "--padding", "0.1"),
        ("view", "--chunk", "4096"),
    ],
)
def test_render_export_and_view_refuse_the_flags_of_a_field_naming_them(
    tiny_gaussian_run, tmp_path, capsys, command, flag, value
):
    # A rasteriser has no rays to march and no surface to mesh: each such flag, given, is one error line naming it,
    # before anything is written (no out folder, no videos folder in the run).
    folder, _ = tiny_gaussian_run
    before = sorted(path.relative_to(folder) for path in folder.rglob("*"))
    out = tmp_path / "new" / ("video.mp4" if command == "render" else "meshes")
    argv = [command, str(folder), *(["--out", str(out)] if command != "view" else []), "--device", "cpu"]
    assert main([*argv, flag, value]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"python -m headfields {command}: error: {flag}: sets ") and len(err.splitlines()) == 1
    assert "gaussian_avatar draws whole images with a rasteriser" in err and "Traceback" not in err
    assert not (tmp_path / "new").exists() and sorted(path.relative_to(folder) for path in folder.rglob("*")) == before
    default = {"--precision": "float32", "--padding": "0.05"}.get(flag)
    if default is not None:  # the default, given, is what the run renders with: taken
        assert main([*argv, "--frames", "1", flag, default]) == 0


def test_the_viewer_draws_colour_and_depth(tiny_gaussian_run):
    run = load_run(tiny_gaussian_run[0], "cpu")
    cameras = run.subject.eval.cameras.select(torch.tensor([0]))
    head = tracked_head(run.model.parametric, run.subject.eval.select([0]))
    colour = render_avatar(run.model, cameras, head, False, 4096, run.device)
    depth = render_avatar(run.model, cameras, head, True, 4096, run.device)
    assert colour.shape == (cameras.height, cameras.width, 3) and depth.shape == (cameras.height, cameras.width)
    eye = cameras.camera_to_world[0, :3, 3]
    distance = float((head.vertices[0] - eye).norm(dim=-1).mean())
    drawn = depth[depth > 0]
    assert len(drawn) and bool(((drawn - distance).abs() < 0.3).all())  # the head's distance, in metres


def test_a_stopped_run_resumes_exactly(tmp_path, tiny_video):
    # Stopped at step 3, right after a densification; the SH degree rises at steps 2 and 4, one on each side.
    tuned = dataclasses.replace(TINY, fine_tune_flame=True)  # the paper recipe's FLAME fine-tuning (the CPU's is off)
    whole = _train(tmp_path / "whole", tiny_video[0].root, 5, tuned, checkpoint_minutes=None)
    _train(tmp_path / "parts", tiny_video[0].root, 3, tuned, checkpoint_minutes=None)  # stopped after 3 steps
    parts = _train(tmp_path / "parts", tiny_video[0].root, 5, tuned, checkpoint_minutes=None)
    a, b = (load_run(tmp_path / name, "cpu").model for name in ("whole", "parts"))
    assert parts["iterations"] == whole["iterations"] == 5
    assert a.tracking.num_timesteps == len(tiny_video[0])  # the fitted FLAME parameters resume with the Gaussians
    for name, value in a.state_dict().items():
        torch.testing.assert_close(b.state_dict()[name], value, atol=0, rtol=0, msg=name)


def test_trains_on_a_tracked_mesh_capture_of_another_topology(tmp_path, tiny_video):
    """INSTA's layout with tracked meshes and no model files, the head re-meshed (each triangle into four): one
    Gaussian a face of that topology, carried by its tracked meshes."""
    config = SyntheticVideoConfig(num_frames=6, num_val=1, num_test=1, resolution=16, episode_frames=2)
    capture = write_insta_capture(tmp_path / "capture", config, remesh=True)
    metrics = _train(tmp_path / "run", capture, 3)
    run = load_run(tmp_path / "run", "cpu")
    assert isinstance(run.model.parametric, TrackedMeshModel)
    faces = run.model.parametric().faces.shape[0]
    flame = load_subject(tiny_video[0].root).parametric().faces.shape[0]
    assert faces == 4 * flame == len(set(run.model.gaussians.parent.tolist()))
    assert metrics["iterations"] == 3 and math.isfinite(metrics["psnr"])


def test_position_rate_decays_log_linearly():
    config = GaussianAvatarConfig(position_lr_max_steps=100)
    assert position_learning_rate(config, 0, 2.0) == pytest.approx(0.01)
    assert position_learning_rate(config, 50, 2.0) == pytest.approx(2.0 * (0.005 * 0.00005) ** 0.5)
    assert position_learning_rate(config, 500, 2.0) == pytest.approx(0.0001)


def test_the_position_rate_delay_is_3dgs_and_its_multiplier_is_not_taken_without_it(tmp_path):
    """3DGS's get_expon_lr_func: the rate times delay_mult + (1 - delay_mult) sin(pi/2 min(step / delay_steps, 1)).
    GaussianAvatars passes no delay steps, so a delay multiplier alone was accepted and ignored: now a run refuses it
    (the registry's unread settings, before anything is loaded)."""
    config = GaussianAvatarConfig(position_lr_max_steps=100, position_lr_delay_steps=10, position_lr_delay_mult=0.1)
    undelayed = GaussianAvatarConfig(position_lr_max_steps=100)
    assert position_learning_rate(config, 0, 2.0) == pytest.approx(0.1 * 0.01)
    rise = 0.1 + 0.9 * math.sin(0.5 * math.pi * 0.5)
    assert position_learning_rate(config, 5, 2.0) == pytest.approx(rise * position_learning_rate(undelayed, 5, 2.0))
    assert position_learning_rate(config, 50, 2.0) == position_learning_rate(undelayed, 50, 2.0)
    assert unread_recipe_fields(config) == unread_recipe_fields(GaussianAvatarConfig(position_lr_delay_steps=1))
    assert "position_lr_delay_mult" in unread_recipe_fields(undelayed)
    run = RunConfig("gaussian_avatar", GaussianAvatarConfig(position_lr_delay_mult=0.5))
    with pytest.raises(ValueError, match=r"^position_lr_delay_mult: gaussian_avatar does not read it with position_lr_del"):
        train_run(run, tmp_path / "run", "cpu")
    assert not (tmp_path / "run").exists()


def test_bad_configs_are_named(tiny_video):
    with pytest.raises(ValueError, match="sh_degree"):
        GaussianAvatarConfig(sh_degree=5)
    with pytest.raises(ValueError, match="ssim_weight"):
        GaussianAvatarConfig(ssim_weight=1.5)
    with pytest.raises(ValueError, match="background"):
        GaussianAvatarConfig(background=(2.0, 0.0, 0.0))
    with pytest.raises((TypeError, ValueError), match="rasterizer"):  # jaxtyping's checker in tests, ours without it
        GaussianAvatarConfig(rasterizer="cuda")
    with pytest.raises(TypeError, match="config"):
        GaussianAvatar(None, config=object())


def test_the_recipe_chooses_the_rasteriser(tiny_video, monkeypatch):
    """``rasterizer="gsplat"`` reaches rasterize_gaussians' backend: without gsplat the render says so, naming it."""
    frames = tiny_video[0]
    model = GaussianAvatar(load_model(frames.model_path, frames.model_type), cpu_config(rasterizer="gsplat"))
    head = tracked_head(model.parametric, frames.select([0]))
    assert GaussianAvatarConfig().rasterizer == "warp"
    monkeypatch.setitem(sys.modules, "gsplat", None)  # `import gsplat` raises ImportError
    with pytest.raises(ImportError, match="backend: 'gsplat' needs the gsplat package"):
        model.render_camera(frames.cameras, 0, head, 0)


def test_the_extent_is_3dgs_s_where_the_cameras_spread_and_the_head_s_where_they_do_not(tiny_video):
    """3DGS's ``getNerfppNorm`` (1.1 times the largest distance of a camera from the cameras' mean centre) for a rig
    around the head; for a fixed monocular camera, where that is 0, the distance from the head's centre."""
    import dataclasses

    from headfields.cameras import PinholeCameras, look_at
    from headfields.models.gaussian_avatars import camera_extent

    frames = tiny_video[0]
    n, centre = len(frames), torch.tensor([0.0, 0.02, 0.0])
    angle = torch.linspace(-1.0, 1.0, n)  # a frontal arc of cameras 1 m from the head, as a multi-view rig
    eyes = torch.stack([angle.sin(), torch.zeros(n), angle.cos()], dim=1)
    c = frames.cameras
    rig = PinholeCameras(c.fx, c.fy, c.cx, c.cy, c.width, c.height, look_at(eyes, torch.zeros(n, 3)))
    extent, rule = camera_extent(dataclasses.replace(frames, cameras=rig), centre)
    mean = eyes.double().mean(dim=0)  # numpy's getNerfppNorm, written out
    assert extent == pytest.approx(1.1 * float((eyes.double() - mean).norm(dim=1).max()), rel=1e-6) and "3DGS" in rule
    assert extent < 1.1 * float((eyes - centre).norm(dim=1).max())  # a frontal arc spreads less than its distance
    fixed = look_at(torch.tensor([[0.0, 0.0, 1.0]]).expand(n, 3), torch.zeros(n, 3))
    mono = PinholeCameras(c.fx, c.fy, c.cx, c.cy, c.width, c.height, fixed)
    extent, rule = camera_extent(dataclasses.replace(frames, cameras=mono), centre)
    assert extent == pytest.approx(1.1 * float((torch.tensor([0.0, 0.0, 1.0]) - centre).norm())) and "head" in rule


def test_a_non_finite_loss_stops_the_run_and_no_step_takes_it(tiny_video, tmp_path, monkeypatch):
    """The Gaussian step's loss is read two steps late (no wait for the GPU): a NaN one stops the run then, naming
    its step, and the optimiser's step with it changes no Gaussian (fused Adam skips it, as GradScaler's does)."""
    import dataclasses

    from headfields.models.gaussian_avatars.steps import GaussianSteps
    from headfields.parametric import load_model
    from headfields.training import train

    train_frames, eval_frames = tiny_video
    model = GaussianAvatar(load_model(train_frames.model_path, train_frames.model_type), cpu_config())
    step = GaussianSteps.step

    def poisoned(self, index, *args):
        batch, out = step(self, index, *args)
        return batch, dataclasses.replace(out, loss=out.loss * float("nan")) if index == 2 else out

    monkeypatch.setattr(GaussianSteps, "step", poisoned)
    with pytest.raises(FloatingPointError, match="training_step: the loss is nan at step 2"):
        train(model, train_frames, eval_frames, tmp_path / "run", TrainingConfig(max_iterations=8, eval_every=0))
    assert all(torch.isfinite(p).all() for p in model.gaussians.parameters())
    assert not (tmp_path / "run" / "checkpoint.pt").exists()
