"""MonoAvatar's encoder as a field part: per-frame vertex features read at points by the mesh-anchored blend.

For the frames present in a call, the vertex features are computed once per frame from the head (variant D: the
vertices' displacements from the neutral mesh; C: expression and pose codes; or static features), the posed mesh
is taken into each frame's ``joint`` frame, and :class:`~headfields.encoders.MeshAnchoredEncoder` blends the
k nearest vertices' features at the points (given in that frame too, e.g. by a
:class:`~headfields.deformers.RigidDeformer` on the same joint).

    encoder = MeshFeatureEncoder(DisplacementVertexFeatures(...), MeshAnchoredEncoder(64), joint=2, kind="displacement")
    features = encoder(points, head, frame)  # [N, anchored.out_dim]
"""

from __future__ import annotations

from typing import Literal

import torch
from jaxtyping import Float, Int
from torch import Tensor, nn

from ..geometry import TriangleMesh
from ..parametric import Head
from .mesh_anchored import MeshAnchoredConfig, MeshAnchoredEncoder
from .uv_cnn import UVCodeDecoderConfig, UVUNetConfig
from .vertex_features import CodeVertexFeatures, DisplacementVertexFeatures, StaticVertexFeatures

__all__ = ["ConcatEncoder", "MeshFeatureEncoder", "VertexFeatureKind"]

VertexFeatureKind = Literal["displacement", "code", "static"]


class MeshFeatureEncoder(nn.Module):
    """Features of head-frame ``points`` from the ``k`` nearest head-frame vertices of their frame.
    ``kind`` says what ``vertex_features`` reads per frame: ``"displacement"`` (posed minus neutral vertices,
    ``[U, V, 3]``), ``"code"`` (expression and every joint's pose but the root's, ``[U, E + 3 (J - 1)]``) or
    ``"static"`` (the frame count)."""

    reads_head = True  # a field hands it (points, head, frame)

    def __init__(self, vertex_features: nn.Module, anchored: MeshAnchoredEncoder, joint: int, kind: VertexFeatureKind):
        super().__init__()
        if kind not in ("displacement", "code", "static"):
            raise ValueError(f"kind: expected 'displacement', 'code' or 'static', got {kind!r}")
        self.vertex_features, self.anchored, self.joint, self.kind = vertex_features, anchored, joint, kind
        self.out_dim = anchored.out_dim

    @classmethod
    def build(
        cls,
        kind: VertexFeatureKind,
        neutral: Head,
        joint: int,
        anchored: MeshAnchoredConfig,
        feature_dim: int = 64,
        uv_resolution: int = 256,
        unet: UVUNetConfig | None = None,
        code_decoder: UVCodeDecoderConfig | None = None,
    ) -> MeshFeatureEncoder:
        """MonoAvatar's encoder of the given ``kind`` for the mesh of ``neutral`` (its faces and UVs): a UV U-Net
        on displacements (D), a UV decoder of expression and pose codes (C), or ``feature_dim`` static features."""
        faces, v = neutral.faces, neutral.vertices.shape[1]
        if kind == "displacement":
            features = DisplacementVertexFeatures(faces, neutral.uvs, neutral.uv_faces, v, uv_resolution, unet)
        elif kind == "code":  # expression and every joint's pose but the root's
            code_dim = neutral.expression.shape[1] + 3 * (neutral.pose.shape[1] - 1)
            features = CodeVertexFeatures(faces, neutral.uvs, neutral.uv_faces, v, code_dim, code_decoder)
        else:
            features = StaticVertexFeatures(v, feature_dim)
        return cls(features, MeshAnchoredEncoder(features.out_dim, anchored), joint, kind)

    def frame_features(
        self, head: Head, frames: Int[Tensor, " U"], vertices: Float[Tensor, "U V 3"] | None = None
    ) -> Float[Tensor, "U V F"]:
        """The vertex features of frames ``frames`` (``vertices``: theirs in the joint's frame, computed if None)."""
        if vertices is None:
            vertices = head.to_joint_frame(self.joint, frames, head.vertices[frames])
        if self.kind == "displacement":  # V(expression, pose) - V(0, 0) of this subject, in the head's frame
            return self.vertex_features(vertices - head.canonical_vertices)
        if self.kind == "code":
            return self.vertex_features(torch.cat([head.expression[frames], head.pose[frames, 1:].flatten(1)], dim=1))
        return self.vertex_features(len(frames))

    def forward(self, points: Float[Tensor, "N 3"], head: Head, frame: Int[Tensor, " N"]) -> Float[Tensor, "N F"]:
        frames, local = torch.unique(frame, return_inverse=True)
        vertices = head.to_joint_frame(self.joint, frames, head.vertices[frames])
        features = self.frame_features(head, frames, vertices)
        return self.anchored(points, TriangleMesh(vertices, head.faces), features, local).features


class ConcatEncoder(nn.Module):
    """Encoders side by side on the same points, ``[e_1(m_1(x)), e_2(m_2(x)), ...]``, each behind its own mapping
    (None: the points as they are), e.g. MonoAvatar's mesh-anchored features beside a hash grid in the unit box.
    Parts with ``reads_head`` get ``(points, head, frame)``."""

    reads_head = True

    def __init__(self, *parts: tuple[nn.Module, nn.Module | None]):
        super().__init__()
        for i, (encoder, _) in enumerate(parts):
            if not isinstance(getattr(encoder, "out_dim", None), int):
                raise TypeError(f"parts: encoder {i} ({type(encoder).__name__}) has no int out_dim")
        self.encoders = nn.ModuleList(e for e, _ in parts)
        self.mappings = nn.ModuleList(m if m is not None else nn.Identity() for _, m in parts)
        self.out_dim = sum(e.out_dim for e in self.encoders)

    def forward(self, points: Float[Tensor, "N D"], head: Head, frame: Int[Tensor, " N"]) -> Float[Tensor, "N F"]:
        out = []
        for encoder, mapping in zip(self.encoders, self.mappings, strict=True):
            x = mapping(points)
            out.append(encoder(x, head, frame) if getattr(encoder, "reads_head", False) else encoder(x))
        return torch.cat([f.to(out[0].dtype) for f in out], dim=1)
