"""Mesh-guided sampling: keep the samples near the frame's posed mesh (INSTA samples only around FLAME).

The test runs in Warp on the frame's BVH (:func:`~headfields.geometry.within_distance`): a sample stops at the first
face within ``max_distance``, and a far one at the first bounding boxes out of reach. A whole image of one frame
classifies an occupancy grid's cells first (:func:`shell_cells`, one test a cell): the march skips the cells out of
the shell's reach (a stratified sampler's samples there are dropped), and only the samples in cells across its edge
need the test of their own.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from ..checks import IntLike, check_count
from ..geometry import TriangleMesh, within_distance
from .occupancy import OccupancyGrid
from .samples import PackedSamples

__all__ = ["CPU_SHELL", "ShellCells", "mesh_guided_filter", "near_mesh", "shell_cells"]

# metres: the mesh shell of every CPU recipe (cpu_config). It skips samples far from the tracked mesh for speed,
# and with them detail off the template (benchmarks/hair.py measures the cost); the paper recipes have none.
CPU_SHELL = 0.03
# A cell's points lie within its half diagonal of its centre; the bound is widened by this share of it so that a
# point's cell computed in float32 (the march's, shell_cells') never falls on the wrong side of it.
CELL_MARGIN = 1e-3


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
