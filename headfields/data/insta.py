"""The INSTA / NeRFace ``transforms.json`` dataset format: one reader for real captures and the synthetic
video, and the writer the synthetic video generator uses.

A dataset folder holds ``transforms_train.json``, ``transforms_val.json`` and ``transforms_test.json`` (as
INSTA writes them). A single ``transforms.json`` is accepted too: its frames are all "train", unless it lists
each split's frames by ``file_path`` in top-level ``train_filenames`` / ``val_filenames`` / ``test_filenames``
(nerfstudio's convention).

Top level: ``fl_x, fl_y, cx, cy, w, h`` (pixels; ``camera_angle_x`` / ``camera_angle_y`` in radians stand in
for missing focal lengths, ``cx, cy`` default to the image centre, ``w, h`` to the first image's size), or
NeRFace's ``intrinsics: [fx, fy, cx, cy]`` with ``cx, cy`` relative to the image size. ``integer_depth_scale``:
metres per depth-PNG unit (instant-ngp / INSTA multiply: ``metres = png value * integer_depth_scale``).
Per frame: ``transform_matrix`` (4x4 camera to world), ``file_path`` (relative to the folder; without an
extension, ``.png`` then ``.jpg`` is tried), and optionally ``mesh_path`` (OBJ of the posed tracked mesh),
``exp_path`` (text file of expression coefficients) or NeRFace's inline ``expression`` list, ``depth_path``
(16-bit PNG, 0 = no depth) and ``seg_mask_path`` (8-bit PNG of region labels). An optional key must be on
every frame of a file or on none.

Camera axes: INSTA's matrices are in OpenCV axes (+x right, +y down, +z forward), NeRFace's in OpenGL axes
(+y up, +z backward, and pixel ``i`` sampled at ``i`` rather than ``i + 0.5``); a file with NeRFace's
``intrinsics`` list is read as OpenGL unless it says otherwise. The top-level ``camera_convention``
("opencv" | "opengl") makes it explicit; loaded cameras are always OpenCV (see ``headfields.renderers``).

headfields' own optional extensions (real captures do not have them): per frame ``params_path`` (an ``.npz``
with the tracked parameters ``shape [S]``, ``expression [E]``, ``pose [J,3]``, ``translation [3]``), and at
top level ``model`` (``{"type": "flame" | "smplx", "path": folder of the model files, relative}``) and
``segmentation_labels`` (``{region name: label in the seg PNGs}``; 0 is background).
"""

from __future__ import annotations

import json
import math
import numbers
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from jaxtyping import Bool, Float, Int, UInt8
from torch import Tensor

from .._checks import check_float, check_int, check_positive, check_shape
from ..renderers.cameras import PinholeCameras, check_rigid, focal_from_fov
from . import _io

SPLITS = ("train", "val", "test")
MODEL_TYPES = ("flame", "smplx")
CAMERA_CONVENTIONS = ("opencv", "opengl")
# Metres per depth-PNG unit written by default: 0.1 mm steps, depths up to 6.5 m (the 16-bit range).
BACKGROUND_LABEL = 0  # the segmentation label of pixels that show no subject
DEFAULT_INTEGER_DEPTH_SCALE = 1e-4
# Alpha at or above this is foreground (an RGBA PNG's alpha -> mask).
ALPHA_THRESHOLD = 128
PARAM_KEYS = ("shape", "expression", "pose", "translation")
_PARAM_SHAPES = {"shape": ["S"], "expression": ["E"], "pose": ["J", 3], "translation": [3]}  # per frame, in .npz files
IMAGE_SUFFIXES = (".png", ".jpg")  # tried in order for a file_path without extension (NeRFace)
# OpenGL camera axes (+y up, +z backward) -> OpenCV (+y down, +z forward): flip the y and z columns.
_GL_TO_CV = torch.diag(torch.tensor([1.0, -1.0, -1.0, 1.0]))
# Where the writer puts each kind of file (INSTA's folder names), numbered over all splits.
_LAYOUT = {
    "file_path": "images/{:05d}.png",
    "depth_path": "depth/{:05d}.png",
    "seg_mask_path": "seg_mask/{:05d}.png",
    "mesh_path": "meshes/{:05d}.obj",
    "exp_path": "flame/exp/{:05d}.txt",
    "params_path": "params/{:05d}.npz",
}


@dataclass
class TrackedParams:
    """Tracked parametric-model parameters of N frames (one identity), in headfields' pose convention."""

    shape: Float[Tensor, " S"]
    expression: Float[Tensor, "N E"]
    pose: Float[Tensor, "N J 3"]  # axis-angle per joint, smplx's joint order
    translation: Float[Tensor, "N 3"]

    def __post_init__(self) -> None:
        n = self.expression.shape[0] if isinstance(self.expression, Tensor) else None
        for name, dims in (("shape", [None]), ("expression", [n, None]), ("pose", [n, None, 3]), ("translation", [n, 3])):
            check_float(name, getattr(self, name), dims)

    @property
    def num_frames(self) -> int:
        return self.expression.shape[0]

    def to(self, device: torch.device | str) -> TrackedParams:
        return TrackedParams(*(getattr(self, k).to(device) for k in PARAM_KEYS))

    def select(self, frames: Int[Tensor, " K"]) -> TrackedParams:
        """The parameters of the given frames, in that order (the shape is shared)."""
        return TrackedParams(self.shape, self.expression[frames], self.pose[frames], self.translation[frames])


@dataclass
class FrameSet:
    """One split of a dataset: N frames with shared intrinsics and whatever per-frame data it has.

    The loader fills ``root`` and ``image_paths``; a FrameSet built in memory for the writer leaves them None.
    """

    split: str
    cameras: PinholeCameras
    images: UInt8[Tensor, "N H W 3"]
    masks: Bool[Tensor, "N H W"] | None = None  # foreground (alpha >= ALPHA_THRESHOLD)
    depths: Float[Tensor, "N H W"] | None = None  # metres along the camera z axis; 0 = no depth
    segmentation: UInt8[Tensor, "N H W"] | None = None  # region labels, see segmentation_labels
    expression: Float[Tensor, "N E"] | None = None  # exp_path files or NeRFace's inline lists
    params: TrackedParams | None = None
    mesh_vertices: Float[Tensor, "N V 3"] | None = None  # posed tracked mesh per frame
    mesh_faces: Int[Tensor, "F 3"] | None = None
    model_type: str | None = None  # "flame" | "smplx"
    model_path: Path | None = None  # folder of the model files
    segmentation_labels: dict[str, int] = field(default_factory=dict)
    root: Path | None = None
    image_paths: list[Path] | None = None

    def __post_init__(self) -> None:
        if self.split not in SPLITS:
            raise ValueError(f"split: expected one of {', '.join(SPLITS)}, got {self.split!r}")
        if not isinstance(self.cameras, PinholeCameras):
            raise TypeError(f"cameras: expected PinholeCameras, got {type(self.cameras).__name__}")
        n, h, w = self.cameras.num_frames, self.cameras.height, self.cameras.width
        _check_dtype("images", self.images, [n, h, w, 3], torch.uint8)
        if self.masks is not None:
            _check_dtype("masks", self.masks, [n, h, w], torch.bool)
        if self.depths is not None:
            check_float("depths", self.depths, [n, h, w])
            if (self.depths < 0).any():
                raise ValueError("depths: expected non-negative depths in metres (0 = no depth), got negative values")
        if self.segmentation is not None:
            _check_dtype("segmentation", self.segmentation, [n, h, w], torch.uint8)
        if self.expression is not None:
            check_float("expression", self.expression, [n, None])
        if self.params is not None and self.params.num_frames != n:
            raise ValueError(f"params: expected parameters of {n} frames (the cameras'), got {self.params.num_frames}")
        if (self.mesh_vertices is None) != (self.mesh_faces is None):
            raise ValueError("mesh_faces: expected mesh_vertices and mesh_faces together, got only one of them")
        if self.mesh_vertices is not None:
            check_float("mesh_vertices", self.mesh_vertices, [n, None, 3])
            check_int("mesh_faces", self.mesh_faces, [None, 3], upper=self.mesh_vertices.shape[1])
        if self.model_type is not None and self.model_type not in MODEL_TYPES:
            raise ValueError(f"model_type: expected one of {', '.join(MODEL_TYPES)} or None, got {self.model_type!r}")
        if (self.model_type is None) != (self.model_path is None):
            raise ValueError("model_path: expected model_type and model_path together, got only one of them")
        if self.model_path is not None:
            self.model_path = Path(self.model_path)
        for name, label in self.segmentation_labels.items():
            if not isinstance(name, str) or isinstance(label, bool) or not isinstance(label, numbers.Integral):
                raise TypeError(f"segmentation_labels: expected {{region name: integer label}}, got {name!r}: {label!r}")
            if not 0 <= label <= 255:
                raise ValueError(f"segmentation_labels: expected labels in [0, 255], got {name!r}: {label}")
        if self.image_paths is not None and len(self.image_paths) != n:
            raise ValueError(f"image_paths: expected {n} paths (one per frame), got {len(self.image_paths)}")

    def __len__(self) -> int:
        return self.cameras.num_frames

    @property
    def num_frames(self) -> int:
        return self.cameras.num_frames

    def select(self, frames: Sequence[int] | Int[Tensor, " K"]) -> FrameSet:
        """Frames ``frames`` of this split, in that order: every per-frame field sliced, the shared ones kept."""
        index = torch.as_tensor(frames, dtype=torch.long, device=self.cameras.device).reshape(-1)
        cameras = self.cameras.select(index)  # checks the indices, naming ``frames``

        def pick(x: Tensor | None) -> Tensor | None:
            return None if x is None else x[index.to(x.device)]

        return replace(
            self,
            cameras=cameras,
            images=pick(self.images),
            masks=pick(self.masks),
            depths=pick(self.depths),
            segmentation=pick(self.segmentation),
            expression=pick(self.expression),
            params=None if self.params is None else self.params.select(index.to(self.params.expression.device)),
            mesh_vertices=pick(self.mesh_vertices),
            segmentation_labels=dict(self.segmentation_labels),
            image_paths=None if self.image_paths is None else [self.image_paths[i] for i in index.tolist()],
        )

    def to(self, device: torch.device | str) -> FrameSet:
        """The same frames with every tensor on ``device``."""

        def move(x):
            return None if x is None else x.to(device)

        return FrameSet(
            self.split,
            self.cameras.to(device),
            self.images.to(device),
            move(self.masks),
            move(self.depths),
            move(self.segmentation),
            move(self.expression),
            move(self.params),
            move(self.mesh_vertices),
            move(self.mesh_faces),
            self.model_type,
            self.model_path,
            dict(self.segmentation_labels),
            self.root,
            self.image_paths,
        )


def _check_dtype(name: str, x: Tensor, shape: list[int], dtype: torch.dtype) -> None:
    check_shape(name, x, shape)
    if x.dtype != dtype:
        raise TypeError(f"{name}: expected a {dtype} tensor, got {x.dtype}")


# ---------------------------------------------------------------- reading


class _Json:
    """A parsed transforms file plus the path that every error names."""

    def __init__(self, path: Path):
        self.path = path
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}: invalid JSON at line {e.lineno} column {e.colno}: {e.msg}") from e
        except UnicodeDecodeError as e:
            raise ValueError(f"{path}: not a UTF-8 text file ({e})") from e
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


def _kind(value: Any) -> str:
    return "nothing (missing)" if value is None else type(value).__name__


def _split_frames(meta: _Json, split: str, combined: bool) -> list[dict[str, Any]]:
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
        others = {id(f) for s in SPLITS if s != split and f"{s}_filenames" in meta.data for f in _split_frames(meta, s, True)}
        frames = [f for f in meta.frames if id(f) not in others]
    else:
        frames = meta.frames
    if not frames:
        raise ValueError(f"split: {meta.path} has no frames for split {split!r}")
    return frames


def _image_path(meta: _Json, root: Path, i: int, frame: dict[str, Any]) -> Path:
    if "file_path" not in frame:
        raise meta.error(f"frames[{i}]", "missing key 'file_path'")
    path = root / meta.text(f"frames[{i}].file_path", frame["file_path"])
    if path.suffix.lower() not in IMAGE_SUFFIXES + (".jpeg",):
        for suffix in IMAGE_SUFFIXES:
            candidate = path.with_name(path.name + suffix)
            if candidate.is_file():
                return candidate
        tried = " or ".join(path.name + s for s in IMAGE_SUFFIXES)
        raise FileNotFoundError(f"{path.with_name(path.name + IMAGE_SUFFIXES[0])}: image not found (tried {tried}; frames[{i}])")
    if not path.is_file():
        raise FileNotFoundError(f"{path}: image not found (frames[{i}].file_path of {meta.path})")
    return path


def _matrix(meta: _Json, i: int, frame: dict[str, Any]) -> np.ndarray:
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


def _intrinsics(meta: _Json, size: tuple[int, int] | None) -> tuple[float, float, float, float, int, int]:
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


def _focal(meta: _Json, key: str, size: int) -> float:
    """Focal length in pixels from a field of view in radians (NeRF's ``camera_angle_x``)."""
    fov = meta.number(key, meta.data[key])
    try:
        return focal_from_fov(size, fov, key)
    except ValueError as e:
        raise meta.error(key, str(e).removeprefix(f"{key}: ")) from e


def _optional_key(meta: _Json, frames: list[dict[str, Any]], key: str, index: list[int]) -> bool:
    """Whether every frame has ``key``; an error naming the first odd frame if only some do."""
    has = [key in f for f in frames]
    if any(has) and not all(has):
        k = has.index(not has[0])
        first = "has" if has[0] else "has no"
        raise meta.error(f"frames[{index[k]}]", f"{'has' if has[k] else 'has no'} '{key}' while frames[{index[0]}] {first} one")
    return bool(has and has[0])


def _same(meta: _Json, path: Path, what: str, got: tuple, expected: tuple) -> None:
    if got != expected:
        raise ValueError(f"{path}: expected {what} {list(expected)} (as the first frame's, {meta.path}), got {list(got)}")


def load_insta_dataset(root: str | os.PathLike, split: str = "train") -> FrameSet:
    """Read split ``split`` ("train", "val" or "test") of the dataset in folder ``root``.

    Tensors come back on the CPU (``FrameSet.to`` moves them): images uint8, masks from an RGBA image's
    alpha, depths in metres (float32), camera_to_world float32 in OpenCV axes.
    """
    if split not in SPLITS:
        raise ValueError(f"split: expected one of {', '.join(SPLITS)}, got {split!r}")
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: dataset folder not found")
    path, combined = root / f"transforms_{split}.json", False
    if not path.is_file():
        if not (root / "transforms.json").is_file():
            raise FileNotFoundError(f"{path}: transforms file not found (nor a single {root / 'transforms.json'})")
        path, combined = root / "transforms.json", True
    meta = _Json(path)
    frames = _split_frames(meta, split, combined)
    position = {id(f): k for k, f in enumerate(meta.frames)}
    index = [position[id(f)] for f in frames]  # positions in the file, for error messages

    image_paths = [_image_path(meta, root, i, f) for i, f in zip(index, frames, strict=True)]
    colors, alphas = zip(*(_io.read_color(p) for p in image_paths), strict=True)
    first_size = (colors[0].shape[1], colors[0].shape[0])
    fx, fy, cx, cy, w, h = _intrinsics(meta, first_size)
    for i, p, c in zip(index, image_paths, colors, strict=True):
        if (c.shape[1], c.shape[0]) != (w, h):
            origin = f"w, h of {meta.path}" if "w" in meta.data else f"the first image's, {image_paths[0]}"
            raise ValueError(f"{p}: expected {w}x{h} pixels ({origin}), got {c.shape[1]}x{c.shape[0]} (frames[{i}])")
    if any(a is not None for a in alphas) and not all(a is not None for a in alphas):
        k = [a is None for a in alphas].index(alphas[0] is not None)
        raise ValueError(f"{image_paths[k]}: has {'no ' if alphas[k] is None else ''}alpha channel unlike {image_paths[0]}")

    convention = meta.data.get("camera_convention", "opengl" if "intrinsics" in meta.data else "opencv")
    if convention not in CAMERA_CONVENTIONS:
        raise meta.error("camera_convention", f"expected one of {', '.join(CAMERA_CONVENTIONS)}, got {convention!r}")
    matrices = torch.from_numpy(np.stack([_matrix(meta, i, f) for i, f in zip(index, frames, strict=True)]))
    if convention == "opengl":
        matrices = matrices @ _GL_TO_CV.double()
    for i, m in zip(index, matrices, strict=True):
        try:
            check_rigid("transform_matrix", m[None])
        except ValueError as e:
            raise meta.error(f"frames[{i}].transform_matrix", str(e).removeprefix("transform_matrix: ")) from e
    cameras = PinholeCameras(fx, fy, cx, cy, w, h, matrices.float())

    labels = _segmentation_labels(meta)
    model_type, model_path = _model(meta, root)
    has = {key: _optional_key(meta, frames, key, index) for key in ("depth_path", "seg_mask_path", "params_path", "mesh_path")}
    depths = _depths(meta, root, index, frames, (h, w)) if has["depth_path"] else None
    segmentation = _segmentation(meta, root, index, frames, (h, w)) if has["seg_mask_path"] else None
    expression = _expression(meta, root, index, frames)
    params = _params(meta, root, index, frames) if has["params_path"] else None
    mesh_vertices, mesh_faces = _meshes(meta, root, index, frames) if has["mesh_path"] else (None, None)
    return FrameSet(  # its checks cover the optional fields as for a FrameSet built in memory
        split=split,
        cameras=cameras,
        images=torch.from_numpy(np.stack(colors)),
        masks=None if alphas[0] is None else torch.from_numpy(np.stack(alphas) >= ALPHA_THRESHOLD),
        depths=depths,
        segmentation=segmentation,
        expression=expression,
        params=params,
        mesh_vertices=mesh_vertices,
        mesh_faces=mesh_faces,
        model_type=model_type,
        model_path=model_path,
        segmentation_labels=labels,
        root=root,
        image_paths=image_paths,
    )


def _file(meta: _Json, root: Path, i: int, frame: dict[str, Any], key: str) -> Path:
    return root / meta.text(f"frames[{i}].{key}", frame[key])


def _depths(meta: _Json, root: Path, index: list[int], frames: list[dict], size: tuple[int, int]) -> Tensor:
    if "integer_depth_scale" not in meta.data:
        raise meta.error("integer_depth_scale", "missing key (the frames have depth_path)")
    scale = meta.number("integer_depth_scale", meta.data["integer_depth_scale"], positive=True)
    units = _images(meta, root, index, frames, "depth_path", "depth image", _io.read_uint16, size)
    return torch.from_numpy((units * scale).astype(np.float32))


def _segmentation(meta: _Json, root: Path, index: list[int], frames: list[dict], size: tuple[int, int]) -> Tensor:
    return torch.from_numpy(_images(meta, root, index, frames, "seg_mask_path", "segmentation image", _io.read_labels, size))


def _images(
    meta: _Json,
    root: Path,
    index: list[int],
    frames: list[dict],
    key: str,
    what: str,
    read: Callable[[Path], np.ndarray],
    size: tuple[int, int],
) -> np.ndarray:
    """The ``[N,H,W]`` stack of each frame's image ``key`` read with ``read``, all of ``size`` (h, w)."""
    images = []
    for i, frame in zip(index, frames, strict=True):
        path = _io.require_file(_file(meta, root, i, frame, key), f"{what} (frames[{i}].{key})")
        values = read(path)
        _same(meta, path, f"a {what} of size (h, w)", values.shape, size)
        images.append(values)
    return np.stack(images)


def _expression(meta: _Json, root: Path, index: list[int], frames: list[dict]) -> Tensor | None:
    from_files = _optional_key(meta, frames, "exp_path", index)
    inline = _optional_key(meta, frames, "expression", index)
    if not (from_files or inline):
        return None
    rows, source = [], "exp_path" if from_files else "expression"
    for i, frame in zip(index, frames, strict=True):
        if from_files:
            path = _io.require_file(_file(meta, root, i, frame, "exp_path"), f"expression file (frames[{i}].exp_path)")
            row = _io.read_vector(path)
        else:
            path, value = meta.path, frame["expression"]
            if not isinstance(value, list) or not value or not all(_is_number(v) for v in value):
                raise meta.error(f"frames[{i}].expression", f"expected a list of numbers, got {value!r}"[:300])
            row = np.asarray(value, dtype=np.float32)
        if rows and row.shape != rows[0].shape:
            raise ValueError(
                f"{path}: frames[{i}].{source}: expected {rows[0].size} coefficients (as frames[{index[0]}]), got {row.size}"
            )
        rows.append(row)
    return torch.from_numpy(np.stack(rows))


def _is_number(v: Any) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v)


def _params(meta: _Json, root: Path, index: list[int], frames: list[dict]) -> TrackedParams:
    loaded = []
    for i, frame in zip(index, frames, strict=True):
        path = _file(meta, root, i, frame, "params_path")
        arrays = _io.read_npz(_io.require_file(path, f"parameter file (frames[{i}].params_path)"), PARAM_KEYS)
        for key, a in arrays.items():
            expected = _PARAM_SHAPES[key]
            if a.ndim != len(expected) or any(isinstance(e, int) and e != n for e, n in zip(expected, a.shape, strict=True)):
                raise ValueError(f"{path}: {key}: expected shape {expected}, got {list(a.shape)}")
            if not np.issubdtype(a.dtype, np.floating) or not np.isfinite(a).all():
                raise ValueError(f"{path}: {key}: expected finite floating-point values")
        if loaded:
            for key in PARAM_KEYS:
                _same(meta, path, f"{key} of shape", arrays[key].shape, loaded[0][key].shape)
            if not np.array_equal(arrays["shape"], loaded[0]["shape"]):
                raise ValueError(f"{path}: shape: expected the same identity on every frame (as frames[{index[0]}])")
        loaded.append(arrays)
    stack = {k: torch.from_numpy(np.stack([a[k] for a in loaded]).astype(np.float32)) for k in PARAM_KEYS}
    return TrackedParams(stack["shape"][0], stack["expression"], stack["pose"], stack["translation"])


def _meshes(meta: _Json, root: Path, index: list[int], frames: list[dict]) -> tuple[Tensor, Tensor]:
    vertices, faces = [], None
    for i, frame in zip(index, frames, strict=True):
        path = _io.require_file(_file(meta, root, i, frame, "mesh_path"), f"mesh (frames[{i}].mesh_path)")
        v, f = _io.read_obj(path)
        if faces is not None:
            _same(meta, path, "vertices of shape", v.shape, vertices[0].shape)
            if not np.array_equal(f, faces):
                raise ValueError(f"{path}: expected the same faces as the first frame's mesh (frames[{index[0]}])")
        faces = f
        vertices.append(v)
    return torch.from_numpy(np.stack(vertices)), torch.from_numpy(faces)


def _segmentation_labels(meta: _Json) -> dict[str, int]:
    labels = meta.data.get("segmentation_labels", {})
    valid = isinstance(labels, dict) and all(type(v) is int and 0 <= v <= 255 for v in labels.values())
    if not valid:
        raise meta.error("segmentation_labels", f"expected {{region name: label in [0, 255]}}, got {labels!r}"[:300])
    return dict(labels)


def _model(meta: _Json, root: Path) -> tuple[str | None, Path | None]:
    if "model" not in meta.data:
        return None, None
    model = meta.data["model"]
    if not isinstance(model, dict) or model.get("type") not in MODEL_TYPES or not isinstance(model.get("path"), str):
        raise meta.error("model", f'expected {{"type": "flame" | "smplx", "path": relative folder}}, got {model!r}'[:300])
    return model["type"], root / model["path"]


# ---------------------------------------------------------------- writing


def save_insta_dataset(
    root: str | os.PathLike,
    frame_sets: Mapping[str, FrameSet],
    *,
    integer_depth_scale: float = DEFAULT_INTEGER_DEPTH_SCALE,
) -> Path:
    """Write ``frame_sets`` ({split: FrameSet}) to folder ``root`` in the format :func:`load_insta_dataset`
    reads, and return ``root``.

    Files are numbered over all splits in train, val, test order under INSTA's folder names (``images/``,
    ``depth/``, ``seg_mask/``, ``meshes/``, ``flame/exp/``, plus ``params/``); images are RGBA PNGs when the
    frames have masks. All three ``transforms_{split}.json`` are written (a split not given gets no frames).
    The model and segmentation labels come from the FrameSets, which must agree on them; the model path is
    written relative to ``root``. Depths are quantised to ``integer_depth_scale`` metres (16-bit range).
    """
    root = Path(root)
    if not isinstance(frame_sets, Mapping) or not frame_sets:
        raise ValueError(f"frame_sets: expected a non-empty {{split: FrameSet}} mapping, got {frame_sets!r}"[:200])
    for split, fs in frame_sets.items():
        if split not in SPLITS:
            raise ValueError(f"frame_sets: expected splits among {', '.join(SPLITS)}, got {split!r}")
        if not isinstance(fs, FrameSet):
            raise TypeError(f"frame_sets: expected FrameSet values, got {type(fs).__name__} for {split!r}")
        if fs.split != split:
            raise ValueError(f"frame_sets: the FrameSet under {split!r} is of split {fs.split!r}")
    check_positive("integer_depth_scale", integer_depth_scale)
    first = next(iter(frame_sets.values()))
    for fs in frame_sets.values():
        if (fs.model_type, fs.model_path) != (
            first.model_type,
            first.model_path,
        ) or fs.segmentation_labels != first.segmentation_labels:
            raise ValueError("frame_sets: expected the same model_type, model_path and segmentation_labels in every split")
    root.mkdir(parents=True, exist_ok=True)

    count = 0
    for split in SPLITS:
        fs = frame_sets.get(split)
        meta = _top_level(fs or first, root, integer_depth_scale)
        if fs is not None:
            meta["frames"] = _write_frames(fs.to("cpu"), root, count, integer_depth_scale)
            count += len(fs)
        (root / f"transforms_{split}.json").write_text(json.dumps(meta, indent=1) + "\n")
    return root


def _top_level(fs: FrameSet, root: Path, depth_scale: float) -> dict[str, Any]:
    c = fs.cameras
    meta: dict[str, Any] = {
        "fl_x": float(c.fx), "fl_y": float(c.fy), "cx": float(c.cx), "cy": float(c.cy), "w": c.width, "h": c.height,
        "camera_angle_x": c.fov_x, "camera_angle_y": c.fov_y, "camera_convention": "opencv",
    }  # fmt: skip
    if fs.depths is not None:
        meta["integer_depth_scale"] = depth_scale
    if fs.model_type is not None:
        meta["model"] = {"type": fs.model_type, "path": Path(os.path.relpath(fs.model_path, root)).as_posix()}
    if fs.segmentation_labels:
        meta["segmentation_labels"] = {k: int(v) for k, v in fs.segmentation_labels.items()}
    meta["frames"] = []
    return meta


def _write_frames(fs: FrameSet, root: Path, start: int, depth_scale: float) -> list[dict[str, Any]]:
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
        "params_path": fs.params is not None,
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
            _io.write_labels(root / names["seg_mask_path"], fs.segmentation[i].numpy())
            frame["seg_mask_path"] = names["seg_mask_path"]
        if fs.mesh_vertices is not None:
            _io.write_obj(root / names["mesh_path"], fs.mesh_vertices[i].detach().numpy(), fs.mesh_faces.numpy())
            frame["mesh_path"] = names["mesh_path"]
        if fs.expression is not None:
            _io.write_vector(root / names["exp_path"], fs.expression[i].detach().numpy())
            frame["exp_path"] = names["exp_path"]
        if fs.params is not None:
            p = fs.params
            arrays = {"shape": p.shape, "expression": p.expression[i], "pose": p.pose[i], "translation": p.translation[i]}
            np.savez(root / names["params_path"], **{key: v.detach().numpy().astype(np.float32) for key, v in arrays.items()})
            frame["params_path"] = names["params_path"]
        frames.append(frame)
    return frames
