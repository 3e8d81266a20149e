"""MonoAvatar's encoder as a field part: per-frame vertex features read at points by the mesh-anchored blend.

For the frames present in a call, the vertex features are computed once per frame from the head (variant D: the
vertices' displacements from the neutral mesh; C: expression and pose codes through a UV decoder; or one of the
paper's ablation baselines), the posed mesh is taken into each frame's ``joint`` frame, and
:class:`~headfields.encoders.MeshAnchoredEncoder` blends the k nearest vertices' features at the points (given in
that frame too, e.g. by a :class:`~headfields.deformers.RigidDeformer` on the same joint).

NeRF's coarse and fine networks can share the vertex features and keep their own per-neighbour MLPs:
:meth:`MeshFeatureEncoder.sibling` builds the second encoder on the same vertex-feature module, and inside
:meth:`MeshFeatureEncoder.reuse_frame_features` both read one computation per frame (the UV CNN runs once for
the two passes).

    encoder = MeshFeatureEncoder(DisplacementVertexFeatures(...), MeshAnchoredEncoder(64), joint=2, kind="displacement")
    features = encoder(points, head, frame)  # [N, anchored.out_dim]
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Literal

import torch
from jaxtyping import Float, Int
from torch import Tensor, nn

from ..checks import check_int, checking_values
from ..geometry import TriangleMesh
from ..parametric import Head
from .mesh_anchored import MeshAnchoredConfig, MeshAnchoredEncoder
from .uv_cnn import UVCodeDecoderConfig, UVUNetConfig
from .vertex_features import (
    CodeBroadcastVertexFeatures,
    CodeMlpVertexFeatures,
    CodeVertexFeatures,
    DisplacementVertexFeatures,
    StaticVertexFeatures,
)

__all__ = ["FEATURE_KINDS", "ConcatEncoder", "MeshFeatureEncoder", "VertexFeatureKind", "feature_kind"]

# MonoAvatar's vertex features, named after its variants and ablation rows: "displacement" (D, the paper's best),
# "code_cnn" (C: codes through the UV decoder), "codes_mlp" (a code MLP), "codes" (the 3DMM codes as they are),
# "static". "code" is the old name of "code_cnn", still accepted.
VertexFeatureKind = Literal["displacement", "code_cnn", "codes_mlp", "codes", "static", "code"]
FEATURE_KINDS = ("displacement", "code_cnn", "codes_mlp", "codes", "static")
_ALIASES = {"code": "code_cnn"}
_READS_CODES = ("code_cnn", "codes_mlp", "codes")


def feature_kind(name: str, kind: object) -> str:
    """``kind`` checked and its old name resolved ("code" -> "code_cnn"); errors name ``name``."""
    if not isinstance(kind, str) or _ALIASES.get(kind, kind) not in FEATURE_KINDS:
        raise ValueError(f"{name}: expected one of {FEATURE_KINDS} (or 'code', the old name of 'code_cnn'), got {kind!r}")
    return _ALIASES.get(kind, kind)


class _FrameFeatures:
    """What sibling encoders share: while ``memo`` is a dict (inside ``reuse_frame_features``), each frame's
    head-frame vertices and vertex features, computed once."""

    def __init__(self) -> None:
        self.memo: dict | None = None
        self.frames: Tensor | None = None  # the block's frames, sorted (None: each call finds its own)
        # The blocks' head-frame meshes, one kept for each number of frames (with the faces it was built with): the
        # next block of as many frames refits its BVHs in place (no tree built, no host copy of their ids: what a
        # CUDA graph replays), and a block of another number leaves it alive for the graph that reads it.
        self.meshes: dict[int, tuple[TriangleMesh, Tensor]] = {}

    # Caches: a copied or pickled encoder starts without them (a kept mesh holds Warp's BVHs, which do not copy).
    def __deepcopy__(self, memo: dict) -> _FrameFeatures:
        return _FrameFeatures()

    def __getstate__(self) -> dict:
        return {}

    def __setstate__(self, state: dict) -> None:
        self.__init__()


class MeshFeatureEncoder(nn.Module):
    """Features of head-frame ``points`` from the ``k`` nearest head-frame vertices of their frame.
    ``kind`` says what ``vertex_features`` reads per frame: ``"displacement"`` (posed minus neutral vertices,
    ``[U, V, 3]``), ``"code_cnn"``, ``"codes_mlp"`` or ``"codes"`` (expression and every joint's pose but the
    root's, ``[U, E + 3 (J - 1)]``) or ``"static"`` (the frame count)."""

    reads_head = True  # a field hands it (points, head, frame)

    def __init__(self, vertex_features: nn.Module, anchored: MeshAnchoredEncoder, joint: int, kind: VertexFeatureKind):
        super().__init__()
        self.vertex_features, self.anchored, self.joint = vertex_features, anchored, joint
        self.kind = feature_kind("kind", kind)
        self.out_dim = anchored.out_dim
        self._shared = _FrameFeatures()

    def sibling(self, anchored: MeshAnchoredEncoder) -> MeshFeatureEncoder:
        """An encoder on the same vertex-feature module (the same weights) with its own per-neighbour MLP
        ``anchored``: NeRF's coarse and fine networks on one UV CNN. The two share
        :meth:`reuse_frame_features`."""
        other = MeshFeatureEncoder(self.vertex_features, anchored, self.joint, self.kind)
        other._shared = self._shared
        return other

    @contextmanager
    def reuse_frame_features(self, frames: Int[Tensor, " K"] | None = None) -> Iterator[None]:
        """Inside the block, this encoder and its siblings compute each frame's vertex features once for a head
        and grad mode and reuse them (a coarse and a fine pass over the same rays); forgotten on exit. ``frames``:
        every frame the block's calls will see, sorted and distinct (``torch.unique(rays.frame)``, or a training
        batch's drawn frames: ``RayBatch.frame_subset``); each call then computes the features of all of them and
        finds its samples' among them on the device, and their mesh refits the last block's of as many frames
        (otherwise each call finds its own frames: two read-backs a call, and builds their mesh)."""
        outer = self._shared.memo, self._shared.frames
        self._shared.memo = {} if outer[0] is None else outer[0]
        if frames is not None:
            check_int("frames", frames, [None], device=frames.device)
            if checking_values() and len(frames) > 1 and not bool((frames[1:] > frames[:-1]).all()):
                raise ValueError(f"frames: expected sorted, distinct frame indices (torch.unique), got {frames.tolist()}")
            self._shared.frames = frames
        try:
            yield
        finally:
            self._shared.memo, self._shared.frames = outer

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
        on displacements (D), a UV decoder of expression and pose codes (C), or an ablation baseline: a code MLP,
        the codes themselves beside static features, or ``feature_dim`` static features."""
        kind = feature_kind("kind", kind)
        faces, v = neutral.faces, neutral.vertices.shape[1]
        code_dim = neutral.expression.shape[1] + 3 * (neutral.pose.shape[1] - 1)  # expression, poses but the root's
        if kind == "displacement":
            features = DisplacementVertexFeatures(faces, neutral.uvs, neutral.uv_faces, v, uv_resolution, unet)
        elif kind == "code_cnn":
            features = CodeVertexFeatures(faces, neutral.uvs, neutral.uv_faces, v, code_dim, code_decoder)
        elif kind == "codes_mlp":
            features = CodeMlpVertexFeatures(v, code_dim, feature_dim)
        elif kind == "codes":
            features = CodeBroadcastVertexFeatures(v, code_dim, feature_dim)
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
        if self.kind in _READS_CODES:
            return self.vertex_features(torch.cat([head.expression[frames], head.pose[frames, 1:].flatten(1)], dim=1))
        return self.vertex_features(len(frames))

    def _frame_inputs(self, head: Head, frames: Tensor) -> tuple[TriangleMesh, Tensor]:
        """The frames' head-frame mesh and vertex features, from the shared memo when one is open (the mesh too:
        its BVH, built at the first neighbour search, then serves every call in the block)."""
        memo = self._shared.memo
        key = None
        known = memo is not None and frames is self._shared.frames  # (one tensor: known without reading it back)
        if memo is not None:  # the head object, the frames and the grad mode: a no-grad result must not serve a grad pass
            key = (id(head), id(frames) if known else tuple(frames.tolist()), torch.is_grad_enabled())
            if key in memo:
                return memo[key][2:]
        vertices = head.to_joint_frame(self.joint, frames, head.vertices[frames])
        features = self.frame_features(head, frames, vertices)
        mesh = self._kept_mesh(head, vertices) if known else TriangleMesh(vertices, head.faces)
        if memo is not None:
            memo[key] = (head, frames, mesh, features)  # holding the head (frames) keeps its id from being reused
        return mesh, features

    def _kept_mesh(self, head: Head, vertices: Tensor) -> TriangleMesh:
        """The block's frames' mesh: the one kept for as many frames, refit to ``vertices``, or a new one kept. In the
        block a second grad mode reuses it as it is (the same frames), unless ``vertices`` carry a gradient it lacks."""
        kept = self._shared.meshes.get(vertices.shape[0])
        if kept is None or kept[1] is not head.faces or kept[0].vertices.shape != vertices.shape:
            mesh = TriangleMesh(vertices, head.faces)
            self._shared.meshes[vertices.shape[0]] = (mesh, head.faces)
            return mesh
        mesh = kept[0]
        in_block = any(entry[2] is mesh for entry in self._shared.memo.values())
        if not in_block or (vertices.requires_grad and not mesh.vertices.requires_grad):
            mesh.update(vertices)
        return mesh

    def forward(self, points: Float[Tensor, "N 3"], head: Head, frame: Int[Tensor, " N"]) -> Float[Tensor, "N F"]:
        if points.shape[0] == 0:  # rays that all missed the head (a corner of a large image): no frame to read
            return points.new_zeros(0, self.anchored.out_dim, dtype=self.anchored.mlp0[0].weight.dtype)
        frames = self._shared.frames
        if frames is None:
            frames, local = torch.unique(frame, return_inverse=True)
        else:  # the block's frames: each sample's place among them, on the device (its caller's promise: all there)
            local = torch.searchsorted(frames, frame)
        mesh, features = self._frame_inputs(head, frames)
        return self.anchored(points, mesh, features, local).features


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
