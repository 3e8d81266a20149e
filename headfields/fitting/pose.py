"""A tracked head pose with a fitted correction: a rotation ``exp(w)`` in the head frame, then a world shift (MonoNPHM's
``photometric_tracking/tracking.py`` fits both per frame)."""

from __future__ import annotations

from jaxtyping import Float
from torch import Tensor

from ..deformers import log_quaternion_to_rotation

__all__ = ["corrected_pose"]


def corrected_pose(
    rotation: Float[Tensor, "N 3 3"], translation: Float[Tensor, "N 3"], omega: Float[Tensor, "N 3"], shift: Float[Tensor, "N 3"]
) -> tuple[Tensor, Tensor]:
    """Head frame -> world with a correction: the tracked ``rotation`` times ``exp(omega)`` (a rotation in the head
    frame, before the tracked one), the tracked ``translation`` plus a world ``shift``."""
    return rotation @ log_quaternion_to_rotation(omega).to(rotation.dtype), translation + shift.to(translation.dtype)
