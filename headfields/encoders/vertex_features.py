"""Per-vertex features for mesh-anchored fields (MonoAvatar, Bai et al. 2023).

The paper's variants: "D" rasterises each frame's vertex displacements into a UV map, runs a U-Net on it and
samples the feature map back at the vertices; "C" decodes expression and pose codes straight into the UV
feature map; the ablation baseline learns one static feature per vertex for all frames. Each module returns
features ``[B, V, F]`` for B frames, so a mesh-anchored encoder can read them per sample.
"""

from __future__ import annotations

import torch
from jaxtyping import Float, Int
from torch import Tensor, nn

from ..checks import check_count, check_float, check_positive
from ..geometry import UVRaster, interpolate_uv, rasterize_uv, sample_uv, vertex_uvs
from .uv_cnn import UVCodeDecoder, UVCodeDecoderConfig, UVUNet, UVUNetConfig

__all__ = ["CodeVertexFeatures", "DisplacementVertexFeatures", "StaticVertexFeatures"]

DISPLACEMENT_SCALE = 0.01  # metres: FLAME's expression displacements (mm to cm) reach the U-Net near unit size


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

    @property
    def raster(self) -> UVRaster:
        return UVRaster(face=self.texel_face, bary=self.texel_bary, num_faces=len(self.faces))

    def to_vertices(self, uv_map: Float[Tensor, "B C H W"]) -> Float[Tensor, "B V C"]:
        return sample_uv(uv_map, self.vertex_uv, self.raster.mask)


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
        uv_map = interpolate_uv(self.layout.raster, displacements / self.displacement_scale, self.layout.faces)
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

    def __init__(self, num_vertices: int, feature_dim: int = 64, init_std: float = 0.1):
        super().__init__()
        self.out_dim = check_count("feature_dim", feature_dim, 1)
        self.features = nn.Parameter(init_std * torch.randn(check_count("num_vertices", num_vertices, 1), feature_dim))

    def forward(self, num_frames: int) -> Float[Tensor, "B V F"]:
        return self.features.expand(check_count("num_frames", num_frames, 1), -1, -1)
