"""Tracking for the hyper NeuS avatar (MonoNPHM's tracking, on the mix): with the networks frozen, fit one frame's
expression condition (tracked expression, jaw pose, expression code) and a correction of its head pose to the
frame's image (L1 colour, silhouette) and its landmarks. The frame is a one-frame
:class:`~headfields.parametric.Head` whose fitted parts are parameters. The landmarks
(:mod:`headfields.models.hyper_neus_landmarks`) are matched to the frame's tracked mesh vertices projected into
the image (a detector's stand-in). The pose correction, the pixels, the landmark term and the staged optimiser are
MonoNPHM's (:mod:`headfields.fitting`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import Tensor

from ..cameras import project_points
from ..checks import check_count, check_positive
from ..configs import register_config
from ..data import FrameSet
from ..fitting import FramePixels, corrected_pose, frozen, landmark_error, run_stage
from ..heads import tracked_head
from ..losses import l1_loss, mask_loss
from ..parametric import Head
from ..renderers import RenderContext
from ..training import render_image
from .hyper_neus import HyperNeusAvatar
from .hyper_neus_landmarks import landmark_vertices, posed_landmarks

__all__ = ["TrackingConfig", "TrackingResult", "frame_error", "track_frame"]


@register_config  # saved and read on its own, not inside a model's recipe
@dataclass(frozen=True)
class TrackingConfig:
    steps: int = 100
    rays_per_step: int = 1024
    code_learning_rate: float = 3e-2
    pose_learning_rate: float = 3e-3
    silhouette_weight: float = 0.1
    landmark_weight: float = 2.0  # of the landmark error in image widths squared, averaged over x and y (2: their sum)
    landmarks: int = 32
    start: Literal["neutral", "tracked"] = "neutral"  # expression, jaw and code start at zero, or as tracked
    optimize_pose: bool = True
    seed: int = 0

    def __post_init__(self) -> None:
        check_count("steps", self.steps, 0)
        check_count("rays_per_step", self.rays_per_step, 1)
        check_count("landmarks", self.landmarks, 0)
        for name in ("code_learning_rate", "pose_learning_rate"):
            check_positive(name, getattr(self, name), finite=True)
        if self.start not in ("neutral", "tracked"):
            raise ValueError(f"start: expected 'neutral' or 'tracked', got {self.start!r}")


@dataclass
class TrackingResult:
    head: Head  # the fitted frame: a one-frame Head, detached
    start: Head  # where the fit started from (for "neutral": zero expression, jaw and code)
    losses: list[float] = field(default_factory=list)  # per step


def frame_error(model: HyperNeusAvatar, frames: FrameSet, frame: int, head: Head | None = None) -> float:
    """Mean absolute colour error of frame ``frame``'s full render from the one-frame ``head`` (default: its
    tracked head, which has the neutral expression code)."""
    head = head if head is not None else tracked_head(model.parametric, frames).select([frame])
    render = render_image(model, frames, frame, 4096, model.box.device, head=head)
    return float((render - frames.images[frame].float() / 255.0).abs().mean())


def _fitted(
    model: HyperNeusAvatar, tracked: Head, expression: Tensor, jaw: Tensor | None, codes: Tensor, omega: Tensor, shift: Tensor
) -> Head:
    """``tracked`` with the fitted condition and its head joint's pose corrected: rotation R exp(omega), translation
    t + shift. The mesh (which only the sampler's box reads) stays the tracked one."""
    pose, transforms, k = tracked.pose, tracked.joint_transforms, model.head_joint
    if jaw is not None:
        pose = torch.cat([pose[:, : model.jaw_joint], jaw[:, None], pose[:, model.jaw_joint + 1 :]], dim=1)
    rotation, translation = corrected_pose(transforms[:, k, :3, :3], transforms[:, k, :3, 3], omega, shift)
    corrected = torch.cat([torch.cat([rotation, translation[..., None]], dim=2), transforms[:, k, 3:]], dim=1)
    transforms = torch.cat([transforms[:, :k], corrected[:, None], transforms[:, k + 1 :]], dim=1)
    return dataclasses.replace(tracked, expression=expression, pose=pose, joint_transforms=transforms, codes=codes)


def track_frame(model: HyperNeusAvatar, frames: FrameSet, frame: int, config: TrackingConfig | None = None) -> TrackingResult:
    """Fit frame ``frame`` of ``frames`` with the networks frozen: its expression, jaw pose and expression code
    (the identity code stays as learnt) and, with ``optimize_pose``, a correction of its head pose: a rotation in
    the head's frame (before the tracked rotation) and a world translation."""
    c = config or TrackingConfig()
    device = model.box.device
    tracked = tracked_head(model.parametric, frames).select([frame])
    scale = 0.0 if c.start == "neutral" else 1.0
    expression = (tracked.expression * scale).requires_grad_(True)
    jaw = None if model.jaw_joint is None else (tracked.pose[:, model.jaw_joint] * scale).requires_grad_(True)
    codes = torch.zeros(1, model.expression_codes.dim, device=device, requires_grad=True)
    omega = torch.zeros(1, 3, device=device, requires_grad=True)
    shift = torch.zeros(1, 3, device=device, requires_grad=True)
    fitted = [t for t in (expression, jaw, codes) if t is not None] if model.config.tracked_expression else [codes]
    groups = [("codes", fitted, c.code_learning_rate), ("pose", [omega, shift] if c.optimize_pose else [], c.pose_learning_rate)]

    def head(detach: bool = False) -> Head:
        fitted = [None if t is None else t.detach().clone() if detach else t for t in (expression, jaw, codes, omega, shift)]
        return _fitted(model, tracked, *fitted)

    start = head(detach=True)
    data = FramePixels(frames.select([frame]), device)  # the frame's own row 0, as the one-frame head's
    use_landmarks = c.landmarks > 0 and c.landmark_weight > 0 and frames.mesh_vertices is not None
    if use_landmarks:
        ids = landmark_vertices(model, c.landmarks)
        detected = project_points(data.cameras, frames.mesh_vertices[frame, ids.cpu()].to(device), 0).pixels
        canonical = tracked.canonical_vertices[ids]  # the subject's neutral mesh

    generator = torch.Generator().manual_seed(c.seed)
    losses: list[float] = []

    def loss(step: int) -> Tensor:
        pick = data.draw(0, c.rays_per_step, 0.0, generator)
        current = head()
        out = model.render(data.rays(0, pick), current, RenderContext(generator))
        value = l1_loss(out.composite.rgb, data.rgb[0, pick])
        if data.has_masks and c.silhouette_weight > 0:
            opacity = out.composite.opacity.clamp(0, 1)
            value = value + c.silhouette_weight * mask_loss(opacity, data.mask[0, pick].to(opacity.dtype))
        if use_landmarks:
            posed = posed_landmarks(model, current, canonical)
            value = value + c.landmark_weight * landmark_error(data.cameras, posed, 0, detected)
        losses.append(float(value.detach()))
        return value

    with frozen(model):
        run_stage(groups, c.steps, loss)
    return TrackingResult(head(detach=True), start, losses)
