"""The writer of VHAP's exported layout (``vhap/export_as_nerf_dataset.py``, what GaussianAvatars trains on):
:func:`save_vhap_dataset` writes FLAME FrameSets so that VHAP's readers and
:func:`~headfields.data.load_vhap_dataset` read them (the format is described in ``vhap_reader.py``).

- ``images/{:05d}.png`` (RGB), ``fg_masks/{:05d}.png`` (grey, where the frames have masks), one
  ``flame_param/{:05d}.npz`` per timestep (``translation``, ``rotation``, ``neck_pose``, ``jaw_pose [1, 3]``,
  ``eyes_pose [1, 6]``, ``expr [1, E]``, ``shape [S]``, ``static_offset [1, V, 3]`` where the params carry one),
  numbered over all splits in train, val, test order; ``canonical_flame_param.npz`` (the shape, zero pose and
  expression) as VHAP writes it;
- ``transforms_{train,val,test}.json`` and ``transforms.json`` (every frame): per frame ``timestep_index``,
  ``camera_index`` (0: one camera), ``fl_x fl_y cx cy w h`` with ``cy`` from the image bottom and
  ``transform_matrix`` camera to world in OpenGL axes, as VHAP converts them.

    save_vhap_dataset("captures/me_vhap", {"train": train, "test": test})
    load_vhap_dataset("captures/me_vhap", "train")  # the same frames back
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from . import _io
from .frames import SPLITS, FrameSet, check_frame_sets
from .vhap_reader import VHAP_KEYS

__all__ = ["save_vhap_dataset"]

_CV_TO_GL = np.diag([1.0, -1.0, -1.0, 1.0])  # OpenCV camera axes -> OpenGL (+y up, +z back): flip y and z
FLAME_JOINTS = 5  # global (VHAP's rotation), neck, jaw, left eye, right eye


def save_vhap_dataset(root: str | os.PathLike, frame_sets: Mapping[str, FrameSet]) -> Path:
    """Write ``frame_sets`` ({split: FrameSet} of a FLAME capture with tracked parameters) to folder ``root`` in
    VHAP's exported layout (see the module docstring) and return ``root``. Every split's transforms file is
    written (a split not given gets no frames, as VHAP writes an empty validation split for one camera)."""
    root = Path(root)
    check_frame_sets(frame_sets)
    for split, fs in frame_sets.items():
        if fs.params is None or fs.params.pose.shape[1] != FLAME_JOINTS:
            raise ValueError(
                f"frame_sets: VHAP's layout holds FLAME parameters (pose of {FLAME_JOINTS} joints); the {split!r} "
                f"split has {'none' if fs.params is None else f'a pose of {fs.params.pose.shape[1]} joints'}"
            )
    for folder in ("images", "fg_masks", "flame_param"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    first = next(iter(frame_sets.values())).to("cpu")
    count, every = 0, []
    for split in SPLITS:
        fs = frame_sets.get(split)
        frames = _write_frames(fs.to("cpu"), root, count) if fs is not None else []
        count += len(frames)
        every += frames
        (root / f"transforms_{split}.json").write_text(json.dumps(_top_level(fs or first, frames), indent=1) + "\n")
    (root / "transforms.json").write_text(json.dumps(_top_level(first, every), indent=1) + "\n")
    p = first.params
    canonical = {key: np.zeros((1, size or p.expression.shape[1]), np.float32) for key, size in VHAP_KEYS.items()}
    np.savez(root / "canonical_flame_param.npz", shape=p.shape.numpy(), **canonical)
    return root


def _intrinsics(fs: FrameSet) -> dict[str, Any]:
    c = fs.cameras
    return {
        "fl_x": float(c.fx),
        "fl_y": float(c.fy),
        "cx": float(c.cx),
        "cy": c.height - float(c.cy),
        "w": c.width,
        "h": c.height,
    }


def _top_level(fs: FrameSet, frames: list[dict[str, Any]]) -> dict[str, Any]:
    c = fs.cameras
    return {**_intrinsics(fs), "camera_angle_x": c.fov_x, "camera_angle_y": c.fov_y, "frames": frames}


def _write_frames(fs: FrameSet, root: Path, start: int) -> list[dict[str, Any]]:
    p, intrinsics, frames = fs.params, _intrinsics(fs), []
    pose = p.pose.numpy().astype(np.float32)
    offset = None if p.static_offset is None else p.static_offset.numpy().astype(np.float32)[None]
    for i in range(len(fs)):
        t = start + i
        frame = {"timestep_index": t, "camera_index": 0, "file_path": f"images/{t:05d}.png"}
        _io.write_color(root / frame["file_path"], fs.images[i].numpy())
        if fs.masks is not None:
            frame["fg_mask_path"] = f"fg_masks/{t:05d}.png"
            _io.write_labels(root / frame["fg_mask_path"], fs.masks[i].numpy().astype(np.uint8) * 255)
        frame["flame_param_path"] = f"flame_param/{t:05d}.npz"
        arrays = {
            "translation": p.translation[i : i + 1].numpy(),
            "rotation": pose[i : i + 1, 0],
            "neck_pose": pose[i : i + 1, 1],
            "jaw_pose": pose[i : i + 1, 2],
            "eyes_pose": pose[i : i + 1, 3:].reshape(1, 6),
            "expr": p.expression[i : i + 1].numpy(),
            "shape": p.shape.numpy(),
        }
        if offset is not None:
            arrays["static_offset"] = offset
        np.savez(root / frame["flame_param_path"], **arrays)
        matrix = fs.cameras.camera_to_world[i].double().numpy() @ _CV_TO_GL
        frames.append({**frame, **intrinsics, "transform_matrix": matrix.tolist()})
    return frames
