"""Per-ray exclusive sums over packed samples: one cumulative sum over the whole batch, in float64, less its value
where each sample's ray starts (nerfacc's packed scan, with the sum widened).

A parallel scan over every sample costs the same whatever the rays' lengths. The scan it replaces walked each ray
with one Warp thread, and a batch of fixed slots hands all its padding to the last ray: on an H200, INSTA's step
spent 15.5 ms of 41 in that one thread walking 10^5 padding slots (tools/gpu_kit/step_profile.py, 2026-11-27).
The sum is float64 so that the short sums of the last rays keep their digits after the subtraction (a float32
batch sum would lose about log2(batch total / ray total) bits); float64's slow arithmetic on GeForce cards does not
show in a memory-bound scan. torch differentiates it to any order: the derivative of an exclusive sum is the reverse
exclusive sum of the gradient, which ``cumsum``'s own backward computes.

    sums = exclusive_sum(samples, tau)  # [S]: sum of tau over the earlier samples of each sample's ray
"""

from __future__ import annotations

import torch
from jaxtyping import Float
from torch import Tensor

from ..checks import check_finite
from .samples import PackedSamples

__all__ = ["exclusive_sum"]


def exclusive_sum(samples: PackedSamples, x: Float[Tensor, " S"]) -> Float[Tensor, " S"]:
    """Sum of ``x`` over the earlier samples of the same ray (0 at each ray's first sample), returned in ``x``'s
    dtype (float32 or float64; another dtype is returned as float32). Differentiable with respect to ``x`` to any
    order. Its values are checked finite (one read-back) unless the caller trusts them
    (:func:`~headfields.checks.trusted_values`, as the training loop and the renderers do): an Inf would make every
    later ray's sums NaN.

        tau = density * samples.deltas
        transmittance = torch.exp(-exclusive_sum(samples, tau))
    """
    if x.shape != (len(samples),):
        raise ValueError(f"x: expected one value a sample, shape ({len(samples)},), got {tuple(x.shape)}")
    check_finite("x", x)
    dtype = x.dtype if x.dtype in (torch.float32, torch.float64) else torch.float32
    wide = x.to(torch.float64)
    before = torch.cumsum(wide, 0) - wide  # over every earlier sample of the batch
    return (before - before[samples.ray_first()]).to(dtype)  # less the sum before each sample's ray's first
