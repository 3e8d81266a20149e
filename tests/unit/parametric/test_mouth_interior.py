"""add_mouth_interior on a FLAME without a cavity: the synthetic FLAME with its teeth and mouth-interior faces
removed, so its mouth is an open inner-lip loop as in real FLAME. Boundaries and orientation are counted
with plain Python over the faces; new vertices are recomputed from the documented construction, and posed
ones bounded by the linear-blend-skinning error of an affine combination."""

from collections import Counter

import numpy as np
import pytest
import torch
from smplx.lbs import lbs

from headfields.parametric import add_mouth_interior, load_model, read_model_file
from headfields.parametric.model import ParametricModel
from headfields.parametric.mouth import MOUTH_DEPTH, MOUTH_RINGS
from headfields.synthetic import write_synthetic_flame

from helpers import raises_naming
from model_files import jaw_frames

DT = torch.float64
JAW = 2  # FLAME's joints: global, neck, jaw, eyes


def _boundary_loops(faces: np.ndarray) -> list[list[int]]:
    """Edges used by one face, chained along the direction the faces run them."""
    uses = Counter(frozenset(e) for f in faces.tolist() for e in zip(f, f[1:] + f[:1], strict=True))
    successor = {a: b for f in faces.tolist() for a, b in zip(f, f[1:] + f[:1], strict=True) if uses[frozenset((a, b))] == 1}
    loops, seen = [], set()
    for start in successor:
        if start not in seen:
            loop = [start]
            while successor[loop[-1]] != start:
                loop.append(successor[loop[-1]])
            seen.update(loop)
            loops.append(loop)
    return loops


def _open_flame(folder) -> tuple[dict, list[int]]:
    """The synthetic FLAME's official arrays without teeth and mouth-interior faces (and the vertices only
    they used), every index remapped; and its inner lip loop."""
    data = dict(read_model_file(folder / "FLAME_NEUTRAL.pkl"))
    data.update(read_model_file(folder / "FLAME_texture.npz"))
    embedding = read_model_file(folder / "flame_static_embedding.pkl")
    masks = read_model_file(folder / "FLAME_masks.pkl")
    faces = np.asarray(data["f"], dtype=np.int64)
    cavity = np.zeros(len(data["v_template"]), bool)
    cavity[np.concatenate([masks["teeth"], masks["mouth_interior"]])] = True
    keep_face = ~cavity[faces].any(axis=1)
    keep = np.zeros(len(cavity), bool)
    keep[faces[keep_face]] = True
    assert not (keep & cavity).any()  # teeth and cavity vertices were used by those faces only
    new_id = np.cumsum(keep) - 1
    face_id = np.cumsum(keep_face) - 1
    assert keep_face[embedding["lmk_face_idx"]].all()  # landmarks sit on kept faces
    uv_keep = np.zeros(len(data["vt"]), bool)
    uv_keep[data["ft"][keep_face]] = True
    out = {
        "v_template": data["v_template"][keep],
        "f": new_id[faces[keep_face]],
        "shapedirs": data["shapedirs"][keep],
        "posedirs": data["posedirs"][keep],
        "J_regressor": data["J_regressor"][:, keep],
        "kintree_table": data["kintree_table"],
        "weights": data["weights"][keep],
        "vt": data["vt"][uv_keep],
        "ft": (np.cumsum(uv_keep) - 1)[data["ft"][keep_face]],
        "lmk_faces_idx": face_id[embedding["lmk_face_idx"]],
        "lmk_bary_coords": embedding["lmk_b_coords"],
        "regions": {k: new_id[v[keep[v]]] for k, v in masks.items() if k not in ("teeth", "mouth_interior")},
    }
    loops = _boundary_loops(out["f"])
    lips = set(out["regions"]["lips"].tolist())
    mouth = [loop for loop in loops if set(loop) <= lips]
    assert len(loops) == 2 and len(mouth) == 1  # the neck and the open inner lip loop
    return out, mouth[0]


@pytest.fixture(scope="module")
def flame_dir(tmp_path_factory):
    return write_synthetic_flame(tmp_path_factory.mktemp("flame"))


@pytest.fixture(scope="module")
def opened(flame_dir):
    return _open_flame(flame_dir)


@pytest.fixture(scope="module")
def model(opened):
    return ParametricModel(opened[0], dtype=DT)


@pytest.fixture(scope="module")
def loop(opened):
    return opened[1]


@pytest.fixture(scope="module")
def closed(model, loop):
    return add_mouth_interior(model, lip_loop=torch.tensor(loop))


def _random_frames(model, jaw: float, seed: int = 0):
    return jaw_frames(model, jaw, pose_scale=0.1, seed=seed)


def _affine_rows(model, loop: list[int], depth: float = MOUTH_DEPTH, rings: int = MOUTH_RINGS) -> torch.Tensor:
    """The documented construction: ring k = (1 - t) p_i + t b, t = k / (rings + 1); b on the way from the
    loop's centroid to the jaw joint, ``depth`` behind the centroid in z on the template."""
    v = model.num_vertices
    centroid = torch.zeros(v, dtype=DT)
    centroid[loop] = 1.0 / len(loop)
    jaw = model.J_regressor[JAW]
    s = depth / float((centroid - jaw) @ model.v_template[:, 2])
    back = (1 - s) * centroid + s * jaw
    rows = []
    for k in range(1, rings + 1):
        t = k / (rings + 1)
        for i in loop:
            row = t * back
            row[i] += 1 - t
            rows.append(row)
    return torch.stack([*rows, back])


# ---------------------------------------------------------------------------------------------------------
# Topology


def test_cavity_closes_the_lip_loop_with_consistent_orientation(model, closed, loop):
    old_faces, faces = model.faces.numpy(), closed.faces.numpy()
    assert len(_boundary_loops(old_faces)) == 2 and len(_boundary_loops(faces)) == 1  # only the neck stays open
    half_edges = Counter((a, b) for f in faces.tolist() for a, b in zip(f, f[1:] + f[:1], strict=True))
    assert max(half_edges.values()) == 1  # no edge runs the same way twice: consistent orientation ...
    edges = Counter(frozenset(e) for e in half_edges)
    lip_edges = [frozenset(e) for e in zip(loop, loop[1:] + loop[:1], strict=True)]
    assert all(edges[e] == 2 for e in lip_edges)  # ... across the lips too: each lip edge now has two faces
    new_vertices = set(range(model.num_vertices, closed.num_vertices))
    around = [e for e in edges if e & new_vertices]
    assert all(edges[e] == 2 for e in around)  # the cavity is closed
    n, r = len(loop), MOUTH_RINGS
    assert closed.num_vertices - model.num_vertices == r * n + 1 and len(faces) - len(old_faces) == (2 * r + 1) * n


def test_reversed_or_found_loop_gives_the_same_cavity(model, closed, loop):
    rows = closed.v_template[model.num_vertices :]
    for other in (add_mouth_interior(model, lip_loop=loop[::-1]), add_mouth_interior(model)):
        half_edges = torch.stack([other.faces, other.faces.roll(-1, dims=1)], dim=-1).reshape(-1, 2)
        assert len(half_edges.unique(dim=0)) == len(half_edges)  # consistently oriented
        found = other.v_template[model.num_vertices :]
        torch.testing.assert_close(torch.cdist(found, rows).amin(dim=1), torch.zeros(len(rows), dtype=DT))
    geometric = add_mouth_interior(ParametricModel(_without_regions(model), dtype=DT))  # real FLAME's rule: no "lips" region
    torch.testing.assert_close(
        torch.cdist(geometric.v_template[model.num_vertices :], rows).amin(dim=1), torch.zeros(len(rows), dtype=DT)
    )


def _without_regions(model) -> dict:
    return {
        "v_template": model.v_template.numpy(),
        "f": model.faces.numpy(),
        "shapedirs": np.concatenate([model.shapedirs.numpy(), model.expr_dirs.numpy()], axis=2),
        "posedirs": model.posedirs.T.reshape(model.num_vertices, 3, -1).numpy(),
        "J_regressor": model.J_regressor.numpy(),
        "kintree_table": np.stack([model.parents.numpy(), np.arange(5)]),
        "weights": model.lbs_weights.numpy(),
    }


# ---------------------------------------------------------------------------------------------------------
# The old model stays as it was; the new vertices are the documented affine combinations


def test_old_part_poses_as_before_and_input_is_unchanged(model, closed):
    before = {k: v.clone() for k, v in model.state_dict().items()}
    add_mouth_interior(model)
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k
    v, f = model.num_vertices, model.faces.shape[0]
    for jaw in (0.0, 0.3):
        frames = _random_frames(model, jaw)
        old, new = model(**frames), closed(**frames)
        torch.testing.assert_close(new.vertices[:, :v], old.vertices, rtol=0, atol=1e-12)
        torch.testing.assert_close(new.landmarks, old.landmarks, rtol=0, atol=1e-12)
        torch.testing.assert_close(new.joints, old.joints, rtol=0, atol=1e-12)
    assert torch.equal(closed.faces[:f], model.faces) and torch.equal(closed.uv_faces[:f], model.uv_faces)
    assert torch.equal(closed.uvs[: len(model.uvs)], model.uvs) and torch.equal(closed.lmk_faces_idx, model.lmk_faces_idx)
    assert closed.J_regressor[:, v:].abs().max() == 0
    torch.testing.assert_close(closed.lbs_weights.sum(dim=1), torch.ones(closed.num_vertices, dtype=DT))
    for name, ids in model.regions.items():
        assert torch.equal(closed.regions[name], ids)
    assert (closed.num_shape, closed.num_expression) == (model.num_shape, model.num_expression)


def test_static_offsets_extend_as_the_template(model, loop):
    """A VHAP subject's model: the cavity's offsets are the same combinations of the old ones, so it poses as the
    cavity of the offset mesh."""
    offset = torch.randn(model.num_vertices, 3, generator=torch.Generator().manual_seed(3), dtype=DT) * 5e-3
    moved = model.with_static_offset(offset)
    closed = add_mouth_interior(moved, lip_loop=torch.tensor(loop))
    v = model.num_vertices
    torch.testing.assert_close(closed.static_offset, torch.cat([offset, _affine_rows(model, loop) @ offset]), rtol=0, atol=1e-12)
    frames = _random_frames(model, 0.3, seed=2)
    torch.testing.assert_close(closed(**frames).vertices[:, :v], moved(**frames).vertices, rtol=0, atol=1e-12)


def test_new_vertices_are_the_documented_combinations(model, closed, loop):
    a = _affine_rows(model, loop)
    v = model.num_vertices
    frames = _random_frames(model, 0.3, seed=1)
    old, new = model(**frames), closed(**frames)
    torch.testing.assert_close(new.canonical_vertices[v:], a @ old.canonical_vertices, rtol=0, atol=1e-12)
    torch.testing.assert_close(new.rest_vertices[:, v:], a @ old.rest_vertices, rtol=0, atol=1e-12)
    # Posed: LBS of the combined rest point with the combined weights, exactly ...
    w = a @ model.lbs_weights  # [N, J]
    blended = torch.einsum("nj,bjxy->bnxy", w, new.joint_transforms)
    rest = new.rest_vertices[:, v:]
    expected = (blended[..., :3, :3] @ rest[..., None])[..., 0] + blended[..., :3, 3]
    torch.testing.assert_close(new.vertices[:, v:], expected, rtol=0, atol=1e-12)
    # ... which differs from the same combination of posed vertices by sum_k a_k (L_k - L_x)(x - x_k) (L: the
    # blended linear parts), since the a_k sum to 1: bound it by sum_k |a_k| |L_k - L_x| |x - x_k|.
    k = a.abs().sum(dim=0).nonzero()[:, 0]  # the old vertices the new ones combine
    linear_old = torch.einsum("kj,bjxy->bkxy", model.lbs_weights[k], new.joint_transforms)[..., :3, :3]
    gap = torch.linalg.matrix_norm(linear_old[:, None] - blended[:, :, None, :3, :3], ord=2)  # [B, N, K]
    spread = torch.cdist(rest, old.rest_vertices[:, k])  # [B, N, K]
    bound = (a[:, k].abs() * gap * spread).sum(-1)
    error = (new.vertices[:, v:] - a @ old.vertices).norm(dim=-1)
    # |a| sums to about 1, |L_k - L_x| to at most the jaw angle (0.3) and |x - x_k| to the cavity's 4 cm span
    assert (error <= bound + 1e-12).all() and bound.max() < 0.3 * 0.04


def test_region_uvs_and_placement(model, closed, loop):
    v, f = model.num_vertices, model.faces.shape[0]
    assert torch.equal(closed.regions["mouth_interior"], torch.arange(v, closed.num_vertices))
    head = closed()
    inside = head.face_mask("mouth_interior")
    touching_lips = torch.isin(closed.faces, torch.tensor(loop)).any(dim=1)
    assert not inside[:f].any() and torch.equal(inside[f:], ~touching_lips[f:])
    assert head.face_mask("lips", "mouth_interior")[f:].all()
    # behind the lips, the back wall facing the front (into the mouth), on the jaw-joint line
    loop_z = model.v_template[loop, 2].mean()
    assert (closed.v_template[v:, 2] < loop_z).all()
    # The pouch's normals face the mouth's air: capped over the lips (the cap wound like the lips, so the
    # closed surface is consistently oriented), it encloses the air with inward normals: negative volume.
    ids = torch.tensor(loop)
    for jaw in (0.0, 0.3):
        pose = torch.zeros(1, 5, 3, dtype=DT)
        pose[0, JAW, 0] = jaw
        points = closed(pose=pose).vertices[0]
        centre = points[ids].mean(dim=0).expand(len(loop), 3)
        cap = torch.stack([points[ids], points[ids.roll(-1)], centre], dim=1)
        pouch = torch.cat([points[closed.faces[f:]], cap])
        volume = torch.linalg.det(pouch).sum() / 6
        assert volume < -1e-7  # cubic metres: a thin pouch at rest (the lips 1 mm apart), cm^3 open
    torch.testing.assert_close(loop_z - closed.v_template[-1, 2], torch.tensor(MOUTH_DEPTH, dtype=DT))
    # UVs: inside the unit square, clear of every old UV triangle, wound like them
    uv = closed.uvs[len(model.uvs) :].numpy()
    assert ((uv > 0) & (uv < 1)).all()
    old_tri = model.uvs[model.uv_faces].numpy()
    assert not any(_inside(old_tri, q).any() for q in uv)
    assert _signed_area(closed.uvs[closed.uv_faces[f:]].numpy()).min() > 0 and np.median(_signed_area(old_tri)) > 0


def _signed_area(tri: np.ndarray) -> np.ndarray:
    e1, e2 = tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]
    return 0.5 * (e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0])


def _inside(tri: np.ndarray, q: np.ndarray) -> np.ndarray:
    edge, to_q = tri[:, [1, 2, 0]] - tri, q - tri  # [F, 3, 2]
    sides = [edge[:, i, 0] * to_q[:, i, 1] - edge[:, i, 1] * to_q[:, i, 0] for i in range(3)]
    return np.all(np.stack(sides) >= 0, axis=0) | np.all(np.stack(sides) <= 0, axis=0)


def test_cavity_opens_with_the_jaw(model, closed, loop):
    v, n = model.num_vertices, len(loop)
    still, open_ = closed(), closed(pose=torch.tensor([[[0.0] * 3, [0.0] * 3, [0.3, 0, 0], [0.0] * 3, [0.0] * 3]], dtype=DT))
    lower = torch.tensor([model.lbs_weights[i, JAW] > 0.99 for i in loop])  # lower lip: on the jaw
    upper = torch.tensor([model.lbs_weights[i, JAW] < 0.01 for i in loop])
    assert lower.sum() > 5 and upper.sum() > 5
    drop = (open_.vertices[0, v:, 1] - still.vertices[0, v:, 1])[:-1].view(MOUTH_RINGS, n)
    assert (drop[:, lower] < -1e-3).all()  # lower back wall moves down by millimetres ...
    assert (drop[:, lower] < drop[:, upper].min()).all()  # ... more than the upper one: the cavity opens
    assert drop[0, lower].mean() < drop[-1, lower].mean() < 0  # less towards the back centre


def test_smplx_lbs_poses_the_new_model(closed):
    frames = _random_frames(closed, 0.2, seed=2)
    ours = closed(**frames)
    betas = torch.cat([frames["shape"].expand(2, -1), frames["expression"]], dim=1)
    theirs, _ = lbs(
        betas, frames["pose"].reshape(2, -1), closed.v_template, torch.cat([closed.shapedirs, closed.expr_dirs], dim=-1),
        closed.posedirs, closed.J_regressor, closed.parents, closed.lbs_weights,
    )  # fmt: skip
    torch.testing.assert_close(ours.vertices, theirs + frames["translation"][:, None], rtol=0, atol=1e-12)


@pytest.mark.parametrize("sizes", [(20, 10), (5, 3)])
def test_device_dtype_and_spaces_follow_the_model(opened, device, sizes):
    model = ParametricModel(opened[0], num_shape=sizes[0], num_expression=sizes[1], device=device)
    closed = add_mouth_interior(model, rings=1, region="cavity")
    assert closed.v_template.device == model.v_template.device and closed.v_template.dtype == torch.float32
    assert (closed.num_shape, closed.num_expression) == sizes
    torch.testing.assert_close(closed.shapedirs[: model.num_vertices], model.shapedirs, rtol=0, atol=0)
    torch.testing.assert_close(closed.expr_dirs[: model.num_vertices], model.expr_dirs, rtol=0, atol=0)
    assert closed.regions["cavity"].numel() == len(opened[1]) + 1


def test_bad_input_is_named(model, loop, flame_dir):
    lips = model.regions["lips"]
    for bad in ([loop[0], loop[1]], loop + loop[:1], lips[:10], [1.5, 2.5, 3.5], [loop[0], loop[2], loop[1]], [-1, 0, 1]):
        with raises_naming("lip_loop"):
            add_mouth_interior(model, lip_loop=bad)
    for depth in (-0.01, 0.0, 0.5, float("nan")):
        with raises_naming("depth"):
            add_mouth_interior(model, depth=depth)
    with raises_naming("rings"):
        add_mouth_interior(model, rings=-1)
    with raises_naming("region"):
        add_mouth_interior(model, region="lips")
    with_cavity = load_model(flame_dir, dtype=DT)  # its mouth is closed: no lip loop
    for closed_mouth in (with_cavity, ParametricModel(_without_regions(with_cavity), dtype=DT)):  # lips, or geometry
        with raises_naming("lip_loop"):
            add_mouth_interior(closed_mouth, region="cavity")
