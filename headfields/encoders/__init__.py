"""Encoders: map points or directions to features. Each is an ``nn.Module`` with ``in_dim``, ``out_dim`` and
``forward(x [N, in_dim]) -> [N, out_dim]`` (mesh-anchored encoders also take the mesh and frames). The UV-space
CNNs make the per-vertex features those read; :class:`HyperEncoding` reads points with hyper-dimensions."""

from .frequency import FrequencyEncoding
from .hashgrid import HashGrid, HashGridConfig
from .hyper_encoding import HyperEncoding
from .latent_codes import LatentCodes, LatentCodesConfig
from .mesh_anchored import AnchoredFeatures, MeshAnchoredConfig, MeshAnchoredEncoder
from .spherical_harmonics import SphericalHarmonics
from .uv_cnn import UVCodeDecoder, UVCodeDecoderConfig, UVUNet, UVUNetConfig
from .vertex_features import (
    CodeBroadcastVertexFeatures,
    CodeMlpVertexFeatures,
    CodeVertexFeatures,
    DisplacementVertexFeatures,
    StaticVertexFeatures,
)

__all__ = [
    "AnchoredFeatures",
    "CodeVertexFeatures",
    "CodeBroadcastVertexFeatures",
    "CodeMlpVertexFeatures",
    "DisplacementVertexFeatures",
    "FrequencyEncoding",
    "HashGrid",
    "HashGridConfig",
    "HyperEncoding",
    "LatentCodes",
    "LatentCodesConfig",
    "MeshAnchoredConfig",
    "MeshAnchoredEncoder",
    "SphericalHarmonics",
    "StaticVertexFeatures",
    "UVCodeDecoder",
    "UVCodeDecoderConfig",
    "UVUNet",
    "UVUNetConfig",
]

# MonoAvatar's encoder as a field part: per-frame vertex features read by the mesh-anchored blend.
from .mesh_features import FEATURE_KINDS, ConcatEncoder, MeshFeatureEncoder, VertexFeatureKind, feature_kind  # noqa: E402

__all__ += ["FEATURE_KINDS", "ConcatEncoder", "MeshFeatureEncoder", "VertexFeatureKind", "feature_kind"]
