"""Triangle meshes from signed distance functions: a grid of SDF values, then marching cubes (skimage's Lewiner
et al. 2003), for inspecting and scoring SDF heads such as MonoNPHM's (Giebenhain et al. 2024)."""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable
from dataclasses import dataclass

import torch
from jaxtyping import Float, Int
from torch import Tensor

from ..checks import IntLike, check_count, check_float, check_memory
from .mesh import TriangleMesh
from .triangles import DEGENERATE_AREA_FRACTION, _face_cross

# A vertex closer than this fraction of a voxel edge to a grid point is moved onto it, so the slivers marching
# cubes makes there collapse into shared vertices instead of near-zero-area triangles (which TriangleMesh refuses).
SNAP_FRACTION = 1e-3


@dataclass
class IsoSurface:
    """The ``level`` set of an SDF: faces are counter-clockwise seen from where the SDF is above ``level``, so
    geometric normals point towards growing SDF (outwards for an SDF that is negative inside)."""

    vertices: Float[Tensor, "V 3"]  # world units, the dtype and device of the grid's bounds
    faces: Int[Tensor, "F 3"]

    def mesh(self) -> TriangleMesh:
        """The surface as a one-frame :class:`TriangleMesh` (for closest points, ray hits, surface samples)."""
        return TriangleMesh(self.vertices, self.faces)


def _resolution(resolution: object) -> tuple[int, int, int]:
    if isinstance(resolution, numbers.Integral) and not isinstance(resolution, bool):
        resolution = (resolution,) * 3
    if not isinstance(resolution, tuple | list) or len(resolution) != 3:
        raise TypeError(f"resolution: expected an integer or a tuple of 3 integers, got {resolution!r}")
    return tuple(check_count("resolution", r, 2) for r in resolution)  # type: ignore[return-value]


def _grid_values(sdf_fn: Callable[[Tensor], Tensor], lo: Tensor, step: Tensor, shape: tuple[int, int, int], chunk: int) -> Tensor:
    """SDF at every grid point, ``[rx, ry, rz]`` in the dtype and device of ``lo``; points are built chunk by chunk
    so a fine grid never holds all its coordinates at once."""
    rx, ry, rz = shape
    values = torch.empty(rx * ry * rz, dtype=lo.dtype, device=lo.device)
    strides = torch.tensor([ry * rz, rz, 1], device=lo.device)
    sizes = torch.tensor(shape, device=lo.device)
    for start in range(0, values.shape[0], chunk):
        index = torch.arange(start, min(start + chunk, values.shape[0]), device=lo.device)
        ijk = (index[:, None] // strides) % sizes
        points = lo + ijk.to(lo.dtype) * step
        out = sdf_fn(points)
        if not isinstance(out, Tensor) or out.shape not in ((len(index),), (len(index), 1)) or not out.is_floating_point():
            got = f"shape {list(out.shape)} {out.dtype}" if isinstance(out, Tensor) else type(out).__name__
            raise ValueError(f"sdf_fn: expected a float tensor [N] (or [N, 1]) for points [N, 3] with N={len(index)}, got {got}")
        out = out.reshape(-1).to(values)
        bad = ~torch.isfinite(out)
        if bad.any():
            where = points[int(bad.nonzero()[0, 0])].tolist()
            raise ValueError(f"sdf_fn: expected finite values, got NaN or Inf at point {where}")
        values[start : start + len(index)] = out
    return values.reshape(shape)


def _refine(voxel: Tensor, values: Tensor, level: float) -> Tensor:
    """Recompute each marching-cubes vertex (voxel units) as the linear interpolation along its grid edge in the
    grid's dtype (skimage works in float32)."""
    upper = torch.tensor(values.shape, device=voxel.device) - 1
    frac = (voxel - voxel.round()).abs()
    axis = frac.argmax(dim=1)  # a vertex lies on an edge along one axis: its one non-integer coordinate
    rows = torch.arange(len(voxel), device=voxel.device)
    start = voxel.round().long().clamp(min=0)
    start[rows, axis] = voxel[rows, axis].floor().long().clamp(max=upper[axis] - 1)
    end = start.clone()
    end[rows, axis] += 1
    v0, v1 = values[tuple(start.T)], values[tuple(end.T)]
    denom = v1 - v0
    t = torch.where(denom != 0, (level - v0) / torch.where(denom != 0, denom, 1), 0).clamp(0, 1)
    t = torch.where(t < SNAP_FRACTION, 0, torch.where(t > 1 - SNAP_FRACTION, 1, t))
    refined = start.to(values.dtype)
    refined[rows, axis] += t
    return refined


def _clean(vertices: Tensor, faces: Tensor) -> tuple[Tensor, Tensor]:
    """Merge vertices at the same position, drop the triangles that collapse, then those TriangleMesh would call
    degenerate (its float32 rule, with a margin; rare sub-voxel pinholes), then the vertices no triangle uses."""
    vertices, inverse = torch.unique(vertices, dim=0, return_inverse=True)
    faces = inverse[faces]
    faces = faces[(faces[:, 0] != faces[:, 1]) & (faces[:, 1] != faces[:, 2]) & (faces[:, 2] != faces[:, 0])]
    points = vertices.float()
    extent = points.amax(dim=0) - points.amin(dim=0)
    areas = 0.5 * torch.linalg.vector_norm(_face_cross(points, faces), dim=-1)
    faces = faces[areas > 2 * DEGENERATE_AREA_FRACTION * (extent**2).sum()]
    used, faces = torch.unique(faces, return_inverse=True)
    return vertices[used], faces


def extract_isosurface(
    sdf_fn: Callable[[Float[Tensor, "N 3"]], Float[Tensor, " N"]],
    bounds: Float[Tensor, "2 3"],
    resolution: IntLike | tuple[IntLike, IntLike, IntLike],
    level: float = 0.0,
    chunk: IntLike = 65536,
) -> IsoSurface:
    """The ``level`` set of ``sdf_fn`` on a grid spanning ``bounds`` (``[min corner, max corner]``, both included)
    with ``resolution`` points per axis (one integer or one per axis, at least 2).

    ``sdf_fn`` maps points ``[N, 3]`` (the dtype and device of ``bounds``, at most ``chunk`` at a time) to values
    ``[N]``; it runs under ``torch.no_grad``. The mesh is in world units on ``bounds``' dtype and device, faces
    oriented towards growing SDF, vertices on grid edges by linear interpolation (a vertex within
    ``SNAP_FRACTION`` of a voxel from a grid point moves onto it). A surface crossing the bounds is left open there.
    """
    from skimage.measure import marching_cubes  # imported here: only extraction needs scikit-image

    check_float("bounds", bounds, [2, 3])
    if not (bounds[0] < bounds[1]).all():
        raise ValueError(f"bounds: expected bounds[0] < bounds[1] on every axis (min corner, max corner), got {bounds.tolist()}")
    shape = _resolution(resolution)
    chunk = check_count("chunk", chunk, 1)
    if isinstance(level, bool) or not (isinstance(level, numbers.Real) and math.isfinite(level)):
        raise ValueError(f"level: expected a finite number, got {level!r}")
    level = float(level)

    # The grid's values on the device, a copy on the CPU and the float32 array marching cubes reads.
    points, itemsize = math.prod(shape), bounds.element_size()
    what = f"a grid of {' x '.join(map(str, shape))} points"
    check_memory("resolution", resolution, points * itemsize, bounds.device, what)
    host = points * (itemsize + 4) + (points * itemsize if bounds.device.type == "cpu" else 0)
    check_memory("resolution", resolution, host, "cpu", what)
    lo, hi = bounds[0].detach(), bounds[1].detach()
    step = (hi - lo) / (torch.tensor(shape, device=lo.device) - 1).to(lo.dtype)
    with torch.no_grad():
        values = _grid_values(sdf_fn, lo, step, shape, chunk)
    low, high = float(values.min()), float(values.max())
    if not low < level < high:
        raise ValueError(
            f"sdf_fn: expected values on both sides of level {level} on the grid, got values in [{low}, {high}]: "
            "no surface crosses it (widen bounds, refine resolution or change level)"
        )

    values = values.cpu()
    # skimage's 'descent' winds faces counter-clockwise seen from the side above level (checked in the tests).
    verts, faces, _, _ = marching_cubes(values.float().numpy(), level, gradient_direction="descent", allow_degenerate=True)
    voxel = _refine(torch.from_numpy(verts.copy()).to(values.dtype), values, level)
    vertices, faces = _clean(lo.cpu() + voxel * step.cpu(), torch.from_numpy(faces.copy()).long())
    return IsoSurface(vertices=vertices.to(lo.device), faces=faces.to(lo.device))
