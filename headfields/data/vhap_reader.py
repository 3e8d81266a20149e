"""The reader of VHAP / GaussianAvatars captures, into a :class:`~headfields.data.FrameSet` with OpenCV cameras and
FLAME parameters in headfields' pose convention (see :mod:`headfields.data.trackers`).

**VHAP / GaussianAvatars** (:func:`load_vhap_dataset`; github.com/ShenhanQian/VHAP
``vhap/export_as_nerf_dataset.py``, read by github.com/ShenhanQian/GaussianAvatars ``scene/dataset_readers.py``).

- ``transforms_{train,val,test}.json`` (``split_json``); per frame ``file_path``, ``fg_mask_path``,
  ``flame_param_path``, ``timestep_index``, ``camera_index``, intrinsics ``fl_x fl_y cx cy w h`` (also at top
  level; per frame wins) and ``transform_matrix``: camera to world in OpenGL axes (VHAP's datasets default to
  ``camera_convention_conversion='opencv->opengl'``; GaussianAvatars flips its y and z columns to OpenCV).
- ``cy`` is measured from the image bottom: ``vhap/util/camera.py`` ``convert_camera_convention`` sets
  ``cy = H - cy`` with the axes, and ``vhap/util/render_nvdiffrast.py`` renders with it and flips the rows.
  Ours is ``h - cy``; ``cx`` is kept (nvdiffrast samples pixel centres at +0.5, as we do).
- ``flame_param_path``: one ``.npz`` per timestep (``write_flame_param``) with ``translation [1,3]``,
  ``rotation [1,3]``, ``neck_pose [1,3]``, ``jaw_pose [1,3]``, ``eyes_pose [1,6]``, ``shape [S]``,
  ``expr [1,E]``, optionally ``static_offset [1,V,3]`` / ``dynamic_offset [1,V,3]``. A file with T > 1 rows
  (the tracker's or GaussianAvatars' whole sequence) is read at the frame's ``timestep_index``.
- Pose: VHAP's ``FlameHead.forward`` concatenates ``[rotation, neck, jaw, eyes]`` into FLAME's full pose,
  so ``eyes_pose[:3]`` drives joint 3 (smplx's left eye) and ``eyes_pose[3:]`` joint 4; translation is added
  after skinning, as ours.
- ``static_offset [1, V, 3]``: the identity's per-vertex offsets (hair, ears), which ``FlameHead.forward`` adds
  after the shape and expression blend shapes, before skinning. Kept as ``TrackedParams.static_offset [V, 3]``
  (None where a capture has none or only zeros), which the subject's model applies where VHAP does
  (:meth:`~headfields.parametric.ParametricModel.with_static_offset`). VHAP tracks with its teeth on
  (``add_teeth``), so ``V`` is FLAME's vertices and its 120 teeth vertices; the rows are kept as written.
- ``dynamic_offset [1, V, 3]``: read and checked, not carried. VHAP's own exported meshes
  (``export_as_nerf_dataset.py`` ``infer_flame_params``) and GaussianAvatars (``load_meshes``, whose line reading
  them is commented out) pose FLAME with the static offsets alone.
- ``offsets="ignore"`` drops both (the head then lacks VHAP's hair / ear refinements). Also not carried:
  ``camera_index`` / ``timestep_index`` (the frames keep the file's order).
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..cameras import PinholeCameras, focal_from_fov
from . import _io, capture_checks
from ._tracker_io import image_file, image_path, read_mask
from ._transforms_json import TransformsJson, camera_matrix, optional_key
from .frames import FrameSet, TrackedParams, check_split

OFFSET_MODES = ("keep", "ignore")
VHAP_KEYS = {"translation": 3, "rotation": 3, "neck_pose": 3, "jaw_pose": 3, "eyes_pose": 6, "expr": None}
VHAP_OFFSETS = ("static_offset", "dynamic_offset")
IDENTITY_KEYS = ("shape", "static_offset")  # one value a subject: every frame's file must agree
_GL_TO_CV = np.diag([1.0, -1.0, -1.0, 1.0])  # OpenGL camera axes (+y up, +z back) -> OpenCV: flip y and z


def load_vhap_dataset(root: str | os.PathLike, split: str = "train", offsets: str = "keep") -> FrameSet:
    """Split ``split`` of a capture exported by VHAP's ``export_as_nerf_dataset.py`` (see the module
    docstring). ``offsets``: "keep" carries ``static_offset`` (``params.static_offset``; ``dynamic_offset`` is
    not applied, as in VHAP's exported meshes and GaussianAvatars), "ignore" drops both.

    >>> frames = load_vhap_dataset("export/UNION10_EMO1", "train")
    >>> frames.params.static_offset.shape  # FLAME's 5023 vertices and VHAP's 120 teeth vertices
    torch.Size([5143, 3])
    """
    check_split(split)
    if offsets not in OFFSET_MODES:
        raise ValueError(f"offsets: expected one of {', '.join(OFFSET_MODES)}, got {offsets!r}")
    root = _io.require_folder(root)
    meta = TransformsJson(_io.require_file(root / f"transforms_{split}.json", "transforms file"))
    if not meta.frames:
        raise meta.error("frames", f"the {split!r} split has no frames (VHAP writes an empty 'val' split for one camera)")
    frames, index = meta.frames, list(range(len(meta.frames)))
    intrinsics = [_vhap_intrinsics(meta, i, f) for i, f in enumerate(frames)]
    for i, k in enumerate(intrinsics):
        for name, a, b in zip(("fl_x", "fl_y", "cx", "cy", "w", "h"), k, intrinsics[0], strict=True):
            if not math.isclose(a, b, rel_tol=1e-6):
                raise meta.error(
                    f"frames[{i}].{name}", f"expected the intrinsics of frames[0] ({b!r}; a FrameSet shares them), got {a!r}"
                )
    fx, fy, cx, cy, w, h = intrinsics[0]

    image_paths, read = [], []
    for i, frame in enumerate(frames):
        path = image_path(meta, i, frame)
        image = _io.read_color_image(path)
        if image.rgb.shape[:2] != (h, w):
            raise ValueError(
                f"{path}: expected {w}x{h} pixels (w, h of {meta.path}), got {image.rgb.shape[1]}x{image.rgb.shape[0]} "
                f"(frames[{i}])"
            )
        image_paths.append(path)
        read.append(image)
    capture_checks.check_one_color_family(split, image_paths, read)
    colors = [image.rgb for image in read]
    masks = None
    if optional_key(meta, frames, "fg_mask_path", index):
        masks = torch.from_numpy(
            np.stack([read_mask(image_file(meta, i, f, "fg_mask_path", "mask"), (h, w)) for i, f in enumerate(frames)])
        )

    matrices = np.stack([camera_matrix(meta, i, f) @ _GL_TO_CV for i, f in enumerate(frames)])
    for i, m in enumerate(matrices):
        meta.rigid(f"frames[{i}].transform_matrix", m)
    cameras = PinholeCameras(fx, fy, cx, h - cy, w, h, torch.from_numpy(matrices).float())

    cache: dict[Path, dict[str, np.ndarray]] = {}
    rows = [_vhap_params(meta, i, f, cache, offsets) for i, f in enumerate(frames)]
    for i, row in enumerate(rows):
        path = meta.path.parent / frames[i]["flame_param_path"]
        if row["expr"].shape != rows[0]["expr"].shape:
            raise ValueError(
                f"{path}: expr: expected {rows[0]['expr'].size} coefficients (as frames[0]'s file), got {row['expr'].size}"
            )
        for key in IDENTITY_KEYS:
            if (key in row) != (key in rows[0]) or (key in row and not _same(row[key], rows[0][key])):
                raise ValueError(f"{path}: {key}: expected the same identity on every frame (as frames[0]'s file)")
    pose = np.stack([np.concatenate([r["rotation"], r["neck_pose"], r["jaw_pose"], r["eyes_pose"]]).reshape(5, 3) for r in rows])
    arrays = (rows[0]["shape"], np.stack([r["expr"] for r in rows]), pose, np.stack([r["translation"] for r in rows]))
    offset = rows[0].get("static_offset")
    offset = None if offset is None or not np.abs(offset).max() > 0 else torch.from_numpy(offset.astype(np.float32))
    params = TrackedParams(*(torch.from_numpy(a.astype(np.float32)) for a in arrays), static_offset=offset)
    head = capture_checks.TrackedHead.at(arrays[3], "the tracked translation of flame_param_path")
    capture_checks.check_camera_distances(meta, [f"frames[{i}].transform_matrix" for i in index], matrices, max(fx, fy), head)
    capture_checks.check_disjoint_splits(split, meta.path, image_paths, _other_splits(root, split))
    return FrameSet(
        split, cameras, torch.from_numpy(np.stack(colors)), masks=masks, params=params, root=root, image_paths=image_paths
    )


def _other_splits(root: Path, split: str) -> list[capture_checks.SplitListing]:
    """The images that each split ``split`` must not share frames with lists in its ``transforms_{split}.json``,
    parsed but not read (a file that cannot be parsed is left for loading that split to name)."""
    listings = []
    for other in capture_checks.splits_to_compare(split):
        path = root / f"transforms_{other}.json"
        if not path.is_file():
            continue
        try:
            meta = TransformsJson(path)
        except (OSError, ValueError):
            continue
        images = []
        for i, frame in enumerate(meta.frames):
            try:
                images.append(image_path(meta, i, frame))
            except (OSError, ValueError):  # missing or outside: loading that split names it
                continue
        listings.append(capture_checks.SplitListing(other, path, images))
    return listings


def _vhap_intrinsics(meta: TransformsJson, i: int, frame: dict[str, Any]) -> tuple[float, float, float, float, int, int]:
    """fl_x, fl_y, cx, cy (VHAP's: cy from the bottom), w, h of frame ``i``: its own keys, else the top level's;
    ``camera_angle_x / _y`` stand in for missing focal lengths, the image centre for a missing principal point."""

    def value(key: str) -> tuple[Any, str] | None:
        if key in frame:
            return frame[key], f"frames[{i}].{key}"
        return (meta.data[key], key) if key in meta.data else None

    size = []
    for key in ("w", "h"):
        found = value(key)
        if found is None:
            raise meta.error(f"frames[{i}]", f"missing key {key!r} (per frame or at the top level)")
        v = meta.number(found[1], found[0], positive=True)
        if v != int(v):
            raise meta.error(found[1], f"expected a positive integer, got {found[0]!r}")
        size.append(int(v))
    w, h = size
    focal, keys = [], []
    for key, angle, extent in (("fl_x", "camera_angle_x", w), ("fl_y", "camera_angle_y", h)):
        found, fov = value(key), value(angle)
        if found is not None:
            focal.append(meta.number(found[1], found[0], positive=True))
            keys.append(found[1])
        elif fov is not None:
            try:
                focal.append(focal_from_fov(extent, meta.number(fov[1], fov[0]), fov[1]))
            except ValueError as e:
                raise meta.error(fov[1], str(e).removeprefix(f"{fov[1]}: ")) from e
            keys.append(fov[1])
        elif focal:
            focal.append(focal[0])  # square pixels
            keys.append(keys[0])
        else:
            raise meta.error(f"frames[{i}]", "missing key 'fl_x' (or camera_angle_x)")
    found_cx, found_cy = value("cx"), value("cy")
    cx = w / 2 if found_cx is None else meta.number(found_cx[1], found_cx[0])
    cy = h / 2 if found_cy is None else meta.number(found_cy[1], found_cy[0])
    keys += [found_cx[1] if found_cx else "w", found_cy[1] if found_cy else "h"]
    # VHAP's cy counts from the bottom: the bounds are the same either way
    capture_checks.check_intrinsics(meta, keys, focal[0], focal[1], cx, cy, w, h)
    return focal[0], focal[1], cx, cy, w, h


def _vhap_params(meta: TransformsJson, i: int, frame: dict[str, Any], cache: dict, offsets: str) -> dict[str, np.ndarray]:
    """Frame ``i``'s FLAME parameters, one row of each key (its file's only row, or row ``timestep_index``)."""
    if "flame_param_path" not in frame:
        raise meta.error(f"frames[{i}]", "missing key 'flame_param_path'")
    path = _io.require_file(
        meta.file(f"frames[{i}].flame_param_path", frame["flame_param_path"]),
        f"FLAME parameter file (frames[{i}].flame_param_path)",
    )
    if path not in cache:
        cache[path] = _vhap_file(path, offsets)
    arrays = cache[path]
    count = len(arrays["translation"])
    t = 0
    if count > 1:
        t = frame.get("timestep_index")
        if isinstance(t, bool) or not isinstance(t, int) or not 0 <= t < count:
            raise meta.error(
                f"frames[{i}].timestep_index", f"expected an integer in [0, {count}) (the rows of {path}), got {t!r}"
            )
    return {k: (a if k in IDENTITY_KEYS else a[t]) for k, a in arrays.items()}


def _same(a: np.ndarray, b: np.ndarray) -> bool:
    return a.shape == b.shape and np.array_equal(a, b)


def _vhap_file(path: Path, offsets: str) -> dict[str, np.ndarray]:
    """The arrays of one VHAP parameter file, each key's rows ``[T, size]`` (shape: ``[S]``; static_offset,
    where kept: ``[V, 3]``), checked."""
    arrays = _io.read_npz(path, (*VHAP_KEYS, "shape"))
    out: dict[str, np.ndarray] = {}
    for key, a in arrays.items():
        if not np.issubdtype(a.dtype, np.floating) or not np.isfinite(a).all():
            raise ValueError(f"{path}: {key}: expected finite floating-point values")
    shape = arrays["shape"]
    if shape.ndim == 2 and len(shape) == 1:
        shape = shape[0]
    if shape.ndim != 1 or not shape.size:
        raise ValueError(f"{path}: shape: expected [S] or [1, S] coefficients, got shape {list(arrays['shape'].shape)}")
    out["shape"] = shape.astype(np.float64)
    capture_checks.check_coefficients(path, "shape", out["shape"])
    for key, size in VHAP_KEYS.items():
        a = arrays[key][None] if arrays[key].ndim == 1 else arrays[key]
        if a.ndim != 2 or (size is not None and a.shape[1] != size) or not a.size:
            expected = f"[T, {size}]" if size else "[T, E]"
            raise ValueError(f"{path}: {key}: expected rows of {expected} (T timesteps), got shape {list(arrays[key].shape)}")
        rows = len(out["translation"]) if "translation" in out else len(a)
        if len(a) != rows:
            raise ValueError(f"{path}: {key}: expected {rows} rows (one per timestep, as translation), got {len(a)}")
        out[key] = a.astype(np.float64)
    capture_checks.check_coefficients(path, "expr", out["expr"])
    with np.load(path, allow_pickle=False) as data:  # read_npz has opened it: the file is a valid archive
        present = [k for k in VHAP_OFFSETS if k in data.files]
        for key in present:
            values = np.asarray(data[key])
            finite = np.issubdtype(values.dtype, np.number) and np.isfinite(values).all()
            if not finite:
                raise ValueError(f"{path}: {key}: expected finite numbers")
            if key == "static_offset" and offsets == "keep":
                rows = values[0] if values.ndim == 3 and len(values) == 1 else values
                if rows.ndim != 2 or rows.shape[1] != 3 or not len(rows):
                    raise ValueError(f"{path}: {key}: expected [1, V, 3] or [V, 3] offsets, got shape {list(values.shape)}")
                out[key] = rows.astype(np.float64)
    return out
