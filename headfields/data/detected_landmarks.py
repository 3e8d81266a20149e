"""A capture's detected 2D landmarks: what a detector saw in each frame, beside the tracking fitted to them.

Our tracker writes them into the captures it makes (``landmarks/<split>.npy``: ``[frames, 68, 2]`` float32, iBUG-68
points in the capture's pixels, NaN where no point was found: a frame without a face, or a point the detector does
not give). MonoNPHM fits its anchors to them, as its own pipeline fits to its detector's points rather than to the
projections of a FLAME tracking.

    save_detected_landmarks(root / LANDMARKS_FOLDER, "train", points)
    points = load_detected_landmarks(root / LANDMARKS_FOLDER, "train")  # [N, L, 2], NaN where none was found
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor

from .frames import check_split

__all__ = ["LANDMARKS_FOLDER", "load_detected_landmarks", "save_detected_landmarks"]

LANDMARKS_FOLDER = "landmarks"  # in a capture's root


def save_detected_landmarks(folder: str | Path, split: str, points: Float[Tensor, "N L 2"]) -> Path:
    """Write ``points`` (pixels, NaN where none was found) as ``folder/<split>.npy``; returns the file."""
    check_split(split)
    if points.dim() != 3 or points.shape[2] != 2 or not points.is_floating_point():
        raise ValueError(f"points: expected float pixel landmarks [N, L, 2], got {points.dtype} {list(points.shape)}")
    if bool(torch.isinf(points).any()):
        raise ValueError("points: expected finite pixels or NaN (not found), found Inf")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{split}.npy"
    np.save(path, points.detach().cpu().float().numpy())
    return path


def load_detected_landmarks(folder: str | Path, split: str) -> Float[Tensor, "N L 2"]:
    """``folder/<split>.npy``: pixel landmarks ``[N, L, 2]``, NaN where none was found (Inf is refused)."""
    check_split(split)
    path = Path(folder) / f"{split}.npy"
    if not path.is_file():
        raise FileNotFoundError(f"landmarks: no {path.name} in {folder}")
    try:
        values = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as error:
        raise ValueError(f"landmarks: cannot read {str(path)!r} as a .npy array ({error})") from None
    if values.ndim != 3 or values.shape[2] != 2 or values.dtype.kind != "f":
        got = f"{values.dtype} {list(values.shape)}"
        raise ValueError(f"landmarks: expected float pixels [frames, L, 2] in {str(path)!r}, got {got}")
    if np.isinf(values).any():
        raise ValueError(f"landmarks: expected finite pixels or NaN (not found) in {str(path)!r}, found Inf")
    return torch.from_numpy(values.astype(np.float32))
