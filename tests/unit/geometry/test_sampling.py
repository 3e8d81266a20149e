"""sample_surface and sample_near_surface: points on the surface, area weighting against exact areas,
uniformity inside triangles, seeding, frames and bad input; farthest_points against a brute-force loop."""

from __future__ import annotations

import math

import pytest
import scipy.stats
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from headfields.geometry import (
    TriangleMesh,
    box,
    closest_point,
    farthest_points,
    head_proxy,
    sample_box,
    sample_near_surface,
    sample_surface,
    uv_sphere,
)

from helpers import raises_naming

HYPOTHESIS = settings(suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


def on_box_surface(points: torch.Tensor, size: tuple[float, float, float], centre: torch.Tensor) -> torch.Tensor:
    """Distance of points from the surface of an axis-aligned box, for points on or inside it: 0 exactly
    when one coordinate is on a face plane and the others are within the box."""
    half = torch.tensor(size, dtype=points.dtype, device=points.device) / 2
    q = (points - centre).abs() - half  # <= 0 inside
    return torch.maximum(q.amax(dim=-1).abs(), q.clamp(min=0).norm(dim=-1))


def corners(mesh: TriangleMesh, frame: int, face: torch.Tensor) -> torch.Tensor:
    return mesh.vertices[frame][mesh.faces[face]]


# ---------------------------------------------------------------- on the surface


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_samples_lie_on_head_surface(device, dtype):
    v, f = head_proxy(dtype=dtype, device=device)
    mesh = TriangleMesh(v, f)
    s = sample_surface(mesh, 3000, seed=3)
    assert s.point.shape == (3000, 3) and s.point.dtype == dtype and s.point.device.type == device.type
    assert s.face.shape == (3000,) and s.face.dtype == torch.int64 and s.bary.shape == (3000, 3)
    assert s.frame.shape == (3000,) and (s.frame == 0).all()
    assert (s.face >= 0).all() and (s.face < mesh.num_faces).all()
    assert (s.bary >= 0).all() and (s.bary <= 1).all()
    torch.testing.assert_close(s.bary.sum(-1), torch.ones(3000, dtype=dtype, device=device))
    c = corners(mesh, 0, s.face)
    torch.testing.assert_close(s.point, (s.bary[:, :, None] * c).sum(1))
    n = torch.nn.functional.normalize(torch.linalg.cross(c[:, 1] - c[:, 0], c[:, 2] - c[:, 0]), dim=-1)
    torch.testing.assert_close(s.normal, n)
    # On the surface: the closest point on the mesh is the sample itself.
    cp = closest_point(mesh, s.point)
    assert cp.hit.all()
    assert (cp.distance < (1e-5 if dtype == torch.float32 else 1e-9)).all()
    # Normals of the closed head point outwards: away from its centre on the egg-shaped body.
    assert ((s.normal * s.point).sum(-1) > 0).float().mean() > 0.99


def test_samples_lie_on_box_surface(device):
    size = (1.0, 2.0, 4.0)
    centre = torch.tensor([0.5, -1.0, 2.0], device=device)
    v, f = box(size, device=device)
    s = sample_surface(TriangleMesh(v + centre, f), 2000, seed=1)
    assert (on_box_surface(s.point, size, centre) < 1e-6).all()
    # Each sample lies on the face plane of its side: -x, +x, -y, +y, -z, +z, two triangles each.
    side = s.face // 2
    axis, sign = side // 2, (side % 2) * 2 - 1
    half = torch.tensor(size, device=device) / 2
    coord = (s.point - centre).gather(1, axis[:, None])[:, 0]
    torch.testing.assert_close(coord, sign * half[axis], rtol=0, atol=1e-6)


def test_sphere_samples_at_radius(device):
    radius = 2.0
    v, f = uv_sphere(30, 60, radius=radius, dtype=torch.float64, device=device)
    s = sample_surface(TriangleMesh(v, f), 4000, seed=5)
    r = s.point.norm(dim=-1)
    # Chord sag of a triangle with corners on the sphere (see test_ray's sphere test).
    e = torch.cat([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]])
    sag = radius * float(((v[e[:, 0]] * v[e[:, 1]]).sum(-1) / radius**2).min())
    assert (r <= radius + 1e-12).all() and (r >= sag - 1e-12).all()


# ---------------------------------------------------------------- distribution


def test_box_sides_sampled_by_area(device):
    # Box (1, 2, 4): sides x have area 8, y 4, z 2 (each twice); total 28.
    v, f = box((1.0, 2.0, 4.0), device=device)
    n = 20000
    s = sample_surface(TriangleMesh(v, f), n, seed=11)
    counts = torch.bincount(s.face.cpu() // 2, minlength=6).double()
    p = torch.tensor([8, 8, 4, 4, 2, 2], dtype=torch.float64) / 28
    sd = (n * p * (1 - p)).sqrt()
    assert ((counts - n * p).abs() < 4.5 * sd).all(), (counts, n * p)
    # Within a side the two triangles have equal area: a fair split as well.
    tri = torch.bincount(s.face.cpu(), minlength=12).double().reshape(6, 2)
    half_sd = (tri.sum(1) * 0.25).sqrt()
    assert ((tri[:, 0] - tri.sum(1) / 2).abs() < 4.5 * half_sd).all()


def test_unequal_triangles_sampled_by_area(device):
    # Two triangles sharing no vertex, areas 1/2 and 9/2: shares 1/10 and 9/10.
    v = torch.tensor([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1], [3, 0, 1], [0, 3, 1]], dtype=torch.float32, device=device)
    f = torch.tensor([[0, 1, 2], [3, 4, 5]], device=device)
    n = 10000
    s = sample_surface(TriangleMesh(v, f), n, seed=2)
    small = int((s.face == 0).sum())
    assert abs(small - n * 0.1) < 4.5 * math.sqrt(n * 0.1 * 0.9)


def test_uniform_inside_a_triangle(device):
    # Uniform over a triangle: each barycentric coordinate has density 2(1 - x) on [0, 1], so
    # P(b > 1/2) = 1/4 and the mean is 1/3; in point terms the samples on the right triangle
    # (0,0)-(1,0)-(0,1) have E[x] = E[y] = 1/3 and the fraction with x + y < 1/2 is 1/4.
    v = torch.tensor([[0, 0, 0], [1, 0, 0], [0, 1, 0]], dtype=torch.float64, device=device)
    f = torch.tensor([[0, 1, 2]], device=device)
    n = 20000
    s = sample_surface(TriangleMesh(v, f), n, seed=4)
    x, y = s.point[:, 0].cpu(), s.point[:, 1].cpu()
    assert (s.point[:, 2] == 0).all() and (x >= 0).all() and (y >= 0).all() and (x + y <= 1 + 1e-12).all()
    se_mean = math.sqrt(1 / 18 / n)  # variance of a barycentric coordinate: 1/18
    assert abs(float(x.mean()) - 1 / 3) < 5 * se_mean and abs(float(y.mean()) - 1 / 3) < 5 * se_mean
    for b in range(3):
        frac = float((s.bary[:, b] > 0.5).double().mean())
        assert abs(frac - 0.25) < 5 * math.sqrt(0.25 * 0.75 / n)
    # Kolmogorov-Smirnov: x has CDF 1 - (1 - x)^2.
    ks = scipy.stats.kstest(x.numpy(), lambda t: 1 - (1 - t) ** 2)
    assert ks.pvalue > 1e-4


def test_sphere_heights_uniform(device):
    # Archimedes: on a sphere, the height of an area-uniform point is uniform in [-r, r].
    v, f = uv_sphere(40, 80, dtype=torch.float64, device=device)
    s = sample_surface(TriangleMesh(v, f), 20000, seed=6)
    z = s.point[:, 2].cpu().numpy()
    ks = scipy.stats.kstest(z, scipy.stats.uniform(loc=-1, scale=2).cdf)
    # The tessellation bends the distribution by well under a percent; the KS distance stays small.
    assert ks.statistic < 0.015


# ---------------------------------------------------------------- seeds


def test_same_seed_same_samples_different_seed_different(device):
    v, f = head_proxy(device=device)
    mesh = TriangleMesh(v, f)
    a = sample_surface(mesh, 500, seed=7)
    b = sample_surface(mesh, 500, seed=7)
    c = sample_surface(mesh, 500, seed=8)
    assert torch.equal(a.face, b.face) and torch.equal(a.bary, b.bary) and torch.equal(a.point, b.point)
    assert not torch.equal(a.face, c.face)
    assert (a.point - c.point).norm(dim=-1).mean() > 0.1
    # The same seed gives the same samples on the CPU, whatever device the mesh is on.
    cpu = sample_surface(TriangleMesh(v.cpu(), f.cpu()), 500, seed=7)
    assert torch.equal(a.face.cpu(), cpu.face)
    torch.testing.assert_close(a.point.cpu(), cpu.point)
    # The default seed is a seed like any other: fixed, and not the same as seed 7.
    assert torch.equal(sample_surface(mesh, 500).face, sample_surface(mesh, 500, seed=0).face)
    assert not torch.equal(sample_surface(mesh, 500).face, a.face)


def test_zero_samples(device):
    v, f = box(device=device)
    s = sample_surface(TriangleMesh(v, f), 0)
    assert s.point.shape == (0, 3) and s.face.shape == (0,) and s.bary.shape == (0, 3)
    assert s.normal.shape == (0, 3) and s.frame.shape == (0,)
    assert sample_near_surface(TriangleMesh(v, f), 0, 0.1).shape == (0, 3)


# ---------------------------------------------------------------- frames and gradients


def test_frame_selects_the_pose(device):
    v, f = head_proxy(device=device)
    frames = torch.stack([v, 0.5 * v + torch.tensor([1.0, 0.0, 0.0], device=device), v * 1.2])
    mesh = TriangleMesh(frames, f)
    for b in range(3):
        s = sample_surface(mesh, 400, frame=b, seed=9)
        assert (s.frame == b).all()
        torch.testing.assert_close(s.point, (s.bary[:, :, None] * corners(mesh, b, s.face)).sum(1))
        cp = closest_point(mesh, s.point, frame=b)
        assert (cp.distance < 1e-5).all()
    # Frame 1 is the half-size head moved along x: the same seed samples the same faces (areas scale
    # uniformly) and the points follow the pose.
    a, b = sample_surface(mesh, 400, frame=0, seed=9), sample_surface(mesh, 400, frame=1, seed=9)
    assert torch.equal(a.face, b.face)
    torch.testing.assert_close(b.point, 0.5 * a.point + torch.tensor([1.0, 0.0, 0.0], device=device))


def test_points_differentiable_wrt_vertices(device):
    v, f = uv_sphere(6, 8, dtype=torch.float64, device=device)
    v = v.clone().requires_grad_()
    s = sample_surface(TriangleMesh(v, f), 300, seed=10)
    (grad,) = torch.autograd.grad(s.point[:, 0].sum(), v)
    # d(sum of x)/d(vertex x) = total barycentric weight that the samples give the vertex.
    weight = torch.zeros(len(v), dtype=torch.float64, device=device)
    weight.index_add_(0, f[s.face].reshape(-1), s.bary.detach().reshape(-1))
    torch.testing.assert_close(grad[:, 0], weight)
    assert (grad[:, 1:] == 0).all()


# ---------------------------------------------------------------- near the surface


@pytest.mark.parametrize("thickness", [0.01, 0.2])
def test_near_surface_within_thickness(device, thickness):
    v, f = head_proxy(device=device)
    mesh = TriangleMesh(v, f)
    n = 3000
    p = sample_near_surface(mesh, n, thickness, seed=12)
    assert p.shape == (n, 3) and p.dtype == torch.float32
    cp = closest_point(mesh, p)
    assert (cp.distance <= thickness * (1 + 1e-4) + 1e-6).all()
    # Both sides of the surface, and offsets spread over the band rather than bunched at the surface.
    inside = cp.sign < 0
    assert 0.4 < float(inside.float().mean()) < 0.6
    assert float((cp.distance > thickness / 2).float().mean()) > 0.35
    # The offset runs along the normal of the surface sample with the same seed.
    s = sample_surface(mesh, n, seed=12)
    offset = p - s.point
    along = (offset * s.normal).sum(-1)
    torch.testing.assert_close(offset, along[:, None] * s.normal, rtol=0, atol=1e-5)
    assert (along.abs() <= thickness * (1 + 1e-5)).all()
    # Uniform over [-thickness, thickness].
    ks = scipy.stats.kstest((along / thickness).cpu().numpy(), scipy.stats.uniform(loc=-1, scale=2).cdf)
    assert ks.pvalue > 1e-4


def test_near_surface_box_analytic(device):
    size = (1.0, 2.0, 4.0)
    v, f = box(size, dtype=torch.float64, device=device)
    thickness = 0.05
    p = sample_near_surface(TriangleMesh(v, f), 4000, thickness, seed=13)
    half = torch.tensor(size, dtype=torch.float64, device=device) / 2
    q = p.abs() - half
    # Exact distance to the box surface: outside, the distance to the box; inside, to the nearest face.
    outside = q.clamp(min=0).norm(dim=-1)
    inside_depth = (-q).amin(dim=-1).clamp(min=0)
    dist = torch.where((q > 0).any(-1), outside, inside_depth)
    assert (dist <= thickness + 1e-12).all()
    assert (dist > 0.5 * thickness).float().mean() > 0.4


def test_near_surface_reproducible_and_zero_thickness(device):
    v, f = head_proxy(device=device)
    mesh = TriangleMesh(v, f)
    a = sample_near_surface(mesh, 300, 0.1, seed=14)
    assert torch.equal(a, sample_near_surface(mesh, 300, 0.1, seed=14))
    assert not torch.allclose(a, sample_near_surface(mesh, 300, 0.1, seed=15))
    on = sample_near_surface(mesh, 300, 0.0, seed=14)
    torch.testing.assert_close(on, sample_surface(mesh, 300, seed=14).point)


# ---------------------------------------------------------------- properties


_SPHERES: dict[str, TriangleMesh] = {}


def sphere(device) -> TriangleMesh:
    if str(device) not in _SPHERES:
        v, f = uv_sphere(12, 24, dtype=torch.float64, device=device)
        _SPHERES[str(device)] = TriangleMesh(v, f)
    return _SPHERES[str(device)]


@HYPOTHESIS
@given(seed=st.integers(0, 2**62), n=st.integers(0, 300), thickness=st.floats(0.0, 0.3))
def test_samples_on_surface_property(device, seed, n, thickness):
    mesh = sphere(device)
    s = sample_surface(mesh, n, seed=seed)
    assert s.point.shape == (n, 3)
    assert (s.bary >= 0).all() and (s.bary <= 1).all()
    torch.testing.assert_close(s.bary.sum(-1), torch.ones(n, dtype=torch.float64, device=device))
    torch.testing.assert_close(s.point, (s.bary[:, :, None] * corners(mesh, 0, s.face)).sum(1))
    if n:
        assert (closest_point(mesh, s.point).distance < 1e-9).all()
        near = sample_near_surface(mesh, n, thickness, seed=seed)
        assert (closest_point(mesh, near).distance <= thickness + 1e-9).all()


# ---------------------------------------------------------------- bad input


def test_bad_n(device):
    v, f = box(device=device)
    mesh = TriangleMesh(v, f)
    for n in (-1, -100):
        with raises_naming("n"):
            sample_surface(mesh, n)
        with raises_naming("n"):
            sample_near_surface(mesh, n, 0.1)
    with raises_naming("n"):
        sample_surface(mesh, 2.5)
    with raises_naming("n"):
        sample_surface(mesh, torch.tensor(5))


def test_bad_thickness(device):
    v, f = box(device=device)
    mesh = TriangleMesh(v, f)
    for t in (-0.1, math.nan):
        with raises_naming("thickness"):
            sample_near_surface(mesh, 10, t)


def test_bad_frame(device):
    v, f = box(device=device)
    single = TriangleMesh(v, f)
    with raises_naming("frame"):
        sample_surface(single, 10, frame=1)
    with raises_naming("frame"):
        sample_surface(single, 10, frame=-1)
    multi = TriangleMesh(torch.stack([v, v * 2]), f)
    with raises_naming("frame"):
        sample_surface(multi, 10)
    with raises_naming("frame"):
        sample_surface(multi, 10, frame=2)
    with raises_naming("frame"):
        sample_near_surface(multi, 10, 0.1)
    with raises_naming("frame"):
        sample_near_surface(multi, 10, 0.1, frame=5)


def test_farthest_points_match_a_brute_force_loop():
    """Each pick maximises the distance to the nearest earlier pick (recomputed from scratch every time)."""
    points = torch.randn(300, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    chosen = farthest_points(points, 12).tolist()
    assert chosen[0] == int((points - points.mean(0)).norm(dim=1).argmin())
    for i in range(1, len(chosen)):
        nearest_pick = torch.cdist(points, points[chosen[:i]]).amin(dim=1)
        assert chosen[i] == int(nearest_pick.argmax())
    assert len(set(chosen)) == 12
    with raises_naming("count"):
        farthest_points(points, 301)
    with raises_naming("points"):
        farthest_points(points[:, :2], 3)


# ---------------------------------------------------------------- in a box


def test_box_points_are_uniform_in_the_box(device):
    """Each coordinate is uniform on its side of the box (Kolmogorov-Smirnov), and the generator repeats them."""
    box = torch.tensor([[-1.0, 0.5, 2.0], [3.0, 0.75, 2.5]], dtype=torch.float64, device=device)
    points = sample_box(box, 20000, torch.Generator(device).manual_seed(3))
    assert points.shape == (20000, 3) and points.device == box.device and points.dtype == box.dtype
    for axis in range(3):
        low, width = float(box[0, axis]), float(box[1, axis] - box[0, axis])
        ks = scipy.stats.kstest(points[:, axis].cpu().numpy(), scipy.stats.uniform(loc=low, scale=width).cdf)
        assert ks.pvalue > 1e-3, (axis, ks)
    again = sample_box(box, 20000, torch.Generator(device).manual_seed(3))
    assert torch.equal(points, again)
    assert sample_box(box, 0).shape == (0, 3)


def test_bad_boxes_raise_naming_the_argument():
    with raises_naming("box"):
        sample_box(torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 1.0]]), 4)  # low above high on x
    with raises_naming("box"):
        sample_box(torch.zeros(3), 4)
    with raises_naming("n"):
        sample_box(torch.tensor([[0.0, 0.0, 0.0], [1.0, 1.0, 1.0]]), -1)
