"""What the readers of other trackers' captures share (``imavatar_reader.py``, ``vhap_reader.py``): image and
mask files, JSON number arrays, rigid inverses."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from . import _io
from ._transforms_json import TransformsJson

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
MASK_THRESHOLD = 127.5  # IMavatar rend_util.load_mask: alpha > 127.5 (the same as INSTA's alpha >= 128)


def image_path(meta: TransformsJson, i: int, frame: dict[str, Any]) -> Path:
    """Frame ``i``'s image: ``file_path``, with ``.png`` appended when it has no image extension (IMavatar's
    dataloader and GaussianAvatars' reader append it)."""
    if "file_path" not in frame:
        raise meta.error(f"frames[{i}]", "missing key 'file_path'")
    relative = meta.text(f"frames[{i}].file_path", frame["file_path"])
    relative = relative if Path(relative).suffix.lower() in IMAGE_SUFFIXES else relative + ".png"
    path = meta.file(f"frames[{i}].file_path", relative)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: image not found (frames[{i}].file_path of {meta.path})")
    return path


def image_file(meta: TransformsJson, i: int, frame: dict[str, Any], key: str, what: str) -> Path:
    path = meta.file(f"frames[{i}].{key}", frame[key])
    return _io.require_file(path, f"{what} (frames[{i}].{key} of {meta.path})")


def read_mask(path: Path, size: tuple[int, int]) -> np.ndarray:
    """A grey (or grey-as-RGB) mask as bool ``[H,W]``: luma (Pillow's, as IMavatar's ``imageio`` mode F) > 127.5."""
    rgb = _io.read_color(path)[0].astype(np.float64)
    if rgb.shape[:2] != size:
        raise ValueError(
            f"{path}: expected a mask of {size[1]}x{size[0]} pixels (the images'), got {rgb.shape[1]}x{rgb.shape[0]}"
        )
    return (rgb @ np.array([0.299, 0.587, 0.114])) > MASK_THRESHOLD


def number_array(meta: TransformsJson, key: str, value: Any, shape: tuple[int | None, ...], what: str) -> np.ndarray:
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


def rigid_inverse(m: np.ndarray) -> np.ndarray:
    """The inverses of rigid ``[N,4,4]`` transforms (the rotation transposed)."""
    r = np.swapaxes(m[:, :3, :3], 1, 2)
    out = np.zeros_like(m)
    out[:, :3, :3], out[:, :3, 3], out[:, 3, 3] = r, -(r @ m[:, :3, 3:])[..., 0], 1.0
    return out
