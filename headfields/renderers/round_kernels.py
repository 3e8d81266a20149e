"""The inference renderer's round in two Warp kernels, a thread a live ray (:mod:`headfields.renderers.inference`):
one writes the samples the round evaluates (their points, directions, frames and lengths: the field's inputs), the
other composites them onto the ray's sums and transmittance, writes their weights and says whether the ray goes on.

In torch the same round took about seventy operations over ``[live rays, steps]`` tensors (scatter the samples into
the grid, an exclusive sum along each row, the exponentials, the weighted sums, the gathers of the samples' points and
the gathers and scatters of the rays' state): on a GPU each is a kernel launch, on the CPU a pass over memory. Here a
ray's samples are one loop in one thread, in the order the training compositor sums them. Both kernels exist in
float32 and float64 (:func:`_kernels`), the dtype of the rays.
"""

# No `from __future__ import annotations`: Warp reads the kernels' annotations as objects, and those of the
# kernels built in _kernels name its local types.

from dataclasses import dataclass
from functools import cache
from typing import no_type_check

import torch
import warp as wp
from jaxtyping import Float, Int
from torch import Tensor

from .. import kernels
from .compositing import TAU_OPAQUE

__all__ = ["RoundSamples", "composite_round", "gather_round"]

_TAU_OPAQUE = wp.constant(TAU_OPAQUE)


@dataclass(frozen=True)
class RoundSamples:
    """A round's samples, ray after ray, and what the field is asked there (the rays' dtype)."""

    index: Int[Tensor, " n"]  # their places among all samples
    points: Float[Tensor, "n 3"]  # origin + t_mid direction
    directions: Float[Tensor, "n 3"]  # their rays'
    frame: Int[Tensor, " n"]  # their rays'
    deltas: Float[Tensor, " n"]  # their lengths


@cache
def _kernels(scalar: type) -> tuple[wp.Kernel, wp.Kernel]:
    """The gathering and compositing kernels in ``scalar`` (wp.float32 or wp.float64), their own modules, built on
    first use."""
    vec3 = wp.types.vector(3, scalar)
    vec5 = wp.types.vector(5, scalar)  # colour, depth and opacity: a ray's sums

    @no_type_check
    @wp.kernel(module="unique", enable_backward=False)
    def gather(
        origins: wp.array(dtype=vec3),  # [R] the rays'
        directions: wp.array(dtype=vec3),
        frames: wp.array(dtype=wp.int64),
        t_mid: wp.array(dtype=scalar),  # [S] the samples'
        deltas: wp.array(dtype=scalar),
        index: wp.array(dtype=wp.int64),  # [n] written: the round's samples
        points: wp.array(dtype=vec3),  # written
        out_directions: wp.array(dtype=vec3),  # written
        frame: wp.array(dtype=wp.int64),  # written
        lengths: wp.array(dtype=scalar),  # written
        live: wp.array(dtype=wp.int64),  # [A] per live ray from here on
        count: wp.array(dtype=wp.int64),  # its samples this round
        start: wp.array(dtype=wp.int64),  # where they start among the round's
        following: wp.array(dtype=wp.int64),  # its next sample
    ):
        i = wp.tid()
        r = live[i]
        o, d, f = origins[r], directions[r], frames[r]
        for j in range(int(count[i])):
            k = start[i] + wp.int64(j)
            s = following[i] + wp.int64(j)
            index[k] = s
            points[k] = o + t_mid[s] * d
            out_directions[k] = d
            frame[k] = f
            lengths[k] = deltas[s]

    @no_type_check
    @wp.kernel(module="unique", enable_backward=False)
    def composite(
        thickness: wp.array(dtype=scalar),  # [n] the round's samples, ray after ray
        rgb: wp.array2d(dtype=scalar),  # [n, 3]
        index: wp.array(dtype=wp.int64),  # [n] the samples' places among all samples
        t_mid: wp.array(dtype=scalar),  # [S]
        steps: wp.int64,
        early_stop: scalar,
        light: wp.array(dtype=scalar),  # [R] transmittance so far, updated
        sums: wp.array2d(dtype=scalar),  # [R, 5], updated
        weights: wp.array(dtype=scalar),  # [S], written at the round's samples
        live: wp.array(dtype=wp.int64),  # [A] per live ray from here on
        count: wp.array(dtype=wp.int64),  # its samples this round
        start: wp.array(dtype=wp.int64),  # where they start among the round's
        following: wp.array(dtype=wp.int64),  # its next sample, moved on by the round's steps
        left: wp.array(dtype=wp.int64),  # its samples left, less the round's steps
        keep: wp.array(dtype=wp.uint8),  # written: whether it goes on
    ):
        i = wp.tid()
        r = live[i]
        transmittance = light[r]
        acc = vec5(sums[r, 0], sums[r, 1], sums[r, 2], sums[r, 3], sums[r, 4])
        one = scalar(1.0)
        depth = wp.float64(0.0)  # the optical depth so far this round, summed in float64 (torch's cumsum on the CPU)
        for j in range(int(count[i])):
            k = start[i] + wp.int64(j)
            s = index[k]
            tau = thickness[k]
            if tau > scalar(_TAU_OPAQUE):  # an opaque sample (tau inf) hides what is behind it; a NaN stays NaN
                tau = scalar(_TAU_OPAQUE)
            # The opacity 1 - exp(-tau) by Kahan's expm1: as accurate for thin samples as for thick ones.
            through = wp.exp(-tau)
            alpha = tau
            if through != one:
                alpha = (one - through) * tau / -wp.log(through)
            w = transmittance * scalar(wp.exp(-depth)) * alpha
            acc += w * vec5(rgb[k, 0], rgb[k, 1], rgb[k, 2], t_mid[s], one)
            weights[s] = w
            depth += wp.float64(tau)
        transmittance = transmittance * scalar(wp.exp(-depth))
        light[r] = transmittance
        for c in range(5):
            sums[r, c] = acc[c]
        following[i] = following[i] + steps
        left[i] = left[i] - steps
        keep[i] = wp.uint8(0)
        if transmittance >= early_stop and left[i] > wp.int64(0):
            keep[i] = wp.uint8(1)

    return gather, composite


def gather_round(
    rays: tuple[Tensor, Tensor, Tensor], samples: tuple[Tensor, Tensor], per_ray: tuple[Tensor, Tensor, Tensor, Tensor], n: int
) -> RoundSamples:
    """The round's ``n`` samples, ray after ray, for ``rays = (origins [R, 3], directions [R, 3], frame [R])``,
    ``samples = (t_mid [S], deltas [S])`` (contiguous, detached, one float dtype; the frames int64) and ``per_ray =
    (live, count, start, following)`` (int64 ``[A]``): ``count[i]`` samples of ray ``live[i]`` from its sample
    ``following[i]``, placed from ``start[i]`` (the exclusive sum of ``count``; ``n`` its total)."""
    origins, directions, frames = rays
    t_mid, deltas = samples
    device, dtype = origins.device, origins.dtype
    out = RoundSamples(
        index=torch.empty(n, dtype=torch.long, device=device),
        points=torch.empty(n, 3, dtype=dtype, device=device),
        directions=torch.empty(n, 3, dtype=dtype, device=device),
        frame=torch.empty(n, dtype=torch.long, device=device),
        deltas=torch.empty(n, dtype=dtype, device=device),
    )
    shared = [origins, directions, frames, t_mid, deltas, out.index, out.points, out.directions, out.frame, out.deltas]
    kernels.launch_rows(_kernels(kernels.WARP_SCALARS[dtype])[0], len(per_ray[0]), shared, list(per_ray), device)
    return out


def composite_round(
    thickness: Float[Tensor, " n"],
    rgb: Float[Tensor, "n 3"],
    index: Int[Tensor, " n"],
    t_mid: Float[Tensor, " S"],
    steps: int,
    early_stop: float,
    state: tuple[Tensor, Tensor, Tensor],
    rays: tuple[Tensor, Tensor, Tensor, Tensor, Tensor],
) -> Tensor:
    """The round's samples composited onto ``state = (light [R], sums [R, 5], weights [S])`` in the dtype of
    ``t_mid``, which it updates, for ``rays = (live, count, start, following, left)`` (int64 ``[A]``), whose
    ``following`` and ``left`` it moves on by ``steps``. Returns which of them go on (bool ``[A]``): transmittance at
    least ``early_stop`` and samples left."""
    light, sums, weights = state
    live = rays[0]
    dtype = t_mid.dtype
    keep = torch.empty(len(live), dtype=torch.bool, device=live.device)
    shared = [thickness.to(dtype).contiguous(), rgb.to(dtype).contiguous(), index, t_mid, steps, early_stop, light, sums, weights]
    kernels.launch_rows(_kernels(kernels.WARP_SCALARS[dtype])[1], len(live), shared, [*rays, keep.view(torch.uint8)], live.device)
    return keep
