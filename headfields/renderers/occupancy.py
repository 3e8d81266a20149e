"""Occupancy grid over a world box and ray marching through it (Warp, CPU and CUDA from one source).

The grid keeps a decaying maximum of the density seen in each cell (INSTA / Instant-NGP:
``grid = max(decay * grid, new)``) and a bitfield of the cells above a threshold. Marching steps along each
ray with ``dt = clamp(t * cone_angle, step_size, max_step)`` and emits a packed sample only where the step's
midpoint lies in an occupied cell: a first Warp pass counts each ray's samples, a prefix sum gives offsets,
and a second pass writes them.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import warp as wp
from jaxtyping import Bool, Float, UInt8
from torch import Tensor, nn

from .. import kernels as _warp
from ..checks import IntLike, check_count, check_float, check_nonzero_rows, check_positive, check_shape, validation
from .march_kernels import count_kernel, write_kernel
from .samples import PackedSamples, SlotSamples, _check_aabb, per_ray

RESOLUTION = 128  # instant-ngp / INSTA: NERF_GRIDSIZE() = 128 (nerf.h), one grid over its unit cube
# instant-ngp's step (testbed_nerf.cu, calc_dt): dt = clamp(t * cone_angle, sqrt(3)/1024, max) in its unit cube,
# i.e. NERF_STEPS() = 1024 steps across the cube's diagonal at least; scaled here by the largest side of the box.
# Its cone angle is 1/256 for scenes larger than the unit cube and 0 (constant steps) for aabb_scale <= 1
# (load_nerf_post), which is INSTA's: its box is the unit cube (a 1 m cube around the tracking frame's origin).
CONE_ANGLE = 1 / 256  # the default here: steps that grow with distance (instant-ngp's large scenes)
INSTA_CONE_ANGLE = 0.0
MIN_STEP = math.sqrt(3) / 1024
# The largest cone step: one cell diagonal of a 128^3 grid (instant-ngp's cap is the cell of its coarsest
# cascade; one grid here).
MAX_STEP = math.sqrt(3) / 128
MAX_SAMPLES_PER_RAY = 1024  # instant-ngp / INSTA: NERF_STEPS() = 1024 steps a training ray at most
# point_to_density_flame (INSTA's src/core.cu) would mark the cells within 3 cm of the canonical FLAME mesh (1.5 cm
# behind its surface) occupied, but its only caller, update_density_grid_flame, is commented out in INSTA's
# training_prep_nerf: INSTA's grid holds the network's density alone, as OccupancyGrid.update does.
# instant-ngp's refresh schedule (testbed_nerf.cu, training_prep_nerf): every cell until step 256, then a quarter of
# the cells' count drawn uniformly plus a quarter drawn among the occupied cells.
GRID_WARMUP_STEPS = 256
GRID_UNIFORM_FRACTION = GRID_OCCUPIED_FRACTION = 0.25
UPDATE_CHUNK = 1 << 18  # cells evaluated per density_fn call during an update (bounds its memory)


def _own_copy(x: Tensor, source: Tensor | float) -> Tensor:
    """``x``, cloned where it is still the caller's ``source`` (a kernel is about to write into it)."""
    return x.clone() if isinstance(source, Tensor) and x.data_ptr() == source.data_ptr() else x


def _check_cone_angle(value: float) -> float:
    if isinstance(value, bool) or not (isinstance(value, int | float) and math.isfinite(value) and value >= 0):
        raise ValueError(f"cone_angle: expected a finite non-negative number, got {value!r}")
    return float(value)


def _resolution(value: IntLike | Sequence[IntLike]) -> tuple[int, int, int]:
    if isinstance(value, Sequence):
        if len(value) != 3:
            raise ValueError(f"resolution: expected an integer or 3 integers, got {value!r}")
        return tuple(check_count("resolution", v, 1) for v in value)  # type: ignore[return-value]
    r = check_count("resolution", value, 1)
    return (r, r, r)


@dataclass(frozen=True)
class _Box:
    low: list[float]
    high: list[float]
    scale: list[float]  # cells per unit on each axis
    side: float  # the largest side


@dataclass
class _MarchRays:
    """What both marching passes read: the kernels' shared arguments and the rays' float32 copies (their bounds
    clipped to the box by the count pass)."""

    shared: list
    origins: Tensor
    dirs: Tensor
    near: Tensor
    far: Tensor  # (the count pass clips both to the box; without ``has_far`` the far bound is the box's alone)
    dtype: torch.dtype  # the caller's: the samples' t comes back in it
    has_far: bool

    @property
    def count(self) -> int:
        return self.origins.shape[0]

    @property
    def per_ray(self) -> list[Tensor]:
        return [self.origins, self.dirs, self.near, self.far]


class OccupancyGrid(nn.Module):
    """A grid of cells over the world box ``aabb = [min corner, max corner]``, all occupied at first.

    Buffers (saved in the state dict): ``aabb``, ``occupancy`` (float ``[X,Y,Z]``, the decayed maximum of
    the density seen per cell, 0 at first) and ``binary`` (bool ``[X,Y,Z]``, the cells marching visits).
    ``cone_angle`` is :meth:`march`'s default step growth (``CONE_ANGLE``; ``INSTA_CONE_ANGLE``, 0, gives the
    constant steps INSTA marches with).

        grid = OccupancyGrid(box, 128, cone_angle=INSTA_CONE_ANGLE)
        samples = grid.march(origins, dirs, step_size=diagonal / 1024)
    """

    aabb: Tensor
    occupancy: Tensor
    cells_per_axis: Tensor
    binary: Tensor

    def __init__(
        self,
        aabb: Float[Tensor, "2 3"],
        resolution: IntLike | Sequence[IntLike] = RESOLUTION,
        cone_angle: float = CONE_ANGLE,
    ):
        super().__init__()
        _check_aabb("aabb", aabb)
        res = _resolution(resolution)
        self.cone_angle = _check_cone_angle(cone_angle)
        self.register_buffer("aabb", aabb.detach().float().clone())
        self.register_buffer("occupancy", torch.zeros(res, device=aabb.device))
        self.register_buffer("binary", torch.ones(res, dtype=torch.bool, device=aabb.device))
        # The resolution as a constant on the device: a step's arithmetic copies nothing from the host.
        self.register_buffer("cells_per_axis", torch.tensor(res, device=aabb.device), persistent=False)
        self._cache_box()
        # A loaded state dict may bring another box: the host copy follows it.
        self.register_load_state_dict_post_hook(lambda module, keys: module._cache_box())

    def _cache_box(self) -> None:
        """What marching needs of the box as Python numbers, read once (then marching reads nothing back from the
        device, a host synchronisation on CUDA): its low corner, cells per unit (the float32 values ``occupied``
        computes) and its largest side."""
        low, high = self.aabb.tolist()
        self._box = _Box(low, high, self._scale.tolist(), float((self.aabb[1] - self.aabb[0]).max()))

    @property
    def resolution(self) -> tuple[int, int, int]:
        return tuple(self.binary.shape)  # type: ignore[return-value]

    @property
    def cell_size(self) -> Float[Tensor, " 3"]:
        return (self.aabb[1] - self.aabb[0]) / self.cells_per_axis

    @property
    def _scale(self) -> Tensor:
        """Cells per world unit on each axis (marching and ``occupied`` share this float32 arithmetic)."""
        return self.cells_per_axis / (self.aabb[1] - self.aabb[0])

    def mark_all(self) -> None:
        """Mark every cell occupied (the occupancy values are kept; the next ``update`` re-thresholds them)."""
        self.binary.fill_(True)

    def _cell_of(self, points: Tensor) -> tuple[Tensor, Tensor]:
        """Integer cell of each point ``[N,3]`` and whether it lies inside the grid."""
        res = self.cells_per_axis
        c = torch.floor((points.float() - self.aabb[0]) * self._scale).long()
        inside = ((c >= 0) & (c < res)).all(dim=-1)
        return c.clamp(min=torch.zeros_like(res), max=res - 1), inside

    def occupied(self, points: Float[Tensor, "N 3"]) -> Bool[Tensor, " N"]:
        """Whether each point lies in an occupied cell (points outside the box never do)."""
        check_float("points", points, [None, 3], device=self.aabb.device)
        c, inside = self._cell_of(points)
        return inside & self.binary[c[:, 0], c[:, 1], c[:, 2]]

    @torch.no_grad()
    def update(
        self,
        density_fn: Callable[[Tensor], Tensor],
        decay: float = 0.95,
        threshold: float = 0.01,
        num_cells: IntLike | None = None,
        generator: torch.Generator | None = None,
        cap_at_mean: bool = False,
        num_occupied: IntLike = 0,
    ) -> None:
        """Evaluate ``density_fn`` (world points ``[M,3]`` -> densities ``[M]``) at one random point inside each
        of ``num_cells`` distinct random cells (all cells when None) and of ``num_occupied`` random cells drawn
        (with repeats) among those whose occupancy is above ``threshold`` (uniformly over all cells when none is);
        every cell's occupancy decays by ``decay`` and takes the maximum with the densities found in it. The
        bitfield is then ``occupancy > threshold`` everywhere. This is instant-ngp's update
        (``update_density_grid_nerf``: uniform and "non-uniform" samples, ``ema_grid_samples_nerf``'s decayed maximum).

        With ``cap_at_mean`` the threshold is ``min(threshold, mean occupancy)`` (instant-ngp's rule), so a
        young field whose values are all still small keeps its densest cells instead of being pruned away.

        Randomness comes from ``generator`` (torch's global generator of the grid's device when None); one on the
        grid's device copies nothing from the host. For a moving head,
        ``density_fn`` warps the points with a random training frame, so the grid holds the union over frames.
        """
        if not callable(density_fn):
            raise TypeError(f"density_fn: expected a callable, got {type(density_fn).__name__}")
        if not (isinstance(decay, (int, float)) and 0 <= decay <= 1):
            raise ValueError(f"decay: expected a number in [0, 1], got {decay!r}")
        if not (isinstance(threshold, (int, float)) and math.isfinite(threshold)):
            raise ValueError(f"threshold: expected a finite number, got {threshold!r}")
        total = self.binary.numel()
        num_occupied = check_count("num_occupied", num_occupied, 0)
        rng_device = generator.device if generator is not None else self.aabb.device
        flat = self.occupancy.view(-1)
        if num_cells is None:
            cells = torch.arange(total, device=self.aabb.device)
        else:
            m = check_count("num_cells", num_cells, 1, total)
            cells = torch.randperm(total, generator=generator, device=rng_device)[:m].to(self.aabb.device)
        if num_occupied:  # by the inverse of the occupied cells' cumulative count: no read-back of how many there are
            count = torch.cumsum(flat > threshold, 0)
            u = torch.rand(num_occupied, generator=generator, device=rng_device).to(flat.device)
            kth = torch.minimum((u * count[-1]).long() + 1, count[-1])  # (float32 rounding can reach count + 1)
            pick = torch.searchsorted(count, kth).clamp(max=total - 1)  # the k-th occupied cell
            # with no occupied cell, uniform cells instead (each still a real cell's sample)
            cells = torch.cat([cells, torch.where(count[-1] > 0, pick, (u * total).long().clamp(max=total - 1))])
        _, ry, rz = self.resolution  # torch.unravel_index's arithmetic, its shape not copied to the device
        ijk = torch.stack([cells // (ry * rz), cells // rz % ry, cells % rz], dim=-1)
        u = torch.rand(cells.shape[0], 3, generator=generator, device=rng_device).to(self.aabb.device)
        points = self.aabb[0] + (ijk + u) * self.cell_size
        density = []
        for chunk in points.split(UPDATE_CHUNK):
            d = density_fn(chunk)
            check_float("density_fn", d, [chunk.shape[0]], device=self.aabb.device)
            density.append(d.float())
        flat.mul_(decay).scatter_reduce_(0, cells, torch.cat(density), reduce="amax")  # a cell drawn twice: the larger
        level = self.occupancy.mean().clamp(max=threshold) if cap_at_mean else threshold  # a tensor: no read-back
        self.binary.copy_(self.occupancy > level)

    def march(
        self,
        origins: Float[Tensor, "R 3"],
        dirs: Float[Tensor, "R 3"],
        near: Float[Tensor, " R"] | float = 0.0,
        far: Float[Tensor, " R"] | float | None = None,
        step_size: float | None = None,
        cone_angle: float | None = None,
        max_step: float | None = None,
        max_samples_per_ray: IntLike = MAX_SAMPLES_PER_RAY,
        validate: bool = True,
        cells: Bool[Tensor, "X Y Z"] | None = None,
    ) -> PackedSamples:
        """Step along each ray from ``max(near, box entry)`` to ``min(far, box exit)`` (``far`` None: the exit) with
        ``dt = clamp(t * cone_angle, step_size, max_step)`` (the last step is cut at the exit) and emit the
        steps whose midpoint lies in an occupied cell, at most ``max_samples_per_ray`` a ray.

        ``step_size`` and ``max_step`` default to instant-ngp's ``sqrt(3)/1024`` and one 128^3 cell diagonal,
        ``sqrt(3)/128``, times the largest side of the box (``max_step`` at least ``step_size``); ``cone_angle``
        defaults to the grid's (``cone_angle = 0`` gives constant steps). ``t`` is in units of ``dirs`` (unit
        vectors, so world units). The Warp kernels run in float32; ``t`` comes back in ``origins``'s dtype.
        ``validate=False`` skips the checks of the rays' values (the caller guarantees them). ``cells`` (bool, the
        grid's shape) marks the cells to visit instead of the occupied ones (e.g. ``binary`` and a mask of one's own).

        The number of samples is known only after the count pass (one host synchronisation on CUDA); for a fixed
        number of slots, see :meth:`march_fixed`.
        """
        if cells is not None:
            check_shape("cells", cells, list(self.resolution), device=self.aabb.device)
            if cells.dtype != torch.bool:
                raise TypeError(f"cells: expected a bool tensor, got {cells.dtype}")
        with validation(validate):
            rays = self._rays(origins, dirs, near, far, step_size, cone_angle, max_step, max_samples_per_ray, cells)
        return self._packed(rays, False)[0]

    def march_labelled(
        self,
        origins: Float[Tensor, "R 3"],
        dirs: Float[Tensor, "R 3"],
        labels: UInt8[Tensor, "X Y Z"],
        step_size: float | None = None,
        validate: bool = True,
    ) -> tuple[PackedSamples, UInt8[Tensor, " S"]]:
        """:meth:`march` through the cells of a nonzero label instead of the occupied ones, each sample with the label
        of its cell, read where the march reads whether to emit it (no second pass placing the samples in cells:
        the shell's keep-or-test, :attr:`~headfields.renderers.mesh_sampler.ShellCells.labels`)."""
        check_shape("labels", labels, list(self.resolution), device=self.aabb.device)
        if labels.dtype != torch.uint8:
            raise TypeError(f"labels: expected a uint8 tensor, got {labels.dtype}")
        with validation(validate):
            rays = self._rays(origins, dirs, 0.0, None, step_size, None, None, MAX_SAMPLES_PER_RAY, labels)
        return self._packed(rays, True)

    def _packed(self, rays: _MarchRays, labelled: bool) -> tuple[PackedSamples, Tensor | None]:
        """Both passes of a march with as many slots as samples (the count read back), and with ``labelled`` each
        sample's value in the cells marched."""
        count = self._count(rays)
        end = torch.cumsum(count, dim=0)
        total = int(end[-1]) if rays.count > 0 else 0
        labels = torch.empty(total, dtype=torch.uint8, device=self.aabb.device) if labelled else None
        return self._write(rays, count, end, total, labels)[0], labels

    def march_fixed(
        self,
        origins: Float[Tensor, "R 3"],
        dirs: Float[Tensor, "R 3"],
        capacity: IntLike,
        near: Float[Tensor, " R"] | float = 0.0,
        far: Float[Tensor, " R"] | float | None = None,
        step_size: float | None = None,
        cone_angle: float | None = None,
        max_step: float | None = None,
        max_samples_per_ray: IntLike = MAX_SAMPLES_PER_RAY,
        validate: bool = True,
    ) -> SlotSamples:
        """:meth:`march` into exactly ``capacity`` slots, with no host synchronisation (``validate=False``, and
        ``step_size`` and ``max_step`` given or the box's defaults): shapes that do not depend on the grid's
        contents, so the march can be captured in a CUDA graph and replayed.

        The samples of :meth:`march` come first, then zero-length padding at the end of the last ray (weight 0 when
        composited). Rays whose samples run past the last slot do not fit (``fits`` False): the one that crosses it
        is cut there, the later ones have none (those without samples fit).
        """
        capacity = check_count("capacity", capacity, 1)
        with validation(validate):
            rays = self._rays(origins, dirs, near, far, step_size, cone_angle, max_step, max_samples_per_ray)
        if rays.count == 0:
            raise ValueError("origins: expected at least one ray for march_fixed's padding, got none")
        count = self._count(rays)
        end = torch.cumsum(count, dim=0)
        samples, fits = self._write(rays, count, end, capacity)
        return SlotSamples(samples, end[-1].clamp(max=capacity), end[-1], fits)

    def _rays(self, origins, dirs, near, far, step_size, cone_angle, max_step, max_samples_per_ray, cells=None) -> _MarchRays:
        """The rays' float32 copies clipped to the box, and the step parameters, checked; ``cells`` the cells to
        visit (None: the occupied ones)."""
        device = self.aabb.device
        cells = self.binary if cells is None else cells  # march's cells or march_labelled's labels, checked there
        check_float("origins", origins, [None, 3], device=device)
        r = origins.shape[0]
        check_float("dirs", dirs, [r, 3], device=device)
        check_nonzero_rows("dirs", dirs)
        near_t = per_ray("near", near, r, origins)
        far_t = None if far is None else per_ray("far", far, r, origins)
        side = self._box.side
        step_size = MIN_STEP * side if step_size is None else step_size
        max_step = max(MAX_STEP * side, step_size) if max_step is None else max_step
        for name, value in (("step_size", step_size), ("max_step", max_step)):
            if not (isinstance(value, (int, float)) and math.isfinite(value)):
                raise ValueError(f"{name}: expected a finite positive number, got {value!r}")
            check_positive(name, value)
        if max_step < step_size:
            raise ValueError(f"max_step: expected at least step_size ({step_size}), got {max_step}")
        cone_angle = self.cone_angle if cone_angle is None else _check_cone_angle(cone_angle)
        max_samples = check_count("max_samples_per_ray", max_samples_per_ray, 1, 2**31 - 1)

        # The rays are clipped to the box by the count pass (ray_aabb's slab test, in its kernel), which writes the
        # clipped bounds over these float32 copies for the write pass (never over the caller's tensors).
        near_t = _own_copy(near_t.detach().float(), near)
        far_t = torch.empty_like(near_t) if far_t is None else _own_copy(far_t.detach().float(), far)
        shared = [
            cells.contiguous().view(-1).view(torch.uint8),
            wp.vec3i(*self.resolution),
            wp.vec3(*self._box.low),
            wp.vec3(*self._box.scale),
            float(step_size),
            float(max_step),
            float(cone_angle),
            max_samples,
        ]
        return _MarchRays(
            shared=shared,
            origins=origins.detach().float().contiguous(),
            dirs=dirs.detach().float().contiguous(),
            near=near_t,
            far=far_t,
            dtype=origins.dtype,
            has_far=far is not None,
        )

    def _count(self, rays: _MarchRays) -> Tensor:
        """Each ray's samples, its bounds clipped to the box on the way (``rays.near`` and ``rays.far`` after)."""
        count = torch.empty(rays.count, dtype=torch.int32, device=self.aabb.device)  # the kernel writes every ray's
        box = [wp.vec3(*self._box.low), wp.vec3(*self._box.high), int(rays.has_far)]
        _warp.launch_rows(count_kernel, rays.count, [*rays.shared, *box], [*rays.per_ray, count], self.aabb.device)
        return count

    def _write(
        self, rays: _MarchRays, count: Tensor, end: Tensor, slots: int, labels: Tensor | None = None
    ) -> tuple[PackedSamples, Tensor]:
        """The samples into ``slots`` slots, and whether each ray's fit them (a ray without samples fits anywhere);
        slots past the rays' samples (march_fixed's) stay zero-length intervals at the far end of the last ray.
        ``labels`` (uint8 ``[slots]``): each sample's value in the cells marched, written there."""
        device, r = self.aabb.device, rays.count
        out_ray = torch.full((slots,), r - 1, dtype=torch.long, device=device)
        out_start, out_end, out_mid = rays.far[r - 1 :].expand(3, slots).contiguous()  # both ends, midpoints: one copy
        out_labels = torch.empty(0, dtype=torch.uint8, device=device) if labels is None else labels
        outputs = [wp.int64(slots), out_ray, out_start, out_end, out_mid, int(labels is not None), out_labels]
        ray_index, first = _warp.row_numbers(r, device), torch.empty(r, dtype=torch.long, device=device)
        fits = torch.empty(r, dtype=torch.bool, device=device)
        per_ray = [*rays.per_ray, ray_index, end, count, first, fits.view(torch.uint8)]
        _warp.launch_rows(write_kernel, r, [*rays.shared, *outputs], per_ray, device)
        # The kernel's float32 midpoints are those of float32 ends only (float64 ones are summed after the cast).
        mid = out_mid if rays.dtype == torch.float32 else None
        samples = PackedSamples._trusted(out_ray, out_start.to(rays.dtype), out_end.to(rays.dtype), r, t_mid=mid, first=first)
        return samples, fits
