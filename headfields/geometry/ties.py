"""Equally near faces, one answer: the face of the lowest id.

Where a point's closest point on a mesh is a vertex or lies on an edge, every face that shares it is equally near, and
which one a search reports is the search's choice: Warp's BVH, the CPU's wide BVH, a tree's shape or the order the
faces are met in. Such points are common: of INSTA's 512² frame's samples, 18% have their closest point on an edge
and 2% on a vertex (docs/results.md, "Mesh queries"), and its deformer maps each through its face's frame, so an
image depended on which search ran (a mesh switches to the wide BVH once queried enough, so a process's first renders
differed from its later ones). :func:`canonical_face` turns the face found into the lowest id among the faces that
share the closest point's corner or edge. Which one is read from the closest point's weights on the face found
(Ericson, "Real-Time Collision Detection" 5.1.5, in float64 from the float32 corners and query the searches read;
weights below TIE_WEIGHT count as zero): every face that shares it has the same closest point, so every search reports
one face.

    tables = tie_tables(faces, num_vertices)  # per topology: the lowest face id at each vertex and each edge
    f, v, w = canonical_face(points, faces, tables.vertex_face, tables.edge_face, frame, f, q)  # in a Warp kernel
    canonical_answers(mesh, queries, frame, face, bary, closest, distance)  # a search's answers, rewritten
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass
from typing import no_type_check

import torch
import warp as wp
from jaxtyping import Int
from torch import Tensor

from .. import kernels
from .mesh import TriangleMesh

__all__ = ["TIE_WEIGHT", "TieTables", "canonical_answers", "canonical_face", "closest_weights", "tie_tables"]

# A closest point whose weight of a corner is below this lies on the edge opposite it (two such weights: on the third
# corner). Ericson's regions give a corner's or an edge's points exact zeros; the float32 searches may stop at a face
# whose closest point lies a rounding inside it (weights of 1e-7 on INSTA's frames), as near as the face across the
# edge to within 1e-8 of the distance. The faces then tie as well: a weight this small moves the point by 1e-5 of an
# edge (0.05 µm on FLAME's face).
TIE_WEIGHT = wp.constant(1e-5)
# ... as long as the face across is as near to within this share of the distance: a point on the mesh (or a hair off
# it) whose closest point lies 1e-5 of an edge inside a face is nearer that face than the next by far more.
TIE_DISTANCE = 1e-6


@dataclass(frozen=True)
class TieTables:
    """Per topology: the lowest id of a face with each vertex, and of a face with each face's edge opposite each of
    its corners (int32; a vertex in no face holds the int32 maximum)."""

    vertex_face: Int[Tensor, " V"]
    edge_face: Int[Tensor, "F 3"]


# By the faces tensor's id, with a weak reference to it (tensors compare elementwise, so no WeakKeyDictionary): an
# entry goes when its tensor does.
_TABLES: dict[int, tuple[weakref.ref, int, TieTables]] = {}


def tie_tables(faces: Int[Tensor, "F 3"], num_vertices: int) -> TieTables:
    """:class:`TieTables` of ``faces`` (int64, checked by the caller), kept for as long as the tensor lives: a model's
    faces are one buffer, which every frame's mesh shares, and topology is never written in place."""
    kept = _TABLES.get(id(faces))
    if kept is not None and kept[0]() is faces and kept[1] == num_vertices:
        return kept[2]
    f = faces.shape[0]
    ids = torch.arange(f, device=faces.device).repeat_interleave(3)
    vertex_face = torch.full((num_vertices,), torch.iinfo(torch.int32).max, dtype=torch.long, device=faces.device)
    vertex_face.scatter_reduce_(0, faces.reshape(-1), ids, reduce="amin")
    # Edge k of a face is the one opposite its corner k: corners (1, 2), (2, 0), (0, 1), as an undirected pair.
    ends = faces[:, [[1, 2], [2, 0], [0, 1]]].reshape(-1, 2)  # [3F, 2]
    low, high = ends.amin(dim=1), ends.amax(dim=1)
    edge, inverse = torch.unique(low * num_vertices + high, return_inverse=True)
    lowest = torch.full((edge.shape[0],), f, dtype=torch.long, device=faces.device)
    lowest.scatter_reduce_(0, inverse, ids, reduce="amin")
    tables = TieTables(vertex_face.to(torch.int32), lowest[inverse].reshape(f, 3).to(torch.int32).contiguous())
    key = id(faces)
    _TABLES[key] = (weakref.ref(faces, lambda _, key=key: _TABLES.pop(key, None)), num_vertices, tables)
    return tables


@no_type_check  # Warp parameter types are not Python type hints; keep the jaxtyping checker off them.
@wp.func
def _wide(x: wp.vec3):
    """``x`` in float64."""
    return wp.vec3d(wp.float64(x[0]), wp.float64(x[1]), wp.float64(x[2]))


@no_type_check
@wp.func
def closest_weights(a: wp.vec3, b: wp.vec3, c: wp.vec3, q: wp.vec3):
    """The weights ``v``, ``w`` of ``b`` and ``c`` of the point of triangle ``(a, b, c)`` closest to ``q`` (Ericson's
    regions, in float64: a corner's or an edge's weights are exact zeros and ones)."""
    a64 = _wide(a)
    ab = _wide(b) - a64
    ac = _wide(c) - a64
    ap = _wide(q) - a64
    zero = wp.float64(0.0)
    one = wp.float64(1.0)
    d1 = wp.dot(ab, ap)
    d2 = wp.dot(ac, ap)
    bp = ap - ab
    d3 = wp.dot(ab, bp)
    d4 = wp.dot(ac, bp)
    cp = ap - ac
    d5 = wp.dot(ab, cp)
    d6 = wp.dot(ac, cp)
    vc = d1 * d4 - d3 * d2
    vb = d5 * d2 - d1 * d6
    va = d3 * d6 - d5 * d4
    v = zero
    w = zero
    if d1 <= zero and d2 <= zero:
        v = zero
    elif d3 >= zero and d4 <= d3:
        v = one
    elif vc <= zero and d1 >= zero and d3 <= zero:
        v = d1 / (d1 - d3)
    elif d6 >= zero and d5 <= d6:
        w = one
    elif vb <= zero and d2 >= zero and d6 <= zero:
        w = d2 / (d2 - d6)
    elif va <= zero and d4 - d3 >= zero and d5 - d6 >= zero:
        w = (d4 - d3) / ((d4 - d3) + (d5 - d6))
        v = one - w
    else:
        inv = one / (va + vb + vc)
        v = vb * inv
        w = vc * inv
    return v, w


@no_type_check
@wp.func
def canonical_face(
    points: wp.array2d(dtype=wp.vec3),
    faces: wp.array2d(dtype=wp.int32),
    vertex_face: wp.array(dtype=wp.int32),
    edge_face: wp.array2d(dtype=wp.int32),
    fr: int,
    f: int,
    q: wp.vec3,
):
    """The lowest id among the faces of frame ``fr``'s mesh (float32 ``points [frames, V]``, the searches' own) that
    share the corner or edge of face ``f`` closest to ``q`` (within TIE_WEIGHT of it), where that face is as near as
    ``f`` (within TIE_DISTANCE); else ``f`` itself, as where the closest point lies inside it (or ``f`` is -1). With
    it, the weights ``v``, ``w`` of its closest point (:func:`closest_weights`; 0 where ``f`` is -1)."""
    g = f
    v = wp.float64(0.0)
    w = wp.float64(0.0)
    if f >= 0:
        a = points[fr, faces[f, 0]]
        b = points[fr, faces[f, 1]]
        c = points[fr, faces[f, 2]]
        v, w = closest_weights(a, b, c, q)
        tie = wp.float64(TIE_WEIGHT)
        small_u = wp.float64(1.0) - v - w < tie
        small_v = v < tie
        small_w = w < tie
        if small_v and small_w:
            g = vertex_face[faces[f, 0]]
        elif small_u and small_w:
            g = vertex_face[faces[f, 1]]
        elif small_u and small_v:
            g = vertex_face[faces[f, 2]]
        elif small_u:
            g = edge_face[f, 0]
        elif small_v:
            g = edge_face[f, 1]
        elif small_w:
            g = edge_face[f, 2]
        if g != f:  # as near to within TIE_DISTANCE of the distance (and float64's rounding of the face's size), or not
            ga = points[fr, faces[g, 0]]
            gb = points[fr, faces[g, 1]]
            gc = points[fr, faces[g, 2]]
            gv, gw = closest_weights(ga, gb, gc, q)
            size = wp.float64(wp.length(b - a) + wp.length(c - a))
            reach = _distance(a, b, c, q, v, w) * wp.float64(1.0 + TIE_DISTANCE) + wp.float64(1e-9) * size
            if _distance(ga, gb, gc, q, gv, gw) > reach:
                g = f
            else:
                v = gv
                w = gw
    return g, v, w


@no_type_check
@wp.func
def _point(a: wp.vec3, b: wp.vec3, c: wp.vec3, v: wp.float64, w: wp.float64):
    """``a + v (b - a) + w (c - a)`` in float64."""
    a64 = _wide(a)
    return a64 + (_wide(b) - a64) * v + (_wide(c) - a64) * w


@no_type_check
@wp.func
def _distance(a: wp.vec3, b: wp.vec3, c: wp.vec3, q: wp.vec3, v: wp.float64, w: wp.float64):
    """``|q - (a + v (b - a) + w (c - a))|`` in float64."""
    return wp.length(_wide(q) - _point(a, b, c, v, w))


@no_type_check  # Warp parameter types are not Python type hints; keep the jaxtyping checker off them.
@wp.kernel
def _canonical_kernel(
    points: wp.array2d(dtype=wp.vec3),
    faces: wp.array2d(dtype=wp.int32),
    vertex_face: wp.array(dtype=wp.int32),
    edge_face: wp.array2d(dtype=wp.int32),
    queries: wp.array(dtype=wp.vec3),
    frame: wp.array(dtype=wp.int64),
    face: wp.array(dtype=wp.int32),
    bary: wp.array(dtype=wp.vec3),
    closest: wp.array(dtype=wp.vec3),
    distance: wp.array(dtype=wp.float32),
):
    """:func:`canonical_answers` of one query: the new face's weights, point and distance in float64 from the float32
    corners, as the wide BVH's answer."""
    i = wp.tid()
    f = face[i]
    fr = int(frame[i])
    q = queries[i]
    g, v, w = canonical_face(points, faces, vertex_face, edge_face, fr, f, q)
    if g != f:
        p64 = _point(points[fr, faces[g, 0]], points[fr, faces[g, 1]], points[fr, faces[g, 2]], v, w)
        point = wp.vec3(wp.float32(p64[0]), wp.float32(p64[1]), wp.float32(p64[2]))
        face[i] = g
        bary[i] = wp.vec3(wp.float32(wp.float64(1.0) - v - w), wp.float32(v), wp.float32(w))
        closest[i] = point
        distance[i] = wp.length(q - point)


def canonical_answers(
    mesh: TriangleMesh,
    queries: Tensor,
    frame: Tensor,
    face: Tensor,
    bary: Tensor,
    closest: Tensor,
    distance: Tensor,
) -> None:
    """Rewrite a nearest-face search's answers on ``mesh`` (float32, the frames' Warp space: face, weights, closest
    point, distance) where other faces are as near: the lowest id of those, and its weights, point and distance."""
    tables = tie_tables(mesh.faces, mesh.num_vertices)
    shared = [mesh.warp_points(), mesh._faces32.view(-1, 3), tables.vertex_face, tables.edge_face]
    kernels.launch_rows(_canonical_kernel, queries.shape[0], shared, [queries, frame, face, bary, closest, distance], mesh.device)
