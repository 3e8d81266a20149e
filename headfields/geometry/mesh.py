"""A triangle mesh over B frames with one Warp BVH per frame, refit in place when the vertices move."""

from __future__ import annotations

import torch
import warp as wp
from jaxtyping import Float, Int
from torch import Tensor

from .. import kernels
from ..backends.cpu.wide_bvh import MAX_DEPTH, WideBvh, build_topology
from ..backends.cpu.wide_bvh import available as wide_bvh_available
from ..checks import IntLike, check_finite, check_float, check_int, frame_rows
from ..device_paths import takes_cuda_path
from .triangles import check_nondegenerate

# The wide BVH's build (numpy, about 30 us a face on a 2-core AMD EPYC) pays back over many queries (it saves
# 0.07-0.45 us each, by query): a mesh builds it once its queries add up to this many a face, so a training loop's
# meshes get it within a few steps and a one-off query over a large mesh (metrics.visible_faces: one ray a face) keeps
# Warp's BVH.
WIDE_BUILD_QUERIES_PER_FACE = 32
# Triangles a leaf of Warp's triangle BVHs holds (None: Warp's default, 4). The nearest-face search is a third of
# INSTA's frame on a GPU; whether another size suits it awaits a GPU's answer (tools/frame_variants.py). Read
# when a mesh builds its BVHs.
BVH_LEAF_SIZE: int | None = None


def _version(t: Tensor) -> int:
    """torch's count of in-place writes to ``t`` (shared with its views); -1 where it keeps none (inference
    tensors), which makes every query re-copy the vertices."""
    try:
        return t._version
    except RuntimeError:
        return -1


class TriangleMesh:
    """Shared faces ``[F,3]`` and per-frame vertices ``[B,V,3]``.

    ``vertices`` keeps the caller's tensor (dtype, device, autograd graph), so quantities that torch
    recomputes from query indices carry gradients to it. Warp holds a float32 copy with one BVH per frame,
    built on first use and refit (never rebuilt) when the vertices move: through :meth:`update`, or by an
    in-place write that torch counts (``vertices.mul_``, a non-fused optimiser step), which the next query
    notices. The copy is centred on each frame's box (:meth:`warp_origin`; queries are moved the same way by
    :meth:`to_warp_frame`), so a mesh far from the world origin keeps float32's precision relative to its size.
    """

    def __init__(self, vertices: Float[Tensor, "B V 3"] | Float[Tensor, "V 3"], faces: Int[Tensor, "F 3"]):
        if isinstance(vertices, Tensor) and vertices.dim() == 2:
            vertices = vertices[None]
        check_float("vertices", vertices, [None, None, 3])
        if vertices.shape[0] == 0 or vertices.shape[1] == 0:
            raise ValueError(f"vertices: expected at least one frame and one vertex, got shape {list(vertices.shape)}")
        check_int("faces", faces, [None, 3], upper=vertices.shape[1], device=vertices.device)
        if faces.shape[0] == 0:
            raise ValueError("faces: expected at least one triangle, got an empty [0, 3] tensor")
        self.faces: Int[Tensor, "F 3"] = faces.long()
        self.vertices: Float[Tensor, "B V 3"] = vertices
        self._points, self._origin = self._float32_copy(vertices)  # what Warp's BVHs are built on, and their centre
        self._synced = (vertices, _version(vertices))
        self._faces32 = self.faces.to(torch.int32).reshape(-1)  # kept alive: Warp's meshes and the wide BVH view it
        self._meshes: list[wp.Mesh] = []
        self._mesh_ids: wp.array | None = None
        self._vertex_bvhs: list[wp.Bvh] = []
        self._vertex_bvh_ids: wp.array | None = None
        self._wide_bvh: WideBvh | None | bool = None  # False: the tree is too deep for its traversal stack
        self._queries = 0  # queries asked before the wide BVH was built (see WIDE_BUILD_QUERIES_PER_FACE)

    @property
    def num_frames(self) -> int:
        return self.vertices.shape[0]

    @property
    def num_vertices(self) -> int:
        return self.vertices.shape[1]

    @property
    def num_faces(self) -> int:
        return self.faces.shape[0]

    @property
    def device(self) -> torch.device:
        return self.vertices.device

    def __repr__(self) -> str:
        return (
            f"TriangleMesh(frames={self.num_frames}, vertices={self.num_vertices}, faces={self.num_faces}, "
            f"dtype={self.vertices.dtype}, device={self.device})"
        )

    def update(self, vertices: Float[Tensor, "B V 3"] | Float[Tensor, "V 3"]) -> None:
        """Move the vertices (same frames, vertex count and device) and refit every built BVH in place.

        Also the way to tell the mesh about in-place writes that torch does not count (fused optimiser
        steps, writes through ``.numpy()``): ``mesh.update(mesh.vertices)``.
        """
        if isinstance(vertices, Tensor) and vertices.dim() == 2:
            vertices = vertices[None]
        check_float("vertices", vertices, [self.num_frames, self.num_vertices, 3], device=self.device)
        copy = self._float32_copy(vertices)  # checked before anything changes
        self.vertices = vertices
        self._sync(copy)

    def _float32_copy(self, vertices: Tensor) -> tuple[Tensor, Tensor]:
        """Warp's float32 copy relative to each frame's origin (in the vertices' precision), and that origin [B, 3]:
        the box's centre snapped to a power-of-two grid as coarse as the mesh, so a mesh around the world origin
        keeps origin 0 (its copy is the plain float32 cast) and a far one is copied near 0. Checked as Warp will
        see it: finite and without degenerate triangles."""
        with torch.inference_mode(False):  # plain tensors even under inference mode, so they can be refit later
            detached = vertices.detach()
            low, high = detached.amin(dim=1), detached.amax(dim=1)
            extent = (high - low).amax(dim=1, keepdim=True).clamp(min=torch.finfo(detached.dtype).tiny)
            step = torch.exp2(torch.floor(torch.log2(extent)))
            origin = torch.round((low + high) / 2 / step) * step
            points = (detached - origin[:, None]).to(torch.float32).contiguous()
        check_finite("vertices", points, "values within float32 range")
        check_nondegenerate(points, self.faces)
        return points, origin

    def _sync(self, copy: tuple[Tensor, Tensor] | None = None) -> None:
        """Copy the vertices to Warp and refit the built BVHs: with ``copy`` given, from it; otherwise
        only if torch counted an in-place write since the last copy (or cannot count them)."""
        if copy is None:
            synced_tensor, synced_version = self._synced
            version = _version(self.vertices)
            if synced_tensor is self.vertices and synced_version == version >= 0:
                return
            copy = self._float32_copy(self.vertices)
        points, self._origin = copy
        with torch.inference_mode(False):
            self._points.copy_(points)
        self._synced = (self.vertices, _version(self.vertices))
        with kernels.torch_stream(self.device):
            for m in self._meshes:
                m.refit()
            for bvh in self._vertex_bvhs:
                bvh.refit()
        if isinstance(self._wide_bvh, WideBvh):
            with torch.inference_mode(False):  # its tensors are plain ones, written in place
                self._wide_bvh.refit(self._points)

    def warp_points(self) -> Float[Tensor, "B V 3"]:
        """The detached float32 vertices Warp's BVHs are built on (each frame's relative to :meth:`warp_origin`),
        brought up to date with ``vertices``. Read-only: a write here would move the BVHs without moving
        ``vertices``."""
        self._sync()
        return self._points

    def warp_origin(self) -> Float[Tensor, "B 3"]:
        """Each frame's centre that :meth:`warp_points` are relative to, in the vertices' dtype."""
        self._sync()
        return self._origin

    def to_warp_frame(self, points: Float[Tensor, "N 3"], frame: Int[Tensor, " N"]) -> Float[Tensor, "N 3"]:
        """Query ``points`` (world) as Warp's float32 BVHs of their frames see them: relative to the frame's
        centre, subtracted in the wider of the two dtypes, then rounded to float32 (detached, contiguous)."""
        origin = self.warp_origin()
        dtype = torch.promote_types(points.dtype, origin.dtype)
        shift = origin.to(dtype)[0] if self.num_frames == 1 else origin.to(dtype)[frame]  # one frame: no gather
        return (points.detach().to(dtype) - shift).to(torch.float32).contiguous()

    def query_order(
        self, queries: Float[Tensor, "N 3"], frame: Int[Tensor, " N"], always_sorted: bool = False
    ) -> Int[Tensor, " N"]:
        """The order in which Warp kernels walk this mesh's BVHs for ``queries`` (float32, in their frames' space,
        :meth:`to_warp_frame`): :func:`~headfields.kernels.morton_order`, by frame first where there are several; on
        the CPU the order given where it is local already (:func:`~headfields.kernels.in_local_order`), unless
        ``always_sorted``.

        A renderer's samples come packed along their rays, a step apart. The nearest-face searches walk them in that
        order as fast as sorted, and the sort (a key a query and an argsort: 23 ms for 2^18 queries, 276 ms for 2^21)
        is saved: INSTA's 512² CPU frame 0.90-0.93x the time, its deformer's forward and backward in a training step
        0.94x. Random points take the deformer 2.1x the time unsorted. The k-nearest search starts from its
        predecessor's answer, which the Morton order's neighbours serve better: ``always_sorted`` (0.55x the time of
        ray order on packed ray samples). On CUDA the queries are sorted as before: that choice awaits a GPU's
        measurement (reading the answer back there waits for the GPU)."""
        if not takes_cuda_path(queries.device) and not always_sorted and kernels.in_local_order(queries):
            return torch.arange(queries.shape[0])
        return kernels.morton_order(queries, frame if self.num_frames > 1 else None, self.num_frames)

    def _frame_points(self) -> list[wp.array]:
        points = self.warp_points()
        return [kernels.to_warp(points[b], wp.vec3) for b in range(self.num_frames)]

    def warp_mesh_ids(self) -> wp.array:
        """Warp ids (``uint64 [B]``) of the per-frame triangle BVHs: built on first call, refit when stale."""
        if self._mesh_ids is None:
            with kernels.torch_stream(self.device):
                indices = kernels.to_warp(self._faces32, wp.int32)
                self._meshes = [wp.Mesh(p, indices, bvh_leaf_size=BVH_LEAF_SIZE) for p in self._frame_points()]
                self._mesh_ids = wp.array([m.id for m in self._meshes], dtype=wp.uint64, device=kernels.warp_device(self.device))
        self._sync()
        return self._mesh_ids

    def warp_vertex_bvh_ids(self) -> wp.array:
        """Warp ids (``uint64 [B]``) of per-frame BVHs over the vertices as points: built on first call,
        refit when stale."""
        if self._vertex_bvh_ids is None:
            with kernels.torch_stream(self.device):
                self._vertex_bvhs = [wp.Bvh(p, p) for p in self._frame_points()]
                self._vertex_bvh_ids = wp.array(
                    [b.id for b in self._vertex_bvhs], dtype=wp.uint64, device=kernels.warp_device(self.device)
                )
        self._sync()
        return self._vertex_bvh_ids

    def wide_bvh(self, queries: int | None = None) -> WideBvh | None:
        """The per-frame 8-wide BVHs that the CPU's first ray hits, unsigned closest points and within-distance tests
        walk (:mod:`~headfields.backends.cpu.wide_bvh`): built from frame 0's shape, refit when stale; None on CUDA, for a
        mesh whose tree is too deep for the walk's stack, and before it is built (then Warp's queries answer).

        ``queries``: the size of the query about to run. The tree is built once the mesh's queries, this one included,
        reach ``WIDE_BUILD_QUERIES_PER_FACE`` a face; None builds it now."""
        if takes_cuda_path(self.device):
            return None
        if not wide_bvh_available():  # it did not build here, or HEADFIELDS_WIDE_BVH=0: Warp's own queries answer
            return None
        if self._wide_bvh is None and queries is not None:
            self._queries += queries
            if self._queries < WIDE_BUILD_QUERIES_PER_FACE * self.num_faces:
                return None
        if self._wide_bvh is None:
            points = self.warp_points()
            with torch.inference_mode(False):  # plain tensors even under inference mode, so they can be refit later
                topology = build_topology(points[0][self.faces])
                self._wide_bvh = WideBvh(topology, self._faces32, points) if topology.depth <= MAX_DEPTH else False
        self._sync()
        return self._wide_bvh or None

    def frame_index(self, frame: Int[Tensor, " N"] | IntLike | None, count: int, name: str = "frame") -> Int[Tensor, " N"]:
        """Validate a per-sample frame argument and return it as int64 ``[count]`` on the mesh's device."""
        return frame_rows(name, frame, count, self.num_frames, self.device)
