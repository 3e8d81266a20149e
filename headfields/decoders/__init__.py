"""Field decoders: from encoded features (and view direction, conditioning) to density or signed distance, and colour."""

from ..networks import mlp  # re-exported: callers import it from here
from .appearance import AppearanceConfig, AppearanceField, SHLighting
from .nerf import DecoderOutput, NerfDecoder, NerfDecoderConfig, trunc_exp
from .sdf import AnchorBlend, AnchorSdf, AnchorSdfConfig, SdfMlp, SdfMlpConfig, SdfOutput

__all__ = [
    "AnchorBlend",
    "AnchorSdf",
    "AnchorSdfConfig",
    "AppearanceConfig",
    "AppearanceField",
    "DecoderOutput",
    "NerfDecoder",
    "NerfDecoderConfig",
    "SHLighting",
    "SdfMlp",
    "SdfMlpConfig",
    "SdfOutput",
    "mlp",
    "trunc_exp",
]
