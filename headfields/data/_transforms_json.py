"""Parsing of one ``transforms.json`` file for the reader (``insta_reader.py``): the top-level keys (intrinsics,
model, segmentation labels), each split's frames and each frame's image and camera matrix, every value
checked, every error naming the file and the key."""

from __future__ import annotations

import math
import numbers
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..cameras import check_rigid, focal_from_fov
from . import _io
from .frames import MODEL_TYPES, SPLITS

IMAGE_SUFFIXES = (".png", ".jpg")  # tried in order for a file_path without extension (NeRFace)


class TransformsJson:
    """A parsed transforms file plus the path that every error names."""

    def __init__(self, path: Path, allow_outside_root: bool = False):
        self.path, self.root, self.allow_outside_root = path, path.parent, allow_outside_root
        data = _io.read_json(path, "transforms file")
        if not isinstance(data, dict):
            raise ValueError(f"{path}: expected a JSON object at the top level, got {type(data).__name__}")
        self.data: dict[str, Any] = data
        frames = data.get("frames")
        if not isinstance(frames, list):
            raise ValueError(f"{path}: frames: expected a list of frames, got {_kind(frames)}")
        for i, frame in enumerate(frames):
            if not isinstance(frame, dict):
                raise ValueError(f"{path}: frames[{i}]: expected a JSON object, got {_kind(frame)}")
        self.frames: list[dict[str, Any]] = frames

    def error(self, key: str, message: str) -> ValueError:
        return ValueError(f"{self.path}: {key}: {message}")

    def number(self, key: str, value: Any, positive: bool = False) -> float:
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
            raise self.error(key, f"expected a finite number, got {value!r}")
        if positive and not value > 0:
            raise self.error(key, f"expected a positive number, got {value!r}")
        return float(value)

    def integer(self, key: str) -> int:
        value = self.data[key]
        if self.number(key, value, positive=True) != int(value):  # finite first: int(NaN) would raise bare
            raise self.error(key, f"expected a positive integer, got {value!r}")
        return int(value)

    def text(self, key: str, value: Any) -> str:
        if not isinstance(value, str) or not value:
            raise self.error(key, f"expected a non-empty string, got {value!r}")
        return value

    def file(self, key: str, value: Any) -> Path:
        """The path ``value`` names, relative to the dataset folder, which it must not leave (``..``, an absolute
        path, a link out) unless the reader was asked to allow it: a capture names its own files."""
        path = self.root / self.text(key, value)
        self.inside(key, path, repr(value))
        return path

    def inside(self, key: str, path: Path, named: str) -> None:
        """``path`` (which ``key`` leads to, written ``named`` in the error) resolves inside the dataset folder, or
        the reader was asked to allow it; a loop of links is an error either way."""
        try:
            resolved = _io.resolve(path)
        except ValueError as e:
            raise self.error(key, str(e)) from e
        if not self.allow_outside_root and not resolved.is_relative_to(_io.resolve(self.root)):
            raise self.error(key, f"expected a path inside the dataset folder {self.root}, got {named} "
                             "(the loader's allow_outside_root=True reads it)")  # fmt: skip

    def rigid(self, key: str, matrix: np.ndarray) -> None:
        """A 4 x 4 ``matrix`` that must be rigid (``check_rigid``), or an error naming ``key``."""
        try:
            check_rigid(key, torch.from_numpy(np.asarray(matrix))[None])
        except ValueError as e:
            raise self.error(key, str(e).removeprefix(f"{key}: ").replace("matrix 0 is", "it is")) from e


def _kind(value: Any) -> str:
    return "nothing (missing)" if value is None else type(value).__name__


def split_frames(meta: TransformsJson, split: str, combined: bool) -> list[dict[str, Any]]:
    """The frames of ``split``: all of a per-split file; of a combined transforms.json, those listed in
    ``{split}_filenames`` (all of them for "train" when it lists none)."""
    key = f"{split}_filenames"
    if combined and key in meta.data:
        names = meta.data[key]
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise meta.error(key, f"expected a list of file paths, got {names!r}")
        by_name: dict[str, dict[str, Any]] = {}
        for frame in meta.frames:
            if isinstance(frame.get("file_path"), str):
                path = os.path.normpath(frame["file_path"])
                by_name[path] = by_name[os.path.splitext(path)[0]] = frame
        frames = []
        for name in names:
            norm = os.path.normpath(name)
            frame = by_name.get(norm, by_name.get(os.path.splitext(norm)[0]))
            if frame is None:
                raise meta.error(key, f"{name!r} is the file_path of no frame")
            frames.append(frame)
    elif combined and split != "train":
        raise ValueError(
            f"split: {meta.path} has no {split!r} frames: a single transforms.json puts every frame in 'train' "
            f"unless it lists '{key}'"
        )
    elif combined:  # train: every frame that no other split lists
        others = {id(f) for s in SPLITS if s != split and f"{s}_filenames" in meta.data for f in split_frames(meta, s, True)}
        frames = [f for f in meta.frames if id(f) not in others]
    else:
        frames = meta.frames
    if not frames:
        raise ValueError(f"split: {meta.path} has no frames for split {split!r}")
    return frames


def image_path(meta: TransformsJson, root: Path, i: int, frame: dict[str, Any]) -> Path:
    if "file_path" not in frame:
        raise meta.error(f"frames[{i}]", "missing key 'file_path'")
    path = meta.file(f"frames[{i}].file_path", frame["file_path"])
    if path.suffix.lower() not in IMAGE_SUFFIXES + (".jpeg",):
        for suffix in IMAGE_SUFFIXES:
            candidate = path.with_name(path.name + suffix)
            if candidate.is_file():
                return candidate
        tried = " or ".join(path.name + s for s in IMAGE_SUFFIXES)
        raise FileNotFoundError(f"{path.with_name(path.name + IMAGE_SUFFIXES[0])}: image not found (tried {tried}; frames[{i}])")
    return _io.require_file(path, "image", f"frames[{i}].file_path of {meta.path}")


def camera_matrix(meta: TransformsJson, i: int, frame: dict[str, Any]) -> np.ndarray:
    key = f"frames[{i}].transform_matrix"
    if "transform_matrix" not in frame:
        raise meta.error(f"frames[{i}]", "missing key 'transform_matrix'")
    value = frame["transform_matrix"]
    try:
        m = np.array(value, dtype=np.float64)
    except (TypeError, ValueError):
        m = None
    if m is None or m.shape != (4, 4):
        raise meta.error(key, f"expected a 4x4 matrix of numbers, got {value!r}"[:300])
    if not np.isfinite(m).all():
        raise meta.error(key, "expected finite numbers, got NaN or Inf")
    return m


def intrinsics(meta: TransformsJson, size: tuple[int, int] | None) -> tuple[float, float, float, float, int, int]:
    """fx, fy, cx, cy (OpenCV pixel convention), w, h from the top level; ``size`` is the first image's."""
    d = meta.data
    if "w" in d or "h" in d:
        for key in ("w", "h"):
            if key not in d:
                raise meta.error(key, "missing (w and h go together)")
        w, h = meta.integer("w"), meta.integer("h")
    elif size is not None:
        w, h = size
    else:
        raise meta.error("w", "missing, and there is no image to take the size from")
    if "intrinsics" in d:  # NeRFace: [fx, fy, cx, cy] with cx, cy relative to the size, pixel i at i
        values = d["intrinsics"]
        if not isinstance(values, list) or len(values) != 4:
            raise meta.error("intrinsics", f"expected [fx, fy, cx, cy], got {values!r}")
        fx, fy = (meta.number("intrinsics", v, positive=True) for v in values[:2])
        cx, cy = (meta.number("intrinsics", v) for v in values[2:])
        return fx, fy, cx * w + 0.5, cy * h + 0.5, w, h
    if "fl_x" in d:
        fx = meta.number("fl_x", d["fl_x"], positive=True)
    elif "camera_angle_x" in d:
        fx = _focal(meta, "camera_angle_x", w)
    else:
        raise meta.error("fl_x", "missing key (give fl_x, camera_angle_x or NeRFace's intrinsics list)")
    if "fl_y" in d:
        fy = meta.number("fl_y", d["fl_y"], positive=True)
    elif "camera_angle_y" in d:
        fy = _focal(meta, "camera_angle_y", h)
    else:
        fy = fx
    cx = meta.number("cx", d["cx"]) if "cx" in d else w / 2
    cy = meta.number("cy", d["cy"]) if "cy" in d else h / 2
    return fx, fy, cx, cy, w, h


def _focal(meta: TransformsJson, key: str, size: int) -> float:
    """Focal length in pixels from a field of view in radians (NeRF's ``camera_angle_x``)."""
    fov = meta.number(key, meta.data[key])
    try:
        return focal_from_fov(size, fov, key)
    except ValueError as e:
        raise meta.error(key, str(e).removeprefix(f"{key}: ")) from e


def optional_key(meta: TransformsJson, frames: list[dict[str, Any]], key: str, index: list[int]) -> bool:
    """Whether every frame has ``key``; an error naming the first odd frame if only some do."""
    has = [key in f for f in frames]
    if any(has) and not all(has):
        k = has.index(not has[0])
        first = "has" if has[0] else "has no"
        raise meta.error(f"frames[{index[k]}]", f"{'has' if has[k] else 'has no'} '{key}' while frames[{index[0]}] {first} one")
    return bool(has and has[0])


def check_same(meta: TransformsJson, path: Path, what: str, got: tuple, expected: tuple) -> None:
    if got != expected:
        raise ValueError(f"{path}: expected {what} {list(expected)} (as the first frame's, {meta.path}), got {list(got)}")


def segmentation_labels(meta: TransformsJson) -> dict[str, int]:
    labels = meta.data.get("segmentation_labels", {})
    valid = isinstance(labels, dict) and all(type(v) is int and 0 <= v <= 255 for v in labels.values())
    if not valid:
        raise meta.error("segmentation_labels", f"expected {{region name: label in [0, 255]}}, got {labels!r}"[:300])
    return dict(labels)


def model_folder(meta: TransformsJson, root: Path) -> tuple[str | None, Path | None]:
    if "model" not in meta.data:
        return None, None
    model = meta.data["model"]
    if not isinstance(model, dict) or model.get("type") not in MODEL_TYPES or not isinstance(model.get("path"), str):
        raise meta.error("model", f'expected {{"type": "flame" | "smplx", "path": relative folder}}, got {model!r}'[:300])
    folder = meta.file("model.path", model["path"])
    if folder.is_dir():  # the model loader opens the files in it by name: links among them must stay inside too
        for entry in sorted(folder.iterdir()):
            if entry.is_symlink():
                meta.inside("model.path", entry, f"{entry} (a link to {entry.readlink()})")
    return model["type"], folder
