"""chamfer_distance against geometry with a known answer (identical meshes, concentric spheres) and against
trimesh's brute-force point-to-mesh distances on the same samples; gradients by gradcheck; bad input named."""

import math

import numpy as np
import pytest
import torch
import trimesh

from headfields.geometry import box, uv_sphere
from headfields.metrics import ChamferDistance, chamfer_distance

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
