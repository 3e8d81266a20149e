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
from jaxtyping import Bool, Float, Int
from torch import Tensor

from ..checks import check_count, check_positive
from ..data import FrameSet
from ..deformers import find_preimage, log_quaternion_to_rotation
from ..geometry import farthest_points
from ..heads import tracked_head
from ..losses import l1_loss, mask_loss
from ..renderers import image_pixels, pixel_rays, project_points
from .mononphm import FrameState, MonoNphm

__all__ = [
    "PosedLandmarks",
    "TrackingConfig",
    "TrackingResult",
    "frame_error",
    "landmark_vertices",
    "posed_landmarks",
    "track_frame",
]

FRONT_REGIONS = ("skin", "lips", "eyes")  # where landmark vertices are drawn from (FLAME's region names)
LANDMARK_TOLERANCE = 1e-5  # normalised units (~2 um on a FLAME head): what float32 root finding reaches


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
    start: FrameState  # where the fit started from (for "neutral": zero expression, the learnt identity)
    losses: list[float] = field(default_factory=list)  # per step


def landmark_vertices(model: MonoNphm, count: int) -> Int[Tensor, " K"]:
    """``count`` vertices spread over the face (farthest points of the front regions of the neutral mesh)."""
    neutral = model.parametric()
    regions = [neutral.regions[name] for name in FRONT_REGIONS if name in neutral.regions]
    ids = torch.cat(regions).unique() if regions else torch.arange(model.parametric.num_vertices, device=model.center.device)
    front = ids[neutral.canonical_vertices[ids, 2] > model.center[2]]
    return front[farthest_points(neutral.canonical_vertices[front], count)]


@dataclass
class PosedLandmarks:
    points: Float[Tensor, "K 3"]  # world
    converged: Bool[Tensor, " K"]  # root finding met LANDMARK_TOLERANCE (the others are its best iterate)


def posed_landmarks(model: MonoNphm, state: FrameState, canonical: Float[Tensor, "K 3"]) -> PosedLandmarks:
    """World positions of canonical points (metres, neutral head frame) for frame ``state`` (one row): the
    posed points the backward field carries onto them, found by root finding, differentiable by implicit
    differentiation in the condition and pose."""
    condition = state.condition.expand(len(canonical), -1)
    solved = find_preimage(
        lambda x: model.deformer.deform(x, condition).offset, model.normalize(canonical), tolerance=LANDMARK_TOLERANCE
    )
    head_frame = solved.points * model.scale + model.center
    return PosedLandmarks(head_frame @ state.rotation[0].T + state.translation[0], solved.converged)


def track_frame(model: MonoNphm, frames: FrameSet, frame: int, config: TrackingConfig | None = None) -> TrackingResult:
    """Fit frame ``frame`` of ``frames`` with the networks frozen: the expression part of its condition (tracked
    expression and expression code; the identity code stays as learnt) and, with ``optimize_pose``, a
    correction of its head pose: a rotation in the head's frame (before the tracked rotation) and a world
    translation."""
    c = config or TrackingConfig()
    device = model.center.device
    index = torch.tensor([frame], device=device)
    head = tracked_head(model.parametric, frames)
    with torch.no_grad():
        tracked = model.frame_state(head, index)
    split = tracked.condition.shape[1] - model.identity_codes.dim
    identity = tracked.condition[:, split:]
    expression = tracked.condition[:, :split].clone()
    if c.start == "neutral":
        expression.zero_()
    start = replace(tracked, condition=torch.cat([expression, identity], dim=1))
    expression.requires_grad_(True)
    omega = torch.zeros(1, 3, device=device, requires_grad=True)
    shift = torch.zeros(1, 3, device=device, requires_grad=True)
    groups = [{"params": [expression], "lr": c.code_learning_rate}]
    if c.optimize_pose:
        groups.append({"params": [omega, shift], "lr": c.pose_learning_rate})
    optimizer = torch.optim.Adam(groups)

    cameras = frames.cameras.to(device)
    targets = frames.images[frame].to(device).float().reshape(-1, 3) / 255.0
    masks = None if frames.masks is None else frames.masks[frame].to(device).reshape(-1)
    use_landmarks = c.landmarks > 0 and c.landmark_weight > 0 and frames.mesh_vertices is not None
    if use_landmarks:
        ids = landmark_vertices(model, c.landmarks)
        detected = project_points(cameras, frames.mesh_vertices[frame, ids.cpu()].to(device), frame).pixels
        canonical = head.canonical_vertices[ids]  # the subject's neutral mesh

    generator = torch.Generator().manual_seed(c.seed)
    pixels = image_pixels(cameras)
    requires_grad = [p.requires_grad for p in model.parameters()]
    model.requires_grad_(False)
    losses = []
    try:
        for _ in range(c.steps):
            pick = torch.randint(0, len(pixels), (c.rays_per_step,), generator=generator).to(device)
            rays = pixel_rays(cameras, frame, pixels[pick])
            state = _posed(tracked, torch.cat([expression, identity], dim=1), omega, shift)
            out = model.render(rays, state, torch.zeros(len(pick), dtype=torch.long, device=device), generator)
            loss = l1_loss(out.composite.rgb, targets[pick])
            if masks is not None and c.silhouette_weight > 0:
                opacity = out.composite.opacity.clamp(0, 1)
                loss = loss + c.silhouette_weight * mask_loss(opacity, masks[pick].to(opacity.dtype))
            if use_landmarks:
                landmarks = posed_landmarks(model, state, canonical)
                error = ((project_points(cameras, landmarks.points, frame).pixels - detected) / cameras.width).square()
                ok = landmarks.converged  # a landmark the root finder lost gives no (misleading) gradient
                loss = loss + c.landmark_weight * (error.sum(-1) * ok).sum() / ok.sum().clamp(min=1)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(float(loss.detach()))
    finally:
        for p, flag in zip(model.parameters(), requires_grad, strict=True):
            p.requires_grad_(flag)
    with torch.no_grad():
        final = _posed(tracked, torch.cat([expression, identity], dim=1), omega, shift)
    return TrackingResult(replace(final, condition=final.condition.detach()), start, losses)


def _posed(tracked: FrameState, condition: Tensor, omega: Tensor, shift: Tensor) -> FrameState:
    """The tracked pose with the correction: rotation R exp(omega), translation t + shift."""
    rotation = tracked.rotation @ log_quaternion_to_rotation(omega)
    return replace(tracked, rotation=rotation, translation=tracked.translation + shift, condition=condition)


def frame_error(model: MonoNphm, frames: FrameSet, frame: int, state: FrameState | None = None) -> float:
    """Mean absolute colour error of frame ``frame``'s full render from ``state`` (default: its tracked state,
    which for a held-out frame has the neutral expression code)."""
    truth = frames.images[frame].float() / 255.0
    return float((model.render_frame(frames, frame, state) - truth).abs().mean())
