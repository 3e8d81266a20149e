"""Decoding the files of an INSTA-layout capture in parallel (:func:`~headfields.data.load_insta_dataset`'s
work): every frame's image, alpha, depth and labels into one array each, and the tracked meshes on a side thread."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from . import _io, capture_cache
from ._transforms_json import TransformsJson, check_same

# Depths are held in float16 metres: half of float32's memory (1 GiB at 512^2 x 2,000 frames) at a relative
# precision of 2^-11, 0.5 mm at a metre, below a depth sensor's noise; 1,000 m fits under float16's 65,504.
DEPTH_DTYPE = np.dtype(np.float16)


def alongside_meshes(
    decode: Callable[[], tuple[dict[str, np.ndarray], list]],
    meta: TransformsJson,
    listed: dict[str, list[Path]],
    index: list[int],
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """``decode()``'s arrays with the tracked meshes' (parsed on a side thread meanwhile: an OBJ's parsing holds the
    GIL and a PNG's decoding does not, so the meshes take one core beside the images), and its image kinds."""
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="headfields-meshes") as side:
        meshes = side.submit(_meshes, meta, listed["mesh_path"], index) if "mesh_path" in listed else None
        arrays, kinds = decode()
        if meshes is not None:
            arrays["mesh_vertices"], arrays["mesh_faces"] = meshes.result()
    return arrays, {"kinds": kinds}


def decode(
    meta: TransformsJson,
    index: list[int],
    image_paths: list[Path],
    has_alpha: bool,
    listed: dict[str, list[Path]],
    size: tuple[int, int],
    depth_scale: float | None,
    pixels: bool = True,
) -> tuple[dict[str, np.ndarray], list[tuple[str, str]] | None]:
    """Every frame's image, alpha, depth (metres: the PNG's units times ``depth_scale``) and labels, decoded in
    parallel into one array each (no list of frames beside the stack), and each image's (mode, colour family).
    Every image is checked to be ``size`` (h, w), every other file against the first frame's (its alpha,
    ``has_alpha``). Without ``pixels``: only the labels (the images' kinds None)."""
    arrays, kinds = {}, None
    if pixels:
        n, (h, w) = len(image_paths), size
        arrays["rgb"] = np.empty((n, *size, 3), dtype=np.uint8)
        if has_alpha:
            arrays["alpha"] = np.empty((n, *size), dtype=np.uint8)

        def image(k: int) -> tuple[str, str]:
            read = _io.read_color_image(image_paths[k])
            if read.rgb.shape[:2] != size:
                origin = f"w, h of {meta.path}" if "w" in meta.data else f"the first image's, {image_paths[0]}"
                got = f"{read.rgb.shape[1]}x{read.rgb.shape[0]}"
                raise ValueError(f"{image_paths[k]}: expected {w}x{h} pixels ({origin}), got {got} (frames[{index[k]}])")
            if (read.alpha is not None) != has_alpha:
                missing = "no " if read.alpha is None else ""
                raise ValueError(f"{image_paths[k]}: has {missing}alpha channel unlike {image_paths[0]} (frames[{index[k]}])")
            arrays["rgb"][k] = read.rgb
            if read.alpha is not None:
                arrays["alpha"][k] = read.alpha
            return read.mode, read.family

        kinds = capture_cache.parallel_map(image, range(n))

    def metres(path: Path) -> np.ndarray:  # a frame's units in float64, stored compactly
        return (_io.read_uint16(path) * depth_scale).astype(DEPTH_DTYPE)

    stacks = (
        ("depth_path", "depth", metres, DEPTH_DTYPE, "a depth image of size (h, w)"),
        ("seg_mask_path", "labels", _io.read_labels, np.uint8, "a segmentation image of size (h, w)"),
    )
    for key, name, read, dtype, what in stacks:
        if key in listed and (pixels or key == "seg_mask_path"):  # the labels name the regions: always read
            arrays[name] = _stack(meta, listed[key], read, size, dtype, what)
    return arrays, kinds


def _stack(meta: TransformsJson, paths: list[Path], read: Callable, size: tuple[int, int], dtype, what: str) -> np.ndarray:
    """``[N,H,W]`` of each file read with ``read``, in parallel, all of ``size``."""
    out = np.empty((len(paths), *size), dtype=dtype)

    def one(k: int) -> None:
        values = read(paths[k])
        check_same(meta, paths[k], what, values.shape, size)
        out[k] = values

    capture_cache.parallel_map(one, range(len(paths)))
    return out


def _meshes(meta: TransformsJson, paths: list[Path], index: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """The tracked meshes' vertices ``[N,V,3]`` and their one set of faces."""
    first, faces = _io.read_obj(paths[0])  # read on one thread (the GIL is held), each into its row
    vertices = np.empty((len(paths), *first.shape), dtype=np.float32)
    for k, path in enumerate(paths):
        v, f = (first, faces) if k == 0 else _io.read_obj(path)
        check_same(meta, path, "vertices of shape", v.shape, vertices.shape[1:])
        if not np.array_equal(f, faces):
            raise ValueError(f"{path}: expected the same faces as the first frame's mesh (frames[{index[0]}])")
        vertices[k] = v
    return vertices, faces
