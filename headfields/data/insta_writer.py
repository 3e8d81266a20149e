"""The writer of the INSTA / NeRFace ``transforms.json`` dataset format: :func:`save_insta_dataset` writes
FrameSets in INSTA's released layout (what the synthetic video generator uses, and what
:func:`~headfields.data.load_insta_dataset` reads; the format is described in ``insta_reader.py``)."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..checks import check_positive
from . import _io
from .frames import SPLITS, FrameSet, check_frame_sets
from .insta_reader import DEPTH_RANGE
from .labels import INSTA_FACE_PARSING

# Metres per depth-PNG unit written by default: 0.1 mm steps, depths up to 6.5 m (the 16-bit range).
DEFAULT_INTEGER_DEPTH_SCALE = 1e-4
LAYOUTS = ("headfields", "insta")
# Where the writer puts each kind of file (INSTA's folder names), numbered over all splits.
_LAYOUT = {
    "file_path": "images/{:05d}.png",
    "depth_path": "depth/{:05d}.png",
    "seg_mask_path": "seg_mask/{:05d}.png",
    "mesh_path": "meshes/{:05d}.obj",
    "exp_path": "flame/exp/{:05d}.txt",
    "params_path": "params/{:05d}.npz",
}


def save_insta_dataset(
    root: str | os.PathLike,
    frame_sets: Mapping[str, FrameSet],
    *,
    integer_depth_scale: float = DEFAULT_INTEGER_DEPTH_SCALE,
    layout: str = "headfields",
    canonical: tuple[Tensor, ...] | None = None,
    composited_over: tuple[float, float, float] | None = None,
) -> Path:
    """Write ``frame_sets`` ({split: FrameSet}) to folder ``root`` in the format :func:`load_insta_dataset`
    reads, and return ``root``.

    Files are numbered over all splits in train, val, test order under INSTA's folder names (``images/``,
    ``depth/``, ``seg_mask/``, ``meshes/``, ``flame/exp/``, plus ``params/``); images are RGBA PNGs when the
    frames have masks. All three ``transforms_{split}.json`` are written (a split not given gets no frames).
    The model and segmentation labels come from the FrameSets, which must agree on them; the model path is
    written relative to ``root``. Depths are quantised to ``integer_depth_scale`` metres (16-bit range).
    ``composited_over`` (RGB in [0, 1]): the colour the images are already composited over, written as
    ``composited_over`` so the reader does not composite them again.

    ``layout="insta"`` writes what INSTA's scripts write and nothing of headfields' own: ``transforms.json``
    with every frame besides the split files, INSTA's intrinsics keys, label images as RGB with the code in
    red (the labels must be INSTA's face-parsing codes, :data:`~headfields.data.INSTA_FACE_PARSING`), no
    parameters, model or labels in the JSON, and ``canonical`` (vertices, faces[, uvs, uv_faces]) as
    ``canonical.obj``.
    """
    root = Path(root)
    check_frame_sets(frame_sets)
    check_positive("integer_depth_scale", integer_depth_scale)
    low, high = (d / _io.UINT16_MAX for d in DEPTH_RANGE)
    if not low <= integer_depth_scale <= high:  # what the reader would refuse
        raise ValueError(
            f"integer_depth_scale: expected metres per depth-PNG unit in [{low:.3g}, {high:.3g}] (65535 units standing "
            f"for {DEPTH_RANGE[0]:g} to {DEPTH_RANGE[1]:g} m), got {integer_depth_scale!r}"
        )
    if layout not in LAYOUTS:
        raise ValueError(f"layout: expected one of {', '.join(LAYOUTS)}, got {layout!r}")
    first = next(iter(frame_sets.values()))
    for fs in frame_sets.values():
        if (fs.model_type, fs.model_path) != (
            first.model_type,
            first.model_path,
        ) or fs.segmentation_labels != first.segmentation_labels:
            raise ValueError("frame_sets: expected the same model_type, model_path and segmentation_labels in every split")
    insta = layout == "insta"
    if insta:
        _check_insta_layout(first, canonical)
        if composited_over is not None:
            raise ValueError("composited_over: layout 'insta' has no such key (INSTA's images are matted, composited on reading)")
    root.mkdir(parents=True, exist_ok=True)

    count, every = 0, []
    for split in SPLITS:
        fs = frame_sets.get(split)
        meta = _top_level(fs or first, root, integer_depth_scale, insta, composited_over)
        if fs is not None:
            meta["frames"] = _write_frames(fs.to("cpu"), root, count, integer_depth_scale, insta)
            count += len(fs)
            every += meta["frames"]
        (root / f"transforms_{split}.json").write_text(json.dumps(meta, indent=1) + "\n")
    if insta:
        (root / "transforms.json").write_text(json.dumps({**meta, "frames": every}, indent=1) + "\n")
        if canonical is not None:
            _io.write_obj(root / "canonical.obj", *(x.detach().cpu().numpy() for x in canonical))
    return root


def _check_insta_layout(fs: FrameSet, canonical: tuple[Tensor, ...] | None) -> None:
    labels = fs.segmentation_labels
    if fs.segmentation is not None and any(INSTA_FACE_PARSING.get(name) != code for name, code in labels.items()):
        raise ValueError(f"frame_sets: layout 'insta' writes INSTA's face-parsing codes; got segmentation_labels {labels}")
    if fs.mesh_vertices is not None and canonical is None:
        raise ValueError("canonical: layout 'insta' with tracked meshes needs the canonical mesh (vertices, faces)")
    if canonical is not None and (not isinstance(canonical, tuple) or len(canonical) not in (2, 4)):
        raise ValueError("canonical: expected (vertices, faces) or (vertices, faces, uvs, uv_faces) tensors")


def _top_level(
    fs: FrameSet, root: Path, depth_scale: float, insta: bool, composited_over: tuple[float, float, float] | None
) -> dict[str, Any]:
    c = fs.cameras
    meta: dict[str, Any] = {
        "fl_x": float(c.fx), "fl_y": float(c.fy), "cx": float(c.cx), "cy": float(c.cy), "w": c.width, "h": c.height,
        "camera_angle_x": c.fov_x, "camera_angle_y": c.fov_y,
    }  # fmt: skip
    if insta:  # transforms.py writes every top-level value as a float, the fields of view in degrees too
        meta.update(w=float(c.width), h=float(c.height), x_fov=math.degrees(c.fov_x), y_fov=math.degrees(c.fov_y))
        meta["integer_depth_scale"] = depth_scale
        meta["frames"] = []
        return meta
    meta["camera_convention"] = "opencv"
    if composited_over is not None:
        meta["composited_over"] = [float(x) for x in composited_over]
    if fs.depths is not None:
        meta["integer_depth_scale"] = depth_scale
    if fs.model_type is not None:
        meta["model"] = {"type": fs.model_type, "path": Path(os.path.relpath(fs.model_path, root)).as_posix()}
    if fs.segmentation_labels:
        meta["segmentation_labels"] = {k: int(v) for k, v in fs.segmentation_labels.items()}
    meta["frames"] = []
    return meta


def _write_frames(fs: FrameSet, root: Path, start: int, depth_scale: float, insta: bool) -> list[dict[str, Any]]:
    if fs.depths is not None:
        units = torch.round(fs.depths.detach().double() / depth_scale)
        if units.max() > _io.UINT16_MAX:
            i = int(units.reshape(len(fs), -1).amax(1).argmax())
            raise ValueError(
                f"depths: {fs.split} frame {i} has a depth of {float(fs.depths[i].max()):.4g} m, beyond the "
                f"{_io.UINT16_MAX * depth_scale:.4g} m that 16 bits hold at integer_depth_scale={depth_scale}"
            )
        units = units.to(torch.int64).numpy()
    c2w = fs.cameras.camera_to_world.detach()
    present = {
        "file_path": True,
        "depth_path": fs.depths is not None,
        "seg_mask_path": fs.segmentation is not None,
        "mesh_path": fs.mesh_vertices is not None,
        "exp_path": fs.expression is not None,
        "params_path": fs.params is not None and not insta,
    }
    frames = []
    for i in range(len(fs)):
        k = start + i
        names = {key: pattern.format(k) for key, pattern in _LAYOUT.items() if present[key]}
        for name in names.values():
            (root / name).parent.mkdir(parents=True, exist_ok=True)
        frame: dict[str, Any] = {"file_path": names["file_path"], "transform_matrix": c2w[i].tolist()}
        alpha = None if fs.masks is None else fs.masks[i].numpy().astype(np.uint8) * 255
        _io.write_color(root / names["file_path"], fs.images[i].numpy(), alpha)
        if fs.depths is not None:
            _io.write_uint16(root / names["depth_path"], units[i])
            frame["depth_path"] = names["depth_path"]
        if fs.segmentation is not None:
            _io.write_labels(root / names["seg_mask_path"], fs.segmentation[i].numpy(), red=insta)
            frame["seg_mask_path"] = names["seg_mask_path"]
        if fs.mesh_vertices is not None:
            _io.write_obj(root / names["mesh_path"], fs.mesh_vertices[i].detach().numpy(), fs.mesh_faces.numpy())
            frame["mesh_path"] = names["mesh_path"]
        if fs.expression is not None:
            _io.write_vector(root / names["exp_path"], fs.expression[i].detach().numpy())
            frame["exp_path"] = names["exp_path"]
        if present["params_path"]:
            p = fs.params
            arrays = {"shape": p.shape, "expression": p.expression[i], "pose": p.pose[i], "translation": p.translation[i]}
            np.savez(root / names["params_path"], **{key: v.detach().numpy().astype(np.float32) for key, v in arrays.items()})
            frame["params_path"] = names["params_path"]
        frames.append(frame)
    return frames
