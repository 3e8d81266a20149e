"""What the model benchmarks share: train a variant with the shared loop and measure it the same way."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch

from headfields.cameras import image_pixels, pixel_rays, resized_cameras
from headfields.data import FrameSet
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
            if hasattr(model, "render_camera"):  # a rasteriser: the whole frame at once
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
