"""A mouth cavity for FLAME (and SMPL-X), whose mouth is an open boundary loop of the inner lips.

MonoAvatar (Bai et al. 2023) anchors features on the mesh's vertices, so an open mouth needs vertices
inside it. :func:`add_mouth_interior` closes the inner lip loop with a pouch: rings of vertices interpolated
from the loop towards a back centre, closed by a fan. Every new vertex is a fixed affine combination of
old ones (a matrix ``W [V_new, V_old]``, rows summing to 1), so the template, blend shapes, pose correctives,
skinning weights and static offsets all extend by ``W`` and the pouch follows shape, expression and jaw like the lips do.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence

import numpy as np
import torch
from jaxtyping import Int
from torch import Tensor

from ..checks import check_count, check_int, check_positive
from ..geometry import closest_point_on_triangle, face_adjacency
from .model import ParametricModel

# Depth of the back centre behind the lip loop's centroid, in metres (FLAME's unit). An adult dental arch is
# about 4-5 cm deep from the incisors to the last molars; 3 cm puts the back wall within it, deep enough to
# look dark through an open mouth and in front of the jaw joint, by the ear (checked: depth must stay short of it).
MOUTH_DEPTH = 0.03
# Rings between the loop and the back centre: 7.5 mm apart at the default depth, about the spacing of
# FLAME's vertices around the mouth, so the pouch is as dense as the lips that anchor features next to it.
MOUTH_RINGS = 3
UV_DISC_RADIUS = 0.05  # the cavity's UV disc: at most this radius (a tenth of the UV square) ...
UV_MIN_RADIUS = 0.005  # ... and at least this (about a texel of a 256 x 256 UV map, MonoAvatar's size)


def add_mouth_interior(
    model: ParametricModel,
    lip_loop: Int[Tensor, " L"] | Sequence[int] | None = None,
    depth: float = MOUTH_DEPTH,
    rings: int = MOUTH_RINGS,
    region: str = "mouth_interior",
) -> ParametricModel:
    """A new model whose inner lip loop is closed by a mouth cavity; the old model is unchanged.

    ``lip_loop``: the inner lip boundary loop's vertex ids in order (either direction); None finds it: the
    boundary loop with the most vertices in the ``"lips"`` region (at least half) if the model has one,
    else, for real FLAME (boundary loops: neck, mouth, eyes), among the loops straddling the symmetry plane
    (centroid |x| under a quarter of the loop's width) with their centroid in front of the jaw joint, and
    without the longest (the neck) if more than one, the most frontal (largest mean z; FLAME looks along +z).

    Geometry: the back centre ``b`` lies on the segment from the loop's centroid ``c`` to the jaw joint,
    ``depth`` metres behind ``c`` (in z, on the template), so it is an affine combination of vertices (the
    jaw joint is a row of ``J_regressor``) and moves part way with the jaw. Ring ``k = 1..rings`` is
    ``(1 - t) p_i + t b`` with ``t = k / (rings + 1)``: the loop shrunk towards ``b``. New vertices follow
    the old ones: ring 1 .. ring ``rings`` (each in ``lip_loop``'s order), then ``b``; they form ``region``.
    New faces come after the old ones (landmarks keep their faces), wound like the lips across the loop, so
    the cavity's normals face into the mouth. UVs: a disc in the corner of UV space farthest from every UV
    triangle (loop on the rim, with its own UV vertices, ``b`` at the centre, arc-length spacing), wound
    like most old UV triangles.
    """
    if not isinstance(depth, numbers.Real) or not math.isfinite(depth):
        raise TypeError(f"depth: expected a finite number of metres, got {depth!r}")
    check_positive("depth", depth)
    rings = check_count("rings", rings, 0)
    if not isinstance(region, str) or not region:
        raise TypeError(f"region: expected a non-empty region name, got {region!r}")
    if region in model.region_names:
        raise ValueError(f"region: expected a new region name, got {region!r}, which the model already has")

    faces, template = model.faces.cpu(), model.v_template.detach().cpu().double()
    v_old = len(template)
    loop, along = _lip_loop(model, faces, template, lip_loop)
    weights = _cavity_weights(model, template, loop, float(depth), rings)
    n_loop, n_new = len(loop), len(weights)
    ring_ids = torch.cat([loop[None], v_old + torch.arange(rings * n_loop).view(rings, n_loop)])
    new_faces = _pouch_faces(ring_ids, v_old + n_new - 1, along)

    def extend(x: Tensor) -> np.ndarray:  # per-vertex rows [V_old, ...] -> [V_old + V_new, ...]
        x = x.detach().cpu().double()
        return torch.cat([x, (weights @ x.reshape(v_old, -1)).view(n_new, *x.shape[1:])]).numpy()

    data = model.official_arrays()
    for key in ("v_template", "shapedirs", "posedirs", "weights", "static_offset"):  # per-vertex rows
        if key in data:
            data[key] = extend(torch.from_numpy(data[key]))
    data["f"] = np.concatenate([data["f"], new_faces.numpy()])
    data["J_regressor"] = np.pad(data["J_regressor"], ((0, 0), (0, n_new)))
    data["regions"][region] = np.arange(v_old, v_old + n_new)
    if model.uvs is not None:
        uvs, uv_faces = model.uvs.detach().cpu().double(), model.uv_faces.cpu()
        disc = _uv_disc(uvs, uv_faces, template[loop], rings)
        uv_ring_ids = len(uvs) + torch.arange((rings + 1) * n_loop).view(rings + 1, n_loop)
        new_uv_faces = _pouch_faces(uv_ring_ids, len(uvs) + len(disc) - 1, along)
        if _uv_winding(disc, new_uv_faces - len(uvs)) * _uv_winding(uvs, uv_faces) < 0:
            disc[:, 0] = 2.0 * disc[-1, 0] - disc[:, 0]  # mirror about the centre: wind like the old charts
        data["vt"] = torch.cat([uvs, disc]).numpy()
        data["ft"] = torch.cat([uv_faces, new_uv_faces]).numpy()
    return model.rebuilt(data)


def _boundary_loops(faces: Tensor) -> list[Tensor]:
    """The mesh's boundary loops (edges used by one face, chained), each in the direction its faces run."""
    adjacency = face_adjacency(faces)
    open_edge = adjacency < 0
    successor = dict(zip(faces[open_edge].tolist(), faces.roll(-1, dims=1)[open_edge].tolist(), strict=True))
    if len(successor) < int(open_edge.sum()):
        raise ValueError("model: expected boundary loops that do not touch; a vertex starts two boundary edges")
    loops, seen = [], set()
    for start in successor:
        if start in seen:
            continue
        loop = [start]
        while (nxt := successor.get(loop[-1])) != start:
            if nxt is None or nxt in seen or len(loop) > len(successor):
                raise ValueError(f"model: expected boundary loops that do not touch; one breaks at vertex {loop[-1]}")
            loop.append(nxt)
        seen.update(loop)
        loops.append(torch.tensor(loop))
    return loops


def _lip_loop(model: ParametricModel, faces: Tensor, template: Tensor, lip_loop) -> tuple[Tensor, bool]:
    """The lip loop's ids and whether they run the way the lip faces run along them."""
    loops = _boundary_loops(faces)
    if lip_loop is None:
        return _find_lip_loop(model, loops, template), True
    try:
        given = lip_loop.cpu() if isinstance(lip_loop, Tensor) else torch.as_tensor(lip_loop)
    except (TypeError, ValueError, RuntimeError) as error:
        raise TypeError(f"lip_loop: expected vertex ids (integers), got {lip_loop!r}") from error
    check_int("lip_loop", given, [None], upper=len(template))
    ids = given.long().tolist()
    if len(ids) < 3 or len(set(ids)) != len(ids):
        raise ValueError(f"lip_loop: expected at least 3 distinct vertex ids, got {len(ids)} ids ({len(set(ids))} distinct)")
    half_edges = {(a, b) for loop in loops for a, b in zip(loop.tolist(), loop.roll(-1).tolist(), strict=True)}
    pairs = list(zip(ids, ids[1:] + ids[:1], strict=True))
    for along in (True, False):
        bad = [p for p in pairs if (p if along else p[::-1]) not in half_edges]
        if not bad:
            return torch.tensor(ids), along
    raise ValueError(f"lip_loop: expected the ordered ids of a boundary loop; edge {tuple(bad[0])} is not a boundary edge")


def _find_lip_loop(model: ParametricModel, loops: list[Tensor], template: Tensor) -> Tensor:
    """The inner lip loop: by the "lips" region if there is one, else by where it is (see add_mouth_interior)."""
    if "lips" in model.region_names:
        lips = torch.zeros(len(template), dtype=torch.bool)
        lips[model.regions["lips"].cpu()] = True
        share = [float(lips[loop].double().mean()) for loop in loops]
        if not loops or max(share) < 0.5:
            raise ValueError("lip_loop: no boundary loop lies in the model's 'lips' region; pass lip_loop")
        return loops[int(np.argmax(share))]
    points = [template[loop] for loop in loops]
    jaw_z = float(_jaw_row(model) @ template[:, 2])
    candidates = [
        i
        for i, p in enumerate(points)
        if p[:, 0].mean().abs() < 0.25 * (p[:, 0].max() - p[:, 0].min()) and p[:, 2].mean() > jaw_z
    ]
    if len(candidates) > 1:  # drop the longest: the neck
        length = [float((points[i] - points[i].roll(-1, 0)).norm(dim=-1).sum()) for i in candidates]
        candidates.pop(int(np.argmax(length)))
    if not candidates:
        raise ValueError("lip_loop: no boundary loop straddles x = 0 in front of the jaw joint besides the neck; pass lip_loop")
    return loops[max(candidates, key=lambda i: float(points[i][:, 2].mean()))]


def _jaw_row(model: ParametricModel) -> Tensor:
    """The jaw joint as an affine combination of vertices: its J_regressor row, normalised to sum to 1."""
    jaw = model.J_regressor[model.joint_names.index("jaw")].detach().cpu().double()
    if abs(float(jaw.sum())) < 1e-6:
        raise ValueError("model: expected a jaw row of J_regressor that sums to 1, got one that sums to 0")
    return jaw / jaw.sum()


def _cavity_weights(model: ParametricModel, template: Tensor, loop: Tensor, depth: float, rings: int) -> Tensor:
    """W [rings * L + 1, V]: ring rows (loop order, ring 1 first), then the back centre's row."""
    jaw = _jaw_row(model)
    centroid = template.new_zeros(len(template)).index_fill_(0, loop, 1.0 / len(loop))
    gap = float((centroid - jaw) @ template[:, 2])  # how far the jaw joint is behind the loop's centroid
    if gap <= depth:
        raise ValueError(f"depth: expected less than the jaw joint's distance behind the lip loop ({gap:.4g} m), got {depth}")
    back = centroid + (depth / gap) * (jaw - centroid)
    t = torch.arange(1, rings + 1, dtype=torch.float64) / (rings + 1)
    lip = template.new_zeros(len(loop), len(template)).index_put_((torch.arange(len(loop)), loop), template.new_ones(()))
    ring_rows = (1.0 - t)[:, None, None] * lip + t[:, None, None] * back
    return torch.cat([ring_rows.reshape(-1, len(template)), back[None]])


def _pouch_faces(ring_ids: Int[Tensor, "R L"], centre: int, along: bool) -> Tensor:
    """Strips between consecutive rings (ring 0: the loop), then a fan to ``centre``; each strip reverses
    the ring edges of the faces before it, so shared edges run opposite ways (consistent orientation)."""
    a, b = ring_ids[:-1], ring_ids[1:]
    a1, b1 = a.roll(-1, dims=1), b.roll(-1, dims=1)
    strips = torch.stack([torch.stack([a1, a, b], -1), torch.stack([a1, b, b1], -1)], dim=2).reshape(-1, 3)
    last = ring_ids[-1]
    fan = torch.stack([last.roll(-1), last, torch.full_like(last, centre)], -1)
    out = torch.cat([strips, fan])
    return out if along else out[:, [0, 2, 1]]


def _uv_winding(uvs: Tensor, uv_faces: Tensor) -> float:
    """Sum of the signs of the UV triangles' areas: > 0 when most wind counter-clockwise."""
    a, b, c = uvs[uv_faces].unbind(1)
    cross = (b - a)[:, 0] * (c - a)[:, 1] - (b - a)[:, 1] * (c - a)[:, 0]
    return float(torch.sign(cross).sum())


def _uv_disc(uvs: Tensor, uv_faces: Tensor, loop_points: Tensor, rings: int) -> Tensor:
    """UVs of the cavity: rings 0 (the loop) .. ``rings`` on concentric circles, then the centre."""
    corners = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0]], dtype=torch.float64)
    clearance = _distance_to_triangles(corners, uvs[uv_faces])
    best = int(clearance.argmax())
    radius = min(UV_DISC_RADIUS, 0.9 * float(clearance[best]) / (1.0 + math.sqrt(2.0)))  # disc within the clearance
    if radius < UV_MIN_RADIUS:
        raise ValueError(f"model: expected a free corner in UV space for the mouth cavity, the clearest is {clearance.max():.3g}")
    centre = corners[best] + radius * (1.0 - 2.0 * corners[best])  # inset along the diagonal
    step = (loop_points - loop_points.roll(-1, 0)).norm(dim=-1)
    angle = 2.0 * math.pi * torch.cat([step.new_zeros(1), step.cumsum(0)[:-1]]) / step.sum()
    scale = radius * (1.0 - torch.arange(rings + 1, dtype=torch.float64) / (rings + 1))
    rim = torch.stack([angle.cos(), angle.sin()], -1)
    return torch.cat([(centre + scale[:, None, None] * rim).reshape(-1, 2), centre[None]])


def _distance_to_triangles(points: Tensor, triangles: Tensor) -> Tensor:
    """Distance from each 2D point [P, 2] to the nearest of the triangles [F, 3, 2] (0 inside one): the
    geometry package's closest point on a triangle, on the UV plane lifted to z = 0."""
    p, f = len(points), len(triangles)
    lifted = torch.nn.functional.pad(triangles, (0, 1)).repeat(p, 1, 1)  # [P * F, 3, 3]
    queries = torch.nn.functional.pad(points, (0, 1)).repeat_interleave(f, dim=0)  # [P * F, 3]
    closest, _ = closest_point_on_triangle(queries, *lifted.unbind(1))
    return (closest - queries).norm(dim=-1).reshape(p, f).amin(-1)
