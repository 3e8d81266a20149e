"""INSTA's triangle-frame deformer (Zielonka, Bolkart, Thies; CVPR 2023): each sample rides its nearest
posed triangle back to the canonical mesh.

For a sample ``x`` of frame ``f``, the nearest triangle of frame ``f``'s posed mesh gives its frame
``M = [[R, a], [0, 1]]`` (``R = [t | b̂ | n]``, origin its first corner, see
:func:`headfields.geometry.triangle_frames`) on the posed and on the canonical mesh, which map

    x_canonical = M_canon · M_posed⁻¹ · x = a_c + R_c R_pᵀ (x − a_p),    d_canonical = normalize(R_c R_pᵀ d)

(INSTA's ``src/core.cu``, kernel ``warp``; ``include/rta/affine.cuh``: ``tri2projection``, ``transform_point``,
``transform_direction``). Each triangle's map is rigid, so on a triangle that moved rigidly it is exact; a
stretched triangle keeps the sample's local (tangent, bitangent, normal) offsets, not its barycentrics.
The result is differentiable w.r.t. ``x``, the directions and both meshes' vertices (not through the choice of
face). Two backends compute it (``config.backend``):

- ``"warp"`` (the default): one Warp kernel finds each sample's face and maps it, and a hand-written backward
  kernel reuses that face (:mod:`headfields.deformers.triangle_kernels`);
- ``"torch"``: Warp finds the face, torch ops recompute the frames and the map: the reference the kernels are
  tested against, and the route of second derivatives (``create_graph=True``) on either backend.

Their queries differ (the kernel's needs no inside/outside sign); where a shared vertex or edge is nearest, both report
the face of the lowest id that shares it (:mod:`headfields.geometry.ties`), so they pick different faces only where
two faces' distances differ by a float32 rounding (0.02% of the samples 1 cm around a posed synthetic FLAME head's
vertices, 0.15% before).

Options, all off by default; face selections are Bool ``[F]`` masks given as data
(:class:`~headfields.models.insta.Insta` builds INSTA's from the model's regions):

- ``scale_faces`` (INSTA: the eye-region triangles, its mask 1): the posed frame's rotation block is scaled by
  ``s = (area_posed / area_canonical) ** area_exponent`` (exponent 1: ``tiny_mesh.cu`` sets the triangle's
  ``scaling`` to the area ratio, ``tri2projection`` multiplies the frame by it), i.e.
  ``M_posed = [[s R_p, a_p], [0, 1]]``; the canonical frame is never scaled. So
  ``x_canonical = a_c + R_c R_pᵀ (x − a_p) / s``: the origin still maps to the origin, the local offsets shrink
  by ``s``. Directions are normalised after the map, so the scale leaves them unchanged. With exponent 0.5,
  ``s`` is the triangle's length scale and a uniformly scaled triangle maps back exactly.
- ``blend_faces`` (INSTA: the face triangles, its mask 2): a sample whose nearest face is one of these blends
  that face's frame matrix with those of its ≤3 edge neighbours, the posed and the canonical frames
  separately (``interpolate_transformation``, called once on each mesh), each with weights from the sample's
  position ``x``:

      w_k = exp(−φ_k ‖c_k − x‖) / Σ_j exp(−φ_j ‖c_j − x‖),   φ = 1 for the nearest face, 4 for a neighbour,

  ``c_k`` the posed centroids for the posed blend and the canonical centroids (against the same posed ``x``)
  for the canonical blend. With ``M̄_p = Σ w^p_k M_p,k`` (scaled where ``scale_faces`` says) and
  ``M̄_c = Σ w^c_k M_c,k``: ``x_canonical = M̄_c · M̄_p⁻¹ · x`` and ``d_canonical = normalize(Ā_c Ā_p⁻¹ d)``
  (``Ā`` the 3x3 blocks). The blends are affine, not rigid. Where posed equals canonical both blends agree
  and the map is the identity; under a rigid motion away from the canonical mesh the two weightings differ,
  so a blended map is not exactly rigid (as in INSTA).
- ``config.max_distance``: samples farther than this from their frame's posed mesh are dropped (``valid``
  False, ``face`` -1, points returned unchanged, directions normalised).
- ``config.source = "rest"``: read the frames on the frame's rest mesh (``head.rest_vertices``: expression
  and pose correctives, unposed) instead of the posed mesh, so the deformer runs after
  :class:`~headfields.deformers.SkinningDeformer` in a chain (360° portrait avatar: inverse LBS, then the
  coarse triangle deformation). "Posed" in this docstring then reads "rest".
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from jaxtyping import Bool, Float, Int
from torch import Tensor

from ..checks import check_positive, check_shape
from ..geometry import TriangleMesh, closest_point, face_adjacency, face_areas, triangle_frames
from ..geometry.triangles import corner_areas, corner_frames
from ..parametric import Head
from .base import Canonical, Deformer
from .triangle_kernels import FrameMapOptions, frame_map

# INSTA's neighbour blending (include/rta/affine.cuh, interpolate_transformation): weight
# exp(-NEAREST_FALLOFF * |c0 - x|) for the nearest triangle and exp(-NEIGHBOUR_FALLOFF * |ci - x|) (its `factor`)
# for its edge neighbours, distances in the mesh's units (metres for FLAME).
NEAREST_FALLOFF = 1.0
NEIGHBOUR_FALLOFF = 4.0
# INSTA scales the eye triangles' frames by area(posed) / area(canonical) (src/tiny_mesh.cu, build_triangles):
# exponent 1 on the area ratio.
AREA_EXPONENT = 1.0


@dataclass
class TriangleDeformerConfig:
    max_distance: float | None = None  # drop samples farther than this from the frame's posed mesh (None: keep all)
    area_exponent: float = AREA_EXPONENT  # scale_faces: s = (area_posed / area_canonical) ** area_exponent
    nearest_falloff: float = NEAREST_FALLOFF  # blend_faces: weight exp(-nearest_falloff * |c0 - x|)
    neighbour_falloff: float = NEIGHBOUR_FALLOFF  # blend_faces: weight exp(-neighbour_falloff * |ci - x|)
    source: Literal["posed", "rest"] = "posed"  # the mesh samples start on: posed, or rest (after inverse LBS)
    # "warp": one fused kernel finds the face and maps (triangle_kernels); "torch": Warp finds the face, torch ops
    # map: the reference the kernels are tested against. The kernel made the deformer's forward in INSTA's training
    # step ~9x faster (tools/profile_step.py on the 2-core CPU; the nearest-face query is now most of its cost).
    backend: Literal["warp", "torch"] = "warp"

    def __post_init__(self) -> None:
        check_positive("max_distance", self.max_distance)
        if self.source not in ("posed", "rest"):
            raise ValueError(f"source: expected 'posed' or 'rest', got {self.source!r}")
        if self.backend not in ("warp", "torch"):
            raise ValueError(f"backend: expected 'warp' or 'torch', got {self.backend!r}")
        for name in ("area_exponent", "nearest_falloff", "neighbour_falloff"):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and value >= 0 and value != float("inf")):
                raise ValueError(f"{name}: expected a finite non-negative number, got {value!r}")


@dataclass
class _Frames:
    """INSTA's frame matrices (``tri2projection``) of faces ``[M, K]`` on the posed mesh of each row's frame and on
    the canonical mesh, with the faces' centroids: ``M_p = [[scale R_p, posed_origin], [0, 1]]``,
    ``M_c = [[canonical, canonical_origin], [0, 1]]``."""

    posed: Float[Tensor, "M K 3 3"]  # R_p, unscaled
    scale: Float[Tensor, "M K"]  # s of scale_faces, 1 elsewhere
    posed_origin: Float[Tensor, "M K 3"]
    posed_centroid: Float[Tensor, "M K 3"]
    canonical: Float[Tensor, "M K 3 3"]
    canonical_origin: Float[Tensor, "M K 3"]
    canonical_centroid: Float[Tensor, "M K 3"]


def _apply(rotation: Tensor, v: Tensor) -> Tensor:
    """``R v`` over leading dims (broadcast multiply-add: faster than einsum's tiny batched matmuls on CPU)."""
    return (rotation * v[..., None, :]).sum(-1)


def _apply_transposed(rotation: Tensor, v: Tensor) -> Tensor:
    """``Rᵀ v`` over leading dims."""
    return (rotation * v[..., :, None]).sum(-2)


class TriangleFrameDeformer(Deformer):
    """Posed → canonical through the nearest posed triangle's frame (INSTA); see the module docstring.

    ``scale_faces`` / ``blend_faces``: Bool ``[F]`` masks over the head's faces selecting the faces whose
    samples get area scaling / neighbour blending (None: off). They are buffers, saved with the module.

        deformer = TriangleFrameDeformer(scale_faces=eyes, blend_faces=face)  # INSTA's masks, see models.insta
        canonical = deformer(x, head, frame, dirs)  # points [N, 3], dirs, valid, face
    """

    def __init__(
        self,
        config: TriangleDeformerConfig | None = None,
        scale_faces: Bool[Tensor, " F"] | None = None,
        blend_faces: Bool[Tensor, " F"] | None = None,
    ):
        super().__init__()
        self.config = config or TriangleDeformerConfig()
        for name, mask in (("scale_faces", scale_faces), ("blend_faces", blend_faces)):
            if mask is not None:
                check_shape(name, mask, [None])
                if mask.dtype != torch.bool:
                    raise TypeError(f"{name}: expected a Bool [F] face mask, got {mask.dtype}")
            self.register_buffer(name, mask)
        # face_adjacency of the last faces seen (a sort of 3F edges, ~20 ms on FLAME's faces): a head's faces are its
        # model's buffer, the same tensor every step, and topology is never written in place.
        self._adjacency: tuple[Tensor, Tensor] | None = None
        # The faces and their adjacency in the kernels' int32, of the last faces seen: cast once, not every step.
        self._int32: tuple[Tensor, Tensor, Tensor | None] | None = None

    def canonicalize(
        self,
        x: Float[Tensor, "N 3"],
        head: Head,
        frame: Int[Tensor, " N"],
        dirs: Float[Tensor, "N 3"] | None,
    ) -> Canonical:
        num_faces = head.faces.shape[0]
        for name in ("scale_faces", "blend_faces"):
            mask = getattr(self, name)
            if mask is not None and (mask.shape[0] != num_faces or mask.device != x.device):
                raise ValueError(
                    f"{name}: expected a mask over the head's {num_faces} faces on {x.device}, "
                    f"got {list(mask.shape)} on {mask.device}"
                )
        mesh = self._source(head)
        dtype = torch.promote_types(torch.promote_types(x.dtype, mesh.vertices.dtype), head.canonical_vertices.dtype)
        x = x.to(dtype)
        dirs = None if dirs is None else dirs.to(dtype)
        source, canonical = mesh.vertices.to(dtype), head.canonical_vertices.to(dtype)
        if self.config.backend == "torch":
            return self._torch(x, dirs, source, canonical, head.faces, frame, mesh)
        c = self.config
        faces, adjacency = self._kernel_topology(head.faces)
        options = FrameMapOptions(
            mesh=mesh,
            frame=frame,
            faces=faces,
            scale_faces=self.scale_faces,
            blend_faces=self.blend_faces,
            adjacency=adjacency,
            max_distance=c.max_distance,
            area_exponent=c.area_exponent,
            nearest_falloff=c.nearest_falloff,
            neighbour_falloff=c.neighbour_falloff,
            reference=functools.partial(self._torch_map, faces=head.faces, frame=frame),
        )
        points, out_dirs, face = frame_map(x, dirs, source, canonical, options)
        return Canonical(points=points, dirs=out_dirs, valid=face >= 0, face=face)

    def _face_adjacency(self, faces: Tensor) -> Tensor:
        if self._adjacency is None or self._adjacency[0] is not faces:
            self._adjacency = (faces, face_adjacency(faces))
        return self._adjacency[1]

    def _kernel_topology(self, faces: Tensor) -> tuple[Tensor, Tensor | None]:
        """``faces`` and their adjacency (None without ``blend_faces``) as the kernels read them, int32."""
        if self._int32 is None or self._int32[0] is not faces:
            adjacency = None if self.blend_faces is None else self._face_adjacency(faces).to(torch.int32)
            self._int32 = (faces, faces.to(torch.int32), adjacency)
        return self._int32[1], self._int32[2]

    def _source(self, head: Head) -> TriangleMesh:
        """The mesh samples start on (``config.source``): the only place that picks it."""
        return head.rest_mesh if self.config.source == "rest" else head.posed_mesh

    # ------------------------------------------------ the torch reference (backend="torch")

    def _torch(
        self, x: Tensor, dirs: Tensor | None, source: Tensor, canonical: Tensor, faces: Tensor, frame: Tensor, mesh: TriangleMesh
    ) -> Canonical:
        """Warp picks the face (no gradient through a discrete choice), torch maps the samples."""
        max_distance = self.config.max_distance
        with torch.no_grad():
            q = closest_point(mesh, x.detach(), frame, max_distance)
        valid = q.hit if max_distance is None else q.hit & (q.distance <= max_distance)
        face = q.face.masked_fill(~valid, -1)
        points, out_dirs = self._torch_map(x, dirs, source, canonical, face, faces=faces, frame=frame)
        return Canonical(points=points, dirs=out_dirs, valid=valid, face=face)

    def _torch_map(
        self, x: Tensor, dirs: Tensor | None, source: Tensor, canonical: Tensor, face: Tensor, *, faces: Tensor, frame: Tensor
    ) -> tuple[Tensor, Tensor | None]:
        """The map at given faces (-1: dropped, ``x`` and normalised ``dirs`` returned), in torch ops."""
        valid = face >= 0
        face = face.clamp(min=0)
        points, out_dirs = self._nearest(x, dirs, self._frames(source, canonical, faces, frame, face[:, None]))
        if self.blend_faces is not None:
            rows = (valid & self.blend_faces[face]).nonzero()[:, 0]
            if rows.numel() > 0:
                blended_points, blended_dirs = self._blend(x, dirs, source, canonical, faces, frame, face, rows)
                points = points.index_put((rows,), blended_points)
                if dirs is not None:
                    out_dirs = out_dirs.index_put((rows,), blended_dirs)
        if out_dirs is not None:
            out_dirs = F.normalize(torch.where(valid[:, None], out_dirs, dirs), dim=-1)
        return torch.where(valid[:, None], points, x), out_dirs

    def _frames(self, source: Tensor, canonical: Tensor, faces: Tensor, frame: Tensor, candidates: Tensor) -> _Frames:
        """The frames of faces ``candidates[i, k]`` (source mesh of frame ``frame[i]``) on both meshes."""
        # Posed frames per sample, of corners gathered from the checked mesh (no per-sample checks); canonical
        # ones for every face, then gathered (F is small next to a batch).
        posed = source[frame[:, None, None], faces[candidates]]  # [M, K, 3, 3]
        frames_p = corner_frames(posed)
        frames_c = triangle_frames(canonical, faces)
        scale = torch.ones(candidates.shape, dtype=source.dtype, device=posed.device)
        if self.scale_faces is not None:
            ratio = corner_areas(posed) / face_areas(canonical, faces)[candidates]
            scale = torch.where(self.scale_faces[candidates], ratio**self.config.area_exponent, scale)
        return _Frames(
            posed=frames_p.rotation,
            scale=scale,
            posed_origin=frames_p.origin,
            posed_centroid=posed.mean(dim=-2),
            canonical=frames_c.rotation[candidates],
            canonical_origin=frames_c.origin[candidates],
            canonical_centroid=canonical[faces].mean(dim=-2)[candidates],
        )

    @staticmethod
    def _nearest(x: Tensor, dirs: Tensor | None, frames: _Frames) -> tuple[Tensor, Tensor | None]:
        """``M_c · M_p⁻¹`` of each sample's one face (``K = 1``): ``M_p⁻¹`` in closed form (``R_pᵀ / s``).
        Directions are rotated, not yet normalised."""
        local = _apply_transposed(frames.posed[:, 0], x - frames.posed_origin[:, 0]) / frames.scale[:, :1]
        points = _apply(frames.canonical[:, 0], local) + frames.canonical_origin[:, 0]
        rotated = None if dirs is None else _apply(frames.canonical[:, 0], _apply_transposed(frames.posed[:, 0], dirs))
        return points, rotated

    def _blend(
        self,
        x: Tensor,
        dirs: Tensor | None,
        source: Tensor,
        canonical: Tensor,
        faces: Tensor,
        frame: Tensor,
        face: Tensor,
        rows: Tensor,
    ) -> tuple[Tensor, Tensor | None]:
        """INSTA's blended map of samples ``rows``: their nearest face and its edge neighbours, the posed and the
        canonical frame matrices each blended with its own weights, then ``M̄_c · M̄_p⁻¹``."""
        x_r, frame_r = x[rows], frame[rows]
        neighbours = self._face_adjacency(faces)[face[rows]]  # [M, 3], -1 across a boundary edge
        candidates = torch.cat([face[rows, None], neighbours.clamp(min=0)], dim=1)  # [M, 4]
        frames = self._frames(source, canonical, faces, frame_r, candidates)
        falloff = x_r.new_tensor([self.config.nearest_falloff] + [self.config.neighbour_falloff] * 3)
        missing = torch.cat([torch.zeros_like(neighbours[:, :1]), neighbours], dim=1) < 0

        def weights(centroids: Tensor) -> Tensor:
            # Softmax of the log-weights: INSTA's normalised exponentials, without underflow far from the mesh.
            distance = torch.linalg.vector_norm(centroids - x_r[:, None], dim=-1)
            return torch.softmax((-falloff * distance).masked_fill(missing, -torch.inf), dim=1)

        w_p, w_c = weights(frames.posed_centroid), weights(frames.canonical_centroid)
        matrix_p = ((w_p * frames.scale)[..., None, None] * frames.posed).sum(dim=1)  # Ā_p [M, 3, 3]
        origin_p = (w_p[..., None] * frames.posed_origin).sum(dim=1)
        matrix_c = (w_c[..., None, None] * frames.canonical).sum(dim=1)  # Ā_c
        origin_c = (w_c[..., None] * frames.canonical_origin).sum(dim=1)
        # M̄_p⁻¹ applied to the point, and its 3x3 block to the direction: one solve, one or two right-hand sides.
        rhs = [x_r - origin_p] + ([] if dirs is None else [dirs[rows]])
        local = torch.linalg.solve(matrix_p, torch.stack(rhs, dim=-1))  # [M, 3, 1 | 2]
        points = _apply(matrix_c, local[..., 0]) + origin_c
        return points, None if dirs is None else _apply(matrix_c, local[..., 1])
