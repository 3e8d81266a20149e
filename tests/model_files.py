"""Small FLAME- and SMPL-X-format model files for the tests (random but well formed, in the official layouts
smplx reads), and smplx's own modules and forward calls on them: the independent reference."""

import pickle
from pathlib import Path

import numpy as np
import smplx
import torch

from headfields.geometry import uv_sphere
from headfields.parametric import ParametricModel

# Head-size ellipsoid (metres) for the fixture meshes.
HEAD_AXES = np.array([0.08, 0.1, 0.09])
FLAME_PARENTS = [4294967295, 0, 1, 1, 1]  # official kintree_table row 0: the root's parent is uint32 -1
NUM_LANDMARKS = 51


def _mesh(n_lat: int, n_lon: int) -> tuple[np.ndarray, np.ndarray]:
    v, f = uv_sphere(n_lat, n_lon, dtype=torch.float64)
    return v.numpy() * HEAD_AXES, f.numpy()


def _weights(rng: np.random.Generator, v: int, j: int) -> np.ndarray:
    """Random skinning weights summing to 1, each vertex dominated by one joint."""
    w = rng.random((v, j)) ** 4
    w[np.arange(v), rng.integers(0, j, v)] += 1.0
    return w / w.sum(axis=1, keepdims=True)


def _regressor(rng: np.random.Generator, j: int, v: int) -> np.ndarray:
    """Each joint the average of a few random vertices (rows sum to 1, like the official regressors)."""
    r = np.zeros((j, v))
    for row in r:
        row[rng.choice(v, 6, replace=False)] = rng.random(6) + 0.1
    return r / r.sum(axis=1, keepdims=True)


def _landmarks(rng: np.random.Generator, num_faces: int) -> tuple[np.ndarray, np.ndarray]:
    b = rng.random((NUM_LANDMARKS, 3)) + 0.05
    return rng.integers(0, num_faces, NUM_LANDMARKS).astype(np.int64), b / b.sum(axis=1, keepdims=True)


def flame_arrays(seed: int = 0, n_lat: int = 14, n_lon: int = 20) -> dict[str, np.ndarray]:
    """A small FLAME model in the official pickle's keys and shapes (5 joints, 300 + 100 directions)."""
    rng = np.random.default_rng(seed)
    v, f = _mesh(n_lat, n_lon)
    n = len(v)
    return {
        "v_template": v,
        "f": f.astype(np.uint32),
        "shapedirs": rng.normal(size=(n, 3, 400)) * 1e-3,
        "posedirs": rng.normal(size=(n, 3, 36)) * 2e-3,
        "J_regressor": _regressor(rng, 5, n),
        "kintree_table": np.array([FLAME_PARENTS, list(range(5))], dtype=np.int64),
        "weights": _weights(rng, n, 5),
        "bs_style": "lbs",
        "bs_type": "lrotmin",
    }


def write_flame(folder: Path, seed: int = 0, model_name: str = "FLAME_NEUTRAL.pkl", arrays: dict | None = None) -> Path:
    """Write a FLAME folder: model pickle, static landmark embedding, texture (vt/ft) and region masks."""
    folder.mkdir(parents=True, exist_ok=True)
    arrays = flame_arrays(seed) if arrays is None else arrays
    rng = np.random.default_rng(seed + 1)
    with open(folder / model_name, "wb") as fh:
        pickle.dump(arrays, fh, protocol=2)
    idx, bary = _landmarks(rng, len(arrays["f"]))
    with open(folder / "flame_static_embedding.pkl", "wb") as fh:
        pickle.dump({"lmk_face_idx": idx, "lmk_b_coords": bary}, fh, protocol=2)
    v = arrays["v_template"]
    np.savez(folder / "FLAME_texture.npz", vt=rng.random((len(v), 2)), ft=arrays["f"].astype(np.int64))
    upper = np.flatnonzero(v[:, 1] > 0)
    with open(folder / "FLAME_masks.pkl", "wb") as fh:
        pickle.dump({"upper": upper, "lower": np.setdiff1d(np.arange(len(v)), upper), "face": np.flatnonzero(v[:, 2] > 0.03)}, fh)
    return folder


def write_smplx(folder: Path, seed: int = 0) -> Path:
    """A small SMPL-X model (55 joints, random kinematic tree) as SMPLX_NEUTRAL.npz with the official keys."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    v, f = _mesh(12, 16)
    n, j = len(v), 55
    parents = np.array([-1] + [int(rng.integers(0, i)) for i in range(1, j)])
    idx, bary = _landmarks(rng, len(f))
    np.savez(
        folder / "SMPLX_NEUTRAL.npz",
        v_template=v,
        f=f.astype(np.uint32),
        shapedirs=rng.normal(size=(n, 3, 400)) * 1e-3,
        posedirs=rng.normal(size=(n, 3, (j - 1) * 9)) * 1e-3,
        J_regressor=_regressor(rng, j, n),
        kintree_table=np.stack([np.where(parents < 0, 4294967295, parents), np.arange(j)]).astype(np.int64),
        weights=_weights(rng, n, j),
        hands_componentsl=rng.normal(size=(45, 45)),
        hands_componentsr=rng.normal(size=(45, 45)),
        hands_meanl=rng.normal(size=45) * 0.1,
        hands_meanr=rng.normal(size=45) * 0.1,
        lmk_faces_idx=idx,
        lmk_bary_coords=bary,
        vt=rng.random((n, 2)),
        ft=f.astype(np.int64),
    )
    return folder


def random_parameters(model: ParametricModel, seed: int, batch: int, angle: float, dtype=torch.float32):
    """Shape, expression, pose (axis-angle, |angle| per joint at most ``angle``) and translation."""
    g = torch.Generator().manual_seed(seed)
    shape = torch.randn(model.num_shape, generator=g, dtype=torch.float64) * 2
    expression = torch.randn(batch, model.num_expression, generator=g, dtype=torch.float64) * 2
    axis = torch.nn.functional.normalize(torch.randn(batch, model.num_joints, 3, generator=g, dtype=torch.float64), dim=-1)
    pose = axis * (torch.rand(batch, model.num_joints, 1, generator=g, dtype=torch.float64) * angle)
    translation = torch.randn(batch, 3, generator=g, dtype=torch.float64) * 0.1
    return [t.to(dtype) for t in (shape, expression, pose, translation)]


FLAME_JAW = 2  # FLAME's joints: global, neck, jaw, eyes


def jaw_frames(model: ParametricModel, jaw: float, pose_scale: float, seed: int = 0, dtype=torch.float64) -> dict:
    """Two frames of random parameters (each joint's axis-angle ``pose_scale`` times a normal draw) with FLAME's jaw
    opened by ``jaw`` radians about x: the keyword arguments of ``model(...)``."""
    gen = torch.Generator().manual_seed(seed)
    pose = pose_scale * torch.randn(2, 5, 3, generator=gen, dtype=dtype)
    pose[:, FLAME_JAW] = torch.tensor([jaw, 0.0, 0.0], dtype=dtype)
    return dict(
        shape=torch.randn(model.num_shape, generator=gen, dtype=dtype),
        expression=torch.randn(2, model.num_expression, generator=gen, dtype=dtype),
        pose=pose,
        translation=0.01 * torch.randn(2, 3, generator=gen, dtype=dtype),
    )


def smplx_flame(folder: Path, num_shape: int, num_expression: int):
    return smplx.FLAME(str(folder), num_betas=num_shape, num_expression_coeffs=num_expression, gender="neutral", ext="pkl")


def smplx_flame_output(reference, shape, expression, pose, translation):
    b = len(expression)
    return reference(
        betas=shape[None].expand(b, -1),
        expression=expression,
        global_orient=pose[:, 0],
        neck_pose=pose[:, 1],
        jaw_pose=pose[:, 2],
        leye_pose=pose[:, 3],
        reye_pose=pose[:, 4],
        transl=translation,
    )


def smplx_smplx(folder: Path, num_shape: int, num_expression: int, flat_hand_mean: bool = True):
    reference = smplx.SMPLX(
        str(folder),
        gender="neutral",
        ext="npz",
        use_pca=False,
        flat_hand_mean=flat_hand_mean,
        num_betas=num_shape,
        num_expression_coeffs=num_expression,
    )
    # smplx appends extra joints at fixed vertex ids of the full-size mesh; the small fixture has none.
    reference.vertex_joint_selector.extra_joints_idxs = torch.zeros(0, dtype=torch.long)
    return reference


def smplx_smplx_output(reference, shape, expression, pose, translation):
    b = len(expression)
    return reference(
        betas=shape[None].expand(b, -1),
        expression=expression,
        global_orient=pose[:, 0],
        body_pose=pose[:, 1:22].reshape(b, -1),
        jaw_pose=pose[:, 22],
        leye_pose=pose[:, 23],
        reye_pose=pose[:, 24],
        left_hand_pose=pose[:, 25:40].reshape(b, -1),
        right_hand_pose=pose[:, 40:55].reshape(b, -1),
        transl=translation,
        return_shaped=True,
    )
