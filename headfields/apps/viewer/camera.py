"""The viewer's camera: viser's browser camera as :class:`~headfields.cameras.PinholeCameras`, and the size of
the image to render for it from the measured render speed (:func:`frame_pixels`)."""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from ...cameras import PinholeCameras

__all__ = ["MIN_PIXELS", "MOVING_PIXELS", "MOVING_SECONDS", "RESTING_PIXELS", "RESTING_SECONDS", "frame_pixels", "viser_camera"]

# The longer image side follows the render speed measured on the last frames (frame_pixels): a frame while the
# camera or a slider moves takes about MOVING_SECONDS, the sharp one once it rests (REST_SECONDS without a change)
# about RESTING_SECONDS, at most the browser canvas's size and the caps given; MOVING_PIXELS and RESTING_PIXELS
# before any frame is measured.
MOVING_SECONDS = 0.1
RESTING_SECONDS = 2.0
MIN_PIXELS = 32
MOVING_PIXELS = 48
RESTING_PIXELS = 128


def _quaternion_matrix(wxyz) -> Tensor:
    w, x, y, z = (float(v) for v in np.asarray(wxyz, dtype=np.float64) / np.linalg.norm(wxyz))
    return torch.tensor(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
            [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
            [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
        ],
        dtype=torch.float64,
    )


def viser_camera(position, wxyz, fov: float, aspect: float, pixels: int) -> PinholeCameras:
    """The :class:`PinholeCameras` (one camera) of viser's camera: ``wxyz`` and ``position`` are viser's
    ``R_world_camera`` and ``t`` (``P_world = R p_camera + t``) with OpenCV axes, as headfields'; ``fov`` the
    vertical field of view (radians), ``aspect`` width / height; the longer image side gets ``pixels`` pixels.

    >>> cameras = viser_camera(client.camera.position, client.camera.wxyz, client.camera.fov, client.camera.aspect, 128)
    """
    if not (math.isfinite(aspect) and aspect > 0):
        raise ValueError(f"aspect: expected a positive width / height, got {aspect}")
    if not 0 < fov < math.pi:
        raise ValueError(f"fov: expected a vertical field of view in (0, pi) radians, got {fov}")
    width, height = (pixels, max(1, round(pixels / aspect))) if aspect >= 1 else (max(1, round(pixels * aspect)), pixels)
    c2w = torch.eye(4, dtype=torch.float64)
    c2w[:3, :3] = _quaternion_matrix(wxyz)
    c2w[:3, 3] = torch.as_tensor(np.asarray(position, dtype=np.float64))
    fy = height / 2 / math.tan(fov / 2)
    return PinholeCameras(fy, fy, width / 2, height / 2, width, height, c2w.float()[None])


def frame_pixels(
    seconds: float,
    pixels_per_second: float | None,
    aspect: float,
    canvas: int,
    cap: int | None = None,
    unmeasured: int = RESTING_PIXELS,
) -> int:
    """The longer image side (``viser_camera``'s ``pixels``) whose frame renders in about ``seconds`` at
    ``pixels_per_second``, for a width / height of ``aspect``, at least MIN_PIXELS; ``unmeasured`` while no speed is
    known (``pixels_per_second`` None). At most the canvas's longer side ``canvas`` (0: not known yet) and ``cap``
    (None: none), which win over the floor."""
    side = unmeasured
    if pixels_per_second is not None:
        side = max(MIN_PIXELS, int(math.sqrt(max(seconds * pixels_per_second, 1.0) * max(aspect, 1 / aspect))))
    return min([side, *(b for b in (canvas if canvas > 0 else None, cap) if b is not None)])
