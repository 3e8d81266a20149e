"""Small file readers and writers for the dataset format: PNG images (8-bit colour and labels, 16-bit
depth) with Pillow, Wavefront OBJ ``v`` / ``f`` lines, whitespace-separated text vectors and ``.npz`` files.
Every reader raises FileNotFoundError naming a missing file and ValueError naming a malformed one."""

from __future__ import annotations

import functools
import hashlib
import json
import os
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
from PIL import Image

UINT16_MAX = 65535


def require_file(path: Path, what: str = "file", where: str = "") -> Path:
    """``path`` if it is a file, else FileNotFoundError naming it as ``what`` (and ``where`` it was named)."""
    if not path.is_file():
        where = f" ({where})" if where else ""
        if path.is_symlink():  # a link to nothing, or to itself: say which, not just "not found"
            target = resolve(path, what)
            raise FileNotFoundError(f"{path}: {what} not found{where}: a symbolic link to {target}, which does not exist")
        raise FileNotFoundError(f"{path}: {what} not found{where}")
    return path


def resolve(path: Path, what: str = "file") -> Path:
    """``path`` with every symbolic link followed; a loop of links (ELOOP) is a ValueError naming ``path``."""
    try:
        return path.resolve()
    except (RuntimeError, OSError) as e:  # a loop: RuntimeError before Python 3.13, OSError (ELOOP) from 3.13
        raise ValueError(f"{path}: {what} is a loop of symbolic links ({e})") from e


def require_folder(root: object) -> Path:
    """``root`` as the Path of an existing capture folder (a TypeError for what is not a path)."""
    if not isinstance(root, str | os.PathLike):
        raise TypeError(f"root: expected a capture folder path, got {type(root).__name__}")
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: capture folder not found")
    return root


def require_inside(root: Path, path: Path, what: str, allow_outside_root: bool = False) -> Path:
    """``path``, which the capture in folder ``root`` implies (``what``), if it resolves inside ``root`` (links
    followed) or the caller allows it; a capture names its own files."""
    target = resolve(path, what)
    if not allow_outside_root and not target.is_relative_to(resolve(root)):
        raise ValueError(
            f"{path}: {what} resolves to {target}, outside the capture folder {root} (allow_outside_root=True reads it)"
        )
    return path


def read_json(path: Path, what: str = "JSON file") -> object:
    """The JSON value in ``path``, or a ValueError naming it: invalid JSON, not UTF-8, nested too deep."""
    require_file(path, what)
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: invalid JSON at line {e.lineno} column {e.colno}: {e.msg}") from e
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: not a UTF-8 text file ({e})") from e
    except RecursionError as e:  # json recurses once a nesting level: 100,000 "[" exhaust the stack
        raise ValueError(f"{path}: invalid JSON: nested deeper than Python's parser can follow ({e})") from e


def _open(path: Path) -> Image.Image:
    require_file(path, "image")
    try:
        image = Image.open(path)
        image.load()
    except (OSError, Image.DecompressionBombError, ValueError) as e:  # not an image, truncated, a bomb...
        raise ValueError(f"{path}: cannot read the image ({type(e).__name__}: {e})") from e
    return image


class ImageKind(NamedTuple):
    """What an 8-bit image stores: Pillow's mode and the family it holds, "colour" or "grey"."""

    mode: str
    family: str


@dataclass
class ColorImage:
    """An 8-bit image as the readers take it, with the mode it was stored in."""

    rgb: np.ndarray  # uint8 [H,W,3]; a grey image's value in all three channels
    alpha: np.ndarray | None  # uint8 [H,W], None when the image has no alpha
    mode: str  # Pillow's mode of the file: "RGB", "RGBA", "L", "LA", "P", "PA"
    family: str  # "colour" or "grey": what the mode stores (a palette image: what its palette holds)


def read_color(path: Path) -> tuple[np.ndarray, np.ndarray | None]:
    """An 8-bit image as uint8 RGB ``[H,W,3]`` and its alpha ``[H,W]`` (None when it has no alpha)."""
    image = read_color_image(path)
    return image.rgb, image.alpha


def read_color_image(path: Path) -> ColorImage:
    """An 8-bit colour or grey image (see :class:`ColorImage`); a grey one is spread to RGB."""
    image = _open(path)
    mode, family = image.mode, _color_family(image)
    if mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in image.info):
        rgba = np.asarray(image.convert("RGBA"))
        return ColorImage(np.ascontiguousarray(rgba[..., :3]), np.ascontiguousarray(rgba[..., 3]), mode, family)
    if mode not in ("RGB", "L", "P"):
        raise ValueError(f"{path}: expected an 8-bit RGB(A) or grey image, got mode {mode}")
    return ColorImage(np.asarray(image.convert("RGB")).copy(), None, mode, family)


def read_image_header(path: Path) -> tuple[int, int, bool]:
    """The width, height and whether it has alpha of the image in ``path``, from its header: no pixel is decoded."""
    require_file(path, "image")
    try:
        with Image.open(path) as image:
            has_alpha = image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info)
            return image.width, image.height, has_alpha
    except (OSError, Image.DecompressionBombError, ValueError) as e:
        raise ValueError(f"{path}: cannot read the image ({type(e).__name__}: {e})") from e


def _color_family(image: Image.Image) -> str:
    if image.mode in ("L", "LA"):
        return "grey"
    if image.mode in ("P", "PA"):  # a palette of greys only is a grey image stored with a palette
        palette = np.asarray(image.getpalette("RGB") or [0, 0, 0]).reshape(-1, 3)
        return "grey" if (palette == palette[:, :1]).all() else "colour"
    return "colour"


def write_color(path: Path, rgb: np.ndarray, alpha: np.ndarray | None = None) -> None:
    """uint8 ``[H,W,3]`` (and ``[H,W]`` alpha) as an RGB or RGBA PNG."""
    array = rgb if alpha is None else np.concatenate([rgb, alpha[..., None]], axis=-1)
    Image.fromarray(np.ascontiguousarray(array), "RGB" if alpha is None else "RGBA").save(path)


def read_uint16(path: Path) -> np.ndarray:
    """A 16-bit grey PNG (depth) as int64 ``[H,W]``. An 8-bit image is refused: INSTA and instant-ngp write
    16-bit depth, and 8 bits would give depth steps 256 times coarser than ``integer_depth_scale`` says."""
    image = _open(path)
    if image.mode not in ("I;16", "I;16B", "I;16L", "I"):  # Pillow opens 16-bit grey PNGs as I;16 (older: I)
        bits = " (8 bits)" if image.mode == "L" else ""
        raise ValueError(f"{path}: expected a 16-bit grey PNG (depth), got an image of mode {image.mode}{bits}")
    values = np.asarray(image).astype(np.int64)
    if values.ndim != 2 or values.min(initial=0) < 0 or values.max(initial=0) > UINT16_MAX:
        raise ValueError(f"{path}: expected 16-bit values in [0, {UINT16_MAX}]")
    return values


def write_uint16(path: Path, values: np.ndarray) -> None:
    Image.fromarray(np.ascontiguousarray(values.astype(np.uint16))).save(path)  # mode I;16


def read_labels(path: Path) -> np.ndarray:
    """An 8-bit label PNG as uint8 ``[H,W]``. Grey or palette images give their values; an RGB(A) image gives
    its red channel, where INSTA's face-parsing script writes the code (a grey map saved as colour has all
    three channels equal, so this reads it too)."""
    image = _open(path)
    if image.mode in ("L", "P"):
        return np.asarray(image).copy()
    if image.mode in ("RGB", "RGBA"):
        return np.ascontiguousarray(np.asarray(image)[..., 0])
    raise ValueError(f"{path}: expected an 8-bit grey, RGB or RGBA label image, got mode {image.mode}")


def write_labels(path: Path, labels: np.ndarray, red: bool = False) -> None:
    """uint8 ``[H,W]`` labels as a grey PNG, or (``red``) as an RGB PNG with the labels in the red channel and
    the other channels zero (INSTA's face-parsing output)."""
    labels = np.ascontiguousarray(labels.astype(np.uint8))
    if red:
        rgb = np.zeros((*labels.shape, 3), dtype=np.uint8)
        rgb[..., 0] = labels
        Image.fromarray(rgb, "RGB").save(path)
    else:
        Image.fromarray(labels, "L").save(path)


def read_obj(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Vertices float32 ``[V,3]`` and 0-based triangles int64 ``[F,3]`` from the ``v`` and ``f`` lines of an
    OBJ (``f a/b/c ...`` keeps the vertex index; polygons become fans; negative indices count from the end)."""
    require_file(path, "mesh")
    text = path.read_text()
    v, f = _read_plain_obj(text)
    if v is None or (f < 0).any():  # negative (relative) indices too
        v, f = _read_obj_lines(path, text.splitlines())
    if len(v) == 0 or len(f) == 0:
        raise ValueError(f"{path}: expected at least one vertex and one face, got {len(v)} and {len(f)}")
    if not np.isfinite(v).all():  # 1e39 is Inf in float32: the mesh, not a later tensor check, is to blame
        row = int(np.flatnonzero(~np.isfinite(v).all(axis=1))[0])
        raise ValueError(f"{path}: expected finite vertex coordinates (float32), got {v[row].tolist()} at vertex {row}")
    if f.min() < 0 or f.max() >= len(v):
        raise ValueError(f"{path}: face indices out of range for {len(v)} vertices")
    return v, f


_OBJ_REASONS = ("a vertex needs 3 coordinates", "a face needs at least 3 vertices")


def _read_obj_lines(path: Path, lines: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """The general OBJ reader, line by line, naming the first line it cannot parse."""
    vertices: list[list[float]] = []
    faces: list[list[int]] = []
    for number, line in enumerate(lines, start=1):
        parts = line.split()
        if not parts:
            continue
        try:
            if parts[0] == "v":
                vertices.append([float(x) for x in parts[1:4]])
                if len(vertices[-1]) != 3:
                    raise ValueError("a vertex needs 3 coordinates")
            elif parts[0] == "f":
                ids = [int(p.split("/")[0]) for p in parts[1:]]
                if len(ids) < 3:
                    raise ValueError("a face needs at least 3 vertices")
                ids = [i - 1 if i > 0 else len(vertices) + i for i in ids]
                faces.extend([ids[0], ids[k], ids[k + 1]] for k in range(1, len(ids) - 1))
        except ValueError as e:  # the line's number, not its content: the file may not be the mesh it claims to be
            reason = str(e) if str(e) in _OBJ_REASONS else "a number expected"
            raise ValueError(f"{path}: line {number}: cannot parse its {parts[0]!r} line ({reason})") from e
    return np.asarray(vertices, dtype=np.float32).reshape(-1, 3), np.asarray(faces, dtype=np.int64).reshape(-1, 3)


# Lines of exactly three vertex coordinates, then of exactly three 1-based vertex indices (read_obj's fast path).
_VERTEX_LINES = re.compile(r"(?:v[ \t]+\S+[ \t]+\S+[ \t]+\S+[ \t]*\r?\n)*")
_FACE_LINES = re.compile(r"(?:f[ \t]+\d+[ \t]+\d+[ \t]+\d+[ \t]*(?:\r?\n|$))*")


def _read_plain_obj(text: str) -> tuple[np.ndarray | None, np.ndarray | None]:
    """The fast path of :func:`read_obj`: a mesh of ``v x y z`` lines, then ``f a b c`` lines (what trackers
    write), parsed as two blocks by numpy's C text reader (a tracked sequence has thousands of meshes: 40 ms a
    5,000-vertex mesh split line by line in Python, a few here); (None, None) for anything else (normals, ``f
    1/1 2/2 3/3``, polygons, comments, a typo), which the general reader handles or names."""
    split = text.find("\nf ")
    if not text.startswith("v ") or split < 0 or "/" in text:
        return None, None
    block_v, block_f = text[: split + 1], text[split + 1 :]
    faces = _plain_faces(block_f)
    if faces is None or not _VERTEX_LINES.fullmatch(block_v):  # line by line, in C
        return None, None
    v = _numbers(block_v.replace("v ", " "), np.float32)
    if v is None or v.size != 3 * block_v.count("v "):
        return None, None
    return v.reshape(-1, 3), faces.copy()


@functools.lru_cache(maxsize=8)
def _plain_faces(block: str) -> np.ndarray | None:
    """0-based triangles of a block of ``f a b c`` lines (None: another kind of line). Cached: a tracked
    sequence's meshes share their faces, so their text is parsed once."""
    if not _FACE_LINES.fullmatch(block):
        return None
    f = _numbers(block.replace("f ", " "), np.int64)
    if f is None or f.size != 3 * block.count("f "):
        return None
    f = f.reshape(-1, 3) - 1
    f.flags.writeable = False  # shared by every call with this block: the caller gets a copy
    return f


def _numbers(text: str, dtype) -> np.ndarray | None:
    """The whitespace-separated numbers of ``text`` (numpy's C reader), None where one does not read as ``dtype``."""
    # No warnings.catch_warnings here: meshes are parsed on a side thread, and that context swaps the process's
    # filters under every other thread. numpy 2 raises on text it cannot read to the end (numpy 1 warns, and reads
    # short: the callers' size checks send such text to the line reader, which names the line).
    try:
        with np.errstate(over="ignore"):  # 1e39 is Inf in float32: the finite check names it
            return np.fromstring(text, dtype=dtype, sep=" ")
    except ValueError:
        return None


def read_obj_uvs(path: Path, num_faces: int) -> tuple[np.ndarray, np.ndarray] | None:
    """The texture coordinates of an OBJ: ``vt`` rows float32 ``[T,2]`` and each triangle's three ``vt`` ids
    int64 ``[F,3]`` (from ``f v/t ...``, polygons as fans like :func:`read_obj`); None when it has none.
    ``num_faces`` is the triangle count :func:`read_obj` gave, which every face must match."""
    uvs: list[list[float]] = []
    uv_faces: list[list[int]] = []
    for number, line in enumerate(require_file(path, "mesh").read_text().splitlines(), start=1):
        parts = line.split()
        if not parts or parts[0] not in ("vt", "f"):
            continue
        try:
            if parts[0] == "vt":
                uvs.append([float(x) for x in parts[1:3]])
                if len(uvs[-1]) != 2:
                    raise ValueError
            else:
                corners = [p.split("/") for p in parts[1:]]
                if any(len(c) < 2 or not c[1] for c in corners):
                    return None  # a face without texture coordinates: the mesh has no complete UV map
                ids = [int(c[1]) for c in corners]
                ids = [i - 1 if i > 0 else len(uvs) + i for i in ids]
                uv_faces.extend([ids[0], ids[k], ids[k + 1]] for k in range(1, len(ids) - 1))
        except ValueError as e:
            raise ValueError(f"{path}: line {number}: cannot parse its {parts[0]!r} line (texture coordinates)") from e
    if not uvs or not uv_faces:
        return None
    t, tf = np.asarray(uvs, dtype=np.float32), np.asarray(uv_faces, dtype=np.int64)
    if len(tf) != num_faces or tf.min() < 0 or tf.max() >= len(t):
        raise ValueError(f"{path}: expected a texture coordinate in range for every corner of its {num_faces} triangles")
    return t, tf


def write_obj(
    path: Path, vertices: np.ndarray, faces: np.ndarray, uvs: np.ndarray | None = None, uv_faces: np.ndarray | None = None
) -> None:
    """``v`` and ``f`` lines (1-based), and ``vt`` lines with ``f v/t`` corners when ``uvs`` and ``uv_faces`` are
    given. One ``%`` over the whole file is about twice as fast as a format per line (this is most of the time of
    writing a synthetic video); %.9g round-trips float32 exactly."""
    v = vertices.astype(np.float32).ravel().tolist()
    text = ("v %.9g %.9g %.9g\n" * len(vertices)) % tuple(v)
    if uvs is not None:
        t = uvs.astype(np.float32).ravel().tolist()
        text += ("vt %.9g %.9g\n" * len(uvs)) % tuple(t)
    path.write_text(text + _face_lines(faces, uv_faces if uvs is not None else None))


def _face_lines(faces: np.ndarray, uv_faces: np.ndarray | None) -> str:
    """The ``f`` lines, formatted once for a run of calls with the same faces (a tracked mesh's frames: SMPL-X's
    20,908 faces are 10 ms of the 23 a frame's file takes)."""
    global _LAST_FACE_LINES
    corners = faces if uv_faces is None else np.stack([faces, uv_faces], axis=-1)  # [F, 3] or [F, 3, (v, t)]
    corners = np.ascontiguousarray(corners, dtype=np.int64)
    key = (corners.shape, hashlib.sha1(corners.data).digest())
    last = _LAST_FACE_LINES  # one read: another thread may replace it
    if last is not None and last[0] == key:
        return last[1]
    line = "f %d %d %d\n" if uv_faces is None else "f %d/%d %d/%d %d/%d\n"
    text = (line * len(corners)) % tuple((corners + 1).ravel().tolist())
    _LAST_FACE_LINES = (key, text)
    return text


_LAST_FACE_LINES: tuple[tuple, str] | None = None  # the last faces' key and lines (SMPL-X's: about 0.5 MB)


def read_vector(path: Path) -> np.ndarray:
    """All whitespace-separated numbers of a text file, flattened, as float32."""
    require_file(path, "text file")
    try:
        values = np.array(path.read_text().split(), dtype=np.float64)
    except (ValueError, UnicodeDecodeError) as e:  # numpy's message would quote the file: name the file only
        raise ValueError(f"{path}: expected whitespace-separated numbers, found other text") from e
    if values.size == 0:
        raise ValueError(f"{path}: expected whitespace-separated numbers, found none")
    bad = np.flatnonzero(~np.isfinite(values.astype(np.float32)))  # (in float32, as returned: 1e39 too)
    if bad.size:
        raise ValueError(
            f"{path}: expected finite numbers (float32's), got {values[bad[0]]:g} at position {bad[0]} of {values.size}"
            + (f" and {bad.size - 1} more" if bad.size > 1 else "")
        )
    return values.astype(np.float32)


def write_vector(path: Path, values: np.ndarray) -> None:
    path.write_text("\n".join(f"{x:.9g}" for x in values.astype(np.float32).tolist()) + "\n")


def read_npz(path: Path, keys: tuple[str, ...]) -> dict[str, np.ndarray]:
    """The arrays ``keys`` of an ``.npz`` file (no pickles)."""
    require_file(path, "parameter file")
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: np.asarray(data[k]) for k in keys if k in data.files}
    except (OSError, EOFError, ValueError, zipfile.BadZipFile) as e:
        raise ValueError(f"{path}: cannot read the .npz file ({e})") from e
    missing = [k for k in keys if k not in arrays]
    if missing:
        raise ValueError(f"{path}: missing key {missing[0]!r} (expected {', '.join(keys)})")
    return arrays
