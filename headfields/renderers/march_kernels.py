"""The occupancy grid's Warp kernels (:class:`~headfields.renderers.OccupancyGrid`), CPU and CUDA from one source:
the cell of a point, the march's step, where a ray crosses the box, and the two passes of a march (each ray's samples
counted, then written at the offsets a prefix sum of the counts gives)."""

from typing import no_type_check

import warp as wp

__all__ = ["box_range", "count_kernel", "grid_cell", "march_step", "occupied", "write_kernel"]


@no_type_check
@wp.func
def box_range(o: wp.vec3, d: wp.vec3, lo: wp.vec3, hi: wp.vec3) -> wp.vec2:
    """Where the ray ``o + t d`` crosses the box ``[lo, hi]``, as ``(near, far)`` with ``near >= 0``, ``far <= near`` on
    a miss: :func:`~headfields.renderers.samples.ray_aabb`'s slab test in its float32 arithmetic (a zero direction's
    axis gives infinite slab distances, and an origin on a slab's plane 0 / 0 = NaN, which counts as inside)."""
    t_min = float(0.0)
    t_max = float(wp.inf)
    for axis in range(3):
        t0 = (lo[axis] - o[axis]) / d[axis]
        t1 = (hi[axis] - o[axis]) / d[axis]
        if wp.isnan(t0) or wp.isnan(t1):
            continue  # torch.minimum / maximum give NaN, then -inf / +inf: the axis constrains nothing
        t_min = wp.max(t_min, wp.min(t0, t1))
        t_max = wp.min(t_max, wp.max(t0, t1))
    return wp.vec2(t_min, t_max)


@no_type_check  # Warp parameter types are not Python type hints; keep the jaxtyping checker off them.
@wp.func
def grid_cell(res: wp.vec3i, lo: wp.vec3, scale: wp.vec3, p: wp.vec3) -> int:
    """The flat (C-order) index of the cell of a grid of ``res`` cells from ``lo`` (``scale`` cells a unit) that holds
    ``p``, or -1 outside the grid (as :meth:`OccupancyGrid.occupied` places points, in float32)."""
    c = wp.cw_mul(p - lo, scale)  # position in cells
    if c[0] < 0.0 or c[1] < 0.0 or c[2] < 0.0:
        return -1
    i = int(c[0])
    j = int(c[1])
    k = int(c[2])
    if i >= res[0] or j >= res[1] or k >= res[2]:
        return -1
    return (i * res[1] + j) * res[2] + k


@no_type_check
@wp.func
def occupied(bits: wp.array(dtype=wp.uint8), res: wp.vec3i, lo: wp.vec3, scale: wp.vec3, p: wp.vec3) -> bool:
    cell = grid_cell(res, lo, scale, p)
    if cell < 0:
        return False
    return bits[cell] != wp.uint8(0)


@no_type_check
@wp.func
def march_step(t: float, step_size: float, max_step: float, cone_angle: float) -> float:
    return wp.min(wp.max(t * cone_angle, step_size), max_step)


# Both passes walk the same steps in the same float32 arithmetic, so the write pass fills exactly the slots
# the count pass reserved. The midpoint is (t0 + t1) / 2, not t0 + dt / 2, which a compiler could fuse.


@no_type_check
@wp.kernel
def count_kernel(
    bits: wp.array(dtype=wp.uint8),
    res: wp.vec3i,
    lo: wp.vec3,
    scale: wp.vec3,
    step_size: float,
    max_step: float,
    cone_angle: float,
    max_samples: int,
    box_lo: wp.vec3,
    box_hi: wp.vec3,
    has_far: int,
    origins: wp.array(dtype=wp.vec3),
    dirs: wp.array(dtype=wp.vec3),
    near: wp.array(dtype=wp.float32),  # in: the caller's bounds (far: read with has_far); out: clipped to the box
    far: wp.array(dtype=wp.float32),
    count: wp.array(dtype=wp.int32),
):
    i = wp.tid()
    o = origins[i]
    d = dirs[i]
    span = box_range(o, d, box_lo, box_hi)
    hit = span[1] > span[0]  # a touch is a miss
    if not hit:
        span = wp.vec2(0.0, 0.0)
    t = wp.max(span[0], near[i])
    t_far = span[1]
    if has_far != 0:
        t_far = wp.min(t_far, far[i])
    if not hit:  # an empty range
        t_far = t
    near[i] = t
    far[i] = t_far
    n = int(0)
    while t < t_far and n < max_samples:
        t1 = wp.min(t + march_step(t, step_size, max_step, cone_angle), t_far)
        if t1 <= t:  # the step vanished in float32 (t far beyond step_size / 2^-24): stop
            break
        if occupied(bits, res, lo, scale, o + 0.5 * (t + t1) * d):
            n += 1
        t = t1
    count[i] = n


@no_type_check
@wp.kernel
def write_kernel(
    bits: wp.array(dtype=wp.uint8),
    res: wp.vec3i,
    lo: wp.vec3,
    scale: wp.vec3,
    step_size: float,
    max_step: float,
    cone_angle: float,
    max_samples: int,
    capacity: wp.int64,
    out_ray: wp.array(dtype=wp.int64),
    out_start: wp.array(dtype=wp.float32),
    out_end: wp.array(dtype=wp.float32),
    out_mid: wp.array(dtype=wp.float32),  # (t_start + t_end) / 2, as PackedSamples.t_mid makes it
    has_cells: int,
    out_cell: wp.array(dtype=wp.uint8),  # with has_cells: each sample's value in bits
    origins: wp.array(dtype=wp.vec3),
    dirs: wp.array(dtype=wp.vec3),
    near: wp.array(dtype=wp.float32),
    far: wp.array(dtype=wp.float32),
    ray: wp.array(dtype=wp.int64),
    end: wp.array(dtype=wp.int64),  # the rays' samples summed through each: this ray's start, plus its count
    count: wp.array(dtype=wp.int32),
    first: wp.array(dtype=wp.int64),  # out: the ray's first slot (the slots' end past the cut), as PackedSamples.first
    fits: wp.array(dtype=wp.uint8),  # out: whether the ray's samples all fit the slots (none fit anywhere)
):
    i = wp.tid()
    o = origins[i]
    d = dirs[i]
    t_far = far[i]
    t = float(near[i])
    n = int(0)
    s = end[i] - wp.int64(count[i])
    first[i] = wp.min(s, capacity)
    fits[i] = wp.uint8(0)
    if end[i] <= capacity or count[i] == 0:
        fits[i] = wp.uint8(1)
    while t < t_far and n < max_samples:
        t1 = wp.min(t + march_step(t, step_size, max_step, cone_angle), t_far)
        if t1 <= t:
            break
        cell = grid_cell(res, lo, scale, o + 0.5 * (t + t1) * d)
        if cell >= 0 and bits[cell] != wp.uint8(0):
            if s >= capacity:  # march_fixed's slots are full: the rest of this ray is cut
                break
            out_ray[s] = ray[i]
            out_start[s] = t
            out_end[s] = t1
            out_mid[s] = (t + t1) / 2.0
            if has_cells != 0:
                out_cell[s] = bits[cell]
            s += wp.int64(1)
            n += 1
        t = t1
