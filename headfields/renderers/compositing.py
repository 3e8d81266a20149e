"""Volume compositing over packed samples (pure torch, differentiable).

For the samples of one ray in order, ``alpha_i = 1 - exp(-sigma_i * delta_i)``, transmittance
``T_i = prod_{j<i} (1 - alpha_j) = exp(-sum_{j<i} sigma_j * delta_j)`` and weight ``w_i = T_i * alpha_i``.
The per-ray exclusive sums come from one cumulative sum over all samples minus its value where each ray
starts, accumulated in float64 so that long batches do not lose the short sums of later rays.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from jaxtyping import Float
from torch import Tensor

from .._checks import check_finite, check_float, check_shape
from .samples import PackedSamples


@dataclass
class Composite:
    """Per-ray results and per-sample weights of :func:`composite`."""

    rgb: Float[Tensor, "R 3"]  # sum_i w_i c_i + (1 - opacity) * background
    depth: Float[Tensor, " R"]  # expected depth sum_i w_i t_mid_i (not divided by opacity: 0 for empty rays)
    opacity: Float[Tensor, " R"]  # sum_i w_i = 1 - T after the last sample
    weights: Float[Tensor, " S"]


def transmittance(samples: PackedSamples, tau: Float[Tensor, " S"]) -> Float[Tensor, " S"]:
    """``exp(-sum of tau over the earlier samples of the same ray)`` (segment-wise exclusive sum)."""
    inclusive = torch.cumsum(tau.double(), dim=0)
    exclusive = inclusive - tau.double()
    counts = samples.counts()
    first = torch.cumsum(counts, dim=0) - counts  # index of each ray's first sample
    return torch.exp(-(exclusive - exclusive[first[samples.ray]])).to(tau.dtype)


def _check_fields(density: Tensor, rgb: Tensor, s: int, device: torch.device) -> None:
    """Shapes and dtypes, then the values with one reduction (one sync on CUDA): finite (a NaN or Inf makes a
    sum non-finite) and non-negative density. Runs every training step, so it stays cheap."""
    for name, x, shape in (("density", density, [s]), ("rgb", rgb, [s, 3])):
        check_shape(name, x, shape, device=device)
        if not x.is_floating_point():
            raise TypeError(f"{name}: expected a floating-point tensor, got {x.dtype}")
    if s == 0:
        return
    with torch.no_grad():
        stats = torch.stack([density.sum().isfinite(), rgb.sum().isfinite(), density.amin() >= 0])
    finite_density, finite_rgb, non_negative = stats.tolist()
    if not finite_density:
        check_finite("density", density)
    if not finite_rgb:
        check_finite("rgb", rgb)
    if not non_negative:
        raise ValueError("density: expected non-negative values, found a negative one")


def composite(
    samples: PackedSamples,
    density: Float[Tensor, " S"],
    rgb: Float[Tensor, "S 3"],
    background: Float[Tensor, " 3"] | Float[Tensor, "R 3"] | None = None,
) -> Composite:
    """Alpha-composite the samples of each ray front to back over ``background`` (black when None).

    ``density`` (>= 0) is per unit ``t``; rays without samples get the background, zero opacity and depth.
    Differentiable with respect to ``density``, ``rgb`` and ``background``.
    """
    s, r, device = len(samples), samples.num_rays, samples.device
    _check_fields(density, rgb, s, device)
    if background is not None:
        per_ray = isinstance(background, Tensor) and background.dim() == 2
        check_float("background", background, [r, 3] if per_ray else [3], device=device)
    dtype = torch.promote_types(density.dtype, rgb.dtype)
    tau = density.to(dtype) * samples.deltas.to(dtype)
    alpha = 1 - torch.exp(-tau)
    weights = transmittance(samples, tau) * alpha
    opacity = torch.zeros(r, dtype=dtype, device=device).index_add(0, samples.ray, weights)
    depth = torch.zeros(r, dtype=dtype, device=device).index_add(0, samples.ray, weights * samples.t_mid.to(dtype))
    color = torch.zeros(r, 3, dtype=dtype, device=device).index_add(0, samples.ray, weights[:, None] * rgb.to(dtype))
    if background is not None:
        color = color + (1 - opacity)[:, None] * background.to(dtype)
    return Composite(rgb=color, depth=depth, opacity=opacity, weights=weights)
