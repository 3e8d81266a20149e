"""The landmark term of a fit: each frame's landmarks in pixels (:func:`detected_landmarks`: a detector's, or the
tracked head's projected) and the error of posed points projected against them (:func:`landmark_error`)."""

from __future__ import annotations

import torch
from jaxtyping import Float
from torch import Tensor

from ..cameras import PinholeCameras, project_points
from ..checks import check_shape
from ..data import FrameSet
from ..data.ibug import IBUG_POINTS, model_landmark
from ..parametric import Head, SubjectModel
from .preimages import PosedPoints

__all__ = ["detected_landmarks", "landmark_error"]


def landmark_error(
    cameras: PinholeCameras,
    points: PosedPoints,
    frame: int,
    detected: Float[Tensor, "K 2"],
    weights: Float[Tensor, " K"] | None = None,
) -> Tensor:
    """Mean squared error, in image widths, between the points projected into ``frame`` and their detections, over
    both coordinates of the points whose root finding converged (a lost one gives no misleading gradient) and whose
    detection is there (not NaN), each residual times its weight (tracking.py's ``anchor_loss_scale`` multiplies the
    residual: a weight w counts w²)."""
    found = torch.isfinite(detected).all(-1)  # a detector's missing point (NaN) gives no term
    residual = (project_points(cameras, points.points, frame).pixels - detected.nan_to_num()) / cameras.width
    if weights is not None:
        residual = residual * weights[:, None].to(residual.dtype)
    ok = points.converged & found
    return (residual.square().mean(-1) * ok).sum() / ok.sum().clamp(min=1)


def detected_landmarks(
    parametric: SubjectModel,
    frames: FrameSet,
    head: Head,
    landmark_ids: Tensor,
    landmarks: Tensor | None,
    device: torch.device,
) -> Tensor | None:
    """Each frame's landmarks ``landmark_ids`` in pixels ``[F, L, 2]`` on ``device``: of ``landmarks`` (a detector's:
    in ``parametric``'s landmark order, or all 68 iBUG points; NaN where it found none), else the landmarks of
    ``head`` (the frames' tracked head) projected; None without either."""
    if landmarks is not None:
        count = parametric().landmarks.shape[1]
        if isinstance(landmarks, Tensor) and landmarks.dim() == 3 and landmarks.shape[1] == IBUG_POINTS != count:
            ibug = [next(i for i in range(IBUG_POINTS) if model_landmark(i, count) == j) for j in landmark_ids.tolist()]
            landmark_ids = torch.tensor(ibug, dtype=torch.long)
            count = IBUG_POINTS
        check_shape("landmarks", landmarks, [len(frames), count, 2])
        if not landmarks.is_floating_point() or bool(torch.isinf(landmarks).any()):
            raise ValueError(f"landmarks: expected float pixels, NaN where none was found, got {landmarks.dtype} with Inf")
        return landmarks.to(device, torch.float32)[:, landmark_ids.to(device)]
    if head.landmarks is None or not len(landmark_ids):
        return None
    cameras = frames.cameras.to(device)
    points = head.landmarks[:, landmark_ids]
    n, count = points.shape[:2]
    frame = torch.arange(n, device=points.device).repeat_interleave(count)
    return project_points(cameras, points.reshape(-1, 3).to(cameras.camera_to_world), frame).pixels.reshape(n, count, 2)
