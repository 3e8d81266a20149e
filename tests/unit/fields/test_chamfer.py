"""chamfer_distance and point_chamfer_distance against geometry with a known answer (identical meshes, concentric
spheres, a plane and its offset: Chamfer L1 and L2, normal consistency, the F-score's step at the threshold) and
against brute force (trimesh's point-to-mesh distances on the same samples, scipy's cKDTree for point sets);
gradients by gradcheck; bad input named."""

import math

import numpy as np
import pytest
import torch
import trimesh
from scipy.spatial import cKDTree

from headfields.geometry import box, face_normals, uv_sphere
from headfields.metrics import ChamferDistance, chamfer_distance, point_chamfer_distance, visible_faces

from helpers import raises_naming


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_identical_meshes_are_at_zero(device, dtype):
    v, f = uv_sphere(12, 20, radius=0.8, dtype=dtype, device=device)
    c = chamfer_distance(v, f, v, f, num_samples=2000)
    assert isinstance(c, ChamferDistance) and c.symmetric.dtype == dtype and c.symmetric.device.type == device.type
    # Samples lie on the surface they are measured against: only rounding is left.
    tol = 1e-6 if dtype == torch.float32 else 1e-12
    assert c.a_distances.max() < tol and c.b_distances.max() < tol and c.symmetric < tol


@pytest.mark.parametrize("r1, r2", [(1.0, 1.3), (0.5, 0.45)])
def test_concentric_spheres_are_their_radius_gap_apart(r1, r2):
    a = uv_sphere(radius=r1, dtype=torch.float64)
    b = uv_sphere(radius=r2, dtype=torch.float64)
    c = chamfer_distance(*a, *b, num_samples=3000)
    # Tessellation moves the surfaces by at most the sagitta of a 2*pi/100 chord, r (1 - cos(pi/100)) ~ 5e-4 r.
    tol = 1e-3 * max(r1, r2)
    for value in (c.a_to_b, c.b_to_a, c.symmetric):
        assert abs(float(value) - abs(r1 - r2)) < tol
    assert math.isclose(float(c.symmetric), (float(c.a_to_b) + float(c.b_to_a)) / 2, rel_tol=1e-12)
    assert abs(float(c.squared) - (r1 - r2) ** 2) < 2 * tol * abs(r1 - r2) + tol**2  # Chamfer L2: squared distances
    assert float(c.normal_consistency) > 0.999  # matched faces face the same way, up to the tessellation


def _trimesh(vertices, faces):
    return trimesh.Trimesh(vertices.numpy(), faces.numpy(), process=False)


@pytest.mark.parametrize("make", ["box", "ellipsoid"])
def test_translated_copy_matches_trimesh_brute_force(make):
    if make == "box":
        v, f = box((0.6, 1.0, 0.8), dtype=torch.float64)
    else:
        v, f = uv_sphere(8, 12, dtype=torch.float64)
        v = v * torch.tensor([0.9, 0.5, 0.7], dtype=torch.float64)
    moved = v + torch.tensor([0.35, -0.2, 0.15], dtype=torch.float64)
    c = chamfer_distance(v, f, moved, f, num_samples=500, generator=torch.Generator().manual_seed(3))
    for samples, distances, target in ((c.a_samples, c.a_distances, moved), (c.b_samples, c.b_distances, v)):
        mesh = trimesh.Trimesh(target.numpy(), f.numpy(), process=False)
        _, expected, _ = trimesh.proximity.closest_point(mesh, samples.numpy())
        np.testing.assert_allclose(distances.numpy(), expected, atol=1e-9)
    np.testing.assert_allclose(float(c.a_to_b), c.a_distances.mean().item())
    np.testing.assert_allclose(float(c.squared), (c.a_distances.square().mean() + c.b_distances.square().mean()).item() / 2)
    # Normal agreement: each sample's face normal (trimesh's closest face on its own mesh, at distance 0) against
    # that of trimesh's closest face on the other mesh (a translated copy: the same face normals). Where that closest
    # point is on an edge or a corner, the faces there tie and either is right: compare where it is inside a face.
    # Warp picks in float32, so near the other mesh's medial axis (two faces within ~1e-7) it may pick the other.
    normals = face_normals(v, f).numpy()
    pairs = ((c.a_samples, c.a_normal_agreement, v, moved), (c.b_samples, c.b_normal_agreement, moved, v))
    for samples, agreement, own, other in pairs:
        mesh = _trimesh(other, f)
        points, _, face = trimesh.proximity.closest_point(mesh, samples.numpy())
        own_face = trimesh.proximity.closest_point(_trimesh(own, f), samples.numpy())[2]
        bary = trimesh.triangles.points_to_barycentric(mesh.triangles[face], points)
        inside = bary.min(axis=1) > 1e-6
        assert inside.mean() > 0.3
        expected = np.abs((normals[own_face] * normals[face]).sum(-1))
        assert np.mean(np.abs(agreement.numpy()[inside] - expected[inside]) > 1e-9) < 0.01
    both = (c.a_normal_agreement.mean() + c.b_normal_agreement.mean()).item() / 2
    np.testing.assert_allclose(float(c.normal_consistency), both)
    # Samples are on the mesh they were drawn from (distance 0 to it).
    own = trimesh.Trimesh(v.numpy(), f.numpy(), process=False)
    assert trimesh.proximity.closest_point(own, c.a_samples.numpy())[1].max() < 1e-12


def test_generator_controls_the_samples(device):
    v, f = uv_sphere(8, 12, device=device)
    w = v * 1.1 + 0.05
    same = [chamfer_distance(v, f, w, f, 300, generator=torch.Generator().manual_seed(7)) for _ in range(2)]
    other = chamfer_distance(v, f, w, f, 300, generator=torch.Generator().manual_seed(8))
    assert torch.equal(same[0].a_samples, same[1].a_samples) and torch.equal(same[0].symmetric, same[1].symmetric)
    assert not torch.equal(same[0].a_samples, other.a_samples)
    # The same generator state gives the same samples on every device (drawn on the CPU).
    cpu = chamfer_distance(v.cpu(), f.cpu(), w.cpu(), f.cpu(), 300, generator=torch.Generator().manual_seed(7))
    torch.testing.assert_close(same[0].a_samples.cpu(), cpu.a_samples)
    # And one generator advances: two calls in a row draw different samples.
    g = torch.Generator().manual_seed(7)
    first, second = (chamfer_distance(v, f, w, f, 300, generator=g) for _ in range(2))
    assert torch.equal(first.a_samples, same[0].a_samples) and not torch.equal(second.a_samples, first.a_samples)


def test_gradients_reach_both_meshes():
    v, f = uv_sphere(4, 5, dtype=torch.float64)
    w = (v * 1.2 + torch.tensor([0.1, 0.0, -0.05], dtype=torch.float64)).requires_grad_()
    v = v.clone().requires_grad_()

    def score(a, b):
        return chamfer_distance(a, f, b, f, num_samples=40).symmetric

    # eps 1e-4: Warp picks the closest face in float32, so next to an edge it may pick the neighbour whose
    # distance is ~1e-8 longer; a 1e-6 step would turn that into a 1e-2 slope error.
    assert torch.autograd.gradcheck(score, (v, w), eps=1e-4, atol=1e-4, fast_mode=True)
    grad_v, grad_w = torch.autograd.grad(score(v, w), (v, w))
    assert grad_v.abs().sum() > 0 and grad_w.abs().sum() > 0


def test_bad_inputs_are_named():
    v, f = box()
    with raises_naming("a_vertices"):
        chamfer_distance(v[:, :2], f, v, f)
    with raises_naming("b_vertices"):
        chamfer_distance(
            v, f, v.masked_fill(torch.zeros_like(v, dtype=torch.bool).index_fill(0, torch.tensor([2]), True), math.nan), f
        )
    with raises_naming("a_faces"):
        chamfer_distance(v, f + 8, v, f)
    with raises_naming("b_faces"):
        chamfer_distance(v, f, v, f[:, :2])
    with raises_naming("b_faces"):
        chamfer_distance(v, f, v, f[:0])
    with raises_naming("b_vertices"):  # a degenerate triangle
        chamfer_distance(v, f, v, torch.cat([f, torch.tensor([[0, 0, 1]])]))
    with raises_naming("num_samples"):
        chamfer_distance(v, f, v, f, num_samples=0)
    with raises_naming("generator"):
        chamfer_distance(v, f, v, f, generator=7)


def _square(z: float, dtype=torch.float64):
    vertices = torch.tensor([[0, 0, z], [1, 0, z], [1, 1, z], [0, 1, z]], dtype=dtype)
    return vertices, torch.tensor([[0, 1, 2], [0, 2, 3]])


def test_a_plane_and_its_offset():
    d = 0.05
    c = chamfer_distance(*_square(0.0), *_square(d), num_samples=500)
    # Same extent: every sample's closest point on the other square is straight across, at d.
    torch.testing.assert_close(c.a_distances, torch.full((500,), d, dtype=torch.float64), rtol=1e-12, atol=1e-12)
    assert math.isclose(float(c.symmetric), d, rel_tol=1e-12) and math.isclose(float(c.squared), d * d, rel_tol=1e-12)
    assert math.isclose(float(c.normal_consistency), 1.0, rel_tol=1e-12)
    # The F-score steps from 0 to 1 at the offset.
    score = c.f_score([0.999 * d, 1.001 * d, 10 * d])
    assert score.f.tolist() == [0.0, 1.0, 1.0] and score.precision.tolist() == [0.0, 1.0, 1.0]
    assert score.threshold.dtype == torch.float64
    assert c.f_score(d * 1.001).f.tolist() == [1.0]  # one threshold: a one-element result


def test_f_score_precision_and_recall():
    # a covers the left half of b only: all of a is near b (precision 1), half of b is near a (recall ~1/2).
    a_vertices = torch.tensor([[0, 0, 0], [0.5, 0, 0], [0.5, 1, 0], [0, 1, 0]], dtype=torch.float64)
    b_vertices, faces = _square(0.0)
    c = chamfer_distance(a_vertices, faces, b_vertices, faces, num_samples=4000)
    score = c.f_score(1e-6)
    recall = float((c.b_samples[:, 0] <= 0.5 + 1e-6).double().mean())
    assert score.precision.item() == 1.0 and math.isclose(score.recall.item(), recall, rel_tol=1e-12)
    assert abs(recall - 0.5) < 0.05
    assert math.isclose(score.f.item(), 2 * recall / (1 + recall), rel_tol=1e-12)
    # Nothing within the threshold: 0, not NaN.
    far = chamfer_distance(*_square(0.0), *_square(1.0), num_samples=50).f_score(0.5)
    assert far.f.item() == 0.0


def _points(seed: int, n: int, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, generator=g, dtype=dtype), torch.randn(n, 3, generator=g, dtype=dtype)


@pytest.mark.parametrize("sizes", [(300, 200), (1, 50)])
def test_point_sets_match_a_kd_tree(sizes):
    (a, na), (b, nb) = _points(0, sizes[0]), _points(1, sizes[1])
    c = point_chamfer_distance(a, b, na, nb)
    d_ab, i_ab = cKDTree(b.numpy()).query(a.numpy())
    d_ba, i_ba = cKDTree(a.numpy()).query(b.numpy())
    np.testing.assert_allclose(c.a_distances.numpy(), d_ab, rtol=1e-12)
    np.testing.assert_allclose(c.b_distances.numpy(), d_ba, rtol=1e-12)
    np.testing.assert_allclose(float(c.symmetric), (d_ab.mean() + d_ba.mean()) / 2, rtol=1e-12)
    np.testing.assert_allclose(float(c.squared), ((d_ab**2).mean() + (d_ba**2).mean()) / 2, rtol=1e-12)
    ua, ub = (n / np.linalg.norm(n, axis=1, keepdims=True) for n in (na.numpy(), nb.numpy()))
    consistency = (np.abs((ua * ub[i_ab]).sum(1)).mean() + np.abs((ub * ua[i_ba]).sum(1)).mean()) / 2
    np.testing.assert_allclose(float(c.normal_consistency), consistency, rtol=1e-12)
    for t in (0.05, 0.1, 0.2):
        p, r = (d_ab <= t).mean(), (d_ba <= t).mean()
        score = c.f_score(t)
        np.testing.assert_allclose(score.precision.item(), p)
        np.testing.assert_allclose(score.recall.item(), r)
        np.testing.assert_allclose(score.f.item(), 2 * p * r / (p + r) if p + r > 0 else 0.0, rtol=1e-12)
    assert point_chamfer_distance(a, b).normal_consistency is None  # no normals, no consistency


def test_point_sets_on_concentric_spheres():
    # The same directions at radii 1 and 1.02: each point's nearest neighbour is its own radial twin.
    g = torch.Generator().manual_seed(2)
    directions = torch.nn.functional.normalize(torch.randn(400, 3, generator=g, dtype=torch.float64), dim=-1)
    c = point_chamfer_distance(directions, 1.02 * directions, directions, -3 * directions)  # flipped, scaled normals
    assert math.isclose(float(c.symmetric), 0.02, rel_tol=1e-9) and math.isclose(float(c.squared), 0.0004, rel_tol=1e-9)
    assert math.isclose(float(c.normal_consistency), 1.0, rel_tol=1e-12)  # unsigned, normalised


def test_point_sets_are_differentiable_and_take_the_wider_dtype():
    (a, na), (b, nb) = _points(3, 12), _points(4, 9)
    a, na = a.clone().requires_grad_(), na.clone().requires_grad_()

    def score(a, na):
        c = point_chamfer_distance(a, b, na, nb)
        return c.symmetric + c.squared + c.normal_consistency

    assert torch.autograd.gradcheck(score, (a, na))
    mixed = point_chamfer_distance(a.detach().float(), b)
    assert mixed.symmetric.dtype == torch.float64


def test_point_set_bad_inputs_are_named():
    (a, na), (b, nb) = _points(5, 6), _points(6, 7)
    with raises_naming("a_points"):
        point_chamfer_distance(a[:, :2], b)
    with raises_naming("b_points"):
        point_chamfer_distance(a, b[:0])
    with raises_naming("b_normals"):
        point_chamfer_distance(a, b, na, None)
    with raises_naming("a_normals"):
        point_chamfer_distance(a, b, na[:5], nb)
    with raises_naming("b_normals"):
        point_chamfer_distance(a, b, na, nb.index_fill(0, torch.tensor([3]), 0.0))  # a zero normal
    c = point_chamfer_distance(a, b)
    for bad in (0.0, -1.0, [], [0.1, math.nan]):
        with raises_naming("thresholds"):
            c.f_score(bad)


def test_visible_faces_of_a_sphere_are_the_cap_the_eye_sees():
    # From an eye at distance 10 on +z, a unit sphere shows the cap z > 1/10 (where the view ray is tangent).
    vertices, faces = uv_sphere(48, 96, radius=1.0)
    seen = visible_faces(vertices, faces, torch.tensor([0.0, 0.0, 10.0]))
    z_seen = vertices[seen].mean(dim=1)[:, 2]
    z_all = vertices[faces].mean(dim=1)[:, 2]
    assert float(z_seen.min()) > 0.05  # nothing behind the silhouette
    assert int((z_all > 0.2).sum()) == int((z_seen > 0.2).sum())  # everything well inside the cap
    with raises_naming("eye"):
        visible_faces(vertices, faces, torch.zeros(2))
