"""The reader of the INSTA / NeRFace ``transforms.json`` dataset format: :func:`load_insta_dataset`, one loader
for real captures and the synthetic video (the writer, ``insta_writer.py``, writes what it reads).

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
``segmentation_labels`` (``{region name: label in the seg PNGs}``; 0 is background) and ``composited_over``
(``[r, g, b]`` in [0, 1]: the images are already composited over this colour, so ``background`` is not applied).
"""

from __future__ import annotations

import math
import numbers
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..cameras import PinholeCameras
from . import _insta_decoding, _io, capture_cache, capture_checks
from ._insta_decoding import DEPTH_DTYPE
from ._transforms_json import (
    TransformsJson,
    camera_matrix,
    check_same,
    image_path,
    intrinsics,
    model_folder,
    optional_key,
    segmentation_labels,
    split_frames,
)
from .compositing import composite_images, compositing
from .frames import BACKGROUND_LABEL, PARAM_KEYS, FrameSet, TrackedParams, check_split
from .labels import LABEL_PRESETS, detect_label_preset

CAMERA_CONVENTIONS = ("opencv", "opengl")
# Alpha at or above this is foreground (an RGBA PNG's alpha -> mask).
ALPHA_THRESHOLD = 128
_PARAM_SHAPES = {"shape": ["S"], "expression": ["E"], "pose": ["J", 3], "translation": [3]}  # per frame, in .npz files
# OpenGL camera axes (+y up, +z backward) -> OpenCV (+y down, +z forward): flip the y and z columns.
_GL_TO_CV = torch.diag(torch.tensor([1.0, -1.0, -1.0, 1.0]))
# The deepest depth a 16-bit depth PNG can hold is 65535 x integer_depth_scale. A head capture's depths are a
# metre or so: a top value short of 0.1 m cannot reach a head from any camera, and one past 1 km is not metres
# per unit (a scale in units per metre, its inverse, is a known mix-up). instant-ngp's and INSTA's writers give
# 1e-3 (millimetres, 65.5 m) down to max depth / 65535 for a few metres; ours 1e-4 (6.5 m).
DEPTH_RANGE = (0.1, 1000.0)  # metres, the least and the most 65535 units may stand for


def load_insta_dataset(
    root: str | os.PathLike,
    split: str = "train",
    allow_outside_root: bool = False,
    segmentation_labels: str | Mapping[str, int] | None = None,
    background: tuple[float, float, float] | None = None,
    cache: bool | None = None,
    pixels: bool = True,
) -> FrameSet:
    """Read split ``split`` ("train", "val" or "test") of the dataset in folder ``root``. Every file the
    transforms name must lie inside ``root`` unless ``allow_outside_root``.

    ``segmentation_labels`` names the codes of the segmentation images: ``{region: code}``, or a preset's name
    (``"insta"``, see :mod:`headfields.data.labels`). Default: the transforms' own ``segmentation_labels``,
    else the preset the codes found match (INSTA's face-parsing codes). A code that no label names is an error
    naming the image. ``background`` (RGB in [0, 1]): composite RGBA images over it by their alpha, as the
    models render (INSTA's matted images hold arbitrary colour where alpha is 0); default: keep the RGB as is.

    Tensors come back on the CPU (``FrameSet.to`` moves them): images uint8, masks from an RGBA image's
    alpha, depths in metres as float16 (:data:`DEPTH_DTYPE`), camera_to_world float32 in OpenCV axes.

    The images, depths, labels and meshes are decoded in parallel, and a large capture's decoding is cached
    (:mod:`headfields.data.capture_cache`; ``cache``: True or False forces it on or off) with what is computed
    from it (the masks, the label codes present, the images over ``background``): a second load maps the arrays
    from disk, a changed source file makes it decode anew, and another background composites anew.

    ``pixels=False``, for what neither scores nor shows the images (a render along a camera path, an export): no
    image or depth image is decoded unless the capture is cached (its arrays are mapped, not read); ``images``
    are then zeros that take no memory, ``masks`` and ``depths`` None, and ``FrameSet.pixels`` False says so.
    """
    check_split(split)
    root = _io.require_folder(root)
    meta, combined = _transforms(root, split, allow_outside_root)
    frames = split_frames(meta, split, combined)
    position = {id(f): k for k, f in enumerate(meta.frames)}
    index = [position[id(f)] for f in frames]  # positions in the file, for error messages

    image_paths = [image_path(meta, root, i, f) for i, f in zip(index, frames, strict=True)]
    has = {key: optional_key(meta, frames, key, index) for key in ("depth_path", "seg_mask_path", "params_path", "mesh_path")}
    what = {"depth_path": "depth image", "seg_mask_path": "segmentation image", "mesh_path": "mesh"}
    numbered = list(zip(index, frames, strict=True))
    listed = {
        key: [_io.require_file(_file(meta, root, i, f, key), f"{name} (frames[{i}].{key})") for i, f in numbered]
        for key, name in what.items()
        if has[key]
    }
    *first_size, has_alpha = _io.read_image_header(image_paths[0])
    fx, fy, cx, cy, w, h = intrinsics(meta, tuple(first_size))
    capture_checks.check_intrinsics(meta, _intrinsic_keys(meta), fx, fy, cx, cy, w, h)
    per_pixel = 3 + has_alpha + DEPTH_DTYPE.itemsize * has["depth_path"] + has["seg_mask_path"]
    depth_scale = _depth_scale(meta) if has["depth_path"] else None
    sources = [meta.path, *image_paths, *(p for paths in listed.values() for p in paths)]
    # A cached capture is decoded whole (its entry serves every load) and mapped: pixels it does not read cost nothing.
    decodes_pixels = pixels or capture_cache.caches(cache, len(frames) * h * w * per_pixel)
    over = compositing(background, has_alpha, _composited(meta)) if pixels else None
    derived = {}
    if over is not None:  # the composited images, kept for the background asked (the masks need no background)
        derived["images"] = (over, lambda arrays: composite_images(arrays["rgb"], arrays["alpha"], *over))
    decoded, meta_of = capture_cache.load_or_decode(
        root,
        split,
        sources,
        lambda: _computed(
            _insta_decoding.alongside_meshes(
                lambda: _insta_decoding.decode(meta, index, image_paths, has_alpha, listed, (h, w), depth_scale, decodes_pixels),
                meta,
                listed,
                index,
            )
        ),
        len(frames) * h * w * per_pixel,
        cache,
        derived,
    )
    if pixels:
        capture_checks.check_one_color_family(split, image_paths, [_io.ImageKind(*kind) for kind in meta_of["kinds"]])

    convention = meta.data.get("camera_convention", "opengl" if "intrinsics" in meta.data else "opencv")
    if convention not in CAMERA_CONVENTIONS:
        raise meta.error("camera_convention", f"expected one of {', '.join(CAMERA_CONVENTIONS)}, got {convention!r}")
    matrices = torch.from_numpy(np.stack([camera_matrix(meta, i, f) for i, f in zip(index, frames, strict=True)]))
    if convention == "opengl":
        matrices = matrices @ _GL_TO_CV.double()
    for i, m in zip(index, matrices, strict=True):
        meta.rigid(f"frames[{i}].transform_matrix", m.numpy())
    cameras = PinholeCameras(fx, fy, cx, cy, w, h, matrices.float())

    labels = _labels(meta, segmentation_labels)
    model_type, model_path = model_folder(meta, root)
    depths = torch.from_numpy(decoded["depth"]) if has["depth_path"] and pixels else None
    segmentation = None
    if has["seg_mask_path"]:
        segmentation, labels = _segmentation(
            meta, listed["seg_mask_path"], index, decoded["labels"], meta_of["codes"], labels, segmentation_labels
        )
    expression = _expression(meta, root, index, frames)
    params = _params(meta, root, index, frames) if has["params_path"] else None
    mesh_vertices = mesh_faces = None
    if has["mesh_path"]:
        capture_checks.check_mesh_spread(listed["mesh_path"], decoded["mesh_vertices"], decoded["mesh_faces"])  # cached too
        mesh_vertices, mesh_faces = torch.from_numpy(decoded["mesh_vertices"]), torch.from_numpy(decoded["mesh_faces"])
    head = _tracked_head(len(frames), mesh_vertices, params)
    keys = [f"frames[{i}].transform_matrix" for i in index]
    capture_checks.check_camera_distances(meta, keys, matrices.numpy(), max(fx, fy), head)
    capture_checks.check_disjoint_splits(split, meta.path, image_paths, _other_splits(meta, root, split, combined))
    return FrameSet(  # its checks cover the optional fields as for a FrameSet built in memory
        split=split,
        cameras=cameras,
        images=_images(decoded, over) if pixels else torch.zeros((), dtype=torch.uint8).expand(len(frames), h, w, 3),
        masks=torch.from_numpy(decoded["masks"]) if "masks" in decoded and pixels else None,
        depths=depths,
        segmentation=segmentation,
        expression=expression,
        params=params,
        mesh_vertices=mesh_vertices,
        mesh_faces=mesh_faces,
        model_type=model_type,
        model_path=model_path,
        segmentation_labels=labels or {},
        root=root,
        image_paths=image_paths,
        pixels=pixels,
    )


def _images(decoded: dict[str, np.ndarray], over: tuple | None) -> Tensor:
    """The images as the load asked them: over its background (the cache's derived array), else as decoded."""
    return torch.from_numpy(decoded["images"] if over is not None else decoded["rgb"])


def _file(meta: TransformsJson, root: Path, i: int, frame: dict[str, Any], key: str) -> Path:
    return meta.file(f"frames[{i}].{key}", frame[key])


def _intrinsic_keys(meta: TransformsJson) -> tuple[str, str, str, str]:
    """The keys fx, fy, cx, cy came from (see ``intrinsics``), for an error about their values."""
    d = meta.data
    if "intrinsics" in d:
        return ("intrinsics",) * 4
    fx = "fl_x" if "fl_x" in d else "camera_angle_x"
    fy = "fl_y" if "fl_y" in d else "camera_angle_y" if "camera_angle_y" in d else fx  # fy defaults to fx
    return fx, fy, "cx" if "cx" in d else "w", "cy" if "cy" in d else "h"  # the centre defaults to w / 2, h / 2


def _tracked_head(n: int, mesh_vertices: Tensor | None, params: TrackedParams | None) -> capture_checks.TrackedHead:
    """Where the head is: the tracked meshes, else the tracked translation, else the origin."""
    head = capture_checks.TrackedHead
    if mesh_vertices is not None:
        return head.from_meshes(mesh_vertices.double().numpy(), "the bounding box of its tracked mesh, mesh_path")
    if params is not None:
        return head.at(params.translation.double().numpy(), "the tracked translation of params_path")
    # NeRFace's and INSTA's trackers fold the head's pose into the cameras: the head sits at the origin
    return head.at(np.zeros((n, 3)), "at the origin, the capture has no mesh_path or params_path to place it")


def _other_splits(meta: TransformsJson, root: Path, split: str, combined: bool) -> list[capture_checks.SplitListing]:
    """The images each split that ``split`` must not share frames with lists, from its frames without reading them
    (a file that cannot be parsed is left for loading that split to name)."""
    listings = []
    for other in capture_checks.splits_to_compare(split):
        if combined and other != "train" and f"{other}_filenames" not in meta.data:
            continue
        path = root / f"transforms_{other}.json"
        if not combined and not path.is_file():
            continue
        try:
            other_meta = meta if combined else TransformsJson(path, meta.allow_outside_root)
            frames = split_frames(other_meta, other, combined)
        except (OSError, ValueError):
            continue
        listings.append(capture_checks.SplitListing(other, other_meta.path, _listed_images(other_meta, root, frames)))
    return listings


def _listed_images(meta: TransformsJson, root: Path, frames: list[dict[str, Any]]) -> list[Path]:
    position = {id(f): k for k, f in enumerate(meta.frames)}
    images = []
    for frame in frames:
        try:
            images.append(image_path(meta, root, position[id(frame)], frame))
        except (OSError, ValueError):  # missing or outside: loading that split names it
            continue
    return images


def _depth_scale(meta: TransformsJson) -> float:
    """Metres per depth-PNG unit: the transforms' ``integer_depth_scale``, checked."""
    if "integer_depth_scale" not in meta.data:
        raise meta.error("integer_depth_scale", "missing key (the frames have depth_path)")
    scale = meta.number("integer_depth_scale", meta.data["integer_depth_scale"], positive=True)
    low, high = (d / _io.UINT16_MAX for d in DEPTH_RANGE)
    if not low <= scale <= high:
        raise meta.error(
            "integer_depth_scale",
            f"expected metres per depth-PNG unit in [{low:.3g}, {high:.3g}] (65535 units, the 16-bit top, standing for "
            f"{DEPTH_RANGE[0]:g} to {DEPTH_RANGE[1]:g} m), got {scale!r} ({_io.UINT16_MAX * scale:.3g} m)",
        )
    return scale


def _labels(meta: TransformsJson, given: str | Mapping[str, int] | None) -> dict[str, int] | None:
    """The labels ``given`` (a preset's name or a mapping), else the transforms' own; None: detect them."""
    if isinstance(given, str):
        if given not in LABEL_PRESETS:
            raise ValueError(f"segmentation_labels: expected a preset among {sorted(LABEL_PRESETS)} or a mapping, got {given!r}")
        return dict(LABEL_PRESETS[given])
    if given is not None:
        if not isinstance(given, Mapping):
            raise TypeError(f"segmentation_labels: expected a preset name or {{region: code}}, got {type(given).__name__}")
        return dict(given)  # FrameSet checks the names and codes
    return segmentation_labels(meta) if "segmentation_labels" in meta.data else None


def _segmentation(
    meta: TransformsJson,
    paths: list[Path],
    index: list[int],
    images: np.ndarray,
    codes: list[int],
    labels: dict[str, int] | None,
    given: str | Mapping[str, int] | None,
) -> tuple[Tensor, dict[str, int]]:
    """The label images and the labels that name their ``codes`` (those the images hold, :func:`_label_codes`;
    the labels detected from a preset when none are given); a code no label names is an error naming the first
    image that has it (the only case the images are read here)."""
    codes = np.asarray(codes, dtype=np.int64)
    if labels is None:
        preset = detect_label_preset(codes.tolist())
        if preset is None:
            raise ValueError(
                f"{meta.path}: segmentation_labels: the segmentation images hold codes {codes.tolist()}, which no "
                f"label preset ({', '.join(LABEL_PRESETS)}) covers; name them in the transforms' segmentation_labels "
                "or pass segmentation_labels= to the loader"
            )
        labels, source = dict(LABEL_PRESETS[preset]), f"the {preset!r} preset"
    else:
        source = "the labels passed" if given is not None else f"segmentation_labels of {meta.path}"
    unknown = sorted(set(codes.tolist()) - set(labels.values()) - {BACKGROUND_LABEL})
    if unknown:
        k = next(k for k, image in enumerate(images) if np.isin(image, unknown).any())
        found = sorted(set(np.unique(images[k]).tolist()) & set(unknown))
        raise ValueError(f"{paths[k]}: label codes {found} are not among {source} {labels} (frames[{index[k]}].seg_mask_path)")
    return torch.from_numpy(images), labels


def _transforms(root: Path, split: str, allow_outside_root: bool) -> tuple[TransformsJson, bool]:
    """The split's transforms file, else the single ``transforms.json`` (then True: the splits share it)."""
    path = root / f"transforms_{split}.json"
    if path.is_file():
        return TransformsJson(path, allow_outside_root), False
    if not (root / "transforms.json").is_file():
        raise FileNotFoundError(f"{path}: transforms file not found (nor a single {root / 'transforms.json'})")
    return TransformsJson(root / "transforms.json", allow_outside_root), True


def composited_over(root: str | os.PathLike, split: str = "train") -> tuple[float, float, float] | None:
    """The colour the images of ``split`` of the dataset in folder ``root`` are already composited over
    (``composited_over``, which :func:`~headfields.data.save_insta_dataset` writes), or None (matted images, or none said)."""
    check_split(split)
    return _composited(_transforms(_io.require_folder(root), split, True)[0])


def _composited(meta: TransformsJson) -> tuple[float, float, float] | None:
    """The colour the transforms say the images are already composited over (headfields' key), if any."""
    if "composited_over" not in meta.data:
        return None
    value = meta.data["composited_over"]
    if not (isinstance(value, list) and len(value) == 3 and all(_is_number(v) and 0 <= v <= 1 for v in value)):
        raise meta.error("composited_over", f"expected an RGB colour [r, g, b] in [0, 1], got {value!r}"[:200])
    return tuple(float(v) for v in value)


def _label_codes(images: np.ndarray) -> list[int]:
    """The codes the label images ``[N,H,W]`` (uint8) hold, in increasing order."""
    present = np.zeros(256, dtype=bool)  # uint8 codes, counted a frame at a time (bincount works in int64)
    for image in images:
        present |= np.bincount(image.reshape(-1), minlength=256) > 0
    return np.flatnonzero(present).tolist()


def _computed(decoded: tuple[dict[str, np.ndarray], dict[str, Any]]) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """The decoding with what every load computes from it whatever its arguments, so that the cache keeps it: the
    foreground masks (alpha at or above :data:`ALPHA_THRESHOLD`) and the label codes present."""
    arrays, meta = decoded
    if "alpha" in arrays:
        arrays["masks"] = arrays["alpha"] >= ALPHA_THRESHOLD
    if "labels" in arrays:
        meta["codes"] = _label_codes(arrays["labels"])
    return arrays, meta


def _expression(meta: TransformsJson, root: Path, index: list[int], frames: list[dict]) -> Tensor | None:
    from_files = optional_key(meta, frames, "exp_path", index)
    inline = optional_key(meta, frames, "expression", index)
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
        capture_checks.check_coefficients(path, f"frames[{i}].{source}", row)
        rows.append(row)
    return torch.from_numpy(np.stack(rows))


def _is_number(v: Any) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v)


def _params(meta: TransformsJson, root: Path, index: list[int], frames: list[dict]) -> TrackedParams:
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
        for key in ("shape", "expression"):
            capture_checks.check_coefficients(path, key, arrays[key])
        if loaded:
            for key in PARAM_KEYS:
                check_same(meta, path, f"{key} of shape", arrays[key].shape, loaded[0][key].shape)
            if not np.array_equal(arrays["shape"], loaded[0]["shape"]):
                raise ValueError(f"{path}: shape: expected the same identity on every frame (as frames[{index[0]}])")
        loaded.append(arrays)
    stack = {k: torch.from_numpy(np.stack([a[k] for a in loaded]).astype(np.float32)) for k in PARAM_KEYS}
    return TrackedParams(stack["shape"][0], stack["expression"], stack["pose"], stack["translation"])
