"""Seeding, and the random rays a training step draws from all training frames."""

from __future__ import annotations

import random

import numpy as np
import torch
from jaxtyping import Int
from torch import Tensor

from ..checks import check_count
from ..data import FrameSet
from ..parametric import Head
from ..renderers.cameras import pixel_rays, sample_pixels
from ..renderers.view_balance import sample_pixels_balanced
from .contract import RayBatch

__all__ = ["ray_batch", "seed_everything"]


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
