"""load_model / ParametricModel against smplx's own FLAME and SMPL-X modules on small random model files
written in the official layouts (smplx reads the same files), plus gradcheck and bad-input errors."""

import pickle
from pathlib import Path

import numpy as np
import pytest
import smplx
import torch
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from headfields.geometry import uv_sphere
from headfields.parametric import ParametricModel, load_model

from helpers import raises_naming

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


def smplx_smplx(folder: Path, num_shape: int, num_expression: int):
    reference = smplx.SMPLX(
        str(folder),
        gender="neutral",
        ext="npz",
        use_pca=False,
        flat_hand_mean=True,
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


@pytest.fixture(scope="module")
def flame_folder(tmp_path_factory) -> Path:
    return write_flame(tmp_path_factory.mktemp("flame"))


@pytest.fixture(scope="module")
def smplx_folder(tmp_path_factory) -> Path:
    return write_smplx(tmp_path_factory.mktemp("smplx"))


@pytest.fixture(scope="module")
def flame_pair(flame_folder):
    """headfields and smplx on the same FLAME folder, with fewer directions than the file holds."""
    return load_model(flame_folder, num_shape=20, num_expression=10), smplx_flame(flame_folder, 20, 10)


@pytest.fixture(scope="module")
def smplx_pair(smplx_folder):
    return load_model(smplx_folder, "smplx", num_shape=16, num_expression=12), smplx_smplx(smplx_folder, 16, 12)


def _close(actual, expected, atol=1e-5):
    torch.testing.assert_close(actual, expected, atol=atol, rtol=0)


@hsettings(max_examples=20)
@given(seed=st.integers(0, 2**31 - 1), batch=st.integers(1, 3), angle=st.floats(0.0, 0.7))
def test_flame_matches_smplx(flame_pair, seed, batch, angle):
    model, reference = flame_pair
    params = random_parameters(model, seed, batch, angle)
    head = model(*params)
    out = smplx_flame_output(reference, *params)
    _close(head.vertices, out.vertices)
    _close(head.joints, out.joints[:, :5])
    _close(head.landmarks, out.joints[:, 5:])  # smplx appends the landmarks to the joints


@hsettings(max_examples=15)
@given(seed=st.integers(0, 2**31 - 1), batch=st.integers(1, 3), angle=st.floats(0.0, 0.5))
def test_smplx_matches_smplx(smplx_pair, seed, batch, angle):
    model, reference = smplx_pair
    params = random_parameters(model, seed, batch, angle)
    head = model(*params)
    out = smplx_smplx_output(reference, *params)
    _close(head.vertices, out.vertices)
    _close(head.joints, out.joints[:, :55])
    _close(head.landmarks, out.joints[:, 55:])
    _close(head.canonical_vertices, out.v_shaped[0])  # template + shape only


def test_full_spaces_by_default_match_smplx(flame_folder):
    model = load_model(flame_folder)
    assert (model.num_shape, model.num_expression, model.num_joints) == (300, 100, 5)
    assert model.joint_names == ("global", "neck", "jaw", "left_eye", "right_eye")
    params = random_parameters(model, 3, 2, 0.4)
    _close(model(*params).vertices, smplx_flame_output(smplx_flame(flame_folder, 300, 100), *params).vertices)


def test_smplx_layout_and_ten_plus_ten_shapedirs(tmp_path, smplx_folder):
    """A 20-direction SMPL-X file reads shape from [0:10] and expression from [10:20], as smplx does."""
    data = dict(np.load(smplx_folder / "SMPLX_NEUTRAL.npz"))
    data["shapedirs"] = data["shapedirs"][..., :20]
    np.savez(tmp_path / "SMPLX_NEUTRAL.npz", **data)
    model = load_model(tmp_path, "smplx")
    assert (model.num_shape, model.num_expression, model.num_joints) == (10, 10, 55)
    assert model.joint_names[:1] + model.joint_names[22:25] == ("pelvis", "jaw", "left_eye", "right_eye")
    params = random_parameters(model, 5, 2, 0.3)
    _close(model(*params).vertices, smplx_smplx_output(smplx_smplx(tmp_path, 10, 10), *params).vertices)


def test_head_fields(flame_folder):
    model = load_model(flame_folder, num_shape=8, num_expression=6)
    shape, expression, pose, translation = random_parameters(model, 11, 3, 0.6)
    head = model(shape, expression, pose, translation)
    # Rest vertices: no skinning yet, so at zero pose they are the posed vertices less the translation.
    still = model(shape, expression, translation=translation)
    _close(still.rest_vertices, still.vertices - translation[:, None])
    # Canonical: expression and pose have no effect.
    _close(head.canonical_vertices, model(shape).vertices[0])
    # Joint transforms: rotation part of the root is Rodrigues of the global pose (via the matrix exponential).
    skew = torch.zeros(3, 3, 3)
    w = pose[:, 0]
    skew[:, 0, 1], skew[:, 0, 2], skew[:, 1, 2] = -w[:, 2], w[:, 1], -w[:, 0]
    skew = skew - skew.transpose(1, 2)
    _close(head.joint_transforms[:, 0, :3, :3], torch.linalg.matrix_exp(skew))
    _close(head.joint_transforms[..., 3, :], torch.tensor([0.0, 0, 0, 1]).expand(3, 5, 4), atol=0)
    # vertices = sum_j w_vj T_j [rest_v, 1]
    homogeneous = torch.cat([head.rest_vertices, torch.ones(3, head.vertices.shape[1], 1)], dim=-1)
    skinned = torch.einsum("vj,bjrc,bvc->bvr", head.skinning_weights, head.joint_transforms, homogeneous)[..., :3]
    _close(skinned, head.vertices)
    # Side files: UVs, landmarks, regions.
    arrays = flame_arrays()
    texture = np.load(flame_folder / "FLAME_texture.npz")
    _close(head.uvs, torch.tensor(texture["vt"], dtype=torch.float32), atol=0)
    assert torch.equal(head.uv_faces, torch.tensor(arrays["f"].astype(np.int64)))
    assert set(head.regions) == {"upper", "lower", "face"}
    assert head.landmarks.shape == (3, 51, 3) and head.num_frames == 3


def test_face_mask_against_brute_force(flame_folder):
    head = load_model(flame_folder, num_shape=0, num_expression=0)()
    faces = head.faces.tolist()
    upper, face = set(head.regions["upper"].tolist()), set(head.regions["face"].tolist())
    expected = [all(v in upper | face for v in f) for f in faces]
    assert head.face_mask("upper", "face").tolist() == expected
    assert head.face_mask("upper", "lower").all()
    assert not head.face_mask().any()
    with pytest.raises(ValueError, match=r"^region_names: unknown region 'lips'; known regions: face, lower, upper"):
        head.face_mask("upper", "lips")


def test_official_neutral_name_and_npz(tmp_path):
    """FLAME 2020's generic_model.pkl is found for the neutral model; the same arrays in .npz load the same."""
    arrays = flame_arrays(2)
    a = load_model(write_flame(tmp_path / "pkl", 2, "generic_model.pkl", arrays))
    (tmp_path / "npz").mkdir()
    arrays["kintree_table"] = arrays["kintree_table"].copy()
    arrays["kintree_table"][0, 0] = -1  # some converted files write the root's parent as -1
    np.savez(tmp_path / "npz" / "FLAME_MALE.npz", **{k: v for k, v in arrays.items() if isinstance(v, np.ndarray)})
    b = load_model(tmp_path / "npz", gender="male")
    params = random_parameters(a, 1, 2, 0.5)
    _close(a(*params).vertices, b(*params).vertices, atol=0)
    assert b.lmk_faces_idx is None and b.uvs is None and b.regions == {}  # no side files there
    c = load_model(tmp_path / "npz" / "FLAME_MALE.npz")  # a file path works too
    _close(c(*params).vertices, b(*params).vertices, atol=0)


def test_gradcheck_float64(flame_folder):
    model = load_model(flame_folder, num_shape=3, num_expression=4, dtype=torch.float64)
    params = [p.requires_grad_() for p in random_parameters(model, 7, 2, 0.5, dtype=torch.float64)]

    def outputs(*p):
        head = model(*p)
        return head.vertices[:, ::7], head.joints, head.joint_transforms

    assert torch.autograd.gradcheck(outputs, params)


def test_parameter_errors(flame_pair):
    model, _ = flame_pair
    e = model.num_expression
    with pytest.raises(ValueError, match=rf"^expression: expected \[B, {e}\] for this FLAME model, got \[2, 50\]"):
        model(expression=torch.zeros(2, 50))
    with pytest.raises(ValueError, match=r"^pose: expected \[B, 5, 3\] for this FLAME model, got \[2, 4, 3\]"):
        model(pose=torch.zeros(2, 4, 3))
    with pytest.raises(ValueError, match=rf"^shape: expected \[{model.num_shape}\] for this FLAME model"):
        model(shape=torch.zeros(model.num_shape + 1))
    with raises_naming("shape"):
        model(shape=torch.zeros(1, model.num_shape))  # one identity, not a batch
    with raises_naming("pose"):  # batch 2 from expression, 3 in pose
        model(expression=torch.zeros(2, e), pose=torch.zeros(3, 5, 3))
    with raises_naming("translation"):
        model(expression=torch.zeros(2, e), translation=torch.zeros(1, 3))
    with raises_naming("expression"):
        model(expression=torch.full((1, e), float("nan")))
    with raises_naming("pose"):
        model(pose=torch.zeros(1, 5, 3, dtype=torch.long))


def test_load_errors(tmp_path, flame_folder):
    with pytest.raises(ValueError, match=r"^gender: expected one of neutral, male, female, got 'other'"):
        load_model(flame_folder, gender="other")
    with pytest.raises(ValueError, match=r"^model_type: expected one of flame, smplx, got 'smpl'"):
        load_model(flame_folder, model_type="smpl")
    missing = tmp_path / "nowhere" / "FLAME_NEUTRAL.pkl"
    with pytest.raises(FileNotFoundError, match=r"^path: .*nowhere"):
        load_model(missing)
    with pytest.raises(FileNotFoundError, match=r"FLAME_FEMALE\.pkl, FLAME_FEMALE\.npz$") as err:
        load_model(flame_folder, gender="female")
    assert str(flame_folder) in str(err.value)
    with pytest.raises(FileNotFoundError, match=r"SMPLX_NEUTRAL\.npz, SMPLX_NEUTRAL\.pkl$"):
        load_model(flame_folder, "smplx")
    with pytest.raises(FileNotFoundError, match=r"FLAME_NEUTRAL\.pkl, FLAME_NEUTRAL\.npz, generic_model\.pkl$"):
        load_model(tmp_path)
    with pytest.raises(ValueError, match=r"^num_shape: expected an integer in \[0, 300\], got 301"):
        load_model(flame_folder, num_shape=301)
    with pytest.raises(ValueError, match=r"^num_expression: "):
        load_model(flame_folder, num_expression=101)
    # A FLAME file read as SMPL-X: the error names the file and the joint count it expected.
    with pytest.raises(ValueError, match=r"^path: .*FLAME_NEUTRAL\.pkl: 'J_regressor' expected shape \[55, "):
        load_model(flame_folder / "FLAME_NEUTRAL.pkl", "smplx")


def test_malformed_model_files(tmp_path):
    arrays = flame_arrays()
    del arrays["posedirs"]
    with pytest.raises(ValueError, match=r"^path: .*has no 'posedirs' array"):
        load_model(write_flame(tmp_path / "a", arrays=arrays))
    arrays = flame_arrays()
    arrays["shapedirs"] = arrays["shapedirs"][..., :15]
    with pytest.raises(ValueError, match=r"^path: .*shapedirs has 15 directions"):
        load_model(write_flame(tmp_path / "b", arrays=arrays))
    arrays = flame_arrays()
    arrays["f"] = arrays["f"] + len(arrays["v_template"])
    with pytest.raises(ValueError, match=r"^path: .*'f' expected indices in \[0, "):
        load_model(write_flame(tmp_path / "c", arrays=arrays))


def test_dtype_and_device(flame_folder, device):
    model = load_model(flame_folder, num_shape=5, num_expression=5, device=device)
    assert model.v_template.device.type == device.type and model.faces.dtype == torch.long
    params = [p.to(device) for p in random_parameters(model, 0, 2, 0.3)]
    head = model(*params)
    assert head.vertices.device.type == device.type
    cpu = load_model(flame_folder, num_shape=5, num_expression=5, dtype=torch.float64)
    _close(head.vertices.cpu().double(), cpu(*[p.cpu().double() for p in params]).vertices)
    if device.type == "cpu":
        return
    with raises_naming("expression"):
        model(expression=params[1].cpu())
