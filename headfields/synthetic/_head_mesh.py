"""Geometry of the synthetic parametric models: a FLAME-size head with a mouth that can open and two eyeballs,
and (for SMPL-X) a bust under it, with UV charts and region labels.

The head is a latitude-longitude grid deformed into a skull, a lower face and a neck, with bumps for the nose,
brows, lips and chin. The grid is cut along the mouth row between the mouth corners (upper- and lower-lip edge
vertices are separate, the corners shared), and a pocket joins the two edges behind the lips, so an open jaw
shows the pocket, not a hole. Coordinates: metres, y up, the face looks along +z, x towards the subject's left.
Everything is deterministic numpy float64; the seed only enters the blend-shape fields (``model_files.py``).

One file over 500 lines because it is one surface: the grid, the mouth cut and pocket, the eyes and the bust share
the grid's indices and seams, and a split would pass those indices between modules.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

# --- head dimensions (metres), FLAME-size; the origin is the head's centre at eye level ---
CRANIUM_HEIGHT = 0.115  # eye level (the skull ellipsoid's equator, y = 0) to the top of the skull
HEAD_HALF_WIDTH = 0.075  # half the skull's width (x)
HEAD_HALF_DEPTH = 0.095  # half the skull's front-to-back length (z)
FACE_DROP = 0.125  # eye level to the underside of the chin, at the front
OCCIPUT_DROP = 0.075  # eye level to where the neck leaves the back of the skull
JAW_TAPER = 0.25  # the jaw line is this fraction narrower than the skull
FRONT_JAW_EXPONENT = 4.0  # superellipse exponent of the lower face's profile at the front: a square chin
BACK_JAW_EXPONENT = 2.0  # ... and at the back: a round occiput
NECK_RADIUS = 0.054
NECK_CENTRE_Z = -0.015  # the neck sits behind the head's centre
NECK_BOTTOM_Y = -0.19

# --- grid resolution: about FLAME's 5023 vertices in all ---
HEAD_COLUMNS = 80  # azimuth samples; a multiple of 4, so the front, back and both sides are columns
FRONT_DENSITY = 0.55  # column spacing is (1 - this) x the mean at the face and (1 + this) x at the back
CRANIUM_ROWS = 22
LOWER_HEAD_ROWS = 30
NECK_ROWS = 10
LOWER_ROW_CROWDING = 1.5  # lower-face rows crowd towards the chin's underside, where the profile turns fast

# --- face features: Gaussian bumps (amplitude, x, y, sigma_x, sigma_y) pushed out along the surface normal ---
MOUTH_Y_TARGET = -0.066  # the mouth row is the grid row nearest this height
MOUTH_HALF_WIDTH = 0.025  # mouth corners at x = +-this
EYE_X, EYE_Y = 0.032, 0.002  # eyeball centres at (+-EYE_X, EYE_Y) in front view
FACE_BUMPS = (
    (0.020, 0.0, -0.032, 0.009, 0.013),  # nose tip
    (0.010, 0.0, -0.008, 0.006, 0.018),  # nose bridge
    (0.006, 0.030, 0.022, 0.020, 0.008),  # left brow ridge (mirrored for the right)
    (-0.008, EYE_X, EYE_Y, 0.011, 0.009),  # left eye socket (mirrored)
    (0.006, 0.045, -0.035, 0.020, 0.020),  # left cheek (mirrored)
    (0.007, 0.0, MOUTH_Y_TARGET, 0.022, 0.010),  # lips
    (0.010, 0.0, -0.105, 0.018, 0.014),  # chin
)

# --- mouth pocket: per column, points (depth behind the lip edge, height above the mouth line, region) from
# the lip edge round to the back, for each half. The upper teeth hang below the mouth line in front of the
# lower teeth, so an open mouth shows teeth and a dark cavity; at rest the halves don't cross. ---
POCKET_UPPER = (
    (0.003, 0.001, "lips"),  # inner upper lip
    (0.005, -0.0025, "teeth"),  # upper incisors, front face
    (0.0065, -0.0035, "teeth"),  # biting edge
    (0.009, 0.002, "teeth"),  # back face
    (0.016, 0.010, "mouth_interior"),  # palate
    (0.026, 0.012, "mouth_interior"),
    (0.035, 0.006, "mouth_interior"),
)
POCKET_LOWER = (
    (0.003, -0.002, "lips"),  # inner lower lip
    (0.006, -0.005, "mouth_interior"),  # under the upper teeth
    (0.0095, -0.003, "teeth"),  # lower incisors, front face
    (0.0105, 0.0015, "teeth"),  # biting edge
    (0.013, -0.004, "teeth"),  # back face
    (0.022, -0.010, "mouth_interior"),  # tongue
    (0.034, -0.007, "mouth_interior"),
)
# The lips part by this much at rest (at the centre, closing towards the corners): touching lips would put
# upper- and lower-lip vertices at one position, and skinning a point there by its nearest triangle could
# take either lip's weights (the jaw's or the head's).
LIP_GAP = 0.001
POCKET_BACK_DEPTH = 0.039  # the deepest point, on the mouth line, shared by both halves
POCKET_CORNER_SCALE = 0.35  # the pocket shrinks to this fraction of its size at the mouth corners

# --- eyes ---
EYE_RADIUS = 0.0125
EYE_INSET = 0.006  # eyeball centre this far behind the face surface: the front cap shows, the rest is inside
EYE_ROWS, EYE_COLUMNS = 10, 16

# --- regions ---
REGION_NAMES = ("skin", "lips", "teeth", "mouth_interior", "eyes", "hair", "neck")
SKIN, LIPS, TEETH, MOUTH_INTERIOR, EYES, HAIR, NECK = range(7)
HAIRLINE_FRONT_Y = 0.062  # forehead hairline height
HAIRLINE_BACK_Y = -0.055  # nape hairline height
LIPS_HALF_WIDTH = 0.031  # the lips band: an ellipse around the mouth line in front view
LIPS_HALF_HEIGHT = 0.012

# --- UV atlas rectangles (u0, v0, u1, v1) ---
HEAD_CHART = (0.0, 0.0, 0.74, 1.0)
POCKET_CHART = (0.77, 0.02, 0.99, 0.30)
EYE_CHARTS = ((0.77, 0.36, 0.99, 0.64), (0.77, 0.70, 0.99, 0.98))

# Vertex parts
SURFACE, POCKET, LEFT_EYE, RIGHT_EYE = range(4)


@dataclass
class HeadMesh:
    """The head and what the rig needs to know about each vertex (arrays over vertices unless noted)."""

    vertices: np.ndarray  # [V, 3]
    faces: np.ndarray  # [F, 3]
    vt: np.ndarray  # [T, 2]
    ft: np.ndarray  # [F, 3]
    region: np.ndarray  # [V] index into REGION_NAMES
    part: np.ndarray  # [V] SURFACE, POCKET, LEFT_EYE, RIGHT_EYE
    descent: np.ndarray  # [V] down the profile: (-1, 0] skull, (0, 1] lower face (u), (1, 2] neck; pocket: mouth row's
    azimuth: np.ndarray  # [V] column azimuth (0 at the front, +pi/2 at the subject's left); 0 on the eyes
    rows_below_mouth: np.ndarray  # [V] grid rows below the mouth cut (lower-lip edge and lower pocket: 1), else 0
    anchor: np.ndarray  # [V] the vertex whose position drives this one's blend shapes (pocket: its lip edge)
    anchor_gain: np.ndarray  # [V] blend shapes are scaled by this (fading into the pocket)
    side: np.ndarray  # [V] +1 upper lip side, -1 lower lip side of the mouth cut, 0 elsewhere
    upper_lip: np.ndarray  # [n] upper-lip edge vertices, right to left, corners included
    lower_lip: np.ndarray  # [n] lower-lip edge vertices (the same corners)
    mouth_corner_azimuth: float
    eye_vertices: tuple[np.ndarray, np.ndarray]  # left (+x), right
    eye_centres: np.ndarray  # [2, 3]
    neck_top_ring: np.ndarray  # grid ring where the lower face meets the neck
    neck_bottom_ring: np.ndarray
    jaw_hinge: np.ndarray  # symmetric vertex set whose average is the jaw hinge
    surface_faces: np.ndarray  # [F] bool: faces of the head surface grid (not pocket, not eyes)


def smoothstep(edge0: float, edge1: float, x: np.ndarray) -> np.ndarray:
    """0 below edge0, 1 beyond edge1, a C1 ramp in between (edge0 > edge1 gives the falling ramp)."""
    t = np.clip((np.asarray(x, dtype=np.float64) - edge0) / (edge1 - edge0), 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def column_azimuths(n: int, front_density: float) -> np.ndarray:
    """Azimuths of ``n`` columns from the back (-pi) round through the front (0); denser at the front, and
    column ``n - j`` mirrors column ``j`` (x -> -x)."""
    t = -np.pi + 2.0 * np.pi * np.arange(n) / n
    return t - front_density * np.sin(t)


def grid_faces(n_rows: int, n_cols: int, top_pole: int | None, bottom_pole: int | None, index) -> list[np.ndarray]:
    """Triangles of a wrapped grid, outward when rows run down and columns run towards +x at the front.
    ``index(r, j)`` gives vertex ids (arrays); poles, if given, close the first / last row with fans."""
    j = np.arange(n_cols)
    out = []
    if top_pole is not None:
        out.append(np.stack([np.full(n_cols, top_pole), index(0, j), index(0, j + 1)], axis=1))
    for r in range(n_rows - 1):
        out += _quads(index(r, j), index(r, j + 1), index(r + 1, j), index(r + 1, j + 1))
    if bottom_pole is not None:
        last = n_rows - 1
        out.append(np.stack([index(last, j), np.full(n_cols, bottom_pole), index(last, j + 1)], axis=1))
    return out


def _quads(a, b, c, d) -> list[np.ndarray]:
    """Two triangles per quad (a, b on the upper row, c, d below; b and d towards +x)."""
    return [np.stack([a, c, b], axis=-1).reshape(-1, 3), np.stack([b, c, d], axis=-1).reshape(-1, 3)]


def grid_uv(n_rows: int, n_cols: int, rect, poles: tuple[bool, bool]) -> tuple[np.ndarray, Callable, int | None, int | None]:
    """UV vertices for a wrapped grid inside ``rect``: (n_cols + 1) per row (a seam column), plus one per column
    for each pole. Returns vt, the UV index function and the first index of each pole's fan UVs."""
    u0, v0, u1, v1 = rect
    rows_total = n_rows + poles[0] + poles[1]
    row_v = lambda r: v1 - (v1 - v0) * (r + poles[0]) / max(rows_total - 1, 1)  # noqa: E731
    uu, rr = np.meshgrid(np.arange(n_cols + 1), np.arange(n_rows))
    vt = [np.stack([u0 + (u1 - u0) * uu / n_cols, row_v(rr)], axis=-1).reshape(-1, 2)]
    fan_u = u0 + (u1 - u0) * (np.arange(n_cols) + 0.5) / n_cols
    top = bottom = None
    if poles[0]:
        top = len(vt[0])
        vt.append(np.stack([fan_u, np.full(n_cols, v1)], axis=1))
    if poles[1]:
        bottom = len(vt[0]) + (n_cols if poles[0] else 0)
        vt.append(np.stack([fan_u, np.full(n_cols, v0)], axis=1))
    return np.concatenate(vt), (lambda r, j: r * (n_cols + 1) + j), top, bottom


def grid_ft(n_rows: int, n_cols: int, uv_index, top: int | None, bottom: int | None) -> list[np.ndarray]:
    """UV triangles matching :func:`grid_faces` (the seam column is ``n_cols``, not 0)."""
    j = np.arange(n_cols)
    fans = np.arange(n_cols)
    out = []
    if top is not None:
        out.append(np.stack([top + fans, uv_index(0, j), uv_index(0, j + 1)], axis=1))
    for r in range(n_rows - 1):
        out += _quads(uv_index(r, j), uv_index(r, j + 1), uv_index(r + 1, j), uv_index(r + 1, j + 1))
    if bottom is not None:
        last = n_rows - 1
        out.append(np.stack([uv_index(last, j), bottom + fans, uv_index(last, j + 1)], axis=1))
    return out


# ----------------------------------------------------------------------------------------------------------
# Head surface


def _row_profile() -> tuple[np.ndarray, np.ndarray]:
    """Per grid row: section (0 skull, 1 lower face, 2 neck) and its parameter in (0, 1]."""
    w = np.arange(1, CRANIUM_ROWS + 1) / CRANIUM_ROWS
    theta_frac = 0.5 * w + 0.5 * np.sin(0.5 * np.pi * w)  # rows crowd towards eye level
    w = np.arange(1, LOWER_HEAD_ROWS + 1) / LOWER_HEAD_ROWS
    u = 1.0 - (1.0 - w) ** LOWER_ROW_CROWDING
    v = np.arange(1, NECK_ROWS + 1) / NECK_ROWS
    section = np.concatenate([np.zeros(CRANIUM_ROWS), np.ones(LOWER_HEAD_ROWS), np.full(NECK_ROWS, 2)]).astype(int)
    return section, np.concatenate([theta_frac, u, v])


def _front_weight(phi: np.ndarray) -> np.ndarray:
    return ((1.0 + np.cos(phi)) / 2.0) ** 2


def _rings(section: np.ndarray, param: np.ndarray, phi: np.ndarray):
    """Elliptic rings [R, C]: base height y, half-axes (ax, az) and centre z for each row and column."""
    s, p = section[:, None], param[:, None] + 0.0 * phi[None]
    front = _front_weight(phi)[None]
    drop = OCCIPUT_DROP + (FACE_DROP - OCCIPUT_DROP) * front
    theta = 0.5 * np.pi * p
    # skull: the upper half of an ellipsoid
    y = np.where(s == 0, CRANIUM_HEIGHT * np.cos(theta), 0.0)
    ax = np.where(s == 0, HEAD_HALF_WIDTH * np.sin(theta), 0.0)
    az = np.where(s == 0, HEAD_HALF_DEPTH * np.sin(theta), 0.0)
    cz = np.zeros_like(y)
    # lower face: a superellipse profile from the skull's equator in to the neck
    q = BACK_JAW_EXPONENT + (FRONT_JAW_EXPONENT - BACK_JAW_EXPONENT) * front
    r = np.clip(1.0 - np.clip(p, 0, 1) ** q, 0.0, 1.0) ** (1.0 / q)
    lower = s == 1
    y = np.where(lower, -drop * p, y)
    ax = np.where(lower, NECK_RADIUS + (HEAD_HALF_WIDTH * (1.0 - JAW_TAPER * p) - NECK_RADIUS) * r, ax)
    az = np.where(lower, NECK_RADIUS + (HEAD_HALF_DEPTH - NECK_RADIUS) * r, az)
    cz = np.where(lower, NECK_CENTRE_Z * (1.0 - r), cz)
    # neck: a cylinder from the lower face's last ring down
    neck = s == 2
    y = np.where(neck, -drop + (NECK_BOTTOM_Y + drop) * p, y)
    ax = np.where(neck, NECK_RADIUS, ax)
    az = np.where(neck, NECK_RADIUS, az)
    cz = np.where(neck, NECK_CENTRE_Z, cz)
    return y, ax, az, cz


def _face_relief(x: np.ndarray, y: np.ndarray, phi: np.ndarray) -> np.ndarray:
    """Outward displacement (metres) of the face features at base position (x, y), on the front only."""
    d = np.zeros_like(x)
    for amp, x0, y0, sx, sy in FACE_BUMPS:
        for xc in {x0, -x0}:  # mirrored features; a set, so centred ones count once
            d += amp * np.exp(-0.5 * (((x - xc) / sx) ** 2 + ((y - y0) / sy) ** 2))
    return d * np.clip(np.cos(phi), 0.0, 1.0) ** 2


def _head_grid():
    """Grid positions [R, C, 3], the row profile and the column azimuths."""
    section, param = _row_profile()
    phi = column_azimuths(HEAD_COLUMNS, FRONT_DENSITY)
    y, ax, az, cz = _rings(section, param, phi)
    sin, cos = np.sin(phi)[None], np.cos(phi)[None]
    x, z = ax * sin, cz + az * cos
    normal = np.stack([sin / np.maximum(ax, 1e-9), 0.0 * x, cos / np.maximum(az, 1e-9)], axis=-1)
    normal /= np.linalg.norm(normal, axis=-1, keepdims=True)
    points = np.stack([x, y, z], axis=-1) + _face_relief(x, y, phi)[..., None] * normal
    descent = np.where(section == 0, param - 1.0, np.where(section == 1, param, 1.0 + param))
    return points, descent, phi


def _mouth_row() -> int:
    """Index of the grid row through the mouth (a lower-face row)."""
    u = MOUTH_Y_TARGET / -FACE_DROP
    w = 1.0 - (1.0 - u) ** (1.0 / LOWER_ROW_CROWDING)
    return CRANIUM_ROWS + int(round(w * LOWER_HEAD_ROWS)) - 1


def _mouth_corners(grid: np.ndarray, mouth_row: int) -> tuple[int, int]:
    """Columns of the right (-x) and left (+x) mouth corners: nearest x = -+MOUTH_HALF_WIDTH on the front."""
    half = HEAD_COLUMNS // 2
    x = grid[mouth_row, half:, 0]
    left = half + int(np.argmin(np.abs(x - MOUTH_HALF_WIDTH)))
    return HEAD_COLUMNS - left, left


def _pocket_table() -> tuple[np.ndarray, list[str]]:
    """Pocket points of one column in strip order (upper half, back, lower half reversed): [2K + 1, 2] (depth,
    height) and their region names."""
    back = [(POCKET_BACK_DEPTH, 0.0, "mouth_interior")]
    table = list(POCKET_UPPER) + back + list(POCKET_LOWER[::-1])
    return np.array([t[:2] for t in table]), [t[2] for t in table]


def _pocket_profile(lip: np.ndarray, scale: float) -> np.ndarray:
    """The pocket's points behind one upper-lip edge vertex, smaller by ``scale`` towards the corners."""
    table, _ = _pocket_table()
    offset = np.stack([0.0 * table[:, 0], scale * table[:, 1], -(0.5 + 0.5 * scale) * table[:, 0]], axis=1)
    return lip + offset


def _eyeball(centre: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
    """A latitude-longitude sphere with its front pole (+z) first and back pole last; faces from 0."""
    theta = np.pi * np.arange(1, EYE_ROWS + 1) / (EYE_ROWS + 1)
    psi = 2.0 * np.pi * np.arange(EYE_COLUMNS) / EYE_COLUMNS
    th, ps = np.meshgrid(theta, psi, indexing="ij")
    ring = np.stack([np.sin(th) * np.cos(ps), np.sin(th) * np.sin(ps), np.cos(th)], axis=-1).reshape(-1, 3)
    unit = np.concatenate([[[0.0, 0.0, 1.0]], ring, [[0.0, 0.0, -1.0]]])
    back = 1 + EYE_ROWS * EYE_COLUMNS
    faces = grid_faces(EYE_ROWS, EYE_COLUMNS, 0, back, lambda r, j: 1 + r * EYE_COLUMNS + j % EYE_COLUMNS)
    return centre + EYE_RADIUS * unit, faces


def _surface_z(points: np.ndarray, x: float, y: float) -> float:
    """Height (z) of the front face surface at (x, y): inverse-distance blend of the 4 nearest front vertices."""
    front = points[points[:, 2] > 0]
    d = np.hypot(front[:, 0] - x, front[:, 1] - y)
    near = np.argsort(d)[:4]
    w = 1.0 / (d[near] + 1e-6)
    return float((front[near, 2] * w).sum() / w.sum())


def _jaw_hinge_ids(grid: np.ndarray, grid_id) -> np.ndarray:
    """Two rows by two columns of grid vertices below the ear on each side, mirrored: their mean is on x = 0."""
    hinge_y, hinge_z = -0.04, 0.01  # below and in front of the ears (the jaw's condyles)
    half = HEAD_COLUMNS // 2
    side = grid[:, half + 1 :, :]  # +x half, front column excluded
    d = (side[..., 1] - hinge_y) ** 2 + (side[..., 2] - hinge_z) ** 2
    r, c = np.unravel_index(np.argmin(d), d.shape)
    cols = np.array([half + 1 + c, half + 2 + c])
    rows = np.array([r, r + 1])
    rr, cc = np.meshgrid(rows, np.concatenate([cols, HEAD_COLUMNS - cols]), indexing="ij")
    return grid_id(rr, cc).reshape(-1)


def build_head() -> HeadMesh:
    """The synthetic FLAME head: surface grid (with the mouth cut), mouth pocket, left and right eyeballs."""
    grid, grid_descent, phi = _head_grid()
    n_rows, n_cols = grid.shape[:2]
    mouth_row = _mouth_row()
    right_corner, left_corner = _mouth_corners(grid, mouth_row)
    inner = np.arange(right_corner + 1, left_corner)  # interior mouth columns: lips cut, pocket behind
    n_in, n_prof = len(inner), len(POCKET_UPPER) + 1 + len(POCKET_LOWER)  # pocket points per column, lip edges excluded

    def grid_id(r, j):
        return 1 + np.asarray(r) * n_cols + np.asarray(j) % n_cols

    n_grid = 1 + n_rows * n_cols
    dup = n_grid + np.arange(n_in)  # lower-lip edge vertices
    pocket = n_grid + n_in + np.arange(n_in * n_prof).reshape(n_in, n_prof)
    eye_start = n_grid + n_in * (1 + n_prof)

    # positions: pole, grid, lower-lip edge copies (LIP_GAP below the upper lip at rest), pocket, eyes
    pole = np.array([[0.0, CRANIUM_HEIGHT, 0.0]])
    flat = grid.reshape(-1, 3)
    upper_edge = grid[mouth_row, inner]
    corner_t = np.abs(grid[mouth_row, inner, 0]) / MOUTH_HALF_WIDTH
    scale = 1.0 - (1.0 - POCKET_CORNER_SCALE) * np.clip(corner_t, 0, 1) ** 2
    pocket_points = np.stack([_pocket_profile(p, s) for p, s in zip(upper_edge, scale, strict=True)])
    eye_centres = np.array([[x, EYE_Y, _surface_z(flat, x, EYE_Y) - EYE_INSET] for x in (EYE_X, -EYE_X)])
    eyes = [_eyeball(c) for c in eye_centres]
    n_eye = len(eyes[0][0])
    lower_edge = upper_edge - np.outer(LIP_GAP * (1.0 - np.clip(corner_t, 0, 1) ** 2), [0.0, 1.0, 0.0])
    vertices = np.concatenate([pole, flat, lower_edge, pocket_points.reshape(-1, 3), eyes[0][0], eyes[1][0]])

    # faces: grid with the cut (the quads under the mouth row take the lower-lip copies), pocket, eyes
    cut_row = grid_id(mouth_row, np.arange(n_cols))
    cut_row[inner] = dup
    j = np.arange(n_cols)
    faces = [np.stack([np.zeros(n_cols, dtype=np.int64), grid_id(0, j), grid_id(0, j + 1)], axis=1)]
    for r in range(n_rows - 1):
        top = cut_row if r == mouth_row else grid_id(r, j)
        faces += _quads(top, np.roll(top, -1), grid_id(r + 1, j), grid_id(r + 1, j + 1))
    vt, uv_id, uv_top, _ = grid_uv(n_rows, n_cols, HEAD_CHART, (True, False))
    ft = grid_ft(n_rows, n_cols, uv_id, uv_top, None)
    n_surface_faces = sum(len(f) for f in faces)

    profiles = {c: np.concatenate([[grid_id(mouth_row, c)], pocket[i], [dup[i]]]) for i, c in enumerate(inner)}
    pf, pft = _pocket_faces(profiles, right_corner, left_corner, grid_id(mouth_row, [right_corner, left_corner]), len(vt))
    faces += pf
    vt = np.concatenate([vt, _pocket_uv(len(inner) + 2, n_prof + 2)])
    ft += pft
    for e, (_, eye_faces) in enumerate(eyes):
        faces += [f + eye_start + e * n_eye for f in eye_faces]
        evt, eid, etop, ebottom = grid_uv(EYE_ROWS, EYE_COLUMNS, EYE_CHARTS[e], (True, True))
        ft += [f + len(vt) for f in grid_ft(EYE_ROWS, EYE_COLUMNS, eid, etop, ebottom)]
        vt = np.concatenate([vt, evt])
    faces, ft = np.concatenate(faces).astype(np.int64), np.concatenate(ft).astype(np.int64)

    # per-vertex rig attributes
    n_v = len(vertices)
    part = np.full(n_v, SURFACE)
    part[pocket.reshape(-1)] = POCKET
    part[eye_start : eye_start + n_eye] = LEFT_EYE
    part[eye_start + n_eye :] = RIGHT_EYE
    rows = np.concatenate([[-1], np.repeat(np.arange(n_rows), n_cols), np.full(n_in * (1 + n_prof), mouth_row)])
    rows = np.concatenate([rows, np.full(2 * n_eye, -1)])
    descent = np.zeros(n_v)
    descent[0] = -1.0
    descent[1:n_grid] = np.repeat(grid_descent, n_cols)
    descent[n_grid:eye_start] = grid_descent[mouth_row]
    azimuth = np.zeros(n_v)
    azimuth[1:n_grid] = np.tile(phi, n_rows)
    azimuth[dup] = phi[inner]
    azimuth[pocket] = phi[inner][:, None]

    half = len(POCKET_UPPER)  # pocket entries before the back point
    side = np.where(rows > mouth_row, -1, 1)
    side[dup] = -1
    side[pocket[:, :half]], side[pocket[:, half]], side[pocket[:, half + 1 :]] = 1, 0, -1
    side[eye_start:] = 0
    rows_below = np.where(rows > mouth_row, rows - mouth_row, 0)
    rows_below[dup] = 1
    rows_below[pocket[:, half:]] = 1

    anchor = np.arange(n_v)
    anchor[pocket[:, : half + 1]] = grid_id(mouth_row, inner)[:, None]
    anchor[pocket[:, half + 1 :]] = dup[:, None]
    table, pocket_regions = _pocket_table()
    anchor_gain = np.ones(n_v)
    anchor_gain[pocket] = 1.0 - 0.8 * table[:, 0] / POCKET_BACK_DEPTH

    mouth_y = float(grid[mouth_row, n_cols // 2, 1])
    region = _regions(vertices, descent, part, azimuth, mouth_y)
    region[pocket] = np.array([REGION_NAMES.index(name) for name in pocket_regions])[None]
    region[dup] = LIPS

    corners = grid_id(mouth_row, [right_corner, left_corner])
    surface_faces = np.zeros(len(faces), dtype=bool)
    surface_faces[:n_surface_faces] = True
    lower_ring_row = CRANIUM_ROWS + LOWER_HEAD_ROWS - 1
    return HeadMesh(
        vertices=vertices,
        faces=faces,
        vt=vt,
        ft=ft,
        region=region,
        part=part,
        descent=descent,
        azimuth=azimuth,
        rows_below_mouth=rows_below,
        anchor=anchor,
        anchor_gain=anchor_gain,
        side=side,
        upper_lip=np.concatenate([[corners[0]], grid_id(mouth_row, inner), [corners[1]]]),
        lower_lip=np.concatenate([[corners[0]], dup, [corners[1]]]),
        mouth_corner_azimuth=float(phi[left_corner]),
        eye_vertices=(np.arange(eye_start, eye_start + n_eye), np.arange(eye_start + n_eye, eye_start + 2 * n_eye)),
        eye_centres=eye_centres,
        neck_top_ring=grid_id(lower_ring_row, np.arange(n_cols)),
        neck_bottom_ring=grid_id(n_rows - 1, np.arange(n_cols)),
        jaw_hinge=_jaw_hinge_ids(grid, grid_id),
        surface_faces=surface_faces,
    )


def _pocket_faces(profiles: dict, right: int, left: int, corner_ids, uv_start: int):
    """Pocket strip between the mouth corners: columns ``right..left``; profile entry k runs from the
    upper-lip edge (0) round the back to the lower-lip edge. At each corner column the profile collapses
    to the corner vertex, so the strip closes with a fan. UVs: a (columns x entries) grid from ``uv_start``."""
    n_entries = len(next(iter(profiles.values())))
    n_uv_rows = n_entries
    uv = lambda col, k: uv_start + (col - right) * n_uv_rows + k  # noqa: E731
    faces, ft = [], []
    mid = n_entries // 2
    for c in range(right, left):
        for k in range(n_entries - 1):
            a_uv, b_uv, c_uv, d_uv = uv(c, k), uv(c + 1, k), uv(c, k + 1), uv(c + 1, k + 1)
            if c == right:  # fan from the right corner
                b, d = profiles[c + 1][k], profiles[c + 1][k + 1]
                faces.append([b, corner_ids[0], d])
                ft.append([b_uv, uv(c, mid), d_uv])
            elif c + 1 == left:  # fan from the left corner
                a, cc = profiles[c][k], profiles[c][k + 1]
                faces.append([a, cc, corner_ids[1]])
                ft.append([a_uv, c_uv, uv(c + 1, mid)])
            else:
                a, b, cc, d = profiles[c][k], profiles[c + 1][k], profiles[c][k + 1], profiles[c + 1][k + 1]
                faces += [[a, cc, b], [b, cc, d]]
                ft += [[a_uv, c_uv, b_uv], [b_uv, c_uv, d_uv]]
    return [np.array(faces)], [np.array(ft)]


def _pocket_uv(n_cols: int, n_entries: int) -> np.ndarray:
    """Pocket chart: column-major grid (columns x profile entries), entry 0 at the top."""
    u0, v0, u1, v1 = POCKET_CHART
    cc, kk = np.meshgrid(np.arange(n_cols), np.arange(n_entries), indexing="ij")
    return np.stack([u0 + (u1 - u0) * cc / (n_cols - 1), v1 - (v1 - v0) * kk / (n_entries - 1)], axis=-1).reshape(-1, 2)


def _regions(vertices: np.ndarray, descent: np.ndarray, part: np.ndarray, azimuth: np.ndarray, mouth_y: float) -> np.ndarray:
    """Region of each surface vertex (the pocket and the lower-lip copies are relabelled by the caller)."""
    x, y, z = vertices.T
    region = np.full(len(vertices), SKIN)
    hairline = HAIRLINE_BACK_Y + (HAIRLINE_FRONT_Y - HAIRLINE_BACK_Y) * _front_weight(azimuth)
    region[(y > hairline) & (descent < 1.0)] = HAIR
    region[0] = HAIR  # the crown
    region[descent >= 1.0] = NECK
    lips = ((x / LIPS_HALF_WIDTH) ** 2 + ((y - mouth_y) / LIPS_HALF_HEIGHT) ** 2 <= 1.0) & (z > 0)
    region[lips & (part == SURFACE)] = LIPS
    region[part >= LEFT_EYE] = EYES
    return region


# ----------------------------------------------------------------------------------------------------------
# SMPL-X bust

# --- torso dimensions (metres), in the head's frame; adult bust ---
TORSO_TOP_Y = -0.17  # the neck hole, above the bottom of the head's neck: the two overlap
NECK_HOLE_RADIUS = 0.048  # smaller than NECK_RADIUS, so the neck passes through the shoulders' top
SHOULDER_Y = -0.255
SHOULDER_HALF_WIDTH = 0.19
CHEST_HALF_DEPTH = 0.105
WAIST_HALF_WIDTH = 0.15
WAIST_HALF_DEPTH = 0.095
TORSO_BOTTOM_Y = -0.60
TORSO_SQUARENESS = 2.6  # superellipse exponent of the cross-section: a boxy chest
TORSO_COLUMNS = 96  # a multiple of 4: front, back and both sides are columns
TORSO_CAP_ROWS, TORSO_SIDE_ROWS = 16, 46  # with the head, more vertices than smplx's SMPL-X vertex_ids reach
TORSO_CHART = (0.0, 0.0, 1.0, 1.0)  # before the SMPL-X atlas packs it


@dataclass
class TorsoMesh:
    vertices: np.ndarray  # [V, 3]
    faces: np.ndarray  # [F, 3]
    vt: np.ndarray  # [T, 2] in TORSO_CHART
    ft: np.ndarray  # [F, 3]
    row_y: np.ndarray  # [R] base height of each row
    cap: np.ndarray  # [R] 0 at the neck hole .. 1 at the shoulder line, 1 below
    grid_id: Callable  # (row, column) -> vertex id


def _superellipse(angle: np.ndarray, exponent: float) -> tuple[np.ndarray, np.ndarray]:
    s, c = np.sin(angle), np.cos(angle)
    return np.sign(s) * np.abs(s) ** (2.0 / exponent), np.sign(c) * np.abs(c) ** (2.0 / exponent)


def build_torso() -> TorsoMesh:
    """An open bust: a cap from the neck hole out to the shoulders, then the chest down to the bottom ring."""
    a = np.arange(TORSO_CAP_ROWS) / TORSO_CAP_ROWS  # 0 at the hole
    ease = np.sin(0.5 * np.pi * a)
    cap_w = NECK_HOLE_RADIUS + (SHOULDER_HALF_WIDTH - NECK_HOLE_RADIUS) * ease
    cap_d = NECK_HOLE_RADIUS + (CHEST_HALF_DEPTH - NECK_HOLE_RADIUS) * ease
    cap_y = TORSO_TOP_Y - (TORSO_TOP_Y - SHOULDER_Y) * (1.0 - np.cos(0.5 * np.pi * a))
    b = np.arange(TORSO_SIDE_ROWS) / (TORSO_SIDE_ROWS - 1)  # 0 at the shoulder line
    taper = 0.5 - 0.5 * np.cos(np.pi * b)
    side_w = SHOULDER_HALF_WIDTH + (WAIST_HALF_WIDTH - SHOULDER_HALF_WIDTH) * taper
    side_d = CHEST_HALF_DEPTH + (WAIST_HALF_DEPTH - CHEST_HALF_DEPTH) * taper
    side_y = SHOULDER_Y + (TORSO_BOTTOM_Y - SHOULDER_Y) * b
    w, d, y = (np.concatenate(p) for p in ((cap_w, side_w), (cap_d, side_d), (cap_y, side_y)))
    sx, cz = _superellipse(-np.pi + 2.0 * np.pi * np.arange(TORSO_COLUMNS) / TORSO_COLUMNS, TORSO_SQUARENESS)
    n_rows = len(y)
    points = np.stack([w[:, None] * sx, y[:, None] + 0.0 * sx, NECK_CENTRE_Z + d[:, None] * cz], axis=-1)

    def grid_id(r, j):
        return np.asarray(r) * TORSO_COLUMNS + np.asarray(j) % TORSO_COLUMNS

    faces = np.concatenate(grid_faces(n_rows, TORSO_COLUMNS, None, None, grid_id))
    vt, uv_id, _, _ = grid_uv(n_rows, TORSO_COLUMNS, TORSO_CHART, (False, False))
    ft = np.concatenate(grid_ft(n_rows, TORSO_COLUMNS, uv_id, None, None))
    cap = np.concatenate([a, np.ones(TORSO_SIDE_ROWS)])
    return TorsoMesh(points.reshape(-1, 3), faces.astype(np.int64), vt, ft.astype(np.int64), y, cap, grid_id)


def head_quad_face(row: int, column: np.ndarray) -> np.ndarray:
    """Indices of the first triangle of the head grid's quads below ``row`` at ``column`` (faces are the top
    fan, then two blocks of HEAD_COLUMNS triangles per row)."""
    return HEAD_COLUMNS + 2 * HEAD_COLUMNS * row + column % HEAD_COLUMNS


def head_lower_row(u: float) -> int:
    """The head grid row in the lower face whose profile parameter is nearest ``u``."""
    section, param = _row_profile()
    lower = np.flatnonzero(section == 1)
    return int(lower[np.argmin(np.abs(param[lower] - u))])
