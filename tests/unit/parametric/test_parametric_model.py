"""load_model / ParametricModel against smplx's own FLAME and SMPL-X modules on small random model files
written in the official layouts (smplx reads the same files), plus gradcheck and bad-input errors."""

from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from headfields.parametric import load_model

from helpers import raises_naming
from model_files import (
    flame_arrays,
    random_parameters,
    smplx_flame,
    smplx_flame_output,
    smplx_smplx,
    smplx_smplx_output,
    write_flame,
    write_smplx,
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


def test_static_offset_is_added_with_the_blend_shapes(flame_folder, flame_pair):
    """VHAP's FlameHead adds its static offsets to the template plus the blend shapes, before the joints are
    regressed: smplx's FLAME with the offsets in its template poses the same mesh (the sum is the same)."""
    model, _ = flame_pair
    offset = torch.randn(model.num_vertices, 3, generator=torch.Generator().manual_seed(2)) * 5e-3
    moved = model.with_static_offset(offset)
    assert model.static_offset is None and "static offsets" in repr(moved)
    reference = smplx_flame(flame_folder, 20, 10)
    reference.v_template += offset
    params = random_parameters(model, 1, 2, 0.5)
    head = moved(*params)
    _close(head.vertices, smplx_flame_output(reference, *params).vertices)
    _close(head.canonical_vertices, model(shape=params[0]).canonical_vertices + offset)
    assert (head.joints - model(*params).joints).abs().max() > 1e-4  # the joints are regressed with the offsets
    assert moved.with_static_offset(None).static_offset is None
    with raises_naming("offset"):
        model.with_static_offset(torch.zeros(3, 3))


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


def test_smplx_hands_follow_flat_hand_mean(smplx_folder, smplx_pair):
    """The documented convention: the file's hands_mean is not added (smplx's flat_hand_mean=True); adding it
    to the hand joints' pose gives smplx's default flat_hand_mean=False."""
    model, _ = smplx_pair
    params = random_parameters(model, 11, 2, 0.5)
    reference = smplx_smplx(smplx_folder, 16, 12, flat_hand_mean=False)
    expected = smplx_smplx_output(reference, *params).vertices
    assert (model(*params).vertices - expected).abs().max() > 1e-3  # the mean hand pose matters here
    data = np.load(smplx_folder / "SMPLX_NEUTRAL.npz")
    means = torch.from_numpy(np.concatenate([data["hands_meanl"], data["hands_meanr"]]).reshape(30, 3)).float()
    shape, expression, pose, translation = params
    pose = pose.clone()
    pose[:, 25:55] += means  # hand joints 25-39 (left), 40-54 (right) in smplx's order
    _close(model(shape, expression, pose, translation).vertices, expected)


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
    # Per-frame boxes of the posed vertices.
    posed = head.vertices.detach().numpy()
    np.testing.assert_array_equal(head.bounds.numpy(), np.stack([posed.min(axis=1), posed.max(axis=1)], axis=1))


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

    # fast_mode: checks v^T J u for random u, v against finite differences (not every one of the ~436 outputs).
    assert torch.autograd.gradcheck(outputs, params, fast_mode=True)


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
