"""The training loop's configuration (:class:`TrainingConfig`) and the names of the files a run folder holds."""

from __future__ import annotations

import numbers
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Literal

from ..checks import check_count, check_positive
from ..networks import check_precision

__all__ = ["CHECKPOINT_NAME", "CONFIG_NAME", "LOG_NAME", "TrainingConfig"]

LOG_NAME = "log.jsonl"  # a JSON line per logged step and per evaluation, in the run folder
CHECKPOINT_NAME = "checkpoint.pt"
CONFIG_NAME = "config.json"  # the run's whole configuration (headfields.apps.runs.RunConfig)
METRICS_NAME = "metrics.json"  # a finished run's measures
BUDGETS = ("run", "training")
LOGS = ("jsonl", "tensorboard")  # TrainingConfig.log
INT64_MAX = 2**63 - 1  # torch.manual_seed's and a Generator's seeds


@dataclass(frozen=True)
class TrainingConfig:
    max_iterations: int = 20000  # training steps at most
    # Wall-clock budget of the whole run: the training steps, their evaluations and the final evaluation (a subset
    # of the held-out frames when all would not fit, see FINAL_EVALUATION_SHARE); see ``budget``.
    max_minutes: float | None = None
    # What max_minutes bounds: "run", the whole run's wall time; "training", the training steps' time alone (the
    # evaluations follow outside it, the final one on every held-out frame): equal training time for benchmarks.
    budget: Literal["run", "training"] = "run"
    rays_per_batch: int = 4096  # rays a training step renders (with samples_per_batch: the first step's)
    # A budget of trained samples a step (instant-ngp's target batch size; INSTA's 2^18): each step draws
    # rays_per_batch x budget / the samples the last step trained rays (instant-ngp's rule), between one a rank and
    # max_rays_per_batch, so that a step costs about the same as the field fills or empties. None: a fixed
    # rays_per_batch. Needs a model whose steps count their samples (StepOutput.samples).
    samples_per_batch: int | None = None
    max_rays_per_batch: int = 1 << 16  # the most rays a step may draw under samples_per_batch
    # Early termination: a NeRF model trains only the samples in front of the point where a ray's transmittance
    # falls below this (render_nerf; instant-ngp's and INSTA's 1e-4: EARLY_STOP_TRANSMITTANCE). It pays where
    # many samples lie behind the surface; None: every sample marched is trained.
    early_stop: float | None = None
    # Shapes fixed by the sample budget, and nothing read back to the host during a step (on CUDA the GPU never
    # waits for Python): the march fills slots sized from the budget, early termination compacts into
    # samples_per_batch slots, a ray whose samples do not fit is left out of the loss (rays_dropped_per_step), and
    # the sample counts and the finite-loss check are read two steps later from copies made without waiting (a
    # non-finite loss zeroes its step's gradients, then stops the run). Needs samples_per_batch and a model whose
    # step takes the slots (INSTA, the portrait, MonoAvatar), or a model whose shapes follow from its rays alone
    # (renders_every_ray: the triangle-frame NeuS avatar keeps the rays that miss its box, of no length).
    # Off: exact shapes, which a CPU computes no padding for.
    fixed_shapes: bool = False
    # With fixed_shapes on a CUDA device, each step captured once as a CUDA graph and replayed (training.step_graph):
    # one launch a step where there were hundreds. The model says what its step decides by the step number
    # (graph_phase: INSTA, the portrait, MonoAvatar); a capture that fails leaves the run eager, with a warning.
    cuda_graph: bool = False
    # The products of the fields' density and colour MLPs (networks.products_in) in a training step: "bfloat16" runs
    # them, forward and backward, in bfloat16 from the float32 weights (tiny-cuda-nn trains INSTA's MLPs in half
    # precision), where the device has bfloat16 products; deformations and SDFs stay float32.
    precision: Literal["float32", "bfloat16"] = "float32"
    frames_per_batch: int | None = None  # each batch draws its rays from this many random frames (None: all)
    balance_views: bool = False  # draw rays evenly from the model's view bins (``model.view_bins(frames)``)
    eval_every: int = 1000  # iterations between held-out evaluations (0: only at the end)
    checkpoint_every: int = 1000  # iterations between checkpoints (0: only at the end)
    checkpoint_minutes: float | None = 5.0  # also a checkpoint when this long has passed since the last (None: never)
    log_every: int = 50  # iterations between lines of RUN/log.jsonl (and the progress bar's values)
    ema_decay: float | None = None  # None: the model's (OptimizerConfig.ema_decay); a number overrides it
    eval_frames: int = 8  # held-out frames rendered at each intermediate evaluation; all at the end
    render_chunk: int = 8192  # rays rendered at once during evaluation
    seed: int = 0  # the seed of the rays drawn and of each step's jitter
    # Regions whose PSNR the final evaluation reports: (name, segmentation label codes) pairs, e.g.
    # (("hair", (6,)), ("face", (1, 2, 5))): pairs, not a dict, so the config stays hashable.
    eval_regions: tuple[tuple[str, tuple[int, ...]], ...] = ()
    # torchvision's ImageNet AlexNet and VGG16 state dicts for LPIPS (alex, the lpips score; vgg, lpips_vgg);
    # None: torch.hub's cache (headfields.metrics.perceptual).
    lpips_weights: str | None = None
    lpips_vgg_weights: str | None = None
    # Where the logged steps go besides RUN/log.jsonl: "tensorboard" adds TensorBoard events under RUN/tensorboard
    # (scalars, and the held-out comparisons of each evaluation; needs the tensorboard extra).
    log: Literal["jsonl", "tensorboard"] = "jsonl"
    # On the CPU, flush denormal floats to zero for the run (headfields.backends.cpu.process_tuning: a sharp
    # Softplus makes them, and they run many times slower); the mode each thread had comes back when the run ends.
    flush_denormals: bool = True
    # On the CPU, keep freed memory in glibc's heap for the run (headfields.backends.cpu.process_tuning: evaluations'
    # large tensors stop page-faulting, training steps gain nothing; up to 1 GiB stays with the process meanwhile).
    tune_malloc: bool = False
    # On CUDA, the training frames' images, masks, depths and labels go to the device when they take at most this
    # share of its free memory (each step then gathers its pixels there); larger captures stay in pinned host
    # memory, said at the start. 0 keeps them on the host.
    frames_device_share: float = 0.5

    def __post_init__(self) -> None:
        check_count("max_iterations", self.max_iterations, 1)
        check_positive("max_minutes", self.max_minutes)
        if not (isinstance(self.frames_device_share, int | float) and 0 <= self.frames_device_share <= 1):
            raise ValueError(f"frames_device_share: expected a share in [0, 1], got {self.frames_device_share!r}")
        check_count("rays_per_batch", self.rays_per_batch, 1)
        check_count("max_rays_per_batch", self.max_rays_per_batch, 1)
        if self.early_stop is not None and not (isinstance(self.early_stop, float) and 0 < self.early_stop < 1):
            raise ValueError(f"early_stop: expected a transmittance in (0, 1) or None, got {self.early_stop!r}")
        if self.samples_per_batch is not None:
            check_count("samples_per_batch", self.samples_per_batch, 1)
            if self.max_rays_per_batch < self.rays_per_batch:
                raise ValueError(
                    f"max_rays_per_batch: expected at least rays_per_batch ({self.rays_per_batch}), the first step's "
                    f"rays, got {self.max_rays_per_batch}"
                )
        if not isinstance(self.fixed_shapes, bool):
            raise TypeError(f"fixed_shapes: expected True or False, got {self.fixed_shapes!r}")
        if not isinstance(self.cuda_graph, bool):
            raise TypeError(f"cuda_graph: expected True or False, got {self.cuda_graph!r}")
        if self.cuda_graph and not self.fixed_shapes:
            raise ValueError("cuda_graph: expected fixed_shapes too (a graph replays one shape), got fixed_shapes=False")
        check_precision(self.precision)
        if self.frames_per_batch is not None:
            check_count("frames_per_batch", self.frames_per_batch, 1)
            if self.balance_views:
                raise ValueError("balance_views: expected False with frames_per_batch (both choose the frames)")
        check_count("eval_every", self.eval_every, 0)
        check_count("checkpoint_every", self.checkpoint_every, 0)
        check_positive("checkpoint_minutes", self.checkpoint_minutes)
        # torch seeds each step's jitter with seed + step, an int64: a seed past it failed in torch, unnamed.
        check_count("seed", self.seed, 0, INT64_MAX - self.max_iterations)
        check_count("log_every", self.log_every, 1)
        check_count("eval_frames", self.eval_frames, 1)
        check_count("render_chunk", self.render_chunk, 1)
        if self.budget not in BUDGETS:
            raise ValueError(f"budget: expected one of {BUDGETS}, got {self.budget!r}")
        if self.budget != "run" and self.max_minutes is None:  # it says what max_minutes bounds: nothing to bound
            raise ValueError(f"budget: {self.budget!r} bounds max_minutes, which is None: give max_minutes too, or 'run'")
        for name in ("flush_denormals", "tune_malloc"):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"{name}: expected True or False, got {getattr(self, name)!r}")
        if self.log not in LOGS:
            raise ValueError(f"log: expected one of {LOGS}, got {self.log!r}")
        if self.ema_decay is not None and not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"ema_decay: expected a decay in [0, 1) or None, got {self.ema_decay}")
        if isinstance(self.eval_regions, Mapping):
            raise TypeError(f"eval_regions: expected (region name, label codes) pairs, got a {type(self.eval_regions).__name__}")
        # Frozen: normalised through object.__setattr__, so the config stays hashable and compares by value.
        object.__setattr__(self, "eval_regions", tuple(region_codes("eval_regions", self.eval_regions).items()))
        for name in ("lpips_weights", "lpips_vgg_weights"):
            value = getattr(self, name)
            if value is not None:
                if not isinstance(value, str | os.PathLike):
                    raise TypeError(f"{name}: expected a path or None, got {value!r}")
                object.__setattr__(self, name, os.fspath(value))


def region_codes(
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
