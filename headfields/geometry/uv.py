"""UV rasterisation: per-vertex attributes to a UV map and back.

MonoAvatar rasterises per-vertex displacements into a 256×256 UV map, runs a CNN on it and samples the
output back at the vertices. :func:`rasterize_uv` finds which UV triangle covers each texel centre (Warp,
no gradient: it depends on the UV layout only), :func:`interpolate_uv` fills the map from per-vertex
values (torch, differentiable), :func:`vertex_uvs` picks one UV per vertex and :func:`sample_uv` reads a
map back at those UVs.

Texel convention: texel ``(row, col)`` of an ``H × W`` map has its centre at ``u = (col + 0.5) / W``,
``v = (row + 0.5) / H``. Rows follow ``v`` with no flip (row 0 is v near 0), the same convention as
``torch.nn.functional.grid_sample`` with ``align_corners=False`` and grid ``(2u - 1, 2v - 1)``. To view a map
as an image with v pointing up, flip its rows.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import no_type_check

import torch
import torch.nn.functional as F
import warp as wp
from jaxtyping import Bool, Float, Int
from torch import Tensor

from .. import kernels
from ..checks import IntLike, check_count, check_float, check_int, check_shape, checking_values

# Coverage is decided exactly, in integers: corners snap to 1/4096 of a texel (GPU rasterisers snap to 1/256),
# and edge functions of such coordinates fit in int64, so a texel centre on an edge shared by two triangles
# is counted in exactly one of them whatever the rounding would have said.
SUBTEXEL_BITS = 12
# Snapped coordinates stay below 2^29 in magnitude: edge functions then stay below 2^61.
_FIXED_LIMIT = 2**29
MAX_RESOLUTION = 16384
# Triangle boxes in the BVH are padded by this many texels, so the float32 box test never drops a candidate
# that the exact integer test would accept.
_BOX_PADDING = 1.0


@no_type_check  # Warp parameter types are not Python type hints; keep the jaxtyping checker off them.
@wp.func
def _left_of(ax: wp.int64, ay: wp.int64, bx: wp.int64, by: wp.int64, px: wp.int64, py: wp.int64) -> bool:
    """Whether ``p`` lies strictly left of the directed edge ``a -> b`` once nudged to ``p + (e, e^2)`` for an
    infinitesimal ``e``: a point on an edge, or on a vertex, then belongs to exactly one of the triangles
    that share it (a symbolic perturbation, akin to the top-left fill rule of GPU rasterisers)."""
    e = (bx - ax) * (py - ay) - (by - ay) * (px - ax)
    if e != wp.int64(0):
        return e > wp.int64(0)
    # e(p + d) = e(p) - (by - ay) d_x + (bx - ax) d_y with d = (e, e^2): the x term decides unless it is zero.
    if ay != by:
        return ay > by
    return bx > ax


@no_type_check  # Warp parameter types are not Python type hints; keep the jaxtyping checker off them.
@wp.kernel
def _uv_cover_kernel(
    bvh: wp.uint64,
    corners: wp.array3d(dtype=wp.int64),
    face_ids: wp.array(dtype=wp.int32),
    width: wp.int64,
    texel_size: wp.int64,
    texel: wp.array(dtype=wp.int64),
    face: wp.array(dtype=wp.int32),
):
    # One texel per thread. ``corners [K, 3, 2]`` are the snapped, counter-clockwise corners of the BVH's
    # K triangles; ``face_ids[k]`` is triangle k's row in uv_faces. Where several triangles cover the centre
    # (overlapping UV charts), the lowest face index wins, so the answer does not depend on BVH order.
    t = wp.tid()
    i = texel[t]
    row = i // width
    col = i - row * width
    half = texel_size // wp.int64(2)
    px = col * texel_size + half
    py = row * texel_size + half
    centre = wp.vec3(float(col) + 0.5, float(row) + 0.5, 0.0)
    query = wp.bvh_query_aabb(bvh, centre, centre)
    k = int(0)
    best = int(-1)
    while wp.bvh_query_next(query, k):
        f = face_ids[k]
        if best < 0 or f < best:
            ax = corners[k, 0, 0]
            ay = corners[k, 0, 1]
            bx = corners[k, 1, 0]
            by = corners[k, 1, 1]
            cx = corners[k, 2, 0]
            cy = corners[k, 2, 1]
            if _left_of(ax, ay, bx, by, px, py) and _left_of(bx, by, cx, cy, px, py) and _left_of(cx, cy, ax, ay, px, py):
                best = f
    face[t] = best


@dataclass
class UVRaster:
    """Which UV triangle covers each texel centre of an ``H × W`` map (see the module docstring for the texel
    convention). It depends on the UV layout only, so one raster serves every frame and attribute.

    ``bary`` are the barycentrics of the texel centre in triangle ``face`` (weights of its corners
    ``uv_faces[face]``, or ``faces[face]`` for the vertices), computed in float64 from the unsnapped UVs;
    where snapping decided a centre on an edge they may be negative by a rounding-sized amount.
    """

    face: Int[Tensor, "H W"]  # row of uv_faces, -1 where no triangle covers the texel centre
    bary: Float[Tensor, "H W 3"]  # 0 where uncovered
    num_faces: int  # rows of uv_faces, so that interpolate_uv can check its faces against them

    @property
    def mask(self) -> Bool[Tensor, "H W"]:
        """Covered texels."""
        return self.face >= 0

    def covered(self) -> Int[Tensor, " N"]:
        """The covered texels' flat indices, ascending (a read-back on a GPU: a layout's are found once)."""
        return (self.face.reshape(-1) >= 0).nonzero()[:, 0]

    @property
    def resolution(self) -> tuple[int, int]:
        """``(H, W)``."""
        return (self.face.shape[0], self.face.shape[1])

    @property
    def device(self) -> torch.device:
        return self.face.device


def _resolution(resolution: IntLike | tuple[IntLike, IntLike]) -> tuple[int, int]:
    if isinstance(resolution, tuple):
        if len(resolution) != 2:
            raise ValueError(f"resolution: expected an integer or a pair (H, W), got a tuple of {len(resolution)}")
        return tuple(check_count("resolution", r, 1, MAX_RESOLUTION) for r in resolution)  # type: ignore[return-value]
    size = check_count("resolution", resolution, 1, MAX_RESOLUTION)
    return (size, size)


def _float64_bary(p: Tensor, a: Tensor, b: Tensor, c: Tensor) -> Tensor:
    """Barycentrics ``[N, 3]`` of 2D points ``p`` in triangles ``(a, b, c)`` (non-degenerate), in float64."""
    e1, e2, q = b - a, c - a, p - a
    det = e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0]
    beta = (q[:, 0] * e2[:, 1] - q[:, 1] * e2[:, 0]) / det
    gamma = (e1[:, 0] * q[:, 1] - e1[:, 1] * q[:, 0]) / det
    return torch.stack([1 - beta - gamma, beta, gamma], dim=-1)


def rasterize_uv(
    uvs: Float[Tensor, "T 2"], uv_faces: Int[Tensor, "F 3"], resolution: IntLike | tuple[IntLike, IntLike]
) -> UVRaster:
    """The UV triangle covering each texel centre of a ``resolution`` map (an int for a square map, or
    ``(H, W)``), on the device of ``uvs``.

    Coverage is exact and deterministic: corners snap to 1/4096 of a texel, and then a centre inside the
    union of the triangles is covered once, a centre on an edge or vertex shared by triangles is given to
    exactly one of them, and where charts overlap the lowest face index wins. Triangles of zero area in UV
    are skipped. Either winding is accepted. UVs may reach outside [0, 1] (within a bound that keeps the
    fixed-point arithmetic exact: [-512, 512] at 256²).
    """
    check_float("uvs", uvs, [None, 2])
    check_int("uv_faces", uv_faces, [None, 3], upper=uvs.shape[0], device=uvs.device)
    height, width = _resolution(resolution)
    device = uvs.device
    num_faces = uv_faces.shape[0]

    # Snap corners to fixed point, in units of 1/2^SUBTEXEL_BITS texel (x along u / columns, y along v / rows).
    texel_size = 2**SUBTEXEL_BITS
    uv64 = uvs.detach().double()
    scale = torch.tensor([width * texel_size, height * texel_size], dtype=torch.float64, device=device)
    fixed = torch.round(uv64 * scale)
    if fixed.numel() and fixed.abs().max() >= _FIXED_LIMIT:
        reach = _FIXED_LIMIT / (max(height, width) * texel_size)
        raise ValueError(
            f"uvs: expected values within [-{reach:g}, {reach:g}] at resolution {(height, width)}, "
            f"got values up to {uv64.abs().max().item():g}"
        )
    corners = fixed.long()[uv_faces]  # [F, 3, 2]
    e1, e2 = corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0]
    area2 = e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0]  # exact: below 2^61
    a, b, c = uv64[uv_faces].unbind(1)
    float_area2 = (b - a)[:, 0] * (c - a)[:, 1] - (b - a)[:, 1] * (c - a)[:, 0]
    # Degenerate in UV: zero area once snapped, or in float64 (where barycentrics would divide by zero).
    valid = (area2 != 0) & (float_area2 != 0)
    # Clockwise triangles are flipped to counter-clockwise, so one inside test serves both windings.
    corners = torch.where((area2 < 0)[:, None, None], corners[:, [0, 2, 1]], corners)
    face_ids = valid.nonzero()[:, 0]
    face = torch.full((height * width,), -1, dtype=torch.int32, device=device)
    bvh = None
    if face_ids.numel() > 0:
        corners = corners[face_ids].contiguous()
        pixel = corners.double() / texel_size
        lowers = torch.cat([pixel.amin(dim=1) - _BOX_PADDING, torch.full_like(pixel[:, 0, :1], -1.0)], dim=1)
        uppers = torch.cat([pixel.amax(dim=1) + _BOX_PADDING, torch.full_like(pixel[:, 0, :1], 1.0)], dim=1)
        lowers, uppers = lowers.float().contiguous(), uppers.float().contiguous()
        with kernels.torch_stream(device):
            bvh = wp.Bvh(kernels.to_warp(lowers, wp.vec3), kernels.to_warp(uppers, wp.vec3))
        texels = torch.arange(height * width, dtype=torch.long, device=device)
        shared = [bvh.id, corners, face_ids.to(torch.int32), width, texel_size]
        kernels.launch_rows(_uv_cover_kernel, height * width, shared, [texels, face], device)

    face = face.long()
    covered = face >= 0
    bary = torch.zeros(height * width, 3, dtype=torch.float64, device=device)
    any_covered = bool(covered.any())  # waits for the launch (same stream), so the BVH may go now
    del bvh
    if any_covered:
        index = covered.nonzero()[:, 0]
        rows, cols = index // width, index % width
        centre = torch.stack([(cols.double() + 0.5) / width, (rows.double() + 0.5) / height], dim=-1)
        tri = uv64[uv_faces[face[index]]]
        bary[index] = _float64_bary(centre, tri[:, 0], tri[:, 1], tri[:, 2])
    return UVRaster(face=face.reshape(height, width), bary=bary.to(uvs.dtype).reshape(height, width, 3), num_faces=num_faces)


def interpolate_uv(
    raster: UVRaster,
    values: Float[Tensor, "B V C"] | Float[Tensor, "V C"],
    faces: Int[Tensor, "F 3"],
    covered: Int[Tensor, " N"] | None = None,
) -> Float[Tensor, "B C H W"] | Float[Tensor, "C H W"]:
    """Per-vertex ``values`` spread over the UV map: each covered texel blends the values at its triangle's
    corners ``faces[face]`` with its barycentrics; uncovered texels are 0. ``faces`` are the mesh faces
    matching the raster's ``uv_faces`` row by row. Differentiable with respect to ``values``; unbatched
    ``values [V, C]`` give a ``[C, H, W]`` map. ``covered``: the raster's covered texels (:meth:`UVRaster.covered`),
    for a caller that fills one layout every step (found here otherwise: a read-back on a GPU)."""
    if not isinstance(raster, UVRaster):
        raise TypeError(f"raster: expected a UVRaster (from rasterize_uv), got {type(raster).__name__}")
    unbatched = isinstance(values, Tensor) and values.dim() == 2
    if unbatched:
        values = values[None]
    check_float("values", values, [None, None, None], device=raster.device)
    check_int("faces", faces, [raster.num_faces, 3], upper=values.shape[1], device=raster.device)
    batch, _, channels = values.shape
    height, width = raster.resolution

    face = raster.face.reshape(-1)
    index = raster.covered() if covered is None else covered
    corners = faces.long()[face[index]]  # [N, 3]
    bary = raster.bary.reshape(-1, 3)[index].to(values.dtype)
    texel_values = (values[:, corners] * bary[None, :, :, None]).sum(dim=2)  # [B, N, C]
    out = values.new_zeros(batch, height * width, channels)
    out = out.index_copy(1, index, texel_values)
    out = out.permute(0, 2, 1).reshape(batch, channels, height, width)
    return out[0] if unbatched else out


def vertex_uvs(
    faces: Int[Tensor, "F 3"], uv_faces: Int[Tensor, "F 3"], uvs: Float[Tensor, "T 2"], num_vertices: IntLike
) -> Float[Tensor, "V 2"]:
    """One UV per vertex. A vertex on a UV seam has several; it takes the one at its first corner in face
    order (row-major over ``faces``), so the choice is deterministic. Differentiable with respect to ``uvs``."""
    num_vertices = check_count("num_vertices", num_vertices, 1)
    check_float("uvs", uvs, [None, 2])
    check_int("faces", faces, [None, 3], upper=num_vertices, device=uvs.device)
    check_int("uv_faces", uv_faces, [faces.shape[0], 3], upper=uvs.shape[0], device=uvs.device)
    flat_vertex = faces.reshape(-1).long()
    corner = torch.arange(flat_vertex.shape[0], device=uvs.device)
    none = flat_vertex.shape[0]
    first = torch.full((num_vertices,), none, dtype=torch.long, device=uvs.device)
    first = first.scatter_reduce(0, flat_vertex, corner, reduce="amin")
    unused = first == none
    if unused.any():
        ids = unused.nonzero()[:, 0]
        shown = ", ".join(str(i) for i in ids[:8].tolist()) + (", ..." if ids.numel() > 8 else "")
        raise ValueError(
            f"faces: expected every one of the {num_vertices} vertices in some face, {ids.numel()} are in none ({shown})"
        )
    return uvs[uv_faces.reshape(-1).long()[first]]


def sample_uv(
    uv_map: Float[Tensor, "B C H W"] | Float[Tensor, "C H W"],
    uv: Float[Tensor, "V 2"],
    mask: Bool[Tensor, "H W"] | None = None,
    misses: UVMisses | None = None,
) -> Float[Tensor, "B V C"] | Float[Tensor, "V C"]:
    """Bilinear samples of ``uv_map`` at ``uv`` (``grid_sample`` with ``align_corners=False``, matching the
    texel convention). Differentiable with respect to ``uv_map`` (and ``uv``); ``[C, H, W]`` gives ``[V, C]``.

    Without ``mask``, taps beyond the map's edge repeat its edge texels. With ``mask`` (covered texels, e.g.
    ``raster.mask``), the sample is mask-normalised, ``sum(w m x) / sum(w m)`` over the four taps, so that a
    point on a chart border does not average in empty texels; taps beyond the edge count as uncovered. Where
    none of the four taps is covered, the point takes the value of the nearest covered texel centre (lowest
    texel index on ties); an all-false mask raises. ``misses``: those points and texels, :func:`uv_misses` of ``uv``
    and ``mask``, for a caller that samples one layout every step (found here otherwise: read-backs on a GPU).
    """
    unbatched = isinstance(uv_map, Tensor) and uv_map.dim() == 3
    if unbatched:
        uv_map = uv_map[None]
    check_float("uv_map", uv_map, [None, None, None, None])
    check_float("uv", uv, [None, 2], device=uv_map.device)
    batch, channels, height, width = uv_map.shape
    if height == 0 or width == 0:
        raise ValueError(f"uv_map: expected a non-empty map, got shape {list(uv_map.shape)}")
    grid = (uv.to(uv_map.dtype) * 2 - 1)[None, :, None, :].expand(batch, -1, -1, -1)  # [B, V, 1, 2]
    if mask is None:
        out = F.grid_sample(uv_map, grid, mode="bilinear", padding_mode="border", align_corners=False)
        out = out[..., 0].transpose(1, 2)  # [B, V, C]
        return out[0] if unbatched else out

    check_shape("mask", mask, [height, width], device=uv_map.device)
    if mask.dtype != torch.bool:
        raise TypeError(f"mask: expected a bool tensor, got {mask.dtype}")
    if checking_values() and not mask.any():  # (a model's own mask: no read-back a training step)
        raise ValueError("mask: expected at least one covered texel, got none")
    weight = mask.to(uv_map.dtype)
    total = F.grid_sample(uv_map * weight, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    total, norm = total[..., 0].transpose(1, 2), _coverage(uv, weight)  # [B, V, C], [V]
    hit = norm > 0
    out = total / torch.where(hit, norm, torch.ones_like(norm))[None, :, None]
    if misses is None and not hit.all():
        misses = _nearest_covered(uv, mask, (~hit).nonzero()[:, 0])
    if misses is not None:
        fallback = uv_map.reshape(batch, channels, -1)[:, :, misses.texel].transpose(1, 2)  # [B, M, C]
        out = out.index_copy(1, misses.point, fallback)
    return out[0] if unbatched else out


@dataclass(frozen=True)
class UVMisses:
    """The points none of whose four taps a mask covers (:func:`sample_uv`) and the nearest covered texel of each."""

    point: Int[Tensor, " M"]  # rows of the points
    texel: Int[Tensor, " M"]  # flat index of each one's nearest covered texel centre (lowest index on ties)


def uv_misses(uv: Float[Tensor, "V 2"], mask: Bool[Tensor, "H W"], dtype: torch.dtype = torch.float32) -> UVMisses:
    """The points of ``uv`` that :func:`sample_uv` with ``mask`` fills from the nearest covered texel, and those
    texels: they depend on the layout alone (``dtype``: the maps' that will be sampled, whose taps' weights decide)."""
    check_float("uv", uv, [None, 2])
    check_shape("mask", mask, [None, None], device=uv.device)
    if mask.dtype != torch.bool or not mask.any():
        raise ValueError(f"mask: expected a bool tensor with at least one covered texel, got {mask.dtype}")
    hit = _coverage(uv, mask.to(dtype)) > 0
    return _nearest_covered(uv, mask, (~hit).nonzero()[:, 0])


def _coverage(uv: Tensor, weight: Tensor) -> Tensor:
    """Each point's sum of its four taps' bilinear weights over the covered texels (``weight``: the mask, 1 or 0)."""
    one = (uv.to(weight.dtype) * 2 - 1)[None, :, None, :]  # the mask is one map, whatever the batch (0 included)
    return F.grid_sample(weight[None, None], one, mode="bilinear", padding_mode="zeros", align_corners=False)[0, 0, :, 0]


def _nearest_covered(uv: Tensor, mask: Tensor, miss: Tensor) -> UVMisses:
    """The covered texel centre nearest each point ``uv[miss]``, measured in texels."""
    height, width = mask.shape
    texels = mask.reshape(-1).nonzero()[:, 0]
    centres = torch.stack([texels % width, texels // width], dim=-1).double() + 0.5
    size = torch.tensor([width, height], dtype=torch.float64, device=uv.device)
    points = uv[miss].detach().double() * size
    return UVMisses(miss, texels[torch.cdist(points, centres).argmin(dim=1)])
