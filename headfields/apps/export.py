"""Coloured triangle meshes out of an avatar's field, and a PLY writer for them.

:func:`field_mesh` runs marching cubes (:func:`~headfields.geometry.extract_isosurface`) on a model's field at one
frame, over that frame's posed mesh box: the zero level of a :class:`~headfields.fields.NeusField`'s SDF, or the
``level`` set of a :class:`~headfields.fields.NerfField`'s density (default :data:`DENSITY_THRESHOLD`). Each vertex
takes the field's colour there seen from outside along its normal. :func:`write_ply` writes the result (binary,
float32 positions, uint8 colours) for MeshLab, Blender or trimesh.

    mesh = field_mesh(model, head, frame=0, resolution=256)  # head: the frames' Head, as the model renders them
    write_ply("out/frame_000.ply", mesh.vertices, mesh.faces, mesh.colors)
"""

from __future__ import annotations

import math
import numbers
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from jaxtyping import Float, Int
from torch import Tensor, nn

from ..checks import IntLike, check_count, check_finite, check_float, check_int
from ..fields import NerfField, NeusField, padded_box
from ..geometry import extract_isosurface, vertex_normals
from ..outputs import atomic_path
from ..parametric import Head
from ..training import AvatarModel

__all__ = ["DENSITY_THRESHOLD", "ColoredMesh", "NoSurfaceError", "field_mesh", "write_ply"]

# The default surface of a NeRF density, per metre (the renderers composite alpha = 1 - exp(-density * step), steps
# in metres): sigma = -ln(1 - alpha) / thickness with alpha = 1 - 1/e ~ 0.63 over 1 cm, i.e. optical depth 1 per cm
# (a 5 cm slab, the depth of a nose or an ear, is 99.3% opaque). Why not the ~1000 at which 3 mm are 95% opaque:
# a NeRF's density rises into a surface over a ramp; at slope k per metre of depth the level sits level / k in
# front of the onset, 0.1 mm for a sharp trained field (k ~ 1e6 / m^2, 0 to 1000 in 1 mm), while a level above
# what a softer field reaches loses the surface. Measured on INSTA's CPU recipe after 581 steps on the 48-px
# synthetic video (held-out PSNR 23.8): at the tracked mesh the density's quartiles are 24 / 35 / 71 per metre,
# 5 mm inside 28 / 57 / 168, 3 cm outside (floaters) a 95th percentile of 65. Marched at 96^3, level 100 puts 46%
# of the tracked vertices within 5 mm of the mesh; level 1000 only 5% (a fragment). An untrained field (trunc_exp
# of a near-zero network) is ~1 per metre everywhere: no surface, and field_mesh says so with the range it found.
DENSITY_THRESHOLD = 100.0

DEFAULT_CHUNK = 65536  # points per field call: a few tens of MB of activations for the paper models


@dataclass
class ColoredMesh:
    """A triangle mesh with a colour per vertex; faces counter-clockwise seen from outside."""

    vertices: Float[Tensor, "V 3"]  # world units (metres), the head's dtype and device
    faces: Int[Tensor, "F 3"]  # int64
    colors: Float[Tensor, "V 3"]  # in [0, 1]


def _check_level(level: object) -> float:
    if isinstance(level, bool) or not (isinstance(level, numbers.Real) and math.isfinite(level)):
        raise ValueError(f"level: expected a finite number or None (the field's default), got {level!r}")
    return float(level)


def field_mesh(
    model: nn.Module,
    head: Head,
    frame: IntLike,
    resolution: IntLike = 256,
    level: float | None = None,
    padding: float = 0.05,
    chunk: IntLike = DEFAULT_CHUNK,
) -> ColoredMesh:
    """The surface of ``model.field`` at frame ``frame`` of ``head``, coloured, in world coordinates.

    Marching cubes on a grid of ``resolution`` points per axis over the frame's posed vertices' box grown by
    ``padding`` metres on every side (a surface crossing the box is left open there). For a
    :class:`~headfields.fields.NeusField` the surface is where the SDF equals ``level`` (default 0); for a
    :class:`~headfields.fields.NerfField` where the density equals ``level`` per metre (default
    :data:`DENSITY_THRESHOLD`). Faces are counter-clockwise seen from outside (low SDF, high density inside).

    Each vertex's colour is the field's with the view direction ``-normal`` (looking at the surface from outside
    along its normal), clamped to [0, 1]. The normal is the extracted mesh's area-weighted vertex normal: the
    surface the user gets, oriented like its faces, voxel-smooth where a hash grid's density gradient is noisy,
    and no backward pass for a NeRF. (A NeuS field lights its albedo with its own SDF-gradient normal; only a
    NeRF's colour reads the view direction.) Runs without gradients, ``chunk`` points per field call.

    ``head`` is the head the model renders with (e.g. with MonoNPHM's per-frame codes attached).

        mesh = field_mesh(model, head, frame=3, resolution=128)
        mesh.vertices.shape, mesh.faces.shape, mesh.colors.shape  # [V, 3], [F, 3], [V, 3]
    """
    field = model.radiance_field() if isinstance(model, AvatarModel) else None
    if not isinstance(field, NerfField | NeusField):
        got = type(model).__name__ if field is None else f"a field of type {type(field).__name__}"
        raise TypeError(f"model: expected a model whose radiance_field() is a NerfField or a NeusField, got {got}")
    if not isinstance(head, Head):
        raise TypeError(f"head: expected a headfields.parametric.Head, got {type(head).__name__}")
    frame = check_count("frame", frame, 0, head.num_frames - 1)
    resolution = check_count("resolution", resolution, 2)
    chunk = check_count("chunk", chunk, 1)
    if isinstance(padding, bool) or not (isinstance(padding, numbers.Real) and math.isfinite(padding) and padding >= 0):
        raise ValueError(f"padding: expected a finite number of metres >= 0, got {padding!r}")
    nerf = isinstance(field, NerfField)
    level = (DENSITY_THRESHOLD if nerf else 0.0) if level is None else _check_level(level)

    check_finite("head", head.vertices[frame], f"finite posed vertices at frame {frame}")
    bounds = padded_box(head.vertices[frame].detach(), float(padding))
    seen = [math.inf, -math.inf, 0]  # the range of the field's values on the grid and how many, for the empty-surface error

    def values(points: Tensor) -> Tensor:
        frames = torch.full_like(points[:, 0], frame, dtype=torch.long)
        if nerf:  # extract_isosurface's inside is below the level: -density, level -threshold
            value = -field(points, None, frames, head).density
        else:
            value = field.geometry(points, frames, head).sdf
        if not bool(torch.isfinite(value).all()):
            raise ValueError(f"model: its field gave NaN or Inf at frame {frame} (inside the box {bounds.tolist()})")
        seen[0], seen[1], seen[2] = min(seen[0], float(value.min())), max(seen[1], float(value.max())), seen[2] + len(value)
        return value

    sign = -1.0 if nerf else 1.0
    try:
        surface = extract_isosurface(values, bounds, resolution, sign * level, chunk)
    except ValueError as error:
        low, high, count = seen
        if count == resolution**3 and not low < sign * level < high:  # the whole grid, and nothing crosses the level
            raise NoSurfaceError(nerf, level, *sorted((sign * low, sign * high)), frame) from error
        raise
    if len(surface.faces) == 0:
        raise NoSurfaceError(nerf, level, *sorted((sign * seen[0], sign * seen[1])), frame)

    normals = vertex_normals(surface.vertices, surface.faces)
    # A vertex whose faces' normals cancel (a pinch) has no normal: any unit direction will do for its colour.
    normals = torch.where(normals.norm(dim=-1, keepdim=True) > 0.5, normals, normals.new_tensor([0.0, 0.0, 1.0]))
    colors = torch.empty_like(surface.vertices)
    with torch.no_grad():  # a NeusField re-enables grad for its normals but builds no graph beyond them
        for start in range(0, len(colors), chunk):
            points = surface.vertices[start : start + chunk]
            frames = torch.full_like(points[:, 0], frame, dtype=torch.long)
            rgb = field(points, -normals[start : start + chunk], frames, head).rgb
            colors[start : start + chunk] = rgb.detach().to(colors.dtype).clamp(0.0, 1.0)
    return ColoredMesh(vertices=surface.vertices, faces=surface.faces, colors=colors)


class NoSurfaceError(ValueError):
    """:func:`field_mesh` found no surface: the field's values on the grid, ``[low, high]``, never cross ``level``.
    ``suggested`` is a level inside that range (None when the field is constant there)."""

    def __init__(self, nerf: bool, level: float, low: float, high: float, frame: int) -> None:
        self.nerf, self.level, self.low, self.high, self.frame = nerf, level, low, high, frame
        self.suggested = (low + high) / 2 if low < high else None
        super().__init__(self.message())

    def message(self, flag: str | None = None) -> str:
        """The error's text; ``flag`` (a command line's ``--level``) is how the suggested level is given."""
        what, unit = ("density", " per metre") if self.nerf else ("SDF", "")
        low, high = self.low, self.high
        if self.suggested is None:
            hint = "pass another level" if flag is None else f"give another {flag}"
        elif flag is None:
            hint = f"pass a level in ({low:.6g}, {high:.6g}), e.g. {self.suggested:.6g}"
        else:
            hint = f"give {flag} a value in ({low:.6g}, {high:.6g}), e.g. {flag} {self.suggested:.6g}"
        untrained = " (an untrained NeRF's density is ~1 per metre everywhere)" if self.nerf and high < self.level else ""
        return (
            f"level: no surface at frame {self.frame}: the {what} on the grid lies in [{low:.6g}, {high:.6g}]{unit}, "
            f"never crossing level {self.level:.6g}{untrained}; {hint}, or widen padding or refine resolution"
        )


def write_ply(
    path: str | os.PathLike,
    vertices: Float[Tensor, "V 3"],
    faces: Int[Tensor, "F 3"],
    colors: Float[Tensor, "V 3"] | None = None,
) -> Path:
    """Write a triangle mesh as a binary little-endian PLY: float32 ``x y z``, uint8 ``red green blue`` (``colors``
    in [0, 1], rounded to the nearest of 255 steps) when given, and each face as a uchar count and three int32
    indices. Parent folders are made; returns the path.

        write_ply("out/head.ply", mesh.vertices, mesh.faces, mesh.colors)
        trimesh.load("out/head.ply", process=False)
    """
    check_float("vertices", vertices, [None, 3])
    check_int("faces", faces, [None, 3], upper=len(vertices))
    if len(vertices) >= 2**31:
        raise ValueError(f"vertices: expected fewer than 2^31 vertices (int32 face indices), got {len(vertices)}")
    if colors is not None:
        check_float("colors", colors, [len(vertices), 3])
        if len(colors) and not (float(colors.min()) >= 0 and float(colors.max()) <= 1):
            raise ValueError(f"colors: expected values in [0, 1], got values in [{float(colors.min())}, {float(colors.max())}]")
    if not isinstance(path, str | os.PathLike):
        raise TypeError(f"path: expected a file path, got {type(path).__name__}")

    fields = [("xyz", "<f4", 3)]
    header = ["ply", "format binary_little_endian 1.0", "comment written by headfields.apps.export.write_ply"]
    header += [f"element vertex {len(vertices)}", "property float x", "property float y", "property float z"]
    if colors is not None:
        fields.append(("rgb", "u1", 3))
        header += ["property uchar red", "property uchar green", "property uchar blue"]
    header += [f"element face {len(faces)}", "property list uchar int vertex_indices", "end_header"]
    rows = np.empty(len(vertices), dtype=fields)
    rows["xyz"] = vertices.detach().cpu().numpy()
    if colors is not None:
        rows["rgb"] = np.rint(colors.detach().cpu().double().numpy() * 255).astype(np.uint8)
    polygons = np.empty(len(faces), dtype=[("count", "u1"), ("ids", "<i4", 3)])
    polygons["count"] = 3
    polygons["ids"] = faces.detach().cpu().numpy()

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path, "path") as temporary, temporary.open("wb") as file:  # no part of a mesh at path, ever
        file.write(("\n".join(header) + "\n").encode("ascii"))
        file.write(rows.tobytes())
        file.write(polygons.tobytes())
    return path
