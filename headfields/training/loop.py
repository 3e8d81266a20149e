"""The loop itself: :func:`train` checks its input and opens the run's :class:`.Engine`; a :class:`_Loop` holds one run's
state (weights, optimiser, average, sampler, clocks) and runs its steps, evaluations, checkpoints and the final
evaluation."""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Mapping
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..backends.cpu.process_tuning import process_tuning
from ..checks import trusted_values
from ..data import FrameSet
from ..heads import tracked_head
from ..networks import products_in
from ..outputs import atomic_path
from ..progress import Progress, format_seconds
from ..renderers.context import RenderContext
from . import distributed
from .batches import place_frames, ray_batch, restored_generator
from .checkpoints import (
    CheckpointError,
    check_fingerprint,
    frozen_state_keys,
    load_checkpoint,
    run_fingerprint,
)
from .config import LOG_NAME, TrainingConfig
from .contract import AvatarModel, RayBatch, StepOutput
from .data_parallel import data_parallel
from .ema import ExponentialMovingAverage
from .engine import Engine
from .evaluation import evaluate, evenly_spread, frame_seconds
from .loss_checks import LateLossChecks, finite_flag, non_finite
from .optimizer import averaged, build_optimizer, descend, set_learning_rate
from .run_checks import RunStart, check_run
from .run_log import SIDE_BY_SIDE_FRAMES, RunLog, board_evaluation, board_scalars, tensorboard_writer
from .sample_budget import SampleBudget, over_ranks
from .step_graph import step_graph
from .strategy import FrameBatch

__all__ = ["train"]

# With a time budget, the final evaluation may take at most this share of it: more held-out frames than fit are
# evaluated as an evenly spread subset (said in the output and in metrics.json), so the budget is the wall time.
FINAL_EVALUATION_SHARE = 0.25
BUDGET_MARGIN = 1.25  # the final evaluation's estimate is scaled by this (LPIPS, the files, a slower frame)


def train(
    model: AvatarModel,
    train_frames: FrameSet,
    eval_frames: FrameSet,
    out: str | Path,
    config: TrainingConfig | None = None,
    device: str | torch.device | None = None,
    resume: bool = True,
    log=sys.stdout,
    run=None,
    more_eval: Mapping[str, FrameSet] | None = None,
    force: bool = False,
) -> dict[str, float]:
    """Train ``model`` on ``train_frames``, evaluate on ``eval_frames``, write ``out/metrics.json`` and renders.
    ``more_eval``: other held-out splits by name, scored at the end too: ``metrics["splits"]`` holds every split's
    scores by name, the top level ``eval_frames``' (``metrics["eval_split"]``), as GaussianAvatars scores val and test.

    With ``resume`` and a checkpoint in ``out``, training continues from it exactly: the weights, optimiser,
    moving average, sampler state and clock are restored, so stopping and resuming gives the same weights
    as an uninterrupted run.

    In a process group of W ranks (torchrun; :func:`~headfields.training.distributed.init_distributed`) it trains
    data-parallel: every rank draws the same ``rays_per_batch`` rays and renders its contiguous W-th of them,
    gradients are averaged, and rank 0 alone decides when the time budget is spent, evaluates and writes the
    files (``out`` must be the same folder, shared, on every rank: each rank resumes from its checkpoint).
    Every rank returns rank 0's metrics; the logged loss and PSNR are those of the whole batch.

    ``run``: the :class:`~headfields.apps.runs.RunConfig` that built ``model`` (its ``training`` must be ``config``),
    written into each checkpoint and to ``out/config.json`` (a new run's before training; a resumed run's, whose
    budget may have changed, with its next checkpoint: a rerun that fails or is stopped before then leaves the
    run as it was), so that :func:`~headfields.apps.runs.load_run` can rebuild the model
    (:func:`~headfields.apps.runs.train_run` passes it). Every check that can refuse the run runs before anything is
    written (:func:`~headfields.training.run_checks.check_run`); ``out`` must be new, empty or a run's folder
    unless ``force`` (:class:`~headfields.training.checkpoints.RunFolder`).

    A model with its own steps (``model.step_strategy()``, a :class:`~headfields.training.strategy.StepStrategy`: a
    rasteriser's whole frames and density control) trains in the same loop, its strategy called for the optimiser, the
    batch and loss and the work after backward; the fields of ``config`` it has no use for are refused by name
    before anything is written, and it trains in one process.

    On the CPU the run may tune the process for itself (``config.flush_denormals``, ``config.tune_malloc``: see
    :mod:`headfields.backends.cpu.process_tuning`); what it changed is restored when it returns or fails.

    Example: ``train(model, subject.train, subject.eval, "outputs/run", TrainingConfig(max_minutes=5))["psnr"]``.
    """
    config = config or TrainingConfig()
    device = torch.device(device) if device is not None else next(model.parameters()).device
    start = check_run(model, train_frames, eval_frames, config, device, run, more_eval)  # before anything is written
    engine = Engine(out, start.described, resume=resume, force=force, lead=distributed.rank() == 0)
    with engine.open(), process_tuning(device, flush_denormals=config.flush_denormals, tune_malloc=config.tune_malloc):
        loop = _Loop(model, train_frames, eval_frames, engine, config, device, log, start)
        # A new run's config.json now; a resumed one's is replaced with its next checkpoint, which carries it: a
        # rerun stopped before then leaves the run as it was, its config.json the checkpoint's.
        if not loop.resume_if(resume) and loop.lead:
            loop.write_config()
        return loop.run()


class _Loop:
    """One run: what it trains on and with (fixed), and its state (step, clocks, weights, optimiser, average,
    sampler generator), which a checkpoint saves whole and :meth:`resume_if` restores."""

    def __init__(
        self,
        model: AvatarModel,
        train_frames: FrameSet,
        eval_frames: FrameSet,
        engine: Engine,
        config: TrainingConfig,
        device: torch.device,
        log,
        start: RunStart,
    ) -> None:
        self.model, self.config, self.device, self.engine, self.out, self.log = model, config, device, engine, engine.path, log
        self.train_frames, self.eval_frames = train_frames, eval_frames
        self.config_written = False  # config.json, replaced once by this process: see train()
        strategy, more_eval = start.strategy, start.more_eval
        self.perceptual, self.perceptual_vgg = start.perceptual
        self.rank, self.ranks = distributed.rank(), distributed.world_size()
        self.lead = self.rank == 0
        # The rays the next step draws: rays_per_batch, or as the sample budget adapts them (a multiple of the ranks)
        self.sampling = SampleBudget(
            config.rays_per_batch, config.samples_per_batch, config.max_rays_per_batch, self.ranks, config.fixed_shapes
        )
        self.loss_checks = LateLossChecks()  # fixed shapes: each step's loss read later
        self.strategy, self.ema = strategy, None
        if strategy is None:
            # Before the average copies the weights: DDP makes them rank 0's on every rank.
            self.step_fn = data_parallel(model, device) if self.ranks > 1 else model.training_step
            self.optimization = model.optimization
            self.optimizer = build_optimizer(model, self.optimization)
            ema_decay = config.ema_decay if config.ema_decay is not None else self.optimization.ema_decay
            self.ema = None if ema_decay is None else ExponentialMovingAverage(model, decay=ema_decay)
        # Each split's tracked head, once: every batch and every evaluation reads it.
        self.train_head = tracked_head(model.parametric, train_frames)
        self.eval_head = tracked_head(model.parametric, eval_frames)
        self.more_eval = {name: (frames, tracked_head(model.parametric, frames)) for name, frames in (more_eval or {}).items()}
        # The pixels are drawn where the frames' images are (on a GPU when they fit): no copy from the host a step.
        self.train_frames, self.frames_where = place_frames(train_frames, device, config.frames_device_share)
        if strategy is not None:  # the model's own optimiser, over its parameters as they are now
            self.optimizer = strategy.optimizer(self.train_frames, self.train_head, config)
        self.generator = torch.Generator(self.train_frames.images.device).manual_seed(config.seed)  # every rank's alike
        self.jitter = torch.Generator(device)  # re-seeded each step: one generator, which a CUDA graph can register
        self.step, self.elapsed, self.wall = 0, 0.0, 0.0  # wall: the run's wall-clock seconds, evaluations included
        self.checkpoint = engine.checkpoint
        self.fingerprint, self.frozen = run_fingerprint(model, train_frames, config), frozen_state_keys(model)
        self.budget = math.inf if config.max_minutes is None else 60.0 * config.max_minutes
        self.whole_run = self.budget < math.inf and config.budget == "run"  # evaluations inside the budget
        self.everything = list(range(len(eval_frames)))
        self.held_out = evenly_spread(config.eval_frames, len(eval_frames))

    # -- state: checkpoints and clocks

    def resume_if(self, resume: bool) -> bool:
        """Restore the state of ``out``'s checkpoint when ``resume`` and rank 0 finds one; whether it did."""
        if not distributed.broadcast_object(resume and self.checkpoint.exists(), self.device):  # rank 0's word
            return False
        if not self.checkpoint.exists():
            raise FileNotFoundError(
                f"out: rank {self.rank} finds no {self.checkpoint}, which rank 0 resumes from (give all ranks one folder)"
            )
        state = load_checkpoint(self.checkpoint, self.device)
        check_fingerprint(self.checkpoint, state.get("fingerprint"), self.fingerprint)
        missing, unexpected = self.model.load_state_dict(state["model"], strict=False)
        if unexpected or set(missing) - self.frozen:
            raise CheckpointError(
                f"checkpoint: {self.checkpoint} does not fit the model (missing {missing}, unexpected {unexpected})"
            )
        if self.strategy is not None:  # the checkpoint's weights may be new parameters (another number of Gaussians)
            self.optimizer = self.strategy.optimizer(self.train_frames, self.train_head, self.config)
            self.strategy.load_state_dict(state)
        self.optimizer.load_state_dict(state["optimizer"])
        if self.ema is not None:
            self.ema.load_state_dict(state["ema"])
        self.generator = restored_generator(self.generator, state["generator"].cpu(), self.config.seed + state["step"], self.log)
        self.step, self.elapsed = state["step"], state["elapsed"]
        self.wall = state.get("wall", self.elapsed)
        self.sampling.load_state(state, self.step)
        return True

    def spent(self) -> float:
        """The run's wall-clock seconds, a resumed run's earlier ones included."""
        return time.monotonic() - self.clock

    def save(self) -> None:
        self.loss_checks.read()  # no checkpoint after a non-finite loss
        state = {
            "model": {k: v for k, v in self.model.state_dict().items() if k not in self.frozen},
            "optimizer": self.optimizer.state_dict(),
            "ema": None if self.ema is None else self.ema.state_dict(),
            "generator": self.generator.get_state(),
            "step": self.step,
            "elapsed": self.elapsed,
            **self.sampling.state(),
            "wall": self.spent(),
            "config": asdict(self.config),
            "fingerprint": self.fingerprint,
            **({} if self.strategy is None else self.strategy.state_dict()),
        }
        self.engine.save(state)  # with config.json's text (None: trained without a RunConfig)
        if not self.config_written:  # with the checkpoint that carries it (a resumed run's changed budget)
            self.write_config()
        self.last_save = time.monotonic()

    def write_config(self) -> None:
        """``config.json``: this process's configuration, written once (a new run's before training)."""
        self.engine.write_config()
        self.config_written = True

    def checkpoint_due(self) -> bool:
        c = self.config
        timed = c.checkpoint_minutes is not None and time.monotonic() - self.last_save >= 60.0 * c.checkpoint_minutes
        return bool(c.checkpoint_every and self.step % c.checkpoint_every == 0) or timed

    # -- the budget

    def final_frames(self, total: int) -> list[int]:
        """The frames of a held-out split of ``total`` frames the final evaluation can afford: all, or an evenly
        spread subset, the budget's share divided over the splits by their frames."""
        estimate, frames = self.frame_seconds * BUDGET_MARGIN, self.final_total()
        if not self.whole_run or estimate * frames <= FINAL_EVALUATION_SHARE * self.budget:
            return list(range(total))
        return evenly_spread(max(1, int(FINAL_EVALUATION_SHARE * self.budget / estimate * total / frames)), total)

    def final_total(self, afforded: bool = False) -> int:
        """The held-out frames of every split scored at the end: all of them, or (``afforded``) those it affords."""
        sizes = [len(self.everything), *(len(frames) for frames, _ in self.more_eval.values())]
        return sum(len(self.final_frames(n)) for n in sizes) if afforded else sum(sizes)

    def going(self) -> bool:
        c = self.config
        if self.whole_run:
            final = self.frame_seconds * BUDGET_MARGIN * self.final_total(afforded=True)
            more = self.step < c.max_iterations and self.spent() + final < self.budget
        else:  # the training steps' own clock (or none)
            more = self.step < c.max_iterations and self.elapsed < self.budget
        # Every rank counts the same steps, but clocks differ: rank 0's decides, so all stop at the same step.
        return more if self.budget == math.inf else distributed.broadcast_object(more, self.device)

    # -- the run

    def run(self) -> dict[str, float]:
        c, model = self.config, self.model
        torch.manual_seed(c.seed + self.step)  # whatever draws from the global generator during training
        self.run_log = RunLog(self.out / LOG_NAME, self.step) if self.lead else None
        self.board = tensorboard_writer(self.out, self.step) if self.lead and c.log == "tensorboard" else None
        self.clock = time.monotonic() - self.wall  # spent() continues a resumed run's clock
        self.last_save = time.monotonic()
        # Seconds a held-out frame takes to render and score: first from one chunk of rays (or one rasterised frame),
        # then from each evaluation.
        probe = self.lead and self.whole_run
        self.frame_seconds = frame_seconds(model, self.eval_frames, self.eval_head, c.render_chunk, self.device) if probe else 0.0
        if self.lead and self.whole_run:
            n = self.final_total(afforded=True)
            print(
                f"budget {format_seconds(self.budget)}: training, then the final evaluation of {n} of "
                f"{self.final_total()} held-out frames (about {format_seconds(self.frame_seconds * n)} by a first "
                "measurement)",
                file=self.log,
            )
        timed = self.budget < math.inf
        initial = min(self.spent() if self.whole_run else self.elapsed, self.budget) if timed else self.step
        bar = Progress(
            total=self.budget if timed else c.max_iterations,
            desc="train",
            unit="s" if timed else "step",
            file=self.log,
            enabled=self.lead,
            initial=initial,
        )
        if self.frames_where and self.lead:
            print(self.frames_where, file=self.log)
        self.view_bins = None
        if c.balance_views:  # (a model that bins no views was refused by check_run)
            self.view_bins = model.view_bins(self.train_frames, self.train_head)
        model.train()
        # After resume_if, which may replace the pixels' generator: the graph registers the one the steps draw from.
        self.graph = step_graph(self.device, self.optimizer, (self.generator, self.jitter)) if c.cuda_graph else None
        self.first_step, self.first_wall = self.step, self.spent()  # this process's start: its rate of steps
        while self.going():
            wall_start, elapsed_start = self.spent(), self.elapsed
            batch, result = self.train_step()
            if self.step % c.log_every == 0 or self.step == 1:
                self.log_step(batch, result, bar)
            if self.lead and self.checkpoint_due():
                self.save()
            if self.lead and c.eval_every and self.step % c.eval_every == 0 and self.step < c.max_iterations:
                self.evaluate_held_out(bar)
            if timed:  # the clock the budget counts
                bar.update(self.spent() - wall_start if self.whole_run else self.elapsed - elapsed_start)
            else:
                bar.update(1)
        bar.close()
        self.loss_checks.read()
        model.eval()
        if not self.lead:  # the other ranks wait for rank 0's evaluation
            return distributed.broadcast_object(None, self.device)
        self.save()
        return distributed.broadcast_object(self.final_evaluation(), self.device)

    def train_step(self) -> tuple[RayBatch | FrameBatch, StepOutput]:
        """One optimiser step on a fresh batch; the step's time goes to ``elapsed``."""
        c, model = self.config, self.model
        start = time.perf_counter()
        if self.strategy is not None:
            return self.strategy_step(start)
        set_learning_rate(self.optimizer, self.optimization, self.step)
        model.before_step(self.step, self.train_head)
        self.jitter.manual_seed(c.seed + self.step)  # the step's jitter: a resumed run draws the same (outside a graph)
        phase = None if self.graph is None else model.graph_phase(self.step)  # None: not yet (shapes still settling)
        if phase is None:
            batch, result, finite = self.ray_step()
        else:  # what the step's Python decides (its shapes, the model's phase) keys the graph
            batch, result, finite = self.graph((self.sampling.rays, self.sampling.slots(), phase), self.ray_step)
        if finite is not None:
            self.loss_checks.add(self.step, result)
        if self.ema is not None:
            self.ema.update()  # the same weights on every rank after the step: the same average
        self.sampling.after_step(over_ranks(result.samples, self.ranks, self.device), type(model).__name__)
        self.step += 1
        self.elapsed += time.perf_counter() - start
        return batch, result

    def ray_step(self) -> tuple[RayBatch, StepOutput, torch.Tensor | None]:
        """A ray batch's device work (what ``cuda_graph`` captures): the batch, the model's loss, backward and the
        optimiser's step; with ``fixed_shapes``, the loss's finite flag (a step that is not finite changes nothing)."""
        c, model = self.config, self.model
        rays, frames, bins, head = self.sampling.rays, self.train_frames, self.view_bins, self.train_head
        with trusted_values():  # the loop's own draws from frames checked when loaded: no read-back to check them
            batch = ray_batch(frames, rays, self.generator, self.device, c.frames_per_batch, bins, head)
        batch.context = RenderContext(self.jitter, c.early_stop, self.sampling.slots(), c.fixed_shapes)
        if model.random_background:  # before the split; other models' jitter stream stays as it was
            batch.backgrounds = torch.rand(len(batch.rgb), 3, generator=self.jitter, device=self.device)
        if self.ranks > 1:
            share = rays // self.ranks
            batch = batch.slice(self.rank * share, (self.rank + 1) * share)
        with trusted_values(), products_in(c.precision, autograd=True):  # the batch: checked where it was drawn
            result = self.step_fn(batch, self.step)
        finite = None
        if c.fixed_shapes:  # read later; meanwhile a non-finite loss's gradients are zeroed on the device
            finite = finite_flag(result.loss)
        elif not bool(torch.isfinite(result.loss.detach())):  # before the step: the weights and checkpoint stay sound
            non_finite(self.step, float(result.loss.detach()), result.logs)
        descend([self.optimizer], result.loss, finite)  # a non-finite loss's step changes nothing; the run stops
        return batch, result, finite

    def strategy_step(self, start: float) -> tuple[FrameBatch, StepOutput]:
        """A step of a model with a :class:`~headfields.training.strategy.StepStrategy`: its batch and loss, then
        backward, its part after backward, and the optimiser's step."""
        with trusted_values():  # the loop's own frames, checked when loaded: no read-back to check them again
            batch, result = self.strategy.step(self.step, self.train_frames, self.train_head, self.generator)
        finite = finite_flag(result.loss)  # (no wait for the GPU); meanwhile a non-finite one's step changes nothing
        self.loss_checks.add(self.step, result)

        def after_backward() -> None:
            with trusted_values():  # (the step's own gradients and radii)
                result.logs.update(self.strategy.after_backward(self.step))

        descend([self.optimizer], result.loss, finite, after_backward)
        self.step += 1
        self.elapsed += time.perf_counter() - start
        return batch, result

    def log_step(self, batch: RayBatch | FrameBatch, result: StepOutput, bar: Progress) -> None:
        with torch.no_grad():  # equal shares: the means over ranks are the whole batch's loss and error
            error = (result.rgb.detach().clamp(0, 1) - batch.rgb).square().mean()
            loss, mse = distributed.mean_over_ranks(torch.stack([result.loss.detach(), error])).tolist()
        if not self.lead:
            return
        running_psnr = 10 * math.log10(1 / mse) if mse > 0 else math.inf  # metrics.psnr of the whole batch
        rates = [group["lr"] for group in self.optimizer.param_groups]
        counts = {}
        last = self.sampling.last
        if last is not None:  # the whole batch's rays and samples (every rank's)
            logged = {k: v for k, v in asdict(last).items() if k != "dropped" or self.config.fixed_shapes}
            counts = dict(rays=len(batch.rgb) * self.ranks, samples=logged)
        if self.graph is not None:  # how often the step was captured (a key that returns replays its kept graph)
            counts["graph_captures"] = self.graph.captures
        terms = {k: float(v) for k, v in result.logs.items()}  # read back here (a model may log tensors)
        self.run_log.append(self.step, self.elapsed, loss=loss, psnr=running_psnr, terms=terms, learning_rates=rates, **counts)
        rate = (self.step - self.first_step) / max(self.spent() - self.first_wall, 1e-9)
        shown = {} if last is None else {"rays": counts["rays"], "samples": last.trained}
        # rank 0's share of the terms
        bar.set_values(step=self.step, **{"it/s": rate}, loss=loss, psnr=running_psnr, **shown, **terms)
        if self.board is not None:
            board_scalars(self.board, self.step, {"loss": loss, "psnr": running_psnr, **terms}, rates)

    def evaluate_held_out(self, bar: Progress) -> None:
        """An intermediate evaluation on ``config.eval_frames`` held-out frames, with the averaged weights."""
        self.model.eval()
        began = time.monotonic()
        with averaged(self.ema):
            renders = self.out / "renders" / f"step_{self.step:06d}"
            ev = evaluate(
                self.model, self.eval_frames, self.held_out, self.config.render_chunk, self.device, renders, self.eval_head
            )
        self.frame_seconds = (time.monotonic() - began) / len(self.held_out)  # the trained model's own speed
        self.model.train()
        bar.write(f"eval  {self.step:6d}  {ev.summary()}  ({ev.frames} frames)")  # (no LPIPS here: none in the line)
        self.run_log.append(self.step, self.elapsed, eval={"psnr": ev.psnr, "psnr_head": ev.psnr_head, "ssim": ev.ssim})
        if self.board is not None:
            board_evaluation(self.board, self.step, ev, renders, self.held_out)

    def final_evaluation(self) -> dict[str, object]:
        """Each held-out split's frames the budget affords, scored and written; ``metrics.json``; the metrics."""
        primary, out = self.eval_frames.split, self.out
        splits = {primary: (self.eval_frames, self.eval_head), **self.more_eval}
        scores, chosen, final = {}, [], None
        for name, (frames, head) in splits.items():
            picked, note = self.final_frames(len(frames)), None
            if len(picked) < len(frames):
                note = (
                    f"{len(picked)} of the {len(frames)} held-out frames{'' if name == primary else f' of {name}'}, "
                    f"evenly spread: all {self.final_total()} would take about "
                    f"{format_seconds(self.frame_seconds * self.final_total())}, over {FINAL_EVALUATION_SHARE:.0%} of "
                    f"the {format_seconds(self.budget)} budget (give more --max-minutes, or evaluate the run with "
                    "python -m headfields render)"
                )
                print(f"final evaluation: {note}", file=self.log)
            renders, c = out / "renders" / ("final" if name == primary else f"final_{name}"), self.config
            with averaged(self.ema), Progress(len(picked), f"final evaluation ({name})", "frame", file=self.log) as bar:
                ev = evaluate(
                    self.model, frames, picked, c.render_chunk, self.device, renders, head, regions=dict(c.eval_regions),
                    lpips=self.perceptual, progress=bar, lpips_vgg=self.perceptual_vgg,
                )  # fmt: skip
            scores[name] = {**ev.metrics(), "eval_frames": ev.frames, "eval_frames_total": len(frames), "eval_note": note}
            if name == primary:
                chosen, final = picked, ev
            else:
                print(f"final  {name}: {ev.summary()}  ({ev.frames} frames)", file=self.log)
        shown = [chosen[i] for i in evenly_spread(SIDE_BY_SIDE_FRAMES, len(chosen))]
        rows = [np.asarray(Image.open(out / "renders" / "final" / f"{f:05d}_compare.png")) for f in shown]
        with atomic_path(out / "side_by_side.png") as temporary:
            Image.fromarray(np.concatenate(rows, axis=0)).save(temporary)
        metrics = {
            **scores[primary],
            "train_seconds": self.elapsed,
            "wall_seconds": self.spent(),
            "iterations": self.step,
            **(self.sampling.means(self.step) if self.strategy is None else self.strategy.metrics()),
            "eval_split": primary,
            "splits": scores,  # every held-out split's scores under its name, the primary's (above) too
        }
        self.engine.finish(metrics)
        spent = f"after {self.step} iterations, {self.elapsed:.0f} s of training, {self.spent():.0f} s in all"
        print(f"final  {final.summary()}  {spent}", file=self.log)
        if self.board is not None:
            self.board.close()
        for note in final.unscored():
            print(note, file=self.log)
        return metrics
