"""Field decoders: from encoded features (and view direction, conditioning) to density and colour."""

from .nerf import FieldOutput, NerfDecoder, NerfDecoderConfig, mlp, trunc_exp

__all__ = ["FieldOutput", "NerfDecoder", "NerfDecoderConfig", "mlp", "trunc_exp"]
