"""MonoNPHM's tracking: with the networks frozen, fit one frame's expression condition and a correction of
its head pose to the frame's image (L1 colour, silhouette) and its landmarks.

Landmarks are canonical points carried into posed space by root finding of ``x + Δ(x) = a`` (the backward
field has no closed-form inverse); their gradients come by implicit differentiation
(:func:`headfields.deformers.find_preimage`). Here the canonical points are vertices of the neutral mesh and
their detections are the frame's tracked mesh vertices projected into the image (a detector's stand-in).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Literal

import torch
from jaxtyping import Float, Int
from torch import Tensor

from .._checks import check_count, check_positive
from ..data import FrameSet
from ..deformers import find_preimage, log_quaternion_to_rotation
from ..losses import l1_loss, mask_loss
from ..renderers.cameras import image_pixels, pixel_rays, project_points
from .mononphm import FrameState, MonoNphm, farthest_points

__all__ = ["TrackingConfig", "TrackingResult", "frame_error", "landmark_vertices", "posed_landmarks", "track_frame"]

FRONT_REGIONS = ("skin", "lips", "eyes")  # where landmark vertices are drawn from (FLAME's region names)


@dataclass(frozen=True)
class TrackingConfig:
    steps: int = 100
    rays_per_step: int = 1024
    code_learning_rate: float = 3e-2
    pose_learning_rate: float = 3e-3
    silhouette_weight: float = 0.1
    landmark_weight: float = 1.0  # of the mean squared landmark error in units of the image width
    landmarks: int = 32
    start: Literal["neutral", "tracked"] = "neutral"  # the condition starts at zero, or at the tracked one
    optimize_pose: bool = True
    seed: int = 0

    def __post_init__(self) -> None:
        check_count("steps", self.steps, 0)
        check_count("rays_per_step", self.rays_per_step, 1)
        check_count("landmarks", self.landmarks, 0)
        for name in ("code_learning_rate", "pose_learning_rate"):
            check_positive(name, getattr(self, name))
        if self.start not in ("neutral", "tracked"):
            raise ValueError(f"start: expected 'neutral' or 'tracked', got {self.start!r}")


@dataclass
class TrackingResult:
    state: FrameState  # the fitted frame (one row), detached
    start: FrameState  # where the fit started from
    losses: list[float] = field(default_factory=list)  # per step


def landmark_vertices(model: MonoNphm, count: int) -> Int[Tensor, " K"]:
    """``count`` vertices spread over the face (farthest points of the front regions of the neutral mesh)."""
    neutral = model.parametric()
    regions = [neutral.regions[name] for name in FRONT_REGIONS if name in neutral.regions]
    ids = torch.cat(regions).unique() if regions else torch.arange(model.parametric.num_vertices)
    rest = neutral.canonical_vertices[ids]
    front = ids[rest[:, 2] > model.center[2]]
    return front[farthest_points(neutral.canonical_vertices[front], count)]


def posed_landmarks(model: MonoNphm, state: FrameState, canonical: Float[Tensor, "K 3"]) -> Float[Tensor, "K 3"]:
    """World positions of canonical points (metres, neutral head frame) for frame ``state`` (one row): the
    posed points the backward field carries onto them, found by root finding, differentiable by implicit
    differentiation in the condition and pose."""
    condition = state.condition.expand(len(canonical), -1)
    solved = find_preimage(lambda x: model.deformer.deform(x, condition).offset, model.normalize(canonical))
    head_frame = solved.points * model.scale + model.center
    return head_frame @ state.rotation[0].T + state.translation[0]


def track_frame(model: MonoNphm, frames: FrameSet, frame: int, config: TrackingConfig | None = None) -> TrackingResult:
    """Fit frame ``frame`` of ``frames`` with the networks frozen: its condition (tracked expression part,
    expression code, identity) and, with ``optimize_pose``, a rotation and translation applied after its
    tracked head pose."""
    c = config or TrackingConfig()
    device = model.center.device
    index = torch.tensor([frame], device=device)
    with torch.no_grad():
        tracked = model.frame_state(frames, index)
    condition = tracked.condition.clone()
    if c.start == "neutral":
        condition.zero_()
    condition0 = condition.clone()
    condition.requires_grad_(True)
    omega = torch.zeros(1, 3, device=device, requires_grad=True)
    shift = torch.zeros(1, 3, device=device, requires_grad=True)
    groups = [{"params": [condition], "lr": c.code_learning_rate}]
    if c.optimize_pose:
        groups.append({"params": [omega, shift], "lr": c.pose_learning_rate})
    optimizer = torch.optim.Adam(groups)

    cameras = frames.cameras.to(device)
    targets = frames.images[frame].to(device).float().reshape(-1, 3) / 255.0
    masks = None if frames.masks is None else frames.masks[frame].to(device).reshape(-1)
    landmark_ids = landmark_vertices(model, c.landmarks) if c.landmarks and frames.mesh_vertices is not None else None
    if landmark_ids is not None:
        detected = project_points(cameras, frames.mesh_vertices[frame, landmark_ids].to(device), frame).pixels
        canonical = model.parametric().canonical_vertices[landmark_ids]

    generator = torch.Generator().manual_seed(c.seed)
    pixels = image_pixels(cameras)
    was_training = [p.requires_grad for p in model.parameters()]
    model.requires_grad_(False)
    losses = []
    try:
        for _ in range(c.steps):
            pick = torch.randint(0, len(pixels), (c.rays_per_step,), generator=generator).to(device)
            rays = pixel_rays(cameras, frame, pixels[pick])
            state = _posed(tracked, condition, omega, shift)
            out = model.render(rays, state, torch.zeros(len(pick), dtype=torch.long, device=device), generator)
            loss = l1_loss(out.composite.rgb, targets[pick])
            if masks is not None and c.silhouette_weight > 0:
                opacity = out.composite.opacity.clamp(0, 1)
                loss = loss + c.silhouette_weight * mask_loss(opacity, masks[pick].to(opacity.dtype))
            if landmark_ids is not None and c.landmark_weight > 0:
                projected = project_points(cameras, posed_landmarks(model, state, canonical), frame).pixels
                loss = loss + c.landmark_weight * ((projected - detected) / cameras.width).square().sum(-1).mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(float(loss.detach()))
    finally:
        for p, flag in zip(model.parameters(), was_training, strict=True):
            p.requires_grad_(flag)
    final = _posed(tracked, condition, omega, shift)
    final = FrameState(*(t.detach() for t in (final.rotation, final.translation, final.condition, final.appearance)))
    start = _posed(tracked, condition0, omega.new_zeros(1, 3), shift.new_zeros(1, 3))
    return TrackingResult(final, start, losses)


def _posed(tracked: FrameState, condition: Tensor, omega: Tensor, shift: Tensor) -> FrameState:
    """The tracked pose followed by the correction: rotation R exp(omega), translation t + shift."""
    rotation = tracked.rotation @ log_quaternion_to_rotation(omega)
    return replace(tracked, rotation=rotation, translation=tracked.translation + shift, condition=condition)


def frame_error(model: MonoNphm, frames: FrameSet, frame: int, state: FrameState | None = None) -> float:
    """Mean absolute colour error of frame ``frame``'s full render from ``state`` (default: its tracked state,
    which for a held-out frame has the neutral expression code)."""
    truth = frames.images[frame].float() / 255.0
    return float((model.render_frame(frames, frame, state) - truth).abs().mean())
