"""Parametric heads: FLAME and SMPL-X from their official files (chumpy pickles included, without chumpy),
evaluated into a :class:`Head` for B frames, linear blend skinning of arbitrary points, a mouth cavity for
FLAME's open lips, and small synthetic model files in the official formats for tests and demos."""

from .files import read_model_file
from .head import Head
from .model import ParametricModel, load_model
from .mouth import add_mouth_interior
from .skinning import SkinningWeights, blend_transforms, skin_points, skinning_weights, transform_points
from .synthetic import SYNTHETIC_EXPRESSIONS, write_synthetic_flame, write_synthetic_smplx

__all__ = [
    "SYNTHETIC_EXPRESSIONS",
    "Head",
    "ParametricModel",
    "SkinningWeights",
    "add_mouth_interior",
    "blend_transforms",
    "load_model",
    "read_model_file",
    "skin_points",
    "skinning_weights",
    "transform_points",
    "write_synthetic_flame",
    "write_synthetic_smplx",
]
