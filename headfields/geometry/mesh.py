"""A triangle mesh over B frames with one Warp BVH per frame, refit in place when the vertices move."""

from __future__ import annotations

import torch
import warp as wp
from jaxtyping import Float, Int
from torch import Tensor

from .._checks import check_device, check_float, check_int, check_shape
from . import _warp
from .triangles import face_areas

# A triangle whose area is below this fraction of the squared bounding-box diagonal is degenerate: float32
# queries cannot resolve it and its normal and frame are undefined.
DEGENERATE_AREA_FRACTION = 1e-12


class TriangleMesh:
    """Shared faces ``[F,3]`` and per-frame vertices ``[B,V,3]``.

    ``vertices`` keeps the caller's tensor (dtype, device, autograd graph), so quantities that torch
    recomputes from query indices carry gradients to it. Warp holds a float32 copy with one BVH per frame,
    built on first use and refit (not rebuilt) by :meth:`update`.
    """

    def __init__(self, vertices: Float[Tensor, "B V 3"] | Float[Tensor, "V 3"], faces: Int[Tensor, "F 3"]):
        if isinstance(vertices, Tensor) and vertices.dim() == 2:
            vertices = vertices[None]
        check_float("vertices", vertices, [None, None, 3])
        if vertices.shape[0] == 0 or vertices.shape[1] == 0:
            raise ValueError(f"vertices: expected at least one frame and one vertex, got shape {list(vertices.shape)}")
        check_device("faces", faces, vertices.device)
        check_int("faces", faces, [None, 3], upper=vertices.shape[1])
        if faces.shape[0] == 0:
            raise ValueError("faces: expected at least one triangle, got an empty [0, 3] tensor")
        self.faces: Int[Tensor, "F 3"] = faces.long()
        self.vertices: Float[Tensor, "B V 3"] = vertices
        self._check_degenerate(vertices)
        self._points: Tensor | None = None  # float32 [B,V,3] that Warp's BVHs read
        self._meshes: list[wp.Mesh] = []
        self._mesh_ids: wp.array | None = None
        self._vertex_bvhs: list[wp.Bvh] = []
        self._vertex_bvh_ids: wp.array | None = None

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
        """Move the vertices (same frames, vertex count and device) and refit every built BVH in place."""
        if isinstance(vertices, Tensor) and vertices.dim() == 2:
            vertices = vertices[None]
        check_shape("vertices", vertices, [self.num_frames, self.num_vertices, 3])
        check_device("vertices", vertices, self.device)
        check_float("vertices", vertices, [self.num_frames, self.num_vertices, 3])
        self._check_degenerate(vertices)
        self.vertices = vertices
        if self._points is not None:
            self._points.copy_(vertices.detach())
            for m in self._meshes:
                m.refit()
            for bvh in self._vertex_bvhs:
                bvh.refit()

    def _check_degenerate(self, vertices: Tensor) -> None:
        with torch.no_grad():
            extent = vertices.amax(dim=1) - vertices.amin(dim=1)
            diag2 = (extent**2).sum(-1, keepdim=True)
            bad = face_areas(vertices, self.faces) <= DEGENERATE_AREA_FRACTION * diag2
        if bad.any():
            frame, face = (int(i) for i in bad.nonzero()[0])
            raise ValueError(
                f"vertices: triangle {face} (vertices {self.faces[face].tolist()}) has zero area in frame {frame}; "
                f"{int(bad.sum())} degenerate triangle(s) in all. Remove them before building a TriangleMesh."
            )

    def warp_points(self) -> Float[Tensor, "B V 3"]:
        """The detached float32 copy of the vertices that Warp's BVHs are built on (kept in sync by update)."""
        if self._points is None:
            self._points = self.vertices.detach().to(torch.float32).contiguous().clone()
        return self._points

    def _frame_points(self) -> list[wp.array]:
        points = self.warp_points()
        return [_warp.to_warp(points[b], wp.vec3) for b in range(self.num_frames)]

    def warp_mesh_ids(self) -> wp.array:
        """Warp ids (``uint64 [B]``) of the per-frame triangle BVHs, built on first call."""
        if self._mesh_ids is None:
            self._faces32 = self.faces.to(torch.int32).reshape(-1)  # kept alive: Warp's meshes view it
            indices = _warp.to_warp(self._faces32, wp.int32)
            self._meshes = [wp.Mesh(points=p, indices=indices) for p in self._frame_points()]
            self._mesh_ids = wp.array([m.id for m in self._meshes], dtype=wp.uint64, device=_warp.warp_device(self.device))
        return self._mesh_ids

    def warp_vertex_bvh_ids(self) -> wp.array:
        """Warp ids (``uint64 [B]``) of per-frame BVHs over the vertices as points, built on first call."""
        if self._vertex_bvh_ids is None:
            self._vertex_bvhs = [wp.Bvh(p, p) for p in self._frame_points()]
            self._vertex_bvh_ids = wp.array(
                [b.id for b in self._vertex_bvhs], dtype=wp.uint64, device=_warp.warp_device(self.device)
            )
        return self._vertex_bvh_ids

    def frame_index(self, frame: Int[Tensor, " N"] | int | None, count: int, name: str = "frame") -> Int[Tensor, " N"]:
        """Validate a per-sample frame argument and return it as int64 ``[count]`` on the mesh's device."""
        if frame is None:
            if self.num_frames != 1:
                raise ValueError(f"{name}: required when the mesh has {self.num_frames} frames, got None")
            return torch.zeros(count, dtype=torch.long, device=self.device)
        if isinstance(frame, int):
            if not 0 <= frame < self.num_frames:
                raise ValueError(f"{name}: expected a frame in [0, {self.num_frames}), got {frame}")
            return torch.full((count,), frame, dtype=torch.long, device=self.device)
        check_shape(name, frame, [count])
        check_device(name, frame, self.device)
        check_int(name, frame, [count], upper=self.num_frames)
        return frame.long().contiguous()
