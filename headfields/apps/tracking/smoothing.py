"""Temporal smoothing of a 2D landmark track that skips the frames without a face.

Each found frame's point becomes a Gaussian-weighted *local linear* fit over the found frames around it (LOESS of
degree 1): the weights are a Gaussian of the frame distance times "found", renormalised over the found neighbours,
and the fitted line is read at the frame itself. Why this and not a one-euro filter: the tracker smooths offline,
with the whole track at hand, and a symmetric window has no lag (a one-euro filter is causal and lags a moving face
by its cut-off); why a line and not the plain renormalised average: the fit is exact on linear motion everywhere,
also at the ends of the track and beside gaps, where the neighbours lie on one side only and an average would pull
the point back towards them. In the interior of a run of found frames the window is symmetric, the line's slope
term vanishes, and the result is the plain Gaussian average (white noise's standard deviation drops by
sqrt(sum w^2) / sum w)::

    from headfields.apps.tracking.smoothing import smooth_track

    smoothed = smooth_track(track.points, track.found, sigma_frames=1.5)  # NaN stays NaN where found is False
"""

from __future__ import annotations

import math
import numbers

import torch
from jaxtyping import Bool, Float
from torch import Tensor

from ...checks import check_shape

__all__ = ["smooth_track", "smoothing_weights"]

# The window reaches this many standard deviations: weights past 3 sigma are < 1.2 % of the centre's.
WINDOW_SIGMAS = 3.0


def smoothing_weights(sigma_frames: float) -> Float[Tensor, " W"]:
    """The Gaussian over frame offsets -R..R (R = ceil(3 sigma)), unnormalised, float64: the kernel
    :func:`smooth_track` uses (a test computes its noise reduction from it)."""
    radius = math.ceil(WINDOW_SIGMAS * sigma_frames)
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float64)
    return torch.exp(-0.5 * (offsets / sigma_frames) ** 2)


def smooth_track(points: Float[Tensor, "N K 2"], found: Bool[Tensor, " N"], sigma_frames: float = 1.0) -> Float[Tensor, "N K 2"]:
    """``points`` smoothed over time with a Gaussian of ``sigma_frames`` frames, using only ``found`` frames (see
    the module's docstring); frames not found come out NaN, whatever they held. ``sigma_frames`` 0 returns the
    points unchanged (NaN where not found).

    >>> smooth_track(torch.randn(100, 68, 2), torch.ones(100, dtype=torch.bool), 2.0).shape  # (100, 68, 2)
    """
    check_shape("points", points, [None, None, 2])
    if not points.is_floating_point():
        raise TypeError(f"points: expected a floating-point tensor, got {points.dtype}")
    check_shape("found", found, [points.shape[0]], device=points.device)
    if found.dtype != torch.bool:
        raise TypeError(f"found: expected a bool tensor, got {found.dtype}")
    if isinstance(sigma_frames, bool) or not isinstance(sigma_frames, numbers.Real) or not math.isfinite(sigma_frames):
        raise ValueError(f"sigma_frames: expected a finite number of frames >= 0, got {sigma_frames!r}")
    if sigma_frames < 0:
        raise ValueError(f"sigma_frames: expected a finite number of frames >= 0, got {sigma_frames!r}")
    if not bool(torch.isfinite(points[found]).all()):
        raise ValueError("points: expected finite values in the found frames, found NaN or Inf")
    nan = torch.full_like(points, float("nan"))
    if sigma_frames == 0 or points.shape[0] == 0:
        return torch.where(found[:, None, None], points, nan)

    n = points.shape[0]
    weights = smoothing_weights(float(sigma_frames)).to(points.device)
    radius = (len(weights) - 1) // 2
    y = torch.where(found[:, None, None], points, 0).double()  # NaN never enters a sum, not even times 0
    mask = found.double()
    # Weighted sums over the window, offset d = neighbour - frame: S0 = sum w, S1 = sum w d, S2 = sum w d^2,
    # Sy = sum w y, Sdy = sum w d y; the weighted least-squares line y = b0 + b1 d at d = 0 is
    # b0 = (S2 Sy - S1 Sdy) / (S0 S2 - S1^2).
    s0 = torch.zeros(n, dtype=torch.float64, device=points.device)
    s1, s2 = torch.zeros_like(s0), torch.zeros_like(s0)
    sy, sdy = torch.zeros_like(y), torch.zeros_like(y)
    for index, d in enumerate(range(-radius, radius + 1)):
        lo, hi = max(0, -d), min(n, n - d)  # frames whose neighbour at offset d exists
        if hi <= lo:
            continue
        w = weights[index] * mask[lo + d : hi + d]
        s0[lo:hi] += w
        s1[lo:hi] += w * d
        s2[lo:hi] += w * d * d
        wy = w[:, None, None] * y[lo + d : hi + d]
        sy[lo:hi] += wy
        sdy[lo:hi] += wy * d
    det = s0 * s2 - s1 * s1
    # One found frame in reach (or all on one side at one offset): no slope to fit, the weighted mean it is. The
    # relative threshold keeps the division away from rounding noise.
    line = det > 1e-9 * s0 * s2.clamp_min(1e-300)
    mean = sy / s0[:, None, None]
    fit = (s2[:, None, None] * sy - s1[:, None, None] * sdy) / torch.where(line, det, 1)[:, None, None]
    smoothed = torch.where(line[:, None, None], fit, mean).to(points.dtype)
    return torch.where(found[:, None, None], smoothed, nan)
