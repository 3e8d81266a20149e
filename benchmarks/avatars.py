"""What the model benchmarks share: train a variant with the shared loop and measure it the same way."""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable, Collection, Mapping
from pathlib import Path

import torch

from headfields.cameras import image_pixels, pixel_rays, resized_cameras
from headfields.data import FrameSet, Subject
from headfields.heads import tracked_head
from headfields.training import AvatarModel, TrainingConfig, render_view, train

RENDER_CHUNK = 8192  # rays a render call, as the training loop's evaluation renders


def median_seconds(step: Callable[[], None], repeats: int, device: torch.device) -> float:
    """Median wall time of ``repeats`` calls of ``step`` after one untimed warm-up (Warp compiles its kernels,
    BVHs are built, the allocator settles), waiting for CUDA kernels to finish."""

    def timed() -> float:
        start = time.perf_counter()
        step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return time.perf_counter() - start

    timed()
    return statistics.median(timed() for _ in range(repeats))


def rendering_rays_per_second(model: AvatarModel, frames: FrameSet, repeats: int = 3) -> float:
    """Median rays/s rendering the first held-out frame (after one warm-up render), on the model's device; a model
    that draws whole images (``render_camera``) draws the frame, its pixels counted as rays."""
    device = next(model.parameters()).device
    cameras = frames.cameras.to(device)
    pixels = image_pixels(cameras)
    rays = pixel_rays(cameras, 0, pixels)
    head = tracked_head(model.parametric, frames)

    def render() -> None:
        with torch.no_grad():
            if model.draws_images:  # a rasteriser: the whole frame at once
                model.render_camera(cameras, 0, head, 0)
            else:
                model.render_rays(rays, head)

    return len(pixels) / median_seconds(render, repeats, device)


FRAME_SIZE = 512  # the frame render_frame_seconds times: 512 x 512 pixels


def render_frame_seconds(model: AvatarModel, frames: FrameSet, size: int = FRAME_SIZE) -> float:
    """Wall seconds to render the first held-out frame at ``size`` x ``size`` pixels (its camera resized),
    ``RENDER_CHUNK`` rays at a time as the training loop's evaluation renders, on the model's device."""
    device = next(model.parameters()).device
    cameras = resized_cameras(frames.cameras, size, size)
    head = tracked_head(model.parametric, frames)
    start = time.perf_counter()
    render_view(model, cameras, 0, head, 0, RENDER_CHUNK, device)  # ends on the CPU: the GPU's work is done
    return time.perf_counter() - start


def train_variant(
    model: AvatarModel,
    train_frames: FrameSet,
    eval_frames: FrameSet,
    out: Path,
    config: TrainingConfig,
    render_repeats: int = 3,
    frame_size: int | None = None,
) -> dict:
    """Train from scratch into ``out``; the loop's metrics (full frame and head: ``psnr``, ``psnr_head``, ...) plus
    iterations/s and render rays/s (median of ``render_repeats`` renders); with ``frame_size``, the seconds one
    ``frame_size``² frame takes to render. A model that draws whole images (GaussianAvatar) trains with its own steps
    in the same loop, which refuses the ray settings it has no use for."""
    metrics = train(model, train_frames, eval_frames, out, config, resume=False)
    metrics["iterations_per_second"] = metrics["iterations"] / metrics["train_seconds"]
    metrics["render_rays_per_second"] = rendering_rays_per_second(model, eval_frames, render_repeats)
    if frame_size:
        metrics["render_frame_size"] = frame_size
        metrics["render_frame_seconds"] = render_frame_seconds(model, eval_frames, frame_size)
    return metrics


# ---------------------------------------------------------------- what the paper ablations share (ablations/)
# Each ablation script keeps its question: its variants, its own measures and its table's columns.


def ablation_parser(
    doc: str,
    minutes: float | None = None,
    rays: int | None = None,
    frames_per_batch: int | None = None,
    helps: Mapping[str, str] | None = None,
) -> argparse.ArgumentParser:
    """An ablation's command line, described by the first line of its docstring ``doc``: ``--minutes`` (the training
    budget of a variant), ``--rays`` and ``--frames-per-batch`` where their defaults are given, and ``--out``
    (default: a new temporary folder, :func:`parse_ablation`); ``helps`` replace a flag's help (``{"minutes": ...}``)."""
    helps = helps or {}
    parser = argparse.ArgumentParser(description=doc.split("\n")[0])
    if minutes is not None:
        parser.add_argument("--minutes", type=float, default=minutes, help=helps.get("minutes", "training budget per variant"))
    if rays is not None:
        parser.add_argument("--rays", type=int, default=rays, help=helps.get("rays"))
    if frames_per_batch is not None:
        parser.add_argument("--frames-per-batch", type=int, default=frames_per_batch, help=helps.get("frames_per_batch"))
    parser.add_argument("--out", type=Path, default=None, help="where the variants' runs go (default: a temporary folder)")
    return parser


def parse_ablation(parser: argparse.ArgumentParser, name: str) -> argparse.Namespace:
    """The parsed command line, ``out`` a new temporary folder ``NAME_bench_*`` where ``--out`` is not given."""
    args = parser.parse_args()
    args.out = args.out or Path(tempfile.mkdtemp(prefix=f"{name}_bench_"))
    return args


def ablation_training(args: argparse.Namespace, **fields) -> TrainingConfig:
    """A variant's training: ``--minutes``, ``--rays`` and ``--frames-per-batch`` of ``args`` where the script has
    them, no evaluation or checkpoint before the end (the budget trains), a log line every 100 steps; ``fields``
    replace any of these."""
    flags = {"max_minutes": "minutes", "rays_per_batch": "rays", "frames_per_batch": "frames_per_batch"}
    given = {field: getattr(args, flag) for field, flag in flags.items() if getattr(args, flag, None) is not None}
    return TrainingConfig(**{**given, "eval_every": 0, "checkpoint_every": 0, "log_every": 100, **fields})


def train_variants(
    variants: Mapping[str, Callable[[], AvatarModel]],
    subject: Subject,
    out: Path,
    training: TrainingConfig | Callable[[str], TrainingConfig],
    only: Collection[str] | None = None,
    measure: Callable[[AvatarModel, dict, Path], None] | None = None,
) -> dict[str, dict]:
    """Each variant (its name: a function building its model) built from the same initial weights (seed 0) and
    trained in turn with :func:`train_variant` into ``out/variant_I`` (I: its place in ``variants``), with
    ``training`` or ``training(name)``; the metrics by name, of the variants named in ``only`` (default: all).
    ``measure(model, metrics, folder)`` adds a script's own figures to a variant's metrics once it is trained."""
    results = {}
    for i, (name, build) in enumerate(variants.items()):
        if only is not None and name not in only:
            continue
        print(f"\n== {name} ==", flush=True)
        torch.manual_seed(0)  # the same initial weights for every variant
        model = build()
        config = training(name) if callable(training) else training
        folder = out / f"variant_{i}"
        results[name] = train_variant(model, subject.train, subject.eval, folder, config)
        if measure is not None:
            measure(model, results[name], folder)
    return results


def budget_line(subject: Subject, budget: str, train_note: str = "", eval_note: str = "") -> str:
    """The line above an ablation's table: the frames (each count followed by its note), their size and the budget
    of each variant on this CPU."""
    return (
        f"\n{len(subject.train)} training frames{train_note}, {len(subject.eval)} held-out test frames{eval_note} at "
        f"{subject.eval.cameras.width} px; {budget} on {torch.get_num_threads()} CPU threads\n"
    )


CELL_FORMATS = {  # how an ablation's table writes each of train_variant's metrics
    "psnr": "{:.2f} dB",
    "psnr_head": "{:.2f} dB",
    "ssim": "{:.4f}",
    "iterations": "{}",
    "iterations_per_second": "{:.2f}",
    "render_rays_per_second": "{:,.0f}",
    "train_seconds": "{:.0f}",
}


def metric_cells(metrics: dict, *keys: str) -> list[str]:
    """The table cells of ``metrics[key]`` for each of ``keys``, written as ``CELL_FORMATS`` says."""
    return [CELL_FORMATS[key].format(metrics[key]) for key in keys]


def print_table(header: list[str], aligns: str, rows: list[list[str]]) -> None:
    """A Markdown table: ``aligns`` a character a column, ``l`` left (``|---|``) or ``r`` right (``|---:|``)."""
    print("| " + " | ".join(header) + " |")
    print("|" + "|".join("---" if a == "l" else "---:" for a in aligns) + "|")
    for row in rows:
        print("| " + " | ".join(row) + " |")
