"""Small synthetic FLAME and SMPL-X model files in the official formats, which smplx itself loads.

Real FLAME / SMPL-X files need a licence, so tests, demos and the synthetic head video use these. The head
(geometry in ``_head_mesh.py``) has a mouth that opens with the jaw, eyes that rotate in place, UVs and
region labels; here it gets its rig: joints (regressor rows that average vertex sets), skinning weights,
300 shape and 100 expression directions (the first few named, the rest smooth random fields), pose
correctives and the landmark embedding. Same seed, same bytes.

Files, with the official keys: FLAME_NEUTRAL.pkl (protocol-2 plain-numpy pickle), flame_static_embedding.pkl,
FLAME_texture.npz (vt, ft), FLAME_masks.pkl (region name -> vertex ids; here the regions partition the
vertices); SMPLX_NEUTRAL.npz and SMPLX_masks.pkl (the same regions plus "torso").

One file over 500 lines because it is one job: the rig and the files of one synthetic model, whose parts (joints,
weights, blend shapes, embedding) are read off the same vertex sets; the geometry is already apart.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np

from ..checks import check_count
from . import _head_mesh as mesh
from ._head_mesh import REGION_NAMES, HeadMesh, smoothstep

__all__ = [
    "REGION_NAMES",
    "SMPLX_REGION_NAMES",
    "SYNTHETIC_EXPRESSIONS",
    "SYNTHETIC_SHAPES",
    "write_synthetic_flame",
    "write_synthetic_smplx",
]

SMPLX_REGION_NAMES = (*REGION_NAMES, "torso")

NUM_SHAPES, NUM_EXPRESSIONS = 300, 100  # FLAME's and SMPL-X's shape / expression space sizes
# Named expression directions (index into the expression coefficients); +1 is a clear, few-mm expression.
SYNTHETIC_EXPRESSIONS = {
    "brow_raise": 0,  # forehead and brows up
    "smile": 1,  # mouth corners up and out
    "mouth_stretch": 2,  # mouth corners out
    "pucker": 3,  # lips forward and together
    "lips_part": 4,  # upper lip up, lower lip down: the teeth show
    "brow_furrow": 5,  # brows in and down
}
SYNTHETIC_SHAPES = {"head_width": 0, "head_length": 1, "head_height": 2, "nose_size": 3, "jaw_width": 4}

# FLAME joints in smplx's order: global (neck base), neck, jaw, left eye, right eye.
FLAME_PARENTS = (-1, 0, 1, 1, 1)
ROOT_PARENT = 4294967295  # how the official kintree_table writes "no parent" (uint32 -1)

# SMPL-X joints (smplx's order): pelvis, hips, spine, knees, ankles, feet, neck 12, collars, head 15, shoulders,
# elbows, wrists, jaw 22, eyes 23 / 24, then 15 joints per hand (index, middle, pinky, ring, thumb; 3 each).
SMPLX_PARENTS = (-1, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9, 12, 13, 14, 16, 17, 18, 19, 15, 15, 15,
                 *[p for finger in range(5) for p in (20, 25 + 3 * finger, 26 + 3 * finger)],
                 *[p for finger in range(5) for p in (21, 40 + 3 * finger, 41 + 3 * finger)])  # fmt: skip
FLAME_TO_SMPLX = (12, 15, 22, 23, 24)  # FLAME's root, neck, jaw and eyes are SMPL-X's neck, head, jaw and eyes
SMPLX_HEAD_ATLAS = np.array([0.62, 1.0])  # the head's UV atlas, squeezed into the left of SMPL-X's
SMPLX_TORSO_ATLAS = np.array([0.64, 0.0, 0.36, 1.0])  # torso chart: u0, v0, width, height
HAND_MEAN_SCALE = 0.1  # radians: a slightly curled mean hand pose, as the official files have

# --- blend-shape amplitudes (metres per unit coefficient, at the field's peak) ---
EXPRESSION_AMPLITUDE = 0.005
SHAPE_AMPLITUDE = 0.005
RANDOM_FIELD_AMPLITUDE = (0.001, 0.003)  # the unnamed directions: smooth random fields of a few mm
RANDOM_FIELD_SIGMA = (0.02, 0.05)  # Gaussian bump widths of the random fields
RANDOM_FIELD_BUMPS = 3
POSE_CORRECTIVE_AMPLITUDE = 0.003  # per unit of a (R - I) entry, which is about the angle in radians

# --- skinning: where the jaw pulls the skin ---
JAW_HINGE_AZIMUTH = 1.3  # radians from the front: the jaw's weight reaches 0 at the hinge, below the ear
JAW_RAMP_ROWS = 6  # outside the mouth, the jaw's weight takes up to this many rows below the mouth line to reach 1
JAW_FADE_START = 0.85  # lower-face profile parameter where the jaw's weight starts fading into the neck

LANDMARK_COUNT = 51  # FLAME's static landmarks: iBUG-68 without the 17 jaw-contour points
DYNAMIC_LANDMARK_BINS, DYNAMIC_LANDMARKS = 79, 17  # SMPL-X's contour look-up table: yaw bins x contour points
CONTOUR_DESCENT = 0.85  # the contour runs along this lower-face row (the jaw line)

FLAME_FILE, EMBEDDING_FILE, TEXTURE_FILE, FLAME_MASKS_FILE = (
    "FLAME_NEUTRAL.pkl",
    "flame_static_embedding.pkl",
    "FLAME_texture.npz",
    "FLAME_masks.pkl",
)
# Blend-shape directions are stored in float32 (what smplx computes in by default): protocol-2 pickling of
# float64 arrays this size takes seconds, and mm-size fields need no more than float32's 7 digits.
DIRECTIONS_DTYPE = np.float32

SMPLX_FILE, SMPLX_MASKS_FILE = "SMPLX_NEUTRAL.npz", "SMPLX_masks.pkl"


def write_synthetic_flame(folder: str | Path, *, seed: int = 0) -> Path:
    """Write a synthetic FLAME model into ``folder`` (created if missing) and return ``folder``."""
    seed = check_count("seed", seed, 0)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    head = mesh.build_head()
    rig = _flame_rig(head, np.random.default_rng(seed))
    model = {
        "v_template": head.vertices,
        "f": head.faces.astype(np.uint32),
        "shapedirs": rig["shapedirs"].astype(DIRECTIONS_DTYPE),
        "posedirs": rig["posedirs"].astype(DIRECTIONS_DTYPE),
        "J_regressor": rig["J_regressor"],
        "kintree_table": _kintree(FLAME_PARENTS),
        "weights": rig["weights"],
        "bs_style": "lbs",
        "bs_type": "lrotmin",
    }
    _write_pickle(folder / FLAME_FILE, model)
    face_idx, bary = _landmarks(head)
    _write_pickle(folder / EMBEDDING_FILE, {"lmk_face_idx": face_idx, "lmk_b_coords": bary})
    _write_npz(folder / TEXTURE_FILE, {"vt": head.vt, "ft": head.ft})
    _write_pickle(folder / FLAME_MASKS_FILE, _masks(head.region, REGION_NAMES))
    return folder


def write_synthetic_smplx(folder: str | Path, *, seed: int = 0) -> Path:
    """Write a synthetic SMPL-X head-and-bust model into ``folder`` (created if missing) and return ``folder``."""
    seed = check_count("seed", seed, 0)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    head, torso = mesh.build_head(), mesh.build_torso()
    flame = _flame_rig(head, rng)  # drawn first, so the SMPL-X head is the FLAME head of the same seed
    n_head = len(head.vertices)
    vertices = np.concatenate([head.vertices, torso.vertices])
    face_idx, bary = _landmarks(head)  # head faces come first, so FLAME's face indices hold
    dyn_idx, dyn_bary = _dynamic_landmarks()
    hand_components = [np.linalg.qr(rng.normal(size=(45, 45)))[0] for _ in range(2)]
    model = {
        "v_template": vertices,
        "f": np.concatenate([head.faces, torso.faces + n_head]).astype(np.uint32),
        "shapedirs": _smplx_shapedirs(flame["shapedirs"], torso, rng).astype(DIRECTIONS_DTYPE),
        "posedirs": _smplx_posedirs(flame["posedirs"], torso, rng).astype(DIRECTIONS_DTYPE),
        "J_regressor": _smplx_regressor(flame["J_regressor"], torso),
        "kintree_table": _kintree(SMPLX_PARENTS),
        "weights": _smplx_weights(flame["weights"], torso),
        "hands_componentsl": hand_components[0],
        "hands_componentsr": hand_components[1],
        "hands_meanl": HAND_MEAN_SCALE * rng.normal(size=45),
        "hands_meanr": HAND_MEAN_SCALE * rng.normal(size=45),
        "lmk_faces_idx": face_idx,
        "lmk_bary_coords": bary,
        "dynamic_lmk_faces_idx": dyn_idx,
        "dynamic_lmk_bary_coords": dyn_bary,
        "vt": np.concatenate([head.vt * SMPLX_HEAD_ATLAS, SMPLX_TORSO_ATLAS[:2] + torso.vt * SMPLX_TORSO_ATLAS[2:]]),
        "ft": np.concatenate([head.ft, torso.ft + len(head.vt)]),
    }
    _write_npz(folder / SMPLX_FILE, model)
    region = np.concatenate([head.region, np.full(len(torso.vertices), SMPLX_REGION_NAMES.index("torso"))])
    _write_pickle(folder / SMPLX_MASKS_FILE, _masks(region, SMPLX_REGION_NAMES))
    return folder


# ----------------------------------------------------------------------------------------------------------
# FLAME rig


def _flame_rig(head: HeadMesh, rng: np.random.Generator) -> dict[str, np.ndarray]:
    return {
        "J_regressor": _flame_regressor(head),
        "weights": _flame_weights(head),
        "shapedirs": np.concatenate([_shape_fields(head, rng), _expression_fields(head, rng)], axis=2),
        "posedirs": _flame_posedirs(head, rng),
    }


def _mean_rows(n_vertices: int, vertex_sets) -> np.ndarray:
    """Regressor rows that average each vertex set: convex, each row sums to 1."""
    rows = np.zeros((len(vertex_sets), n_vertices))
    for i, ids in enumerate(vertex_sets):
        rows[i, np.asarray(ids)] = 1.0 / len(ids)
    return rows


def _flame_regressor(head: HeadMesh) -> np.ndarray:
    """Root at the neck base, neck at the top of the neck, the jaw hinge, eyeball centres."""
    sets = [head.neck_bottom_ring, head.neck_top_ring, head.jaw_hinge, *head.eye_vertices]
    return _mean_rows(len(head.vertices), sets)


def _jaw_weight(head: HeadMesh) -> np.ndarray:
    """How much the jaw moves each vertex: all of the lower lip, chin and lower pocket; fading towards the
    hinge (sideways), across more rows outside the mouth corners, and into the neck under the chin."""
    phi, corner = np.abs(head.azimuth), head.mouth_corner_azimuth
    lateral = smoothstep(JAW_HINGE_AZIMUTH, corner, phi)
    rows_to_full = 1.0 + JAW_RAMP_ROWS * smoothstep(0.4 * corner, 1.6 * corner, phi)
    rows = np.minimum(1.0, head.rows_below_mouth / rows_to_full)
    fade = smoothstep(1.0, JAW_FADE_START, head.descent)
    w = lateral * rows * fade
    back = (head.part == mesh.POCKET) & (head.side == 0)
    w[back] *= 0.5  # the pocket's deepest point: half way between the jaws
    w[head.part >= mesh.LEFT_EYE] = 0.0
    return w


def _flame_weights(head: HeadMesh) -> np.ndarray:
    """[V, 5]: root -> neck blend along the neck, jaw, eyes 100% to their joints, the rest to the neck."""
    weights = np.zeros((len(head.vertices), 5))
    weights[:, 0] = smoothstep(1.0, 2.0, head.descent)  # neck base ring: root only
    weights[:, 2] = _jaw_weight(head)
    weights[:, 1] = 1.0 - weights[:, 0] - weights[:, 2]
    for joint, ids in zip((3, 4), head.eye_vertices, strict=True):
        weights[ids] = 0.0
        weights[ids, joint] = 1.0
    return weights


def _anchors(head: HeadMesh) -> np.ndarray:
    """Where each vertex's blend shapes are evaluated: itself, its lip edge (pocket), the eyeball centre."""
    p = head.vertices[head.anchor].copy()
    for ids, centre in zip(head.eye_vertices, head.eye_centres, strict=True):
        p[ids] = centre  # eyeballs move rigidly
    return p


def _gauss(x: np.ndarray, y: np.ndarray, x0: float, y0: float, sx: float, sy: float) -> np.ndarray:
    return np.exp(-0.5 * (((x - x0) / sx) ** 2 + ((y - y0) / sy) ** 2))


def _mouth_y(head: HeadMesh) -> float:
    return float(head.vertices[head.upper_lip[len(head.upper_lip) // 2], 1])


def _expression_fields(head: HeadMesh, rng: np.random.Generator) -> np.ndarray:
    """[V, 3, 100]: the named expressions, then smooth random fields on the face. Eyeballs stay put."""
    x, y, z = _anchors(head).T
    front = np.clip(z / mesh.HEAD_HALF_DEPTH, 0.0, 1.0)
    my, mx = _mouth_y(head), mesh.MOUTH_HALF_WIDTH
    corners = [(s, _gauss(x, y, s * mx, my, 0.012, 0.012)) for s in (1.0, -1.0)]
    mouth = _gauss(x, y, 0.0, my, 0.02, 0.012)
    lip_taper = np.clip(1.0 - (x / mx) ** 2, 0.0, 1.0)  # zero at and beyond the corners, where the cut ends
    named = {
        "brow_raise": [0 * x, smoothstep(0.008, 0.022, y) * smoothstep(0.085, 0.05, y) * np.exp(-0.5 * (x / 0.05) ** 2), 0 * x],
        "smile": sum(np.array([0.5 * s, 0.8, -0.2])[:, None] * g for s, g in corners),
        "mouth_stretch": sum(np.array([1.0 * s, -0.2, -0.1])[:, None] * g for s, g in corners),
        "pucker": [-0.5 * x / mx * mouth, 0 * x, mouth],
        "lips_part": [0 * x, 0.6 * head.side * mouth * lip_taper, 0 * x],
        "brow_furrow": sum(
            np.array([-1.0 * s, -0.4, 0.2])[:, None] * _gauss(x, y, s * 0.022, 0.02, 0.012, 0.012) for s in (1, -1)
        ),
    }
    fields = np.zeros((len(x), 3, NUM_EXPRESSIONS))
    for name, k in SYNTHETIC_EXPRESSIONS.items():
        fields[:, :, k] = EXPRESSION_AMPLITUDE * np.stack(list(named[name]), axis=1) * front[:, None]
    face = np.flatnonzero(
        (head.part == mesh.SURFACE) & (head.vertices[:, 2] > 0.03) & (np.abs(head.vertices[:, 1] + 0.03) < 0.09)
    )
    fields[:, :, len(named) :] = _random_fields(_anchors(head), head.vertices[face], NUM_EXPRESSIONS - len(named), rng)
    fields *= head.anchor_gain[:, None, None]
    fields[head.part >= mesh.LEFT_EYE] = 0.0
    return fields


def _shape_fields(head: HeadMesh, rng: np.random.Generator) -> np.ndarray:
    """[V, 3, 300]: named proportions (linear stretches, nose, jaw), then smooth random fields anywhere."""
    p = _anchors(head)
    x, y, z = p.T
    zero = 0 * x
    nose = _gauss(x, y, 0.0, -0.025, 0.012, 0.02) * np.clip(z / mesh.HEAD_HALF_DEPTH, 0.0, 1.0)
    lower_face = smoothstep(-0.01, -0.06, y) * smoothstep(-0.16, -0.12, y)
    named = {
        "head_width": [x / mesh.HEAD_HALF_WIDTH, zero, zero],
        "head_length": [zero, zero, z / mesh.HEAD_HALF_DEPTH],
        "head_height": [zero, y / mesh.CRANIUM_HEIGHT, zero],
        "nose_size": [0.3 * x / 0.012 * nose, -0.2 * nose, nose],
        "jaw_width": [x / mesh.HEAD_HALF_WIDTH * lower_face, zero, zero],
    }
    fields = np.zeros((len(x), 3, NUM_SHAPES))
    for name, k in SYNTHETIC_SHAPES.items():
        fields[:, :, k] = SHAPE_AMPLITUDE * np.stack(named[name], axis=1)
    surface = head.vertices[head.part == mesh.SURFACE]
    fields[:, :, len(named) :] = _random_fields(p, surface, NUM_SHAPES - len(named), rng)
    return fields * head.anchor_gain[:, None, None]


def _random_fields(points: np.ndarray, pool: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """[V, 3, n] smooth random displacement fields: each a sum of Gaussian bumps centred on points of ``pool``
    with random directions, scaled to a random peak in RANDOM_FIELD_AMPLITUDE."""
    centres = pool[rng.integers(0, len(pool), size=(n, RANDOM_FIELD_BUMPS))]
    sigma = rng.uniform(*RANDOM_FIELD_SIGMA, size=(n, RANDOM_FIELD_BUMPS))
    dirs = rng.normal(size=(n, RANDOM_FIELD_BUMPS, 3))
    dirs /= np.linalg.norm(dirs, axis=-1, keepdims=True)
    fields = np.zeros((len(points), 3, n))
    for b in range(RANDOM_FIELD_BUMPS):
        c = centres[:, b]
        d2 = (points**2).sum(-1)[:, None] - 2.0 * points @ c.T + (c**2).sum(-1)[None]  # [V, n]
        fields += np.einsum("vn,nk->vkn", np.exp(-0.5 * np.maximum(d2, 0.0) / sigma[None, :, b] ** 2), dirs[:, b])
    peak = np.linalg.norm(fields, axis=1).max(axis=0)
    return fields * (rng.uniform(*RANDOM_FIELD_AMPLITUDE, size=n) / peak)


def _flame_posedirs(head: HeadMesh, rng: np.random.Generator) -> np.ndarray:
    """[V, 3, 36]: 9 correctives per non-root joint (neck, jaw, eyes), each a smooth bump with a random
    direction: neck skin, a bulge under the chin, the eyelids. Eyeballs get none (they rotate rigidly)."""
    p = _anchors(head)
    lid = mesh.EYE_Y + mesh.EYE_RADIUS
    centres = [((0.0, -0.13, 0.045), 0.03, 1.0), ((0.0, -0.115, 0.05), 0.025, 1.0)]  # (centre, sigma, gain)
    centres += [((s * mesh.EYE_X, lid, head.eye_centres[0, 2] + mesh.EYE_RADIUS), 0.008, 0.3) for s in (1, -1)]
    posedirs = np.zeros((len(p), 3, 9 * len(centres)))
    for j, (centre, sigma, gain) in enumerate(centres):
        bump = np.exp(-0.5 * ((p - np.array(centre)) ** 2).sum(-1) / sigma**2)
        dirs = rng.normal(size=(9, 3))
        dirs /= np.linalg.norm(dirs, axis=-1, keepdims=True)
        posedirs[:, :, 9 * j : 9 * j + 9] = POSE_CORRECTIVE_AMPLITUDE * gain * bump[:, None, None] * dirs.T[None]
    posedirs[head.part >= mesh.LEFT_EYE] = 0.0
    return posedirs * head.anchor_gain[:, None, None]


# ----------------------------------------------------------------------------------------------------------
# SMPL-X rig: the FLAME head's rig in SMPL-X's joint slots, plus the bust

# Joints placed on the bust: (joint, base height, x in metres from the midline or None for the ring's centre).
# Joints without geometry of their own (legs, arms, hands) sit inside the bust at plausible places.
_TORSO_JOINTS = (
    [(0, mesh.TORSO_BOTTOM_Y, None), (3, -0.48, None), (6, -0.39, None), (9, -0.30, None)]
    + [(j + side, mesh.TORSO_BOTTOM_Y, 0.09 - 0.01 * k) for k, j in enumerate((1, 4, 7, 10)) for side in (0, 1)]
    + [(13, -0.20, 0.07), (14, -0.20, 0.07), (16, -0.265, 0.16), (17, -0.265, 0.16)]
    + [(18, -0.43, 0.15), (19, -0.43, 0.15), (20, -0.55, 0.13), (21, -0.55, 0.13)]
    + [(first + 3 * f + s, -0.565 - 0.01 * s, 0.125 - 0.01 * f) for first in (25, 40) for f in range(5) for s in range(3)]
)
_LEFT_JOINTS = {1, 4, 7, 10, 13, 16, 18, 20, *range(25, 40)}  # subject's left: +x; their partners go to -x
_TORSO_CORRECTIVE_JOINTS = (9, 12, 13, 14, 16, 17)  # joints whose rotation bends the bust
TORSO_CORRECTIVE_SIGMA = 0.06


def _torso_joint_sets(torso: mesh.TorsoMesh) -> dict[int, np.ndarray]:
    """Vertex sets on the bust whose mean is each torso joint: a whole ring (on the midline), or a column and
    its front-back mirror on one ring (their mean lies inside the bust at that x)."""
    n = mesh.TORSO_COLUMNS
    sets = {}
    for joint, y, x in _TORSO_JOINTS:
        row = int(np.argmin(np.abs(torso.row_y - y)))
        if x is None:
            sets[joint] = torso.grid_id(row, np.arange(n))
            continue
        front_left = np.arange(n // 2, 3 * n // 4 + 1)  # columns from the front to the left side
        xs = torso.vertices[torso.grid_id(row, front_left), 0]
        j = int(front_left[np.argmin(np.abs(xs - x))])
        cols = np.array([j, 3 * n // 2 - j])  # front and back
        sets[joint] = torso.grid_id(row, cols if joint in _LEFT_JOINTS else n - cols)
    return sets


def _smplx_regressor(flame_regressor: np.ndarray, torso: mesh.TorsoMesh) -> np.ndarray:
    n_head = flame_regressor.shape[1]
    regressor = np.zeros((len(SMPLX_PARENTS), n_head + len(torso.vertices)))
    regressor[list(FLAME_TO_SMPLX), :n_head] = flame_regressor
    for joint, ids in _torso_joint_sets(torso).items():
        regressor[joint] = _mean_rows(regressor.shape[1], [n_head + ids])[0]
    return regressor


def _smplx_weights(flame_weights: np.ndarray, torso: mesh.TorsoMesh) -> np.ndarray:
    """Head: FLAME's weights in SMPL-X's slots. Bust: neck near the hole, shoulders and collars towards the
    sides, spine3 for the rest."""
    x, y = torso.vertices[:, 0], torso.vertices[:, 1]
    rows = np.repeat(np.arange(len(torso.row_y)), mesh.TORSO_COLUMNS)
    row_width = np.abs(torso.vertices[:, 0]).reshape(len(torso.row_y), -1).max(axis=1)[rows]
    lateral = np.abs(x) / row_width
    neck = smoothstep(0.35, 0.0, torso.cap[rows])
    rest = 1.0 - neck
    shoulder = rest * smoothstep(0.72, 0.95, lateral) * smoothstep(mesh.SHOULDER_Y - 0.12, mesh.SHOULDER_Y - 0.02, y)
    collar = (rest - shoulder) * smoothstep(0.3, 0.65, lateral) * smoothstep(mesh.SHOULDER_Y - 0.10, mesh.SHOULDER_Y, y)
    left = x > 0
    weights = np.zeros((len(x), len(SMPLX_PARENTS)))
    weights[:, 12] = neck
    weights[:, 9] = rest - shoulder - collar
    weights[:, 16], weights[:, 17] = np.where(left, shoulder, 0.0), np.where(left, 0.0, shoulder)
    weights[:, 13], weights[:, 14] = np.where(left, collar, 0.0), np.where(left, 0.0, collar)
    head = np.zeros((len(flame_weights), len(SMPLX_PARENTS)))
    head[:, list(FLAME_TO_SMPLX)] = flame_weights
    return np.concatenate([head, weights])


def _smplx_shapedirs(flame_dirs: np.ndarray, torso: mesh.TorsoMesh, rng: np.random.Generator) -> np.ndarray:
    """Head: FLAME's shape and expression directions; bust: smooth random shape fields, no expression."""
    named = len(SYNTHETIC_SHAPES)
    dirs = np.zeros((len(torso.vertices), 3, NUM_SHAPES + NUM_EXPRESSIONS))
    dirs[:, :, named:NUM_SHAPES] = _random_fields(torso.vertices, torso.vertices, NUM_SHAPES - named, rng)
    return np.concatenate([flame_dirs, dirs])


def _smplx_posedirs(flame_posedirs: np.ndarray, torso: mesh.TorsoMesh, rng: np.random.Generator) -> np.ndarray:
    """[V, 3, 54 * 9]: FLAME's head correctives in the head, jaw and eye slots; bumps on the bust around the
    spine3, neck, collar and shoulder joints."""
    n_head = len(flame_posedirs)
    posedirs = np.zeros((n_head + len(torso.vertices), 3, 9 * (len(SMPLX_PARENTS) - 1)))
    for flame_joint, joint in enumerate(FLAME_TO_SMPLX[1:], start=1):
        posedirs[:n_head, :, 9 * (joint - 1) : 9 * joint] = flame_posedirs[:, :, 9 * (flame_joint - 1) : 9 * flame_joint]
    joints = _smplx_regressor(np.zeros((5, n_head)), torso)[:, n_head:] @ torso.vertices
    for joint in _TORSO_CORRECTIVE_JOINTS:
        bump = np.exp(-0.5 * ((torso.vertices - joints[joint]) ** 2).sum(-1) / TORSO_CORRECTIVE_SIGMA**2)
        dirs = rng.normal(size=(9, 3))
        dirs /= np.linalg.norm(dirs, axis=-1, keepdims=True)
        posedirs[n_head:, :, 9 * (joint - 1) : 9 * joint] = POSE_CORRECTIVE_AMPLITUDE * bump[:, None, None] * dirs.T[None]
    return posedirs


def _dynamic_landmarks() -> tuple[np.ndarray, np.ndarray]:
    """SMPL-X's face-contour look-up table: for each head yaw bin (-39..39 degrees), 17 points along the jaw
    line from the right ear to the left, sliding away from the turn so they stay on the silhouette."""
    row = mesh.head_lower_row(CONTOUR_DESCENT)
    phi = mesh.column_azimuths(mesh.HEAD_COLUMNS, mesh.FRONT_DENSITY)
    yaw = np.radians(np.arange(DYNAMIC_LANDMARK_BINS) - DYNAMIC_LANDMARK_BINS // 2)
    reach = 0.9 * JAW_HINGE_AZIMUTH
    azimuths = np.clip(np.linspace(-reach, reach, DYNAMIC_LANDMARKS)[None] - 0.5 * yaw[:, None], -reach, reach)
    columns = np.argmin(np.abs(azimuths[..., None] - phi), axis=-1)
    faces = mesh.head_quad_face(row, columns).astype(np.int64)
    return faces, np.full((*faces.shape, 3), 1.0 / 3.0)


# ----------------------------------------------------------------------------------------------------------
# Landmarks

# iBUG-68 points 17..67 in front view (x, y): "face" points are on the skin; "upper" / "lower" points sit on
# the inner edge of that lip (y is then relative to the mouth line). Subject's right (-x) first, as iBUG.
_BROWS = [(-0.052, 0.020), (-0.044, 0.026), (-0.034, 0.028), (-0.024, 0.027), (-0.014, 0.024)]
_EYE_RIGHT = [(-0.045, 0.002), (-0.037, 0.010), (-0.027, 0.010), (-0.019, 0.002), (-0.027, -0.006), (-0.037, -0.006)]
_OUTER_LIP = [(-0.025, 0.0), (-0.017, 0.006), (-0.007, 0.009), (0.0, 0.008), (0.007, 0.009), (0.017, 0.006),
              (0.025, 0.0), (0.017, -0.008), (0.007, -0.011), (0.0, -0.011), (-0.007, -0.011), (-0.017, -0.008)]  # fmt: skip
LANDMARKS = (
    [("face", x, y) for x, y in _BROWS]
    + [("face", -x, y) for x, y in _BROWS[::-1]]
    + [("face", 0.0, y) for y in (0.006, -0.008, -0.020, -0.032)]  # nose bridge to tip
    + [("face", x, -0.044 + 0.002 * abs(x) / 0.014) for x in (-0.014, -0.007, 0.0, 0.007, 0.014)]  # nostrils
    + [("face", x, y) for x, y in _EYE_RIGHT]
    + [("face", -x, y) for x, y in [_EYE_RIGHT[i] for i in (3, 2, 1, 0, 5, 4)]]  # left eye from its inner corner
    + [("mouth", x, y) for x, y in _OUTER_LIP]
    + [("upper", x, 0.0) for x in (-0.025, -0.010, 0.0, 0.010)]  # inner lip: right corner, upper edge
    + [("upper", 0.025, 0.0)]  # left corner
    + [("lower", x, 0.0) for x in (0.010, 0.0, -0.010)]
)
LIP_EDGE_WEIGHT = 0.8  # inner-lip landmarks: barycentric weight of the lip-edge vertex


def _landmarks(head: HeadMesh) -> tuple[np.ndarray, np.ndarray]:
    """Face index [51] and barycentric coordinates [51, 3] of each landmark on the head surface."""
    faces = head.faces
    surface = np.flatnonzero(head.surface_faces)
    my = _mouth_y(head)
    idx, bary = [], []
    for kind, x, y in LANDMARKS:
        if kind in ("face", "mouth"):
            f, b = _embed_front(head.vertices, faces, surface, x, y + (my if kind == "mouth" else 0.0))
        else:
            f, b = _embed_lip_edge(head, surface, x, kind)
        idx.append(f)
        bary.append(b)
    assert len(idx) == LANDMARK_COUNT
    return np.array(idx, dtype=np.int64), np.array(bary)


def _embed_front(vertices: np.ndarray, faces: np.ndarray, candidates: np.ndarray, x: float, y: float):
    """The front-facing candidate face under (x, y) in front view, with clipped 2D barycentrics."""
    tri = vertices[faces[candidates]][..., :2]  # [F, 3, 2]
    front = vertices[faces[candidates]][..., 2].min(axis=1) > 0
    b = _bary2d(tri, np.array([x, y]))
    inside = b.min(axis=1)
    inside[~front] = -np.inf
    best = int(np.argmax(inside))
    w = np.clip(b[best], 0.0, None)
    return int(candidates[best]), w / w.sum()


def _bary2d(tri: np.ndarray, q: np.ndarray) -> np.ndarray:
    a, b, c = tri[:, 0], tri[:, 1], tri[:, 2]
    v0, v1, v2 = b - a, c - a, q - a
    den = v0[:, 0] * v1[:, 1] - v1[:, 0] * v0[:, 1]
    den = np.where(np.abs(den) < 1e-15, 1e-15, den)
    wb = (v2[:, 0] * v1[:, 1] - v1[:, 0] * v2[:, 1]) / den
    wc = (v0[:, 0] * v2[:, 1] - v2[:, 0] * v0[:, 1]) / den
    return np.stack([1.0 - wb - wc, wb, wc], axis=1)


def _embed_lip_edge(head: HeadMesh, candidates: np.ndarray, x: float, kind: str):
    """A face on the given side of the mouth cut touching the lip-edge vertex nearest x; weight on that vertex."""
    edge = head.upper_lip if kind == "upper" else head.lower_lip
    vertex = edge[np.argmin(np.abs(head.vertices[edge, 0] - x))]
    tris = head.faces[candidates]
    touching = candidates[(tris == vertex).any(axis=1)]
    centre_y = head.vertices[head.faces[touching]][:, :, 1].mean(axis=1)
    above = centre_y > head.vertices[vertex, 1]
    touching = touching[above] if kind == "upper" else touching[~above]
    face = int(touching[0])
    w = np.full(3, (1.0 - LIP_EDGE_WEIGHT) / 2)
    w[list(head.faces[face]).index(vertex)] = LIP_EDGE_WEIGHT
    return face, w


# ----------------------------------------------------------------------------------------------------------
# Files


def _kintree(parents) -> np.ndarray:
    table = np.array([parents, range(len(parents))], dtype=np.int64)
    table[0, 0] = ROOT_PARENT
    return table


def _masks(region: np.ndarray, names) -> dict[str, np.ndarray]:
    return {name: np.flatnonzero(region == i).astype(np.int64) for i, name in enumerate(names)}


def _write_pickle(path: Path, data: dict) -> None:
    """Plain-numpy pickle, protocol 2 like the official (Python 2) files."""
    path.write_bytes(pickle.dumps(data, protocol=2))


def _write_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """``np.savez``: its zip entries carry a fixed 1980 timestamp, so the same arrays give the same bytes."""
    np.savez(path, **arrays)
