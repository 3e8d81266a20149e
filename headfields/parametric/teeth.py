"""Teeth for FLAME as VHAP and GaussianAvatars build them (``add_teeth`` in their ``flame.py``; GaussianAvatars'
``FlameGaussianModel`` always turns them on, and VHAP tracks with them by default).

:func:`add_teeth` appends two rows of teeth, each a box without ends: eight rows of ``n`` vertices (``n`` = 15 on
FLAME) made once, on the template, from FLAME's outer lip rings (``lip_outside_ring_upper`` / ``_lower`` of VHAP's
``FlameMask``), and the quad strips between them. The teeth take the lips' mean shape directions and no expression
or pose-corrective ones; the upper row is skinned to the neck joint alone, the lower to the jaw, so the lower teeth
drop with an opening jaw. Vertices and faces follow the model's own in VHAP's order, so on FLAME a face index means
the same face in GaussianAvatars' mesh and in ours.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from jaxtyping import Int
from torch import Tensor

from ..checks import check_int
from .model import ParametricModel

__all__ = [
    "FLAME_LOWER_LIP",
    "FLAME_TEETH_VERTICES",
    "FLAME_UPPER_LIP",
    "TEETH_ROWS",
    "add_teeth",
    "has_flame_teeth",
    "teeth_faces",
]

# VHAP's FlameMask (create_custom_mask): FLAME's outer lip rings, upper and lower, column by column.
FLAME_UPPER_LIP = (1713, 1715, 1716, 1735, 1696, 1694, 1657, 3543, 2774, 2811, 2813, 2850, 2833, 2832, 2830)
FLAME_LOWER_LIP = (1576, 1577, 1773, 1774, 1795, 1802, 1865, 3503, 2948, 2905, 2898, 2881, 2880, 2713, 2712)
FLAME_VERTICES = 5023
# The rows of n vertices in VHAP's order, and which jaw they belong to.
TEETH_ROWS = (
    "upper_root",
    "lower_root",
    "upper_edge",
    "lower_edge",
    "upper_root_back",
    "upper_edge_back",
    "lower_root_back",
    "lower_edge_back",
)
FLAME_TEETH_VERTICES = len(TEETH_ROWS) * len(FLAME_UPPER_LIP)  # 120 after FLAME's, in VHAP's static offsets too
# VHAP's proportions, in units of the mean gap between the two lip rings on the template: the teeth stand 1.5 behind
# the lips' middle, their edges 0.1 above and below it, 2 high and 1 thick, the lower row 0.4 further back.
TEETH_DEPTH, TEETH_EDGE_GAP, TEETH_HEIGHT, TEETH_THICKNESS, LOWER_SETBACK = 1.5, 0.1, 2.0, 1.0, 0.4
# Their UVs: a grid in a strip at the top of FLAME's UV square, u across the columns (right to left), the rows at
# these of seven v steps (VHAP's order, which it notes draws the lower teeth wrongly in UV space).
TEETH_U, TEETH_V, TEETH_V_STEPS = (0.62, 0.38), (1 - 0.0083, 1 - 0.0425), 7
TEETH_ROW_V = (3, 2, 0, 1, 3, 4, 6, 5)
# The quad strips, upper teeth first: (row p, row q, the diagonal's side left of the middle column, winding flipped).
# "pq": the diagonal from p[i] to q[i + 1], "qp": from p[i + 1] to q[i]; right of the middle the other one, so the
# strips are mirror-symmetric.
TEETH_STRIPS = (
    ("upper_root", "upper_edge", "pq", False),  # front
    ("upper_root_back", "upper_edge_back", "pq", True),  # back
    ("upper_edge_back", "upper_edge", "qp", True),  # biting edge
    ("lower_edge", "lower_root", "qp", False),
    ("lower_root_back", "lower_edge_back", "pq", False),
    ("lower_edge_back", "lower_edge", "qp", False),
)


def add_teeth(
    model: ParametricModel,
    upper_lip: Int[Tensor, " N"] | Sequence[int] | None = None,
    lower_lip: Int[Tensor, " N"] | Sequence[int] | None = None,
    region: str = "teeth",
) -> ParametricModel:
    """A new model with VHAP's teeth after its vertices and faces (see the module docstring); the old model is
    unchanged.

    ``upper_lip`` / ``lower_lip``: the outer lip rings, ``N >= 2`` vertex ids each, column ``i`` of one above
    column ``i`` of the other; None: VHAP's rings of FLAME (a FLAME model of its 5,023 vertices). On the template,
    with ``d`` the mean distance between the rings' columns and the middle ``m`` their midpoints at their mean
    height, ``d * TEETH_DEPTH`` behind them: the upper edge row is ``m + 0.1 d`` up, its root ``2 d`` above it;
    the lower edge ``0.1 d`` down and ``0.4 d`` back, its root ``2 d`` below it; each has a back row ``d`` behind
    (FLAME looks along +z, y up). Their shape directions are the mean of the two lip columns', their expression
    and pose-corrective directions zero; they add nothing to the joints. A model's static offsets get zero rows.
    Regions: ``region`` (all teeth), ``{region}_upper`` and ``{region}_lower``.
    """
    if not isinstance(model, ParametricModel):
        raise TypeError(f"model: expected a headfields.parametric.ParametricModel, got {type(model).__name__}")
    if not isinstance(region, str) or not region:
        raise TypeError(f"region: expected a non-empty region name, got {region!r}")
    names = (region, f"{region}_upper", f"{region}_lower")
    if taken := [name for name in names if name in model.region_names]:
        raise ValueError(f"region: expected new region names, got {region!r}; the model already has {taken[0]!r}")
    neck, jaw = model.joint_index("neck", "model"), model.joint_index("jaw", "model")
    upper, lower = _lip_rings(model, upper_lip, lower_lip)
    n, v = len(upper), model.num_vertices

    data = model.official_arrays()
    template = data["v_template"]
    lip_upper, lip_lower = template[upper], template[lower]
    gap = float(np.linalg.norm(lip_upper - lip_lower, axis=-1).mean())
    middle = (lip_upper + lip_lower) / 2
    middle[:, 1] = middle[:, 1].mean()
    middle[:, 2] -= TEETH_DEPTH * gap
    up, back = np.array([0.0, gap, 0.0]), np.array([0.0, 0.0, gap])
    rows = {"upper_edge": middle + TEETH_EDGE_GAP * up, "lower_edge": middle - TEETH_EDGE_GAP * up - LOWER_SETBACK * back}
    rows["upper_root"] = rows["upper_edge"] + TEETH_HEIGHT * up
    rows["lower_root"] = rows["lower_edge"] - TEETH_HEIGHT * up
    for name in ("upper_root", "upper_edge", "lower_root", "lower_edge"):
        rows[f"{name}_back"] = rows[name] - TEETH_THICKNESS * back
    is_upper = np.repeat([name.startswith("upper") for name in TEETH_ROWS], n)
    rows_of = len(TEETH_ROWS) * n
    ids = v + np.arange(rows_of)

    directions = np.zeros((rows_of, *data["shapedirs"].shape[1:]))
    shape_directions = (data["shapedirs"][upper, :, : model.num_shape] + data["shapedirs"][lower, :, : model.num_shape]) / 2
    directions[..., : model.num_shape] = np.tile(shape_directions, (len(TEETH_ROWS), 1, 1))
    weights = np.zeros((rows_of, model.num_joints))
    weights[is_upper, neck] = weights[~is_upper, jaw] = 1.0
    data["v_template"] = np.concatenate([template, *(rows[name] for name in TEETH_ROWS)])
    data["shapedirs"] = np.concatenate([data["shapedirs"], directions])
    data["posedirs"] = np.concatenate([data["posedirs"], np.zeros((rows_of, *data["posedirs"].shape[1:]))])
    data["weights"] = np.concatenate([data["weights"], weights])
    data["J_regressor"] = np.pad(data["J_regressor"], ((0, 0), (0, rows_of)))
    if "static_offset" in data:
        data["static_offset"] = np.concatenate([data["static_offset"], np.zeros((rows_of, 3))])
    faces = teeth_faces(n)
    data["f"] = np.concatenate([data["f"], v + faces])
    data["regions"] |= dict(zip(names, (ids, ids[is_upper], ids[~is_upper]), strict=True))
    if "vt" in data:
        u = np.linspace(*TEETH_U, n)
        steps = np.linspace(*TEETH_V, TEETH_V_STEPS)[list(TEETH_ROW_V)]
        uvs = np.stack(np.meshgrid(u, steps, indexing="xy"), axis=-1).reshape(-1, 2)  # row by row
        data["ft"] = np.concatenate([data["ft"], len(data["vt"]) + faces])
        data["vt"] = np.concatenate([data["vt"], uvs])
    return model.rebuilt(data)


def teeth_faces(n: int) -> np.ndarray:
    """The teeth's faces ``[12 (n - 1), 3]`` over their ``8 n`` vertices (rows of :data:`TEETH_ROWS`), in VHAP's
    order and corner order: the strips of :data:`TEETH_STRIPS`, column by column, two triangles a quad."""
    row = {name: k * n + np.arange(n) for k, name in enumerate(TEETH_ROWS)}
    middle = n // 2
    out = []
    for p_name, q_name, left, flipped in TEETH_STRIPS:
        p, q = row[p_name], row[q_name]
        for i in range(n - 1):
            side = left if i < middle else ("qp" if left == "pq" else "pq")
            if side == "pq":
                pair = [(p[i], q[i + 1], q[i]), (p[i], p[i + 1], q[i + 1])]
            else:
                pair = [(p[i], p[i + 1], q[i]), (p[i + 1], q[i + 1], q[i])]
            out += [(a, c, b) if flipped else (a, b, c) for a, b, c in pair]
    return np.array(out, dtype=np.int64)


def has_flame_teeth(model: ParametricModel) -> bool:
    """Whether ``model`` ends in the teeth :func:`add_teeth` gives FLAME (15 columns: 120 vertices and 168 faces
    last), as GaussianAvatars' FLAME does."""
    columns = len(FLAME_UPPER_LIP)
    faces, v = teeth_faces(columns), model.num_vertices - FLAME_TEETH_VERTICES
    if v <= 0 or model.faces.shape[0] < len(faces):
        return False
    return bool(torch.equal(model.faces[-len(faces) :].cpu(), torch.from_numpy(faces + v)))


def _lip_rings(model: ParametricModel, upper_lip, lower_lip) -> tuple[np.ndarray, np.ndarray]:
    """The outer lip rings' ids: the arguments checked, or VHAP's rings of FLAME."""
    if upper_lip is None and lower_lip is None:
        if model.model_type != "flame" or model.num_vertices != FLAME_VERTICES:
            raise ValueError(
                f"upper_lip: expected the outer lip rings (upper_lip, lower_lip) for a model other than FLAME's "
                f"{FLAME_VERTICES:,} vertices, got none ({model.spec.name}, {model.num_vertices:,} vertices)"
            )
        return np.array(FLAME_UPPER_LIP), np.array(FLAME_LOWER_LIP)
    rings = []
    for name, ring in (("upper_lip", upper_lip), ("lower_lip", lower_lip)):
        if ring is None:
            raise ValueError(f"{name}: expected vertex ids with the other lip ring's, got None")
        try:
            ids = ring.cpu() if isinstance(ring, Tensor) else torch.as_tensor(ring)
        except (TypeError, ValueError, RuntimeError) as error:
            raise TypeError(f"{name}: expected vertex ids (integers), got {ring!r}") from error
        check_int(name, ids, [None], upper=model.num_vertices)
        if len(ids) < 2:
            raise ValueError(f"{name}: expected at least 2 vertex ids, got {len(ids)}")
        rings.append(ids.long().numpy())
    if len(rings[0]) != len(rings[1]):
        raise ValueError(f"lower_lip: expected {len(rings[0])} vertex ids (one under each of upper_lip's), got {len(rings[1])}")
    return rings[0], rings[1]
