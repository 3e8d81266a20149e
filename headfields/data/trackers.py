"""Readers of captures written by other face trackers, each into a :class:`~headfields.data.FrameSet` with
OpenCV cameras (pixel centres at +0.5) and FLAME parameters in headfields' pose convention
(``pose [N,5,3]``: global, neck, jaw, left eye, right eye, smplx's joint order). The FrameSet leaves
``model_type`` / ``model_path`` None: the caller brings the FLAME folder, loaded with as many directions as the
capture has (``load_model(folder, num_shape=len(params.shape), num_expression=params.expression.shape[1])``).

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
- Not carried: ``static_offset`` / ``dynamic_offset`` (per-vertex offsets added before skinning; FLAME in
  headfields has none): non-zero offsets are refused unless ``offsets="ignore"`` drops them (the head then
  lacks VHAP's hair / ear refinements). Also not carried: ``camera_index`` / ``timestep_index`` (the frames
  keep the file's order), VHAP's teeth (extra vertices, not parameters).

NeRFace and INSTA captures (``transforms*.json`` without ``flame_param_path``) are
:func:`~headfields.data.load_insta_dataset`'s; :func:`load_tracker_dataset` picks the reader.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..renderers.cameras import PinholeCameras, check_rigid, focal_from_fov
from . import _io
from ._transforms_json import TransformsJson, camera_matrix, optional_key
from .frames import SPLITS, FrameSet, TrackedParams
from .insta_reader import load_insta_dataset

FORMATS = ("insta", "vhap", "imavatar")
IMAVATAR_JSON = "flame_params.json"
IMAVATAR_FLAME_SCALE = 4.0  # IMavatar code/flame/FLAME.py: factor = 4 (FLAME scaled to fit the unit sphere)
IMAVATAR_OLD_SIZE = 512  # real_dataset.py: intrinsics[3] > 1 means pixels of a 512 px image
IMAVATAR_POSE = 15  # global, neck, jaw, left eye, right eye (axis-angle)
MASK_THRESHOLD = 127.5  # IMavatar rend_util.load_mask: alpha > 127.5 (the same as INSTA's alpha >= 128)
OFFSET_MODES = ("error", "ignore")
VHAP_KEYS = {"translation": 3, "rotation": 3, "neck_pose": 3, "jaw_pose": 3, "eyes_pose": 6, "expr": None}
VHAP_OFFSETS = ("static_offset", "dynamic_offset")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
_GL_TO_CV = np.diag([1.0, -1.0, -1.0, 1.0])  # OpenGL camera axes (+y up, +z back) -> OpenCV: flip y and z


def detect_capture_format(root: str | os.PathLike) -> str:
    """The format of the capture in folder ``root``: ``"vhap"`` (transforms files whose frames name a
    ``flame_param_path``), ``"insta"`` (other transforms files: INSTA, NeRFace), ``"imavatar"``
    (``flame_params.json`` in the folder or in its sequence sub-folders).

    >>> detect_capture_format("captures/subject1/MVI_1810")
    'imavatar'
    """
    root = _folder(root)
    names = [f"transforms_{s}.json" for s in SPLITS] + ["transforms.json"]
    files = [root / n for n in names if (root / n).is_file()]
    if files:
        metas = [TransformsJson(path) for path in files]
        return "vhap" if any("flame_param_path" in f for m in metas for f in m.frames) else "insta"
    if (root / IMAVATAR_JSON).is_file() or _imavatar_sequences(root):
        return "imavatar"
    raise FileNotFoundError(
        f"{root}: no capture found (expected transforms_*.json or transforms.json (INSTA, NeRFace, VHAP) or "
        f"{IMAVATAR_JSON} (IMavatar, PointAvatar))"
    )


def load_tracker_dataset(root: str | os.PathLike, split: str = "train", format: str | None = None, **options: Any) -> FrameSet:
    """Split ``split`` of the capture in ``root``, read by the reader of ``format`` (default: detected, see
    :func:`detect_capture_format`); ``options`` go to that reader.

    >>> frames = load_tracker_dataset("captures/vhap_export", "train", offsets="ignore")
    >>> frames.params.pose.shape  # [N, 5, 3]
    """
    fmt = detect_capture_format(root) if format is None else format
    if fmt not in FORMATS:
        raise ValueError(f"format: expected one of {', '.join(FORMATS)} or None, got {fmt!r}")
    reader = {"insta": load_insta_dataset, "vhap": load_vhap_dataset, "imavatar": load_imavatar_dataset}[fmt]
    return reader(root, split, **options)


# ---------------------------------------------------------------- IMavatar / PointAvatar


def load_imavatar_dataset(
    root: str | os.PathLike, split: str = "train", sequences: Sequence[str] | None = None, json_name: str = IMAVATAR_JSON
) -> FrameSet:
    """An IMavatar / PointAvatar capture (see the module docstring) as split ``split``: the sequence folder
    ``root``, or the sequence folders ``sequences`` of the subject folder ``root``.

    >>> train = load_imavatar_dataset("subject1/subject1", "train", sequences=["MVI_1810", "MVI_1814"])
    >>> test = load_imavatar_dataset("subject1/subject1/MVI_1812", "test")
    """
    _check_split(split)
    root = _folder(root)
    if sequences is None:
        if not (root / json_name).is_file():
            found = _imavatar_sequences(root, json_name)
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
    colors = [_io.read_color(p)[0] for p in image_paths]
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
    flip = np.diag([-np.sign(fx), -np.sign(fy), -1.0, 1.0])
    world_to_camera = np.concatenate([part["world_mat"] for part in parts])
    world_to_camera[:, :3, 3] /= IMAVATAR_FLAME_SCALE  # their world is FLAME x 4; ours is FLAME's metres
    cameras = PinholeCameras(
        abs(fx), abs(fy), f[2] * sx + 0.5, f[3] * sy + 0.5, w, h, torch.from_numpy(_rigid_inverse(flip @ world_to_camera)).float()
    )
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
        out[key] = _numbers(meta, key, meta.data[key], (4,) if key == "intrinsics" else (None,), what)
    for i, frame in enumerate(meta.frames):
        for key in ("file_path", "world_mat", "expression", "pose"):
            if key not in frame:
                raise meta.error(f"frames[{i}]", f"missing key {key!r}")
        image = _image_path(meta, i, frame)
        mask = str(image.relative_to(meta.root)).replace("image", "mask")  # as real_dataset.py derives it
        out["images"].append(image)
        out["masks"].append(None if mask == str(image.relative_to(meta.root)) else meta.root / mask)
        m = _numbers(meta, f"frames[{i}].world_mat", frame["world_mat"], (None, 4), "a 3x4 or 4x4 matrix of numbers")
        if len(m) not in (3, 4):
            raise meta.error(f"frames[{i}].world_mat", f"expected a 3x4 or 4x4 matrix of numbers, got {len(m)}x4")
        m = np.concatenate([m, [[0.0, 0.0, 0.0, 1.0]]]) if len(m) == 3 else m
        _check_rigid(meta, f"frames[{i}].world_mat", m)
        out["world_mat"].append(m)
        out["expression"].append(_numbers(meta, f"frames[{i}].expression", frame["expression"], (None,), "a list of numbers"))
        if len(out["expression"][-1]) != len(out["expression"][0]):
            raise meta.error(
                f"frames[{i}].expression",
                f"expected {len(out['expression'][0])} coefficients (as frames[0]), got {len(out['expression'][-1])}",
            )
        joints = "15 numbers (axis-angles of global, neck, jaw, left eye, right eye)"
        out["pose"].append(_numbers(meta, f"frames[{i}].pose", frame["pose"], (IMAVATAR_POSE,), joints))
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
    return torch.from_numpy(np.stack([_read_mask(p, size) for p in paths]))


def _imavatar_sequences(root: Path, json_name: str = IMAVATAR_JSON) -> list[str]:
    return sorted(p.name for p in root.iterdir() if (p / json_name).is_file())


# ---------------------------------------------------------------- VHAP / GaussianAvatars


def load_vhap_dataset(root: str | os.PathLike, split: str = "train", offsets: str = "error") -> FrameSet:
    """Split ``split`` of a capture exported by VHAP's ``export_as_nerf_dataset.py`` (see the module
    docstring). ``offsets``: "error" refuses non-zero ``static_offset`` / ``dynamic_offset``, "ignore" drops them.

    >>> frames = load_vhap_dataset("export/UNION10_EMO1", "train", offsets="ignore")
    """
    _check_split(split)
    if offsets not in OFFSET_MODES:
        raise ValueError(f"offsets: expected one of {', '.join(OFFSET_MODES)}, got {offsets!r}")
    root = _folder(root)
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

    image_paths, colors = [], []
    for i, frame in enumerate(frames):
        path = _image_path(meta, i, frame)
        rgb = _io.read_color(path)[0]
        if rgb.shape[:2] != (h, w):
            raise ValueError(
                f"{path}: expected {w}x{h} pixels (w, h of {meta.path}), got {rgb.shape[1]}x{rgb.shape[0]} (frames[{i}])"
            )
        image_paths.append(path)
        colors.append(rgb)
    masks = None
    if optional_key(meta, frames, "fg_mask_path", index):
        masks = torch.from_numpy(
            np.stack([_read_mask(_image_file(meta, i, f, "fg_mask_path", "mask"), (h, w)) for i, f in enumerate(frames)])
        )

    matrices = np.stack([camera_matrix(meta, i, f) @ _GL_TO_CV for i, f in enumerate(frames)])
    for i, m in enumerate(matrices):
        _check_rigid(meta, f"frames[{i}].transform_matrix", m)
    cameras = PinholeCameras(fx, fy, cx, h - cy, w, h, torch.from_numpy(matrices).float())

    cache: dict[Path, dict[str, np.ndarray]] = {}
    rows = [_vhap_params(meta, i, f, cache, offsets) for i, f in enumerate(frames)]
    for i, row in enumerate(rows):
        path = meta.path.parent / frames[i]["flame_param_path"]
        if row["expr"].shape != rows[0]["expr"].shape:
            raise ValueError(
                f"{path}: expr: expected {rows[0]['expr'].size} coefficients (as frames[0]'s file), got {row['expr'].size}"
            )
        if row["shape"].shape != rows[0]["shape"].shape or not np.array_equal(row["shape"], rows[0]["shape"]):
            raise ValueError(f"{path}: shape: expected the same identity on every frame (as frames[0]'s file)")
    pose = np.stack([np.concatenate([r["rotation"], r["neck_pose"], r["jaw_pose"], r["eyes_pose"]]).reshape(5, 3) for r in rows])
    arrays = (rows[0]["shape"], np.stack([r["expr"] for r in rows]), pose, np.stack([r["translation"] for r in rows]))
    params = TrackedParams(*(torch.from_numpy(a.astype(np.float32)) for a in arrays))
    return FrameSet(
        split, cameras, torch.from_numpy(np.stack(colors)), masks=masks, params=params, root=root, image_paths=image_paths
    )


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
    focal = []
    for key, angle, extent in (("fl_x", "camera_angle_x", w), ("fl_y", "camera_angle_y", h)):
        found, fov = value(key), value(angle)
        if found is not None:
            focal.append(meta.number(found[1], found[0], positive=True))
        elif fov is not None:
            try:
                focal.append(focal_from_fov(extent, meta.number(fov[1], fov[0]), fov[1]))
            except ValueError as e:
                raise meta.error(fov[1], str(e).removeprefix(f"{fov[1]}: ")) from e
        elif focal:
            focal.append(focal[0])  # square pixels
        else:
            raise meta.error(f"frames[{i}]", "missing key 'fl_x' (or camera_angle_x)")
    found_cx, found_cy = value("cx"), value("cy")
    cx = w / 2 if found_cx is None else meta.number(found_cx[1], found_cx[0])
    cy = h / 2 if found_cy is None else meta.number(found_cy[1], found_cy[0])
    return focal[0], focal[1], cx, cy, w, h


def _vhap_params(meta: TransformsJson, i: int, frame: dict[str, Any], cache: dict, offsets: str) -> dict[str, np.ndarray]:
    """Frame ``i``'s FLAME parameters, one row of each key (its file's only row, or row ``timestep_index``)."""
    if "flame_param_path" not in frame:
        raise meta.error(f"frames[{i}]", "missing key 'flame_param_path'")
    path = _io.require_file(
        _inside(meta, f"frames[{i}].flame_param_path", meta.text(f"frames[{i}].flame_param_path", frame["flame_param_path"])),
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
    return {k: (a if k == "shape" else a[t]) for k, a in arrays.items()}


def _vhap_file(path: Path, offsets: str) -> dict[str, np.ndarray]:
    """The arrays of one VHAP parameter file, each key's rows ``[T, size]`` (shape: ``[S]``), checked."""
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
    for key, size in VHAP_KEYS.items():
        a = arrays[key][None] if arrays[key].ndim == 1 else arrays[key]
        if a.ndim != 2 or (size is not None and a.shape[1] != size) or not a.size:
            expected = f"[T, {size}]" if size else "[T, E]"
            raise ValueError(f"{path}: {key}: expected rows of {expected} (T timesteps), got shape {list(arrays[key].shape)}")
        rows = len(out["translation"]) if "translation" in out else len(a)
        if len(a) != rows:
            raise ValueError(f"{path}: {key}: expected {rows} rows (one per timestep, as translation), got {len(a)}")
        out[key] = a.astype(np.float64)
    with np.load(path, allow_pickle=False) as data:  # read_npz has opened it: the file is a valid archive
        present = [k for k in VHAP_OFFSETS if k in data.files]
        for key in present:
            values = np.asarray(data[key])
            finite = np.issubdtype(values.dtype, np.number) and np.isfinite(values).all()
            if not finite:
                raise ValueError(f"{path}: {key}: expected finite numbers")
            if offsets == "error" and values.size and np.abs(values).max() > 0:
                raise ValueError(
                    f"{path}: {key}: VHAP's per-vertex offsets are non-zero (up to {np.abs(values).max():.3g} m) and "
                    "headfields' FLAME has none; load_vhap_dataset(..., offsets='ignore') drops them"
                )
    return out


# ---------------------------------------------------------------- shared


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"split: expected one of {', '.join(SPLITS)}, got {split!r}")


def _folder(root: str | os.PathLike) -> Path:
    if not isinstance(root, str | os.PathLike):
        raise TypeError(f"root: expected a capture folder path, got {type(root).__name__}")
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: capture folder not found")
    return root


def _inside(meta: TransformsJson, key: str, relative: str) -> Path:
    """The file ``relative`` names in the capture folder, which it must not leave (``..``, absolute paths)."""
    path = meta.root / relative
    if not path.resolve().is_relative_to(meta.root.resolve()):
        raise meta.error(key, f"expected a path inside the capture folder {meta.root}, got {relative!r}")
    return path


def _image_path(meta: TransformsJson, i: int, frame: dict[str, Any]) -> Path:
    """Frame ``i``'s image: ``file_path``, with ``.png`` appended when it has no image extension (IMavatar's
    dataloader and GaussianAvatars' reader append it)."""
    if "file_path" not in frame:
        raise meta.error(f"frames[{i}]", "missing key 'file_path'")
    relative = meta.text(f"frames[{i}].file_path", frame["file_path"])
    relative = relative if Path(relative).suffix.lower() in IMAGE_SUFFIXES else relative + ".png"
    path = _inside(meta, f"frames[{i}].file_path", relative)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: image not found (frames[{i}].file_path of {meta.path})")
    return path


def _image_file(meta: TransformsJson, i: int, frame: dict[str, Any], key: str, what: str) -> Path:
    path = _inside(meta, f"frames[{i}].{key}", meta.text(f"frames[{i}].{key}", frame[key]))
    return _io.require_file(path, f"{what} (frames[{i}].{key} of {meta.path})")


def _read_mask(path: Path, size: tuple[int, int]) -> np.ndarray:
    """A grey (or grey-as-RGB) mask as bool ``[H,W]``: luma (Pillow's, as IMavatar's ``imageio`` mode F) > 127.5."""
    rgb = _io.read_color(path)[0].astype(np.float64)
    if rgb.shape[:2] != size:
        raise ValueError(
            f"{path}: expected a mask of {size[1]}x{size[0]} pixels (the images'), got {rgb.shape[1]}x{rgb.shape[0]}"
        )
    return (rgb @ np.array([0.299, 0.587, 0.114])) > MASK_THRESHOLD


def _numbers(meta: TransformsJson, key: str, value: Any, shape: tuple[int | None, ...], what: str) -> np.ndarray:
    """``value`` (JSON lists) as float64 of ``shape`` (None: any non-zero length), finite, or an error naming ``key``."""
    ok = isinstance(value, list)
    try:
        a = np.array(value, dtype=np.float64) if ok else None
    except (TypeError, ValueError):
        a = None
    if (
        a is None
        or a.ndim != len(shape)
        or not a.size
        or any(s is not None and s != n for s, n in zip(shape, a.shape, strict=True))
    ):
        raise meta.error(key, f"expected {what}, got {value!r}"[:300])
    if not np.isfinite(a).all():
        raise meta.error(key, "expected finite numbers, got NaN or Inf")
    return a


def _check_rigid(meta: TransformsJson, key: str, m: np.ndarray) -> None:
    try:
        check_rigid(key, torch.from_numpy(m)[None])
    except ValueError as e:
        raise meta.error(key, str(e).removeprefix(f"{key}: ").replace("matrix 0 is", "it is")) from e


def _rigid_inverse(m: np.ndarray) -> np.ndarray:
    """The inverses of rigid ``[N,4,4]`` transforms (the rotation transposed)."""
    r = np.swapaxes(m[:, :3, :3], 1, 2)
    out = np.zeros_like(m)
    out[:, :3, :3], out[:, :3, 3], out[:, 3, 3] = r, -(r @ m[:, :3, 3:])[..., 0], 1.0
    return out
