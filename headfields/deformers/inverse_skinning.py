"""Inverse linear blend skinning as a deformer (360° Volumetric Portrait Avatar, Nehvi et al. 2023): a posed
sample takes the skinning weights of its nearest posed triangle (the barycentric blend of the corners'
rows), and the inverse of its blended joint transform ``A = sum_j w_j T_j`` carries it to the frame's rest
space (expression and pose correctives applied, unposed):

    x_rest = A⁻¹ x,    d_rest = normalize(L⁻¹ d),  L the linear 3x3 part of A.

On posed mesh vertices this gives the rest vertices exactly. Chain it before
``TriangleFrameDeformer(TriangleDeformerConfig(source="rest"))`` to reach the canonical mesh (the paper's
coarse triangle deformation). The skinning itself is :mod:`headfields.parametric.skinning`'s; this module
only adds directions and the deformer interface. Differentiable w.r.t. ``x``, ``dirs``, the posed vertices
(through the barycentrics), the skinning weights and the joint transforms.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from torch import Tensor

from ..checks import check_positive
from ..parametric import Head, inverse_skinning
from .base import Canonical, Deformer


@dataclass(frozen=True)
class SkinningDeformerConfig:
    max_distance: float | None = None  # drop samples farther than this from the frame's posed mesh (None: keep all)

    def __post_init__(self) -> None:
        check_positive("max_distance", self.max_distance)


class SkinningDeformer(Deformer):
    """Posed → rest space of the sample's frame by inverse LBS with the nearest posed triangle's weights;
    see the module docstring. ``face`` is that triangle; dropped samples (``config.max_distance``) keep their
    points, get normalised directions and ``face`` -1."""

    def __init__(self, config: SkinningDeformerConfig | None = None):
        super().__init__()
        self.config = config or SkinningDeformerConfig()

    def canonicalize(
        self,
        x: Float[Tensor, "N 3"],
        head: Head,
        frame: Int[Tensor, " N"],
        dirs: Float[Tensor, "N 3"] | None,
    ) -> Canonical:
        mesh = head.posed_mesh
        frame = mesh.frame_index(frame, x.shape[0])
        points, inverse, face, distance = inverse_skinning(mesh, head.skinning_weights, head.joint_transforms, x, frame)
        max_distance = self.config.max_distance
        valid = torch.ones_like(face, dtype=torch.bool) if max_distance is None else distance <= max_distance
        out_dirs = None
        if dirs is not None:
            dirs = dirs.to(points.dtype)
            # A blend of rotations is not a rotation: carry by its linear part's inverse, then renormalise.
            rotated = torch.einsum("nrc,nc->nr", inverse.to(points.dtype), dirs)
            out_dirs = F.normalize(torch.where(valid[:, None], rotated, dirs), dim=-1)
        return Canonical(
            points=torch.where(valid[:, None], points, x.to(points.dtype)),
            dirs=out_dirs,
            valid=valid,
            face=face.masked_fill(~valid, -1),
        )
