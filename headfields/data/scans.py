"""3D head scans, what a parametric head prior (MonoNPHM's NPHM) learns from: the container (:class:`ScanSet`),
the points a training step samples on and around them (:func:`sample_scans`), and a reader of a folder of
coloured meshes (:func:`read_scan_folder`, with the small PLY reader it needs, :func:`read_ply`).

Scans are in metres in the head's canonical frame (FLAME's: neutral head pose, y up, the face along +z). A set is
*registered* when every scan of an identity shares its vertex order and faces, so vertex ``k`` is the same
material point in every expression: then each surface sample also gives its position on the identity's neutral
scan, the expression correspondence a deformation field can learn from. The synthetic scan set
(:func:`headfields.synthetic.synthetic_scan_set`) is registered; scans of real people generally are not.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from jaxtyping import Float, Int
from torch import Tensor

from ..checks import IntLike, check_count, check_float, check_int, check_positive
from ..geometry import TriangleMesh, closest_point, sample_box, sample_surface
from . import _io

__all__ = ["MESH_SUFFIXES", "NEUTRAL_STEM", "ScanSamples", "ScanSet", "read_ply", "read_scan_folder", "sample_scans"]

MESH_SUFFIXES = (".ply", ".obj")
NEUTRAL_STEM = "neutral"  # a mesh named neutral.* is its identity's neutral scan, whatever the others are named
GREY = 0.5  # the colour read_scan_folder(missing_colours="grey") gives a mesh without colours
SEED_LIMIT = 2**62  # surface samples are seeded by a number the caller's generator draws below this


@dataclass
class ScanSet:
    """N scans of I identities (see the module's docstring for the frame and for ``registered``).

    ``identity [N]``: each scan's identity, every one of ``0 .. I-1`` present; ``expression [N]``: its index within
    its identity, 0 being the identity's one neutral scan. ``anchors [I, K, 3]``: known positions of K points per
    identity on its neutral scan (the synthetic set's, see :func:`headfields.synthetic.anchor_vertices`), or None.
    ``names``: one per scan (default ``"identity/expression"`` numbers). Treat a set as immutable: it keeps each
    scan's BVH for :func:`sample_scans` once built."""

    vertices: list[Float[Tensor, "_ 3"]]
    faces: list[Int[Tensor, "_ 3"]]
    colours: list[Float[Tensor, "_ 3"]]  # per vertex, in [0, 1]
    identity: Int[Tensor, " N"]
    expression: Int[Tensor, " N"]
    registered: bool
    anchors: Float[Tensor, "I K 3"] | None = None
    names: list[str] | None = None
    _neutral: Tensor = field(init=False, repr=False, compare=False)
    _meshes: dict = field(init=False, repr=False, compare=False, default_factory=dict)

    def __post_init__(self) -> None:
        n = len(self.vertices) if isinstance(self.vertices, list) else 0
        for name in ("vertices", "faces", "colours"):
            value = getattr(self, name)
            if not isinstance(value, list) or len(value) != n or n == 0:
                raise ValueError(f"{name}: expected a non-empty list with one tensor per scan ({n}), got {_describe(value)}")
        for i, (v, f, c) in enumerate(zip(self.vertices, self.faces, self.colours, strict=True)):
            check_float(f"vertices[{i}]", v, [None, 3])
            check_int(f"faces[{i}]", f, [None, 3], upper=len(v), device=v.device)
            check_float(f"colours[{i}]", c, [len(v), 3], device=v.device)
            if len(v) == 0 or len(f) == 0:
                raise ValueError(f"vertices[{i}]: expected a mesh with vertices and faces, got {len(v)} and {len(f)}")
            if bool((c < 0).any() or (c > 1).any()):
                raise ValueError(f"colours[{i}]: expected colours in [0, 1], got values in [{float(c.min())}, {float(c.max())}]")
        check_int("identity", self.identity, [n])
        check_int("expression", self.expression, [n], device=self.identity.device)
        identity, expression = self.identity.cpu().long(), self.expression.cpu().long()
        count = int(identity.max()) + 1
        if len(identity.unique()) != count:
            missing = sorted(set(range(count)) - set(identity.tolist()))
            raise ValueError(f"identity: expected every identity 0..{count - 1} to have a scan, identity {missing[0]} has none")
        pairs = identity * (int(expression.max()) + 1) + expression
        if len(pairs.unique()) != n:
            raise ValueError("expression: expected each (identity, expression) pair once, found a repeated one")
        neutral = torch.full((count,), -1, dtype=torch.long)
        neutral[identity[expression == 0]] = torch.nonzero(expression == 0)[:, 0]
        if (neutral < 0).any():
            missing = int(neutral.argmin())
            raise ValueError(f"expression: expected a neutral scan (expression 0) per identity, identity {missing} has none")
        self._neutral = neutral
        if not isinstance(self.registered, bool):
            raise TypeError(f"registered: expected True or False, got {self.registered!r}")
        if self.registered:
            for i in range(n):
                j = int(neutral[identity[i]])
                if self.vertices[i].shape != self.vertices[j].shape or not torch.equal(self.faces[i], self.faces[j]):
                    raise ValueError(f"registered: scan {i} does not share its neutral scan {j}'s vertex count and faces")
        if self.anchors is not None:
            check_float("anchors", self.anchors, [count, None, 3])
        if self.names is None:
            self.names = [f"{i}/{e}" for i, e in zip(identity.tolist(), expression.tolist(), strict=True)]
        if not isinstance(self.names, list) or len(self.names) != n or not all(isinstance(s, str) for s in self.names):
            raise ValueError(f"names: expected a list of {n} strings, got {_describe(self.names)}")

    @property
    def num_identities(self) -> int:
        return len(self._neutral)

    @property
    def num_scans(self) -> int:
        return len(self.vertices)

    def neutral(self, scan: IntLike | Int[Tensor, " B"]) -> int | Int[Tensor, " B"]:
        """The index of the neutral scan of ``scan``'s identity (one scan number, or a tensor of them)."""
        if isinstance(scan, Tensor):
            check_int("scan", scan, [None], upper=self.num_scans)
            table = self._neutral.to(scan.device)
            return table[self.identity.to(scan.device)[scan.long()]]
        scan = check_count("scan", scan, 0, self.num_scans - 1)
        return int(self._neutral[self.identity[scan]])

    def mesh(self, scan: int) -> TriangleMesh:
        """Scan ``scan`` as a :class:`~headfields.geometry.TriangleMesh` (kept: its BVH is built once)."""
        if scan not in self._meshes:
            self._meshes[scan] = TriangleMesh(self.vertices[scan], self.faces[scan])
        return self._meshes[scan]


def _describe(value: object) -> str:
    return f"a list of {len(value)}" if isinstance(value, list) else type(value).__name__


@dataclass
class ScanSamples:
    """Points on and around B scans, in the scans' frame (metres). ``normals``: unit geometric normals of the
    sampled faces (outward for counter-clockwise faces); ``colours``: the vertex colours blended at the samples;
    ``neutral_surface``: registered sets only, the same material points on the identity's neutral scan;
    ``near_sdf``: the signed distance of ``near`` (its offset's sign, the exact distance to the scan);
    ``scan``: the scans sampled."""

    surface: Float[Tensor, "B N 3"]
    normals: Float[Tensor, "B N 3"]
    colours: Float[Tensor, "B N 3"]
    neutral_surface: Float[Tensor, "B N 3"] | None
    near: Float[Tensor, "B M 3"]
    near_sdf: Float[Tensor, "B M"]
    space: Float[Tensor, "B P 3"]
    scan: Int[Tensor, " B"]

    def to(self, device: torch.device | str) -> ScanSamples:
        """The samples with every tensor on ``device``."""
        return ScanSamples(**{k: v if v is None else v.to(device) for k, v in vars(self).items()})


def sample_scans(
    scans: ScanSet,
    index: Int[Tensor, " B"],
    surface: int,
    near: int,
    space: int,
    near_std: float,
    box: Float[Tensor, "2 3"],
    generator: torch.Generator,
) -> ScanSamples:
    """Training points of the scans ``index``: ``surface`` points per scan, area-weighted; ``near`` points moved
    off other surface samples along their face normal by ``eps ~ N(0, near_std^2)``, with signed distance
    ``sign(eps)`` times their exact distance to the scan; ``space`` points uniform in ``box`` (low and high
    corners). Deterministic from ``generator`` (a CPU one), on the scans' device.

    The sign is the offset's, as in NPHM: it is wrong only where an offset crosses another sheet of the surface
    (near_std against the lips' gap or an ear's thickness), which a closed scan's inside test would get right.

        samples = sample_scans(scans, torch.tensor([0, 5]), 1000, 250, 125, 0.01, box, torch.Generator())
    """
    if not isinstance(scans, ScanSet):
        raise TypeError(f"scans: expected a ScanSet, got {type(scans).__name__}")
    check_int("index", index, [None], upper=scans.num_scans)
    if index.shape[0] == 0:
        raise ValueError("index: expected at least one scan, got an empty tensor")
    counts = [check_count(name, value, 0) for name, value in (("surface", surface), ("near", near), ("space", space))]
    check_positive("near_std", near_std)
    if not math.isfinite(near_std):
        raise ValueError(f"near_std: expected a finite number, got {near_std}")
    check_float("box", box, [2, 3])
    if not isinstance(generator, torch.Generator) or generator.device.type != "cpu":
        raise TypeError(f"generator: expected a CPU torch.Generator, got {generator!r}")
    parts = [_sample_scan(scans, int(i), *counts, near_std, box, generator) for i in index.tolist()]
    stacked = [torch.stack(column) if column[0] is not None else None for column in zip(*parts, strict=True)]
    return ScanSamples(*stacked, scan=index.long())


def _sample_scan(
    scans: ScanSet, i: int, surface: int, near: int, space: int, near_std: float, box: Tensor, generator: torch.Generator
) -> tuple[Tensor | None, ...]:
    mesh, faces = scans.mesh(i), scans.faces[i].long()

    def seed() -> int:  # sample_surface draws from a seed: one per call, from the caller's generator
        return int(torch.randint(0, SEED_LIMIT, (), generator=generator))

    on = sample_surface(mesh, surface, seed=seed())
    colours = (on.bary[:, :, None] * scans.colours[i][faces[on.face]]).sum(dim=1)
    neutral = None
    if scans.registered:
        corners = scans.vertices[scans.neutral(i)][faces[on.face]]
        neutral = (on.bary[:, :, None] * corners).sum(dim=1)
    off = sample_surface(mesh, near, seed=seed())
    eps = near_std * torch.randn(near, generator=generator, dtype=torch.float64).to(off.point)
    points = off.point + eps[:, None] * off.normal
    distance = closest_point(mesh, points).distance if near else eps
    free = sample_box(box, space, generator).to(on.point)
    return on.point, on.normal, colours, neutral, points, torch.sign(eps) * distance.to(eps), free


def read_scan_folder(root: str | os.PathLike, missing_colours: str = "error") -> ScanSet:
    """The scans of folder ``root``: one subfolder per identity (sorted by name), holding one mesh per expression
    (``.ply`` or ``.obj``, sorted by name, a file named ``neutral.*`` first; the first is the neutral scan).
    Meshes carry per-vertex colours: a PLY's ``red green blue`` (unsigned integers, or floats in [0, 1]), an OBJ's
    ``v x y z r g b`` (floats in [0, 1]). A mesh without them is an error, or grey (0.5) with
    ``missing_colours="grey"``. Faces with more corners become fans of triangles. ``registered`` is True when
    every identity's scans share their vertex count and faces; no anchors are known.

        scans = read_scan_folder("scans/")  # scans/alice/neutral.ply, scans/alice/smile.ply, scans/bob/...
    """
    if missing_colours not in ("error", "grey"):
        raise ValueError(f"missing_colours: expected 'error' or 'grey', got {missing_colours!r}")
    if not isinstance(root, str | os.PathLike):
        raise TypeError(f"root: expected a folder path, got {type(root).__name__}")
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"root: {root} is not a folder")
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not folders:
        raise ValueError(f"root: {root} holds no identity subfolders")
    vertices, faces, colours, identity, expression, names = [], [], [], [], [], []
    registered = True
    for i, folder in enumerate(folders):
        meshes = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in MESH_SUFFIXES)
        if not meshes:
            raise ValueError(f"root: identity folder {folder} holds no {' or '.join(MESH_SUFFIXES)} mesh")
        neutral = [p for p in meshes if p.stem == NEUTRAL_STEM]
        if len(neutral) > 1:
            raise ValueError(f"root: identity folder {folder} holds {len(neutral)} neutral meshes, expected one")
        meshes = neutral + [p for p in meshes if p not in neutral]
        for e, path in enumerate(meshes):
            v, f, c = read_ply(path) if path.suffix.lower() == ".ply" else _read_obj(path)
            if c is None:
                if missing_colours == "error":
                    raise ValueError(f"{path}: has no per-vertex colours (missing_colours='grey' reads it grey)")
                c = np.full_like(v, GREY)
            if e > 0 and (len(v) != len(vertices[-e]) or not np.array_equal(f, faces[-e].numpy())):
                registered = False
            vertices.append(torch.from_numpy(v))
            faces.append(torch.from_numpy(f))
            colours.append(torch.from_numpy(c))
            identity.append(i)
            expression.append(e)
            names.append(f"{folder.name}/{path.stem}")
    return ScanSet(vertices, faces, colours, torch.tensor(identity), torch.tensor(expression), registered, names=names)


def _read_obj(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """An OBJ's vertices and triangles (:func:`headfields.data._io.read_obj`) and its ``v x y z r g b`` colours."""
    vertices, faces = _io.read_obj(path)
    rows = [line.split()[4:7] for line in path.read_text().splitlines() if line.startswith("v ")]
    if not any(rows):
        return vertices, faces, None
    if not all(len(r) == 3 for r in rows):
        raise ValueError(f"{path}: expected 'v x y z r g b' on every vertex line or on none")
    colours = np.asarray(rows, dtype=np.float32)
    return vertices, faces, _unit_colours(path, colours)


def _unit_colours(path: Path, colours: np.ndarray) -> np.ndarray:
    if not np.isfinite(colours).all() or colours.min() < 0 or colours.max() > 1:
        raise ValueError(f"{path}: expected colours in [0, 1], got values in [{colours.min()}, {colours.max()}]")
    return colours.astype(np.float32)


# ----------------------------------------------------------------------------------------------------------
# PLY

PLY_TYPES = {
    **dict.fromkeys(("char", "int8"), "i1"),
    **dict.fromkeys(("uchar", "uint8"), "u1"),
    **dict.fromkeys(("short", "int16"), "i2"),
    **dict.fromkeys(("ushort", "uint16"), "u2"),
    **dict.fromkeys(("int", "int32"), "i4"),
    **dict.fromkeys(("uint", "uint32"), "u4"),
    **dict.fromkeys(("float", "float32"), "f4"),
    **dict.fromkeys(("double", "float64"), "f8"),
}
PLY_FORMATS = {"ascii": None, "binary_little_endian": "<", "binary_big_endian": ">"}
COLOUR_NAMES = (("red", "green", "blue"), ("diffuse_red", "diffuse_green", "diffuse_blue"))


@dataclass
class _Element:
    name: str
    count: int
    scalars: list[tuple[str, str]]  # (name, numpy type) of the properties that are not lists
    lists: list[tuple[str, str, str]]  # (name, count type, item type)
    order: list[str]  # every property's name, in the file's order


def read_ply(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Vertices float32 ``[V, 3]``, triangles int64 ``[F, 3]`` (polygons as fans) and per-vertex colours float32
    ``[V, 3]`` in [0, 1] (None without ``red green blue``) of a PLY file, ASCII or binary. Other elements and
    properties are skipped; integer colours are scaled by their type's maximum."""
    path = _io.require_file(Path(path), "mesh")
    data = path.read_bytes()
    end = data.find(b"end_header")
    if not data.startswith(b"ply") or end < 0:
        raise ValueError(f"{path}: not a PLY file (expected 'ply' first and an 'end_header' line)")
    body = data.index(b"\n", end) + 1 if b"\n" in data[end:] else len(data)
    byte_order, elements = _ply_header(path, data[:end].decode("latin-1").splitlines())
    rows = _ply_ascii(path, data[body:], elements) if byte_order is None else _ply_binary(path, data, body, byte_order, elements)
    vertex = rows.get("vertex")
    if vertex is None or not all(k in vertex for k in "xyz"):
        raise ValueError(f"{path}: expected a vertex element with x, y and z properties")
    vertices = np.stack([vertex[k] for k in "xyz"], axis=1).astype(np.float32)
    polygons = rows.get("face", {}).get("vertex_indices", rows.get("face", {}).get("vertex_index"))
    if polygons is None or len(polygons) == 0:
        raise ValueError(f"{path}: expected a face element with vertex_indices")
    faces = _triangulate(path, polygons, len(vertices))
    colours = None
    for names in COLOUR_NAMES:
        if all(n in vertex for n in names):
            channels = np.stack([vertex[n] for n in names], axis=1)
            scale = np.iinfo(channels.dtype).max if np.issubdtype(channels.dtype, np.integer) else 1.0
            colours = _unit_colours(path, channels.astype(np.float64) / scale)
            break
    return vertices, faces, colours


def _ply_header(path: Path, lines: list[str]) -> tuple[str | None, list[_Element]]:
    byte_order, elements = None, []
    fmt = None
    for number, line in enumerate(lines, start=1):
        parts = line.split()
        if not parts or parts[0] in ("ply", "comment", "obj_info"):
            continue
        try:
            if parts[0] == "format":
                fmt = parts[1]
                if fmt not in PLY_FORMATS:
                    raise ValueError(f"unknown format {fmt!r}")
                byte_order = PLY_FORMATS[fmt]
            elif parts[0] == "element":
                elements.append(_Element(parts[1], int(parts[2]), [], [], []))
            elif parts[0] == "property" and parts[1] == "list":
                elements[-1].lists.append((parts[4], PLY_TYPES[parts[2]], PLY_TYPES[parts[3]]))
                elements[-1].order.append(parts[4])
            elif parts[0] == "property":
                elements[-1].scalars.append((parts[2], PLY_TYPES[parts[1]]))
                elements[-1].order.append(parts[2])
            else:
                raise ValueError(f"unknown keyword {parts[0]!r}")
        except (IndexError, KeyError, ValueError) as e:
            raise ValueError(f"{path}: header line {number}: cannot parse {line.strip()!r} ({e})") from e
    if fmt is None:
        raise ValueError(f"{path}: the header has no format line")
    return byte_order, elements


def _ply_binary(path: Path, data: bytes, offset: int, order: str, elements: list[_Element]) -> dict[str, dict[str, object]]:
    """Each element's properties: one table when every row's lists are as long as the first row's (a triangle
    mesh), else row by row."""
    out = {}
    try:
        for element in elements:
            if element.count == 0:
                out[element.name] = {}
                continue
            dtype = _first_row_dtype(data, offset, order, element)
            table = None
            if element.count * dtype.itemsize <= len(data) - offset:  # else: rows of varying length, or truncated
                table = np.frombuffer(data, dtype, element.count, offset)
            if table is not None and all((table[f"{n}#n"] == table[n].shape[1]).all() for n, _, _ in element.lists):
                out[element.name] = {name: table[name] for name in element.order}
                offset += table.nbytes
            else:
                out[element.name], offset = _ply_binary_rows(data, offset, order, element)
    except (ValueError, IndexError) as e:  # numpy: the buffer is shorter than the header says
        raise ValueError(f"{path}: the binary data ends before the header's elements do ({e})") from e
    return out


def _first_row_dtype(data: bytes, offset: int, order: str, element: _Element) -> np.dtype:
    """A row's structured dtype, with each list as long as in the row at ``offset`` (its count field ``NAME#n``)."""
    types, lists = dict(element.scalars), {name: (c, t) for name, c, t in element.lists}
    fields = []
    for name in element.order:
        if name in types:
            fields.append((name, order + types[name]))
            offset += np.dtype(types[name]).itemsize
        else:
            count_type, item_type = lists[name]
            k = int(np.frombuffer(data, order + count_type, 1, offset)[0])
            fields += [(f"{name}#n", order + count_type), (name, order + item_type, (k,))]
            offset += np.dtype(count_type).itemsize + k * np.dtype(item_type).itemsize
    return np.dtype(fields)


def _ply_binary_rows(data: bytes, offset: int, order: str, element: _Element) -> tuple[dict[str, object], int]:
    """One element read row by row (lists of varying length: polygons)."""
    types = dict(element.scalars)
    lists = {name: (c, t) for name, c, t in element.lists}
    values: dict[str, list] = {name: [] for name in element.order}
    for _ in range(element.count):
        for name in element.order:
            if name in types:
                values[name].append(np.frombuffer(data, order + types[name], 1, offset)[0])
                offset += np.dtype(types[name]).itemsize
            else:
                count_type, item_type = lists[name]
                k = int(np.frombuffer(data, order + count_type, 1, offset)[0])
                offset += np.dtype(count_type).itemsize
                values[name].append(np.frombuffer(data, order + item_type, k, offset))
                offset += k * np.dtype(item_type).itemsize
    return {name: (v if name in lists else np.asarray(v)) for name, v in values.items()}, offset


def _ply_ascii(path: Path, body: bytes, elements: list[_Element]) -> dict[str, dict[str, object]]:
    """Each element's properties: one block of numbers when every row is as long as the first (a triangle mesh),
    else row by row."""
    tokens = body.split()
    out, at = {}, 0
    try:
        for element in elements:
            try:
                columns, size = _ply_ascii_block(tokens, at, element)
            except ValueError:  # rows of varying length ran past the data: read row by row, which names a real error
                columns = None
            if columns is not None:
                out[element.name], at = columns, at + size
            else:
                out[element.name], at = _ply_ascii_rows(tokens, at, element)
            for name, kind in element.scalars:  # the header's types, as the binary reader gives them
                if name in out[element.name]:
                    out[element.name][name] = np.asarray(out[element.name][name]).astype(kind)
    except (ValueError, IndexError) as e:
        raise ValueError(f"{path}: the ASCII data does not match the header's elements ({e})") from e
    return out


def _ply_ascii_block(tokens: list[bytes], at: int, element: _Element) -> tuple[dict[str, np.ndarray] | None, int]:
    """The element as one block of numbers, each row as long as the first; None where a row's list is not."""
    scalars = dict(element.scalars)
    width = 0  # the first row's length in tokens
    for name in element.order if element.count else ():
        width += 1 + (0 if name in scalars else int(tokens[at + width]))
    block = np.asarray(tokens[at : at + element.count * width], dtype=np.float64).reshape(element.count, width)
    columns, j = {}, 0
    for name in element.order if element.count else ():
        k = 0 if name in scalars else int(block[0, j])
        if name not in scalars and not (block[:, j] == k).all():
            return None, 0
        columns[name] = block[:, j] if name in scalars else block[:, j + 1 : j + 1 + k]
        j += 1 + k
    return columns, block.size


def _ply_ascii_rows(tokens: list[bytes], at: int, element: _Element) -> tuple[dict[str, object], int]:
    """One element read row by row (lists of varying length: polygons)."""
    scalars = dict(element.scalars)
    values: dict[str, list] = {name: [] for name in element.order}
    for _ in range(element.count):
        for name in element.order:
            if name in scalars:
                values[name].append(float(tokens[at]))
                at += 1
            else:
                k = int(tokens[at])
                values[name].append(np.asarray(tokens[at + 1 : at + 1 + k], dtype=np.float64).astype(np.int64))
                at += 1 + k
    return values, at


def _triangulate(path: Path, polygons: object, num_vertices: int) -> np.ndarray:
    """Triangles from a table ``[F, k]`` or a list of index arrays: each polygon a fan about its first corner."""
    if isinstance(polygons, np.ndarray) and polygons.ndim == 2:
        table = polygons.astype(np.int64)
        if table.shape[1] < 3:
            raise ValueError(f"{path}: expected faces of at least 3 corners, got {table.shape[1]}")
        faces = np.concatenate([table[:, [0, k, k + 1]] for k in range(1, table.shape[1] - 1)])
    else:
        fans = [[p[0], p[k], p[k + 1]] for p in polygons for k in range(1, len(p) - 1)]
        if any(len(p) < 3 for p in polygons):
            raise ValueError(f"{path}: expected faces of at least 3 corners")
        faces = np.asarray(fans, dtype=np.int64).reshape(-1, 3)
    if faces.min() < 0 or faces.max() >= num_vertices:
        raise ValueError(f"{path}: face indices out of range for {num_vertices} vertices")
    return faces
