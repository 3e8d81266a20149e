"""MediaPipe's face mesh read as iBUG-68 points: the mesh index that stands for each iBUG point FLAME's static
embedding holds (27..67: nose, eyes, lips; the brows left out), so the fit of :mod:`headfields.fitting.landmark_tracking`
takes MediaPipe's detections as it takes a 68-point detector's.

The brows (17..26) are left out: MediaPipe traces the brow's upper edge, iBUG its middle, and on the synthetic video
the pairs sit 1.4-1.7 px apart at 96 px (7-9 px in a 512 crop) against a median of 0.5 px for the rest. Without them
the head's rotation came out 3.55 against 4.33 degrees on the 300-frame video, 0.62 against 1.04 on a 192-pixel clip.

The table is ours, licence-clean: derived by ``tools/mediapipe_ibug_table.py`` on the synthetic head's video (its
truth known) as the MediaPipe point nearest (median over 57 frames at 256 pixels) to each projected static iBUG
point; the comment gives that median distance. metrical-tracker's MPI-licensed ``mediapipe_landmark_embedding.npz`` is
neither shipped nor needed.

    ibug = mediapipe_to_ibug(faces.points[..., :2])  # [N, 68, 2]: NaN at the jaw contour and the brows (0..26)

The irises of MediaPipe's refined mesh (478 points) are the pupils of the model's eye joints, as metrical-tracker
and VHAP read them: :func:`mediapipe_irises` gives their centres in the order of
:data:`headfields.parametric.EYE_JOINTS`, and which are seen (a face found, the lids open).
"""

from __future__ import annotations

import torch
from jaxtyping import Bool, Float
from torch import Tensor

from ...data.ibug import IBUG_POINTS
from ...parametric import EYE_JOINTS
from .mediapipe import NUM_LANDMARKS, NUM_WITH_IRISES

__all__ = ["MEDIAPIPE_FOR_IBUG", "mediapipe_irises", "mediapipe_to_ibug"]

# Each eye joint's iris centre, upper and lower lid (mid-points) and corners in the refined mesh. MediaPipe's first
# iris (468) is from the eye of corners 33 and 133: the subject's right eye, on the image's left.
EYES = {"left_eye": (473, 386, 374, 362, 263), "right_eye": (468, 159, 145, 33, 133)}
# A blink: the lids closer than this fraction of the eye's width. Open, MediaPipe's lids sit 0.25-0.35 of it apart;
# the iris model still answers on a closed eye, wherever the lid's line is.
BLINK = 0.15

# iBUG-68 index: MediaPipe face-mesh index (tools/mediapipe_ibug_table.py, synthetic head, 256-pixel frames).
MEDIAPIPE_FOR_IBUG = {
    27: 168,  # 0.74 px
    28: 197,  # 1.62 px
    29: 5,  # 2.76 px
    30: 4,  # 1.78 px
    31: 240,  # 1.74 px
    32: 97,  # 1.08 px
    33: 2,  # 1.05 px
    34: 326,  # 1.21 px
    35: 460,  # 1.72 px
    36: 33,  # 0.86 px
    37: 29,  # 1.42 px
    38: 28,  # 1.07 px
    39: 173,  # 0.80 px
    40: 23,  # 1.99 px
    41: 24,  # 1.42 px
    42: 398,  # 0.73 px
    43: 258,  # 0.88 px
    44: 257,  # 2.05 px
    45: 466,  # 1.10 px
    46: 254,  # 0.87 px
    47: 252,  # 1.46 px
    48: 146,  # 1.12 px
    49: 80,  # 1.24 px
    50: 72,  # 1.83 px
    51: 0,  # 1.69 px
    52: 267,  # 1.87 px
    53: 310,  # 1.14 px
    54: 375,  # 0.90 px
    55: 405,  # 1.49 px
    56: 314,  # 1.93 px
    57: 17,  # 1.36 px
    58: 84,  # 1.73 px
    59: 181,  # 2.13 px
    60: 77,  # 1.32 px
    61: 178,  # 1.19 px
    62: 14,  # 0.78 px
    63: 402,  # 1.37 px
    64: 307,  # 1.24 px
    65: 316,  # 1.97 px
    66: 15,  # 1.20 px
    67: 179,  # 1.42 px
}  # fmt: skip


def mediapipe_to_ibug(points: Float[Tensor, "N M 2"]) -> Float[Tensor, "N 68 2"]:
    """MediaPipe's points (468, or 478 with the irises) as iBUG-68 points, NaN where the table has none."""
    if points.dim() != 3 or points.shape[1] < NUM_LANDMARKS or points.shape[2] != 2:
        raise ValueError(f"points: expected MediaPipe face-mesh points [N, 468 or 478, 2], got {list(points.shape)}")
    out = points.new_full((points.shape[0], IBUG_POINTS, 2), float("nan"))
    ibug = torch.tensor(list(MEDIAPIPE_FOR_IBUG), device=points.device)
    out[:, ibug] = points[:, torch.tensor(list(MEDIAPIPE_FOR_IBUG.values()), device=points.device)]
    return out


def mediapipe_irises(points: Float[Tensor, "N 478 2"]) -> tuple[Float[Tensor, "N 2 2"], Bool[Tensor, "N 2"]]:
    """The iris centres of MediaPipe's refined mesh in :data:`~headfields.parametric.EYE_JOINTS` order, and where
    each is seen: finite points (a face found) with the lids open."""
    if points.dim() != 3 or points.shape[1] != NUM_WITH_IRISES or points.shape[2] != 2:
        raise ValueError(f"points: expected MediaPipe's refined face-mesh points [N, 478, 2], got {list(points.shape)}")
    ids = torch.tensor([EYES[name] for name in EYE_JOINTS], device=points.device)  # [2, 5]
    iris, upper, lower, start, end = points[:, ids].unbind(dim=2)
    opening = (upper - lower).norm(dim=-1) / (end - start).norm(dim=-1)
    seen = torch.isfinite(points[:, ids].sum((-1, -2))) & (opening > BLINK)
    return iris, seen
