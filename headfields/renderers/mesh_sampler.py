"""Mesh-guided sampling: keep the samples near the frame's posed mesh (INSTA samples only around FLAME).

The test runs in Warp on the frame's BVH (:func:`~headfields.geometry.within_distance`): a sample stops at the first
face within ``max_distance``, and a far one at the first bounding boxes out of reach. A whole image of one frame
classifies an occupancy grid's cells first (:func:`shell_cells`, one test a cell): the march skips the cells out of
the shell's reach (a stratified sampler's samples there are dropped), and only the samples in cells across its edge
need the test of their own: the march and the strata label each sample with its cell's keep-or-test where they place
it (:attr:`ShellCells.labels`, :func:`labelled_near_mesh`), so no second pass over the samples places them again.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import no_type_check

import torch
import warp as wp
from jaxtyping import Bool, Float, Int, UInt8
from torch import Tensor

from .. import kernels as _warp
from ..checks import IntLike, check_count
from ..geometry import TriangleMesh, within_distance
from .march_kernels import grid_cell
from .occupancy import OccupancyGrid
from .samples import PackedSamples

__all__ = [
    "CPU_SHELL",
    "ShellCells",
    "labelled_near_mesh",
    "mesh_guided_filter",
    "near_mesh",
    "shell_cells",
    "stratified_shell_samples",
]

# metres: the mesh shell of every CPU recipe (cpu_config). It skips samples far from the tracked mesh for speed,
# and with them detail off the template (benchmarks/ablations/hair.py measures the cost); the paper recipes have none.
CPU_SHELL = 0.03
# A cell's points lie within its half diagonal of its centre; the bound is widened by this share of it so that a
# point's cell computed in float32 (the march's, shell_cells') never falls on the wrong side of it.
CELL_MARGIN = 1e-3


# A sample's cell as ShellCells.labels labels it: dropped (out of the shell's reach), kept (wholly within it), tested.
_DROP, _KEEP, _TEST = 0, 1, 2


@dataclass(frozen=True)
class ShellCells:
    """An occupancy grid's cells against the shell ``max_distance`` around frame ``frame`` of a mesh: ``reach``
    the cells (among those classified) some point of which may lie within it, ``inside`` those every point of
    which does. Points are placed in cells as :meth:`OccupancyGrid.occupied` places them."""

    frame: int
    reach: Bool[Tensor, "X Y Z"]
    inside: Bool[Tensor, "X Y Z"]
    low: Float[Tensor, " 3"]  # the grid's low corner
    scale: Float[Tensor, " 3"]  # its cells per unit

    @property
    def labels(self) -> UInt8[Tensor, "X Y Z"]:
        """Each cell as a sample there fares: dropped (0, out of reach), kept (1, wholly within), tested (2)."""
        return self.inside.to(torch.uint8) + _TEST * (self.reach & ~self.inside).to(torch.uint8)

    def contains(self, points: Float[Tensor, "N 3"]) -> Bool[Tensor, " N"]:
        """Whether each point lies in a cell wholly within the shell (points outside the grid do not)."""
        return self.classify(points)[0]

    def classify(self, points: Float[Tensor, "N 3"]) -> tuple[Bool[Tensor, " N"], Bool[Tensor, " N"]]:
        """Whether each point lies in a cell wholly within the shell, and whether it may lie within it otherwise (in a
        cell across its edge, or outside the grid): the points neither are out of its reach."""
        res = torch.tensor(self.inside.shape, device=points.device)
        c = torch.floor((points.float() - self.low) * self.scale).long()
        in_grid = ((c >= 0) & (c < res)).all(dim=-1)
        c = torch.minimum(c.clamp(min=0), res - 1)
        inside = in_grid & self.inside[c[:, 0], c[:, 1], c[:, 2]]
        return inside, ~inside & (~in_grid | self.reach[c[:, 0], c[:, 1], c[:, 2]])


@no_type_check
@wp.func
def _cell_status(status: wp.array(dtype=wp.uint8), res: wp.vec3i, lo: wp.vec3, scale: wp.vec3, p: wp.vec3) -> int:
    """:meth:`ShellCells.classify` of one point: outside the grid it is tested."""
    cell = grid_cell(res, lo, scale, p)
    if cell < 0:
        return _TEST
    return int(status[cell])


@no_type_check
@wp.func
def _bin_point(o: wp.vec3, d: wp.vec3, near: float, far: float, n: int, b: int) -> wp.vec3:
    return o + (near + (float(b) + 0.5) * ((far - near) / float(n))) * d


@no_type_check
@wp.kernel
def _count_kernel(
    status: wp.array(dtype=wp.uint8),
    res: wp.vec3i,
    lo: wp.vec3,
    scale: wp.vec3,
    n: int,
    origins: wp.array(dtype=wp.vec3),
    dirs: wp.array(dtype=wp.vec3),
    near: wp.array(dtype=wp.float32),
    far: wp.array(dtype=wp.float32),
    count: wp.array(dtype=wp.int32),
):
    i = wp.tid()
    kept = int(0)
    if far[i] > near[i]:
        for b in range(n):
            if _cell_status(status, res, lo, scale, _bin_point(origins[i], dirs[i], near[i], far[i], n, b)) != _DROP:
                kept += 1
    count[i] = kept


@no_type_check
@wp.kernel
def _write_kernel(
    status: wp.array(dtype=wp.uint8),
    res: wp.vec3i,
    lo: wp.vec3,
    scale: wp.vec3,
    n: int,
    out_ray: wp.array(dtype=wp.int64),
    out_bin: wp.array(dtype=wp.int32),
    out_label: wp.array(dtype=wp.uint8),
    origins: wp.array(dtype=wp.vec3),
    dirs: wp.array(dtype=wp.vec3),
    near: wp.array(dtype=wp.float32),
    far: wp.array(dtype=wp.float32),
    ray: wp.array(dtype=wp.int64),
    start: wp.array(dtype=wp.int64),
):
    i = wp.tid()
    if far[i] <= near[i]:
        return
    s = start[i]
    for b in range(n):
        cell = _cell_status(status, res, lo, scale, _bin_point(origins[i], dirs[i], near[i], far[i], n, b))
        if cell != _DROP:
            out_ray[s] = ray[i]
            out_bin[s] = b
            out_label[s] = wp.uint8(cell)
            s += wp.int64(1)


def stratified_shell_samples(
    origins: Float[Tensor, "R 3"],
    dirs: Float[Tensor, "R 3"],
    near: Float[Tensor, " R"],
    far: Float[Tensor, " R"],
    num_samples: int,
    mesh: TriangleMesh,
    max_distance: float,
    shell: ShellCells,
) -> PackedSamples:
    """``mesh_guided_filter(stratified_samples((origins, dirs), near, far, num_samples), ...)`` without a generator
    (the bins' centres), for rays of ``shell``'s one frame: the same samples, the same bits, without making the
    ones out of the shell's reach. A Warp kernel places each bin's centre in a cell of ``shell`` and keeps the bins
    in reach (a sample whose cell it misjudges by a rounding lies within the cell margin of ``shell_cells``, so the
    test decides it alike); torch computes the kept bins' intervals with ``stratified_samples``' own operations,
    and only those in cells across the shell's edge are tested against the mesh."""
    r, device, dtype = origins.shape[0], origins.device, near.dtype
    n = check_count("num_samples", num_samples, 1)
    shape, low, scale = wp.vec3i(*shell.inside.shape), wp.vec3(*shell.low.tolist()), wp.vec3(*shell.scale.tolist())
    grid = [shell.labels.flatten(), shape, low, scale, n]
    per_ray = [t.detach().to(torch.float32).contiguous() for t in (origins, dirs, near, far)]
    count = torch.empty(r, dtype=torch.int32, device=device)
    _warp.launch_rows(_count_kernel, r, grid, [*per_ray, count], device)
    end = torch.cumsum(count, 0)
    total = int(end[-1]) if r else 0
    ray = torch.empty(total, dtype=torch.long, device=device)
    index = torch.empty(total, dtype=torch.int32, device=device)
    labels = torch.empty(total, dtype=torch.uint8, device=device)
    rays = torch.arange(r, device=device)
    _warp.launch_rows(_write_kernel, r, [*grid, ray, index, labels], [*per_ray, rays, end - count], device)
    # stratified_points' and stratified_samples' operations on the kept bins alone (elementwise: the same bits): bin
    # b's centre, and its edges midway to its neighbours'.
    bins = index.to(dtype)
    near_r, far_r = near[ray], far[ray]
    width = (far_r - near_r) / n

    def centre(offset: float) -> Tensor:
        return near_r + ((bins + offset) + 0.5) * width

    here = centre(0.0)
    t_start = torch.where(index == 0, near_r, (here + centre(-1.0)) / 2)
    t_end = torch.where(index == n - 1, far_r, (centre(1.0) + here) / 2)
    samples = PackedSamples._trusted(ray, t_start, t_end, r)
    return samples.select(labelled_near_mesh(samples, labels, origins, dirs, mesh, shell.frame, max_distance))


def labelled_near_mesh(
    samples: PackedSamples,
    labels: UInt8[Tensor, " S"],
    origins: Float[Tensor, "R 3"],
    dirs: Float[Tensor, "R 3"],
    mesh: TriangleMesh,
    frame: IntLike,
    max_distance: float,
) -> Bool[Tensor, " S"]:
    """:func:`near_mesh` of samples in cells of one frame's shell, each with its cell's label
    (:attr:`ShellCells.labels`, placed by whoever made the sample: the march, the strata): those in cells wholly
    within the shell are kept and only those in cells across its edge tested against the mesh."""
    keep = labels == _KEEP
    tested = torch.nonzero(labels == _TEST).squeeze(1)
    r = samples.num_rays
    points = PackedSamples._trusted(samples.ray[tested], samples.t_start[tested], samples.t_end[tested], r)
    points = points.midpoints(origins, dirs).detach()
    keep[tested] = within_distance(mesh, points, max_distance, torch.full_like(tested, int(frame)))
    return keep


def shell_cells(
    grid: OccupancyGrid, mesh: TriangleMesh, frame: IntLike, max_distance: float, cells: Bool[Tensor, "X Y Z"] | None = None
) -> ShellCells:
    """``cells`` of ``grid`` (None: its occupied ones) classified against the shell ``max_distance`` around frame
    ``frame`` of ``mesh``: two tests of each cell's centre, at ``max_distance`` plus and minus its half diagonal
    (the distance to a mesh changes no faster than the point moves). Cells not classified are out of reach."""
    frame = check_count("frame", frame, 0, mesh.num_frames - 1)
    cells = grid.binary if cells is None else cells
    ijk = torch.nonzero(cells)
    centres = grid.aabb[0] + (ijk + 0.5) * grid.cell_size
    half = 0.5 * float(grid.cell_size.norm()) * (1 + CELL_MARGIN)
    reach, inside = torch.zeros_like(cells), torch.zeros_like(cells)
    if len(ijk):
        index = tuple(ijk.t())
        reach[index] = within_distance(mesh, centres, max_distance + half, frame)
        if max_distance > half:
            inside[index] = within_distance(mesh, centres, max_distance - half, frame)
    return ShellCells(frame, reach, inside, grid.aabb[0].clone(), grid._scale)


def mesh_guided_filter(
    samples: PackedSamples,
    origins: Float[Tensor, "R 3"],
    dirs: Float[Tensor, "R 3"],
    mesh: TriangleMesh,
    frame: Int[Tensor, " R"] | IntLike | None,
    max_distance: float,
    shell: ShellCells | None = None,
) -> PackedSamples:
    """The samples whose midpoint lies within ``max_distance`` of frame ``frame[ray]`` of ``mesh``
    (``max_distance`` is checked by :func:`~headfields.geometry.within_distance`; ``shell``: :func:`near_mesh`'s)."""
    return samples.select(near_mesh(samples, origins, dirs, mesh, frame, max_distance, shell))


def near_mesh(
    samples: PackedSamples,
    origins: Float[Tensor, "R 3"],
    dirs: Float[Tensor, "R 3"],
    mesh: TriangleMesh,
    frame: Int[Tensor, " R"] | IntLike | None,
    max_distance: float,
    shell: ShellCells | None = None,
) -> Bool[Tensor, " S"]:
    """Which samples :func:`mesh_guided_filter` keeps (for samples in fixed slots, which compact instead). With
    ``shell`` (:func:`shell_cells` of the rays' one frame and ``max_distance``) the samples in cells wholly within
    it are kept and those in cells out of its reach dropped, untested."""
    frame = mesh.frame_index(frame, samples.num_rays)[samples.ray]
    points = samples.midpoints(origins, dirs).detach()
    if shell is None:  # any face within reach answers: no search for the closest one (within_distance)
        return within_distance(mesh, points, max_distance, frame)
    keep, maybe = shell.classify(points)
    test = torch.nonzero(maybe).squeeze(1)
    keep[test] = within_distance(mesh, points[test], max_distance, frame[test])
    return keep
