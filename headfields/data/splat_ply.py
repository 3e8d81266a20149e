"""3D Gaussians as the PLY file of 3D Gaussian Splatting: what graphdeco-inria/gaussian-splatting's
``GaussianModel.save_ply`` writes and what splat viewers (SuperSplat, antimatter15/splat, gsplat's) open.

The file is ``binary_little_endian 1.0`` with one ``element vertex N`` of float32 properties, in this order:
``x y z nx ny nz`` (normals, zeros), ``f_dc_0..2`` (the degree-0 SH coefficient per channel: colour
``0.5 + SH_C0 * f_dc``), ``f_rest_0..f_rest_{3(K-1)-1}`` (the higher coefficients channel-major: all red, then green,
then blue), ``opacity`` (a logit), ``scale_0..2`` (natural logs) and ``rot_0..3`` (a quaternion, w first).
:class:`Splats` holds the values these encode (opacities in (0, 1), positive scales, unit quaternions);
:func:`write_splat_ply` and :func:`read_splat_ply` apply the transforms both ways, and check the values after
them: a value the file's float32 cannot hold (a double ``x = 1e300``) or one that the reader's transform takes
beyond float32 (``scale_0 = 200``, whose exponential overflows; ``scale_0 = -200``, which rounds to a zero scale) is
refused, by one check on both sides: by the writer before it writes (a scale of ``1e39``, or float32's largest, whose
log rounds up in the file), by the reader naming the file, each naming the property and the row, rather than
written unreadable or returned as inf or 0.

    splats = Splats(means, quats, scales, opacities, sh)  # sh [N, K, 3], K = 1, 4, 9, 16 or 25
    write_splat_ply("out/head.ply", splats)  # opens in SuperSplat
    splats = read_splat_ply("out/head.ply")

A file that carries a binding (GaussianAvatars' ``binding_0``: each Gaussian's parent face) holds values local to
that face, not world values: :func:`read_splat_ply` refuses it, and :func:`read_bound_splat_ply` reads it as such
(the local values and the faces); :func:`write_bound_splat_ply` writes one (a whole avatar in GaussianAvatars' folder
layout, with its FLAME parameters: :mod:`headfields.models.gaussian_avatars.export`).
"""

from __future__ import annotations

import math
import os
import re
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ..checks import check_finite, check_float, check_int
from ..deformers.gaussian_binding import Splats  # the Gaussians as the file holds them
from ..outputs import atomic_path

__all__ = [
    "BINDING",
    "SH_C0",
    "Splats",
    "read_bound_splat_ply",
    "read_splat_ply",
    "write_bound_splat_ply",
    "write_splat_ply",
]

SH_C0 = 0.28209479177387814  # the degree-0 real spherical harmonic, 1 / (2 sqrt(pi))
_SCALES = ["scale_0", "scale_1", "scale_2"]
_NEEDED = ["x", "y", "z", "f_dc_0", "f_dc_1", "f_dc_2", "opacity", *_SCALES]
_NEEDED += ["rot_0", "rot_1", "rot_2", "rot_3"]
_TYPES = {  # PLY scalar types: the byte layout of every property, so that extra ones are skipped
    **dict.fromkeys(("char", "int8"), "i1"),
    **dict.fromkeys(("uchar", "uint8"), "u1"),
    **dict.fromkeys(("short", "int16"), "<i2"),
    **dict.fromkeys(("ushort", "uint16"), "<u2"),
    **dict.fromkeys(("int", "int32"), "<i4"),
    **dict.fromkeys(("uint", "uint32"), "<u4"),
    **dict.fromkeys(("float", "float32"), "<f4"),
    **dict.fromkeys(("double", "float64"), "<f8"),
}
_F_REST = re.compile(r"f_rest_(\d+)")
BINDING = "binding_0"  # GaussianAvatars' save_ply: each Gaussian's parent face, its values local to that face
FLOAT32_INTEGERS = 2**24  # binding_0 is a float (as GaussianAvatars writes it): faces below this are exact in float32
_FLOAT32 = np.finfo(np.float32)


def _unit_quaternions(quats: np.ndarray) -> np.ndarray:
    """``quats [N, 4]`` (float64, non-zero rows) normalised without overflow or underflow: each row is divided by
    its largest magnitude first, so a quaternion of 1e300s or 1e-300s keeps its direction instead of becoming
    zeros or NaN (its squared norm overflows or underflows)."""
    quats = quats / np.abs(quats).max(axis=1, keepdims=True)
    return quats / np.linalg.norm(quats, axis=1, keepdims=True)


def _first_bad(ok: np.ndarray) -> tuple[int, int]:
    """The (row, column) of the first False of ``ok [N, C]``."""
    row, column = np.argwhere(~ok)[0]
    return int(row), int(column)


def _float32(
    label: str, names: list[str], values: np.ndarray, file: np.ndarray | None = None, what: str = "", where: str = ""
) -> np.ndarray:
    """``values [N, C]`` (float64; ``names`` their properties) as float32, refused (the message led by ``label``: the
    file, or the writer's argument) where float32 cannot hold them: an overflow to inf, or (a decoded value, ``file``
    the file's values and ``what`` the transform) a non-zero one rounded to 0. ``where`` follows the value shown."""
    with np.errstate(over="ignore"):  # refused by name below
        cast = values.astype(np.float32)
    ok = np.isfinite(cast) if file is None else np.isfinite(cast) & ((cast != 0) | (values == 0))
    if not ok.all():
        row, column = _first_bad(ok)
        value = values[row, column]
        if abs(value) > 1:
            why = f"beyond float32's largest magnitude ({_FLOAT32.max:.4g})"
        else:
            why = f"rounded to 0 by float32 (under half its smallest magnitude, {_FLOAT32.smallest_subnormal:.4g})"
        name = f"{label}: {names[column]} of row {row}"
        if file is None:
            raise ValueError(f"{name} is {value:.6g}{where}, {why}")
        raise ValueError(f"{name} is {file[row, column]:.6g}{where}, whose {what} ({value:.6g}) is {why}")
    return cast


def _decoded_scales(label: str, log_scales: np.ndarray, where: str = "") -> np.ndarray:
    """The float32 scales a file's ``scale_0..2`` (natural logs, float64 ``[N, 3]``) decode to; refused as
    :func:`_float32` refuses, where a scale's exponential is beyond float32 or rounds to 0 (logs outside about
    [-103.97, 88.72]). The reader decodes with it and the writer checks what it would write with it."""
    with np.errstate(over="ignore"):  # an overflow is refused by name
        return _float32(label, _SCALES, np.exp(log_scales), log_scales, "exponential (the scale)", where)


def _check_splats(splats: Splats, argument: str = "splats") -> None:
    if not isinstance(splats, Splats):
        raise TypeError(f"{argument}: expected a headfields.data.splat_ply.Splats, got {type(splats).__name__}")
    check_float("means", splats.means, [None, 3])
    n = len(splats.means)
    check_float("quats", splats.quats, [n, 4])
    zero = (splats.quats == 0).all(dim=1)  # not the norm: its square underflows to 0 for a row of 1e-300s
    if bool(zero.any()):
        raise ValueError(f"quats: expected non-zero quaternions, found a zero one (row {int(zero.nonzero()[0, 0])})")
    check_float("scales", splats.scales, [n, 3])
    check_float("opacities", splats.opacities, [n])
    check_float("sh", splats.sh, [n, None, 3])
    k = splats.sh.shape[1]
    if k == 0 or math.isqrt(k) ** 2 != k:
        raise ValueError(f"sh: expected K = (degree + 1)^2 coefficients per channel (1, 4, 9, 16, 25), got K = {k}")
    if n and not float(splats.scales.min()) > 0:  # log(0) is -inf; NaN fails this too
        raise ValueError(f"scales: expected positive values, got a minimum of {float(splats.scales.min())}")
    low, high = (float(splats.opacities.min()), float(splats.opacities.max())) if n else (0.5, 0.5)
    if not (low > 0 and high < 1):  # the logit of 0 or 1 is infinite: refused rather than clamped
        raise ValueError(f"opacities: expected values in (0, 1) (not logits), got values in [{low}, {high}]")


def write_splat_ply(path: str | os.PathLike, splats: Splats) -> Path:
    """Write ``splats`` as a 3D Gaussian Splatting PLY (see the module's docstring); parent folders are made,
    the file is written whole or not at all. Returns the path.

        write_splat_ply("out/head.ply", Splats(means, quats, scales, opacities, sh))
    """
    _check_splats(splats)
    names, exact = _encoded(splats)
    return _write_rows(path, "splats", names, exact, "write_splat_ply")


def write_bound_splat_ply(path: str | os.PathLike, local: Splats, binding: Tensor) -> Path:
    """Write Gaussians bound to a mesh's faces as GaussianAvatars' ``save_ply`` does: ``local``'s values local to
    each Gaussian's parent face (means, quaternions and scales in the face's frame and units, as
    :class:`~headfields.deformers.GaussianSet` holds them), encoded as :func:`write_splat_ply` encodes world values,
    then :data:`BINDING` (``binding [N]``, each Gaussian's face) written as a float, last, as that code writes every
    property. :func:`read_bound_splat_ply` reads it back; parent folders are made, the file is written whole or not
    at all. Returns the path.

        write_bound_splat_ply("out/point_cloud.ply", Splats(local_means, local_quats, local_scales, opacities, sh), parent)
    """
    _check_splats(local, "local")
    names, exact = _encoded(local)
    if not isinstance(binding, Tensor):
        raise TypeError(f"binding: expected an integer tensor [{len(exact)}] of face indices, got {type(binding).__name__}")
    check_int("binding", binding, [len(exact)], upper=FLOAT32_INTEGERS)
    column = binding.detach().cpu().double().numpy()[:, None]
    return _write_rows(path, "local", [*names, BINDING], np.concatenate([exact, column], 1), "write_bound_splat_ply")


def _encoded(splats: Splats) -> tuple[list[str], np.ndarray]:
    """The property names and the float64 rows of ``splats`` in the file's encoding (logit opacities, log scales,
    unit quaternions, f_rest channel-major)."""

    def host(x: Tensor) -> np.ndarray:  # float64 for the transforms, so only the final cast rounds
        return x.detach().cpu().double().numpy()

    n, k = splats.sh.shape[:2]
    quats = _unit_quaternions(host(splats.quats))
    opacities = host(splats.opacities)
    sh = host(splats.sh)
    columns = [
        host(splats.means),
        np.zeros((n, 3)),  # normals: unused by renderers, but part of the layout readers expect
        sh[:, 0, :],
        sh[:, 1:, :].transpose(0, 2, 1).reshape(n, 3 * (k - 1)),  # channel-major, as the official code flattens
        np.log(opacities / (1 - opacities))[:, None],
        np.log(host(splats.scales)),
        quats,
    ]
    names = ["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2"]
    names += [f"f_rest_{i}" for i in range(3 * (k - 1))]
    names += ["opacity", "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"]
    return names, np.concatenate(columns, axis=1)


def _write_rows(path: str | os.PathLike, argument: str, names: list[str], exact: np.ndarray, writer: str) -> Path:
    """``exact [N, len(names)]`` as the float32 vertex rows of a binary PLY at ``path``, refused (naming
    ``argument``, the property and the row) where the reader would refuse what the file holds: a value float32
    cannot hold, or a scale whose log, as float32 holds it, decodes to inf or 0."""
    if not isinstance(path, str | os.PathLike):
        raise TypeError(f"path: expected a file path, got {type(path).__name__}")
    where = " in the file's encoding"
    rows = _float32(argument, names, exact, where=where).astype("<f4")  # float64 input: refused, not written as inf
    _decoded_scales(argument, rows[:, [names.index(name) for name in _SCALES]].astype(np.float64), where)
    # The count on the third line: SIBR's viewer reads it there (a comment before it made SIBR load 0 splats).
    header = ["ply", "format binary_little_endian 1.0", f"element vertex {len(rows)}"]
    header += [f"property float {name}" for name in names]
    header += [f"comment written by headfields.data.splat_ply.{writer}", "end_header"]

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path, "path") as temporary, temporary.open("wb") as file:
        file.write(("\n".join(header) + "\n").encode("ascii"))
        file.write(rows.tobytes())
    return path


def _vertex_layout(path: Path, data: bytes) -> tuple[int, np.dtype, int]:
    """The vertex count, the row layout and the first byte of the vertex rows of a splat PLY's bytes."""
    end = data.find(b"end_header")
    if not data.startswith(b"ply") or end < 0:
        raise ValueError(f"{path}: not a PLY file (expected 'ply' first and an 'end_header' line)")
    body = data.find(b"\n", end) + 1 or len(data)
    fmt, elements = None, []  # (name, count, [(property, numpy type)])
    for line in data[:end].decode("latin-1").splitlines()[1:]:
        parts = line.split()
        try:
            if parts and parts[0] == "format":
                fmt = parts[1]
            elif parts and parts[0] == "element":
                count = int(parts[2])
                if count < 0:  # numpy reads a count of -1 as "every row there is"
                    raise ValueError(f"expected a count of {parts[1]} rows, 0 or more, got {count}")
                elements.append((parts[1], count, []))
            elif parts and parts[0] == "property" and parts[1] == "list":
                raise ValueError("list properties are not 3D Gaussian splat properties")
            elif parts and parts[0] == "property":
                elements[-1][2].append((parts[2], _TYPES[parts[1]]))
        except (IndexError, KeyError, ValueError) as e:
            raise ValueError(f"{path}: cannot parse the header line {line.strip()!r} ({e})") from e
    if fmt != "binary_little_endian":
        raise ValueError(f"{path}: expected format binary_little_endian (a 3D Gaussian splat PLY), got {fmt}")
    if not elements or elements[0][0] != "vertex":
        raise ValueError(f"{path}: expected 'element vertex' as the file's first element")
    _, count, properties = elements[0]
    have = dict(properties)
    missing = [name for name in _NEEDED if name not in have]
    if missing:
        raise ValueError(f"{path}: missing vertex properties {', '.join(missing)} (a 3D Gaussian splat PLY needs {_NEEDED})")
    rest = [name for name in have if _F_REST.fullmatch(name)]
    k = len(rest) // 3 + 1
    if len(rest) % 3 or math.isqrt(k) ** 2 != k or set(rest) != {f"f_rest_{i}" for i in range(len(rest))}:
        raise ValueError(f"{path}: expected f_rest_0 .. f_rest_{{3 (K - 1) - 1}} with K = 1, 4, 9, 16 or 25, got {rest}")
    bad = [name for name in _NEEDED + rest if have[name] not in ("<f4", "<f8")]
    if bad:
        raise ValueError(f"{path}: expected float or double vertex properties, got another type for {', '.join(bad)}")
    try:
        layout = np.dtype(properties)
    except ValueError as e:  # a property named twice
        raise ValueError(f"{path}: cannot lay out the vertex properties ({e})") from e
    if len(data) - body < count * layout.itemsize:
        raise ValueError(f"{path}: truncated: {count} vertices need {count * layout.itemsize} bytes, found {len(data) - body}")
    return count, layout, body


def read_splat_ply(path: str | os.PathLike) -> Splats:
    """The 3D Gaussians of a 3D Gaussian Splatting PLY (see the module's docstring): properties in any order,
    ``float`` or ``double``, others skipped; K from the number of ``f_rest_*``. Float32 CPU tensors, with
    opacities through a sigmoid, scales exponentiated and quaternions normalised. A file carrying a binding
    (``binding_0``) is refused: its values are local to faces (:func:`read_bound_splat_ply` reads it).

        splats = read_splat_ply("point_cloud/iteration_30000/point_cloud.ply")
        splats.sh.shape  # [N, 16, 3] for a degree-3 model
    """
    splats, binding = _read(path)
    if binding is not None:
        raise ValueError(
            f"{path}: carries a binding ({BINDING}, GaussianAvatars' layout): its positions, rotations and scales are "
            "local to each Gaussian's parent face, not world values; read it with read_bound_splat_ply"
        )
    return splats


def read_bound_splat_ply(path: str | os.PathLike) -> tuple[Splats, Tensor]:
    """The Gaussians of a PLY that carries a binding (GaussianAvatars' ``save_ply``), as the file holds them: each
    one's values local to its parent face (means, quaternions and scales in the face's frame and units), and the
    faces ``binding`` [N] (int64). A file without a binding is refused (:func:`read_splat_ply` reads it).

        local, binding = read_bound_splat_ply("point_cloud/iteration_600000/point_cloud.ply")
    """
    splats, binding = _read(path)
    if binding is None:
        raise ValueError(f"{path}: carries no binding ({BINDING}): its values are world values; read it with read_splat_ply")
    return splats, binding


def _read(path: str | os.PathLike) -> tuple[Splats, Tensor | None]:
    """A splat PLY's Gaussians and its binding, if it carries one."""
    if not isinstance(path, str | os.PathLike):
        raise TypeError(f"path: expected a file path, got {type(path).__name__}")
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: splat PLY not found")
    data = path.read_bytes()
    count, layout, body = _vertex_layout(path, data)
    rows = np.frombuffer(data, dtype=layout, count=count, offset=body)
    k = sum(1 for name in layout.names if _F_REST.fullmatch(name)) // 3 + 1

    def get(*names: str) -> np.ndarray:  # float64 for the transforms, so only the final cast rounds
        values = np.stack([rows[name].astype(np.float64) for name in names], axis=1)
        check_finite(f"{path}: {', '.join(names)}", torch.from_numpy(values), "finite values in the file")
        return values

    rot = ["rot_0", "rot_1", "rot_2", "rot_3"]
    quats = get(*rot)
    zero = (quats == 0).all(axis=1)  # (not the norm: its square underflows to 0 for a row of 1e-300s)
    if zero.any():
        raise ValueError(f"{path}: rot_0 .. rot_3: expected non-zero quaternions, found a zero one (row {int(zero.argmax())})")
    rest_names = [f"f_rest_{i}" for i in range(3 * (k - 1))]
    rest = get(*rest_names) if k > 1 else np.zeros((count, 0))
    dc_names, xyz, label = ["f_dc_0", "f_dc_1", "f_dc_2"], ["x", "y", "z"], str(path)
    dc = get(*dc_names)
    coefficients = torch.from_numpy(_float32(label, [*dc_names, *rest_names], np.concatenate([dc, rest], 1)))
    sh = torch.cat([coefficients[:, None, :3], coefficients[:, 3:].reshape(count, 3, k - 1).transpose(1, 2)], dim=1)
    splats = Splats(
        means=torch.from_numpy(_float32(label, xyz, get(*xyz))),
        quats=torch.from_numpy(_unit_quaternions(quats)).float(),
        scales=torch.from_numpy(_decoded_scales(label, get(*_SCALES))),
        opacities=torch.sigmoid(torch.from_numpy(get("opacity")[:, 0])).float(),  # 0 or 1 at float32's precision
        sh=sh.contiguous(),
    )
    if BINDING not in layout.names:
        return splats, None
    faces = rows[BINDING].astype(np.float64)  # GaussianAvatars writes every property as float
    whole = np.isfinite(faces) & (faces >= 0) & (faces == np.round(faces)) & (faces < 2**31)
    if not whole.all():
        row = int((~whole).argmax())
        raise ValueError(f"{path}: {BINDING} of row {row} is {faces[row]:.6g}: expected a face index (a whole number, 0 or more)")
    return splats, torch.from_numpy(faces.astype(np.int64))
