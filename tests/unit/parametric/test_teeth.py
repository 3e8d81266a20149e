"""add_teeth: VHAP's / GaussianAvatars' teeth (``add_teeth`` in their ``flame.py``) on the synthetic FLAME, with outer
lip rings picked from its lips region: the rows of vertices as their construction places them (written out here),
their directions and skinning, the old part posed as before, the faces in VHAP's numbering, and Gaussians bound to
the teeth faces inside an open mouth."""

import copy

import numpy as np
import pytest
import torch

from headfields.models.gaussian_avatars import GaussianAvatar, cpu_config
from headfields.parametric import ParametricModel, add_teeth, load_model
from headfields.parametric.teeth import TEETH_ROWS, teeth_faces
from headfields.synthetic import write_synthetic_flame

from helpers import raises_naming
from model_files import jaw_frames

DT = torch.float64
COLUMNS = 7
NECK, JAW = 1, 2
REGION = "vhap_teeth"  # the synthetic FLAME has a "teeth" region of its own


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return load_model(write_synthetic_flame(tmp_path_factory.mktemp("flame")), num_shape=20, num_expression=10, dtype=DT)


@pytest.fixture(scope="module")
def rings(model):
    """Outer lip rings of COLUMNS columns: lips vertices in a band above and below the synthetic mouth line, the
    nearest to evenly spaced x across the mouth."""
    template, lips = model.v_template, model.regions["lips"]

    def ring(low, high):
        ids = lips[(template[lips, 1] > low) & (template[lips, 1] < high)]
        return [int(ids[(template[ids, 0] - x).abs().argmin()]) for x in torch.linspace(-0.02, 0.02, COLUMNS, dtype=DT)]

    upper, lower = ring(-0.0625, -0.060), ring(-0.072, -0.0695)
    assert len(set(upper)) == len(set(lower)) == COLUMNS
    return upper, lower


@pytest.fixture(scope="module")
def teeth(model, rings):
    return add_teeth(model, *rings, region=REGION)


def frames(model, jaw: float):
    return jaw_frames(model, jaw, pose_scale=0.05, seed=1)


def test_rows_are_vhaps_construction(model, rings, teeth):
    """flame.py add_teeth: d the mean lip gap; the middle at the rings' mean height, 1.5 d behind; edges 0.1 d up
    and down (the lower 0.4 d back), roots 2 d beyond them, back rows d behind."""
    upper, lower = (model.v_template[r].numpy() for r in rings)
    d = np.linalg.norm(upper - lower, axis=1).mean()
    middle = (upper + lower) / 2
    middle[:, 1] = middle[:, 1].mean()
    middle[:, 2] -= 1.5 * d
    upper_edge = middle + [0, 0.1 * d, 0]
    lower_edge = middle - [0, 0.1 * d, 0.4 * d]
    rows = {"upper_edge": upper_edge, "lower_edge": lower_edge}
    rows |= {"upper_root": upper_edge + [0, 2 * d, 0], "lower_root": lower_edge - [0, 2 * d, 0]}
    rows |= {f"{k}_back": rows[k] - [0, 0, d] for k in list(rows)}
    v = model.num_vertices
    new = teeth.v_template[v:].numpy().reshape(len(TEETH_ROWS), COLUMNS, 3)
    for k, name in enumerate(TEETH_ROWS):
        np.testing.assert_allclose(new[k], rows[name], rtol=0, atol=1e-12, err_msg=name)
    assert teeth.num_vertices == v + 8 * COLUMNS and teeth.faces.shape[0] == model.faces.shape[0] + 12 * (COLUMNS - 1)
    assert torch.equal(teeth.faces[: model.faces.shape[0]], model.faces) and (teeth.faces[model.faces.shape[0] :] >= v).all()
    upper_ids = v + np.concatenate([np.arange(k * COLUMNS, (k + 1) * COLUMNS) for k in (0, 2, 4, 5)])
    assert sorted(teeth.regions[f"{REGION}_upper"].tolist()) == upper_ids.tolist()
    assert len(teeth.regions[REGION]) == 8 * COLUMNS and len(teeth.regions[f"{REGION}_lower"]) == 4 * COLUMNS


def test_directions_and_skinning(model, rings, teeth):
    """Shape directions the lips' mean, no expression or pose correctives, no joint weight; skinned rigidly to the
    neck (upper) and the jaw (lower)."""
    v = model.num_vertices
    lips_mean = (model.shapedirs[rings[0]] + model.shapedirs[rings[1]]) / 2
    torch.testing.assert_close(teeth.shapedirs[v:], lips_mean.repeat(8, 1, 1), rtol=0, atol=1e-15)
    assert teeth.expr_dirs[v:].abs().max() == 0 and teeth.J_regressor[:, v:].abs().max() == 0
    assert teeth.posedirs.view(teeth.posedirs.shape[0], -1, 3)[:, v:].abs().max() == 0
    upper, lower = teeth.regions[f"{REGION}_upper"], teeth.regions[f"{REGION}_lower"]
    assert (teeth.lbs_weights[upper, NECK] == 1).all() and (teeth.lbs_weights[lower, JAW] == 1).all()
    assert teeth.lbs_weights[v:].sum(1).eq(1).all()


def test_old_part_poses_as_before_and_the_teeth_follow_their_joints(model, teeth):
    v = model.num_vertices
    for jaw in (0.0, 0.35):
        given = frames(model, jaw)
        old, new = model(**given), teeth(**given)
        torch.testing.assert_close(new.vertices[:, :v], old.vertices, rtol=0, atol=1e-12)
        torch.testing.assert_close(new.joints, old.joints, rtol=0, atol=1e-12)
        for region, joint in ((f"{REGION}_upper", NECK), (f"{REGION}_lower", JAW)):
            ids = teeth.regions[region]
            transform = new.joint_transforms[:, joint]
            rest = new.rest_vertices[:, ids]
            expected = torch.einsum("brc,bnc->bnr", transform[:, :3, :3], rest) + transform[:, None, :3, 3]
            torch.testing.assert_close(new.vertices[:, ids], expected, rtol=0, atol=1e-12)


def test_faces_in_vhaps_numbering():
    """168 faces on FLAME's 15 columns; a few of VHAP's own (f_teeth_upper / f_teeth_lower, their numbering: row k
    of 15 starts at 15 k), orientation consistent across every strip of one jaw's box."""
    faces = teeth_faces(15)
    assert faces.shape == (168, 3)
    np.testing.assert_array_equal(faces[[0, 14, 15, 28, 56, 84, 112, 140]], [
        [0, 31, 30], [7, 8, 37], [8, 38, 37], [60, 75, 76], [75, 30, 76], [45, 46, 15], [90, 106, 105], [105, 106, 45],
    ])  # fmt: skip
    for half in (faces[:84], faces[84:]):  # each jaw's box: no directed edge twice, so shared edges run opposite ways
        edges = [(int(a), int(b)) for f in half for a, b in zip(f, np.roll(f, -1), strict=True)]
        assert len(set(edges)) == len(edges) and sum((b, a) in set(edges) for a, b in edges) > len(edges) // 2


def test_static_offsets_and_uvs_extend(model, rings):
    offset = torch.randn(model.num_vertices, 3, generator=torch.Generator().manual_seed(0), dtype=DT) * 1e-3
    teeth = add_teeth(model.with_static_offset(offset), *rings, region=REGION)
    v = model.num_vertices
    torch.testing.assert_close(teeth.static_offset[:v], offset, rtol=0, atol=0)
    assert teeth.static_offset[v:].abs().max() == 0
    assert teeth.uvs.shape[0] == model.uvs.shape[0] + 8 * COLUMNS and teeth.uv_faces.shape[0] == teeth.faces.shape[0]
    new_uvs = teeth.uvs[model.uvs.shape[0] :]
    assert ((new_uvs >= 0) & (new_uvs <= 1)).all()


def test_gaussians_on_the_teeth_sit_inside_an_open_mouth(model, rings, teeth):
    """GaussianAvatars binds one Gaussian a face to start, the teeth's too: with the jaw open, those on the teeth
    lie between the mouth corners, behind the lips, and the lower ones have dropped with the jaw."""
    teeth = copy.deepcopy(teeth).float()  # the avatar's Gaussians are float32
    avatar = GaussianAvatar(teeth, cpu_config())
    f = model.faces.shape[0]
    on_teeth = avatar.gaussians.parent >= f
    assert int(on_teeth.sum()) == teeth.faces.shape[0] - f
    given = dict(pose=torch.zeros(1, 5, 3))  # the neutral head, facing +z
    closed = teeth(**given)
    given["pose"][:, JAW, 0] = 0.35
    opened = teeth(**given)
    lower_faces = torch.isin(teeth.faces, teeth.regions[f"{REGION}_lower"]).all(-1)
    lower = lower_faces[avatar.gaussians.parent[on_teeth]]
    corners = torch.tensor([*rings[0], *rings[1]])
    for head in (closed, opened):
        means = avatar.posed(head, 0).means[on_teeth]
        x = head.vertices[0, corners, 0]
        assert (means[:, 0] > x.min()).all() and (means[:, 0] < x.max()).all()  # between the mouth corners
        for teeth_rows, ring in ((~lower, rings[0]), (lower, rings[1])):  # each jaw's teeth behind its own lip
            assert (means[teeth_rows, 2] < head.vertices[0, ring, 2].min()).all()
    drop = avatar.posed(closed, 0).means[on_teeth] - avatar.posed(opened, 0).means[on_teeth]
    assert (drop[lower, 1] > 0.005).all()  # the lower teeth open with the jaw (by millimetres)
    assert drop[~lower].abs().max() < 1e-6  # the upper ones stay with the skull


@pytest.mark.parametrize("sizes", [(20, 10), (5, 3)])
def test_device_dtype_and_spaces_follow_the_model(model, rings, device, sizes):
    small = ParametricModel(model.official_arrays(), num_shape=sizes[0], num_expression=sizes[1], device=device)
    small = small.with_static_offset(torch.full((small.num_vertices, 3), 1e-3, device=device))
    teeth = add_teeth(small, *rings, region=REGION)
    assert teeth.v_template.device == small.v_template.device and teeth.v_template.dtype == torch.float32
    assert teeth.static_offset.device == small.v_template.device
    assert (teeth.num_shape, teeth.num_expression) == sizes
    v = small.num_vertices
    torch.testing.assert_close(teeth.shapedirs[:v], small.shapedirs, rtol=0, atol=0)
    torch.testing.assert_close(teeth.expr_dirs[:v], small.expr_dirs, rtol=0, atol=0)
    head = teeth(pose=torch.zeros(1, 5, 3, device=device))
    assert torch.isfinite(head.vertices).all() and head.vertices.shape[1] == v + 8 * COLUMNS


def test_bad_input_is_named(model, rings):
    with raises_naming("upper_lip"):  # not FLAME's 5,023 vertices: the rings must be given
        add_teeth(model, region=REGION)
    with raises_naming("region"):
        add_teeth(model, *rings)  # the synthetic FLAME has a "teeth" region already
    with raises_naming("lower_lip"):
        add_teeth(model, rings[0], rings[1][:-1], region=REGION)
    with raises_naming("upper_lip"):
        add_teeth(model, [model.num_vertices, 0], rings[1][:2], region=REGION)
