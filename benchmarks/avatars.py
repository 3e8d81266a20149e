"""What the model benchmarks share: train a variant with the shared loop and measure it the same way."""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from headfields.data import FrameSet
from headfields.metrics import psnr
from headfields.renderers.cameras import image_pixels, pixel_rays
from headfields.training import AvatarModel, TrainingConfig, train


def rendering_rays_per_second(model: AvatarModel, frames: FrameSet, repeats: int = 3) -> float:
    """Median rays/s rendering the first held-out frame (after one warm-up render)."""
    pixels = image_pixels(frames.cameras)
    rays = pixel_rays(frames.cameras, 0, pixels)
    times = []
    with torch.no_grad():
        for i in range(repeats + 1):
            start = time.perf_counter()
            model.render_rays(rays, frames)
            if i:
                times.append(time.perf_counter() - start)
    return len(pixels) / statistics.median(times)


def head_psnr(renders: Path, frames: FrameSet) -> float:
    """Mean PSNR over the head's pixels (the mask) of the final renders: the background, the same in every
    variant, is left out."""
    values = []
    for f in range(len(frames)):
        pred = torch.from_numpy(np.array(Image.open(renders / f"{f:05d}.png"))).float() / 255.0
        truth = frames.images[f].float() / 255.0
        mask = frames.masks[f]
        values.append(float(psnr(pred[mask], truth[mask])))
    return float(np.mean(values))


def train_variant(model: AvatarModel, train_frames: FrameSet, eval_frames: FrameSet, out: Path, config: TrainingConfig) -> dict:
    """Train from scratch into ``out``; the loop's metrics plus iterations/s, render rays/s and head PSNR."""
    metrics = train(model, train_frames, eval_frames, out, config, resume=False)
    metrics["iterations_per_second"] = metrics["iterations"] / metrics["train_seconds"]
    metrics["render_rays_per_second"] = rendering_rays_per_second(model, eval_frames)
    if eval_frames.masks is not None:
        metrics["head_psnr"] = head_psnr(out / "renders" / "final", eval_frames)
    return metrics
