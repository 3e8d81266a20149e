"""closest_point against analytic boxes and spheres, brute force over every triangle, trimesh, and gradcheck."""

import math

import numpy as np
import pytest
import torch
import trimesh
from hypothesis import given
from hypothesis import strategies as st
from mesh_cases import query_points, triangle_soups

from headfields import kernels
from headfields.geometry import TriangleMesh, box, closest_point, head_proxy, sample_near_surface, uv_sphere


def box_distance(p: torch.Tensor, half: torch.Tensor) -> torch.Tensor:
    """Exact signed distance to an axis-aligned box (negative inside)."""
    q = p.abs() - half
    outside = q.clamp(min=0).norm(dim=-1)
    inside = q.max(dim=-1).values.clamp(max=0)
    return outside + inside


@pytest.mark.parametrize("size", [(1.0, 1.0, 1.0), (0.5, 2.0, 3.0)])
def test_box_distance_and_sign_are_exact(device, size):
    v, f = box(size, device=device)
    g = torch.Generator().manual_seed(0)
    p = ((torch.rand(4000, 3, generator=g) * 2 - 1) * 2.5).to(device)
    truth = box_distance(p, torch.tensor(size, device=device) / 2)
    p, truth = p[truth.abs() > 1e-3], truth[truth.abs() > 1e-3]  # the sign is ambiguous on the surface
    q = closest_point(TriangleMesh(v, f), p)
    assert q.hit.all()
    torch.testing.assert_close(q.signed_distance, truth, atol=1e-5, rtol=0)
    torch.testing.assert_close(
        box_distance(q.point, torch.tensor(size, device=device) / 2), torch.zeros_like(truth), atol=1e-5, rtol=0
    )


def test_sphere_distance_within_tessellation_error(device):
    v, f = uv_sphere(64, 128, device=device)
    # The polyhedron lies between the sphere and the sphere shrunk by the chord sag of its longest edge.
    sag = 1 - math.cos(math.pi / 64)
    g = torch.Generator().manual_seed(1)
    dirs = torch.nn.functional.normalize(torch.randn(3000, 3, generator=g), dim=-1)
    radius = torch.rand(3000, 1, generator=g) * 2
    p = (dirs * radius).to(device)
    q = closest_point(TriangleMesh(v, f), p)
    r = radius[:, 0].to(device)
    assert ((q.distance - (r - 1).abs()).abs() <= sag + 1e-6).all()
    clear = (r - 1).abs() > sag + 1e-4
    assert (q.sign[clear] == torch.where(r[clear] < 1, -1.0, 1.0)).all()


@given(tris=triangle_soups(), points=query_points, dtype=st.sampled_from([torch.float32, torch.float64]))
def test_closest_point_matches_brute_force_over_every_triangle(tris, points, dtype):
    """float32 exercises Warp's own answer, float64 the torch recomputation on Warp's face."""
    mesh = TriangleMesh(torch.tensor(tris.reshape(-1, 3), dtype=dtype), torch.arange(3 * len(tris)).reshape(-1, 3))
    q = closest_point(mesh, torch.tensor(points, dtype=dtype))
    assert q.distance.dtype == dtype
    # trimesh's point-triangle distance, from every point to every triangle.
    pairs_p = np.repeat(points, len(tris), axis=0)
    pairs_t = np.tile(tris, (len(points), 1, 1))
    every = np.linalg.norm(trimesh.triangles.closest_point(pairs_t, pairs_p) - pairs_p, axis=-1).reshape(len(points), len(tris))
    assert q.hit.all()
    np.testing.assert_allclose(q.distance.numpy(), every.min(axis=1), atol=2e-5)
    # The reported point lies on the reported face, at the reported barycentrics.
    bary = q.bary.numpy()
    assert (bary >= -1e-6).all() and (bary <= 1 + 1e-6).all()
    np.testing.assert_allclose(bary.sum(-1), 1.0, atol=1e-5)
    corners = tris[q.face.numpy()]
    np.testing.assert_allclose((bary[:, :, None] * corners).sum(1), q.point.numpy(), atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(points - q.point.numpy(), axis=-1), q.distance.numpy(), atol=1e-5)


def test_flame_size_mesh_matches_trimesh():
    v, f = head_proxy()
    p = sample_near_surface(TriangleMesh(v, f), 3000, thickness=0.3, seed=3)
    q = closest_point(TriangleMesh(v, f), p)
    peer_point, peer_distance, _ = trimesh.proximity.closest_point(
        trimesh.Trimesh(v.numpy(), f.numpy(), process=False), p.numpy()
    )
    np.testing.assert_allclose(q.distance.numpy(), peer_distance, atol=1e-5)
    # Closest points agree except where two are equally close (the medial axis); there only distances must.
    same = np.linalg.norm(q.point.numpy() - peer_point, axis=-1) < 1e-4
    assert same.mean() > 0.99


def test_max_distance_reports_misses_not_garbage(device):
    v, f = box(device=device)
    p = torch.tensor([[0.0, 0.0, 0.7], [0.0, 0.0, 2.0], [0.0, 0.0, 0.0]], device=device)  # 0.2, 1.5, 0.5 away
    q = closest_point(TriangleMesh(v, f), p, max_distance=0.6)
    assert q.hit.tolist() == [True, False, True]
    assert q.face[1] == -1 and math.isinf(q.distance[1]) and q.sign[1] == 0
    assert (q.bary[1] == 0).all() and (q.point[1] == 0).all()
    torch.testing.assert_close(q.distance[[0, 2]], torch.tensor([0.2, 0.5], device=device))


def test_frames_answer_like_separate_meshes(device):
    v, f = head_proxy(device=device)
    frames = torch.stack([v, v * 1.2, v + torch.tensor([0.3, 0.0, 0.0], device=device)])
    p = sample_near_surface(TriangleMesh(v, f), 600, thickness=0.3)
    frame = torch.arange(600, device=device) % 3
    q = closest_point(TriangleMesh(frames, f), p, frame=frame)
    for b in range(3):
        single = closest_point(TriangleMesh(frames[b], f), p[frame == b])
        torch.testing.assert_close(q.distance[frame == b], single.distance)
        torch.testing.assert_close(q.point[frame == b], single.point)


def test_float64_recomputation_agrees_with_float32_kernel():
    v, f = head_proxy(dtype=torch.float64)
    p = sample_near_surface(TriangleMesh(v, f), 2000, thickness=0.2)
    q64 = closest_point(TriangleMesh(v, f), p)
    q32 = closest_point(TriangleMesh(v.float(), f), p.float())
    assert q64.distance.dtype == torch.float64 and q32.distance.dtype == torch.float32
    torch.testing.assert_close(q64.point.float(), q32.point, atol=1e-5, rtol=0)
    torch.testing.assert_close(q64.distance.float(), q32.distance, atol=1e-5, rtol=0)


def small_mesh_and_points(seed: int):
    g = torch.Generator().manual_seed(seed)
    v, f = uv_sphere(4, 6, dtype=torch.float64)
    v = v + 0.05 * torch.randn(v.shape, generator=g, dtype=torch.float64)
    p = torch.nn.functional.normalize(torch.randn(12, 3, generator=g, dtype=torch.float64), dim=-1) * 1.4
    return v, f, p


def test_gradcheck_point_and_distance_wrt_points_and_vertices():
    v, f, p = small_mesh_and_points(0)
    v.requires_grad_(True)
    p.requires_grad_(True)

    def fn(points, vertices):
        q = closest_point(TriangleMesh(vertices, f), points)
        return q.point, q.distance

    assert torch.autograd.gradcheck(fn, (p, v), eps=1e-6, atol=1e-5)


def test_distance_gradient_outside_a_box_points_away_from_it():
    # Outside an axis-aligned box the closest point is the clamp of p to the box, so the gradient of the
    # distance is normalize(p - clamp(p)): a face normal, or a direction from an edge or a corner.
    half = torch.tensor([0.5, 1.0, 1.5], dtype=torch.float64)
    v, f = box(tuple((2 * half).tolist()), dtype=torch.float64)
    g = torch.Generator().manual_seed(4)
    p = (torch.rand(500, 3, generator=g, dtype=torch.float64) * 2 - 1) * 3
    p = p[((p.abs() - half) > 0.05).any(dim=-1)].requires_grad_(True)
    q = closest_point(TriangleMesh(v, f), p)
    (grad,) = torch.autograd.grad(q.distance.sum(), p)
    clamped = torch.maximum(torch.minimum(p.detach(), half), -half)
    torch.testing.assert_close(grad, torch.nn.functional.normalize(p.detach() - clamped, dim=-1))


def test_signed_distance_of_a_miss_is_infinite_not_nan():
    v, f = box()
    q = closest_point(TriangleMesh(v, f), torch.tensor([[0.0, 0.0, 0.6], [0.0, 0.0, 3.0]]), max_distance=1.0)
    assert q.hit.tolist() == [True, False]
    assert torch.isclose(q.signed_distance[0], torch.tensor(0.1)) and q.signed_distance[1] == math.inf


def test_queries_outside_float32_range_raise():
    v, f = box(dtype=torch.float64)
    mesh = TriangleMesh(v, f)
    far = torch.tensor([[1e39, 0.0, 0.0]], dtype=torch.float64)
    with pytest.raises(ValueError, match="points: expected values within float32 range"):
        closest_point(mesh, far)


def test_cpu_launch_split_over_threads_gives_identical_results(monkeypatch):
    v, f = head_proxy()
    p = sample_near_surface(TriangleMesh(v, f), 5000, thickness=0.2)
    whole = closest_point(TriangleMesh(v, f), p)
    launches = []
    real_launch = kernels.wp.launch
    monkeypatch.setattr(kernels, "MIN_ROWS_PER_THREAD", 100)
    monkeypatch.setattr(kernels, "num_cpu_threads", lambda: 4)
    monkeypatch.setattr(kernels.wp, "launch", lambda *a, **k: (launches.append((a[0].key, k["dim"])), real_launch(*a, **k)))
    split = closest_point(TriangleMesh(v, f), p)
    assert sorted(dim for key, dim in launches if key == "_closest_point_kernel") == [1250] * 4  # (morton_order launches too)
    assert torch.equal(whole.face, split.face) and torch.equal(whole.point, split.point)


def test_strided_views_are_read_correctly(device):
    v, f = head_proxy(device=device)
    mesh = TriangleMesh(v, f)
    wide = torch.randn(500, 4, generator=torch.Generator().manual_seed(2)).to(device)
    view = wide[:, 1:]  # [N,3] but not contiguous
    q_view, q_copy = closest_point(mesh, view), closest_point(mesh, view.contiguous())
    assert torch.equal(q_view.face, q_copy.face) and torch.equal(q_view.distance, q_copy.distance)
