"""Canonical points (anchors, landmarks) carried into posed space: the posed points ``x`` that a backward
deformation carries onto them, ``x + dx(x) = a``, found by root finding and differentiable by implicit
differentiation (:func:`~headfields.deformers.find_preimage`); what a landmark term projects."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from jaxtyping import Bool, Float
from torch import Tensor

from ..deformers import find_preimage
from ..fields import Normalize

__all__ = ["ROOT_TOLERANCE", "PosedPoints", "posed_points"]

ROOT_TOLERANCE = 1e-5  # normalised units (~2 um on a head 25 cm across): what float32 root finding reaches


@dataclass
class PosedPoints:
    points: Float[Tensor, "K 3"]  # world
    converged: Bool[Tensor, " K"]  # root finding met its tolerance (the others are its best iterate)


def posed_points(
    offset: Callable[[Tensor], Tensor],
    canonical: Float[Tensor, "K 3"],
    normalize: Normalize,
    rotation: Float[Tensor, "*K 3 3"],
    translation: Float[Tensor, "*K 3"],
    scale: Float[Tensor, ""] | float = 1.0,
    tolerance: float = ROOT_TOLERANCE,
) -> PosedPoints:
    """World positions of ``canonical`` points (the networks' normalised units): the posed points ``x`` that the
    backward field carries onto them (``x + offset(x) = a``, root finding, :func:`~headfields.deformers.find_preimage`),
    back to metres by ``normalize``, then head frame -> world by ``scale``, ``rotation`` and ``translation`` (one
    pose, or one per point). Differentiable in whatever ``offset`` and the pose depend on."""
    solved = find_preimage(offset, canonical, tolerance=tolerance)
    head_frame = (solved.points * normalize.scale + normalize.center) * scale
    world = (rotation @ head_frame.to(rotation.dtype)[..., None]).squeeze(-1) + translation
    return PosedPoints(world, solved.converged)
