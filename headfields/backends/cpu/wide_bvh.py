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

The walk is native code in this folder's ``.cpp`` files (``wide_bvh_walk.cpp``, shared; ``wide_bvh_rays.cpp``;
``wide_bvh_points.cpp``), which this module assembles into each query's ``wp.func_native`` snippet. What it takes from
Warp beyond its public Python API: that Warp compiles CPU code with clang (the vector extensions, ``__builtin_ctz``)
for the host CPU (``-march=native``, in the default of ``wp.config.cpu_compiler_flags``; a user's ``""``, a generic
target, leaves the walk on SSE2 lanes, slower); the C++ names of its runtime (``wp::vec3``, an array's ``.data``
pointer, a ``wp.struct``'s fields by name); and ``__CUDA_ARCH__`` to leave the snippet out of CUDA builds.
:func:`available` builds the module once before the walk is used: where the build fails (a Warp that changed these),
a ``RuntimeWarning`` says so and the meshes use Warp's own queries (``HEADFIELDS_WIDE_BVH=0`` does the same on
purpose), as for a tree too deep for the walk's stack. ``tests/unit/backends/test_wide_bvh.py`` fails when the build
does, and when Warp's default stops targeting the host CPU.

The tree's builder and its layout (:class:`WideBvh`) are kept with the code that hands the layout to the walk
(``_Tree``): the ``.cpp`` files read it field by field.
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

from ... import kernels
from .native import native_sections

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


def _snippet(query: str, finish: str = "finish", found: str = "") -> str:
    """A query's native code: the walk (``wide_bvh_walk.cpp``) with the tests, setup and finish of ``query``'s file
    (``wide_bvh_rays.cpp``, ``wide_bvh_points.cpp``; ``found``: what the points' leaf test does on a face in reach),
    CPU only (a CUDA build of the module compiles it to nothing: CUDA uses Warp's queries)."""
    walk, own = native_sections("wide_bvh_walk.cpp"), native_sections(query)
    loop = walk["walk"].replace("NODE_TEST\n", own["node_test"]).replace("LEAF_TEST\n", own["leaf_test"])
    loop = loop.replace("IN_REACH", own["in_reach"].strip()).replace("FOUND", found)
    code = (walk["prelude"] + own["setup"] + loop + own[finish]).replace("STACK_SIZE", str(STACK_SIZE))
    return "#if !defined(__CUDA_ARCH__)\n" + code.replace("PACK_ROWS", str(PACK_ROWS)) + "#endif\n"


_FIRST_HIT = _snippet("wide_bvh_rays.cpp")
_NEAREST = _snippet("wide_bvh_points.cpp", finish="nearest_finish")
_WITHIN = _snippet("wide_bvh_points.cpp", finish="within_finish", found="goto done;")


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
            f"headfields.backends.cpu.wide_bvh: Warp {wp.__version__} could not build the wide BVH's CPU walk ({error}); "
            f"ray hits, closest points and within_distance use Warp's own queries on the CPU (about half as fast). "
            f"Set {WIDE_BVH_SWITCH}=0 to silence this.",
            RuntimeWarning,
            stacklevel=2,
        )
        return False
    return True
