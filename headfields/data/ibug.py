"""iBUG-68 landmarks (the 68-point face layout of 300-W, what face-landmark detectors output): how a tracking
model's landmarks index them, and MonoNPHM's anchors paired with them.

FLAME's static landmark embedding (``flame_static_embedding.pkl``) holds iBUG points 17..67 in order (brows, nose,
eyes, lips): the 17 jaw-contour points move with the head's yaw and come from a separate dynamic embedding. A model
with 68 landmarks is taken to hold all of them in iBUG order.
"""

from __future__ import annotations

__all__ = ["ANCHOR_LANDMARK_PAIRS", "ANCHOR_PAIR_WEIGHTS", "IBUG_POINTS", "model_landmark"]

IBUG_POINTS = 68
CONTOUR_POINTS = 17  # iBUG 0..16, the jaw contour: not in FLAME's static embedding

# MonoNPHM's 35 pairs of (anchor, iBUG-68 landmark) (photometric_tracking/tracking.py, ANCHOR_iBUG68_pairs_65), in
# its anchor layout: 30 mirror pairs (2i, 2i + 1), the even one on the subject's right (-x, where iBUG starts), then
# 5 anchors on the midplane (60..64).
ANCHOR_LANDMARK_PAIRS: tuple[tuple[int, int], ...] = (
    (0, 0), (1, 16), (38, 2), (39, 14), (2, 4), (3, 12), (4, 6), (5, 10),  # jaw
    (60, 8),  # chin
    (10, 31), (11, 35), (62, 30), (61, 27),  # nose: wings, tip, bridge
    (6, 17), (7, 26),  # brows, outer ends
    (12, 36), (13, 45), (14, 39), (15, 42),  # eye corners, outer and inner
    (16, 48), (17, 54), (18, 50), (19, 52), (20, 58), (21, 56), (44, 49), (45, 53), (46, 59), (47, 55),  # lips
    (48, 38), (49, 43), (50, 41), (51, 46),  # eyelids
    (52, 21), (53, 22),  # brows, inner ends
)  # fmt: skip
# Each pair's residual is multiplied by its weight (tracking.py's anchor_loss_scale): chin, lips and eyelids 100.
ANCHOR_PAIR_WEIGHTS: tuple[float, ...] = (1.0,) * 8 + (100.0,) + (1.0,) * 10 + (100.0,) * 14 + (1.0,) * 2


def model_landmark(ibug: int, count: int) -> int | None:
    """The index, among a model's ``count`` landmarks, of iBUG-68 point ``ibug``: the same with 68, ``ibug - 17``
    with FLAME's 51 static ones (None for a jaw-contour point), None for another layout."""
    if not 0 <= ibug < IBUG_POINTS:
        raise ValueError(f"ibug: expected an iBUG-68 index in [0, 68), got {ibug}")
    if count == IBUG_POINTS:
        return ibug
    if count == IBUG_POINTS - CONTOUR_POINTS:
        return ibug - CONTOUR_POINTS if ibug >= CONTOUR_POINTS else None
    return None
