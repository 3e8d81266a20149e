"""Early termination in fixed slots (``TrainingConfig.fixed_shapes``): the samples a ray still sees through, compacted
into the training slots, in two Warp launches (instant-ngp's compaction of its training samples, testbed_nerf.cu).

:meth:`~headfields.renderers.samples.SlotSamples.compact` does the same for any mask in about 40 torch operations,
after the transmittance's 20 more: on a GPU each is a kernel launch, and the step's host time is their sum. Here a
thread a ray walks its marched samples until its transmittance falls below the threshold (a ray keeps a prefix of its
samples: the transmittance only falls), and, after a cumulative sum of the rays' counts, a thread a training slot
finds its ray by a binary search and copies its sample (or writes padding). The sums run in float64 along each ray,
as :func:`~headfields.renderers.scan.exclusive_sum` keeps them, so the samples kept are those its mask keeps.

    fixed = occupancy.march_fixed(origins, dirs, capacity=slots.march)
    trained = compact_in_front(fixed, density, EARLY_STOP_TRANSMITTANCE, slots.train)  # density without gradient
"""

from functools import cache
from typing import no_type_check

import torch  # no `from __future__ import annotations`: Warp reads the kernels' annotations, which name closure types
import warp as wp
from torch import Tensor

from .. import kernels
from ..checks import check_count, check_shape
from .compositing import TAU_OPAQUE
from .samples import PackedSamples, SlotSamples

__all__ = ["compact_in_front"]


@cache
def _kernels(scalar: type) -> tuple[wp.Kernel, wp.Kernel]:
    """The counting and the compacting kernel for samples of ``scalar`` (wp.float32 or wp.float64)."""
    tau_opaque = scalar(TAU_OPAQUE)

    @no_type_check  # Warp parameter types are not Python type hints; keep the jaxtyping checker off them.
    @wp.kernel(module="unique", enable_backward=False)
    def count_in_front(
        t_start: wp.array(dtype=scalar),
        t_end: wp.array(dtype=scalar),
        density: wp.array(dtype=scalar),
        real: wp.array(dtype=wp.int64),  # [1]: the slots holding samples
        first: wp.array(dtype=wp.int64),  # each ray's first slot
        rays: int,
        threshold: scalar,
        ray: wp.array(dtype=wp.int64),
        fits: wp.array(dtype=wp.uint8),
        kept: wp.array(dtype=wp.int64),
    ):
        i = wp.tid()
        r = int(ray[i])
        end = int(real[0])
        if r + 1 < rays:
            end = wp.min(int(first[r + 1]), end)
        n = wp.int64(0)
        if fits[i] != wp.uint8(0):
            before = wp.float64(0.0)  # the ray's optical depth in front of the sample, summed in float64
            for s in range(int(first[r]), end):
                if wp.exp(-scalar(before)) < threshold:
                    break
                before += wp.float64(wp.min(density[s] * (t_end[s] - t_start[s]), tau_opaque))
                n += wp.int64(1)
        kept[i] = n

    @no_type_check
    @wp.kernel(module="unique", enable_backward=False)
    def compact(
        t_start: wp.array(dtype=scalar),
        t_end: wp.array(dtype=scalar),
        first: wp.array(dtype=wp.int64),
        through: wp.array(dtype=wp.int64),  # the rays' kept samples, summed through each ray
        fits: wp.array(dtype=wp.uint8),  # the rays whose kept samples fit the slots
        rays: int,
        far: wp.array(dtype=scalar),  # [1]: the far end of the last slot
        count: wp.array(dtype=wp.int64),  # [1]: the slots holding samples
        out_ray: wp.array(dtype=wp.int64),
        out_start: wp.array(dtype=scalar),
        out_end: wp.array(dtype=scalar),
        out_mid: wp.array(dtype=scalar),  # (t_start + t_end) / 2, as PackedSamples.t_mid makes it
        source: wp.array(dtype=wp.int64),
        out_first: wp.array(dtype=wp.int64),  # the slot of each sample's ray's first, as PackedSamples.ray_first
        slot: wp.array(dtype=wp.int64),
    ):
        i = wp.tid()
        j = slot[i]
        # The first ray whose running count passes j: the ray that holds slot j, if it fits.
        lo = int(0)
        hi = rays
        while lo < hi:
            mid = (lo + hi) // 2
            if through[mid] > j:
                hi = mid
            else:
                lo = mid + 1
        if lo < rays and fits[lo] != wp.uint8(0):
            before = wp.int64(0)  # the slots of the rays before it
            if lo > 0:
                before = through[lo - 1]
            s = first[lo] + j - before
            out_ray[i] = wp.int64(lo)
            out_start[i] = t_start[s]
            out_end[i] = t_end[s]
            out_mid[i] = (t_start[s] + t_end[s]) / scalar(2.0)
            source[i] = s
            out_first[i] = before
        else:  # padding: a zero-length interval at the far end of the last ray, reading the first slot
            out_ray[i] = wp.int64(rays - 1)
            out_start[i] = far[0]
            out_end[i] = far[0]
            out_mid[i] = far[0]
            source[i] = wp.int64(0)
            # The last ray's first slot where it holds samples (the fitting rays' fill the slots in order), else
            # the first padding slot.
            last_before = wp.int64(0)
            if rays > 1:
                last_before = through[rays - 2]
            out_first[i] = count[0]
            if fits[rays - 1] != wp.uint8(0) and through[rays - 1] > last_before:
                out_first[i] = last_before

    return count_in_front, compact


def compact_in_front(fixed: SlotSamples, density: Tensor, early_stop: float, slots: int) -> SlotSamples:
    """The samples of ``fixed`` whose transmittance (``exp`` of minus the optical depth ``density · (t_end -
    t_start)``, each clamped to ``TAU_OPAQUE``, of the samples before them on their ray) is at least ``early_stop``,
    in order, into ``slots`` slots: ``fixed.compact(transmittance(...) >= early_stop, slots)`` in two launches. A ray
    keeps its samples if they all fit after those of the rays before it, else it has none and stops fitting;
    ``source`` says which of ``fixed``'s slots each came from. ``density`` carries no gradient (it decides, it is not
    trained)."""
    slots = check_count("slots", slots, 1)
    s, device = fixed.samples, fixed.count.device
    check_shape("density", density, [fixed.slots], device)
    if not 0 < early_stop < 1:
        raise ValueError(f"early_stop: expected a transmittance in (0, 1), got {early_stop!r}")
    scalar = kernels.WARP_SCALARS.get(s.t_start.dtype)
    if scalar is None:
        raise TypeError(f"fixed: expected float32 or float64 samples, got {s.t_start.dtype}")
    count_in_front, compact = _kernels(scalar)
    rays = s.num_rays
    first, ray = s.first(), kernels.row_numbers(rays, device)
    real = fixed.count.reshape(1).to(torch.long)
    fits = fixed.fits.view(torch.uint8)
    kept = torch.empty(rays, dtype=torch.long, device=device)
    shared = [s.t_start, s.t_end, density.detach().to(s.t_start.dtype).contiguous(), real, first, rays, float(early_stop)]
    kernels.launch_rows(count_in_front, rays, shared, [ray, fits, kept], device)
    through = torch.cumsum(kept, 0)
    fitting = fixed.fits & ((through <= slots) | (kept == 0))  # a ray with nothing to train fits anywhere
    count = (kept * fitting).sum()  # the fitting rays' samples
    out_ray = torch.empty(slots, dtype=torch.long, device=device)
    out_start, out_end, out_mid = (s.t_start.new_empty(slots) for _ in range(3))
    source, out_first = (torch.empty(slots, dtype=torch.long, device=device) for _ in range(2))
    far = s.t_end[-1:]  # the far end of the last slot: padding stays behind every sample of the last ray
    shared = [s.t_start, s.t_end, first, through, fitting.view(torch.uint8), rays, far, count.reshape(1)]
    outputs = [out_ray, out_start, out_end, out_mid, source, out_first, kernels.row_numbers(slots, device)]
    kernels.launch_rows(compact, slots, shared, outputs, device)
    # The midpoints and the rays' first slots written on the way (the compositor reads them): not the add and the
    # division, nor the binary search and the gather, that would make them.
    samples = PackedSamples._trusted(out_ray, out_start, out_end, rays, t_mid=out_mid, ray_first=out_first)
    return SlotSamples(samples, count, through[-1], fitting, source)
