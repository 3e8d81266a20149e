"""Volume compositing over packed samples (pure torch, differentiable).

For the samples of one ray in order, ``alpha_i = 1 - exp(-sigma_i * delta_i)`` (:func:`composite`, from densities)
or given (:func:`composite_alpha`, NeuS), transmittance ``T_i = prod_{j<i} (1 - alpha_j) = exp(-sum_{j<i} tau_j)``
with ``tau_j = sigma_j * delta_j = -log(1 - alpha_j)``, and weight ``w_i = T_i * alpha_i``. Both share one core:
the per-ray exclusive sums of :func:`~headfields.renderers.scan.exclusive_sum` (one float64 scan over the batch),
returned in the inputs' dtype.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from jaxtyping import Float
from torch import Tensor

from ..checks import check_finite, check_float, check_shape, checking_values, trusted_values, validation
from .samples import PackedSamples
from .scan import exclusive_sum

# How far outside [0, 1] composite_alpha accepts an alpha (then clamps it): float32 rounding of a computed
# opacity, not a modelling error.
ALPHA_TOLERANCE = 1e-6


@dataclass
class Composite:
    """Per-ray results and per-sample weights of :func:`composite` and :func:`composite_alpha`."""

    rgb: Float[Tensor, "R 3"]  # sum_i w_i c_i + (1 - opacity) * background
    depth: Float[Tensor, " R"]  # expected depth sum_i w_i t_mid_i (not divided by opacity: 0 for empty rays)
    opacity: Float[Tensor, " R"]  # sum_i w_i = 1 - T after the last sample
    weights: Float[Tensor, " S"]


# An optical depth past which a sample is opaque for any float (exp(-50) = 2e-22). Each tau is clamped to it before
# the scan, so that a huge (or overflowed, inf) tau leaves the sums finite (an inf in the batch's running sum would
# make every later ray's difference inf - inf = NaN); a clamped sample has alpha = 1 - 2e-22 and hides what is
# behind it, as it should.
TAU_OPAQUE = 50.0


def transmittance(samples: PackedSamples, tau: Float[Tensor, " S"]) -> Float[Tensor, " S"]:
    """``exp(-sum of tau over the earlier samples of the same ray)`` (segment-wise exclusive sum; each tau
    clamped to ``TAU_OPAQUE``; a NaN is refused, as :func:`~headfields.renderers.scan.exclusive_sum` says)."""
    return torch.exp(-exclusive_sum(samples, tau.clamp(max=TAU_OPAQUE)))


def _alpha_weights(samples: PackedSamples, alpha: Tensor) -> Tensor:
    """``w_i = alpha_i prod_{j<i} (1 - alpha_j)`` within each ray, for ``alpha`` already in ``[0, 1]``.

    Samples with ``alpha = 1`` (infinite optical depth) are counted apart, since an infinite ``tau`` would turn
    the running sum of every later ray into NaN: after two of them the weights are 0; after one, the product of
    the others times that one's ``1 - alpha`` (0 in value), which keeps the exact first derivative with respect
    to it.
    """
    if len(samples) == 0:
        return alpha * 1
    opaque = alpha >= 1
    # Mask before log1p, not after: log1p(-1) = -inf would give a NaN gradient through torch.where.
    tau = -torch.log1p(-torch.where(opaque, 0.0, alpha))
    before = exclusive_sum(samples, opaque.to(alpha.dtype))  # small integers: exact in any float
    index = torch.arange(len(samples), device=alpha.device)
    # The last opaque sample before each one (global; on the same ray wherever ``before`` is 1).
    last = torch.cummax(torch.where(opaque, index, -1), dim=0).values
    last = torch.cat([last.new_full((1,), -1), last[:-1]]).clamp(min=0)
    factor = torch.where(before == 1, 1 - alpha[last], 1.0)
    return torch.where(before <= 1, transmittance(samples, tau) * factor, 0.0) * alpha


def _accumulate(samples: PackedSamples, weights: Tensor, values: Tensor) -> Tensor:
    zeros = weights.new_zeros(samples.num_rays, values.shape[1])
    return zeros.index_add(0, samples.ray, weights[:, None] * values)


def accumulate(samples: PackedSamples, weights: Float[Tensor, " S"], values: Float[Tensor, "S C"]) -> Float[Tensor, "R C"]:
    """Per-ray weighted sums ``sum_i w_i v_i`` (normals, features, anything composited like colour); zero on rays
    without samples. Differentiable with respect to ``weights`` and ``values``."""
    s, device = len(samples), samples.device
    for name, x, shape in (("weights", weights, [s]), ("values", values, [s, None])):
        check_shape(name, x, shape, device=device)
        if not x.is_floating_point():
            raise TypeError(f"{name}: expected a floating-point tensor, got {x.dtype}")
    if s > 0 and checking_values():
        with torch.no_grad():
            finite_weights, finite_values = torch.stack([weights.sum().isfinite(), values.sum().isfinite()]).tolist()
        if not finite_weights:
            check_finite("weights", weights)
        if not finite_values:
            check_finite("values", values)
    dtype = torch.promote_types(weights.dtype, values.dtype)
    return _accumulate(samples, weights.to(dtype), values.to(dtype))


def _check_fields(name: str, field: Tensor, rgb: Tensor, s: int, device: torch.device, upper: float | None = None) -> None:
    """Shapes and dtypes, then the values with one reduction (one sync on CUDA): finite (a NaN or Inf makes a
    sum non-finite), ``field`` non-negative and at most ``upper`` (within ALPHA_TOLERANCE). Runs every training
    step, so it stays cheap; skipped for trusted values (a renderer's own samples, ``validate=False``)."""
    for arg, x, shape in ((name, field, [s]), ("rgb", rgb, [s, 3])):
        check_shape(arg, x, shape, device=device)
        if not x.is_floating_point():
            raise TypeError(f"{arg}: expected a floating-point tensor, got {x.dtype}")
    if s == 0 or not checking_values():
        return
    lower = 0.0 if upper is None else -ALPHA_TOLERANCE
    with torch.no_grad():
        stats = [field.sum().isfinite(), rgb.sum().isfinite(), field.amin() >= lower]
        if upper is not None:
            stats.append(field.amax() <= upper + ALPHA_TOLERANCE)
        stats = torch.stack(stats).tolist()
    if not stats[0]:
        check_finite(name, field)
    if not stats[1]:
        check_finite("rgb", rgb)
    if not all(stats[2:]):
        expected = "non-negative values" if upper is None else f"values in [0, {upper}]"
        raise ValueError(f"{name}: expected {expected}, found one outside")


def _check_background(background: Tensor | None, r: int, device: torch.device) -> None:
    if background is not None:
        per_ray = isinstance(background, Tensor) and background.dim() == 2
        check_float("background", background, [r, 3] if per_ray else [3], device=device)


def _composite(samples: PackedSamples, weights: Tensor, rgb: Tensor, background: Tensor | None) -> Composite:
    """The per-ray sums of both compositors: colour, depth and opacity in one :func:`accumulate` pass."""
    ones = weights.new_ones(len(samples), 1)
    sums = _accumulate(samples, weights, torch.cat([rgb.to(weights.dtype), samples.t_mid.to(weights.dtype)[:, None], ones], 1))
    # Split, not sliced: the gradients come back in one concatenation, not a zero-filled copy each and two adds.
    color, depth, opacity = sums.split([3, 1, 1], dim=1)
    depth, opacity = depth.squeeze(1), opacity.squeeze(1)
    if background is not None:
        color = color + (1 - opacity)[:, None] * background.to(weights.dtype)
    return Composite(rgb=color, depth=depth, opacity=opacity, weights=weights)


def composite(
    samples: PackedSamples,
    density: Float[Tensor, " S"],
    rgb: Float[Tensor, "S 3"],
    background: Float[Tensor, " 3"] | Float[Tensor, "R 3"] | None = None,
    validate: bool = True,
) -> Composite:
    """Alpha-composite the samples of each ray front to back over ``background`` (black when None).

    ``density`` (>= 0) is per unit ``t``; rays without samples get the background, zero opacity and depth.
    Differentiable with respect to ``density``, ``rgb`` and ``background``. ``validate=False`` skips the checks
    of values (finite, non-negative: a host synchronisation on CUDA); then no step reads a value back, so the
    call can be captured in a CUDA graph.
    """
    s, r, device = len(samples), samples.num_rays, samples.device
    with validation(validate):
        _check_fields("density", density, rgb, s, device)
        _check_background(background, r, device)
    dtype = torch.promote_types(density.dtype, rgb.dtype)
    tau = density.to(dtype) * samples.deltas.to(dtype)
    alpha = 1 - torch.exp(-tau)
    with trusted_values():  # density checked above; an overflowed tau is clamped in transmittance
        weights = transmittance(samples, tau) * alpha
    return _composite(samples, weights, rgb, background)


def composite_alpha(
    samples: PackedSamples,
    alpha: Float[Tensor, " S"],
    rgb: Float[Tensor, "S 3"],
    background: Float[Tensor, " 3"] | Float[Tensor, "R 3"] | None = None,
    validate: bool = True,
) -> Composite:
    """Like :func:`composite`, given each sample's opacity ``alpha`` in ``[0, 1]`` (NeuS's discrete opacity,
    :func:`~headfields.renderers.neus.neus_alpha`) instead of a density: ``w_i = alpha_i prod_{j<i} (1 - alpha_j)``.

    Values up to ALPHA_TOLERANCE outside ``[0, 1]`` (rounding) are clamped. After a sample with ``alpha = 1`` the
    weights are exactly 0, with no NaN in values or gradients. Differentiable with respect to ``alpha``, ``rgb``
    and ``background`` (first derivatives exact also at ``alpha = 0`` or ``1``). ``validate`` as in :func:`composite`.
    """
    s, r, device = len(samples), samples.num_rays, samples.device
    with validation(validate):
        _check_fields("alpha", alpha, rgb, s, device, upper=1.0)
        _check_background(background, r, device)
    dtype = torch.promote_types(alpha.dtype, rgb.dtype)
    with trusted_values():  # alpha checked above
        weights = _alpha_weights(samples, alpha.to(dtype).clamp(0, 1))
    return _composite(samples, weights, rgb, background)
