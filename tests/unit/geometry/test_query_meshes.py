"""Mesh queries on head-like meshes other than head_proxy (a lumpy sphere, a marching-cubes re-mesh), against brute
force: knn_vertices' ball search with its warm start, and closest_point(signed=False)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from mesh_cases import brute_closest_distance, lumpy_sphere, remeshed_blob

from headfields import kernels
from headfields.device_paths import cuda_paths
from headfields.geometry import (
    TriangleMesh,
    closest_point,
    knn_vertices,
    ray_intersect,
    sample_near_surface,
)

from helpers import raises_naming


def brute_knn_distance(vertices: torch.Tensor, points: torch.Tensor, k: int) -> torch.Tensor:
    return torch.cdist(points.double().cpu(), vertices.double().cpu()).topk(k, dim=-1, largest=False).values


def shell_and_far_points(mesh: TriangleMesh, n: int, seed: int) -> torch.Tensor:
    """Points near the surface, in a wide shell, and far away, shuffled: Morton-order neighbours are then often far
    apart, so the warm start's bound is sometimes loose or useless."""
    g = torch.Generator().manual_seed(seed)
    near = sample_near_surface(mesh, n // 2, thickness=0.05, seed=seed)
    wide = sample_near_surface(mesh, n // 4, thickness=1.0, seed=seed + 1)
    far = torch.nn.functional.normalize(torch.randn(n - n // 2 - n // 4, 3, generator=g), dim=-1) * 50.0
    points = torch.cat([near, wide, far.to(near)])
    return points[torch.randperm(len(points), generator=g).to(points.device)]


MESHES = {"lumpy sphere": lumpy_sphere, "re-meshed blob": remeshed_blob}


@pytest.mark.parametrize("name", list(MESHES))
@pytest.mark.parametrize("k", [1, 4, 16])
def test_knn_matches_brute_force_on_other_meshes(device, name, k):
    v, f = MESHES[name]()
    mesh = TriangleMesh(v.to(device), f.to(device))
    points = shell_and_far_points(mesh, 3000, seed=k)
    r = knn_vertices(mesh, points, k)
    torch.testing.assert_close(r.distance.double().cpu(), brute_knn_distance(v, points, k), rtol=1e-6, atol=1e-5)
    own = (points.cpu()[:, None] - v[r.index.cpu()]).norm(dim=-1)
    torch.testing.assert_close(r.distance.cpu(), own)


def test_knn_ties_on_a_lattice_are_all_found():
    """Queries at cell centres of a vertex lattice have 8 nearest vertices at one distance, on the ball's boundary
    once the warm start's bound is tight: none may be dropped by rounding in the ball test."""
    axis = torch.arange(6, dtype=torch.float32) * 0.1
    grid = torch.stack(torch.meshgrid(axis, axis, axis, indexing="ij"), dim=-1).reshape(-1, 3)
    mesh = TriangleMesh(grid, torch.tensor([[0, 1, 6]]))  # one triangle; the other vertices are candidates all the same
    centres = grid[(grid < 0.45).all(dim=1)] + 0.05
    for k in (4, 8, 9):
        r = knn_vertices(mesh, centres, k)
        torch.testing.assert_close(r.distance.double(), brute_knn_distance(grid, centres, k), rtol=0, atol=1e-6)
        assert (r.index.sort(dim=-1).values.diff(dim=-1) > 0).all()


def test_knn_frames_of_very_different_sizes_match_brute_force(device):
    """Rows of several frames interleaved: a warm start must never carry a bound from one frame to another."""
    v, f = lumpy_sphere()
    frames = torch.stack([v, v * 0.01, v * 30 + 5, v.flip(-1)]).to(device)
    mesh = TriangleMesh(frames, f.to(device))
    g = torch.Generator().manual_seed(3)
    n = 2000
    frame = torch.randint(0, 4, (n,), generator=g).to(device)
    points = (torch.randn(n, 3, generator=g) * 1.5).to(device)
    r = knn_vertices(mesh, points, 4, frame=frame)
    for b in range(4):
        sel = frame == b
        ref = brute_knn_distance(frames[b], points[sel], 4)
        torch.testing.assert_close(r.distance[sel].double().cpu(), ref, rtol=1e-6, atol=1e-5 * float(frames[b].abs().max()))


def test_knn_split_cpu_launch_gives_identical_results(monkeypatch):
    """Each chunk of a split CPU launch starts its warm start afresh; the answer must not depend on the split."""
    v, f = remeshed_blob()
    mesh = TriangleMesh(v, f)
    points = shell_and_far_points(mesh, 4000, seed=5)
    whole = knn_vertices(mesh, points, 4)
    monkeypatch.setattr(kernels, "MIN_ROWS_PER_THREAD", 100)
    monkeypatch.setattr(kernels, "num_cpu_threads", lambda: 7)
    split = knn_vertices(mesh, points, 4)
    assert torch.equal(whole.index, split.index)


@settings(max_examples=25)
@given(seed=st.integers(0, 2**31 - 1), k=st.integers(1, 16), scale=st.sampled_from([1e-3, 1.0, 1e3]))
def test_knn_random_lumpy_spheres_match_brute_force(seed, k, scale):
    v, f = lumpy_sphere(8, 12, seed=seed % 1000)
    v = v * scale
    mesh = TriangleMesh(v, f)
    g = torch.Generator().manual_seed(seed)
    points = torch.randn(200, 3, generator=g) * scale * torch.rand(200, 1, generator=g) * 4
    r = knn_vertices(mesh, points, k)
    torch.testing.assert_close(r.distance.double(), brute_knn_distance(v, points, k), rtol=1e-6, atol=1e-5 * scale)


# ---------------------------------------------------------------- closest_point(signed=False)


@pytest.mark.parametrize("name", list(MESHES))
def test_unsigned_closest_point_matches_brute_force_and_the_signed_call(device, name):
    v, f = MESHES[name]()
    mesh = TriangleMesh(v.to(device), f.to(device))
    points = shell_and_far_points(mesh, 600, seed=1)
    unsigned = closest_point(mesh, points, signed=False)
    signed = closest_point(mesh, points)
    assert unsigned.hit.all() and (unsigned.sign == 0).all()
    np.testing.assert_allclose(unsigned.distance.cpu().numpy(), brute_closest_distance(v, f, points), rtol=1e-6, atol=2e-5)
    torch.testing.assert_close(unsigned.distance, signed.distance, rtol=1e-6, atol=1e-6)
    # Either face of a shared edge or vertex may be reported; the point lies on the reported face at its barycentrics.
    corners = v.to(device)[f.to(device)[unsigned.face]]
    torch.testing.assert_close((unsigned.bary[:, :, None] * corners).sum(1), unsigned.point, rtol=0, atol=1e-5)
    assert (signed.sign != 0).all()


def test_unsigned_closest_point_on_frames_and_with_max_distance(device):
    v, f = lumpy_sphere()
    frames = torch.stack([v, v * 2.0, v + 3.0]).to(device)
    mesh = TriangleMesh(frames, f.to(device))
    g = torch.Generator().manual_seed(2)
    points = (torch.randn(900, 3, generator=g) * 2).to(device)
    frame = (torch.arange(900) % 3).to(device)
    q = closest_point(mesh, points, frame=frame, max_distance=0.5, signed=False)
    for b in range(3):
        sel = frame == b
        truth = torch.from_numpy(brute_closest_distance(frames[b], f, points[sel])).to(device)
        assert torch.equal(q.hit[sel], truth < 0.5)
        hit = q.hit[sel]
        torch.testing.assert_close(q.distance[sel][hit].double(), truth[hit], rtol=1e-6, atol=2e-5)
        assert (q.face[sel][~hit] == -1).all() and torch.isinf(q.distance[sel][~hit]).all()
    assert (q.sign == 0).all()


def test_unsigned_closest_point_keeps_gradients():
    v, f = lumpy_sphere(6, 8, dtype=torch.float64)
    v.requires_grad_(True)
    p = (torch.randn(10, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 1.5).requires_grad_(True)

    def fn(points, vertices):
        return closest_point(TriangleMesh(vertices, f), points, signed=False).distance

    assert torch.autograd.gradcheck(fn, (p, v), eps=1e-6, atol=1e-5)


def test_signed_must_be_a_bool(box_mesh):
    with raises_naming("signed"):
        closest_point(box_mesh, torch.zeros(1, 3, device=box_mesh.device), signed=1)


def test_validate_false_reads_nothing_back(host_sync_spy):
    """validate=False: closest points and first hits (float32, no gradient) read nothing back from the device (each
    read a host synchronisation on CUDA), and answer as the checked call does; validate=True reads the frame
    indices, which the spy catches."""
    v, f = lumpy_sphere()
    mesh = TriangleMesh(torch.stack([v, v * 1.2]), f)
    g = torch.Generator().manual_seed(3)
    points = torch.randn(2000, 3, generator=g)
    frame = torch.randint(0, 2, (2000,), generator=g)
    dirs = -points / points.norm(dim=1, keepdim=True)
    want_near = closest_point(mesh, points, frame)  # also builds the BVHs and compiles outside the watch
    want_hit = ray_intersect(mesh, points * 3, dirs, frame)

    with cuda_paths(), host_sync_spy() as spy:
        near = closest_point(mesh, points, frame, validate=False)
        hit = ray_intersect(mesh, points * 3, dirs, frame, validate=False)
    assert not spy.reads and not spy.copies, spy.report()
    with cuda_paths(), host_sync_spy() as checked:
        closest_point(mesh, points, frame)
    assert checked.reads, "validate=True reads the frame indices"
    assert torch.equal(near.face, want_near.face) and torch.equal(near.distance, want_near.distance)
    assert torch.equal(hit.face, want_hit.face) and torch.equal(hit.t, want_hit.t)
    assert torch.equal(knn_vertices(mesh, points, 4, frame, validate=False).index, knn_vertices(mesh, points, 4, frame).index)
    with raises_naming("validate"):
        closest_point(mesh, points, frame, validate="no")
