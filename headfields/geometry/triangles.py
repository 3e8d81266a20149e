"""Differentiable per-triangle math in torch: normals, areas, closest points, ray hits and local frames.

These recompute, from indices that Warp found, the quantities that need gradients.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from torch import Tensor

from ..checks import check_float, check_int, checking_values


def _dot(a: Tensor, b: Tensor) -> Tensor:
    return (a * b).sum(-1)


def _safe_div(num: Tensor, den: Tensor) -> Tensor:
    # Used inside torch.where branches: an unselected branch must not divide by zero, or its NaN gradient
    # leaks through the where.
    return num / torch.where(den == 0, torch.ones_like(den), den)


# A triangle whose area is below this fraction of the squared bounding-box diagonal is degenerate: float32
# queries cannot resolve it and its normal and frame are undefined.
DEGENERATE_AREA_FRACTION = 1e-12


def _corners(vertices: Tensor, faces: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    return vertices[..., faces[:, 0], :], vertices[..., faces[:, 1], :], vertices[..., faces[:, 2], :]


def _face_cross(vertices: Tensor, faces: Tensor) -> Tensor:
    """``(b - a) x (c - a)`` per face, unchecked: twice the area times the unit normal."""
    a, b, c = _corners(vertices, faces)
    return torch.linalg.cross(b - a, c - a)


def _check_mesh(vertices: Tensor, faces: Tensor) -> None:
    """Vertices ``[..., V, 3]`` (finite floats) and faces ``[F, 3]`` indexing them, on one device."""
    if not isinstance(vertices, Tensor):
        raise TypeError(f"vertices: expected a torch.Tensor of shape [..., V, 3], got {type(vertices).__name__}")
    check_float("vertices", vertices, [None] * max(vertices.dim() - 1, 1) + [3])
    check_int("faces", faces, [None, 3], upper=vertices.shape[-2], device=vertices.device)


def check_nondegenerate(vertices: Float[Tensor, "*B V 3"], faces: Int[Tensor, "F 3"]) -> None:
    """Raise if a triangle's area is (numerically) zero relative to the mesh's bounding box. Callers have
    checked ``vertices`` and ``faces`` already (it runs on every mesh update); skipped inside
    :func:`~headfields.checks.trusted_values` (the training loop's posed meshes, from tracking checked when loaded)."""
    if not checking_values():
        return
    extent = vertices.amax(dim=-2) - vertices.amin(dim=-2)
    areas = 0.5 * torch.linalg.vector_norm(_face_cross(vertices, faces), dim=-1)
    bad = areas <= DEGENERATE_AREA_FRACTION * (extent**2).sum(-1, keepdim=True)
    if bad.any():
        first = bad.nonzero()[0].tolist()
        face, frame = first[-1], first[:-1]
        where = f" in frame {frame[0]}" if len(frame) == 1 else (f" at batch index {frame}" if frame else "")
        area, mesh = float(areas[tuple(first)]), vertices[tuple(frame)]
        if area == 0:
            what = "has zero area"
        else:  # a real triangle, small beside the box: say what made the box big (a vertex far from the rest?)
            diagonal = float(torch.linalg.vector_norm(mesh.amax(0) - mesh.amin(0)))
            distance = torch.linalg.vector_norm(mesh - mesh.median(dim=0).values, dim=-1)
            far = int(distance.argmax())
            what = (
                f"has an area of {area:.3g}, under {DEGENERATE_AREA_FRACTION:g} of the squared diagonal of the mesh's "
                f"bounding box ({diagonal:.4g} across; its farthest vertex, {far}, lies {float(distance[far]):.4g} from "
                f"the median vertex, {float(distance[far] / distance.median().clamp(min=1e-30)):.3g} times the median "
                "distance)"
            )
        raise ValueError(
            f"vertices: triangle {face} (vertices {faces[face].tolist()}) {what}{where}; "
            f"{int(bad.sum())} degenerate triangle(s) in all. Remove them first."
        )


def gather_vertex_rows(
    values: Float[Tensor, "B V C"], frame: Int[Tensor, " N"], index: Int[Tensor, "N K"]
) -> Float[Tensor, "N K C"]:
    """``values[frame[:, None], index]`` (per-vertex values of each sample's frame: positions, features), by one
    ``index_select`` over the frames' stacked rows: its backward adds rows, where advanced indexing's sorts them
    first (14x slower on a CPU for 15,600 rows of 96)."""
    b, v, c = values.shape
    rows = (frame[:, None] * v + index).reshape(-1)
    return values.reshape(b * v, c).index_select(0, rows).reshape(*index.shape, c)


def gather_triangles(
    vertices: Float[Tensor, "B V 3"], faces: Int[Tensor, "F 3"], frame: Int[Tensor, " N"], face: Int[Tensor, " N"]
) -> Float[Tensor, "N 3 3"]:
    """Corners ``[N, corner, xyz]`` of triangle ``face[i]`` in frame ``frame[i]``."""
    return gather_vertex_rows(vertices, frame, faces[face])


def face_normals(vertices: Float[Tensor, "*B V 3"], faces: Int[Tensor, "F 3"]) -> Float[Tensor, "*B F 3"]:
    """Unit geometric normals, ``normalize((b - a) x (c - a))`` (counter-clockwise faces point outwards)."""
    _check_mesh(vertices, faces)
    return F.normalize(_face_cross(vertices, faces), dim=-1)


def vertex_normals(vertices: Float[Tensor, "*B V 3"], faces: Int[Tensor, "F 3"]) -> Float[Tensor, "*B V 3"]:
    """Unit vertex normals: the area-weighted mean of the normals of the faces around each vertex."""
    _check_mesh(vertices, faces)
    cross = _face_cross(vertices, faces)  # |cross| = 2 * area, so summing it weights by area
    summed = torch.zeros_like(vertices)
    for corner in range(3):
        summed.index_add_(-2, faces[:, corner], cross)
    return F.normalize(summed, dim=-1)


def face_areas(vertices: Float[Tensor, "*B V 3"], faces: Int[Tensor, "F 3"]) -> Float[Tensor, "*B F"]:
    _check_mesh(vertices, faces)
    return 0.5 * torch.linalg.vector_norm(_face_cross(vertices, faces), dim=-1)


def corner_areas(corners: Float[Tensor, "*B 3 3"]) -> Float[Tensor, " *B"]:
    """Areas of triangles given by their corners ``[..., corner, xyz]`` (as :func:`gather_triangles` returns them
    from a mesh that was checked): unchecked, for per-sample triangles on a hot path."""
    a, b, c = corners.unbind(dim=-2)
    return 0.5 * torch.linalg.vector_norm(torch.linalg.cross(b - a, c - a), dim=-1)


def closest_point_on_triangle(
    p: Float[Tensor, "N 3"], a: Float[Tensor, "N 3"], b: Float[Tensor, "N 3"], c: Float[Tensor, "N 3"]
) -> tuple[Float[Tensor, "N 3"], Float[Tensor, "N 3"]]:
    """Closest point on triangle ``(a, b, c)`` to ``p`` and its barycentrics (weights of a, b, c).

    The Voronoi-region method (Ericson, Real-Time Collision Detection, 5.1.5), vectorised: every region's
    answer is computed and the right one selected, so it is differentiable inside each region.
    """
    ab, ac = b - a, c - a
    ap, bp, cp = p - a, p - b, p - c
    d1, d2 = _dot(ab, ap), _dot(ac, ap)
    d3, d4 = _dot(ab, bp), _dot(ac, bp)
    d5, d6 = _dot(ab, cp), _dot(ac, cp)
    va, vb, vc = d3 * d6 - d5 * d4, d5 * d2 - d1 * d6, d1 * d4 - d3 * d2
    one, zero = torch.ones_like(d1), torch.zeros_like(d1)

    # Interior: projection onto the plane.
    denom = va + vb + vc
    v, w = _safe_div(vb, denom), _safe_div(vc, denom)
    bary = torch.stack([1 - v - w, v, w], -1)
    # Edges, then vertices, in reverse order of precedence so the first matching region wins.
    in_bc = (va <= 0) & (d4 - d3 >= 0) & (d5 - d6 >= 0)
    t_bc = _safe_div(d4 - d3, (d4 - d3) + (d5 - d6))
    in_ac = (vb <= 0) & (d2 >= 0) & (d6 <= 0)
    t_ac = _safe_div(d2, d2 - d6)
    in_ab = (vc <= 0) & (d1 >= 0) & (d3 <= 0)
    t_ab = _safe_div(d1, d1 - d3)
    regions = [
        (in_bc, torch.stack([zero, 1 - t_bc, t_bc], -1)),
        ((d6 >= 0) & (d5 <= d6), torch.stack([zero, zero, one], -1)),
        (in_ac, torch.stack([1 - t_ac, zero, t_ac], -1)),
        (in_ab, torch.stack([1 - t_ab, t_ab, zero], -1)),
        ((d3 >= 0) & (d4 <= d3), torch.stack([zero, one, zero], -1)),
        ((d1 <= 0) & (d2 <= 0), torch.stack([one, zero, zero], -1)),
    ]
    for mask, region_bary in regions:
        bary = torch.where(mask[:, None], region_bary, bary)
    point = bary[:, 0:1] * a + bary[:, 1:2] * b + bary[:, 2:3] * c
    return point, bary


def ray_triangle(
    origins: Float[Tensor, "N 3"],
    dirs: Float[Tensor, "N 3"],
    a: Float[Tensor, "N 3"],
    b: Float[Tensor, "N 3"],
    c: Float[Tensor, "N 3"],
) -> tuple[Float[Tensor, " N"], Float[Tensor, "N 3"]]:
    """Ray parameter ``t`` (hit = origin + t * dir) and barycentrics of the hit on the plane of ``(a, b, c)``.

    Möller–Trumbore without the inside test: callers pass triangles known to be hit. A ray parallel to its
    triangle gives t = 0 rather than a division by zero.
    """
    e1, e2 = b - a, c - a
    pvec = torch.linalg.cross(dirs, e2)
    det = _dot(e1, pvec)
    tvec = origins - a
    qvec = torch.linalg.cross(tvec, e1)
    u, v = _safe_div(_dot(tvec, pvec), det), _safe_div(_dot(dirs, qvec), det)
    t = _safe_div(_dot(e2, qvec), det)
    return t, torch.stack([1 - u - v, u, v], -1)


@dataclass
class TriangleFrames:
    """Orthonormal frame of every triangle: ``rotation[..., :, 0|1|2]`` = tangent, bitangent, normal."""

    rotation: Float[Tensor, "*B F 3 3"]
    origin: Float[Tensor, "*B F 3"]

    def to_local(self, x: Float[Tensor, "*B F 3"]) -> Float[Tensor, "*B F 3"]:
        """Coordinates of world points in each triangle's frame: ``Rᵀ (x - origin)``."""
        return torch.einsum("...ji,...j->...i", self.rotation, x - self.origin)

    def to_world(self, local: Float[Tensor, "*B F 3"]) -> Float[Tensor, "*B F 3"]:
        """Inverse of :meth:`to_local`: ``R local + origin``."""
        return torch.einsum("...ij,...j->...i", self.rotation, local) + self.origin


def triangle_frames(vertices: Float[Tensor, "*B V 3"], faces: Int[Tensor, "F 3"]) -> TriangleFrames:
    """INSTA's per-triangle frames (Zielonka et al. 2023): with e1 = b − a, e2 = c − a,
    n = normalize(e1 × e2), b̂ = normalize(e1 × n), t = normalize(b̂ × n); R = [t | b̂ | n], origin a.
    """
    _check_mesh(vertices, faces)
    check_nondegenerate(vertices, faces)
    return _frames(*_corners(vertices, faces))


def corner_frames(corners: Float[Tensor, "*B 3 3"]) -> TriangleFrames:
    """:func:`triangle_frames` of triangles given by their corners ``[..., corner, xyz]`` (as
    :func:`gather_triangles` returns them from a mesh that was checked): unchecked, for per-sample triangles on a
    hot path, where the checks of the whole mesh would be repeated for every sample."""
    return _frames(*corners.unbind(dim=-2))


def _frames(a: Tensor, b: Tensor, c: Tensor) -> TriangleFrames:
    e1, e2 = b - a, c - a
    n = F.normalize(torch.linalg.cross(e1, e2), dim=-1)
    bitangent = F.normalize(torch.linalg.cross(e1, n), dim=-1)
    tangent = F.normalize(torch.linalg.cross(bitangent, n), dim=-1)
    return TriangleFrames(rotation=torch.stack([tangent, bitangent, n], dim=-1), origin=a)


def face_adjacency(faces: Int[Tensor, "F 3"]) -> Int[Tensor, "F 3"]:
    """Triangle across each edge: column j is the face sharing edge (v_j, v_{j+1 mod 3}), -1 on a boundary.

    On a non-manifold edge (three or more faces) each face gets one of the others.
    """
    check_int("faces", faces, [None, 3])
    num_faces = faces.shape[0]
    if num_faces == 0:
        return faces.new_full((0, 3), -1)
    edges = torch.stack([faces, faces.roll(-1, dims=1)], dim=-1).reshape(-1, 2)  # [3F, 2], row = 3*face + j
    key = edges.sort(dim=1).values
    key = key[:, 0] * (int(faces.max()) + 1) + key[:, 1]
    order = torch.argsort(key, stable=True)
    sorted_key = key[order]
    # An edge's partner is its neighbour in sorted order with the same key: the next one, else the previous.
    neighbour = torch.full_like(order, -1)
    same_next = sorted_key[1:] == sorted_key[:-1]
    nxt = torch.full_like(order, -1)
    prv = torch.full_like(order, -1)
    nxt[:-1] = torch.where(same_next, order[1:], -1)
    prv[1:] = torch.where(same_next, order[:-1], -1)
    neighbour[order] = torch.where(nxt >= 0, nxt, prv)
    return torch.where(neighbour >= 0, neighbour // 3, neighbour).reshape(num_faces, 3)
