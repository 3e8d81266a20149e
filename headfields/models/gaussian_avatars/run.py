"""GaussianAvatars' training loop (``train.py``) for :class:`~headfields.models.gaussian_avatars.GaussianAvatar`: one
training frame a step, rendered whole; (1 − λ) L1 + λ D-SSIM plus the binding's regularisers; density control with
the view-space gradients of the drawn Gaussians; one more SH degree every 1,000 steps; the position rate decayed
log-linearly. It writes the run folder every model writes, so :func:`headfields.load_run`, ``render``, ``export`` and
``view`` open it:

- ``config.json`` (with a :class:`~headfields.runs.RunConfig`), ``checkpoint.pt`` (the Gaussians, the optimiser, the
  density statistics and the step; written every ``checkpoint_minutes`` and at the end: a stopped run resumes
  from it), ``log.jsonl``, ``metrics.json`` and ``renders/final`` (the held-out frames, as the shared loop's).

    python -m headfields train gaussian_avatar --recipe cpu --max-minutes 5 --out outputs/gaussians
    metrics = fit(model, subject.train, subject.eval, "outputs/gaussians", TrainingConfig(max_minutes=5))
"""

from __future__ import annotations

import contextlib
import json
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from ...checkpoints import (
    CheckpointError,
    RunFolder,
    check_fingerprint,
    frozen_state_keys,
    load_checkpoint,
    run_fingerprint,
    save_checkpoint,
)
from ...deformers.gaussian_binding import binding_regularisers
from ...heads import tracked_head
from ...metrics import ssim
from ...outputs import write_atomic
from ...training.evaluation import evaluate
from .density import DensityControl, gaussian_param_groups
from .model import GaussianAvatar, GaussianAvatarConfig
from .rates import camera_extent, learning_rates, position_learning_rate

if TYPE_CHECKING:
    from ...data import FrameSet, Subject
    from ...training import TrainingConfig

__all__ = ["build", "fit", "train"]


def build(subject: Subject, config: GaussianAvatarConfig) -> GaussianAvatar:
    return GaussianAvatar(subject.parametric, config)


def _checkpoint_state(model, optimizer, density, step, elapsed, generator, training, fingerprint, described) -> dict:
    frozen = frozen_state_keys(model)
    return {
        "model": {k: v for k, v in model.state_dict().items() if k not in frozen},
        "optimizer": optimizer.state_dict(),
        "ema": None,
        "density": {"grad_sum": density.grad_sum, "count": density.count, "max_radii": density.max_radii},
        "generator": generator.get_state(),
        "density_generator": density.generator.get_state(),
        "step": step,
        "elapsed": elapsed,
        "config": asdict(training),
        "run": described,
        "fingerprint": fingerprint,
    }


# TrainingConfig's fields this loop has no use for: it trains on a whole frame a step, scores every held-out frame
# at the end, checkpoints by the clock and keeps no average. Set to anything but their defaults, they are refused.
UNUSED_TRAINING_FIELDS = (
    "rays_per_batch", "samples_per_batch", "max_rays_per_batch", "early_stop", "fixed_shapes", "frames_per_batch",
    "balance_views", "eval_every", "checkpoint_every", "ema_decay", "eval_frames", "log", "flush_denormals",
    "tune_malloc", "frames_device_share",
)  # fmt: skip


def check_training(training: TrainingConfig) -> None:
    """A ValueError naming every field of ``training`` this loop would ignore that is not at its default."""
    from ...training import TrainingConfig

    defaults = TrainingConfig()
    set_ = [
        f"{name}={getattr(training, name)!r}"
        for name in UNUSED_TRAINING_FIELDS
        if getattr(training, name) != getattr(defaults, name)
    ]
    if set_:
        raise ValueError(
            f"training: the Gaussian avatar's loop (a whole frame a step, every held-out frame scored at the end) does "
            f"not use {', '.join(set_)}: leave them at their defaults"
        )


def fit(
    model: GaussianAvatar,
    train_frames: FrameSet,
    eval_frames: FrameSet,
    out: str | Path,
    training: TrainingConfig,
    device: torch.device | str = "cpu",
    resume: bool = True,
    log=sys.stdout,
    described: str | None = None,
) -> dict:
    """Train ``model`` on ``train_frames`` for ``training.max_iterations`` steps or ``training.max_minutes`` of
    training (whichever ends first; the evaluation comes on top), a training frame drawn at random each step (with
    replacement; GaussianAvatars shuffles an epoch), then score every frame of ``eval_frames``. Of the training
    configuration it reads ``seed``, ``checkpoint_minutes``, ``log_every``, ``eval_regions``, ``render_chunk`` and
    ``lpips_weights`` as the shared loop does; writes ``out`` as the module docstring says and
    returns the metrics (the shared loop's keys). With ``resume``, a checkpoint in ``out`` is continued."""
    from ...perceptual import load_lpips
    from ...training import CHECKPOINT_NAME, CONFIG_NAME, seed_everything

    check_training(training)

    device, out = torch.device(device), Path(out)
    config = model.config
    model = model.to(device).train()
    seed_everything(training.seed)
    generator = torch.Generator().manual_seed(training.seed)
    train_head, eval_head = tracked_head(model.parametric, train_frames), tracked_head(model.parametric, eval_frames)
    cameras = train_frames.cameras.to(device)
    extent = camera_extent(train_frames, train_head.vertices.mean(dim=(0, 1)))
    fingerprint = run_fingerprint(model, train_frames, training)
    density = DensityControl(config.density, generator=torch.Generator(device=device).manual_seed(training.seed))
    step, elapsed, checkpoint = 0, 0.0, out / CHECKPOINT_NAME
    state = None
    if resume and checkpoint.is_file():
        state = load_checkpoint(checkpoint, device)
        check_fingerprint(checkpoint, state.get("fingerprint"), fingerprint)
        missing, unexpected = model.load_state_dict(state["model"], strict=False)
        if unexpected or set(missing) - frozen_state_keys(model):
            raise CheckpointError(f"checkpoint: {checkpoint} does not fit the model (missing {missing}, unexpected {unexpected})")
        step, elapsed = int(state["step"]), float(state["elapsed"])
        density.grad_sum, density.count, density.max_radii = (state["density"][k] for k in ("grad_sum", "count", "max_radii"))
        generator.set_state(state["generator"].cpu())  # a generator's state is a CPU tensor, whatever the device
        density.generator.set_state(state["density_generator"].cpu())
        print(f"{out}: resumed at step {step}", file=log)
    if described is not None:  # after the checks that can refuse: a refused rerun leaves the run folder as it was
        write_atomic(out / CONFIG_NAME, described + "\n")
    groups = gaussian_param_groups(model.gaussians, learning_rates(config, extent))
    optimizer = torch.optim.Adam(groups, lr=0.0, eps=config.adam_eps)
    if state is not None:
        optimizer.load_state_dict(state["optimizer"])
    limit = None if training.max_minutes is None else 60.0 * training.max_minutes
    saved_at, began, logs = time.monotonic(), time.monotonic() - elapsed, out / "log.jsonl"
    out.mkdir(parents=True, exist_ok=True)
    while step < training.max_iterations and (limit is None or time.monotonic() - began < limit):
        step += 1
        if step % config.sh_interval == 0 and int(model.active_sh_degree) < config.sh_degree:
            model.active_sh_degree += 1  # oneupSHdegree
        for group in optimizer.param_groups:
            if group["name"] == "local_means":
                group["lr"] = position_learning_rate(config, step, extent)
        frame = int(torch.randint(len(train_frames), (1,), generator=generator))
        posed = model.posed(train_head, frame)
        render = model.rasterize(posed, cameras, frame, validate=False)
        render.means2d.retain_grad()
        truth = train_frames.images[frame].to(device).float() / 255.0
        l1 = (render.image - truth).abs().mean()
        d_ssim = 1.0 - ssim(render.image, truth)
        position, scale = binding_regularisers(model.gaussians, render.radii > 0, config.regularisers)
        loss = (1 - config.ssim_weight) * l1 + config.ssim_weight * d_ssim + position + scale
        if not torch.isfinite(loss):  # stop before the step: the checkpoint on disk stays the last good one
            raise FloatingPointError(f"step {step}: the loss is {float(loss)} (frame {frame}); the last checkpoint is kept")
        loss.backward()
        density.accumulate(render.means2d.grad, render.radii, cameras.width, cameras.height)
        counts = density.step(step, model.gaussians, optimizer, extent, posed.face_scale.detach())
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if step % training.log_every == 0 or step == 1:
            line = {"step": step, "loss": float(loss.detach()), "l1": float(l1.detach())}
            line |= {"gaussians": model.gaussians.num_gaussians, **counts}
            with logs.open("a") as file:
                file.write(json.dumps(line) + "\n")
            print(f"step {step}  loss {line['loss']:.4f}  gaussians {line['gaussians']}", file=log)
        if training.checkpoint_minutes is not None and time.monotonic() - saved_at > 60.0 * training.checkpoint_minutes:
            state = _checkpoint_state(
                model, optimizer, density, step, time.monotonic() - began, generator, training, fingerprint, described
            )
            save_checkpoint(state, checkpoint)
            saved_at = time.monotonic()
    elapsed = time.monotonic() - began
    model.eval()
    state = _checkpoint_state(model, optimizer, density, step, elapsed, generator, training, fingerprint, described)
    save_checkpoint(state, checkpoint)
    every = list(range(len(eval_frames)))
    with torch.no_grad():
        final = evaluate(
            model, eval_frames, every, training.render_chunk, device, out / "renders" / "final", eval_head,
            regions=dict(training.eval_regions), lpips=load_lpips(training.lpips_weights, device),
        )  # fmt: skip
    metrics = {
        **final.metrics(),
        "train_seconds": elapsed,
        "iterations": step,
        "gaussians": model.gaussians.num_gaussians,
        "eval_frames": final.frames,
        "eval_frames_total": len(eval_frames),
    }
    write_atomic(out / "metrics.json", json.dumps(metrics, indent=2) + "\n")
    summary = f"psnr {final.psnr:.2f}  ssim {final.ssim:.4f}  after {step} steps"
    print(f"final  {summary}, {model.gaussians.num_gaussians} Gaussians", file=log)
    return metrics


def train(run, out: str | Path, device: str | torch.device | None = None, resume: bool = True, log=None) -> dict:
    """The run ``run`` into ``out`` (:func:`headfields.runs.train_run` calls it): :func:`fit` on the run's subject,
    its ``config.json`` written once a checkpoint there (if any) is found to be this run's; a checkpoint there is
    continued (with ``resume``) up to the run's budget.
    ``run`` is a :class:`~headfields.runs.RunConfig`, not annotated: the runs sit above the models (as for
    :func:`headfields.training.train`'s ``run``)."""
    check_training(run.training)  # before the folder is made: a refused run writes nothing
    device = torch.device(device if device is not None else "cpu")
    folder = RunFolder(out)
    folder.open()
    try:
        with contextlib.redirect_stdout(log) if log is not None and log is not sys.stdout else contextlib.nullcontext():
            subject = run.subject.load(device)
            for note in subject.notes:
                print(note)
            described = json.dumps(run.to_dict(), indent=2)
            model = build(subject, run.recipe)
            return fit(model, subject.train, subject.eval, folder.path, run.training, device, resume, sys.stdout, described)
    finally:
        folder.close()
