"""Landmarks from a detector of the user's own (``--landmarks DIR``), read and checked frame by frame.

The format, either of:

- **one file per frame** in a folder: ``.npy`` (a float array) or ``.txt`` (numbers separated by whitespace, one
  point a line), ``[K, 2]`` or ``[K, 3]``. Each file's name ends in its frame number (``00000.npy``,
  ``frame_12.txt``): frame ``number - first_number`` of the video (``first_number=1`` for ffmpeg's ``%05d``
  numbering). Names without numbers are taken in name order, one per frame, when there are as many as frames.
- **one array** ``landmarks.npy`` of ``[N, K, 2 | 3]`` (the folder holding it, or the file itself).

Columns are x, y in pixels of the original video frames, as :func:`~headfields.apps.tracking.ingest.read_frames`
returns them upright (headfields' convention: the centre of pixel (col, row) is at (col + 0.5, row + 0.5)); a
third column (a confidence, or z) is ignored. K is 68 (iBUG-68 order, as face_alignment and dlib write) or
468 / 478 (MediaPipe face-mesh ids; 478 with the irises). A missing file, an empty file or a frame whose points
are all NaN means "no face in that frame"::

    from headfields.apps.tracking.landmark_files import read_landmark_files

    track = read_landmark_files("me_landmarks/", num_frames=900)
    track.points  # float [900, 68, 2], NaN where no face was found
    track.found  # bool [900]
    track.layout  # "ibug68"
"""

from __future__ import annotations

import numbers
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from jaxtyping import Bool, Float
from torch import Tensor

__all__ = ["LAYOUTS", "LandmarkTrack", "read_landmark_files"]

# Points per face of each layout: iBUG-68 (300-W); MediaPipe's face mesh without and with its 10 iris points.
LAYOUTS: dict[int, str] = {68: "ibug68", 468: "mediapipe", 478: "mediapipe"}
SINGLE_FILE = "landmarks.npy"
_NUMBER = re.compile(r"(\d+)$")


@dataclass(frozen=True)
class LandmarkTrack:
    """2D landmarks of N frames; NaN points where no face was found."""

    points: Float[Tensor, "N K 2"]
    found: Bool[Tensor, " N"]
    layout: Literal["ibug68", "mediapipe"]


def _load(path: Path) -> np.ndarray | None:
    """A frame's points [K, 2 | 3] as float64, or None for no face."""
    try:
        if path.suffix == ".npy":
            array = np.load(path, allow_pickle=False)
        else:
            text = path.read_text()
            if not text.strip():
                return None
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # numpy's warning on an input of comments only
                array = np.loadtxt(path, ndmin=2)
    except (OSError, ValueError, UnicodeDecodeError) as error:
        raise ValueError(f"{path.name}: expected a readable landmark file (.npy or whitespace-separated .txt): {error}") from None
    if array.size == 0:
        return None
    if not np.issubdtype(array.dtype, np.number) or np.issubdtype(array.dtype, np.complexfloating):
        raise ValueError(f"{path.name}: expected real numbers, got an array of {array.dtype}")
    return array.astype(np.float64)


def _frame_points(name: str, array: np.ndarray) -> np.ndarray | None:
    """Check one frame's [K, 2 | 3]: (x, y) of each point, or None for a frame without a face."""
    if array.ndim != 2 or array.shape[1] not in (2, 3):
        raise ValueError(f"{name}: expected landmarks of shape [K, 2] or [K, 3], got {list(array.shape)}")
    if array.shape[0] not in LAYOUTS:
        raise ValueError(f"{name}: expected 68 (iBUG-68), 468 or 478 (MediaPipe) landmarks, got {array.shape[0]}")
    xy = array[:, :2]
    if np.isnan(xy).all():
        return None
    if not np.isfinite(xy).all():
        row = int(np.nonzero(~np.isfinite(xy).all(axis=1))[0][0])
        raise ValueError(f"{name}: expected finite x, y (or all NaN for no face), found NaN or Inf at point {row}")
    return xy


def _frame_files(folder: Path, num_frames: int, first_number: int) -> dict[int, Path]:
    files = sorted(p for p in folder.iterdir() if p.suffix in (".npy", ".txt") and not p.name.startswith("."))
    if not files:
        raise ValueError(f"folder: expected .npy or .txt landmark files in {str(folder)!r}, found none")
    numbers_ = [_NUMBER.search(p.stem) for p in files]
    if not all(numbers_):
        if len(files) != num_frames:
            unnumbered = next(p for p, m in zip(files, numbers_, strict=True) if not m)
            raise ValueError(
                f"{unnumbered.name}: expected a name ending in its frame number, or one file per frame "
                f"({num_frames}) in name order; {str(folder)!r} has {len(files)} files"
            )
        return dict(enumerate(files))
    by_frame: dict[int, Path] = {}
    for path, match in zip(files, numbers_, strict=True):
        frame = int(match.group(1)) - first_number
        if not 0 <= frame < num_frames:
            raise ValueError(
                f"{path.name}: frame number {match.group(1)} is outside the video's {num_frames} frames (numbers "
                f"count from first_number={first_number}; ffmpeg's %05d starts at 1)"
            )
        if frame in by_frame:
            raise ValueError(f"{path.name}: expected one file per frame, {by_frame[frame].name} is the same frame")
        by_frame[frame] = path
    return by_frame


def read_landmark_files(folder: str | Path, num_frames: int, first_number: int = 0) -> LandmarkTrack:
    """The landmarks of ``num_frames`` video frames from ``folder`` (the format: see the module's docstring).

    Each error names the file at fault: unreadable, a wrong shape or number of points, numbers of points that differ
    between files, NaN or Inf in only some points, a frame number or count that does not fit the video.

    >>> track = read_landmark_files("landmarks/", num_frames=len(clip.images))
    >>> track.found.float().mean()  # the share of frames with a face
    """
    if not isinstance(folder, (str, Path)):
        raise TypeError(f"folder: expected a path to a folder of landmark files or to {SINGLE_FILE}, got {type(folder).__name__}")
    for name, value, low in (("num_frames", num_frames, 1), ("first_number", first_number, 0)):
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
            raise ValueError(f"{name}: expected an integer >= {low}, got {value!r}")
    folder = Path(folder)
    single = folder if folder.is_file() else folder / SINGLE_FILE
    if folder.is_file() and folder.suffix != ".npy":
        raise ValueError(f"folder: expected a folder of landmark files or a .npy array, got the file {str(folder)!r}")
    if not folder.exists():
        raise ValueError(f"folder: expected a folder of landmark files, {str(folder)!r} does not exist")

    frames: list[np.ndarray | None]
    names: list[str]
    if single.is_file():
        others = [] if folder.is_file() else [p.name for p in folder.iterdir() if p.suffix in (".npy", ".txt") and p != single]
        if others:
            raise ValueError(f"{SINGLE_FILE}: expected it alone in {str(folder)!r}, which also holds {others[0]} (one format)")
        array = _load(single)
        if array is None or array.ndim != 3:
            shape = "empty" if array is None else list(array.shape)
            raise ValueError(f"{single.name}: expected an array of shape [N, K, 2] or [N, K, 3], got {shape}")
        if array.shape[0] != num_frames:
            raise ValueError(f"{single.name}: expected landmarks of the video's {num_frames} frames, got {array.shape[0]}")
        names = [f"{single.name}[{i}]" for i in range(num_frames)]
        frames = [_frame_points(name, a) for name, a in zip(names, array, strict=True)]
    else:
        files = _frame_files(folder, num_frames, first_number)
        names = [files[i].name if i in files else "" for i in range(num_frames)]
        frames = [None] * num_frames
        for i, path in files.items():
            array = _load(path)
            frames[i] = None if array is None else _frame_points(path.name, array)

    counts: dict[int, str] = {}  # points per face -> the first file with that many
    for f, name in zip(frames, names, strict=True):
        if f is not None:
            counts.setdefault(len(f), name)
    if len(counts) > 1:
        (k0, first), (k1, other) = list(counts.items())[:2]
        raise ValueError(f"{other}: expected {k0} landmarks as in {first}, got {k1} (one detector for every frame)")
    if not counts:
        raise ValueError(f"folder: expected a face in at least one frame, {str(folder)!r} has none")
    k = next(iter(counts))
    points = torch.full((num_frames, k, 2), float("nan"), dtype=torch.float32)
    found = torch.tensor([f is not None for f in frames], dtype=torch.bool)
    for i, f in enumerate(frames):
        if f is not None:
            points[i] = torch.from_numpy(f)
    return LandmarkTrack(points=points, found=found, layout=LAYOUTS[k])
