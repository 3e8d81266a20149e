"""The synthetic FLAME / SMPL-X files: smplx itself loads and poses them, and the posed meshes behave like a head
(the jaw opens the mouth onto teeth and a cavity, the eyes turn in place, brows rise), checked on smplx's output."""

import pickle

import numpy as np
import pytest
import smplx
import torch
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from headfields.geometry import TriangleMesh, ray_intersect
from headfields.synthetic import (
    REGION_NAMES,
    SMPLX_REGION_NAMES,
    SYNTHETIC_EXPRESSIONS,
    write_synthetic_flame,
    write_synthetic_smplx,
)
from headfields.synthetic._head_mesh import LIP_GAP

from helpers import raises_naming

DT = torch.float64
FLAME_FILES = ("FLAME_NEUTRAL.pkl", "flame_static_embedding.pkl", "FLAME_texture.npz", "FLAME_masks.pkl")
SMPLX_FILES = ("SMPLX_NEUTRAL.npz", "SMPLX_masks.pkl")
# SMPL-X's parents as in the official model (smplx's joint order).
OFFICIAL_SMPLX_PARENTS = [-1, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9, 12, 13, 14, 16, 17, 18, 19, 15, 15, 15,
                          20, 25, 26, 20, 28, 29, 20, 31, 32, 20, 34, 35, 20, 37, 38,
                          21, 40, 41, 21, 43, 44, 21, 46, 47, 21, 49, 50, 21, 52, 53]  # fmt: skip
UPPER_INNER_LIP, LOWER_INNER_LIP, NOSE_TIP = 62 - 17, 66 - 17, 30 - 17  # iBUG-68 numbers in FLAME's 51


@pytest.fixture(scope="module")
def flame_dir(tmp_path_factory):
    return write_synthetic_flame(tmp_path_factory.mktemp("flame"), seed=0)


@pytest.fixture(scope="module")
def smplx_dir(tmp_path_factory):
    return write_synthetic_smplx(tmp_path_factory.mktemp("smplx"), seed=0)


@pytest.fixture(scope="module")
def flame(flame_dir):
    return smplx.FLAME(str(flame_dir), num_betas=300, num_expression_coeffs=100, dtype=DT)


def _load(path):
    with open(path, "rb") as f:
        return pickle.load(f, encoding="latin1")


def _regions(masks: dict, n_vertices: int) -> np.ndarray:
    region = np.full(n_vertices, "", dtype=object)
    for name, ids in masks.items():
        region[ids] = name
    return region


def _pose(model, **params):
    params = {k: torch.as_tensor(v, dtype=DT).reshape(1, -1) for k, v in params.items()}
    return model(**params)


def _hit_regions(vertices, faces, region, origins, dirs):
    hit = ray_intersect(TriangleMesh(vertices, faces), origins, dirs, frame=0)
    assert hit.hit.all()
    return [set(region[faces[f].numpy()]) for f in hit.face.tolist()]


# ---------------------------------------------------------------------------------------------------------
# smplx loads the files


def test_flame_loads_and_poses_in_smplx(flame, flame_dir):
    model = _load(flame_dir / "FLAME_NEUTRAL.pkl")
    gen = torch.Generator().manual_seed(0)
    out = flame(
        betas=torch.randn(2, 300, generator=gen, dtype=DT),
        expression=torch.randn(2, 100, generator=gen, dtype=DT),
        global_orient=0.2 * torch.randn(2, 3, generator=gen, dtype=DT),
        neck_pose=0.2 * torch.randn(2, 3, generator=gen, dtype=DT),
        jaw_pose=torch.tensor([[0.2, 0.0, 0.0]] * 2, dtype=DT),
        leye_pose=0.2 * torch.randn(2, 3, generator=gen, dtype=DT),
        reye_pose=0.2 * torch.randn(2, 3, generator=gen, dtype=DT),
    )
    n_vertices = len(model["v_template"])
    assert 2000 < n_vertices < 8000  # a few thousand, FLAME-size
    assert out.vertices.shape == (2, n_vertices, 3) and torch.isfinite(out.vertices).all()
    assert out.joints.shape == (2, 5 + 51, 3)
    rest = flame(betas=torch.zeros(1, 300, dtype=DT), expression=torch.zeros(1, 100, dtype=DT))
    torch.testing.assert_close(rest.vertices[0], torch.from_numpy(model["v_template"]))
    assert model["kintree_table"][0, 1:].tolist() == [0, 1, 1, 1] and model["kintree_table"][0, 0] == 4294967295
    assert model["shapedirs"].shape == (n_vertices, 3, 400) and model["posedirs"].shape == (n_vertices, 3, 36)
    extent = model["v_template"].max(0) - model["v_template"].min(0)
    assert np.all((extent > 0.12) & (extent < 0.35))  # metres, head-size


@pytest.mark.parametrize("use_pca", [False, True])
@pytest.mark.parametrize("flat_hand_mean", [False, True])
def test_smplx_loads_and_poses_in_smplx(smplx_dir, use_pca, flat_hand_mean):
    model = smplx.SMPLX(
        str(smplx_dir), num_betas=300, num_expression_coeffs=100, use_pca=use_pca, flat_hand_mean=flat_hand_mean,
        use_face_contour=True, dtype=DT,
    )  # fmt: skip
    gen = torch.Generator().manual_seed(1)
    hands = 6 if use_pca else 45
    out = model(
        betas=torch.randn(1, 300, generator=gen, dtype=DT),
        expression=torch.randn(1, 100, generator=gen, dtype=DT),
        body_pose=0.2 * torch.randn(1, 63, generator=gen, dtype=DT),
        jaw_pose=torch.tensor([[0.2, 0.0, 0.0]], dtype=DT),
        left_hand_pose=torch.randn(1, hands, generator=gen, dtype=DT),
        right_hand_pose=torch.randn(1, hands, generator=gen, dtype=DT),
    )
    assert torch.isfinite(out.vertices).all() and torch.isfinite(out.joints).all()
    data = np.load(smplx_dir / "SMPLX_NEUTRAL.npz")
    assert data["kintree_table"][0, 1:].tolist() == OFFICIAL_SMPLX_PARENTS[1:]
    assert data["posedirs"].shape[2] == 54 * 9 and data["J_regressor"].shape[0] == 55
    assert data["dynamic_lmk_faces_idx"].shape == (79, 17) and data["dynamic_lmk_bary_coords"].shape == (79, 17, 3)


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path, flame_dir, smplx_dir):
    """Seed 0 written again (seconds after the module's fixtures) gives the same bytes; seed 1 other bytes."""
    for write, a, files, model in (
        (write_synthetic_flame, flame_dir, FLAME_FILES, "FLAME_NEUTRAL.pkl"),
        (write_synthetic_smplx, smplx_dir, SMPLX_FILES, "SMPLX_NEUTRAL.npz"),
    ):
        b, c = write(tmp_path / f"{model}_0", seed=0), write(tmp_path / f"{model}_1", seed=1)
        for name in files:
            assert (a / name).read_bytes() == (b / name).read_bytes(), name
        assert (a / model).read_bytes() != (c / model).read_bytes()


def test_smplx_head_is_the_flame_head(flame_dir, smplx_dir):
    head, full = _load(flame_dir / "FLAME_NEUTRAL.pkl"), np.load(smplx_dir / "SMPLX_NEUTRAL.npz")
    n, m = len(head["v_template"]), len(head["f"])
    assert len(full["v_template"]) >= 9930  # smplx's default SMPL-X vertex_ids reach vertex 9929
    np.testing.assert_array_equal(full["v_template"][:n], head["v_template"])
    np.testing.assert_array_equal(full["f"][:m], head["f"])
    np.testing.assert_array_equal(full["shapedirs"][:n], head["shapedirs"])
    np.testing.assert_array_equal(full["weights"][:n][:, [12, 15, 22, 23, 24]], head["weights"])
    assert full["weights"][n:][:, [15, 22, 23, 24]].max() == 0  # the bust does not follow the head or the face
    masks = _load(smplx_dir / "SMPLX_masks.pkl")
    assert masks["torso"].min() == n


def test_bad_seed_is_named(tmp_path):
    with raises_naming("seed"):
        write_synthetic_flame(tmp_path, seed=-1)
    with raises_naming("seed"):
        write_synthetic_smplx(tmp_path, seed=1.5)


# ---------------------------------------------------------------------------------------------------------
# The head behaves like one


def test_jaw_opens_the_mouth_onto_teeth_and_cavity(flame, flame_dir):
    faces = torch.from_numpy(flame.faces.astype(np.int64))
    region = _regions(_load(flame_dir / "FLAME_masks.pkl"), flame.v_template.shape[0])
    for jaw, inside in ((0.0, {"lips"}), (0.25, {"teeth", "mouth_interior"})):
        out = _pose(flame, jaw_pose=[jaw, 0.0, 0.0])
        lmk = out.joints[0, 5:].detach()
        centre = 0.5 * (lmk[UPPER_INNER_LIP] + lmk[LOWER_INNER_LIP])
        gap = float(lmk[UPPER_INNER_LIP, 1] - lmk[LOWER_INNER_LIP, 1])
        # rays from 30 cm in front, straight back, at the mouth centre and 1.5 mm either side of it
        offsets = torch.tensor([[0.0, 0.0015, 0.0], [0.0, -0.0015, 0.0]] + ([[0.0, 0.0, 0.0]] if jaw else []), dtype=DT)
        origins = centre + offsets + torch.tensor([0.0, 0.0, 0.3], dtype=DT)
        dirs = torch.tensor([[0.0, 0.0, -1.0]], dtype=DT).expand(len(origins), 3)
        for hit in _hit_regions(out.vertices[0].detach(), faces, region, origins, dirs):
            assert hit <= inside, (jaw, hit)
        if jaw:
            assert 0.005 < gap < 0.035  # several mm to a few cm at the centre
        else:
            assert abs(gap) < 0.002 + LIP_GAP  # closed: the lips (almost) touch


def _rotation(axis_angle: torch.Tensor) -> torch.Tensor:
    angle = axis_angle.norm()
    k = axis_angle / angle
    kx = torch.tensor([[0.0, -k[2], k[1]], [k[2], 0.0, -k[0]], [-k[1], k[0], 0.0]], dtype=DT)
    return torch.eye(3, dtype=DT) + angle.sin() * kx + (1 - angle.cos()) * kx @ kx


@pytest.mark.parametrize("eye_pose", [(0.0, 0.3, 0.0), (0.25, -0.1, 0.05)])
def test_eyes_rotate_rigidly_about_their_centres(flame, flame_dir, eye_pose):
    eyes = _load(flame_dir / "FLAME_masks.pkl")["eyes"]
    rest_v = flame.v_template.detach()
    for joint, name, side in ((3, "leye_pose", 1.0), (4, "reye_pose", -1.0)):
        ids = torch.from_numpy(eyes[(side * rest_v[eyes, 0].numpy()) > 0])
        shape = {"betas": torch.linspace(-2, 2, 300, dtype=DT)[None], "expression": torch.linspace(2, -2, 100, dtype=DT)[None]}
        rest = flame(**shape)
        posed = flame(**shape, **{name: torch.tensor([eye_pose], dtype=DT)})
        centre_rest, centre = rest.joints[0, joint], posed.joints[0, joint]
        torch.testing.assert_close(centre_rest, rest.vertices[0, ids].mean(0))  # the joint is the eyeball's centre
        torch.testing.assert_close(centre, centre_rest)  # it stays put
        before, after = rest.vertices[0, ids] - centre_rest, posed.vertices[0, ids] - centre
        torch.testing.assert_close(after.norm(dim=-1), before.norm(dim=-1))  # rigid about the joint
        torch.testing.assert_close(after, before @ _rotation(torch.tensor(eye_pose, dtype=DT)).T)
        pole = int(torch.argmax(before[:, 2]))  # the front pole
        p, q = before[pole] / before[pole].norm(), after[pole] / after[pole].norm()
        assert p[2] > 0.999  # it looks forward (+z)
        # a unit vector p turned by angle a about unit axis k: cos(p, p') = cos a + (1 - cos a) (k . p)^2
        a = torch.tensor(eye_pose, dtype=DT).norm()
        k = torch.tensor(eye_pose, dtype=DT) / a
        torch.testing.assert_close(torch.dot(p, q), a.cos() + (1 - a.cos()) * torch.dot(k, p) ** 2)


def test_brow_raise_lifts_the_forehead_not_the_chin(flame):
    rest = flame().vertices[0].detach()
    expression = torch.zeros(1, 100, dtype=DT)
    expression[0, SYNTHETIC_EXPRESSIONS["brow_raise"]] = 1.0
    moved = flame(expression=expression).vertices[0].detach() - rest
    x, y, z = rest.T
    front = z > 0.05
    forehead = front & (y > 0.025) & (y < 0.05) & (x.abs() < 0.03)
    chin = front & (y < -0.09) & (y > -0.13)
    assert forehead.sum() > 10 and chin.sum() > 10
    assert (moved[forehead, 1] > 0.002).all()  # up by millimetres
    assert moved[chin].norm(dim=-1).max() < 1e-4


def test_named_expressions_move_the_face_and_all_directions_are_independent(flame_dir):
    model = _load(flame_dir / "FLAME_NEUTRAL.pkl")
    dirs = model["shapedirs"].astype(np.float64)
    peak = np.linalg.norm(dirs, axis=1).max(axis=0)  # per direction, metres per unit coefficient
    assert np.all((peak > 5e-4) & (peak < 0.015))
    s = np.linalg.svd(dirs.reshape(-1, 400), compute_uv=False)
    assert s[-1] > 1e-6 * s[0]  # 400 linearly independent directions
    posedirs = model["posedirs"]
    peak = np.linalg.norm(posedirs, axis=1).max(axis=0)
    assert np.all((peak > 1e-4) & (peak < 0.01))


# ---------------------------------------------------------------------------------------------------------
# Structure of the files


@pytest.mark.parametrize("kind", ["flame", "smplx"])
def test_regions_partition_the_vertices(flame_dir, smplx_dir, kind):
    if kind == "flame":
        masks, names = _load(flame_dir / "FLAME_masks.pkl"), REGION_NAMES
        n = len(_load(flame_dir / "FLAME_NEUTRAL.pkl")["v_template"])
    else:
        masks, names = _load(smplx_dir / "SMPLX_masks.pkl"), SMPLX_REGION_NAMES
        n = len(np.load(smplx_dir / "SMPLX_NEUTRAL.npz")["v_template"])
    expected = {"skin", "lips", "teeth", "mouth_interior", "eyes", "hair", "neck"} | ({"torso"} if kind == "smplx" else set())
    assert set(masks) == expected  # the regions the module docstring promises
    assert tuple(masks) == names  # in the exported order
    ids = np.concatenate(list(masks.values()))
    assert ids.dtype == np.int64 and np.array_equal(np.sort(ids), np.arange(n))
    assert all(len(v) > 0 for v in masks.values())


@pytest.mark.parametrize("kind", ["flame", "smplx"])
def test_uvs_in_unit_square_in_separate_unfolded_charts(flame_dir, smplx_dir, kind):
    if kind == "flame":
        uv = np.load(flame_dir / "FLAME_texture.npz")
        faces = _load(flame_dir / "FLAME_NEUTRAL.pkl")["f"]
    else:
        uv = np.load(smplx_dir / "SMPLX_NEUTRAL.npz")
        faces = uv["f"]
    vt, ft = uv["vt"], uv["ft"]
    assert ft.shape == faces.shape and ft.min() >= 0 and ft.max() < len(vt)
    assert vt.min() >= 0.0 and vt.max() <= 1.0
    a, b, c = vt[ft[:, 0]], vt[ft[:, 1]], vt[ft[:, 2]]
    signed = (b - a)[:, 0] * (c - a)[:, 1] - (b - a)[:, 1] * (c - a)[:, 0]
    assert np.all(signed > 0)  # no folded or degenerate UV triangles
    edges = np.concatenate([ft[:, [0, 1]], ft[:, [1, 2]]])
    graph = coo_matrix((np.ones(len(edges)), (edges[:, 0], edges[:, 1])), shape=(len(vt), len(vt)))
    n_charts, label = connected_components(graph, directed=False)
    used = np.unique(ft)
    boxes = [(vt[used[label[used] == k]].min(0), vt[used[label[used] == k]].max(0)) for k in np.unique(label[used])]
    assert len(boxes) >= 4  # head, mouth pocket, two eyes (+ torso)
    for i, (lo1, hi1) in enumerate(boxes):
        for lo2, hi2 in boxes[i + 1 :]:
            assert np.any(hi1 < lo2) or np.any(hi2 < lo1)  # chart boxes do not overlap


@pytest.mark.parametrize("kind", ["flame", "smplx"])
def test_regressor_and_weight_rows_are_convex(flame_dir, smplx_dir, kind):
    if kind == "flame":
        model = _load(flame_dir / "FLAME_NEUTRAL.pkl")
    else:
        model = dict(np.load(smplx_dir / "SMPLX_NEUTRAL.npz"))
    for key in ("J_regressor", "weights"):
        m = model[key]
        assert m.min() >= 0.0, key
        np.testing.assert_allclose(m.sum(axis=1), 1.0, atol=1e-12, err_msg=key)
    joints = model["J_regressor"] @ model["v_template"]
    assert np.all(np.abs(joints[:, 0]) < 0.25) and np.all(joints[:, 1] < 0.12)  # inside the model's reach
    if kind == "smplx":  # left joints on the subject's left (+x), mirrored on the right
        pairs = [(1, 2), (13, 14), (16, 17), (18, 19), (20, 21), (23, 24), (25, 40)]
        for left, right in pairs:
            assert joints[left, 0] > 0.01
            np.testing.assert_allclose(joints[right], joints[left] * [-1, 1, 1], atol=1e-9)


def test_landmarks_on_sensible_faces(flame, flame_dir):
    emb = _load(flame_dir / "flame_static_embedding.pkl")
    idx, bary = emb["lmk_face_idx"], emb["lmk_b_coords"]
    assert idx.shape == (51,) and bary.shape == (51, 3) and idx.dtype == np.int64
    assert idx.max() < len(flame.faces) and bary.min() >= 0
    np.testing.assert_allclose(bary.sum(1), 1.0)
    lmk = flame().joints[0, 5:].detach()
    assert int(torch.argmax(lmk[:, 2])) == NOSE_TIP  # the nose tip is the most forward landmark
    assert (lmk[:10, 1] > lmk[10:, 1].max()).all()  # brows above everything else
    assert (lmk[:5, 0] < 0).all() and (lmk[5:10, 0] > 0).all()  # right brow on the subject's right (-x)
    region = _regions(_load(flame_dir / "FLAME_masks.pkl"), flame.v_template.shape[0])
    for k in range(31, 51):  # mouth landmarks sit on the lips
        assert set(region[flame.faces[idx[k]].astype(np.int64)]) <= {"lips", "skin"}


def _closed_signed_volume(v: np.ndarray, f: np.ndarray) -> float:
    """Signed volume after capping each boundary loop with a fan to its centroid (outward faces: positive)."""
    edges = np.concatenate([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]])
    directed = set(map(tuple, edges.tolist()))
    boundary = np.array([e for e in directed if (e[1], e[0]) not in directed]).reshape(-1, 2)
    centre = v[np.unique(boundary)].mean(0) if len(boundary) else np.zeros(3)
    vv = np.concatenate([v, centre[None]])
    ff = np.concatenate([f, np.stack([boundary[:, 1], boundary[:, 0], np.full(len(boundary), len(v))], 1)])
    return float(np.einsum("ij,ij->i", vv[ff[:, 0]], np.cross(vv[ff[:, 1]], vv[ff[:, 2]])).sum() / 6.0)


@pytest.mark.parametrize("pose", ["rest", "posed"])
def test_flame_mesh_is_nondegenerate_and_outward(flame, pose):
    params = {} if pose == "rest" else dict(jaw_pose=[0.3, 0.0, 0.0], neck_pose=[0.2, 0.3, 0.0], leye_pose=[0.0, 0.3, 0.0])
    v = _pose(flame, **params).vertices[0].detach()
    f = flame.faces.astype(np.int64)
    TriangleMesh(v, torch.from_numpy(f))  # raises on degenerate triangles
    edges = np.concatenate([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]])
    assert len(np.unique(edges, axis=0)) == len(edges)  # consistently oriented: no directed edge twice
    assert len(np.unique(np.sort(f, axis=1), axis=0)) == len(f)  # no duplicate faces
    volume = _closed_signed_volume(v.numpy(), f)
    assert 0.002 < volume < 0.008  # cubic metres: outward, head-size (a few litres)
    # rays from all round (and above) at the head's centre first meet front faces
    gen = torch.Generator().manual_seed(0)
    d = torch.randn(256, 3, generator=gen, dtype=DT)
    d[:, 1] = d[:, 1].abs()  # from above the neck's open end
    d = d / d.norm(dim=-1, keepdim=True)
    hit = ray_intersect(TriangleMesh(v, torch.from_numpy(f)), 0.5 * d, -d, frame=0)
    assert hit.hit.all() and ((hit.normal * -d).sum(-1) < 0).all()


def test_smplx_mesh_is_nondegenerate_at_rest_and_posed(smplx_dir):
    model = smplx.SMPLX(str(smplx_dir), num_betas=300, num_expression_coeffs=100, use_pca=False, dtype=DT)
    body = torch.zeros(1, 63, dtype=DT)
    body[0, 3 * (9 - 1) + 1], body[0, 3 * (12 - 1)], body[0, 3 * (16 - 1) + 2] = 0.3, 0.2, -0.3
    faces = torch.from_numpy(model.faces.astype(np.int64))
    for params in ({}, {"body_pose": body, "jaw_pose": torch.tensor([[0.25, 0.0, 0.0]], dtype=DT)}):
        TriangleMesh(model(**params).vertices[0].detach(), faces)
    f = model.faces.astype(np.int64)
    edges = np.concatenate([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]])
    assert len(np.unique(edges, axis=0)) == len(edges)
