"""knn_vertices against brute force (torch.cdist + topk), finite differences and hypothesis properties."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from headfields.geometry import TriangleMesh, box, head_proxy, knn_vertices, uv_sphere

from helpers import raises_naming

HYPOTHESIS = settings(suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


def brute_force(vertices: torch.Tensor, points: torch.Tensor, k: int):
    """Exact k nearest in float64: distances [N,k] ascending and indices."""
    d = torch.cdist(points.double().cpu(), vertices.double().cpu())
    dist, index = d.topk(k, dim=-1, largest=False, sorted=True)
    return dist, index


def assert_matches_brute_force(result, vertices: torch.Tensor, points: torch.Tensor, k: int, tol: float) -> None:
    """Distances equal the true k smallest (within ``tol``: Warp picks the order in float32), each index
    points at a vertex at exactly its reported distance, indices in a row are distinct, and rows ascend."""
    ref_dist, _ = brute_force(vertices, points, k)
    index, dist = result.index.cpu(), result.distance.cpu().double()
    assert index.shape == (len(points), k) and dist.shape == (len(points), k)
    assert index.dtype == torch.int64
    assert (index >= 0).all() and (index < len(vertices)).all()
    torch.testing.assert_close(dist, ref_dist, rtol=0, atol=tol)
    own = (points.double().cpu()[:, None] - vertices.double().cpu()[index]).norm(dim=-1)
    torch.testing.assert_close(dist, own, rtol=1e-6, atol=1e-6)
    assert (index.sort(dim=-1).values.diff(dim=-1) > 0).all()
    assert (dist.diff(dim=-1) >= -tol).all()


@pytest.mark.parametrize("k", [1, 4, 16])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_head_proxy_matches_brute_force(device, k, dtype):
    v, f = head_proxy(dtype=dtype, device=device)
    mesh = TriangleMesh(v, f)
    g = torch.Generator().manual_seed(k)
    # Points near the surface, deep inside, and far away (tens to a thousand head sizes).
    near = v[torch.randint(0, len(v), (600,), generator=g)].cpu() + 0.05 * torch.randn(600, 3, generator=g, dtype=dtype)
    inner = 0.5 * torch.randn(200, 3, generator=g, dtype=dtype)
    far_dir = torch.nn.functional.normalize(torch.randn(200, 3, generator=g, dtype=dtype), dim=-1)
    far = far_dir * torch.logspace(1, 3, 200, dtype=dtype)[:, None]
    points = torch.cat([near, inner, far]).to(device)
    result = knn_vertices(mesh, points, k)
    assert result.distance.dtype == dtype
    # Distances up to 1000: float32 squared distances resolve ~1e-4 there.
    tol = torch.cat([torch.full((800,), 1e-5), torch.full((200,), 2e-4)]).double()[:, None]
    ref_dist, ref_index = brute_force(v, points, k)
    assert (result.distance.cpu().double() - ref_dist).abs().le(tol).all()
    assert_matches_brute_force(result, v, points, k, tol=2e-4)
    # Where the k-th and (k+1)-th true neighbours are well apart, the index sets agree exactly.
    d_all, i_all = brute_force(v, points, min(k + 1, len(v)))
    gap = (d_all[:, -1] - d_all[:, k - 1]) > 1e-3
    near_rows = gap & (torch.arange(len(points)) < 800)
    assert near_rows.sum() > 400
    got = result.index.cpu()[near_rows].sort(dim=-1).values
    assert torch.equal(got, ref_index[near_rows].sort(dim=-1).values)


def test_query_at_a_vertex_finds_it(device):
    v, f = uv_sphere(10, 16, device=device)
    mesh = TriangleMesh(v, f)
    idx = torch.tensor([0, 5, 37, len(v) - 2, len(v) - 1])
    r = knn_vertices(mesh, v[idx.to(device)].clone(), 1)
    assert r.index.cpu()[:, 0].tolist() == idx.tolist()
    assert (r.distance == 0).all()


def test_k_equals_num_vertices_returns_all(device):
    v, f = box((1.0, 2.0, 4.0), device=device)
    mesh = TriangleMesh(v, f)
    g = torch.Generator().manual_seed(0)
    points = (torch.randn(50, 3, generator=g) * 3).to(device)
    r = knn_vertices(mesh, points, 8)
    assert (r.index.sort(dim=-1).values.cpu() == torch.arange(8)).all()
    assert_matches_brute_force(r, v, points, 8, tol=1e-5)


def test_unreferenced_vertices_are_candidates(device):
    # Vertices used by no face are still vertices: the nearest one may be among them.
    v, f = box(device=device)
    extra = torch.tensor([[5.0, 5.0, 5.0], [-7.0, 0.0, 0.0]], device=device)
    mesh = TriangleMesh(torch.cat([v, extra]), f)
    r = knn_vertices(mesh, torch.tensor([[5.1, 5.0, 5.0], [-6.0, 0.1, 0.0]], device=device), 1)
    assert r.index[:, 0].tolist() == [8, 9]


def test_empty_query(device):
    v, f = box(device=device)
    r = knn_vertices(TriangleMesh(v, f), torch.zeros(0, 3, device=device), 3)
    assert r.index.shape == (0, 3) and r.distance.shape == (0, 3)


# ---------------------------------------------------------------- frames and updates


def _frames(v: torch.Tensor) -> torch.Tensor:
    c, s = math.cos(0.9), math.sin(0.9)
    rot = torch.tensor([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]], dtype=v.dtype, device=v.device)
    return torch.stack([v, v * 0.5 + 0.4, v @ rot.T - 0.3])


def test_multi_frame_matches_each_frame_alone(device):
    v, f = head_proxy(device=device)
    frames = _frames(v)
    mesh = TriangleMesh(frames, f)
    g = torch.Generator().manual_seed(7)
    n = 900
    points = (torch.randn(n, 3, generator=g) * 1.2).to(device)
    frame = torch.randint(0, 3, (n,), generator=g).to(device)
    r = knn_vertices(mesh, points, 6, frame=frame)
    for b in range(3):
        sel = frame == b
        ref = knn_vertices(TriangleMesh(frames[b], f), points[sel], 6)
        assert torch.equal(r.index[sel], ref.index)
        torch.testing.assert_close(r.distance[sel], ref.distance)
        assert_matches_brute_force(ref, frames[b], points[sel], 6, tol=1e-5)
    one = knn_vertices(mesh, points, 6, frame=1)
    assert_matches_brute_force(one, frames[1], points, 6, tol=1e-5)
    assert not torch.equal(one.index, knn_vertices(mesh, points, 6, frame=0).index)


def test_updated_mesh_answers_like_a_fresh_mesh(device):
    v, f = head_proxy(device=device)
    frames = _frames(v)
    mesh = TriangleMesh(frames, f)
    g = torch.Generator().manual_seed(8)
    points = (torch.randn(500, 3, generator=g)).to(device)
    frame = torch.randint(0, 3, (500,), generator=g).to(device)
    before = knn_vertices(mesh, points, 4, frame=frame)  # builds the vertex BVHs
    moved = frames * torch.tensor([1.5, 0.7, 1.0], device=device) + 0.2
    mesh.update(moved)
    after = knn_vertices(mesh, points, 4, frame=frame)
    fresh = knn_vertices(TriangleMesh(moved.clone(), f), points, 4, frame=frame)
    assert torch.equal(after.index, fresh.index)
    torch.testing.assert_close(after.distance, fresh.distance)
    assert not torch.equal(after.index, before.index)
    for b in range(3):
        sel = frame == b
        r = knn_vertices(mesh, points[sel], 4, frame=b)
        assert_matches_brute_force(r, moved[b], points[sel], 4, tol=1e-5)


# ---------------------------------------------------------------- gradients


def _well_separated(vertices: torch.Tensor, points: torch.Tensor, k: int) -> torch.Tensor:
    """Rows whose k+1 nearest distances are at least 1e-2 apart, so finite differences keep the order."""
    d, _ = brute_force(vertices, points, k + 1)
    return (d.diff(dim=-1) > 1e-2).all(dim=-1).to(points.device)


def test_gradcheck_distance_wrt_points_and_vertices(device):
    v, f = uv_sphere(4, 6, dtype=torch.float64, device=device)
    g = torch.Generator().manual_seed(9)
    v = v + 0.05 * torch.randn(v.shape, generator=g, dtype=torch.float64).to(device)
    points = (0.8 * torch.randn(60, 3, generator=g, dtype=torch.float64)).to(device)
    k = 3
    points = points[_well_separated(v, points, k)][:10].clone()
    assert len(points) >= 5

    def fn(p, verts):
        return knn_vertices(TriangleMesh(verts, f), p, k).distance

    assert torch.autograd.gradcheck(fn, (points.requires_grad_(), v.clone().requires_grad_()), eps=1e-6, atol=1e-6)


def test_distance_gradient_is_unit_vector_from_the_vertex(device):
    v, f = uv_sphere(6, 8, dtype=torch.float64, device=device)
    g = torch.Generator().manual_seed(10)
    points = (2 * torch.randn(30, 3, generator=g, dtype=torch.float64)).to(device).requires_grad_()
    r = knn_vertices(TriangleMesh(v, f), points, 1)
    (grad,) = torch.autograd.grad(r.distance.sum(), points)
    expected = torch.nn.functional.normalize(points.detach() - v[r.index[:, 0]], dim=-1)
    torch.testing.assert_close(grad, expected)


# ---------------------------------------------------------------- properties


@HYPOTHESIS
@given(
    seed=st.integers(0, 2**31 - 1),
    num_vertices=st.integers(3, 120),
    n=st.integers(1, 60),
    k=st.integers(1, 16),
    spread=st.sampled_from([0.01, 1.0, 100.0]),
    far=st.floats(0.0, 50.0),
)
def test_random_clouds_match_brute_force(device, seed, num_vertices, n, k, spread, far):
    k = min(k, num_vertices)
    g = torch.Generator().manual_seed(seed)
    v = (torch.randn(num_vertices, 3, generator=g, dtype=torch.float64) * spread).to(device)
    # Consecutive triples as faces; vertices left over are referenced by no face.
    f = torch.arange(num_vertices // 3 * 3, device=device).reshape(-1, 3)
    mesh = TriangleMesh(v, f)
    points = (torch.randn(n, 3, generator=g, dtype=torch.float64) * spread * (1 + far)).to(device)
    r = knn_vertices(mesh, points, k)
    assert_matches_brute_force(r, v, points, k, tol=1e-5 * spread * (2 + far))


# ---------------------------------------------------------------- bad input


def test_bad_k(device, box_mesh):
    p = torch.zeros(4, 3, device=device)
    for k in (0, -1, 9, 17):  # the box has 8 vertices
        with raises_naming("k"):
            knn_vertices(box_mesh, p, k)
    with raises_naming("k"):
        knn_vertices(box_mesh, p, 2.0)
    v, f = uv_sphere(device=device)
    big = TriangleMesh(v, f)
    assert knn_vertices(big, p, 16).index.shape == (4, 16)
    with raises_naming("k"):
        knn_vertices(big, p, 17)


def test_bad_points(device, box_mesh):
    with raises_naming("points"):
        knn_vertices(box_mesh, torch.zeros(4, 2, device=device), 1)
    with raises_naming("points"):
        knn_vertices(box_mesh, torch.zeros(3, device=device), 1)
    with raises_naming("points"):
        knn_vertices(box_mesh, torch.zeros(4, 3, dtype=torch.int64, device=device), 1)
    nan = torch.zeros(4, 3, device=device)
    nan[1, 2] = math.nan
    with raises_naming("points"):
        knn_vertices(box_mesh, nan, 1)
    inf = torch.zeros(4, 3, device=device)
    inf[0, 0] = -math.inf
    with raises_naming("points"):
        knn_vertices(box_mesh, inf, 1)


def test_bad_frame(device, box_mesh):
    p = torch.zeros(4, 3, device=device)
    with raises_naming("frame"):
        knn_vertices(box_mesh, p, 1, frame=1)
    with raises_naming("frame"):
        knn_vertices(box_mesh, p, 1, frame=torch.tensor([0, 1, 0, 0], device=device))
    with raises_naming("frame"):
        knn_vertices(box_mesh, p, 1, frame=torch.zeros(5, dtype=torch.long, device=device))
    with raises_naming("frame"):
        knn_vertices(box_mesh, p, 1, frame=torch.zeros(4, device=device))
    v, f = box(device=device)
    multi = TriangleMesh(torch.stack([v, 2 * v]), f)
    with raises_naming("frame"):
        knn_vertices(multi, p, 1)
    with raises_naming("frame"):
        knn_vertices(multi, p, 1, frame=2)
    with raises_naming("frame"):
        knn_vertices(multi, p, 1, frame=torch.tensor([0, 1, -1, 0], device=device))


def test_the_search_walks_its_queries_in_morton_order_even_along_rays(monkeypatch):
    """Its warm start reads the previous query's answer, which the Morton order's neighbour serves better than a ray's
    previous sample (0.55x the time): it asks for the sorted order where the faces' searches walk rays as given."""
    v, f = head_proxy()
    mesh = TriangleMesh(v, f)
    asked = []
    query_order = TriangleMesh.query_order
    monkeypatch.setattr(TriangleMesh, "query_order", lambda self, *args, **kw: asked.append(kw) or query_order(self, *args, **kw))
    along = torch.linspace(-1.0, 1.0, 400)[:, None] * torch.tensor([0.2, 0.1, 0.3])  # one ray's samples, in order
    knn_vertices(mesh, along, k=4)
    assert asked == [{"always_sorted": True}]
