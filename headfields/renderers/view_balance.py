"""View-balanced ray sampling (360° Volumetric Portrait Avatar, Nehvi et al. 2023).

A subject turning before one camera is seen mostly from the front in a typical capture, so drawing pixels
uniformly over frames starves the back views. The paper balances the rays of each batch over views: every frame
is put in a view bin (front / side / back) by the angle between the subject's facing direction and the
direction to the camera, and each batch draws the same number of rays from every bin that has frames.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from jaxtyping import Float, Int
from torch import Tensor

from ..cameras import PinholeCameras, PixelSamples, sample_pixels
from ..checks import IntLike, check_count, check_float, check_generator, check_int

# Bin edges on the view angle (radians). Equal thirds of [0, pi]: for a subject turning at a steady rate the
# view angle is uniform on [0, pi], so the three bins then hold equally many frames and balancing changes
# nothing; for a capture that lingers on the front it lifts the side and back views (Nehvi et al. 2023,
# "front, side and back views").
FRONT_EDGE = math.pi / 3  # below: front view (the face is visible)
BACK_EDGE = 2 * math.pi / 3  # at or above: back view (the back of the head)
VIEW_EDGES = (FRONT_EDGE, BACK_EDGE)
FRONT, SIDE, BACK = 0, 1, 2  # bin labels of view_bins with the default edges
NUM_VIEW_BINS = 3

# Facing directions and subject-to-camera offsets shorter than this have no direction.
_MIN_LENGTH = 1e-12
# Bits of the integers a frame within a bin is drawn from: each frame of a bin of n is then drawn with a probability
# within 2^-31 of 1 / n (the products with n stay far inside int64).
_UNIFORM_BITS = 31


def view_angles(cameras: PinholeCameras, forward: Float[Tensor, "B 3"], centers: Float[Tensor, "B 3"]) -> Float[Tensor, " B"]:
    """Per frame, the angle in [0, pi] between the subject's facing direction ``forward[b]`` (world, any
    length) and the direction from the subject's centre ``centers[b]`` to the camera centre: 0 when the camera
    is in front of the subject, pi when it is behind. In the promoted dtype of the inputs; differentiable
    away from 0 and pi."""
    if not isinstance(cameras, PinholeCameras):
        raise TypeError(f"cameras: expected PinholeCameras, got {type(cameras).__name__}")
    n, device = cameras.num_frames, cameras.device
    check_float("forward", forward, [n, 3], device=device)
    check_float("centers", centers, [n, 3], device=device)
    dtype = torch.promote_types(torch.promote_types(forward.dtype, centers.dtype), cameras.camera_to_world.dtype)
    facing = forward.to(dtype)
    to_camera = cameras.camera_to_world[:, :3, 3].to(dtype) - centers.to(dtype)
    for name, v in (("forward", facing), ("centers", to_camera)):
        short = v.detach().norm(dim=-1) <= _MIN_LENGTH
        if short.any():
            row = int(short.nonzero()[0, 0])
            what = "non-zero facing directions" if name == "forward" else "subject centres away from the camera centre"
            raise ValueError(f"{name}: expected {what}, got a degenerate one in row {row}")
    # atan2(|a x b|, a . b) is accurate near 0 and pi, where acos of the normalised dot product is not.
    cross = torch.linalg.cross(facing, to_camera, dim=-1).norm(dim=-1)
    return torch.atan2(cross, (facing * to_camera).sum(dim=-1))


def view_bins(angles: Float[Tensor, " B"], edges: Sequence[float] = VIEW_EDGES) -> Int[Tensor, " B"]:
    """The view bin of each angle (radians, in [0, pi]): bin ``i`` holds ``edges[i-1] <= angle < edges[i]``.
    With the default edges: 0 front (``FRONT``), 1 side (``SIDE``), 2 back (``BACK``). int64, on the angles'
    device."""
    check_float("angles", angles, [None])
    # atan2 may round to pi's nearest float, a little above math.pi in float32.
    top = math.pi * (1 + torch.finfo(angles.dtype).eps)
    if angles.numel() and (angles.min() < 0 or angles.max() > top):
        lo, hi = float(angles.min()), float(angles.max())
        raise ValueError(f"angles: expected view angles in [0, pi], got values in [{lo:.4g}, {hi:.4g}]")
    values = [float(e) for e in edges]
    if not all(0 < e < math.pi for e in values) or any(a >= b for a, b in zip(values[:-1], values[1:], strict=True)):
        raise ValueError(f"edges: expected increasing angles inside (0, pi), got {tuple(edges)!r}")
    boundaries = torch.tensor(values, dtype=angles.dtype, device=angles.device)
    return torch.bucketize(angles.detach(), boundaries, right=True)


def balanced_frames(
    bins: Int[Tensor, " B"], count: IntLike, generator: torch.Generator, num_bins: IntLike = NUM_VIEW_BINS
) -> Int[Tensor, " count"]:
    """``count`` frame indices (int64, on the bins' device) with every non-empty bin equally represented.

    ``bins[b]`` is frame ``b``'s view bin in ``[0, num_bins)``. Each of the ``k`` non-empty bins gets
    ``count // k`` draws, and ``count % k`` bins drawn at random get one more; within a bin, frames are drawn
    uniformly with replacement. Empty bins are skipped (a front-only video samples only the front). The result
    is grouped by bin, the bins in a random order. Random numbers come from ``generator`` on its device, so a seed
    gives the same frames on any device. Nothing is read back to the host, and the shapes depend on ``len(bins)``
    and ``count`` alone: a CUDA graph can capture the draw.

    ```python
    bins = torch.tensor([0, 0, 0, 0, 1, 2])  # four front views, one side, one back
    frames = balanced_frames(bins, 300, torch.Generator().manual_seed(0))  # 100 rays from each bin
    ```
    """
    num_bins = check_count("num_bins", num_bins, 1)
    check_int("bins", bins, [None], upper=num_bins)
    count = check_count("count", count, 0)
    check_generator("generator", generator)
    return _balanced(bins, count, generator)


def _balanced(bins: Int[Tensor, " B"], count: int, generator: torch.Generator) -> Int[Tensor, " count"]:
    """:func:`balanced_frames` of checked arguments, for any non-negative labels (none: refused)."""
    if bins.numel() == 0:
        raise ValueError("bins: expected at least one frame to sample from, got none")
    device, g, n = bins.device, generator.device, bins.numel()
    labels, order = torch.sort(bins, stable=True)  # frames grouped by bin
    # A bin is a run of equal labels; the run's first position stands for it, so the filled bins are found on the
    # device (no count of them on the host) and an empty bin has no position at all.
    start, end = torch.searchsorted(labels, labels), torch.searchsorted(labels, labels, right=True)
    position = torch.arange(n, device=device)
    first = start == position
    filled = first.sum()
    # The filled bins in random order (keys in [-1, 0); the other positions after them). The i-th draws count // k
    # rays, one more for i < count % k: a uniformly random count % k bins get the extra ray, as a random permutation
    # of the bins gives it.
    turns = torch.argsort(torch.rand(n, generator=generator, device=g).to(device).add(first, alpha=-1))
    draws = (position < filled) * (count // filled + (position < count % filled))
    # (output_size: the shape is known, so a GPU is not asked for it)
    bin_start = turns.repeat_interleave(draws, output_size=count)
    # A frame within the bin: floor(u * size) for u = r / 2^31, in integers, so exactly below the bin's size.
    r = torch.randint(1 << _UNIFORM_BITS, (count,), generator=generator, device=g).to(device)
    size = end.index_select(0, bin_start) - bin_start
    return order.index_select(0, bin_start + ((r * size) >> _UNIFORM_BITS))


def sample_pixels_balanced(
    cameras: PinholeCameras, bins: Int[Tensor, " B"], count: IntLike, generator: torch.Generator
) -> PixelSamples:
    """``count`` pixels balanced over view bins: frames from :func:`balanced_frames` (``bins`` [num_frames]),
    each with a pixel drawn uniformly over the image as :func:`sample_pixels` does."""
    if not isinstance(cameras, PinholeCameras):
        raise TypeError(f"cameras: expected PinholeCameras, got {type(cameras).__name__}")
    check_int("bins", bins, [cameras.num_frames], device=cameras.device)
    count = check_count("count", count, 0)
    check_generator("generator", generator)
    frame = _balanced(bins, count, generator)  # any labels: no read-back for their largest
    # Intrinsics are shared, so a pixel's distribution does not depend on its frame: draw the pixels for one
    # frame with sample_pixels and pair them with the balanced frames.
    one = torch.zeros(1, dtype=torch.long, device=cameras.device)
    drawn = sample_pixels(cameras, count, generator, one)
    return PixelSamples(frame=frame, pixels=drawn.pixels, drawn=drawn.drawn)
