"""Per-ray exclusive sums over packed samples: one Warp thread a ray walks its samples in order (nerfacc's
segmented scan), in the samples' own dtype, with compensated (Kahan) summation.

A cumulative sum over every sample of the batch, minus its value where each ray starts, needs float64 to keep
the short sums of the last rays (float64 runs at 1/64 of the float32 rate on GeForce cards); a scan a ray sums
only that ray's few hundred terms, and the compensation keeps the float32 sum within a few ulps of the exact one.
The derivative of an exclusive sum is the reverse exclusive sum of the gradient, the same kernel walking
backwards, so the scan is differentiable to any order.

    sums = exclusive_sum(samples, tau)  # [S]: sum of tau over the earlier samples of each sample's ray
"""

from __future__ import annotations

from typing import Any, no_type_check

import torch
import warp as wp
from jaxtyping import Float
from torch import Tensor

from ..kernels import launch_rows
from .samples import PackedSamples

__all__ = ["exclusive_sum"]


@no_type_check  # Warp parameter types are not Python type hints
@wp.kernel
def _exclusive_scan_kernel(
    x: wp.array(dtype=Any),
    out: wp.array(dtype=Any),
    reverse: int,
    start: wp.array(dtype=wp.int64),
    end: wp.array(dtype=wp.int64),
):
    r = wp.tid()
    lo, hi = start[r], end[r]
    n = int(hi - lo)
    total = x.dtype(0.0)
    carry = x.dtype(0.0)  # Kahan's compensation: the low-order part lost by the last addition
    for k in range(n):
        i = lo + wp.int64(k)
        if reverse != 0:
            i = hi - wp.int64(1 + k)
        out[i] = total
        y = x[i] - carry
        t = total + y
        carry = (t - total) - y
        total = t


for _dtype in (wp.float32, wp.float64):
    wp.overload(_exclusive_scan_kernel, {"x": wp.array(dtype=_dtype), "out": wp.array(dtype=_dtype)})


def _scan(x: Tensor, start: Tensor, end: Tensor, reverse: bool) -> Tensor:
    x = x.contiguous()
    out = torch.empty_like(x)
    shared = [wp.from_torch(x.detach()), wp.from_torch(out), int(reverse)]  # typed here: the kernel's dtype is generic
    launch_rows(_exclusive_scan_kernel, start.shape[0], shared, [start, end], x.device)
    return out


class _ExclusiveScan(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, start: Tensor, end: Tensor, reverse: bool) -> Tensor:
        ctx.save_for_backward(start, end)
        ctx.reverse = reverse
        return _scan(x, start, end, reverse)

    @staticmethod
    def backward(ctx, grad: Tensor):
        start, end = ctx.saved_tensors
        # d(exclusive sum)_i / dx_j = 1 for the later j of the ray: the gradient's exclusive sum the other way.
        return _ExclusiveScan.apply(grad, start, end, not ctx.reverse), None, None, None


def exclusive_sum(samples: PackedSamples, x: Float[Tensor, " S"]) -> Float[Tensor, " S"]:
    """Sum of ``x`` over the earlier samples of the same ray (0 at each ray's first sample), in ``x``'s dtype
    (float32 or float64; another dtype is summed in float32 and cast back). Differentiable with respect to ``x``;
    no host synchronisation."""
    if x.shape != (len(samples),):
        raise ValueError(f"x: expected one value a sample, shape ({len(samples)},), got {tuple(x.shape)}")
    dtype = x.dtype if x.dtype in (torch.float32, torch.float64) else torch.float32
    start = samples.first()
    end = torch.cat([start, start.new_full((1,), len(samples))])[1:]  # the next ray's start
    return _ExclusiveScan.apply(x.to(dtype), start, end, False).to(x.dtype)
