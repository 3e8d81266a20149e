"""First ray hits, nearest faces and faces within reach on the CPU, through an 8-wide BVH whose box and triangle
tests run in SIMD lanes.

Warp's ``mesh_query_ray`` walks a binary BVH one box at a time; on the CPU that ran at 0.25x Embree
(open3d's ``cast_rays``), whose BVH tests 4-8 boxes per instruction. Warp's kernel language has no vector
type wider than its scalar code, so the traversal here is a native snippet (``wp.func_native``) written with
clang's vector extensions, which Warp's own CPU compiler (clang, ``-march=native``) turns into SSE / AVX
(or NEON) instructions: eight child boxes per node tested at once, four triangles per leaf intersected at
once (Moller-Trumbore). Measured on three head-like meshes, 1M rays, 2 cores (benchmarks/mesh_queries.py):
``ray_intersect`` at 2.2-2.4x Warp's query and 0.62-0.68x Embree. Triangles within float32's error of an edge,
and the face found, are intersected again in float64: hits and misses are float64's. The same walk, with a point's
distance to 8 boxes and to 4 triangles a step, finds nearest faces (unsigned closest points: 2.0-2.3x Warp's
query) and faces within reach (1.35-1.5x). CUDA keeps Warp's own queries, which are fast there.

The tree's shape is built once per mesh (top-down, a full-sweep surface-area heuristic, in numpy) on frame 0;
every frame shares it and only its boxes and triangles are refit when the vertices move, as Warp refits its own.

What the snippet takes from Warp beyond its public Python API, all in this module: that Warp compiles CPU code with
clang (the vector extensions, ``__builtin_ctz``) for the host CPU (``-march=native``, in the default of
``wp.config.cpu_compiler_flags``; a user's ``""``, a generic target, leaves the walk on SSE2 lanes, slower); the C++
names of its runtime (``wp::vec3``, an array's ``.data`` pointer, a ``wp.struct``'s fields by name); and
``__CUDA_ARCH__`` to leave the snippet out of CUDA builds. :func:`available` builds the module once before the walk
is used: where the build fails (a Warp that changed these), a ``RuntimeWarning`` says so and the meshes use Warp's own
queries (``HEADFIELDS_WIDE_BVH=0`` does the same on purpose), as for a tree too deep for the walk's stack.
``tests/test_wide_bvh.py`` fails when the build does, and when Warp's default stops targeting the host CPU.

One file over 500 lines because the tree's builder, its layout and the native walk that reads that layout must
agree field by field; they are kept where one edit sees all three.
"""

from __future__ import annotations

import os
import sys
import warnings
from dataclasses import dataclass
from functools import cache
from typing import no_type_check

import numpy as np
import torch
import warp as wp
from jaxtyping import Bool, Float, Int
from torch import Tensor

from .. import kernels

NODE_WIDTH = 8  # children per node: one AVX register of float32 box planes
LEAF_WIDTH = 4  # triangles per leaf: one SSE register of each coordinate
PACK_ROWS = 11  # per leaf lane: corner a, edges b - a and c - a (xyz each), the edges' L1 lengths' sum and product
STACK_SIZE = 256  # traversal stack entries (the snippet's arrays are this long)
# A walk down the tree keeps at most NODE_WIDTH - 1 siblings a level on the stack: deeper trees (only pathological
# meshes build them) use Warp's query instead.
MAX_DEPTH = (STACK_SIZE - 1) // (NODE_WIDTH - 1)
REFIT_FRAMES = 64  # frames refit at once, which bounds the refit's temporary memory
WIDE_BVH_SWITCH = "HEADFIELDS_WIDE_BVH"  # "0" in the environment: Warp's own queries on the CPU too


def _surface_area(low: np.ndarray, high: np.ndarray) -> np.ndarray | float:
    """Half the surface area of boxes ``[..., 3]`` (what the SAH compares; empty boxes have none)."""
    d = np.maximum(high - low, 0.0)
    return d[..., 0] * d[..., 1] + d[..., 1] * d[..., 2] + d[..., 2] * d[..., 0]


def _box_area(ids: np.ndarray, low: np.ndarray, high: np.ndarray) -> float:
    """The surface area of triangles ``ids``' bounding box."""
    return float(_surface_area(low[ids].min(0), high[ids].max(0)))


def _sah_split(
    ids: np.ndarray, low: np.ndarray, high: np.ndarray, centre: np.ndarray
) -> tuple[tuple[np.ndarray, float], tuple[np.ndarray, float]]:
    """Split triangles ``ids`` in two where the surface-area heuristic is least, over every position along each
    axis's centroid order (a full sweep: for a few thousand triangles as cheap as binning, and never worse); each
    half with its box's surface area. The three axes are swept at once (a build is mostly splits of a few triangles,
    where numpy's calls cost more than their work); ties go to the first axis, then the first position."""
    n = len(ids)
    order = ids[np.argsort(centre[ids], axis=0, kind="stable").T]  # [3 axes, n]
    lo, hi = low[order], high[order]  # [3, n, 3]
    left = _surface_area(np.minimum.accumulate(lo, axis=1)[:, :-1], np.maximum.accumulate(hi, axis=1)[:, :-1])
    right = _surface_area(
        np.minimum.accumulate(lo[:, ::-1], axis=1)[:, ::-1][:, 1:], np.maximum.accumulate(hi[:, ::-1], axis=1)[:, ::-1][:, 1:]
    )
    counts = np.arange(1, n)
    cost = left * counts + right * (n - counts)  # [3, n - 1]
    k = np.argmin(cost, axis=1)
    best = cost[np.arange(3), k]
    axis = int(np.argmin(best))
    if not best[axis] < np.inf:  # equal centroids everywhere (or no finite cost): halves
        halves = ids[: n // 2], ids[n // 2 :]
        return (halves[0], _box_area(halves[0], low, high)), (halves[1], _box_area(halves[1], low, high))
    k = k[axis]
    return (order[axis, : k + 1], float(left[axis, k])), (order[axis, k + 1 :], float(right[axis, k]))


@dataclass(frozen=True)
class WideTopology:
    """The shape of an 8-wide BVH over ``F`` triangles: ``N`` nodes (node 0 the root, parents before children)
    and ``P`` leaves of up to 4 triangles."""

    child: Int[Tensor, "N 8"]  # int32: >= 0 a node, < 0 leaf -(c + 1), 0 on an empty slot (its box is empty)
    filled: Bool[Tensor, "N 8"]  # slot holds a child
    leaf_faces: Int[Tensor, "P 4"]  # int32 face ids, -1 where a leaf has fewer than 4
    levels: list[Tensor]  # node ids by depth, the root's level first

    @property
    def depth(self) -> int:
        """Levels of nodes (MAX_DEPTH bounds what the walk's stack holds)."""
        return len(self.levels)


def build_topology(triangles: Float[Tensor, "F 3 3"]) -> WideTopology:
    """Top-down build: split the node's triangles by the SAH, then keep splitting its child of largest area until
    it has 8 children or every child fits a leaf (at most 4 triangles)."""
    tri = triangles.detach().double().cpu().numpy()
    low, high = tri.min(axis=1), tri.max(axis=1)
    centre = (low + high) / 2
    nodes: list[list[tuple[bool, np.ndarray | int]]] = []
    depth: list[int] = []
    todo: list[tuple[np.ndarray, int, tuple[int, int] | None]] = [(np.arange(len(tri)), 0, None)]
    while todo:  # iterative: a deep tree must not hit Python's recursion limit before MAX_DEPTH is checked
        ids, level, parent = todo.pop()
        me = len(nodes)
        nodes.append([])
        depth.append(level)
        if parent is not None:
            nodes[parent[0]][parent[1]] = (False, me)
        kids, areas = [ids], [np.inf]  # the only child is split first: its area is compared with no other
        while len(kids) < NODE_WIDTH:
            big = [(area, i) for i, (k, area) in enumerate(zip(kids, areas, strict=True)) if len(k) > LEAF_WIDTH]
            if not big:
                break
            i = max(big)[1]
            (left, left_area), (right, right_area) = _sah_split(kids[i], low, high, centre)
            kids[i : i + 1], areas[i : i + 1] = [left, right], [left_area, right_area]
        for j, k in enumerate(kids):
            nodes[me].append((True, k))
            if len(k) > LEAF_WIDTH:
                todo.append((k, level + 1, (me, j)))
    child = np.zeros((len(nodes), NODE_WIDTH), dtype=np.int32)
    filled = np.zeros((len(nodes), NODE_WIDTH), dtype=bool)
    leaves = []
    for n, kids in enumerate(nodes):
        for j, (is_leaf, value) in enumerate(kids):
            filled[n, j] = True
            if is_leaf:
                faces = np.full(LEAF_WIDTH, -1, dtype=np.int32)
                faces[: len(value)] = value
                leaves.append(faces)
                child[n, j] = -len(leaves)
            else:
                child[n, j] = value
    depths = torch.tensor(depth)
    return WideTopology(
        child=torch.from_numpy(child),
        filled=torch.from_numpy(filled),
        leaf_faces=torch.from_numpy(np.stack(leaves)),
        levels=[torch.nonzero(depths == d).flatten() for d in range(int(depths.max()) + 1)],
    )


class WideBvh:
    """An 8-wide BVH per frame of a mesh, sharing one :class:`WideTopology`: per frame, each node's child boxes
    ``[6, 8]`` (low x, y, z, high x, y, z; lanes are children) and each leaf's triangles ``[11, 4]`` (corner a,
    edges b - a and c - a, by coordinate; then the edges' L1 lengths' sum and product, which scale float32's error
    bound; lanes are triangles), float32, laid out as the snippet reads them."""

    def __init__(self, topology: WideTopology, faces: Int[Tensor, " F3"], points: Float[Tensor, "B V 3"]):
        """``faces``: the mesh's flat int32 corner ids (``TriangleMesh``'s own copy, which Warp's meshes view too)."""
        self.topology = topology
        self.faces = faces
        self._leaf_corners = faces.view(-1, 3).long()[topology.leaf_faces.long().clamp(min=0)]  # [P, 4, 3] vertex ids
        self._pad = topology.leaf_faces < 0
        num_frames = points.shape[0]
        self.boxes = torch.empty(num_frames, topology.child.shape[0], 6, NODE_WIDTH)
        self.packs = torch.empty(num_frames, topology.leaf_faces.shape[0], PACK_ROWS, LEAF_WIDTH)
        self.refit(points)

    def refit(self, points: Float[Tensor, "B V 3"]) -> None:
        """Recompute every frame's boxes and triangles from ``points`` (float32, the frames' Warp copy), kept: the
        traversal recomputes the hit it found from the face's corners there."""
        self.points = points
        for lo in range(0, points.shape[0], REFIT_FRAMES):
            self._refit_frames(points[lo : lo + REFIT_FRAMES], slice(lo, lo + REFIT_FRAMES))

    def _refit_frames(self, points: Tensor, frames: slice) -> None:
        tri = points[:, self._leaf_corners]  # [b, P, 4, corner, xyz]
        pad = self._pad[None, :, :, None]
        leaf_low = tri.amin(dim=3).masked_fill(pad, torch.inf).amin(dim=2)  # [b, P, 3]
        leaf_high = tri.amax(dim=3).masked_fill(pad, -torch.inf).amax(dim=2)
        a = tri[..., 0, :]
        edges = (tri[..., 1:, :] - a[..., None, :]).masked_fill(pad[..., None], 0.0)  # padding never hits
        pack = torch.cat([a[..., None, :], edges], dim=3).flatten(3)  # [b, P, 4 lanes, a / b-a / c-a by xyz]
        lengths = edges.abs().sum(dim=4)  # [b, P, 4 lanes, 2]: L1 lengths of b - a and c - a
        scales = torch.stack([lengths.sum(dim=3), lengths.prod(dim=3)], dim=3)
        self.packs[frames] = torch.cat([pack, scales], dim=3).transpose(2, 3)
        t = self.topology
        num_nodes = t.child.shape[0]
        node_low = torch.empty(points.shape[0], num_nodes, 3)
        node_high = torch.empty(points.shape[0], num_nodes, 3)

        def children(nodes: Tensor) -> tuple[Tensor, Tensor]:  # child boxes [b, n, 8, 3] of ``nodes``
            code = t.child[nodes].long()
            inner, leaf = code.clamp(min=0), (-code - 1).clamp(min=0)
            is_node, empty = code[None, :, :, None] >= 0, ~t.filled[nodes][None, :, :, None]
            low = torch.where(is_node, node_low[:, inner], leaf_low[:, leaf]).masked_fill(empty, torch.inf)
            high = torch.where(is_node, node_high[:, inner], leaf_high[:, leaf]).masked_fill(empty, -torch.inf)
            return low, high

        for nodes in reversed(t.levels):  # leaves up: a node's children are done before it
            low, high = children(nodes)
            node_low[:, nodes], node_high[:, nodes] = low.amin(dim=2), high.amax(dim=2)
        low, high = children(torch.arange(num_nodes))
        self.boxes[frames] = torch.cat([low, high], dim=3).transpose(2, 3)


# Every query walks the tree alike (_WALK): the node's 8 child boxes tested at once give a key per child (a ray's entry
# distance, a point's squared distance to the box) and a mask of those in reach; children in reach are pushed far to
# near and the nearest is taken next; an entry popped out of reach (beyond the best answer so far) is skipped.
_PRELUDE = r"""
typedef float vf8 __attribute__((ext_vector_type(8)));
typedef int vi8 __attribute__((ext_vector_type(8)));
typedef float vf4 __attribute__((ext_vector_type(4)));
typedef int vi4 __attribute__((ext_vector_type(4)));
const float* B = tree.boxes.data + (long long)f * tree.num_nodes * 48;
const int* C = tree.child.data;
const float* P = tree.packs.data + (long long)f * tree.num_leaves * PACK_ROWS * 4;
const wp::vec3* frame_points = tree.points.data + (long long)f * tree.num_vertices;
// Face g's corners in this frame (the packs hold float32 edges, rounded: float64 work starts from these).
auto corners = [&](int g, wp::vec3& pa, wp::vec3& pb, wp::vec3& pc) {
  const int* corner = tree.faces.data + (long long)g * 3;
  pa = frame_points[corner[0]]; pb = frame_points[corner[1]]; pc = frame_points[corner[2]];
};
"""

_WALK = r"""
int stack_node[STACK_SIZE];
float stack_key[STACK_SIZE];
int sp = 0;
int cur = 0;
while (true) {
  if (cur >= 0) {
    const float* nb = B + (long long)cur * 48;
NODE_TEST
    int mask = 0;
    for (int j = 0; j < 8; ++j) mask |= (reach[j] & 1) << j;
    const int* nc = C + (long long)cur * 8;
    if (mask != 0 && (mask & (mask - 1)) == 0) { cur = nc[__builtin_ctz(mask)]; continue; }
    if (mask != 0) {
      int base = sp;
      while (mask) {
        int j = __builtin_ctz(mask);
        mask &= mask - 1;
        float kj = key[j];
        int k = sp++;
        while (k > base && stack_key[k - 1] < kj) { stack_key[k] = stack_key[k - 1]; stack_node[k] = stack_node[k - 1]; --k; }
        stack_key[k] = kj;
        stack_node[k] = nc[j];
      }
      cur = stack_node[--sp];
      continue;
    }
  } else {
    int leaf = -cur - 1;
    const float* pk = P + (long long)leaf * PACK_ROWS * 4;
    vf4 ax, ay, az, e1x, e1y, e1z, e2x, e2y, e2z;  // corner a and edges b - a, c - a of 4 triangles
    __builtin_memcpy(&ax, pk + 0, 16); __builtin_memcpy(&ay, pk + 4, 16); __builtin_memcpy(&az, pk + 8, 16);
    __builtin_memcpy(&e1x, pk + 12, 16); __builtin_memcpy(&e1y, pk + 16, 16); __builtin_memcpy(&e1z, pk + 20, 16);
    __builtin_memcpy(&e2x, pk + 24, 16); __builtin_memcpy(&e2y, pk + 28, 16); __builtin_memcpy(&e2z, pk + 32, 16);
    vi4 lane_faces;  // -1 on padding lanes
    __builtin_memcpy(&lane_faces, tree.leaf_faces.data + (long long)leaf * 4, 16);
LEAF_TEST
  }
  cur = -0x7fffffff - 1;  // pop the nearest entry still in reach
  while (sp > 0) { --sp; if (IN_REACH) { cur = stack_node[sp]; break; } }
  if (cur == -0x7fffffff - 1) break;
}
"""


def _snippet(setup: str, node_test: str, in_reach: str, leaf_test: str, finish: str) -> str:
    """A query's native code: CPU only (a CUDA build of the module compiles it to nothing: CUDA uses Warp's queries)."""
    walk = _WALK.replace("NODE_TEST", node_test).replace("LEAF_TEST", leaf_test).replace("IN_REACH", in_reach)
    code = (_PRELUDE + setup + walk + finish).replace("STACK_SIZE", str(STACK_SIZE)).replace("PACK_ROWS", str(PACK_ROWS))
    return "#if !defined(__CUDA_ARCH__)\n" + code + "#endif\n"


# First hit of a ray. Boxes: the slab test; the far distance grows by a few ulps so that a box's rounding never drops
# a hit on its face (Ize 2013, "Robust BVH ray traversal"). Leaves: Moller-Trumbore on 4 triangles at once (u, v:
# weights of corners b and c); a triangle within float32's error bound of an edge is decided in float64 (exact()),
# and so is the face found. Outputs as Warp's query: bary (1 - u - v, u, v), the unit normal of (b - a) x (c - a).
_FIRST_HIT = _snippet(
    setup=r"""
float ox = o[0], oy = o[1], oz = o[2];
// A direction component under 1e-20 (zero included) is taken as 1e-20 of its sign: its inverse stays finite.
float dx = __builtin_fabsf(d[0]) < 1e-20f ? __builtin_copysignf(1e-20f, d[0]) : d[0];
float dy = __builtin_fabsf(d[1]) < 1e-20f ? __builtin_copysignf(1e-20f, d[1]) : d[1];
float dz = __builtin_fabsf(d[2]) < 1e-20f ? __builtin_copysignf(1e-20f, d[2]) : d[2];
float rx = 1.0f / dx, ry = 1.0f / dy, rz = 1.0f / dz;
// Which plane of each axis the ray meets first: rows 0-2 of a node are the low planes, 3-5 the high ones.
int near_x = rx >= 0.0f ? 0 : 3, near_y = ry >= 0.0f ? 1 : 4, near_z = rz >= 0.0f ? 2 : 5;
int far_x = 3 - near_x, far_y = 5 - near_y, far_z = 7 - near_z;
// The ray against face g in float64: whether it hits, and where.
auto exact = [&](int g, double& te, double& ue, double& ve) -> bool {
  wp::vec3 pa, pb, pc;
  corners(g, pa, pb, pc);
  double ax = pa[0], ay = pa[1], az = pa[2];
  double e1x = (double)pb[0] - ax, e1y = (double)pb[1] - ay, e1z = (double)pb[2] - az;
  double e2x = (double)pc[0] - ax, e2y = (double)pc[1] - ay, e2z = (double)pc[2] - az;
  double px = dy * e2z - dz * e2y, py = dz * e2x - dx * e2z, pz = dx * e2y - dy * e2x;
  double det = e1x * px + e1y * py + e1z * pz;
  double sx = ox - ax, sy = oy - ay, sz = oz - az;
  double qx = sy * e1z - sz * e1y, qy = sz * e1x - sx * e1z, qz = sx * e1y - sy * e1x;
  ue = (sx * px + sy * py + sz * pz) / det;
  ve = ((double)dx * qx + (double)dy * qy + (double)dz * qz) / det;
  te = (e2x * qx + e2y * qy + e2z * qz) / det;
  return det != 0.0 && ue >= 0.0 && ve >= 0.0 && ue + ve <= 1.0 && te >= 0.0;
};
// 16 float32 ulps (generous against the few the terms carry) of the direction's L1 length.
float error_scale = 16.0f * 1.1920929e-7f * (__builtin_fabsf(dx) + __builtin_fabsf(dy) + __builtin_fabsf(dz));
float tmax = max_t;
int best = -1;
""",
    node_test=r"""
    vf8 nx, fx, ny, fy, nz, fz;
    __builtin_memcpy(&nx, nb + near_x * 8, 32); __builtin_memcpy(&fx, nb + far_x * 8, 32);
    __builtin_memcpy(&ny, nb + near_y * 8, 32); __builtin_memcpy(&fy, nb + far_y * 8, 32);
    __builtin_memcpy(&nz, nb + near_z * 8, 32); __builtin_memcpy(&fz, nb + far_z * 8, 32);
    vf8 key = __builtin_elementwise_max(__builtin_elementwise_max((nx - ox) * rx, (ny - oy) * ry),
                                        __builtin_elementwise_max((nz - oz) * rz, (vf8)0.0f));
    vf8 exit = __builtin_elementwise_min(__builtin_elementwise_min((fx - ox) * rx, (fy - oy) * ry) * 1.0000004f,
                                         __builtin_elementwise_min((fz - oz) * rz * 1.0000004f, (vf8)tmax));
    vi8 reach = key <= exit;
""",
    in_reach="stack_key[sp] < tmax",
    leaf_test=r"""
    vf4 px = dy * e2z - dz * e2y, py = dz * e2x - dx * e2z, pz = dx * e2y - dy * e2x;
    vf4 det = e1x * px + e1y * py + e1z * pz;
    vf4 inv = 1.0f / det;
    vf4 sx = ox - ax, sy = oy - ay, sz = oz - az;
    vf4 u = (sx * px + sy * py + sz * pz) * inv;
    vf4 qx = sy * e1z - sz * e1y, qy = sz * e1x - sx * e1z, qz = sx * e1y - sy * e1x;
    vf4 v = (dx * qx + dy * qy + dz * qz) * inv;
    vf4 t = (e2x * qx + e2y * qy + e2z * qz) * inv;
    // A bound on float32's error in u and v (a few ulps of the largest terms summed, over det): grazing rays and
    // origins far from small triangles widen it. Lanes within it of an edge, or with det 0, are decided by exact().
    vf4 s1 = __builtin_elementwise_abs(sx) + __builtin_elementwise_abs(sy) + __builtin_elementwise_abs(sz);
    vf4 edge_sum, edge_product;  // |b - a|_1 + |c - a|_1 and their product, per lane
    __builtin_memcpy(&edge_sum, pk + 36, 16); __builtin_memcpy(&edge_product, pk + 40, 16);
    vf4 margin = (error_scale * (s1 * edge_sum + edge_product)) * __builtin_elementwise_abs(inv);
    vi4 near = (u >= -margin) & (v >= -margin) & (u + v <= 1.0f + margin) & (t >= 0.0f) & (t < tmax);
    vi4 maybe = ((det == 0.0f) & (lane_faces >= 0)) | near;
    vi4 sure = (u >= margin) & (v >= margin) & (u + v <= 1.0f - margin);
    for (int j = 0; j < 4; ++j) {
      if (!maybe[j] || t[j] >= tmax) continue;  // (det 0: t is NaN and goes on)
      int lane_face = lane_faces[j];
      if (sure[j]) { tmax = t[j]; best = lane_face; continue; }
      double te, ue, ve;  // this close to an edge, float32 may miss a hit or invent one: float64 decides
      if (exact(lane_face, te, ue, ve) && te < tmax) { tmax = (float)te; best = lane_face; }
    }
""",
    finish=r"""
face.data[i] = best;
if (best >= 0) {
  double te, ue, ve;
  exact(best, te, ue, ve);
  wp::vec3 pa, pb, pc;
  corners(best, pa, pb, pc);
  wp::vec3 n = wp::cross(pb - pa, pc - pa);
  t_hit.data[i] = (float)te;
  bary.data[i] = wp::vec3((float)(1.0 - ue - ve), (float)ue, (float)ve);
  normal.data[i] = n / wp::length(n);
} else {
  t_hit.data[i] = __builtin_inff();
  bary.data[i] = wp::vec3(0.0f);
  normal.data[i] = wp::vec3(0.0f);
}
""",
)


# Nearest face of a point, within a radius. Boxes: the squared distance from the point to each box. Leaves: the squared
# distance to 4 triangles at once (the plane's where the projection falls inside, else the nearest of the 3 edges).
# The face found gets its closest point again in float64 (Ericson's regions, "Real-Time Collision Detection" 5.1.5),
# which gives bary, point and distance; one farther than ``radius`` there is a miss. _WITHIN (within_distance) stops
# the walk at the first face in reach.
_POINT_SETUP = r"""
float qx = q[0], qy = q[1], qz = q[2];
// Squared reach: the radius's, and FLT_MAX for an unbounded one (an empty slot's infinite key stays out of reach).
float best = __builtin_fminf(radius * radius, 3.4028235e38f);
int best_face = -1;
"""
_POINT_NODE = r"""
    vf8 lx, ly, lz, hx, hy, hz;
    __builtin_memcpy(&lx, nb + 0, 32); __builtin_memcpy(&ly, nb + 8, 32); __builtin_memcpy(&lz, nb + 16, 32);
    __builtin_memcpy(&hx, nb + 24, 32); __builtin_memcpy(&hy, nb + 32, 32); __builtin_memcpy(&hz, nb + 40, 32);
    vf8 gx = __builtin_elementwise_max(__builtin_elementwise_max(lx - qx, qx - hx), (vf8)0.0f);
    vf8 gy = __builtin_elementwise_max(__builtin_elementwise_max(ly - qy, qy - hy), (vf8)0.0f);
    vf8 gz = __builtin_elementwise_max(__builtin_elementwise_max(lz - qz, qz - hz), (vf8)0.0f);
    vf8 key = gx * gx + gy * gy + gz * gz;
    vi8 reach = key <= best;
"""
_POINT_LEAF = r"""
    vf4 wx = qx - ax, wy = qy - ay, wz = qz - az;  // q - a
    vf4 d00 = e1x * e1x + e1y * e1y + e1z * e1z, d01 = e1x * e2x + e1y * e2y + e1z * e2z;
    vf4 d11 = e2x * e2x + e2y * e2y + e2z * e2z;
    vf4 d20 = wx * e1x + wy * e1y + wz * e1z, d21 = wx * e2x + wy * e2y + wz * e2z;
    vf4 den = d00 * d11 - d01 * d01;  // 0 on padding lanes: their distances are NaN or skipped below
    vf4 v = (d11 * d20 - d01 * d21) / den, w = (d00 * d21 - d01 * d20) / den;
    vf4 rx = wx - v * e1x - w * e2x, ry = wy - v * e1y - w * e2y, rz = wz - v * e1z - w * e2z;
    vf4 plane = rx * rx + ry * ry + rz * rz;
    vf4 zero = 0.0f, one = 1.0f;
    vf4 s = __builtin_elementwise_min(__builtin_elementwise_max(d20 / d00, zero), one);  // along a -> b
    vf4 ex = wx - s * e1x, ey = wy - s * e1y, ez = wz - s * e1z;
    vf4 edge = ex * ex + ey * ey + ez * ez;
    s = __builtin_elementwise_min(__builtin_elementwise_max(d21 / d11, zero), one);  // along a -> c
    ex = wx - s * e2x; ey = wy - s * e2y; ez = wz - s * e2z;
    edge = __builtin_elementwise_min(edge, ex * ex + ey * ey + ez * ez);
    vf4 bcx = e2x - e1x, bcy = e2y - e1y, bcz = e2z - e1z;  // b -> c
    vf4 bqx = wx - e1x, bqy = wy - e1y, bqz = wz - e1z;  // q - b
    s = (bqx * bcx + bqy * bcy + bqz * bcz) / (bcx * bcx + bcy * bcy + bcz * bcz);
    s = __builtin_elementwise_min(__builtin_elementwise_max(s, zero), one);
    ex = bqx - s * bcx; ey = bqy - s * bcy; ez = bqz - s * bcz;
    edge = __builtin_elementwise_min(edge, ex * ex + ey * ey + ez * ez);
    vi4 inside = (v >= 0.0f) & (w >= 0.0f) & (v + w <= 1.0f);
    vf4 dist = inside ? plane : edge;
    for (int j = 0; j < 4; ++j) {
      // A nearer face replaces the one found; the first within the radius counts (so ties keep the first found).
      if (lane_faces[j] >= 0 && (dist[j] < best || (best_face < 0 && dist[j] <= best))) {
        best = dist[j];
        best_face = lane_faces[j];
        FOUND
      }
    }
"""

_NEAREST = _snippet(
    setup=_POINT_SETUP,
    node_test=_POINT_NODE,
    in_reach="stack_key[sp] <= best",
    leaf_test=_POINT_LEAF.replace("FOUND", ""),
    finish=r"""
bool found = false;
if (best_face >= 0) {
  wp::vec3 pa, pb, pc;
  corners(best_face, pa, pb, pc);
  double ax = pa[0], ay = pa[1], az = pa[2];
  double abx = (double)pb[0] - ax, aby = (double)pb[1] - ay, abz = (double)pb[2] - az;
  double acx = (double)pc[0] - ax, acy = (double)pc[1] - ay, acz = (double)pc[2] - az;
  double apx = (double)qx - ax, apy = (double)qy - ay, apz = (double)qz - az;
  double d1 = abx * apx + aby * apy + abz * apz, d2 = acx * apx + acy * apy + acz * apz;
  double bpx = apx - abx, bpy = apy - aby, bpz = apz - abz;
  double d3 = abx * bpx + aby * bpy + abz * bpz, d4 = acx * bpx + acy * bpy + acz * bpz;
  double cpx = apx - acx, cpy = apy - acy, cpz = apz - acz;
  double d5 = abx * cpx + aby * cpy + abz * cpz, d6 = acx * cpx + acy * cpy + acz * cpz;
  double vc = d1 * d4 - d3 * d2, vb = d5 * d2 - d1 * d6, va = d3 * d6 - d5 * d4;
  double v, w;  // the closest point is a + v (b - a) + w (c - a)
  if (d1 <= 0.0 && d2 <= 0.0) { v = 0.0; w = 0.0; }
  else if (d3 >= 0.0 && d4 <= d3) { v = 1.0; w = 0.0; }
  else if (vc <= 0.0 && d1 >= 0.0 && d3 <= 0.0) { v = d1 / (d1 - d3); w = 0.0; }
  else if (d6 >= 0.0 && d5 <= d6) { v = 0.0; w = 1.0; }
  else if (vb <= 0.0 && d2 >= 0.0 && d6 <= 0.0) { v = 0.0; w = d2 / (d2 - d6); }
  else if (va <= 0.0 && d4 - d3 >= 0.0 && d5 - d6 >= 0.0) { w = (d4 - d3) / ((d4 - d3) + (d5 - d6)); v = 1.0 - w; }
  else { double inv = 1.0 / (va + vb + vc); v = vb * inv; w = vc * inv; }
  wp::vec3 c((float)(ax + v * abx + w * acx), (float)(ay + v * aby + w * acy), (float)(az + v * abz + w * acz));
  float dist = wp::length(q - c);
  if (dist <= radius) {
    found = true;
    face.data[i] = best_face;
    bary.data[i] = wp::vec3((float)(1.0 - v - w), (float)v, (float)w);
    closest.data[i] = c;
    distance.data[i] = dist;
  }
}
if (!found) {
  face.data[i] = -1;
  bary.data[i] = wp::vec3(0.0f);
  closest.data[i] = wp::vec3(0.0f);
  distance.data[i] = __builtin_inff();
}
""",
)

_WITHIN = _snippet(
    setup=_POINT_SETUP,
    node_test=_POINT_NODE,
    in_reach="stack_key[sp] <= best",
    leaf_test=_POINT_LEAF.replace("FOUND", "goto done;"),
    finish="done:\nwithin.data[i] = best_face >= 0;\n",
)


@no_type_check
@wp.struct
class _Tree:
    """A :class:`WideBvh` as the snippets read it: every frame's boxes and leaf packs, the shared topology, and the
    float32 frames and faces that float64 work starts from."""

    boxes: wp.array(dtype=wp.float32)
    child: wp.array(dtype=wp.int32)
    packs: wp.array(dtype=wp.float32)
    leaf_faces: wp.array(dtype=wp.int32)
    points: wp.array(dtype=wp.vec3)
    faces: wp.array(dtype=wp.int32)
    num_nodes: int
    num_leaves: int
    num_vertices: int


@no_type_check  # a Warp struct is no type hint the jaxtyping checker knows
def _warp_tree(bvh: WideBvh) -> _Tree:
    tree = _Tree()
    t = bvh.topology
    tree.boxes = kernels.to_warp(bvh.boxes.reshape(-1), wp.float32)
    tree.packs = kernels.to_warp(bvh.packs.reshape(-1), wp.float32)
    tree.child = kernels.to_warp(t.child.reshape(-1), wp.int32)
    tree.leaf_faces = kernels.to_warp(t.leaf_faces.reshape(-1), wp.int32)
    tree.points = kernels.to_warp(bvh.points.reshape(-1, 3), wp.vec3)
    tree.faces = kernels.to_warp(bvh.faces, wp.int32)
    tree.num_nodes, tree.num_leaves, tree.num_vertices = t.child.shape[0], t.leaf_faces.shape[0], bvh.points.shape[1]
    return tree


@no_type_check  # Warp parameter types are not Python type hints; keep the jaxtyping checker off them.
@wp.func_native(_FIRST_HIT)
def _first_hit(
    tree: _Tree,
    f: int,
    o: wp.vec3,
    d: wp.vec3,
    max_t: float,
    i: int,
    face: wp.array(dtype=wp.int32),
    t_hit: wp.array(dtype=wp.float32),
    bary: wp.array(dtype=wp.vec3),
    normal: wp.array(dtype=wp.vec3),
): ...


@no_type_check
@wp.kernel
def _first_hit_kernel(
    tree: _Tree,
    max_t: float,
    origins: wp.array(dtype=wp.vec3),
    dirs: wp.array(dtype=wp.vec3),
    frame: wp.array(dtype=wp.int64),
    face: wp.array(dtype=wp.int32),
    t_hit: wp.array(dtype=wp.float32),
    bary: wp.array(dtype=wp.vec3),
    normal: wp.array(dtype=wp.vec3),
):
    i = wp.tid()
    _first_hit(tree, int(frame[i]), origins[i], dirs[i], max_t, i, face, t_hit, bary, normal)


def first_hits(
    bvh: WideBvh,
    origins: Float[Tensor, "N 3"],
    dirs: Float[Tensor, "N 3"],
    frame: Int[Tensor, " N"],
    max_t: float,
    face: Int[Tensor, " N"],
    t: Float[Tensor, " N"],
    bary: Float[Tensor, "N 3"],
    normal: Float[Tensor, "N 3"],
) -> None:
    """Write each ray's first hit below ``max_t`` (CPU, float32 in the frames' Warp space, checked by the caller)
    into ``face`` (int32, -1 on a miss), ``t`` (inf), ``bary`` and ``normal`` (zero) as Warp's query does."""
    per_ray = [origins, dirs, frame, face, t, bary, normal]
    kernels.launch_rows(_first_hit_kernel, origins.shape[0], [_warp_tree(bvh), max_t], per_ray, origins.device)


@no_type_check
@wp.func_native(_NEAREST)
def _nearest(
    tree: _Tree,
    f: int,
    q: wp.vec3,
    radius: float,
    i: int,
    face: wp.array(dtype=wp.int32),
    bary: wp.array(dtype=wp.vec3),
    closest: wp.array(dtype=wp.vec3),
    distance: wp.array(dtype=wp.float32),
): ...


@no_type_check
@wp.kernel
def _nearest_kernel(
    tree: _Tree,
    radius: float,
    queries: wp.array(dtype=wp.vec3),
    frame: wp.array(dtype=wp.int64),
    face: wp.array(dtype=wp.int32),
    bary: wp.array(dtype=wp.vec3),
    closest: wp.array(dtype=wp.vec3),
    distance: wp.array(dtype=wp.float32),
    order: wp.array(dtype=wp.int64),
):
    i = int(order[wp.tid()])
    _nearest(tree, int(frame[i]), queries[i], radius, i, face, bary, closest, distance)


@no_type_check
@wp.func_native(_WITHIN)
def _within(tree: _Tree, f: int, q: wp.vec3, radius: float, i: int, within: wp.array(dtype=wp.bool)): ...


@no_type_check
@wp.kernel
def _within_kernel(
    tree: _Tree,
    radius: float,
    queries: wp.array(dtype=wp.vec3),
    frame: wp.array(dtype=wp.int64),
    within: wp.array(dtype=wp.bool),
    order: wp.array(dtype=wp.int64),
):
    i = int(order[wp.tid()])
    _within(tree, int(frame[i]), queries[i], radius, i, within)


def nearest_faces(
    bvh: WideBvh,
    queries: Float[Tensor, "N 3"],
    frame: Int[Tensor, " N"],
    radius: float,
    order: Int[Tensor, " N"],
    face: Int[Tensor, " N"],
    bary: Float[Tensor, "N 3"],
    closest: Float[Tensor, "N 3"],
    distance: Float[Tensor, " N"],
) -> None:
    """Write each point's nearest face within ``radius`` (CPU, float32 in the frames' Warp space, checked by the
    caller; walked in ``order``) into ``face`` (int32, -1 beyond it), ``bary``, ``closest`` (zero) and ``distance``
    (inf), as Warp's unsigned closest-point query does."""
    shared = [_warp_tree(bvh), radius, queries, frame, face, bary, closest, distance]
    kernels.launch_rows(_nearest_kernel, queries.shape[0], shared, [order], queries.device)


def within_reach(
    bvh: WideBvh,
    queries: Float[Tensor, "N 3"],
    frame: Int[Tensor, " N"],
    radius: float,
    order: Int[Tensor, " N"],
    within: Bool[Tensor, " N"],
) -> None:
    """Write whether each point has a face within ``radius`` (CPU, float32 in the frames' Warp space, checked by the
    caller; walked in ``order``) into ``within``: the first face in reach answers."""
    shared = [_warp_tree(bvh), radius, queries, frame, within]
    kernels.launch_rows(_within_kernel, queries.shape[0], shared, [order], queries.device)


@cache
def available() -> bool:
    """Whether the CPU's queries may walk the wide BVH: not switched off (``HEADFIELDS_WIDE_BVH=0``), and Warp builds
    this module's native code for the CPU (tried once, at the first call: seconds, then Warp's kernel cache). Where the
    build fails, a ``RuntimeWarning`` names Warp's version and the error, and the answer is False: Warp's own queries
    answer instead (:meth:`~headfields.geometry.TriangleMesh.wide_bvh` gives None).

    ```python
    if available():
        first_hits(bvh, origins, dirs, frame, max_t, face, t, bary, normal)
    ```
    """
    if os.environ.get(WIDE_BVH_SWITCH, "1") == "0":
        return False
    try:
        wp.load_module(sys.modules[__name__], device="cpu")
    except Exception as error:  # Warp raises a bare Exception when its CPU build fails
        warnings.warn(
            f"headfields.geometry.wide_bvh: Warp {wp.__version__} could not build the wide BVH's CPU walk ({error}); "
            f"ray hits, closest points and within_distance use Warp's own queries on the CPU (about half as fast). "
            f"Set {WIDE_BVH_SWITCH}=0 to silence this.",
            RuntimeWarning,
            stacklevel=2,
        )
        return False
    return True
