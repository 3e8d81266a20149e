"""ray_intersect against independent truth: the slab method on boxes, the chord sag of a tessellated sphere,
trimesh's ray caster on the head proxy, finite differences (gradcheck) and hypothesis properties."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import trimesh
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from trimesh.ray.ray_triangle import RayMeshIntersector

from headfields.geometry import TriangleMesh, box, head_proxy, ray_intersect, uv_sphere

from helpers import raises_naming

# Hypothesis reuses the (stateless) device fixture across examples.
HYPOTHESIS = settings(suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


def random_dirs(g: torch.Generator, n: int, lo: float = 0.2, hi: float = 5.0) -> torch.Tensor:
    """Random directions of random, non-unit length, no component exactly zero."""
    d = torch.randn(n, 3, generator=g, dtype=torch.float64)
    d = d / d.norm(dim=-1, keepdim=True)
    d = torch.where(d.abs() < 1e-3, torch.full_like(d, 1e-3), d)
    return d * (lo + (hi - lo) * torch.rand(n, 1, generator=g, dtype=torch.float64))


def slab(origins: torch.Tensor, dirs: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor):
    """First hit of rays with the solid box [lo, hi] (its surface), by the slab method, in float64.

    Returns hit, t, side (2 * axis + [upper face]) and an "ambiguous" mask for rays too close to an edge,
    a corner or a grazing hit to have a well-defined face in float32."""
    inv = 1.0 / dirs
    t1, t2 = (lo - origins) * inv, (hi - origins) * inv
    t_enter_axis, t_exit_axis = torch.minimum(t1, t2), torch.maximum(t1, t2)
    t_enter, enter_axis = t_enter_axis.max(dim=-1)
    t_exit, exit_axis = t_exit_axis.min(dim=-1)
    inside = (t_enter < 0) & (t_exit > 0)
    hit = (t_exit >= t_enter) & (t_exit >= 0)
    t = torch.where(t_enter >= 0, t_enter, t_exit)
    axis = torch.where(t_enter >= 0, enter_axis, exit_axis)
    d_axis = dirs.gather(1, axis[:, None])[:, 0]
    # Entering through the lower face when moving up the axis; leaving through the upper one.
    upper = torch.where(t_enter >= 0, d_axis < 0, d_axis > 0)
    side = 2 * axis + upper.long()
    point = origins + t[:, None] * dirs
    near_bound = ((point - lo).abs() < 1e-3) | ((point - hi).abs() < 1e-3)
    ambiguous = hit & ((near_bound.sum(-1) >= 2) | ((t_exit - t_enter).abs() < 1e-3 * dirs.norm(dim=-1) ** -1))
    # Rays that only just miss are as ambiguous as rays that only just hit.
    ambiguous |= ~hit & (t_exit >= 0) & (t_enter - t_exit < 1e-3 / dirs.norm(dim=-1))
    return hit, torch.where(hit, t, math.inf), side, ambiguous | (inside & (t_exit < 1e-3))


def box_rays(g: torch.Generator, n: int, size: torch.Tensor, centre: torch.Tensor):
    """Half the origins inside the box, half outside it in a cube three times its size, aimed at random
    points around it (many hit, many miss)."""
    inner = centre + (torch.rand(n // 2, 3, generator=g, dtype=torch.float64) - 0.5) * 0.8 * size
    outer = centre + (torch.rand(n - n // 2, 3, generator=g, dtype=torch.float64) - 0.5) * 3.0 * size
    outer = outer[((outer - centre).abs() > 0.5 * size + 0.05).any(-1)]
    origins = torch.cat([inner, outer])
    m = origins.shape[0]
    target = centre + (torch.rand(m, 3, generator=g, dtype=torch.float64) - 0.5) * 1.6 * size
    scale = 0.2 + 4.8 * torch.rand(m, 1, generator=g, dtype=torch.float64)
    dirs = (target - origins) / (target - origins).norm(dim=-1, keepdim=True) * scale
    return origins, dirs


def assert_misses_are_clean(h) -> None:
    miss = ~h.hit
    assert torch.isinf(h.t[miss]).all() and (h.t[miss] > 0).all()
    assert (h.face[miss] == -1).all()
    assert (h.bary[miss] == 0).all() and (h.normal[miss] == 0).all()


# ---------------------------------------------------------------- analytic truth: boxes and spheres


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_box_matches_slab_method(device, dtype):
    g = torch.Generator().manual_seed(0)
    size = torch.tensor([1.0, 2.0, 4.0], dtype=torch.float64)
    centre = torch.tensor([0.3, -0.2, 0.5], dtype=torch.float64)
    v, f = box(tuple(size.tolist()), dtype=torch.float64)
    mesh = TriangleMesh((v + centre).to(device=device, dtype=dtype), f.to(device))
    origins, dirs = box_rays(g, 4000, size, centre)
    hit, t, side, ambiguous = slab(origins, dirs, centre - size / 2, centre + size / 2)
    ok = ~ambiguous
    assert ok.sum() > 3500 and hit[ok].sum() > 1500 and (~hit[ok]).sum() > 500

    h = ray_intersect(mesh, origins.to(device=device, dtype=dtype), dirs.to(device=device, dtype=dtype))
    assert h.t.dtype == dtype and h.bary.dtype == dtype and h.normal.dtype == dtype
    assert h.hit.dtype == torch.bool and h.face.dtype == torch.int64
    got_hit, got_t = h.hit.cpu(), h.t.cpu().double()
    assert torch.equal(got_hit[ok], hit[ok])
    both = ok & hit
    rtol = 1e-5 if dtype == torch.float32 else 1e-12
    torch.testing.assert_close(got_t[both], t[both], rtol=rtol, atol=rtol)
    # Two triangles per side, in box()'s order: -x, +x, -y, +y, -z, +z; normals point outwards.
    assert torch.equal(h.face.cpu()[both] // 2, side[both])
    axis, upper = side // 2, side % 2
    expected_normal = torch.zeros(len(side), 3, dtype=torch.float64)
    expected_normal[torch.arange(len(side)), axis] = upper.double() * 2 - 1
    torch.testing.assert_close(h.normal.cpu().double()[both], expected_normal[both], rtol=0, atol=1e-6)
    assert_misses_are_clean(h)


def test_box_axis_aligned_rays_exact(device):
    # Rays along the axes, from outside and inside a box of size (1, 2, 4): t follows from the face planes.
    v, f = box((1.0, 2.0, 4.0), device=device)
    mesh = TriangleMesh(v, f)
    origins = torch.tensor(
        [[-3.0, 0.1, 0.2], [0.1, 5.0, -0.3], [0.2, 0.3, -7.0], [0.1, 0.2, 0.3], [0.1, 0.2, 0.3], [-3.0, 0.1, 0.2]],
        device=device,
    )
    dirs = torch.tensor(
        [[1.0, 0.0, 0.0], [0.0, -2.0, 0.0], [0.0, 0.0, 0.5], [0.0, 0.0, 4.0], [-1.0, 0.0, 0.0], [-1.0, 0.0, 0.0]],
        device=device,
    )
    # (-3 -> -0.5) / 1, (5 -> 1) / 2, (-7 -> -2) / 0.5, (0.3 -> 2) / 4 from inside, (0.1 -> -0.5) from inside,
    # and the last ray points away from the box.
    expected_t = torch.tensor([2.5, 2.0, 10.0, 0.425, 0.6, math.inf], device=device)
    h = ray_intersect(mesh, origins, dirs)
    assert h.hit.tolist() == [True] * 5 + [False]
    torch.testing.assert_close(h.t, expected_t, rtol=1e-6, atol=1e-6)
    expected_normal = torch.tensor([[-1.0, 0, 0], [0, 1.0, 0], [0, 0, -1.0], [0, 0, 1.0], [-1.0, 0, 0], [0, 0, 0]], device=device)
    torch.testing.assert_close(h.normal, expected_normal, rtol=0, atol=1e-6)
    hit_point = origins[:5] + h.t[:5, None] * dirs[:5]
    torch.testing.assert_close(hit_point, (h.bary[:5, :, None] * v[f[h.face[:5]]]).sum(1), rtol=0, atol=1e-5)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_sphere_rays_from_centre_hit_within_chord_sag(device, dtype):
    radius, n_lat, n_lon = 1.5, 20, 40
    v, f = uv_sphere(n_lat, n_lon, radius=radius, dtype=torch.float64)
    # Chord sag: a point p = sum w_i c_i of a triangle whose corners c_i lie on the sphere has
    # |p| >= p . c_0 / radius >= radius * cos(largest angle an edge subtends at the centre).
    e = torch.cat([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]])
    cos_edge = (v[e[:, 0]] * v[e[:, 1]]).sum(-1) / radius**2
    sag_bound = radius * float(cos_edge.min())
    assert 0.95 * radius < sag_bound < radius

    mesh = TriangleMesh(v.to(device=device, dtype=dtype), f.to(device))
    g = torch.Generator().manual_seed(1)
    dirs = random_dirs(g, 2000)
    origins = torch.zeros_like(dirs)
    h = ray_intersect(mesh, origins.to(device=device, dtype=dtype), dirs.to(device=device, dtype=dtype))
    assert h.hit.all()
    dist = h.t.cpu().double() * dirs.norm(dim=-1)
    assert (dist >= sag_bound - 1e-5).all() and (dist <= radius + 1e-5).all()
    # The ray leaves through the outside of the face: the outward normal is along the ray.
    assert ((h.normal.cpu().double() * dirs).sum(-1) > 0).all()
    # Every face of a closed mesh is reachable: each ray's face contains its hit point's direction.
    tri = v[f[h.face.cpu()]]
    point = (h.bary.cpu().double()[:, :, None] * tri).sum(1)
    torch.testing.assert_close(point, dirs * h.t.cpu().double()[:, None], rtol=0, atol=1e-5)


def test_non_unit_directions_scale_t(device):
    v, f = head_proxy(device=device)
    mesh = TriangleMesh(v, f)
    g = torch.Generator().manual_seed(2)
    origins = (
        torch.nn.functional.normalize(torch.randn(500, 3, generator=g), dim=-1) * 0.6 * torch.rand(500, 1, generator=g)
    ).to(device)  # inside the head
    unit = torch.nn.functional.normalize(torch.randn(500, 3, generator=g), dim=-1).to(device)
    scale = (0.01 + 20 * torch.rand(500, 1, generator=g)).to(device)
    a = ray_intersect(mesh, origins, unit)
    b = ray_intersect(mesh, origins, unit * scale)
    assert a.hit.all() and b.hit.all()
    torch.testing.assert_close(b.t * scale[:, 0], a.t, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(origins + b.t[:, None] * unit * scale, origins + a.t[:, None] * unit, rtol=0, atol=1e-5)
    assert (a.face == b.face).float().mean() > 0.99


def test_max_t_turns_far_hits_into_misses(device):
    v, f = box((2.0, 2.0, 2.0), device=device)
    mesh = TriangleMesh(v, f)
    # Hits at t = 2 (near face x = -1) and, with a direction of length 4, at t = 0.5 and t = 0.05.
    origins = torch.tensor([[-3.0, 0.1, 0.2], [-3.0, 0.2, 0.1], [-1.2, 0.3, -0.4]], device=device)
    dirs = torch.tensor([[1.0, 0.0, 0.0], [4.0, 0.0, 0.0], [4.0, 0.0, 0.0]], device=device)
    full = ray_intersect(mesh, origins, dirs)
    torch.testing.assert_close(full.t, torch.tensor([2.0, 0.5, 0.05], device=device), rtol=1e-6, atol=1e-6)

    h = ray_intersect(mesh, origins, dirs, max_t=1.0)
    assert h.hit.tolist() == [False, True, True]
    assert h.face[0] == -1 and math.isinf(h.t[0]) and h.t[0] > 0
    torch.testing.assert_close(h.t[1:], full.t[1:])
    assert torch.equal(h.face[1:], full.face[1:])
    assert_misses_are_clean(h)

    # max_t cuts at the first surface only: a ray from inside whose exit is beyond max_t misses.
    inside = ray_intersect(mesh, torch.zeros(1, 3, device=device), torch.tensor([[0.1, 0.0, 0.0]], device=device), max_t=5.0)
    assert not inside.hit[0] and inside.face[0] == -1
    assert ray_intersect(mesh, torch.zeros(1, 3, device=device), torch.tensor([[0.1, 0.0, 0.0]], device=device), max_t=10.5).hit[
        0
    ]


def test_rays_that_miss(device):
    v, f = box((1.0, 1.0, 1.0), device=device)
    mesh = TriangleMesh(v, f)
    origins = torch.tensor([[2.0, 0.0, 0.0], [0.0, 2.0, 0.1], [-2.0, 0.7, 0.0], [0.0, 0.0, 3.0]], device=device)
    # Pointing away, pointing away, passing beside (parallel to x), passing above (parallel to y).
    dirs = torch.tensor([[1.0, 0.0, 0.0], [0.1, 1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]], device=device)
    h = ray_intersect(mesh, origins, dirs)
    assert not h.hit.any()
    assert_misses_are_clean(h)


def test_empty_batch(device):
    v, f = box(device=device)
    h = ray_intersect(TriangleMesh(v, f), torch.zeros(0, 3, device=device), torch.zeros(0, 3, device=device))
    assert h.hit.shape == (0,) and h.t.shape == (0,) and h.bary.shape == (0, 3) and h.normal.shape == (0, 3)


# ---------------------------------------------------------------- peer library: trimesh


def test_head_proxy_matches_trimesh(device):
    v, f = head_proxy(dtype=torch.float64)
    g = torch.Generator().manual_seed(3)
    n = 800
    origins = torch.nn.functional.normalize(torch.randn(n, 3, generator=g, dtype=torch.float64), dim=-1) * 3.0
    target = (torch.rand(n, 3, generator=g, dtype=torch.float64) - 0.5) * 2.6
    dirs = (target - origins) * (0.3 + 3 * torch.rand(n, 1, generator=g, dtype=torch.float64))
    dirs[: n // 10] *= -1  # a tenth point away from the head: they would hit only behind the origin

    tm = trimesh.Trimesh(vertices=v.numpy(), faces=f.numpy(), process=False)
    caster = RayMeshIntersector(tm)
    loc, index_ray, index_tri = caster.intersects_location(origins.numpy(), dirs.numpy(), multiple_hits=False)
    first = np.full(n, -1)
    first[index_ray] = index_tri
    ref_hit = torch.from_numpy(first >= 0)
    ref_t = torch.full((n,), math.inf, dtype=torch.float64)
    d_np = dirs.numpy()[index_ray]
    ref_t[torch.from_numpy(index_ray)] = torch.from_numpy(((loc - origins.numpy()[index_ray]) * d_np).sum(-1) / (d_np**2).sum(-1))
    assert 200 < int(ref_hit.sum()) < n - 200  # a real mix of hits and misses

    h = ray_intersect(TriangleMesh(v.float().to(device), f.to(device)), origins.float().to(device), dirs.float().to(device))
    got_hit, got_t, got_face = h.hit.cpu(), h.t.cpu().double(), h.face.cpu()
    # A ray can only disagree if it grazes the silhouette; allow a handful of such rays, no more.
    assert int((got_hit != ref_hit).sum()) <= 2
    both = got_hit & ref_hit
    torch.testing.assert_close(got_t[both], ref_t[both], rtol=1e-4, atol=1e-5)
    assert (got_face[both] == torch.from_numpy(first)[both]).float().mean() > 0.99
    assert not got_hit[: n // 10].any()


# ---------------------------------------------------------------- frames and updates


def _frames(v: torch.Tensor) -> torch.Tensor:
    """Three poses of one mesh: identity, scaled and shifted, rotated about z and shifted."""
    c, s = math.cos(0.7), math.sin(0.7)
    rot = torch.tensor([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]], dtype=v.dtype)
    return torch.stack([v, v * 1.3 + torch.tensor([0.2, 0.0, -0.1], dtype=v.dtype), v @ rot.T + 0.3])


def test_multi_frame_matches_each_frame_alone(device):
    v, f = head_proxy()
    frames = _frames(v).to(device)
    f = f.to(device)
    mesh = TriangleMesh(frames, f)
    g = torch.Generator().manual_seed(4)
    n = 1200
    origins = (torch.randn(n, 3, generator=g) * 0.2).to(device)
    dirs = random_dirs(g, n).float().to(device)
    origins[::2] = origins[::2] * 5 + 2.5  # half from outside, mostly missing
    frame = torch.randint(0, 3, (n,), generator=g).to(device)
    h = ray_intersect(mesh, origins, dirs, frame=frame)
    assert 0 < int(h.hit.sum()) < n
    for b in range(3):
        sel = frame == b
        ref = ray_intersect(TriangleMesh(frames[b], f), origins[sel], dirs[sel])
        assert torch.equal(h.hit[sel], ref.hit)
        assert torch.equal(h.face[sel], ref.face)
        torch.testing.assert_close(h.t[sel], ref.t, rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(h.bary[sel], ref.bary, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(h.normal[sel], ref.normal, rtol=1e-5, atol=1e-5)
    # An int frame means every ray uses that frame.
    one = ray_intersect(mesh, origins, dirs, frame=2)
    ref = ray_intersect(TriangleMesh(frames[2], f), origins, dirs)
    assert torch.equal(one.hit, ref.hit) and torch.equal(one.face, ref.face)
    # The frames really differ: the same rays give different answers on frame 0 and frame 2.
    assert not torch.equal(ray_intersect(mesh, origins, dirs, frame=0).face, one.face)


def test_updated_mesh_answers_like_a_fresh_mesh(device):
    v, f = head_proxy(device=device)
    frames = _frames(v.cpu()).to(device)
    mesh = TriangleMesh(frames, f)
    g = torch.Generator().manual_seed(5)
    origins = (torch.randn(800, 3, generator=g) * 0.2).to(device)
    dirs = random_dirs(g, 800).float().to(device)
    frame = torch.randint(0, 3, (800,), generator=g).to(device)
    before = ray_intersect(mesh, origins, dirs, frame=frame)  # builds the BVHs

    moved = frames * torch.tensor([1.2, 0.9, 1.1], device=device) + torch.tensor([0.05, -0.02, 0.1], device=device)
    mesh.update(moved)
    after = ray_intersect(mesh, origins, dirs, frame=frame)
    fresh = ray_intersect(TriangleMesh(moved.clone(), f), origins, dirs, frame=frame)
    assert torch.equal(after.hit, fresh.hit) and torch.equal(after.face, fresh.face)
    torch.testing.assert_close(after.t, fresh.t, rtol=1e-6, atol=1e-6)
    assert not torch.allclose(after.t, before.t)


# ---------------------------------------------------------------- gradients


def _jittered_sphere(seed: int = 0):
    v, f = uv_sphere(4, 6, dtype=torch.float64)
    g = torch.Generator().manual_seed(seed)
    return v + 0.03 * torch.randn(v.shape, generator=g, dtype=torch.float64), f


def _interior_rays(mesh: TriangleMesh, origins, dirs, margin: float = 0.05):
    h = ray_intersect(mesh, origins, dirs)
    keep = h.hit & (h.bary.min(dim=-1).values > margin)
    return origins[keep].clone(), dirs[keep].clone()


def test_gradcheck_t_wrt_origins_dirs_and_vertices(device):
    v, f = _jittered_sphere()
    v, f = v.to(device), f.to(device)
    g = torch.Generator().manual_seed(6)
    origins = (0.2 * torch.randn(16, 3, generator=g, dtype=torch.float64)).to(device)
    dirs = random_dirs(g, 16, 0.5, 2.0).to(device)
    origins[::2] = origins[::2] - 3 * dirs[::2]  # half from outside, through the front surface
    origins, dirs = _interior_rays(TriangleMesh(v, f), origins, dirs)
    assert len(origins) >= 8

    def fn(o, d, verts):
        h = ray_intersect(TriangleMesh(verts, f), o, d)
        return h.t, h.bary

    inputs = (origins.requires_grad_(), dirs.requires_grad_(), v.clone().requires_grad_())
    assert torch.autograd.gradcheck(fn, inputs, eps=1e-6, atol=1e-6, rtol=1e-4)


def test_t_gradient_matches_plane_formula(device):
    # On the face x = 0.5 of the unit box, t = (0.5 - o_x) / d_x: dt/do_x = -1/d_x, dt/dd_x = -t/d_x.
    v, f = box(dtype=torch.float64, device=device)
    o = torch.tensor([[-2.0, 0.1, 0.05], [0.0, -0.1, 0.2]], dtype=torch.float64, device=device, requires_grad=True)
    d = torch.tensor([[2.0, 0.02, -0.03], [0.5, 0.01, 0.02]], dtype=torch.float64, device=device, requires_grad=True)
    h = ray_intersect(TriangleMesh(v, f), o, d)
    assert h.hit.all()
    expected_t = torch.tensor([(-0.5 + 2.0) / 2.0, 0.5 / 0.5], dtype=torch.float64, device=device)
    torch.testing.assert_close(h.t.detach(), expected_t)
    go, gd = torch.autograd.grad(h.t.sum(), (o, d))
    dx = d.detach()[:, 0]
    torch.testing.assert_close(go[:, 0], -1 / dx)
    torch.testing.assert_close(gd[:, 0], -expected_t / dx)
    torch.testing.assert_close(go[:, 1:], torch.zeros_like(go[:, 1:]))


# ---------------------------------------------------------------- properties


_HEADS: dict[str, TriangleMesh] = {}


def head64(device) -> TriangleMesh:
    """One float64 head-proxy mesh per device, shared by every hypothesis example."""
    if str(device) not in _HEADS:
        v, f = head_proxy(dtype=torch.float64, device=device)
        _HEADS[str(device)] = TriangleMesh(v, f)
    return _HEADS[str(device)]


@HYPOTHESIS
@given(
    seed=st.integers(0, 2**31 - 1),
    n=st.integers(1, 200),
    spread=st.floats(0.0, 3.0),
    length=st.floats(0.01, 100.0),
)
def test_hit_point_is_barycentric_combination(device, seed, n, spread, length):
    mesh = head64(device)
    f = mesh.faces
    g = torch.Generator().manual_seed(seed)
    origins = (torch.randn(n, 3, generator=g, dtype=torch.float64) * spread).to(device)
    dirs = (torch.nn.functional.normalize(torch.randn(n, 3, generator=g, dtype=torch.float64), dim=-1) * length).to(device)
    h = ray_intersect(mesh, origins, dirs)
    hit = h.hit
    assert torch.equal(hit, h.face >= 0)
    # Origins inside the closed head always hit.
    inside = (origins.cpu() / torch.tensor([0.8, 0.95, 1.1], dtype=torch.float64)).norm(dim=-1) < 0.99
    assert hit.cpu()[inside].all()
    if hit.any():
        t, bary, face = h.t[hit], h.bary[hit], h.face[hit]
        assert (t >= 0).all() and torch.isfinite(t).all()
        torch.testing.assert_close(bary.sum(-1), torch.ones_like(t))
        assert (bary >= -1e-6).all() and (bary <= 1 + 1e-6).all()
        corners = mesh.vertices[0][f[face]]
        point = origins[hit] + t[:, None] * dirs[hit]
        torch.testing.assert_close(point, (bary[:, :, None] * corners).sum(1), rtol=0, atol=1e-9)
        n_geo = torch.linalg.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0])
        torch.testing.assert_close(h.normal[hit], torch.nn.functional.normalize(n_geo, dim=-1))
    assert_misses_are_clean(h)


# ---------------------------------------------------------------- bad input


def test_bad_origins(device, box_mesh):
    d = torch.ones(4, 3, device=device)
    with raises_naming("origins"):
        ray_intersect(box_mesh, torch.zeros(4, 4, device=device), d)
    with raises_naming("origins"):
        ray_intersect(box_mesh, torch.zeros(4, 3, 1, device=device), d)
    with raises_naming("origins"):
        ray_intersect(box_mesh, torch.zeros(4, 3, dtype=torch.int64, device=device), d)
    nan = torch.zeros(4, 3, device=device)
    nan[2, 1] = math.nan
    with raises_naming("origins"):
        ray_intersect(box_mesh, nan, d)
    with raises_naming("origins"):
        ray_intersect(box_mesh, torch.full((4, 3), math.inf, device=device), d)
    with raises_naming("origins"):
        ray_intersect(box_mesh, np.zeros((4, 3), dtype=np.float32), d)


def test_bad_dirs(device, box_mesh):
    o = torch.zeros(4, 3, device=device)
    with raises_naming("dirs"):
        ray_intersect(box_mesh, o, torch.ones(5, 3, device=device))
    with raises_naming("dirs"):
        ray_intersect(box_mesh, o, torch.ones(4, 2, device=device))
    with raises_naming("dirs"):
        ray_intersect(box_mesh, o, torch.ones(4, 3, dtype=torch.int32, device=device))
    zero = torch.ones(4, 3, device=device)
    zero[3] = 0.0
    with raises_naming("dirs"):
        ray_intersect(box_mesh, o, zero)
    nan = torch.ones(4, 3, device=device)
    nan[0, 0] = math.nan
    with raises_naming("dirs"):
        ray_intersect(box_mesh, o, nan)


def test_bad_frame_and_max_t(device, box_mesh):
    o, d = torch.zeros(4, 3, device=device), torch.ones(4, 3, device=device)
    with raises_naming("frame"):
        ray_intersect(box_mesh, o, d, frame=1)
    with raises_naming("frame"):
        ray_intersect(box_mesh, o, d, frame=-1)
    with raises_naming("frame"):
        ray_intersect(box_mesh, o, d, frame=torch.tensor([0, 0, 1, 0], device=device))
    with raises_naming("frame"):
        ray_intersect(box_mesh, o, d, frame=torch.zeros(3, dtype=torch.long, device=device))
    with raises_naming("frame"):
        ray_intersect(box_mesh, o, d, frame=torch.zeros(4, device=device))
    v, f = box(device=device)
    multi = TriangleMesh(torch.stack([v, v + 1]), f)
    with raises_naming("frame"):
        ray_intersect(multi, o, d)
    with raises_naming("frame"):
        ray_intersect(multi, o, d, frame=torch.tensor([0, 1, 2, 0], device=device))
    with raises_naming("max_t"):
        ray_intersect(box_mesh, o, d, max_t=0.0)
    with raises_naming("max_t"):
        ray_intersect(box_mesh, o, d, max_t=-1.0)
    with raises_naming("max_t"):
        ray_intersect(box_mesh, o, d, max_t=math.nan)
