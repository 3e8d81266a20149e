"""Per-vertex features for mesh-anchored fields (MonoAvatar, Bai et al. 2023).

The paper's variants: "D" rasterises each frame's vertex displacements into a UV map, runs a U-Net on it and
samples the feature map back at the vertices; "C" decodes expression and pose codes straight into the UV
feature map. Its ablation of the vertex features (UV-CNN features against static features, 3DMM codes and a
code MLP, PAPERS.md) has three baselines without the UV-space CNN, and so without spatial context:

- static: one learnt feature per vertex, the same in every frame (:class:`StaticVertexFeatures`);
- 3DMM codes: each vertex's learnt feature with the frame's codes appended (:class:`CodeBroadcastVertexFeatures`);
- code MLP: one MLP shared by the vertices maps a vertex's learnt embedding and the frame's codes to its feature
  (:class:`CodeMlpVertexFeatures`).

PAPERS.md names these rows only; how the codes reach the vertices is our reading: each vertex keeps a learnt
identity (without one, every vertex would carry the same code and the per-neighbour MLP could not tell a
nose from an ear), and the codes enter either as they are or through an MLP. Each module returns features
``[B, V, F]`` for B frames, so a mesh-anchored encoder can read them per sample.

    features = CodeMlpVertexFeatures(num_vertices=5023, code_dim=65)(codes)  # codes [B, 65] -> [B, 5023, 64]
"""

from __future__ import annotations

import torch
from jaxtyping import Float, Int
from torch import Tensor, nn

from ..checks import check_count, check_float, check_positive
from ..geometry import UVMisses, UVRaster, interpolate_uv, rasterize_uv, sample_uv, uv_misses, vertex_uvs
from ..networks import mlp
from .uv_cnn import UVCodeDecoder, UVCodeDecoderConfig, UVUNet, UVUNetConfig

__all__ = [
    "CodeBroadcastVertexFeatures",
    "CodeMlpVertexFeatures",
    "CodeVertexFeatures",
    "DisplacementVertexFeatures",
    "StaticVertexFeatures",
]

DISPLACEMENT_SCALE = 0.01  # metres: FLAME's expression displacements (mm to cm) reach the U-Net near unit size
MONOAVATAR_FEATURES = 64  # MonoAvatar: 64-d vertex features
STATIC_INIT_STD = 0.1  # spread of the learnt per-vertex features at initialisation
# The code MLP's size: not in PAPERS.md (our choice, as wide as MonoAvatar's other MLPs).
CODE_MLP_HIDDEN = 128
CODE_MLP_HIDDEN_LAYERS = 2


class _UVLayout(nn.Module):
    """A mesh's UV rasterisation and one UV per vertex, as buffers (derived data: rebuilt, not saved)."""

    def __init__(
        self,
        faces: Int[Tensor, "F 3"],
        uvs: Float[Tensor, "T 2"],
        uv_faces: Int[Tensor, "F 3"],
        num_vertices: int,
        resolution: int,
    ):
        super().__init__()
        raster = rasterize_uv(uvs, uv_faces, resolution)
        self.register_buffer("faces", faces.clone(), persistent=False)
        self.register_buffer("texel_face", raster.face, persistent=False)
        self.register_buffer("texel_bary", raster.bary, persistent=False)
        self.register_buffer("vertex_uv", vertex_uvs(faces, uv_faces, uvs, num_vertices), persistent=False)
        # What the layout alone decides, found once rather than read back from the device every step: the covered
        # texels, the vertices no covered tap reaches and their nearest covered texels.
        self.register_buffer("covered", raster.covered(), persistent=False)
        misses = uv_misses(self.vertex_uv, raster.mask)
        self.register_buffer("miss_vertex", misses.point, persistent=False)
        self.register_buffer("miss_texel", misses.texel, persistent=False)

    @property
    def raster(self) -> UVRaster:
        return UVRaster(face=self.texel_face, bary=self.texel_bary, num_faces=len(self.faces))

    def to_map(self, values: Float[Tensor, "B V C"]) -> Float[Tensor, "B C H W"]:
        return interpolate_uv(self.raster, values, self.faces, self.covered)

    def to_vertices(self, uv_map: Float[Tensor, "B C H W"]) -> Float[Tensor, "B V C"]:
        return sample_uv(uv_map, self.vertex_uv, self.texel_face >= 0, UVMisses(self.miss_vertex, self.miss_texel))


def _check_uvs(uvs: Tensor | None, uv_faces: Tensor | None) -> None:
    if uvs is None or uv_faces is None:
        raise ValueError("uvs: expected the mesh's UV coordinates and UV faces (the model file has no 'vt' / 'ft')")


class DisplacementVertexFeatures(nn.Module):
    """Variant D: displacements ``[B, V, 3]`` (posed minus neutral, in the head's frame) -> UV map -> U-Net ->
    features sampled at the vertices ``[B, V, F]``."""

    def __init__(
        self,
        faces: Int[Tensor, "F 3"],
        uvs: Float[Tensor, "T 2"] | None,
        uv_faces: Int[Tensor, "F 3"] | None,
        num_vertices: int,
        resolution: int = 256,  # MonoAvatar: 256 x 256 UV maps
        unet: UVUNetConfig | None = None,
        displacement_scale: float = DISPLACEMENT_SCALE,
    ):
        super().__init__()
        _check_uvs(uvs, uv_faces)
        self.layout = _UVLayout(faces, uvs, uv_faces, num_vertices, check_count("resolution", resolution, 1))
        self.unet = UVUNet(unet or UVUNetConfig())
        check_positive("displacement_scale", displacement_scale)
        self.displacement_scale = float(displacement_scale)
        self.out_dim = self.unet.config.out_channels

    def forward(self, displacements: Float[Tensor, "B V 3"]) -> Float[Tensor, "B V F"]:
        check_float("displacements", displacements, [None, len(self.layout.vertex_uv), 3], device=self.layout.faces.device)
        uv_map = self.layout.to_map(displacements / self.displacement_scale)
        return self.layout.to_vertices(self.unet(uv_map))


class CodeVertexFeatures(nn.Module):
    """Variant C: per-frame codes ``[B, E]`` (expression and pose) -> transposed-conv decoder -> UV feature
    map -> features sampled at the vertices ``[B, V, F]``."""

    def __init__(
        self,
        faces: Int[Tensor, "F 3"],
        uvs: Float[Tensor, "T 2"] | None,
        uv_faces: Int[Tensor, "F 3"] | None,
        num_vertices: int,
        code_dim: int,
        decoder: UVCodeDecoderConfig | None = None,
    ):
        super().__init__()
        _check_uvs(uvs, uv_faces)
        self.decoder = UVCodeDecoder(code_dim, decoder or UVCodeDecoderConfig())
        self.layout = _UVLayout(faces, uvs, uv_faces, num_vertices, self.decoder.config.resolution)
        self.code_dim = code_dim
        self.out_dim = self.decoder.config.out_channels

    def forward(self, codes: Float[Tensor, "B E"]) -> Float[Tensor, "B V F"]:
        check_float("codes", codes, [None, self.code_dim], device=self.layout.faces.device)
        return self.layout.to_vertices(self.decoder(codes))


class StaticVertexFeatures(nn.Module):
    """The ablation baseline: one learnt feature per vertex, the same in every frame."""

    def __init__(self, num_vertices: int, feature_dim: int = MONOAVATAR_FEATURES, init_std: float = STATIC_INIT_STD):
        super().__init__()
        self.out_dim = check_count("feature_dim", feature_dim, 1)
        self.features = nn.Parameter(init_std * torch.randn(check_count("num_vertices", num_vertices, 1), feature_dim))

    def forward(self, num_frames: int) -> Float[Tensor, "B V F"]:
        return self.features.expand(check_count("num_frames", num_frames, 1), -1, -1)


class CodeBroadcastVertexFeatures(nn.Module):
    """The ablation "3DMM codes": vertex ``v`` of a frame with codes ``z`` (expression and pose, ``[B, E]``) gets
    ``[s_v, z]``, a learnt static feature ``s_v`` (``feature_dim``) with the codes appended: ``[B, V,
    feature_dim + E]``. The codes are the same at every vertex; the per-neighbour MLP reads them locally."""

    def __init__(
        self, num_vertices: int, code_dim: int, feature_dim: int = MONOAVATAR_FEATURES, init_std: float = STATIC_INIT_STD
    ):
        super().__init__()
        self.static = StaticVertexFeatures(num_vertices, feature_dim, init_std)
        self.code_dim = check_count("code_dim", code_dim, 1)
        self.out_dim = feature_dim + code_dim

    def forward(self, codes: Float[Tensor, "B E"]) -> Float[Tensor, "B V F"]:
        check_float("codes", codes, [None, self.code_dim], device=self.static.features.device)
        static = self.static(max(codes.shape[0], 1))[: codes.shape[0]]
        return torch.cat([static, codes.to(static.dtype)[:, None].expand(-1, static.shape[1], -1)], dim=-1)


class CodeMlpVertexFeatures(nn.Module):
    """The ablation "code MLP": one MLP, shared by the vertices, maps ``[e_v, z]`` (a learnt per-vertex embedding
    of ``feature_dim`` and the frame's codes ``[B, E]``) to the vertex's feature: ``[B, V, feature_dim]``. It sees
    the codes through a network, as the UV CNN does, but each vertex alone (no spatial context)."""

    def __init__(
        self,
        num_vertices: int,
        code_dim: int,
        feature_dim: int = MONOAVATAR_FEATURES,
        hidden_dim: int = CODE_MLP_HIDDEN,
        hidden_layers: int = CODE_MLP_HIDDEN_LAYERS,
        init_std: float = STATIC_INIT_STD,
    ):
        super().__init__()
        self.embedding = StaticVertexFeatures(num_vertices, feature_dim, init_std)
        self.code_dim = check_count("code_dim", code_dim, 1)
        self.mlp = mlp(
            feature_dim + code_dim,
            check_count("hidden_dim", hidden_dim, 1),
            check_count("hidden_layers", hidden_layers, 0),
            feature_dim,
        )
        self.out_dim = feature_dim

    def forward(self, codes: Float[Tensor, "B E"]) -> Float[Tensor, "B V F"]:
        check_float("codes", codes, [None, self.code_dim], device=self.embedding.features.device)
        embedding = self.embedding(max(codes.shape[0], 1))[: codes.shape[0]]
        codes = codes.to(embedding.dtype)[:, None].expand(-1, embedding.shape[1], -1)
        return self.mlp(torch.cat([embedding, codes], dim=-1))
