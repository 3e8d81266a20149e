"""Mesh queries over packed points: closest point, whether within a distance, ray intersection and k nearest vertices.

Warp finds the discrete answer (which face, which vertices) on the frame's BVH; torch recomputes the
continuous part (barycentrics, positions, distances, ray parameters) from it, so gradients reach both the
query points and the mesh vertices.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import no_type_check

import torch
import torch.nn.functional as F
import warp as wp
from jaxtyping import Bool, Float, Int
from torch import Tensor

from .. import kernels
from ..backends.cpu.wide_bvh import first_hits, nearest_faces, within_reach
from ..checks import (
    IntLike,
    check_count,
    check_finite,
    check_float,
    check_nonzero_rows,
    check_positive,
    checking_values,
    validation,
)
from .mesh import TriangleMesh
from .ties import canonical_answers
from .triangles import closest_point_on_triangle, gather_triangles, gather_vertex_rows, ray_triangle

MAX_KNN = 16
# knn: a warm-start bound above this many mean edge lengths is not trusted to be cheap (see _knn_kernel).
WARM_START_MAX_EDGES = wp.constant(8.0)
EDGE_SAMPLE = 1024  # knn: faces whose mean edge length starts the search
_vec16f = wp.types.vector(length=MAX_KNN, dtype=wp.float32)
_vec16i = wp.types.vector(length=MAX_KNN, dtype=wp.int32)
# Warp needs a finite search radius; this stands for "unbounded".
UNBOUNDED = 1.0e30


# Each kernel runs one query per thread, in the order given by ``order`` (a spatially coherent permutation,
# see kernels.morton_order), and writes its answers back at the query's own row.


@no_type_check  # Warp parameter types are not Python type hints; keep the jaxtyping checker off them.
@wp.kernel
def _closest_point_kernel(
    mesh_ids: wp.array(dtype=wp.uint64),
    max_distance: float,
    with_sign: int,
    points: wp.array(dtype=wp.vec3),
    frame: wp.array(dtype=wp.int64),
    face: wp.array(dtype=wp.int32),
    bary: wp.array(dtype=wp.vec3),
    closest: wp.array(dtype=wp.vec3),
    distance: wp.array(dtype=wp.float32),
    sign: wp.array(dtype=wp.float32),
    order: wp.array(dtype=wp.int64),
):
    i = order[wp.tid()]
    mesh = mesh_ids[frame[i]]
    found = bool(False)
    f = int(-1)
    u = float(0.0)
    v = float(0.0)
    s = float(0.0)
    if with_sign != 0:
        q = wp.mesh_query_point_sign_normal(mesh, points[i], max_distance)
        if q.result:
            found, f, u, v, s = True, int(q.face), float(q.u), float(q.v), float(q.sign)
    else:
        # Without the sign the search skips a square root per triangle and the pseudo-normal bookkeeping.
        q_unsigned = wp.mesh_query_point_no_sign(mesh, points[i], max_distance)
        if q_unsigned.result:
            found, f, u, v = True, int(q_unsigned.face), float(q_unsigned.u), float(q_unsigned.v)
    if found:
        c = wp.mesh_eval_position(mesh, f, u, v)
        face[i] = f
        bary[i] = wp.vec3(u, v, 1.0 - u - v)
        closest[i] = c
        distance[i] = wp.length(points[i] - c)
        sign[i] = s
    else:
        face[i] = -1
        bary[i] = wp.vec3(0.0)
        closest[i] = wp.vec3(0.0)
        distance[i] = wp.inf
        sign[i] = 0.0


@no_type_check  # Warp parameter types are not Python type hints; keep the jaxtyping checker off them.
@wp.kernel
def _within_kernel(
    mesh_ids: wp.array(dtype=wp.uint64),
    radius: float,
    points: wp.array(dtype=wp.vec3),
    frame: wp.array(dtype=wp.int64),
    within: wp.array(dtype=wp.bool),
    order: wp.array(dtype=wp.int64),
):
    i = order[wp.tid()]
    # The sphere query yields the faces whose closest point lies within the radius: the first one answers, so
    # a point near the surface stops at once instead of searching on for its closest face.
    query = wp.mesh_query_sphere(mesh_ids[frame[i]], points[i], radius)
    f = int(0)
    within[i] = wp.mesh_query_next(query, f)


@no_type_check  # Warp parameter types are not Python type hints; keep the jaxtyping checker off them.
@wp.kernel
def _ray_kernel(
    mesh_ids: wp.array(dtype=wp.uint64),
    max_t: float,
    origins: wp.array(dtype=wp.vec3),
    dirs: wp.array(dtype=wp.vec3),
    frame: wp.array(dtype=wp.int64),
    face: wp.array(dtype=wp.int32),
    t: wp.array(dtype=wp.float32),
    bary: wp.array(dtype=wp.vec3),
    normal: wp.array(dtype=wp.vec3),
    order: wp.array(dtype=wp.int64),
):
    i = order[wp.tid()]
    mesh = mesh_ids[frame[i]]
    q = wp.mesh_query_ray(mesh, origins[i], dirs[i], max_t)
    if q.result:
        face[i] = q.face
        t[i] = q.t
        bary[i] = wp.vec3(q.u, q.v, 1.0 - q.u - q.v)
        normal[i] = wp.mesh_eval_face_normal(mesh, q.face)
    else:
        face[i] = -1
        t[i] = wp.inf
        bary[i] = wp.vec3(0.0)
        normal[i] = wp.vec3(0.0)


@no_type_check  # Warp parameter types are not Python type hints; keep the jaxtyping checker off them.
@wp.kernel
def _knn_kernel(
    bvh_ids: wp.array(dtype=wp.uint64),
    vertices: wp.array2d(dtype=wp.vec3),
    start_radius: wp.array(dtype=wp.float32),
    k: int,
    points: wp.array(dtype=wp.vec3),
    frame: wp.array(dtype=wp.int64),
    index: wp.array2d(dtype=wp.int32),
    distance: wp.array2d(dtype=wp.float32),
    order: wp.array(dtype=wp.int64),
):
    t = wp.tid()
    i = order[t]
    f = frame[i]
    p = points[i]
    radius = float(start_radius[f])
    # Warm start: the k vertices found for the previous query in Z-order (a near neighbour) are k distinct
    # vertices, so the farthest of them bounds this query's k-th distance, and one pass within it suffices.
    # A bound far above the mean edge length (the previous query was far away) starts from the edge length
    # instead, and jumps to the bound if that pass comes up short.
    # (On CPU a launch runs its threads in order; where the row is not written yet, it still holds -1.)
    bound = float(wp.inf)
    if t > 0:
        previous = order[t - 1]
        if frame[previous] == f:
            bound = float(0.0)
            for j in range(k):
                v = index[previous, j]
                if v < 0:
                    bound = wp.inf
                elif bound < wp.inf:
                    bound = wp.max(bound, wp.length(vertices[f, v] - p))
            bound = bound * 1.0001 + 1.0e-30
    if bound < WARM_START_MAX_EDGES * radius:
        radius = bound
    best_d = _vec16f()
    best_i = _vec16i()
    found = int(0)
    # Grow a ball until it holds k vertices: then the k nearest are all inside it. A ball query, not its bounding
    # box: for a query off the surface, the box reaches down into the surface and visits every vertex under a square
    # of side 2 * radius (the box cost 1.4-1.8x the ball's time on three head meshes, benchmarks/mesh_queries.py).
    # wp.bvh_query_sphere is new in Warp 1.17.
    while found < k:
        found = int(0)
        for j in range(MAX_KNN):
            best_d[j] = wp.inf
            best_i[j] = -1
        # (Slightly wider than the ball, so that rounding in Warp's squared-distance test cannot drop a vertex on it.)
        query = wp.bvh_query_sphere(bvh_ids[f], p, radius * 1.00001)
        v = int(0)
        while wp.bvh_query_next(query, v):
            d = wp.length(vertices[f, v] - p)
            if d <= radius:
                found += 1
                if d < best_d[k - 1]:
                    # Insertion into the sorted top-k list.
                    j = k - 1
                    while j > 0 and best_d[j - 1] > d:
                        best_d[j] = best_d[j - 1]
                        best_i[j] = best_i[j - 1]
                        j -= 1
                    best_d[j] = d
                    best_i[j] = v
        if radius < bound and bound < wp.inf:  # the warm start's bound; without one, keep doubling
            radius = bound
        else:
            radius = radius * 2.0
    for j in range(k):
        index[i, j] = best_i[j]
        distance[i, j] = best_d[j]


@dataclass
class ClosestPoint:
    """Closest point on the mesh for each query. Misses (beyond ``max_distance``) have ``hit`` False,
    ``face`` -1, zero ``bary``, ``point`` and ``sign``, and infinite ``distance``. A query made with
    ``signed=False`` has zero ``sign`` everywhere (and ``signed_distance`` then 0 for hits)."""

    face: Int[Tensor, " N"]
    bary: Float[Tensor, "N 3"]  # weights of the face's corners mesh.faces[face]
    point: Float[Tensor, "N 3"]
    distance: Float[Tensor, " N"]  # unsigned
    sign: Float[Tensor, " N"]  # -1 inside, +1 outside (meaningful for closed meshes); 0 when not asked for
    hit: Bool[Tensor, " N"]

    @property
    def signed_distance(self) -> Float[Tensor, " N"]:
        """``sign * distance``; +inf for misses, whose side is unknown."""
        return torch.where(self.hit, self.sign * self.distance, self.distance)


@dataclass
class RayHit:
    """First hit of each ray (either side of a triangle). Misses have ``hit`` False, ``face`` -1, infinite
    ``t`` and zero ``bary`` and ``normal``. ``t`` is in units of the ray direction: hit = origin + t * dir."""

    hit: Bool[Tensor, " N"]
    t: Float[Tensor, " N"]
    face: Int[Tensor, " N"]
    bary: Float[Tensor, "N 3"]
    normal: Float[Tensor, "N 3"]  # unit geometric normal of the hit face, (b - a) x (c - a)


@dataclass
class NearestVertices:
    """The k nearest mesh vertices of each query, nearest first."""

    index: Int[Tensor, "N k"]
    distance: Float[Tensor, "N k"]


# Past this distance from a frame's centre, a squared distance overflows float32 (1.8e19² = 3.4e38): Warp would
# report a miss, not the answer.
FLOAT32_REACH = 1e18


def _float32_queries(mesh: TriangleMesh, name: str, points: Tensor, frame: Tensor, positions: bool = True) -> Tensor:
    """The contiguous float32 copy of checked ``points [N,3]`` that Warp reads: query positions relative to their
    frame's centre (:meth:`TriangleMesh.to_warp_frame`), or, with ``positions`` False, vectors as they are."""
    points32 = mesh.to_warp_frame(points, frame) if positions else points.detach().float().contiguous()
    if checking_values() and points32.numel() and not bool(points32.abs().amax() < FLOAT32_REACH):
        check_finite(name, points32, "values within float32 range")
        row = int((points32.abs() >= FLOAT32_REACH).any(dim=1).nonzero()[0, 0])
        raise ValueError(f"{name}: row {row} is beyond float32's reach from the mesh (|x| >= {FLOAT32_REACH:g} from its centre)")
    return points32


def _check_mesh(mesh: object) -> None:
    if not isinstance(mesh, TriangleMesh):
        raise TypeError(f"mesh: expected a headfields.geometry.TriangleMesh, got {type(mesh).__name__}")


def _needs_grad(*tensors: Tensor) -> bool:
    return torch.is_grad_enabled() and any(t.requires_grad for t in tensors)


def _query_dtype(mesh: TriangleMesh, *tensors: Tensor) -> torch.dtype:
    """The dtype torch recomputes in: the widest of the mesh's and the queries'."""
    return functools.reduce(torch.promote_types, [t.dtype for t in tensors], mesh.vertices.dtype)


def closest_point(
    mesh: TriangleMesh,
    points: Float[Tensor, "N 3"],
    frame: Int[Tensor, " N"] | IntLike | None = None,
    max_distance: float | None = None,
    signed: bool = True,
    validate: bool = True,
) -> ClosestPoint:
    """Closest point on frame ``frame[i]`` of ``mesh`` to ``points[i]``, within ``max_distance`` if given.

    ``point`` and ``distance`` are differentiable with respect to ``points`` and ``mesh.vertices``; so is
    ``bary`` within a face (where the closest point is a shared edge or vertex, the faces that share it are equally
    near, and the one of the lowest id is reported, whichever search ran: :mod:`~headfields.geometry.ties`; ``bary``
    belongs to it). ``sign`` comes from the angle-weighted pseudo-normal of the closest
    feature; with ``signed=False`` it is not computed (all zeros), which makes the search cheaper.

    ```python
    v, f = head_proxy()
    q = closest_point(TriangleMesh(v, f), torch.tensor([[0.0, 0.0, 2.0]]))  # q.distance ≈ [0.9], q.sign == [1.0]
    ```

    ``validate=False``: the caller guarantees its input (frame indices in range, points within float32's reach of
    the mesh), and those checks, each a host synchronisation on CUDA, are skipped.
    """
    with validation(validate):
        _check_mesh(mesh)
        check_float("points", points, [None, 3], device=mesh.device)
        check_positive("max_distance", max_distance)
        if not isinstance(signed, bool):
            raise TypeError(f"signed: expected True or False, got {signed!r}")
        n = points.shape[0]
        frame = mesh.frame_index(frame, n)
        points32 = _float32_queries(mesh, "points", points, frame)
        face = torch.empty(n, dtype=torch.int32, device=mesh.device)
        bary, point = (torch.empty(n, 3, device=mesh.device) for _ in range(2))
        distance, sign = (torch.empty(n, device=mesh.device) for _ in range(2))
        limit = UNBOUNDED if max_distance is None else min(float(max_distance), UNBOUNDED)
        order = mesh.query_order(points32, frame)
        wide = None if signed else mesh.wide_bvh(n)  # the CPU's unsigned search, 2.0-2.3x Warp's (backends.cpu.wide_bvh)
        if wide is not None:
            nearest_faces(wide, points32, frame, limit, order, face, bary, point, distance)
            sign.zero_()
        else:
            shared = [mesh.warp_mesh_ids(), limit, int(signed), points32, frame, face, bary, point, distance, sign]
            kernels.launch_rows(_closest_point_kernel, n, shared, [order], mesh.device)
        canonical_answers(mesh, points32, frame, face, bary, point, distance)  # equally near faces: the lowest id
        hit = face >= 0
        face = face.long()
        dtype = _query_dtype(mesh, points)
        if dtype == torch.float32 and not _needs_grad(points, mesh.vertices):
            # Warp's float32 answer is final: nothing to differentiate, nothing more precise to recompute.
            point = torch.where(hit[:, None], point + mesh.warp_origin()[frame], point)  # back from the frame's centre
            return ClosestPoint(face=face, bary=bary, point=point, distance=distance, sign=sign, hit=hit)

        tri = gather_triangles(mesh.vertices.to(dtype), mesh.faces, frame, face.clamp(min=0))
        point, bary = closest_point_on_triangle(points.to(dtype), tri[:, 0], tri[:, 1], tri[:, 2])
        distance = torch.linalg.vector_norm(points.to(dtype) - point, dim=-1)
        miss = ~hit
        return ClosestPoint(
            face=face,
            bary=bary.masked_fill(miss[:, None], 0.0),
            point=point.masked_fill(miss[:, None], 0.0),
            distance=distance.masked_fill(miss, math.inf),
            sign=sign.to(dtype),
            hit=hit,
        )


def within_distance(
    mesh: TriangleMesh,
    points: Float[Tensor, "N 3"],
    max_distance: float,
    frame: Int[Tensor, " N"] | IntLike | None = None,
    validate: bool = True,
) -> Bool[Tensor, " N"]:
    """Whether each of ``points`` lies within ``max_distance`` (inclusive) of frame ``frame[i]`` of ``mesh``: the
    answer of ``closest_point(...).distance <= max_distance``, found without searching for the closest face (the
    first face within reach answers), so a test near the surface costs a fraction of a closest-point query. Not
    differentiable (a mask).

    ```python
    v, f = head_proxy()
    near = within_distance(TriangleMesh(v, f), torch.tensor([[0.0, 0.0, 2.0], [0.0, 0.0, 0.0]]), 0.05)
    ```

    ``validate=False``: the caller guarantees its input (frame indices in range, points within float32's reach of
    the mesh), and those checks, each a host synchronisation on CUDA, are skipped.
    """
    with validation(validate):
        _check_mesh(mesh)
        check_float("points", points, [None, 3], device=mesh.device)
        if isinstance(max_distance, bool) or not isinstance(max_distance, (int, float)):
            raise TypeError(f"max_distance: expected a positive number, got {max_distance!r}")
        check_positive("max_distance", max_distance)
        n = points.shape[0]
        frame = mesh.frame_index(frame, n)
        points32 = _float32_queries(mesh, "points", points, frame)
        within = torch.empty(n, dtype=torch.bool, device=mesh.device)
        radius, order = min(float(max_distance), UNBOUNDED), mesh.query_order(points32, frame)
        wide = mesh.wide_bvh(n)  # the CPU's search, 1.35-1.5x Warp's (backends.cpu.wide_bvh)
        if wide is not None:
            within_reach(wide, points32, frame, radius, order, within)
        else:
            kernels.launch_rows(_within_kernel, n, [mesh.warp_mesh_ids(), radius, points32, frame, within], [order], mesh.device)
        return within


def ray_intersect(
    mesh: TriangleMesh,
    origins: Float[Tensor, "N 3"],
    dirs: Float[Tensor, "N 3"],
    frame: Int[Tensor, " N"] | IntLike | None = None,
    max_t: float | None = None,
    validate: bool = True,
) -> RayHit:
    """First intersection of each ray with frame ``frame[i]`` of ``mesh``, for ``0 <= t < max_t``.

    ``t`` and ``bary`` are differentiable with respect to ``origins``, ``dirs`` and ``mesh.vertices``.

    ``validate=False``: the caller guarantees its input (frame indices in range, origins within float32's reach of
    the mesh, non-zero directions), and those checks, each a host synchronisation on CUDA, are skipped.
    """
    with validation(validate):
        _check_mesh(mesh)
        check_float("origins", origins, [None, 3], device=mesh.device)
        check_float("dirs", dirs, [origins.shape[0], 3], device=mesh.device)
        check_positive("max_t", max_t)
        n = origins.shape[0]
        frame = mesh.frame_index(frame, n)
        origins32 = _float32_queries(mesh, "origins", origins, frame)
        dirs32 = _float32_queries(mesh, "dirs", dirs, frame, positions=False)
        check_nonzero_rows("dirs", dirs32, "non-zero ray directions (in float32)")
        face = torch.empty(n, dtype=torch.int32, device=mesh.device)
        t = torch.empty(n, device=mesh.device)
        bary, normal = (torch.empty(n, 3, device=mesh.device) for _ in range(2))
        limit = UNBOUNDED if max_t is None else min(float(max_t), UNBOUNDED)
        wide = mesh.wide_bvh(n)  # the CPU's walk, 2.2-2.4x Warp's there (backends.cpu.wide_bvh); CUDA keeps Warp's
        if wide is not None:
            first_hits(wide, origins32, dirs32, frame, limit, face, t, bary, normal)
        else:
            # Rays keep their own order: camera rays in pixel order are already coherent.
            order = kernels.row_numbers(n, mesh.device)
            kernels.launch_rows(
                _ray_kernel,
                n,
                [mesh.warp_mesh_ids(), limit, origins32, dirs32, frame, face, t, bary, normal],
                [order],
                mesh.device,
            )
        hit = face >= 0
        face = face.long()
        dtype = _query_dtype(mesh, origins, dirs)
        if dtype == torch.float32 and not _needs_grad(origins, dirs, mesh.vertices):
            return RayHit(hit=hit, t=t, face=face, bary=bary, normal=normal)

        tri = gather_triangles(mesh.vertices.to(dtype), mesh.faces, frame, face.clamp(min=0))
        t, bary = ray_triangle(origins.to(dtype), dirs.to(dtype), tri[:, 0], tri[:, 1], tri[:, 2])
        normal = F.normalize(torch.linalg.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]), dim=-1)
        miss = ~hit
        return RayHit(
            hit=hit,
            t=t.masked_fill(miss, math.inf),
            face=face,
            bary=bary.masked_fill(miss[:, None], 0.0),
            normal=normal.masked_fill(miss[:, None], 0.0),
        )


def knn_vertices(
    mesh: TriangleMesh,
    points: Float[Tensor, "N 3"],
    k: IntLike,
    frame: Int[Tensor, " N"] | IntLike | None = None,
    validate: bool = True,
) -> NearestVertices:
    """The ``k`` (at most 16) nearest vertices of frame ``frame[i]`` to ``points[i]``, nearest first.

    ``distance`` is differentiable with respect to ``points`` and ``mesh.vertices``.

    ``validate=False``: the caller guarantees its input (frame indices in range, points within float32's reach of
    the mesh), and those checks, each a host synchronisation on CUDA, are skipped.
    """
    with validation(validate):
        _check_mesh(mesh)
        check_float("points", points, [None, 3], device=mesh.device)
        k = check_count("k", k, 1, min(MAX_KNN, mesh.num_vertices))
        n = points.shape[0]
        frame = mesh.frame_index(frame, n)
        queries = _float32_queries(mesh, "points", points, frame)
        index = torch.full((n, k), -1, dtype=torch.int32, device=mesh.device)  # -1: not written yet
        distance = torch.empty(n, k, device=mesh.device)
        bvh_ids = mesh.warp_vertex_bvh_ids()
        vertices32 = mesh.warp_points()
        # Start the search at the mean edge length (of an even spread of EDGE_SAMPLE faces: a start, not a bound, so
        # an estimate serves): most queries near the surface then need one pass.
        faces = mesh.faces[:: max(1, mesh.num_faces // EDGE_SAMPLE)]
        edges = vertices32[:, faces[:, 1]] - vertices32[:, faces[:, 0]]
        start = torch.linalg.vector_norm(edges, dim=-1).mean(dim=1).contiguous()
        shared = [bvh_ids, vertices32, start, k, queries, frame, index, distance]
        order = mesh.query_order(queries, frame, always_sorted=True)  # the warm start reads its Morton neighbour
        kernels.launch_rows(_knn_kernel, n, shared, [order], mesh.device)
        if checking_values() and (index < 0).any():  # (the training loop's points lie in its box: no read-back)
            row = int((index < 0).any(dim=1).nonzero()[0, 0])
            raise ValueError(f"points: row {row} is too far from the mesh for float32 distances ({points[row].tolist()})")
        index = index.long()
        dtype = _query_dtype(mesh, points)
        if dtype == torch.float32 and not _needs_grad(points, mesh.vertices):
            return NearestVertices(index=index, distance=distance)  # Warp's float32 distances are final
        nearest = gather_vertex_rows(mesh.vertices.to(dtype), frame, index)
        distance = torch.linalg.vector_norm(points.to(dtype)[:, None] - nearest, dim=-1)
        return NearestVertices(index=index, distance=distance)
