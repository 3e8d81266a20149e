"""Parametric heads: FLAME and SMPL-X from their official files (chumpy pickles included, without chumpy),
evaluated into a :class:`Head` for B frames, linear blend skinning of arbitrary points, and a mouth cavity for
FLAME's open lips. Small synthetic model files in the official formats are in ``headfields.synthetic``."""

from typing import Any

from .._moved import moved
from .files import read_model_file
from .head import Head
from .model import ParametricModel, load_model
from .mouth import add_mouth_interior
from .skinning import SkinningWeights, blend_transforms, inverse_skinning, skin_points, skinning_weights, transform_points
from .tracked_meshes import SubjectModel, TrackedMeshModel, require_parametric_model, rigid_fit

# Deprecated aliases (moved to headfields.synthetic), resolved on first use by __getattr__: headfields.synthetic
# imports this package, so importing it here would be a cycle. Not in __all__: the README and docs name headfields.synthetic.
_MOVED_TO_SYNTHETIC = ("SYNTHETIC_EXPRESSIONS", "write_synthetic_flame", "write_synthetic_smplx")

__all__ = [
    "Head",
    "ParametricModel",
    "SkinningWeights",
    "SubjectModel",
    "TrackedMeshModel",
    "add_mouth_interior",
    "blend_transforms",
    "inverse_skinning",
    "load_model",
    "read_model_file",
    "require_parametric_model",
    "rigid_fit",
    "skin_points",
    "skinning_weights",
    "transform_points",
]


def __getattr__(name: str) -> Any:
    if name in _MOVED_TO_SYNTHETIC:
        return moved(__name__, name, "headfields.synthetic")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
