"""The reader of IMavatar / PointAvatar captures, into a :class:`~headfields.data.FrameSet` with OpenCV cameras and
FLAME parameters in headfields' pose convention (see :mod:`headfields.data.trackers`).

**IMavatar / PointAvatar** (:func:`load_imavatar_dataset`; github.com/zhengyuf/IMavatar, whose preprocessing
PointAvatar reuses). A sequence folder holds ``flame_params.json``, ``image/<k>.png`` and ``mask/<k>.png``.

- The file is written by ``preprocess/DECA/optimize.py``: per frame ``file_path`` (``./image/<k>``, no
  extension; the dataloader ``code/datasets/real_dataset.py`` appends ``.png`` and replaces ``image`` by
  ``mask`` for the mask), ``world_mat`` (3x4; 4x4 is accepted), ``expression`` (50), ``pose`` (15: global,
  neck, jaw, eyes, the ``full_pose`` of FLAME's kinematic tree, so joint for joint ours), ``bbox`` and
  ``flame_keypoints`` (not carried); top level ``shape_params`` (100) and ``intrinsics``.
- ``world_mat`` is world to camera (``real_dataset.py``: "world to camera", inverted by
  ``rend_util.load_K_Rt_from_P``) in OpenGL-like axes: the camera looks along -z (``rend_util.lift`` puts
  pixels at z = -1; the writer's ``translation_p`` starts at (0, 0, -4)).
- ``intrinsics`` are ``[fx/size, fy/size, cx/size, cy/size]`` with fx stored negative (``optimize.py``:
  ``save_intrinsics = [-1 * fx / size, ...]``); ``real_dataset.py`` multiplies by the image size and uses
  pixel (col, row) at (col, row). Pixels: ``u = fx * x_c / z_c + cx`` with ``(x_c, y_c, z_c) = world_mat @ p``,
  which holds for either sign of fx (PointAvatar's ``real_dataset.py`` flips fx and world_mat's first row
  together). So ours: ``|fx|, |fy|`` times the image width / height, ``cx, cy`` times the size plus 0.5, and
  camera axes ``diag(-sign fx, -sign fy, -1)`` of theirs (``diag(1, -1, -1)`` as written); equal signs of fx
  and fy would mirror the image and are refused. ``intrinsics[3] > 1`` is IMavatar's older layout, pixels of
  a 512 px image (``real_dataset.py``), scaled to the image size.
- IMavatar's world is FLAME scaled by 4 (``code/flame/FLAME.py``: ``factor = 4``; ``optimize.py``:
  ``verts_p *= 4``): camera translations are divided by 4, so cameras and FLAME share metres. The head's
  translation lives in ``world_mat`` (``params.translation`` is zero).
- Masks: grey (or grey-as-RGB, ffmpeg's matte frames) thresholded at 127.5 (``rend_util.load_mask``).
  IMavatar composites images on white; we keep the image as stored.
- Splits: IMavatar's config (``code/confs/*.conf``) names the sequence folders of each split
  (``train.sub_dir = [MVI_1810, MVI_1814]``, ``test.sub_dir = [MVI_1812]``): pass a sequence folder as
  ``root``, or the subject folder as ``root`` and the split's folders as ``sequences`` (their frames in that
  order; intrinsics and shape must agree, as the writer's ``--shape_from`` makes them).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..cameras import PinholeCameras
from . import _io
from ._tracker_io import image_path, number_array, read_mask, rigid_inverse
from ._transforms_json import TransformsJson
from .capture_checks import TrackedHead, check_camera_distances, check_coefficients, check_intrinsics, check_one_color_family
from .frames import FrameSet, TrackedParams, check_split

IMAVATAR_JSON = "flame_params.json"
IMAVATAR_FLAME_SCALE = 4.0  # IMavatar code/flame/FLAME.py: factor = 4 (FLAME scaled to fit the unit sphere)
IMAVATAR_OLD_SIZE = 512  # real_dataset.py: intrinsics[3] > 1 means pixels of a 512 px image
IMAVATAR_POSE = 15  # global, neck, jaw, left eye, right eye (axis-angle)


def load_imavatar_dataset(
    root: str | os.PathLike, split: str = "train", sequences: Sequence[str] | None = None, json_name: str = IMAVATAR_JSON
) -> FrameSet:
    """An IMavatar / PointAvatar capture (see the module docstring) as split ``split``: the sequence folder
    ``root``, or the sequence folders ``sequences`` of the subject folder ``root``.

    >>> train = load_imavatar_dataset("subject1/subject1", "train", sequences=["MVI_1810", "MVI_1814"])
    >>> test = load_imavatar_dataset("subject1/subject1/MVI_1812", "test")
    """
    check_split(split)
    root = _io.require_folder(root)
    if sequences is None:
        if not (root / json_name).is_file():
            found = imavatar_sequences(root, json_name)
            if found:
                raise ValueError(
                    f"sequences: {root} holds the sequences {found}; pass those of split {split!r} "
                    "(IMavatar's config names them per split)"
                )
            _io.require_file(root / json_name, "IMavatar parameter file")
        folders = [root]
    else:
        if isinstance(sequences, str) or not sequences or not all(isinstance(s, str) and s for s in sequences):
            raise ValueError(f"sequences: expected a non-empty list of sequence folder names, got {sequences!r}")
        folders = [root / s for s in sequences]
        resolved = [_io.resolve(f, "sequence folder") for f in folders]
        if len(set(resolved)) != len(resolved):  # its frames would count twice
            raise ValueError(f"sequences: expected each sequence folder once, got {list(sequences)!r}")
    parts = [_imavatar_sequence(_io.require_file(f / json_name, "IMavatar parameter file")) for f in folders]

    first = parts[0]
    for part in parts[1:]:
        for key in ("intrinsics", "shape_params"):
            if part[key].shape != first[key].shape or not np.allclose(part[key], first[key], rtol=1e-6, atol=0):
                raise part["meta"].error(key, f"expected the same {key} as {first['meta'].path} (one subject, one camera)")
        if part["expression"].shape[1] != first["expression"].shape[1]:
            raise part["meta"].error(
                "frames[0].expression", f"expected {first['expression'].shape[1]} coefficients as {first['meta'].path}"
            )
    image_paths = [p for part in parts for p in part["images"]]
    read = [_io.read_color_image(p) for p in image_paths]
    check_one_color_family(split, image_paths, read)
    colors = [image.rgb for image in read]
    h, w = colors[0].shape[:2]
    for path, c in zip(image_paths, colors, strict=True):
        if c.shape[:2] != (h, w):
            raise ValueError(f"{path}: expected {w}x{h} pixels (as {image_paths[0]}), got {c.shape[1]}x{c.shape[0]}")

    f = first["intrinsics"]
    sx, sy = (w / IMAVATAR_OLD_SIZE, h / IMAVATAR_OLD_SIZE) if f[3] > 1 else (w, h)
    fx, fy = f[0] * sx, f[1] * sy
    if fx == 0 or fy == 0 or (fx > 0) == (fy > 0):
        raise first["meta"].error(
            "intrinsics",
            f"expected non-zero focal lengths of opposite signs (IMavatar writes -fx/size, "
            f"fy/size), got {f[0]!r}, {f[1]!r}: equal signs would mirror the image",
        )
    cx, cy = f[2] * sx + 0.5, f[3] * sy + 0.5
    check_intrinsics(first["meta"], ("intrinsics",) * 4, abs(fx), abs(fy), cx, cy, w, h)
    flip = np.diag([-np.sign(fx), -np.sign(fy), -1.0, 1.0])
    world_to_camera = np.concatenate([part["world_mat"] for part in parts])
    world_to_camera[:, :3, 3] /= IMAVATAR_FLAME_SCALE  # their world is FLAME x 4; ours is FLAME's metres
    camera_to_world = rigid_inverse(flip @ world_to_camera)
    start = 0
    for part in parts:  # the head at the origin: IMavatar's FLAME translation is zero, the head's motion in world_mat
        n = len(part["world_mat"])
        head = TrackedHead.at(np.zeros((n, 3)), "at the origin, where IMavatar's FLAME sits")
        keys = [f"frames[{i}].world_mat" for i in range(n)]
        check_camera_distances(part["meta"], keys, camera_to_world[start : start + n], max(abs(fx), abs(fy)), head)
        start += n
    cameras = PinholeCameras(abs(fx), abs(fy), cx, cy, w, h, torch.from_numpy(camera_to_world).float())
    masks = _imavatar_masks([p for part in parts for p in part["masks"]], (h, w))
    expression = np.concatenate([part["expression"] for part in parts])
    pose = np.concatenate([part["pose"] for part in parts]).reshape(-1, 5, 3)
    params = TrackedParams(
        *(torch.from_numpy(a.astype(np.float32)) for a in (first["shape_params"], expression, pose, np.zeros((len(pose), 3))))
    )
    return FrameSet(
        split, cameras, torch.from_numpy(np.stack(colors)), masks=masks, params=params, root=root, image_paths=image_paths
    )


def _imavatar_sequence(path: Path) -> dict[str, Any]:
    """The frames of one ``flame_params.json``: image and mask paths, world_mat [N,4,4] (checked rigid),
    expression [N,E], pose [N,15], and the top-level intrinsics [4] and shape_params [S]."""
    meta = TransformsJson(path)
    if not meta.frames:
        raise meta.error("frames", "expected at least one frame, got none")
    out: dict[str, Any] = {"meta": meta, "images": [], "masks": [], "world_mat": [], "expression": [], "pose": []}
    for key, what in (("intrinsics", "[fx, fy, cx, cy] (4 numbers)"), ("shape_params", "a list of numbers")):
        if key not in meta.data:
            raise meta.error(key, "missing key")
        out[key] = number_array(meta, key, meta.data[key], (4,) if key == "intrinsics" else (None,), what)
    check_coefficients(path, "shape_params", out["shape_params"])
    for i, frame in enumerate(meta.frames):
        for key in ("file_path", "world_mat", "expression", "pose"):
            if key not in frame:
                raise meta.error(f"frames[{i}]", f"missing key {key!r}")
        image = image_path(meta, i, frame)
        mask = str(image.relative_to(meta.root)).replace("image", "mask")  # as real_dataset.py derives it
        out["images"].append(image)
        out["masks"].append(None if mask == str(image.relative_to(meta.root)) else meta.file(f"frames[{i}].file_path", mask))
        m = number_array(meta, f"frames[{i}].world_mat", frame["world_mat"], (None, 4), "a 3x4 or 4x4 matrix of numbers")
        if len(m) not in (3, 4):
            raise meta.error(f"frames[{i}].world_mat", f"expected a 3x4 or 4x4 matrix of numbers, got {len(m)}x4")
        m = np.concatenate([m, [[0.0, 0.0, 0.0, 1.0]]]) if len(m) == 3 else m
        meta.rigid(f"frames[{i}].world_mat", m)
        out["world_mat"].append(m)
        out["expression"].append(number_array(meta, f"frames[{i}].expression", frame["expression"], (None,), "a list of numbers"))
        check_coefficients(path, f"frames[{i}].expression", out["expression"][-1])
        if len(out["expression"][-1]) != len(out["expression"][0]):
            raise meta.error(
                f"frames[{i}].expression",
                f"expected {len(out['expression'][0])} coefficients (as frames[0]), got {len(out['expression'][-1])}",
            )
        joints = "15 numbers (axis-angles of global, neck, jaw, left eye, right eye)"
        out["pose"].append(number_array(meta, f"frames[{i}].pose", frame["pose"], (IMAVATAR_POSE,), joints))
    for key in ("world_mat", "expression", "pose"):
        out[key] = np.stack(out[key])
    return out


def _imavatar_masks(paths: list[Path | None], size: tuple[int, int]) -> torch.Tensor | None:
    """Every frame's mask, or None when no frame has one (a capture without a ``mask/`` folder)."""
    present = [p is not None and p.is_file() for p in paths]
    if not any(present):
        return None
    if not all(present):
        raise FileNotFoundError(f"{paths[present.index(False)]}: mask not found (the other frames have masks)")
    return torch.from_numpy(np.stack([read_mask(p, size) for p in paths]))


def imavatar_sequences(root: Path, json_name: str = IMAVATAR_JSON) -> list[str]:
    return sorted(p.name for p in root.iterdir() if (p / json_name).is_file())


# ---------------------------------------------------------------- VHAP / GaussianAvatars
