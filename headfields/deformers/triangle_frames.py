"""INSTA's triangle-frame deformer (Zielonka, Bolkart, Thies; CVPR 2023): each sample rides its nearest
posed triangle back to the canonical mesh.

For a sample ``x`` of frame ``f``, Warp finds the nearest triangle of frame ``f``'s posed mesh; torch
builds that triangle's frame ``M = [[R, a], [0, 1]]`` (``R = [t | b̂ | n]``, origin its first corner, see
:func:`headfields.geometry.triangle_frames`) on the posed and on the canonical mesh and maps

    x_canonical = M_canon · M_posed⁻¹ · x = a_c + R_c R_pᵀ (x − a_p),    d_canonical = normalize(R_c R_pᵀ d).

Each triangle's map is rigid, so on a triangle that moved rigidly it is exact; a stretched triangle keeps
the sample's local (tangent, bitangent, normal) offsets, not its barycentrics. Recomputing the frames from
the face indices in torch makes the result differentiable w.r.t. ``x`` and both meshes' vertices.

Options, all off by default; face selections are Bool ``[F]`` masks given as data (e.g.
``head.face_mask("eyes")``):

- ``scale_faces``: on these faces the posed frame's rotation is scaled by ``s = (area_posed /
  area_canonical) ** area_exponent`` (INSTA: exponent 1, on the eye triangles), i.e.
  ``M_posed = [[s R_p, a_p], [0, 1]]``, so ``x_canonical = a_c + R_c R_pᵀ (x − a_p) / s``: the origin
  still maps to the origin, the local offsets shrink by ``s``. Directions use the rotation parts only
  and are unaffected. With exponent 0.5, ``s`` is the triangle's length scale and a uniformly scaled
  triangle maps back exactly.
- ``blend_faces``: samples whose nearest face is one of these take the weighted mean of the maps of that
  face (weight ``exp(−‖c₀ − x‖)``) and of its ≤3 edge-adjacent faces (``exp(−4 ‖cᵢ − x‖)``), ``c`` the
  posed centroids, weights normalised (INSTA, face triangles). The maps are affine, so blending them is
  blending the mapped points; directions blend the rotated directions and are renormalised.
- ``config.max_distance``: samples farther than this from their frame's posed mesh are dropped (``valid``
  False, ``face`` -1, points returned unchanged, directions normalised).
- ``config.source = "rest"``: read the frames on the frame's rest mesh (``head.rest_vertices``: expression
  and pose correctives, unposed) instead of the posed mesh, so the deformer runs after
  :class:`~headfields.deformers.SkinningDeformer` in a chain (360° portrait avatar: inverse LBS, then the
  coarse triangle deformation). "Posed" in this docstring then reads "rest".
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from jaxtyping import Bool, Float, Int
from torch import Tensor

from ..checks import check_positive, check_shape
from ..geometry import TriangleMesh, closest_point, face_adjacency, face_areas, triangle_frames
from ..parametric import Head
from .base import Canonical, Deformer

# INSTA's neighbour blending: weight exp(-NEAREST_FALLOFF * |c0 - x|) for the nearest triangle and
# exp(-NEIGHBOUR_FALLOFF * |ci - x|) for its edge neighbours (distances in the mesh's units).
NEAREST_FALLOFF = 1.0
NEIGHBOUR_FALLOFF = 4.0
# INSTA scales the eye triangles' frames by area(posed) / area(canonical): exponent 1 on the area ratio.
AREA_EXPONENT = 1.0
# One triangle as a mesh: frames and areas of gathered corners [M, 3, 3] reuse the whole-mesh functions.
_ONE_TRIANGLE = ((0, 1, 2),)


@dataclass
class TriangleDeformerConfig:
    max_distance: float | None = None  # drop samples farther than this from the frame's posed mesh (None: keep all)
    area_exponent: float = AREA_EXPONENT  # scale_faces: s = (area_posed / area_canonical) ** area_exponent
    nearest_falloff: float = NEAREST_FALLOFF  # blend_faces: weight exp(-nearest_falloff * |c0 - x|)
    neighbour_falloff: float = NEIGHBOUR_FALLOFF  # blend_faces: weight exp(-neighbour_falloff * |ci - x|)
    source: Literal["posed", "rest"] = "posed"  # the mesh samples start on: posed, or rest (after inverse LBS)

    def __post_init__(self) -> None:
        check_positive("max_distance", self.max_distance)
        if self.source not in ("posed", "rest"):
            raise ValueError(f"source: expected 'posed' or 'rest', got {self.source!r}")
        for name in ("area_exponent", "nearest_falloff", "neighbour_falloff"):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and value >= 0 and value != float("inf")):
                raise ValueError(f"{name}: expected a finite non-negative number, got {value!r}")


@dataclass
class _Mapped:
    points: Float[Tensor, "M K 3"]
    dirs: Float[Tensor, "M K 3"] | None


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

        # Warp picks the face (no gradient through a discrete choice).
        max_distance = self.config.max_distance
        with torch.no_grad():
            q = closest_point(self._source(head), x.detach(), frame, max_distance)
        valid = q.hit if max_distance is None else q.hit & (q.distance <= max_distance)
        face = q.face.clamp(min=0)

        source = self._source(head).vertices
        dtype = torch.promote_types(torch.promote_types(x.dtype, source.dtype), head.canonical_vertices.dtype)
        x = x.to(dtype)
        dirs = None if dirs is None else dirs.to(dtype)
        mapped = self._map(x, dirs, head, frame, face[:, None], dtype)
        points = mapped.points[:, 0]
        out_dirs = None if dirs is None else mapped.dirs[:, 0]

        if self.blend_faces is not None:
            rows = (valid & self.blend_faces[face]).nonzero()[:, 0]
            if rows.numel() > 0:
                blended_points, blended_dirs = self._blend(x, dirs, head, frame, face, rows, dtype)
                points = points.index_put((rows,), blended_points)
                if dirs is not None:
                    out_dirs = out_dirs.index_put((rows,), blended_dirs)

        if out_dirs is not None:
            out_dirs = F.normalize(torch.where(valid[:, None], out_dirs, dirs), dim=-1)
        return Canonical(
            points=torch.where(valid[:, None], points, x),
            dirs=out_dirs,
            valid=valid,
            face=q.face.masked_fill(~valid, -1),
        )

    def _source(self, head: Head) -> TriangleMesh:
        """The mesh samples start on (``config.source``): the only place that picks it."""
        return head.rest_mesh if self.config.source == "rest" else head.posed_mesh

    def _map(self, x: Tensor, dirs: Tensor | None, head: Head, frame: Tensor, faces: Tensor, dtype: torch.dtype) -> _Mapped:
        """Sample i mapped through each of its faces ``faces[i, k]`` (frame ``frame[i]``): ``[M, K, 3]``.
        Directions are rotated, not yet normalised."""
        m, k = faces.shape
        # Posed frames per sample; canonical ones for every face, then gathered (F is small next to a batch).
        posed = self._source(head).vertices.to(dtype)[frame[:, None, None], head.faces[faces]].reshape(m * k, 3, 3)
        one = torch.tensor(_ONE_TRIANGLE, device=x.device)
        frames_p = triangle_frames(posed, one)
        rot_p, origin_p = frames_p.rotation.reshape(m, k, 3, 3), frames_p.origin.reshape(m, k, 3)
        canonical = head.canonical_vertices.to(dtype)
        frames_c = triangle_frames(canonical, head.faces)
        rot_c, origin_c = frames_c.rotation[faces], frames_c.origin[faces]
        local = _apply_transposed(rot_p, x[:, None] - origin_p)
        if self.scale_faces is not None:
            ratio = face_areas(posed, one).reshape(m, k) / face_areas(canonical, head.faces)[faces]
            scale = torch.where(self.scale_faces[faces], ratio**self.config.area_exponent, torch.ones_like(ratio))
            local = local / scale[..., None]
        points = _apply(rot_c, local) + origin_c
        rotated = None if dirs is None else _apply(rot_c, _apply_transposed(rot_p, dirs[:, None]))
        return _Mapped(points=points, dirs=rotated)

    def _blend(
        self, x: Tensor, dirs: Tensor | None, head: Head, frame: Tensor, face: Tensor, rows: Tensor, dtype: torch.dtype
    ) -> tuple[Tensor, Tensor | None]:
        """The blended map of samples ``rows``: their nearest face and its edge neighbours, INSTA's weights."""
        x_r, frame_r = x[rows], frame[rows]
        dirs_r = None if dirs is None else dirs[rows]
        neighbours = face_adjacency(head.faces)[face[rows]]  # [M, 3], -1 across a boundary edge
        candidates = torch.cat([face[rows, None], neighbours.clamp(min=0)], dim=1)  # [M, 4]
        centroids = self._source(head).vertices.to(dtype)[frame_r[:, None, None], head.faces[candidates]].mean(dim=-2)
        distance = torch.linalg.vector_norm(centroids - x_r[:, None], dim=-1)
        falloff = distance.new_tensor([self.config.nearest_falloff] + [self.config.neighbour_falloff] * 3)
        # Softmax of the log-weights: INSTA's normalised exponentials, without underflow far from the mesh.
        missing = torch.cat([torch.zeros_like(neighbours[:, :1]), neighbours], dim=1) < 0
        logits = (-falloff * distance).masked_fill(missing, -torch.inf)
        weights = torch.softmax(logits, dim=1)
        mapped = self._map(x_r, dirs_r, head, frame_r, candidates, dtype)
        points = (weights[..., None] * mapped.points).sum(dim=1)
        blended_dirs = None if dirs is None else (weights[..., None] * mapped.dirs).sum(dim=1)
        return points, blended_dirs
