"""MediaPipe's ids read as the model's parts: the iBUG table's columns, the irises in the eye joints' order, a blink."""

import pytest
import torch

from headfields.apps.tracking.correspondence import BLINK, EYES, MEDIAPIPE_FOR_IBUG, mediapipe_irises, mediapipe_to_ibug
from headfields.parametric import EYE_JOINTS

from helpers import shapes_unchecked


def _face(opening: float) -> torch.Tensor:
    """478 points: each eye 30 px wide, its lids ``opening`` of that apart, its iris at its centre; the subject's
    left eye on the image's right (x 70..100), as a camera facing the subject sees it."""
    points = torch.zeros(478, 2)
    for name, x in (("left_eye", 85.0), ("right_eye", 35.0)):
        iris, upper, lower, start, end = EYES[name]
        points[start], points[end] = torch.tensor([x - 15, 50.0]), torch.tensor([x + 15, 50.0])
        points[upper], points[lower] = torch.tensor([x, 50 - 15 * opening]), torch.tensor([x, 50 + 15 * opening])
        points[iris] = torch.tensor([x + 1.0, 50.0])
    return points


def test_irises_in_the_eye_joints_order():
    assert EYE_JOINTS == ("left_eye", "right_eye")
    irises, seen = mediapipe_irises(_face(0.3)[None])
    assert irises[0].tolist() == [[86.0, 50.0], [36.0, 50.0]] and seen.all()


def test_a_blink_and_a_missing_face_are_not_seen():
    closed = _face(BLINK * 0.5)
    one_shut = _face(0.3)
    one_shut[EYES["left_eye"][1:3], 1] = 50.0  # the left eye's lids meet
    missing = torch.full((478, 2), float("nan"))
    _, seen = mediapipe_irises(torch.stack([closed, one_shut, missing]))
    assert seen.tolist() == [[False, False], [False, True], [False, False]]


def test_bad_points():
    with shapes_unchecked(), pytest.raises(ValueError, match=r"points: expected MediaPipe's refined face-mesh points"):
        mediapipe_irises(torch.zeros(2, 468, 2))  # what a caller without the runtime checker sees
    ibug = mediapipe_to_ibug(torch.arange(478 * 2.0).view(1, 478, 2))  # the irises change nothing in the table
    assert ibug[0, 36].tolist() == [2.0 * MEDIAPIPE_FOR_IBUG[36], 2.0 * MEDIAPIPE_FOR_IBUG[36] + 1]
