"""INSTA's triangle-frame deformer and the rigid baseline: identity, rigid motion (closed form, hypothesis),
round trip on the surface, a NumPy evaluation of INSTA's C++ kernel (src/core.cu ``warp``, affine.cuh), written
loop by loop from its maths, with brute-force nearest triangles (trimesh's point-triangle projection), the
options (area scaling, INSTA's blending of the posed and canonical frames), gradcheck, mixed frames, chaining
and bad input. The oracle and gradcheck tests run both backends (the fused Warp kernels and the torch reference;
test_triangle_kernels.py compares the two)."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import trimesh
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from headfields.deformers import (
    Canonical,
    Deformer,
    DeformerChain,
    RigidDeformer,
    RigidDeformerConfig,
    TriangleDeformerConfig,
    TriangleFrameDeformer,
)
from headfields.geometry import box, sample_surface
from headfields.parametric import load_model
from headfields.synthetic import write_synthetic_flame

from hand_heads import bent_head, make_head, near_points, rigid_head, small_sphere
from helpers import raises_naming

# ---------------------------------------------------------------- helpers


@pytest.fixture(scope="module")
def flame_model(tmp_path_factory):
    folder = tmp_path_factory.mktemp("flame")
    write_synthetic_flame(folder)
    return load_model(folder, num_shape=10, num_expression=10, dtype=torch.float64)


# ---------------------------------------------------------------- a NumPy evaluation of the formula


def np_frame(tri):
    """INSTA's frame as a 4x4: e1 = b−a, e2 = c−a, n = e1×e2/|·|, b̂ = e1×n/|·|, t = b̂×n/|·|; [t b̂ n | a]."""
    a, b, c = tri

    def unit(v):
        return v / np.linalg.norm(v)

    e1, e2 = b - a, c - a
    n = unit(np.cross(e1, e2))
    bh = unit(np.cross(e1, n))
    t = unit(np.cross(bh, n))
    m = np.eye(4)
    m[:3, :3] = np.stack([t, bh, n], axis=1)
    m[:3, 3] = a
    return m


def np_distances(points, triangles):
    """Brute force: distance of every point to every triangle, ``[N, F]`` (trimesh's projection)."""
    n, f = len(points), len(triangles)
    closest = trimesh.triangles.closest_point(np.repeat(triangles[None], n, 0).reshape(-1, 3, 3), np.repeat(points, f, 0))
    return np.linalg.norm(closest.reshape(n, f, 3) - points[:, None], axis=-1)


def np_adjacency(faces):
    """Faces sharing an edge with each face, by brute force over vertex pairs."""
    return [[j for j in range(len(faces)) if j != i and len(set(faces[i]) & set(faces[j])) == 2] for i in range(len(faces))]


def np_area(tri):
    return 0.5 * np.linalg.norm(np.cross(tri[1] - tri[0], tri[2] - tri[0]))


def np_tri2projection(tri, scaling=None):
    """INSTA's ``tri2projection`` (include/rta/affine.cuh): ``M = [[tbn, a], [0, 1]]``, with ``tbn · (s I)`` on an
    eye triangle (``mask_id == 1``), ``s`` its ``scaling``."""
    m = np_frame(tri)
    if scaling is not None:
        m[:3, :3] = m[:3, :3] @ (scaling * np.eye(3))
    return m


def np_interpolate_transformation(point, nearest, neighbours, triangles, project, invert):
    """INSTA's ``interpolate_transformation`` (affine.cuh), by its loops: weights ``exp(-4 |c_k - point|)`` for
    the edge neighbours and ``exp(-|c_0 - point|)`` for the nearest triangle, normalised by their sum; the sum of
    the weighted ``tri2projection`` matrices, inverted for the posed mesh."""
    factor = 4.0
    total = 0.0
    for j in neighbours:
        total += np.exp(-factor * np.linalg.norm(triangles[j].mean(0) - point))
    total += np.exp(-1.0 * np.linalg.norm(triangles[nearest].mean(0) - point))
    m = np.zeros((4, 4))
    for j in neighbours:
        w = np.exp(-factor * np.linalg.norm(triangles[j].mean(0) - point)) / total
        m += w * project(j)
    m += np.exp(-1.0 * np.linalg.norm(triangles[nearest].mean(0) - point)) / total * project(nearest)
    return np.linalg.inv(m) if invert else m


def np_deform(x, d, frame, face, posed, canonical, faces, scale=None, exponent=1.0, blend=None):
    """INSTA's kernel ``warp`` (src/core.cu) sample by sample: ``world_to_tri`` the (blended, on ``blend`` faces)
    posed matrix inverted, ``tri_to_canon`` the canonical one; ``transform_point`` / ``transform_direction``."""
    adjacency = np_adjacency(faces)
    canonical_tris = canonical[faces]
    points, dirs = [], []
    for xi, di, fr, f in zip(x, d, frame, face, strict=True):
        posed_tris = posed[fr][faces]

        def posed_projection(j, posed_tris=posed_tris):
            scaled = scale is not None and scale[j]
            s = (np_area(posed_tris[j]) / np_area(canonical_tris[j])) ** exponent if scaled else None
            return np_tri2projection(posed_tris[j], s)

        def canonical_projection(j):  # the canonical mesh's scaling is 1: it is built without a reference mesh
            return np_tri2projection(canonical_tris[j])

        if blend is not None and blend[f]:
            world_to_tri = np_interpolate_transformation(xi, f, adjacency[f], posed_tris, posed_projection, True)
            tri_to_canon = np_interpolate_transformation(xi, f, adjacency[f], canonical_tris, canonical_projection, False)
        else:
            world_to_tri = np.linalg.inv(posed_projection(f))
            tri_to_canon = canonical_projection(f)
        points.append((tri_to_canon @ world_to_tri @ np.append(xi, 1.0))[:3])
        rd = tri_to_canon[:3, :3] @ (world_to_tri[:3, :3] @ di)
        dirs.append(rd / np.linalg.norm(rd))
    return np.array(points), np.array(dirs)


def check_against_numpy(head, deformer, x, frame, dirs, **options):
    out = deformer(x, head, frame, dirs)
    xn, fn, dn = x.cpu().numpy(), frame.cpu().numpy(), dirs.cpu().numpy()
    posed, canonical, faces = head.vertices.cpu().numpy(), head.canonical_vertices.cpu().numpy(), head.faces.cpu().numpy()
    dist = np.stack([np_distances(xn[i : i + 1], posed[fn[i]][faces])[0] for i in range(len(xn))])
    face = out.face.cpu().numpy()
    # The reported face is a nearest one (ties: either), and the unique nearest one where there is no tie.
    np.testing.assert_allclose(dist[np.arange(len(xn)), face], dist.min(1), atol=1e-6)
    two = np.sort(dist, axis=1)[:, :2]
    clear = two[:, 1] - two[:, 0] > 1e-5
    assert clear.sum() > len(xn) // 2
    np.testing.assert_array_equal(face[clear], dist.argmin(1)[clear])
    points, ndirs = np_deform(xn, dn, fn, face, posed, canonical, faces, **options)
    np.testing.assert_allclose(out.points.cpu().numpy(), points, atol=1e-9)
    np.testing.assert_allclose(out.dirs.cpu().numpy(), ndirs, atol=1e-9)
    return out


# ---------------------------------------------------------------- tests


@pytest.mark.parametrize("backend", ["warp", "torch"])
def test_matches_a_numpy_evaluation_of_the_formula(device, backend):
    head = bent_head(frames=2, device=device)
    x, frame, dirs = near_points(head, 60, 0.3)
    out = check_against_numpy(head, TriangleFrameDeformer(TriangleDeformerConfig(backend=backend)), x, frame, dirs)
    assert out.valid.all() and out.points.dtype == torch.float64


@pytest.mark.parametrize("backend", ["warp", "torch"])
def test_options_match_the_numpy_evaluation(device, backend):
    head = bent_head(frames=2, seed=1, device=device)
    x, frame, dirs = near_points(head, 40, 0.3, seed=5)
    g = torch.Generator().manual_seed(0)
    num_faces = head.faces.shape[0]
    scale = (torch.rand(num_faces, generator=g) < 0.5).to(device)
    blend = (torch.rand(num_faces, generator=g) < 0.5).to(device)
    for exponent in (1.0, 0.5):
        config = TriangleDeformerConfig(area_exponent=exponent, backend=backend)
        deformer = TriangleFrameDeformer(config, scale_faces=scale, blend_faces=blend)
        check_against_numpy(
            head, deformer, x, frame, dirs, scale=scale.cpu().numpy(), exponent=exponent, blend=blend.cpu().numpy()
        )


def test_identity_when_posed_equals_canonical(flame_model, device):
    model = flame_model.to(device)
    head = model()  # zero expression, pose and translation: posed == canonical
    x, frame, dirs = near_points(head, 2000, 0.01)
    options = {"scale_faces": head.face_mask("eyes"), "blend_faces": head.face_mask("skin", "lips")}
    for deformer in (TriangleFrameDeformer(), TriangleFrameDeformer(**options), RigidDeformer()):
        out = deformer(x, head, frame, dirs)
        torch.testing.assert_close(out.points, x, atol=1e-7, rtol=0)
        torch.testing.assert_close(out.dirs, dirs, atol=1e-7, rtol=0)
        assert out.valid.all()


unit_quaternion = st.lists(st.floats(-1, 1), min_size=4, max_size=4).filter(lambda q: sum(c * c for c in q) > 0.01)


def quaternion_matrix(q):
    w, x, y, z = np.asarray(q) / np.linalg.norm(q)
    return np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
            [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
            [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
        ]
    )


@hsettings(max_examples=20)
@given(
    quaternions=st.lists(unit_quaternion, min_size=1, max_size=3),
    translation=st.lists(st.floats(-3, 3), min_size=3, max_size=3),
    seed=st.integers(0, 1000),
)
def test_exact_for_rigid_motion(quaternions, translation, seed):
    canonical, faces = small_sphere()
    rotation = torch.tensor(np.stack([quaternion_matrix(q) for q in quaternions]))
    shift = torch.tensor(translation, dtype=torch.float64) * torch.arange(1, len(quaternions) + 1, dtype=torch.float64)[:, None]
    head = rigid_head(canonical, faces, rotation, shift)
    x, frame, dirs = near_points(head, 50, 0.3, seed=seed)
    expected = torch.einsum("nji,nj->ni", rotation[frame], x - shift[frame])  # Rᵀ (x − t)
    expected_dirs = torch.einsum("nji,nj->ni", rotation[frame], dirs)
    # Area scaling is 1 on congruent triangles. INSTA's blending is not rigid-exact away from the canonical pose
    # (its canonical weights compare canonical centroids with the posed point): the NumPy tests cover it.
    everything = torch.ones(faces.shape[0], dtype=torch.bool)
    for deformer in (TriangleFrameDeformer(), TriangleFrameDeformer(scale_faces=everything), RigidDeformer()):
        out = deformer(x, head, frame, dirs)
        torch.testing.assert_close(out.points, expected, atol=1e-9, rtol=0)
        torch.testing.assert_close(out.dirs, expected_dirs, atol=1e-9, rtol=0)


def test_round_trip_canonical_to_posed_and_back_on_the_surface(flame_model):
    pose = torch.zeros(2, 5, 3, dtype=torch.float64)
    pose[:, 0] = torch.tensor([[0.3, -0.5, 0.2], [-0.2, 0.4, 0.1]])  # global rotation
    pose[:, 2, 0] = torch.tensor([0.25, 0.1])  # jaw open
    pose[:, 3:, 1] = torch.tensor([[0.3], [-0.2]])  # eyes turn
    head = flame_model(pose=pose, translation=torch.tensor([[0.1, -0.2, 0.3], [0.0, 0.05, -0.1]], dtype=torch.float64))

    # The map of each triangle is rigid: it returns a surface point to its canonical place exactly on the
    # triangles that moved rigidly (congruent in both meshes: same edge lengths): skull, eyeballs, the jaw's core.
    def edges(v):
        tri = v[..., head.faces, :]
        return torch.linalg.vector_norm(tri - tri.roll(1, dims=-2), dim=-1)

    congruent = (edges(head.vertices) - edges(head.canonical_vertices)).abs().amax(dim=-1).amax(dim=0) < 1e-8
    assert congruent.float().mean() > 0.3
    s = sample_surface(head.canonical_mesh, 3000, seed=3)
    keep = congruent[s.face]
    face, bary = s.face[keep], s.bary[keep]
    deformer = TriangleFrameDeformer()
    for frame in range(2):
        posed = (bary[:, :, None] * head.vertices[frame][head.faces[face]]).sum(dim=1)
        out = deformer(posed, head, frame)
        torch.testing.assert_close(out.points, s.point[keep], atol=1e-7, rtol=0)  # float32 skinning weights
        assert (out.face == face).float().mean() > 0.99  # the own face, up to shared edges


def test_rigid_deformer_undoes_the_global_pose_of_a_parametric_head(flame_model):
    pose = torch.zeros(2, 5, 3, dtype=torch.float64)
    pose[:, 0] = torch.tensor([[0.3, -0.5, 0.2], [-0.2, 0.4, 1.1]])
    head = flame_model(pose=pose, translation=torch.tensor([[0.1, -0.2, 0.3], [0.0, 0.05, -0.1]], dtype=torch.float64))
    s = sample_surface(head.canonical_mesh, 500, seed=1)
    for frame in range(2):
        posed = (s.bary[:, :, None] * head.vertices[frame][head.faces[s.face]]).sum(dim=1)
        for deformer in (RigidDeformer(), TriangleFrameDeformer()):
            out = deformer(posed, head, frame)
            torch.testing.assert_close(out.points, s.point, atol=1e-7, rtol=0)  # float32 skinning weights
    # With expressions the rigid deformer still only undoes the root motion: it leaves the mouth open.
    expression = torch.zeros(1, 10, dtype=torch.float64)
    expression[0, 4] = 2.0  # lips part
    opened = flame_model(expression=expression, pose=pose[:1], translation=torch.zeros(1, 3, dtype=torch.float64))
    lips = opened.regions["lips"]
    x = opened.vertices[0, lips]
    rigid = RigidDeformer()(x, opened, 0)
    torch.testing.assert_close(rigid.points, opened.rest_vertices[0, lips], atol=1e-9, rtol=0)  # expression kept
    rigid_error = (rigid.points - opened.canonical_vertices[lips]).norm(dim=-1).mean()
    triangle_error = (TriangleFrameDeformer()(x, opened, 0).points - opened.canonical_vertices[lips]).norm(dim=-1).mean()
    assert rigid_error > 1e-3 and triangle_error < 0.3 * rigid_error


def test_area_scaling_changes_only_the_selected_faces_and_is_the_inverse_of_a_scale():
    canonical, faces = small_sphere()
    num_faces = faces.shape[0]
    selected = torch.arange(num_faces) % 3 == 0
    # Bent: only samples on selected faces change.
    head = bent_head(frames=2, seed=2)
    x, frame, dirs = near_points(head, 100, 0.2)
    plain = TriangleFrameDeformer()(x, head, frame, dirs)
    scaled = TriangleFrameDeformer(scale_faces=selected)(x, head, frame, dirs)
    on = selected[plain.face]
    assert torch.equal(scaled.points[~on], plain.points[~on])
    assert ((scaled.points[on] - plain.points[on]).norm(dim=-1) > 1e-6).float().mean() > 0.9
    torch.testing.assert_close(scaled.dirs, plain.dirs, atol=1e-12, rtol=0)  # directions: rotation only
    # Uniformly doubled (areas x4): exponent 1/2 undoes the scale exactly; exponent 1 (INSTA) shrinks the
    # local offsets by the area ratio: a_c + (x − a_p) / 4. Unselected faces keep them: a_c + (x − a_p).
    head = make_head(2 * canonical[None], canonical, faces)
    x, frame, dirs = near_points(head, 100, 0.3)
    for exponent, divisor in ((0.5, 2.0), (1.0, 4.0)):
        out = TriangleFrameDeformer(TriangleDeformerConfig(area_exponent=exponent), scale_faces=selected)(x, head, frame, dirs)
        a_c = canonical[faces[out.face, 0]]
        on = selected[out.face][:, None]
        expected = torch.where(on, a_c + (x - 2 * a_c) / divisor, x - a_c)
        torch.testing.assert_close(out.points, expected, atol=1e-12, rtol=0)
        torch.testing.assert_close(out.dirs, dirs, atol=1e-12, rtol=0)


def test_blending_changes_only_the_selected_faces_and_runs_on_open_meshes():
    head = bent_head(frames=2, seed=3)
    num_faces = head.faces.shape[0]
    selected = torch.arange(num_faces) % 2 == 0
    x, frame, dirs = near_points(head, 100, 0.2)
    plain = TriangleFrameDeformer()(x, head, frame, dirs)
    blended = TriangleFrameDeformer(blend_faces=selected)(x, head, frame, dirs)
    on = selected[plain.face]
    assert torch.equal(blended.face, plain.face)
    assert torch.equal(blended.points[~on], plain.points[~on]) and torch.equal(blended.dirs[~on], plain.dirs[~on])
    assert ((blended.points[on] - plain.points[on]).norm(dim=-1) > 1e-6).float().mean() > 0.9
    # An open mesh: boundary faces blend with the neighbours they have.
    v, f = box(dtype=torch.float64)
    open_head = make_head((v * 1.3)[None], v, f[:-2])
    x = torch.tensor([[0.1, 0.2, 0.9], [-0.3, 0.2, 0.0]], dtype=torch.float64)
    out = TriangleFrameDeformer(blend_faces=torch.ones(10, dtype=torch.bool))(x, open_head, 0)
    assert torch.isfinite(out.points).all()


def test_max_distance_drops_exactly_the_far_samples(device):
    head = bent_head(frames=2, seed=4, device=device)
    x, frame, dirs = near_points(head, 150, 0.4)
    limit = 0.15
    xn, fn = x.cpu().numpy(), frame.cpu().numpy()
    faces = head.faces.cpu().numpy()
    posed = head.vertices.cpu().numpy()
    distance = torch.tensor([np_distances(xn[i : i + 1], posed[fn[i]][faces]).min() for i in range(len(xn))])
    clear = (distance - limit).abs() > 1e-6
    everything = torch.ones(len(faces), dtype=torch.bool, device=device)
    for deformer in (
        TriangleFrameDeformer(TriangleDeformerConfig(max_distance=limit), blend_faces=everything),
        RigidDeformer(RigidDeformerConfig(max_distance=limit)),
    ):
        out = deformer(x, head, frame, dirs)
        valid = out.valid.cpu()
        assert torch.equal(valid[clear], (distance <= limit)[clear])
        assert 0.2 < valid.float().mean() < 0.8
        assert torch.isfinite(out.points).all() and torch.isfinite(out.dirs).all()
        assert (out.face.cpu()[~valid] == -1).all() and (out.face.cpu()[valid] >= 0).all()
    plain = TriangleFrameDeformer()(x, head, frame, dirs)
    limited = TriangleFrameDeformer(TriangleDeformerConfig(max_distance=limit))(x, head, frame, dirs)
    assert torch.equal(limited.points[limited.valid], plain.points[limited.valid])
    assert torch.equal(limited.points[~limited.valid], x[~limited.valid])


@pytest.mark.parametrize("backend", ["warp", "torch"])
def test_gradients_reach_points_directions_and_both_meshes(backend):
    v, f = box(dtype=torch.float64)
    g = torch.Generator().manual_seed(0)
    noise = torch.randn(v.shape, generator=g, dtype=torch.float64)
    posed0 = v * torch.tensor([1.2, 0.9, 1.1], dtype=torch.float64) + 0.05 * noise
    # One point above the centroid of each of a few triangles: the nearest face is clear.
    pick = torch.tensor([0, 3, 5, 8, 11])
    tri = posed0[f[pick]]
    n = F.normalize(torch.linalg.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]), dim=-1)
    x0 = tri.mean(dim=1) + 0.07 * n
    d0 = F.normalize(torch.randn(5, 3, generator=g, dtype=torch.float64), dim=-1)
    selected = torch.arange(12) % 2 == 0
    config = TriangleDeformerConfig(backend=backend)
    for deformer in (TriangleFrameDeformer(config), TriangleFrameDeformer(config, scale_faces=selected, blend_faces=~selected)):

        def fn(x, d, posed, canonical, deformer=deformer):
            out = deformer(x, make_head(posed[None], canonical, f), 0, d)
            return out.points, out.dirs

        inputs = tuple(t.clone().requires_grad_() for t in (x0, d0, posed0, v))
        assert torch.autograd.gradcheck(fn, inputs, fast_mode=True)
        assert torch.equal(deformer(x0, make_head(posed0[None], v, f), 0).face, pick)


def test_mixed_frames_in_one_batch_equal_one_frame_at_a_time(device):
    head = bent_head(frames=3, seed=5, device=device)
    x, _, dirs = near_points(head, 80, 0.3)
    frame = torch.randint(0, 3, (x.shape[0],), generator=torch.Generator().manual_seed(1)).to(device)
    masks = torch.arange(head.faces.shape[0], device=device) % 2 == 0
    deformer = TriangleFrameDeformer(TriangleDeformerConfig(max_distance=0.2), scale_faces=masks, blend_faces=~masks)
    mixed = deformer(x, head, frame, dirs)
    for b in range(3):
        rows = frame == b
        alone = deformer(x[rows], head, b, dirs[rows])
        for name in ("points", "dirs", "valid", "face"):
            torch.testing.assert_close(getattr(mixed, name)[rows], getattr(alone, name), atol=1e-12, rtol=0)
        alone = RigidDeformer()(x[rows], head, b, dirs[rows])
        torch.testing.assert_close(RigidDeformer()(x, head, frame, dirs).points[rows], alone.points, atol=1e-12, rtol=0)


def test_float32_empty_batch_and_no_directions():
    canonical, faces = small_sphere(dtype=torch.float32)
    head = make_head((canonical * 1.1)[None], canonical, faces)
    out = TriangleFrameDeformer()(torch.zeros(0, 3), head, 0)
    assert out.points.shape == (0, 3) and out.dirs is None and out.valid.shape == (0,)
    x = torch.tensor([[0.0, 0.0, 1.5], [0.5, 0.5, 0.2]])
    out = TriangleFrameDeformer()(x, head)  # one-frame head: frame may be omitted
    assert out.points.dtype == torch.float32 and out.dirs is None and out.valid.all()


class _Offset(Deformer):
    """A test deformer: shifts points by +1 in x and drops those with negative y."""

    def __init__(self, hyper: int = 0):
        super().__init__()
        self.hyper = hyper

    def forward(self, x, head, frame=None, dirs=None):
        points = torch.cat([x + torch.tensor([1.0, 0.0, 0.0], dtype=x.dtype), x[:, : self.hyper]], dim=1)
        return Canonical(points=points, dirs=dirs, valid=x[:, 1] >= 0, face=None)


def test_chain_runs_deformers_in_turn():
    head = bent_head(frames=2, seed=6)
    x, frame, dirs = near_points(head, 50, 0.3)
    first = TriangleFrameDeformer(TriangleDeformerConfig(max_distance=0.2))
    out = DeformerChain(first, _Offset(hyper=2))(x, head, frame, dirs)
    alone = first(x, head, frame, dirs)
    torch.testing.assert_close(out.points[:, :3], alone.points + torch.tensor([1.0, 0, 0], dtype=torch.float64))
    torch.testing.assert_close(out.points[:, 3:], alone.points[:, :2])
    assert torch.equal(out.valid, alone.valid & (alone.points[:, 1] >= 0))
    assert torch.equal(out.face, alone.face.masked_fill(~out.valid, -1))
    with raises_naming("deformers"):
        DeformerChain(_Offset(hyper=1), first)(x, head, frame, dirs)
    chain = DeformerChain(first, _Offset(hyper=2))  # a part found by its type, wherever it sits
    assert chain.part(TriangleFrameDeformer) is first and chain.part(_Offset) is chain.deformers[1]
    with raises_naming("kind"):
        DeformerChain(_Offset(), _Offset()).part(_Offset)  # two: which one is ambiguous
    with raises_naming("kind"):
        chain.part(torch.nn.Linear)


def test_bad_input_names_the_argument():
    head = bent_head(frames=2)
    x, frame, dirs = near_points(head, 5, 0.1)
    deformer = TriangleFrameDeformer()
    with raises_naming("x"):
        deformer(x[:, :2], head, frame, dirs)
    with raises_naming("x"):
        deformer(x.long(), head, frame, dirs)
    with raises_naming("x"):
        deformer(x.masked_fill(torch.ones_like(x, dtype=torch.bool), float("nan")), head, frame, dirs)
    with raises_naming("frame"):
        deformer(x, head, frame + 2, dirs)
    with raises_naming("frame"):
        deformer(x, head, 2, dirs)
    with raises_naming("frame"):
        deformer(x, head, None, dirs)  # two frames: required
    with raises_naming("frame"):
        deformer(x, head, frame[:-1], dirs)
    with raises_naming("dirs"):
        deformer(x, head, frame, dirs[:-1])
    with raises_naming("dirs"):
        deformer(x, head, frame, dirs[:, :2])
    with raises_naming("dirs"):
        deformer(x, head, frame, torch.zeros_like(dirs))
    with raises_naming("head"):
        deformer(x, head.vertices, frame, dirs)
    with raises_naming("scale_faces"):
        TriangleFrameDeformer(scale_faces=torch.ones(head.faces.shape[0]))
    with raises_naming("blend_faces"):
        TriangleFrameDeformer(blend_faces=torch.ones(3, dtype=torch.bool))(x, head, frame, dirs)
    with raises_naming("max_distance"):
        TriangleDeformerConfig(max_distance=-1.0)
    with raises_naming("max_distance"):
        RigidDeformerConfig(max_distance=0.0)
    with raises_naming("area_exponent"):
        TriangleDeformerConfig(area_exponent=float("nan"))
    with raises_naming("backend"):
        TriangleDeformerConfig(backend="numpy")
    for deformer in (RigidDeformer(), DeformerChain(TriangleFrameDeformer())):
        with raises_naming("x"):
            deformer(x[:, :2], head, frame, dirs)
        with raises_naming("frame"):
            deformer(x, head, frame + 2, dirs)
        with raises_naming("dirs"):
            deformer(x, head, frame, dirs[:-1])


def test_the_module_saves_its_face_masks():
    masks = torch.arange(10) % 2 == 0
    deformer = TriangleFrameDeformer(scale_faces=masks)
    restored = TriangleFrameDeformer(scale_faces=torch.zeros(10, dtype=torch.bool))
    restored.load_state_dict(deformer.state_dict())
    assert torch.equal(restored.scale_faces, masks)
