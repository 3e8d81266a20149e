"""Landmarks of the hyper NeuS avatar's posed head (as MonoNPHM finds them): canonical points carried into posed
space by root finding of ``x + Δ(x) = a`` (the backward field has no closed-form inverse), with gradients by
implicit differentiation (:func:`~headfields.fitting.posed_points`, shared with MonoNPHM). Tracking
(:mod:`headfields.models.hyper_neus_tracking`) matches them to detections; here the canonical points are vertices
of the neutral mesh.
"""

from __future__ import annotations

import torch
from jaxtyping import Float, Int
from torch import Tensor

from ..fitting import ROOT_TOLERANCE, PosedPoints, posed_points
from ..geometry import farthest_points
from ..parametric import Head
from .hyper_neus import HyperNeusAvatar

__all__ = ["landmark_vertices", "posed_landmarks"]

FRONT_REGIONS = ("skin", "lips", "eyes")  # where landmark vertices are drawn from (FLAME's region names)


def landmark_vertices(model: HyperNeusAvatar, count: int) -> Int[Tensor, " K"]:
    """``count`` vertices spread over the face (farthest points of the front regions of the neutral mesh)."""
    neutral = model.parametric()
    regions = [neutral.regions[name] for name in FRONT_REGIONS if name in neutral.regions]
    ids = torch.cat(regions).unique() if regions else torch.arange(model.parametric.num_vertices, device=model.box.device)
    front = ids[neutral.canonical_vertices[ids, 2] > model.normalize.center[2]]
    return front[farthest_points(neutral.canonical_vertices[front], count)]


def posed_landmarks(
    model: HyperNeusAvatar, head: Head, canonical: Float[Tensor, "K 3"], tolerance: float = ROOT_TOLERANCE
) -> PosedPoints:
    """World positions, in the frame of the one-frame ``head``, of canonical points (metres, neutral head frame):
    the posed points the backward field carries onto them, found by root finding, differentiable by implicit
    differentiation in the head's condition, codes and pose. ``tolerance``: of the root finding, in normalised units."""
    if head.num_frames != 1:
        raise ValueError(f"head: expected the head of one frame, got {head.num_frames}")
    row = torch.zeros(len(canonical), dtype=torch.long, device=canonical.device)  # the head's one frame
    transform = head.joint_transforms[0, model.head_joint]
    return posed_points(
        lambda x: model.hyper.canonicalize(x, head, row, None).extras["offset"],
        model.normalize(canonical), model.normalize, transform[:3, :3], transform[:3, 3], tolerance=tolerance,
    )  # fmt: skip
