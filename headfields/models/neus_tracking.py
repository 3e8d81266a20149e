"""Tracking a frozen NeuS avatar to the frames of a video: the parts MonoNPHM's tracking
(:mod:`~headfields.models.mononphm_tracking`) and the hyper NeuS avatar's (:mod:`~headfields.models.hyper_neus_tracking`)
share, read against MonoNPHM's ``photometric_tracking/tracking.py``.

- :func:`corrected_pose`: the tracked head pose with a fitted correction (a rotation ``exp(w)`` in the head frame,
  then a world shift);
- :func:`posed_points`: canonical points (anchors, landmarks) carried into posed space by root finding of
  ``x + dx(x) = a``, differentiable by implicit differentiation;
- :class:`FramePixels`: each frame's pixel pools (the foreground and every pixel) and what a step compares with;
- :func:`soft_jaccard` and :func:`landmark_error`: the silhouette and landmark terms; :func:`detected_landmarks`,
  each frame's landmarks in pixels (a detector's, or the tracked head's projected);
- :data:`Schedule` and :func:`scheduled`: factors on a stage's weights and learning rates from a share of its
  steps on (tracking.py's ``update_lrs`` and its landmark weights);
- :func:`run_stage`: Adam steps over named parameter groups with the schedule applied.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from jaxtyping import Bool, Float
from torch import Tensor

from ..cameras import PinholeCameras, Rays, image_pixels, pixel_rays, project_points
from ..checks import check_float
from ..data import FrameSet
from ..data.ibug import IBUG_POINTS, model_landmark
from ..deformers import find_preimage, log_quaternion_to_rotation
from ..fields import Normalize
from ..parametric import Head, SubjectModel

__all__ = [
    "ROOT_TOLERANCE",
    "FramePixels",
    "PosedPoints",
    "Schedule",
    "check_schedule",
    "corrected_pose",
    "detected_landmarks",
    "landmark_error",
    "posed_points",
    "run_stage",
    "scheduled",
    "soft_jaccard",
]

ROOT_TOLERANCE = 1e-5  # normalised units (~2 um on a head 25 cm across): what float32 root finding reaches
JACCARD_SMOOTH = 5.0  # MonoNPHM's get_jaccard_distance_loss(smooth=5), its result times 5

# (share of a stage's steps from which it holds, name, factor): a weight or a parameter group's learning rate
# times the product of the factors reached so far.
Schedule = tuple[tuple[float, str, float], ...]


def scheduled(schedule: Schedule, name: str, step: int, steps: int) -> float:
    """The factor on ``name`` at ``step`` of ``steps``: the product of ``schedule``'s factors for ``name`` whose
    share of the steps (``int(share * steps)``, as tracking.py's ``epoch == int(32 * ...)``) has been reached."""
    factor = 1.0
    for share, key, value in schedule:
        if key == name and step >= int(share * steps):
            factor *= value
    return factor


def check_schedule(name: str, schedule: Schedule, keys: Sequence[str]) -> None:
    """``schedule``: entries (share in [0, 1], one of ``keys``, a finite factor >= 0)."""
    for entry in schedule:
        ok = isinstance(entry, tuple) and len(entry) == 3 and entry[1] in keys
        if not (ok and 0 <= entry[0] <= 1 and 0 <= entry[2] < float("inf")):
            raise ValueError(f"{name}: expected entries (share in [0, 1], one of {list(keys)}, factor >= 0), got {entry!r}")


def corrected_pose(
    rotation: Float[Tensor, "N 3 3"], translation: Float[Tensor, "N 3"], omega: Float[Tensor, "N 3"], shift: Float[Tensor, "N 3"]
) -> tuple[Tensor, Tensor]:
    """Head frame -> world with a correction: the tracked ``rotation`` times ``exp(omega)`` (a rotation in the head
    frame, before the tracked one), the tracked ``translation`` plus a world ``shift``."""
    return rotation @ log_quaternion_to_rotation(omega).to(rotation.dtype), translation + shift.to(translation.dtype)


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


class FramePixels:
    """The pixels of a frame set that tracking draws from: per frame the foreground and every pixel, their colours
    in [0, 1], the masks (all ones without) and the mouth interior (None where the frames have no such label)."""

    def __init__(self, frames: FrameSet, device: torch.device | str):
        self.cameras: PinholeCameras = frames.cameras.to(device)
        self.pixels = image_pixels(self.cameras)
        n = len(frames)
        self.rgb = frames.images.to(device).float().reshape(n, -1, 3) / 255.0
        masks = frames.masks
        self.mask = masks.to(device).reshape(n, -1) if masks is not None else torch.ones_like(self.rgb[..., 0], dtype=torch.bool)
        self.has_masks = masks is not None
        self.foreground = [torch.nonzero(m.cpu())[:, 0] for m in self.mask]
        labels = frames.segmentation_labels or {}
        self.mouth = None
        if frames.segmentation is not None and "mouth_interior" in labels:
            self.mouth = frames.segmentation.to(device).reshape(n, -1) == labels["mouth_interior"]

    def draw(self, frame: int, count: int, fraction: float, generator: torch.Generator) -> Tensor:
        """Pixel ids of frame ``frame``: ``fraction`` of ``count`` on the foreground, the rest anywhere."""
        fg = self.foreground[frame]
        k = int(round(count * fraction)) if len(fg) else 0
        pick_fg = fg[torch.randint(0, max(len(fg), 1), (k,), generator=generator)] if k else fg[:0]
        pick_any = torch.randint(0, len(self.pixels), (count - k,), generator=generator)
        return torch.cat([pick_fg, pick_any]).to(self.pixels.device)

    def rays(self, frame: int, pick: Tensor) -> Rays:
        return pixel_rays(self.cameras, frame, self.pixels[pick])


def soft_jaccard(opacity: Float[Tensor, " N"], mask: Float[Tensor, " N"]) -> Tensor:
    """MonoNPHM's silhouette term: (1 - J) x 5 with J = (sum y yhat + 5) / (sum (y + yhat) - sum y yhat + 5)."""
    both = (opacity * mask).sum()
    return (1 - (both + JACCARD_SMOOTH) / ((opacity + mask).sum() - both + JACCARD_SMOOTH)) * 5


def landmark_error(
    cameras: PinholeCameras,
    points: PosedPoints,
    frame: int,
    detected: Float[Tensor, "K 2"],
    weights: Float[Tensor, " K"] | None = None,
) -> Tensor:
    """Mean squared error, in image widths, between the points projected into ``frame`` and their detections, over
    both coordinates of the points whose root finding converged (a lost one gives no misleading gradient), each
    residual times its weight (tracking.py's ``anchor_loss_scale`` multiplies the residual: a weight w counts w²)."""
    residual = (project_points(cameras, points.points, frame).pixels - detected) / cameras.width
    if weights is not None:
        residual = residual * weights[:, None].to(residual.dtype)
    ok = points.converged
    return (residual.square().mean(-1) * ok).sum() / ok.sum().clamp(min=1)


def run_stage(
    groups: Sequence[tuple[str, list[Tensor], float]],
    steps: int,
    loss: Callable[[int], Tensor],
    schedule: Schedule = (),
    after_backward: Callable[[], None] | None = None,
) -> None:
    """``steps`` Adam steps on ``loss(step)``: ``groups`` are (name, parameters, learning rate); a group's rate at a
    step is its rate times :func:`scheduled` (``schedule``, its name). Groups with no parameters or a rate of 0 stay
    fixed. ``after_backward`` runs between the backward pass and the step (to mask or clip gradients)."""
    live = [(name, params, rate) for name, params, rate in groups if params and rate > 0]
    optimizer = torch.optim.Adam([{"params": params, "lr": rate} for _, params, rate in live]) if live else None
    for step in range(steps):
        if optimizer is not None:
            for group, (name, _, rate) in zip(optimizer.param_groups, live, strict=True):
                group["lr"] = rate * scheduled(schedule, name, step, steps)
            optimizer.zero_grad()
        value = loss(step)
        value.backward()
        if after_backward is not None:
            after_backward()
        if optimizer is not None:
            optimizer.step()


def detected_landmarks(
    parametric: SubjectModel,
    frames: FrameSet,
    head: Head,
    landmark_ids: Tensor,
    landmarks: Tensor | None,
    device: torch.device,
) -> Tensor | None:
    """Each frame's landmarks ``landmark_ids`` in pixels ``[F, L, 2]`` on ``device``: of ``landmarks`` (a detector's:
    in ``parametric``'s landmark order, or all 68 iBUG points), else the landmarks of ``head`` (the frames' tracked
    head) projected; None without either."""
    if landmarks is not None:
        count = parametric().landmarks.shape[1]
        if isinstance(landmarks, Tensor) and landmarks.dim() == 3 and landmarks.shape[1] == IBUG_POINTS != count:
            ibug = [next(i for i in range(IBUG_POINTS) if model_landmark(i, count) == j) for j in landmark_ids.tolist()]
            landmark_ids = torch.tensor(ibug, dtype=torch.long)
            count = IBUG_POINTS
        check_float("landmarks", landmarks, [len(frames), count, 2])
        return landmarks.to(device, torch.float32)[:, landmark_ids.to(device)]
    if head.landmarks is None or not len(landmark_ids):
        return None
    cameras = frames.cameras.to(device)
    points = head.landmarks[:, landmark_ids]
    n, count = points.shape[:2]
    frame = torch.arange(n, device=points.device).repeat_interleave(count)
    return project_points(cameras, points.reshape(-1, 3).to(cameras.camera_to_world), frame).pixels.reshape(n, count, 2)
