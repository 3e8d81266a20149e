"""The training loop shared by every avatar model: random rays from all training frames, periodic held-out
evaluation, checkpoints that resume exactly, rendered images and a metrics file.

A model plugs in through :class:`AvatarModel`: its parametric model, its optimiser's settings, a loss on a batch
of rays and a renderer of rays. The loop owns the shared work: it builds each split's tracked
:class:`~headfields.parametric.Head` once and hands it over with every batch, seeds each step's jitter, builds the
optimiser (per-group learning rates, exponential decay, gradient clipping) and the exponential moving average of
the weights where the model's paper evaluates one, and writes the files.

Under ``torchrun`` (any initialised process group of several ranks, see :mod:`headfields.distributed`) the
same loop trains data-parallel: every rank draws the same batch and renders its share of the rays, and
``DistributedDataParallel`` averages the gradients, so a step is the one-process step on the whole batch.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import numbers
import os
import random
import sys
import time
import warnings
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal, Protocol, runtime_checkable

import numpy as np
import torch
from jaxtyping import Bool, Float, Int
from PIL import Image
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from . import distributed
from .allocator import reuse_freed_memory
from .checkpoints import (
    CheckpointError,
    RunFolder,
    check_fingerprint,
    frozen_state_keys,
    load_checkpoint,
    run_fingerprint,
    save_checkpoint,
)
from .checks import check_count, check_positive, trusted_values
from .data import BACKGROUND_LABEL, FrameSet
from .denormals import denormals_flushed
from .ema import ExponentialMovingAverage
from .heads import tracked_head
from .metrics import SSIM_WINDOW, l1, psnr, ssim
from .parametric import Head, SubjectModel
from .perceptual import LPIPS_MIN_SIZE, Lpips, LpipsUnavailable, load_lpips
from .progress import Progress, format_seconds
from .renderers.cameras import PinholeCameras, Rays, image_pixels, pixel_rays, sample_pixels
from .renderers.view_balance import sample_pixels_balanced

__all__ = [
    "seed_everything",
    "AvatarModel",
    "DecayingAdam",
    "Evaluation",
    "OptimizerConfig",
    "RayBatch",
    "RunLog",
    "CHECKPOINT_NAME",
    "CONFIG_NAME",
    "LOG_NAME",
    "StepOutput",
    "TrainingConfig",
    "build_optimizer",
    "evaluate",
    "evenly_spread",
    "exponential_learning_rate",
    "ray_batch",
    "render_image",
    "render_pixels",
    "render_view",
    "save_png",
    "set_learning_rate",
    "train",
]

CHECKPOINT_NAME = "checkpoint.pt"
CONFIG_NAME = "config.json"  # the run's whole configuration (headfields.runs.RunConfig)
BUDGETS = ("run", "training")
LOGS = ("jsonl", "tensorboard")  # TrainingConfig.log
# With a time budget, the final evaluation may take at most this share of it: more held-out frames than fit are
# evaluated as an evenly spread subset (said in the output and in metrics.json), so the budget is the wall time.
FINAL_EVALUATION_SHARE = 0.25
BUDGET_MARGIN = 1.25  # the final evaluation's estimate is scaled by this (LPIPS, the files, a slower frame)
ERROR_GAIN = 4.0  # error images show |render - truth| four times brighter
SIDE_BY_SIDE_FRAMES = 4  # held-out frames stacked in out/side_by_side.png
# How the *_head metrics use the mask (recorded in metrics.json as "head_masking").
HEAD_MASKING = (
    "psnr_head, l1_head: over the mask's pixels; ssim_head: the SSIM map averaged over the window centres in the "
    "mask; lpips_head: LPIPS of both images set to white outside the mask; each a mean over the frames whose mask "
    "has pixels"
)


@dataclass
class RayBatch:
    """Rays with what the training frames say about their pixels."""

    rays: Rays
    frames: FrameSet  # where the rays come from: ``rays.frame`` indexes its frames
    rgb: Float[Tensor, "R 3"]  # in [0, 1]
    mask: Bool[Tensor, " R"] | None = None
    depth: Float[Tensor, " R"] | None = None  # metres along the camera axis; 0 = none
    segmentation: Int[Tensor, " R"] | None = None  # region labels of the dataset
    head: Head | None = None  # the tracked head of ``frames`` (the loop builds it once per split)
    generator: torch.Generator | None = None  # this step's jitter (seeded by the loop from the seed and the step)

    def slice(self, start: int, stop: int) -> RayBatch:
        """Rays ``start`` to ``stop`` (exclusive) with their targets: a rank's share of a batch."""
        return self.select(slice(start, stop))

    def select(self, index: slice | Int[Tensor, " K"]) -> RayBatch:
        """The rays ``index`` picks (a slice or indices) with their targets; head, frames and generator kept."""

        def part(x: Tensor | None) -> Tensor | None:
            return None if x is None else x[index]

        rays = Rays(origins=part(self.rays.origins), directions=part(self.rays.directions), frame=part(self.rays.frame))
        rgb, mask, depth, segmentation = part(self.rgb), part(self.mask), part(self.depth), part(self.segmentation)
        return dataclasses.replace(self, rays=rays, rgb=rgb, mask=mask, depth=depth, segmentation=segmentation)


@dataclass
class StepOutput:
    loss: Tensor  # scalar to minimise
    rgb: Float[Tensor, "R 3"]  # the rendered colours, for the running PSNR
    logs: dict[str, float]


@dataclass(frozen=True)
class OptimizerConfig:
    """Adam as a paper trains: its learning rate decayed exponentially to ``final_learning_rate`` over
    ``decay_steps`` (None: constant), the gradients' total norm clipped to ``max_grad_norm`` (None: no
    clipping), and evaluation with an exponential moving average of the weights of decay ``ema_decay`` (None:
    the weights as they are)."""

    learning_rate: float
    final_learning_rate: float | None = None
    decay_steps: int = 1
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    weight_decay: float = 0.0  # Adam's L2 penalty
    max_grad_norm: float | None = None
    ema_decay: float | None = None

    def __post_init__(self) -> None:
        check_positive("learning_rate", self.learning_rate)
        check_positive("final_learning_rate", self.final_learning_rate)
        check_count("decay_steps", self.decay_steps, 1)
        check_positive("max_grad_norm", self.max_grad_norm)
        if self.weight_decay < 0:
            raise ValueError(f"weight_decay: expected a non-negative number, got {self.weight_decay}")
        if self.ema_decay is not None and not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"ema_decay: expected a decay in [0, 1) or None, got {self.ema_decay}")


@runtime_checkable
class AvatarModel(Protocol):
    """What the loop needs from a model (an ``nn.Module``). Optional: ``before_step(step, head)`` (refresh an
    occupancy grid, advance a schedule), ``param_groups()`` (parameter groups, each a dict with ``params`` and
    an ``lr_scale`` on the learning rate), ``view_bins(frames, head)`` (for ``balance_views``)."""

    parametric: SubjectModel  # the loop builds each split's Head from it
    optimization: OptimizerConfig

    def training_step(self, batch: RayBatch, step: int) -> StepOutput: ...

    def render_rays(self, rays: Rays, head: Head) -> Float[Tensor, "R 3"]: ...  # rays.frame indexes head's frames


@dataclass(frozen=True)
class TrainingConfig:
    max_iterations: int = 20000
    # Wall-clock budget of the whole run: the training steps, their evaluations and the final evaluation (a subset
    # of the held-out frames when all would not fit, see FINAL_EVALUATION_SHARE); see ``budget``.
    max_minutes: float | None = None
    # What max_minutes bounds: "run", the whole run's wall time; "training", the training steps' time alone (the
    # evaluations follow outside it, the final one on every held-out frame): equal training time for benchmarks.
    budget: Literal["run", "training"] = "run"
    rays_per_batch: int = 4096
    frames_per_batch: int | None = None  # each batch draws its rays from this many random frames (None: all)
    balance_views: bool = False  # draw rays evenly from the model's view bins (``model.view_bins(frames)``)
    eval_every: int = 1000  # iterations between held-out evaluations (0: only at the end)
    checkpoint_every: int = 1000  # iterations between checkpoints (0: only at the end)
    checkpoint_minutes: float | None = 5.0  # also a checkpoint when this long has passed since the last (None: never)
    log_every: int = 50
    ema_decay: float | None = None  # None: the model's (OptimizerConfig.ema_decay); a number overrides it
    eval_frames: int = 8  # held-out frames rendered at each intermediate evaluation; all at the end
    render_chunk: int = 8192  # rays rendered at once during evaluation
    seed: int = 0
    # Regions whose PSNR the final evaluation reports: (name, segmentation label codes) pairs, e.g.
    # (("hair", (6,)), ("face", (1, 2, 5))): pairs, not a dict, so the config stays hashable.
    eval_regions: tuple[tuple[str, tuple[int, ...]], ...] = ()
    # torchvision's ImageNet AlexNet state dict for LPIPS; None: torch.hub's cache (headfields.perceptual).
    lpips_weights: str | None = None
    # Where the logged steps go besides RUN/log.jsonl: "tensorboard" adds TensorBoard events under RUN/tensorboard
    # (scalars, and the held-out comparisons of each evaluation; needs the tensorboard extra).
    log: Literal["jsonl", "tensorboard"] = "jsonl"

    def __post_init__(self) -> None:
        check_count("max_iterations", self.max_iterations, 1)
        check_positive("max_minutes", self.max_minutes)
        check_count("rays_per_batch", self.rays_per_batch, 1)
        if self.frames_per_batch is not None:
            check_count("frames_per_batch", self.frames_per_batch, 1)
            if self.balance_views:
                raise ValueError("balance_views: expected False with frames_per_batch (both choose the frames)")
        check_count("eval_every", self.eval_every, 0)
        check_count("checkpoint_every", self.checkpoint_every, 0)
        check_positive("checkpoint_minutes", self.checkpoint_minutes)
        check_count("seed", self.seed, 0)
        check_count("log_every", self.log_every, 1)
        check_count("eval_frames", self.eval_frames, 1)
        check_count("render_chunk", self.render_chunk, 1)
        if self.budget not in BUDGETS:
            raise ValueError(f"budget: expected one of {BUDGETS}, got {self.budget!r}")
        if self.log not in LOGS:
            raise ValueError(f"log: expected one of {LOGS}, got {self.log!r}")
        if self.ema_decay is not None and not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"ema_decay: expected a decay in [0, 1) or None, got {self.ema_decay}")
        # Frozen: normalised through object.__setattr__, so the config stays hashable and compares by value.
        object.__setattr__(self, "eval_regions", tuple(_region_codes("eval_regions", self.eval_regions).items()))
        if self.lpips_weights is not None:
            if not isinstance(self.lpips_weights, str | os.PathLike):
                raise TypeError(f"lpips_weights: expected a path or None, got {self.lpips_weights!r}")
            object.__setattr__(self, "lpips_weights", os.fspath(self.lpips_weights))


def _region_codes(
    name: str, regions: Mapping[str, int | Iterable[int]] | Iterable[tuple[str, int | Iterable[int]]]
) -> dict[str, tuple[int, ...]]:
    """``{region name: segmentation label codes}`` from a dict or (name, codes) pairs, each code an integer in
    [0, 255] (a single integer stands for one code); errors name ``name``."""
    if isinstance(regions, str) or not isinstance(regions, Mapping | Iterable):
        raise TypeError(f"{name}: expected {{region name: label codes}} or (name, codes) pairs, got {regions!r}")
    out: dict[str, tuple[int, ...]] = {}
    for entry in regions.items() if isinstance(regions, Mapping) else regions:
        if not isinstance(entry, tuple | list) or len(entry) != 2 or not isinstance(entry[0], str) or not entry[0]:
            raise TypeError(f"{name}: expected (region name, label codes) pairs, got {entry!r}")
        region, codes = entry
        if region in out:
            raise ValueError(f"{name}: expected each region once, got {region!r} twice")
        codes = (codes,) if isinstance(codes, numbers.Integral) else codes
        if isinstance(codes, str) or not isinstance(codes, Iterable):
            raise TypeError(f"{name}: expected label codes (integers) for {region!r}, got {codes!r}")
        codes = tuple(codes)
        if not codes:
            raise ValueError(f"{name}: expected at least one label code for {region!r}, got none")
        for code in codes:
            if isinstance(code, bool) or not isinstance(code, numbers.Integral) or not 0 <= code <= 255:
                raise ValueError(f"{name}: expected label codes in [0, 255] for {region!r}, got {code!r}")
        out[region] = tuple(int(c) for c in codes)
    return out


@dataclass
class Evaluation:
    """Means over the evaluated frames. The ``*_head`` scores use each frame's head mask (``mask`` says which;
    None without one, or when no frame's mask has a pixel; see :data:`HEAD_MASKING`); ``lpips`` is None with
    the reason in ``lpips_note``; ``psnr_regions`` holds each asked region's PSNR (None where no frame shows it)."""

    psnr: float
    ssim: float
    frames: int
    l1: float
    psnr_head: float | None
    ssim_head: float | None
    l1_head: float | None
    head_frames: int  # frames whose mask has pixels (the head means are over them)
    mask: str | None  # which mask: "segmentation != 0 (background)", the foreground masks, or None
    lpips: float | None
    lpips_head: float | None
    lpips_note: str | None  # why lpips is None (None when it was computed)
    lpips_network: str | None  # "alex: backbone <file>, linear layers lpips <version> v0.1" when computed
    psnr_regions: dict[str, float | None]
    region_frames: dict[str, int]  # frames in which each region has pixels (its PSNR is the mean over them)
    regions: dict[str, tuple[int, ...]]  # the label codes of each region

    def metrics(self) -> dict[str, object]:
        """The image part of ``metrics.json`` (JSON types: lists, not tuples)."""
        out: dict[str, object] = {
            "psnr": self.psnr,
            "ssim": self.ssim,
            "l1": self.l1,
            "psnr_head": self.psnr_head,
            "ssim_head": self.ssim_head,
            "l1_head": self.l1_head,
            "lpips": self.lpips,
            "lpips_head": self.lpips_head,
            "lpips_note": self.lpips_note,
            "lpips_network": self.lpips_network,
            "mask": self.mask,
            "head_masking": HEAD_MASKING if self.mask is not None else None,
            "head_frames": self.head_frames,
        }
        if self.regions:
            out["psnr_regions"] = dict(self.psnr_regions)
            out["regions"] = {
                name: {"labels": list(codes), "frames": self.region_frames[name]} for name, codes in self.regions.items()
            }
        return out


def seed_everything(seed: int) -> None:
    """Seed Python's, numpy's and torch's global generators (CPU and every CUDA device) from ``seed``. Call it
    before building a model: its initial weights draw from them (the loop seeds its own sampling)."""
    seed = check_count("seed", seed, 0)
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def ray_batch(
    frames: FrameSet,
    count: int,
    generator: torch.Generator,
    device: torch.device,
    frames_per_batch: int | None = None,
    view_bins: Int[Tensor, " N"] | None = None,
    head: Head | None = None,
) -> RayBatch:
    """``count`` random pixels over all of ``frames`` (uniform), as rays with their targets, on ``device``.

    With ``frames_per_batch``, the pixels come from that many frames drawn at random first (all frames when
    there are fewer): models that compute something per frame (MonoAvatar's UV-CNN features) then do it a
    few times per batch instead of once for nearly every ray. With ``view_bins`` (a bin per frame, e.g. front /
    side / back), each bin gives the same share of the rays (:func:`~headfields.renderers.sample_pixels_balanced`)."""
    cameras = frames.cameras.to(device)
    if view_bins is not None:  # the 360-degree portrait: front, side and back views alike
        picked = sample_pixels_balanced(cameras, view_bins.to(device), count, generator)
    else:
        subset = None
        if frames_per_batch is not None and frames_per_batch < len(frames):
            subset = torch.randperm(len(frames), generator=generator)[:frames_per_batch].to(device)
        picked = sample_pixels(cameras, count, generator, subset)
    frame, rows, cols = picked.frame.cpu(), picked.rows.cpu(), picked.cols.cpu()

    def gather(x: Tensor | None) -> Tensor | None:
        return None if x is None else x[frame, rows, cols].to(device)

    segmentation = gather(frames.segmentation)
    return RayBatch(
        rays=pixel_rays(cameras, picked.frame, picked.pixels),
        frames=frames,
        rgb=gather(frames.images).float() / 255.0,
        mask=gather(frames.masks),
        depth=gather(frames.depths),
        segmentation=None if segmentation is None else segmentation.long(),
        head=head,
    )


def exponential_learning_rate(optimizer: torch.optim.Optimizer, step: int, initial: float, final: float, steps: int) -> None:
    """Set every group's learning rate to ``initial`` decayed exponentially to ``final`` at ``steps`` (then kept),
    times the group's ``lr_scale``: a function of the step alone, so a resumed run gets the same rates."""
    progress = min(step / steps, 1.0)
    for group in optimizer.param_groups:
        group["lr"] = initial * (final / initial) ** progress * group.get("lr_scale", 1.0)


FUSED_ADAM_DEVICES = ("cpu", "cuda")


def build_optimizer(model: nn.Module, config: OptimizerConfig) -> torch.optim.Adam:
    """Adam over ``model.param_groups()`` (each group's ``lr_scale`` multiplies the rate) or over all its
    trainable parameters; with ``max_grad_norm``, each step first clips the gradients' total norm (a step
    pre-hook: under DDP the gradients are already averaged, so every rank clips alike)."""
    c = config
    groups = model.param_groups() if hasattr(model, "param_groups") else [{"params": list(model.parameters())}]
    groups = [{**g, "params": [p for p in g["params"] if p.requires_grad]} for g in groups]
    for g in groups:
        g.setdefault("lr_scale", 1.0)
        g["lr"] = c.learning_rate * g["lr_scale"]
    params = [p for g in groups for p in g["params"]]
    # torch's fused Adam: one kernel over all parameters, 7x faster than the per-tensor loop on a hash grid's table
    # on CPU (benchmarks/profile_step.py). It takes floating parameters on CPU or CUDA alone.
    fused = bool(params) and all(p.is_floating_point() and p.device.type in FUSED_ADAM_DEVICES for p in params)
    optimizer = torch.optim.Adam(
        groups, lr=c.learning_rate, betas=c.betas, eps=c.eps, weight_decay=c.weight_decay, fused=fused or None
    )
    if c.max_grad_norm is not None:
        limit = c.max_grad_norm

        def clip(*_) -> None:  # a step pre-hook returns None: the step's arguments stay as they are
            nn.utils.clip_grad_norm_(params, limit)

        optimizer.register_step_pre_hook(clip)
    return optimizer


def set_learning_rate(optimizer: torch.optim.Optimizer, config: OptimizerConfig, step: int) -> None:
    """The learning rates of ``step`` (constant without ``final_learning_rate``)."""
    final = config.final_learning_rate if config.final_learning_rate is not None else config.learning_rate
    exponential_learning_rate(optimizer, step, config.learning_rate, final, config.decay_steps)


class DecayingAdam:
    """Deprecated (goes in the next release): give the model an :class:`OptimizerConfig` and let :func:`train`
    build it. Adam over a module's trainable parameters with the rate decayed from ``initial`` to ``final``
    over ``steps`` steps and optional clipping: :func:`build_optimizer` and :func:`set_learning_rate`."""

    def __init__(self, initial: float, final: float, steps: int, max_grad_norm: float | None = None):
        warnings.warn(
            "DecayingAdam is deprecated: give the model an OptimizerConfig (train builds it); it goes in the next release",
            DeprecationWarning,
            stacklevel=2,
        )
        check_positive("initial", initial)
        check_positive("final", final)
        self.config = OptimizerConfig(initial, final, check_count("steps", steps, 1), max_grad_norm=max_grad_norm)
        self.optimizer: torch.optim.Adam | None = None

    def build(self, module: nn.Module) -> torch.optim.Adam:
        self.optimizer = build_optimizer(module, self.config)
        return self.optimizer

    def set_step(self, step: int) -> None:
        if self.optimizer is not None:  # before build there is nothing to set
            set_learning_rate(self.optimizer, self.config, step)


def render_image(
    model: AvatarModel,
    frames: FrameSet,
    frame: int,
    chunk: int,
    device: torch.device,
    render: Callable[[Rays], Float[Tensor, "R 3"]] | None = None,
    head: Head | None = None,
) -> Float[Tensor, "H W 3"]:
    """Frame ``frame`` of ``frames``, ``chunk`` rays at a time without gradients, on the CPU, clamped to [0, 1].
    ``render(rays)`` gives the colours (default: ``model.render_rays(rays, head)``, ``head`` the frames' tracked
    head, built when not given, or a one-frame head of frame ``frame``: a tracker's fit of it)."""
    if render is None:
        head = head if head is not None else tracked_head(model.parametric, frames)
        return render_view(model, frames.cameras, frame, head, 0 if head.num_frames == 1 else frame, chunk, device)
    return render_pixels(render, frames.cameras.to(device), frame, chunk).clamp(0, 1)


def render_view(
    model: AvatarModel, cameras: PinholeCameras, camera: int, head: Head, head_frame: int, chunk: int, device: torch.device
) -> Float[Tensor, "H W 3"]:
    """The image of camera ``camera`` of ``cameras`` seeing frame ``head_frame`` of ``head`` (any camera: a
    capture's, or a new path around the head), ``chunk`` rays at a time without gradients, on the CPU, in [0, 1]."""
    check_count("head_frame", head_frame, 0, head.num_frames - 1)

    def render(rays: Rays) -> Float[Tensor, "R 3"]:
        return model.render_rays(dataclasses.replace(rays, frame=torch.full_like(rays.frame, head_frame)), head)

    return render_pixels(render, cameras.to(device), camera, chunk).clamp(0, 1)


def render_pixels(render: Callable[[Rays], Tensor], cameras: PinholeCameras, camera: int, chunk: int) -> Float[Tensor, "H W C"]:
    """What ``render(rays)`` gives for every pixel of camera ``camera`` of ``cameras`` (colours [R, 3], a depth [R],
    ...), ``chunk`` rays at a time without gradients, as an image [H, W, C] on the CPU."""
    pixels = image_pixels(cameras)
    out = []
    with torch.no_grad():
        for start in range(0, len(pixels), chunk):
            rays = pixel_rays(cameras, camera, pixels[start : start + chunk])
            with trusted_values():  # the image's own rays, checked by pixel_rays
                out.append(render(rays))
    return torch.cat(out).reshape(cameras.height, cameras.width, -1).cpu()


def save_png(image: Float[Tensor, "H W 3"], path: str | Path) -> None:
    """An image in [0, 1] as an 8-bit PNG (parent folders made as needed)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray((image.clamp(0, 1).numpy() * 255 + 0.5).astype(np.uint8)).save(path)


def comparison(pred: Float[Tensor, "H W 3"], truth: Float[Tensor, "H W 3"]) -> Float[Tensor, "H W3 3"]:
    """Ground truth | render | error side by side; the error is the mean absolute difference, x ERROR_GAIN."""
    error = ((pred - truth).abs().mean(dim=-1, keepdim=True) * ERROR_GAIN).clamp(0, 1).expand_as(pred)
    return torch.cat([truth, pred, error], dim=1)


def _head_masks(frames: FrameSet) -> tuple[Bool[Tensor, "N H W"] | None, str | None]:
    """The subject's pixels of every frame and which mask they come from: the segmentation's non-background
    labels, else the foreground masks, else none."""
    if frames.segmentation is not None:
        return frames.segmentation != BACKGROUND_LABEL, f"segmentation != {BACKGROUND_LABEL} (background)"
    if frames.masks is not None:
        return frames.masks, "masks (foreground alpha)"
    return None, None


def _lpips_network(lpips: Lpips | LpipsUnavailable | None, frames: FrameSet) -> tuple[Lpips | None, str | None]:
    """The network to use for ``frames``, or None and why not."""
    h, w = frames.cameras.height, frames.cameras.width
    if lpips is None:
        return None, "not computed (no LPIPS network given to evaluate)"
    if isinstance(lpips, LpipsUnavailable):
        return None, lpips.reason
    if min(h, w) < LPIPS_MIN_SIZE:
        return None, f"images of {h} x {w} pixels are smaller than LPIPS's AlexNet needs ({LPIPS_MIN_SIZE} x {LPIPS_MIN_SIZE})"
    return lpips, None


def _mean(values: list[float]) -> float | None:
    return float(np.mean(values)) if values else None


def evaluate(
    model: AvatarModel,
    frames: FrameSet,
    indices: list[int],
    chunk: int,
    device: torch.device,
    out: Path | None = None,
    head: Head | None = None,
    regions: dict[str, tuple[int, ...]] | None = None,
    lpips: Lpips | LpipsUnavailable | None = None,
    progress: Progress | None = None,
) -> Evaluation:
    """PSNR, SSIM, L1 and LPIPS over the given held-out frames (means over frames), over the whole frame and
    over the head (each frame's subject mask: the segmentation's non-background pixels, else ``frames.masks``;
    :data:`HEAD_MASKING` says how each score uses it), and the PSNR of each of ``regions`` ({name: segmentation
    label codes}, e.g. ``{"hair": (6,), "face": (1, 2, 5)}``: the pixels with any of the codes).

    ``lpips``: a network from :func:`~headfields.perceptual.load_lpips` (load it once, not per call), or its
    :class:`~headfields.perceptual.LpipsUnavailable`; without one, or for images under 31 x 31, ``lpips`` is
    None and ``lpips_note`` says why. A frame whose mask (or region) has no pixel is left out of that mean;
    ``head_frames`` and ``region_frames`` count the frames in it. With ``out``, writes each frame's render
    (``00000.png``) and its comparison with the ground truth (``00000_compare.png``). ``head``: the frames'
    tracked head (built when not given). ``progress``: advanced by one a frame.

    Example: ``evaluate(model, frames, [0, 5], 8192, device, regions={"hair": (6,)}, lpips=load_lpips()).psnr_head``."""
    regions = _region_codes("regions", regions) if regions is not None else {}
    if regions and frames.segmentation is None:
        raise ValueError("regions: expected frames with a segmentation (region labels) to find the regions in, got none")
    if lpips is not None and not isinstance(lpips, Lpips | LpipsUnavailable):
        raise TypeError(f"lpips: expected an Lpips network, LpipsUnavailable or None, got {type(lpips).__name__}")
    head = head if head is not None else tracked_head(model.parametric, frames)
    masks, mask_rule = _head_masks(frames)
    network, note = _lpips_network(lpips, frames)
    full: dict[str, list[float]] = {"psnr": [], "ssim": [], "l1": [], "lpips": []}
    inside: dict[str, list[float]] = {"psnr": [], "ssim": [], "l1": [], "lpips": []}
    per_region: dict[str, list[float]] = {name: [] for name in regions}
    codes = {name: torch.tensor(c, dtype=torch.uint8) for name, c in regions.items()}
    half = SSIM_WINDOW // 2
    for f in indices:
        pred = render_image(model, frames, f, chunk, device, head=head)
        truth = frames.images[f].float() / 255.0
        full["psnr"].append(float(psnr(pred, truth)))
        full["ssim"].append(float(ssim(pred, truth)))
        full["l1"].append(float(l1(pred, truth)))
        mask = None if masks is None else masks[f].cpu()
        if mask is not None and bool(mask.any()):
            inside["psnr"].append(float(psnr(pred, truth, mask=mask)))
            inside["l1"].append(float(l1(pred, truth, mask=mask)))
            if bool(mask[half:-half, half:-half].any()):  # a mask only on the border has no SSIM window centre
                inside["ssim"].append(float(ssim(pred, truth, mask=mask)))
        if network is not None:
            on = network.device
            with torch.no_grad():
                full["lpips"].append(float(network(pred.to(on), truth.to(on))))
                if mask is not None and bool(mask.any()):
                    inside["lpips"].append(float(network(pred.to(on), truth.to(on), mask=mask.to(on))))
        for name, c in codes.items():
            region = torch.isin(frames.segmentation[f].cpu(), c)
            if bool(region.any()):
                per_region[name].append(float(psnr(pred, truth, mask=region)))
        if out is not None:
            out.mkdir(parents=True, exist_ok=True)
            save_png(pred, out / f"{f:05d}.png")
            save_png(comparison(pred, truth), out / f"{f:05d}_compare.png")
        if progress is not None:
            progress.update(1)
    head_frames = len(inside["psnr"])
    return Evaluation(
        psnr=float(np.mean(full["psnr"])),
        ssim=float(np.mean(full["ssim"])),
        frames=len(indices),
        l1=float(np.mean(full["l1"])),
        psnr_head=_mean(inside["psnr"]),
        ssim_head=_mean(inside["ssim"]),
        l1_head=_mean(inside["l1"]),
        head_frames=head_frames,
        mask=mask_rule,
        lpips=_mean(full["lpips"]),
        lpips_head=_mean(inside["lpips"]),
        lpips_note=note,
        lpips_network=None if network is None else network.source,
        psnr_regions={name: _mean(values) for name, values in per_region.items()},
        region_frames={name: len(values) for name, values in per_region.items()},
        regions=regions,
    )


def evenly_spread(count: int, total: int) -> list[int]:
    """``min(count, total)`` indices spread evenly over ``range(total)``, its ends included (all of them when
    ``count >= total``)."""
    n = min(count, total)
    return sorted({round(i * (total - 1) / max(n - 1, 1)) for i in range(n)})


def averaged(ema: ExponentialMovingAverage | None):
    """The averaged weights in place for a ``with`` block (the weights as they are without an average)."""
    return contextlib.nullcontext() if ema is None else ema.average_parameters()


class _TrainingStep(nn.Module):
    """The model's training step as a forward: DistributedDataParallel averages the gradients of the forward it
    wraps, and our models train through ``training_step``, not ``forward``."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, batch: RayBatch, step: int) -> StepOutput:
        return self.model.training_step(batch, step)


def _data_parallel(model: nn.Module, device: torch.device) -> DistributedDataParallel:
    """``model``'s training step under DistributedDataParallel. Construction gives every rank rank 0's
    parameters and buffers; each forward gives every rank rank 0's buffers again, after ``before_step``
    changed them (an occupancy grid refreshed from one rank's density), so all ranks march the same grid."""
    index = (device.index if device.index is not None else torch.cuda.current_device()) if device.type == "cuda" else None
    return DistributedDataParallel(  # its default syncs the buffers at each forward
        _TrainingStep(model),
        device_ids=None if index is None else [index],  # CPU ranks (gloo): none
        # Parameters can sit out a step (MonoAvatar's error-correction warp before its start step): DDP then has
        # to look for them, one walk over the autograd graph per step, and leaves their gradients None.
        find_unused_parameters=True,
    )


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
) -> dict[str, float]:
    """Train ``model`` on ``train_frames``, evaluate on ``eval_frames``, write ``out/metrics.json`` and renders.

    With ``resume`` and a checkpoint in ``out``, training continues from it exactly: the weights, optimiser,
    moving average, sampler state and clock are restored, so stopping and resuming gives the same weights
    as an uninterrupted run.

    In a process group of W ranks (torchrun; :func:`~headfields.distributed.init_distributed`) it trains
    data-parallel: every rank draws the same ``rays_per_batch`` rays and renders its contiguous W-th of them,
    gradients are averaged, and rank 0 alone decides when the time budget is spent, evaluates and writes the
    files (``out`` must be the same folder, shared, on every rank: each rank resumes from its checkpoint).
    Every rank returns rank 0's metrics; the logged loss and PSNR are those of the whole batch.

    ``run``: the :class:`~headfields.runs.RunConfig` that built ``model`` (its ``training`` must be ``config``),
    written to ``out/config.json`` and into the checkpoint before training, so that
    :func:`~headfields.runs.load_run` can rebuild the model (:func:`~headfields.runs.train_run` passes it).
    """
    config = config or TrainingConfig()
    device = torch.device(device) if device is not None else next(model.parameters()).device
    if device.type == "cpu":
        reuse_freed_memory()  # large CPU tensors reuse freed memory rather than page-fault (headfields.allocator)
    rank, ranks = distributed.rank(), distributed.world_size()
    if config.rays_per_batch % ranks:
        raise ValueError(
            f"rays_per_batch: expected a multiple of the {ranks} ranks (an equal share each), got {config.rays_per_batch}"
        )
    share = config.rays_per_batch // ranks
    for name, frames in (("train_frames", train_frames), ("eval_frames", eval_frames)):
        if not isinstance(frames, FrameSet) or len(frames) == 0:
            raise ValueError(f"{name}: expected a FrameSet with at least one frame, got {_describe(frames)}")
    if config.eval_regions and eval_frames.segmentation is None:
        raise ValueError("eval_regions: expected eval_frames with a segmentation (region labels), got frames without one")
    described = None
    if run is not None:
        if run.training != config:
            raise ValueError("run: expected the RunConfig whose training configuration is config, got another")
        described = json.dumps(run.to_dict(), indent=2)
    folder = RunFolder(out)
    if rank == 0:  # made, probe-written and locked before any training: a bad folder fails now, not at the end
        folder.open()
        if described is not None:
            (folder.path / CONFIG_NAME).write_text(described + "\n")
    # On the CPU, denormal floats (a sharp Softplus makes them) run many times slower: flushed for the run.
    flushed = denormals_flushed() if device.type == "cpu" else contextlib.nullcontext()
    try:
        with flushed:
            return _train(
                model, train_frames, eval_frames, folder.path, config, device, resume, log, rank, ranks, share, described
            )
    finally:
        folder.close()


def _load_lpips(weights: str | None, device: torch.device) -> Lpips | LpipsUnavailable:
    """:func:`~headfields.perceptual.load_lpips` for the run, its errors naming the config's ``lpips_weights``."""
    try:
        return load_lpips(weights, device)
    except (FileNotFoundError, ValueError) as error:
        message = str(error)
        if not message.startswith("weights:"):
            raise
        raise type(error)("lpips_weights:" + message.removeprefix("weights:")) from None


def _describe(frames: object) -> str:
    return f"{len(frames)} frames" if isinstance(frames, FrameSet) else type(frames).__name__


LOG_NAME = "log.jsonl"  # a JSON line per logged step and per evaluation, in the run folder


class RunLog:
    """``RUN/log.jsonl``: one JSON object a line (``step``, ``time`` in training seconds, then the record's values),
    appended as training goes. A resumed run first drops the lines past its checkpoint's step, so the file is the
    history of the weights it continues from, without the steps an interruption lost."""

    def __init__(self, path: Path, resume_step: int = 0):
        self.path = Path(path)
        kept = []
        if resume_step > 0 and self.path.exists():
            for line in self.path.read_text().splitlines():
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:  # a line cut short by the interruption
                    continue
                if isinstance(record, dict) and record.get("step", math.inf) <= resume_step:
                    kept.append(line)
        self.path.write_text("".join(f"{line}\n" for line in kept))

    def append(self, step: int, seconds: float, **values) -> None:
        record = {"step": step, "time": round(seconds, 3), **values}
        with open(self.path, "a") as f:
            f.write(json.dumps(record, allow_nan=True) + "\n")


def _probe_frame_seconds(model, frames: FrameSet, head: Head, config: TrainingConfig, device) -> float:
    """Seconds one held-out frame takes to render, from one chunk of its rays (a first estimate; evaluations measure)."""
    cameras = frames.cameras.to(device)
    pixels = image_pixels(cameras)[: config.render_chunk]
    was_training = model.training
    model.eval()
    start = time.perf_counter()
    with torch.no_grad(), trusted_values():
        model.render_rays(pixel_rays(cameras, 0, pixels), head)
    seconds = (time.perf_counter() - start) * cameras.height * cameras.width / len(pixels)
    model.train(was_training)
    return seconds


def _tensorboard(out: Path, step: int):
    """A TensorBoard writer into ``out/tensorboard`` that drops the events past ``step`` (a resumed run's)."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as error:
        raise ImportError(
            f"log: 'tensorboard' needs the tensorboard package ({error}): pip install 'headfields[tensorboard]'"
        ) from None
    return SummaryWriter(str(out / "tensorboard"), purge_step=step if step > 0 else None)


def _board_scalars(board, step: int, values: dict[str, float], rates: list[float]) -> None:
    for name, value in values.items():
        board.add_scalar(f"train/{name}", value, step)
    for i, rate in enumerate(rates):
        board.add_scalar(f"learning_rate/group_{i}", rate, step)


def _board_evaluation(board, step: int, ev: Evaluation, renders: Path, frames: list[int]) -> None:
    for name in ("psnr", "psnr_head", "ssim", "l1"):
        value = getattr(ev, name)
        if value is not None:
            board.add_scalar(f"eval/{name}", value, step)
    for f in frames[:SIDE_BY_SIDE_FRAMES]:  # truth | render | error of the evaluated frames
        image = np.asarray(Image.open(renders / f"{f:05d}_compare.png"))
        board.add_image(f"eval/frame_{f:05d}", image, step, dataformats="HWC")
    board.flush()


def _train(
    model, train_frames, eval_frames, out: Path, config: TrainingConfig, device, resume, log, rank, ranks, share, described
):
    lead = rank == 0
    # Before the average copies the weights: DDP makes them rank 0's on every rank.
    step_fn = _data_parallel(model, device) if ranks > 1 else model.training_step
    optimization = model.optimization
    optimizer = build_optimizer(model, optimization)
    ema_decay = config.ema_decay if config.ema_decay is not None else optimization.ema_decay
    ema = None if ema_decay is None else ExponentialMovingAverage(model, decay=ema_decay)
    # Each split's tracked head, once: every batch and every evaluation reads it.
    train_head, eval_head = tracked_head(model.parametric, train_frames), tracked_head(model.parametric, eval_frames)
    generator = torch.Generator().manual_seed(config.seed)  # the same seed on every rank: the same batches
    step, elapsed, wall = 0, 0.0, 0.0  # wall: the run's wall-clock seconds, evaluations included (the budget's)
    checkpoint = out / CHECKPOINT_NAME
    fingerprint, frozen = run_fingerprint(model, train_frames, config), frozen_state_keys(model)
    if distributed.broadcast_object(resume and checkpoint.exists(), device):  # rank 0's word
        if not checkpoint.exists():
            raise FileNotFoundError(
                f"out: rank {rank} finds no {checkpoint}, which rank 0 resumes from (give all ranks one folder)"
            )
        state = load_checkpoint(checkpoint, device)
        check_fingerprint(checkpoint, state.get("fingerprint"), fingerprint)
        missing, unexpected = model.load_state_dict(state["model"], strict=False)
        if unexpected or set(missing) - frozen:
            raise CheckpointError(f"checkpoint: {checkpoint} does not fit the model (missing {missing}, unexpected {unexpected})")
        optimizer.load_state_dict(state["optimizer"])
        if ema is not None:
            ema.load_state_dict(state["ema"])
        generator.set_state(state["generator"].cpu())  # map_location moved it; the sampler's generator is on the CPU
        step, elapsed = state["step"], state["elapsed"]
        wall = state.get("wall", elapsed)
    torch.manual_seed(config.seed + step)  # whatever draws from the global generator during training
    run_log = RunLog(out / LOG_NAME, step) if lead else None
    board = _tensorboard(out, step) if lead and config.log == "tensorboard" else None
    clock = time.monotonic() - wall  # spent() continues a resumed run's clock

    def spent() -> float:
        return time.monotonic() - clock

    last_save = time.monotonic()

    def save() -> None:
        nonlocal last_save
        state = {
            "model": {k: v for k, v in model.state_dict().items() if k not in frozen},
            "optimizer": optimizer.state_dict(),
            "ema": None if ema is None else ema.state_dict(),
            "generator": generator.get_state(),
            "step": step,
            "elapsed": elapsed,
            "wall": spent(),
            "config": asdict(config),
            "run": described,  # config.json's text (None: trained without a RunConfig)
            "fingerprint": fingerprint,
        }
        save_checkpoint(state, checkpoint)
        last_save = time.monotonic()

    def checkpoint_due() -> bool:
        timed = config.checkpoint_minutes is not None and time.monotonic() - last_save >= 60.0 * config.checkpoint_minutes
        return bool(config.checkpoint_every and step % config.checkpoint_every == 0) or timed

    budget = math.inf if config.max_minutes is None else 60.0 * config.max_minutes
    whole_run = budget < math.inf and config.budget == "run"  # evaluations inside the budget
    everything = list(range(len(eval_frames)))
    # Seconds a held-out frame takes to render and score: first from one chunk of rays, then from each evaluation.
    frame_seconds = _probe_frame_seconds(model, eval_frames, eval_head, config, device) if lead and whole_run else 0.0

    def final_frames() -> list[int]:
        """The held-out frames the final evaluation can afford: all, or an evenly spread subset of them."""
        if not whole_run or frame_seconds * BUDGET_MARGIN * len(everything) <= FINAL_EVALUATION_SHARE * budget:
            return everything
        return evenly_spread(max(1, int(FINAL_EVALUATION_SHARE * budget / (frame_seconds * BUDGET_MARGIN))), len(everything))

    def going() -> bool:
        if whole_run:
            more = step < config.max_iterations and spent() + frame_seconds * BUDGET_MARGIN * len(final_frames()) < budget
        else:  # the training steps' own clock (or none)
            more = step < config.max_iterations and elapsed < budget
        # Every rank counts the same steps, but clocks differ: rank 0's decides, so all stop at the same step.
        return more if budget == math.inf else distributed.broadcast_object(more, device)

    if lead and whole_run:
        n = len(final_frames())
        print(
            f"budget {format_seconds(budget)}: training, then the final evaluation of {n} of {len(everything)} held-out "
            f"frames (about {format_seconds(frame_seconds * n)} by a first measurement)",
            file=log,
        )
    bar = Progress(
        total=budget if budget < math.inf else config.max_iterations,
        desc="train",
        unit="s" if budget < math.inf else "step",
        file=log,
        enabled=lead,
        initial=min(spent() if whole_run else elapsed, budget) if budget < math.inf else step,
    )

    view_bins = None
    if config.balance_views:
        if not hasattr(model, "view_bins"):
            raise ValueError(f"balance_views: expected a model with view_bins(frames, head), got {type(model).__name__}")
        view_bins = model.view_bins(train_frames, train_head)
    held_out = evenly_spread(config.eval_frames, len(eval_frames))
    # Once per run, before training: a weights file that was asked for and cannot be read fails now.
    perceptual = _load_lpips(config.lpips_weights, device) if lead else None
    model.train()
    first_step, first_wall = step, spent()  # this process's start: its rate of steps
    while going():
        start, wall_start, elapsed_start = time.perf_counter(), spent(), elapsed
        set_learning_rate(optimizer, optimization, step)
        if hasattr(model, "before_step"):
            model.before_step(step, train_head)
        batch = ray_batch(train_frames, config.rays_per_batch, generator, device, config.frames_per_batch, view_bins, train_head)
        # The step's jitter: a function of the seed and the step, so a resumed run draws the same samples.
        batch.generator = torch.Generator(device).manual_seed(config.seed + step)
        if ranks > 1:
            batch = batch.slice(rank * share, (rank + 1) * share)
        with trusted_values():  # the loop's own batch: checked where it was drawn, not again in every layer
            result = step_fn(batch, step)
        if not bool(torch.isfinite(result.loss.detach())):  # before the step: the weights and checkpoint stay sound
            terms = ", ".join(f"{k} {v:.4g}" for k, v in result.logs.items())
            raise FloatingPointError(f"training_step: the loss is {float(result.loss.detach())} at step {step} ({terms})")
        optimizer.zero_grad(set_to_none=True)
        result.loss.backward()
        optimizer.step()
        if ema is not None:
            ema.update()  # the same weights on every rank after the step: the same average
        step += 1
        elapsed += time.perf_counter() - start
        if step % config.log_every == 0 or step == 1:
            with torch.no_grad():  # equal shares: the means over ranks are the whole batch's loss and error
                error = (result.rgb.detach().clamp(0, 1) - batch.rgb).square().mean()
                loss, mse = distributed.mean_over_ranks(torch.stack([result.loss.detach(), error])).tolist()
            if lead:
                running_psnr = 10 * math.log10(1 / mse) if mse > 0 else math.inf  # metrics.psnr of the whole batch
                rates = [group["lr"] for group in optimizer.param_groups]
                run_log.append(step, elapsed, loss=loss, psnr=running_psnr, terms=result.logs, learning_rates=rates)
                rate = (step - first_step) / max(spent() - first_wall, 1e-9)
                # rank 0's share of the terms
                bar.set_values(step=step, **{"it/s": rate}, loss=loss, psnr=running_psnr, **result.logs)
                if board is not None:
                    _board_scalars(board, step, {"loss": loss, "psnr": running_psnr, **result.logs}, rates)
        if lead and checkpoint_due():
            save()
        if lead and config.eval_every and step % config.eval_every == 0 and step < config.max_iterations:
            model.eval()
            began = time.monotonic()
            with averaged(ema):
                renders = out / "renders" / f"step_{step:06d}"
                ev = evaluate(model, eval_frames, held_out, config.render_chunk, device, renders, eval_head)
            frame_seconds = (time.monotonic() - began) / len(held_out)  # the trained model's own speed
            model.train()
            head = "" if ev.psnr_head is None else f"  head psnr {ev.psnr_head:.2f}"
            bar.write(f"eval  {step:6d}  psnr {ev.psnr:.2f}{head}  ssim {ev.ssim:.4f}  ({ev.frames} frames)")
            run_log.append(step, elapsed, eval={"psnr": ev.psnr, "psnr_head": ev.psnr_head, "ssim": ev.ssim})
            if board is not None:
                _board_evaluation(board, step, ev, renders, held_out)
        if budget < math.inf:  # the clock the budget counts
            bar.update(spent() - wall_start if whole_run else elapsed - elapsed_start)
        else:
            bar.update(1)
    bar.close()
    model.eval()
    if not lead:  # the other ranks wait for rank 0's evaluation
        return distributed.broadcast_object(None, device)
    save()

    chosen = final_frames()
    note = None
    if len(chosen) < len(everything):
        note = (
            f"{len(chosen)} of the {len(everything)} held-out frames, evenly spread: all would take about "
            f"{format_seconds(frame_seconds * len(everything))}, over {FINAL_EVALUATION_SHARE:.0%} of the "
            f"{format_seconds(budget)} budget (give more --max-minutes, or evaluate the run with python -m headfields render)"
        )
        print(f"final evaluation: {note}", file=log)
    with averaged(ema), Progress(len(chosen), "final evaluation", "frame", file=log) as progress:
        final = evaluate(
            model,
            eval_frames,
            chosen,
            config.render_chunk,
            device,
            out / "renders" / "final",
            eval_head,
            regions=dict(config.eval_regions),
            lpips=perceptual,
            progress=progress,
        )
    shown = [chosen[i] for i in evenly_spread(SIDE_BY_SIDE_FRAMES, len(chosen))]
    rows = [np.asarray(Image.open(out / "renders" / "final" / f"{f:05d}_compare.png")) for f in shown]
    Image.fromarray(np.concatenate(rows, axis=0)).save(out / "side_by_side.png")
    metrics = {
        **final.metrics(),
        "train_seconds": elapsed,
        "wall_seconds": spent(),
        "iterations": step,
        "eval_frames": final.frames,
        "eval_frames_total": len(everything),
        "eval_note": note,
    }
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    head = "" if final.psnr_head is None else f"  head psnr {final.psnr_head:.2f}"
    perceptual_score = "" if final.lpips is None else f"  lpips {final.lpips:.4f}"
    summary = f"psnr {final.psnr:.2f}{head}  ssim {final.ssim:.4f}{perceptual_score}"
    print(f"final  {summary}  after {step} iterations, {elapsed:.0f} s of training, {spent():.0f} s in all", file=log)
    if board is not None:
        board.close()
    if final.lpips_note is not None:
        print(f"lpips: null ({final.lpips_note})", file=log)
    return distributed.broadcast_object(metrics, device)
