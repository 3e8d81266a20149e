"""Parametric heads: FLAME and SMPL-X from their official files (chumpy pickles included, without chumpy),
evaluated into a :class:`Head` for B frames, and linear blend skinning of arbitrary points."""

from .files import read_model_file
from .head import Head
from .model import ParametricModel, load_model
from .skinning import SkinningWeights, blend_transforms, skin_points, skinning_weights, transform_points

__all__ = [
    "Head",
    "ParametricModel",
    "SkinningWeights",
    "blend_transforms",
    "load_model",
    "read_model_file",
    "skin_points",
    "skinning_weights",
    "transform_points",
]
