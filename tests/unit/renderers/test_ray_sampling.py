"""Packed samples, ray-box intersection, stratified sampling and the mesh-guided filter: analytic cases,
dense stepping along the ray, trimesh distances, and bad input."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import trimesh
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from headfields.cameras import Rays
from headfields.geometry import TriangleMesh, uv_sphere
from headfields.renderers import (
    OccupancyGrid,
    OccupancySampler,
    PackedSamples,
    StratifiedSampler,
    mesh_guided_filter,
    ray_aabb,
    stratified_samples,
)
from headfields.renderers.mesh_sampler import shell_cells

from hand_heads import bent_head
from helpers import raises_naming, shapes_unchecked

HYPOTHESIS = settings(max_examples=25, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
AABB = [[-1.0, -0.5, -2.0], [1.0, 1.5, 0.0]]


def test_packed_samples_midpoints_deltas_counts(device):
    samples = PackedSamples(
        torch.tensor([0, 0, 2], device=device),
        torch.tensor([0.0, 1.0, 2.0], device=device),
        torch.tensor([1.0, 3.0, 2.5], device=device),
        3,
    )
    origins = torch.tensor([[0.0, 0.0, 0.0], [5.0, 5.0, 5.0], [1.0, 2.0, 3.0]], device=device)
    dirs = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, -1.0]], device=device)
    expect = torch.tensor([[0.5, 0, 0], [2.0, 0, 0], [1, 2, 0.75]], device=device)
    torch.testing.assert_close(samples.midpoints(origins, dirs), expect)
    torch.testing.assert_close(samples.deltas, torch.tensor([1.0, 2.0, 0.5], device=device))
    assert samples.counts().tolist() == [2, 0, 1]
    kept = samples.select(torch.tensor([False, True, True], device=device))
    assert kept.ray.tolist() == [0, 2] and kept.t_start.tolist() == [1.0, 2.0] and kept.num_rays == 3
    assert samples.first().tolist() == [0, 2, 2] and samples.ray_first().tolist() == [0, 0, 2]
    # Made once an instance (a kernel each on a GPU), unless the intervals carry a gradient: then made afresh, so
    # that a value made under no_grad is never handed to a graph.
    assert samples.t_mid is samples.t_mid and samples.deltas is samples.deltas and samples.first() is samples.first()
    t_end = samples.t_end.clone().requires_grad_()
    graded = PackedSamples(samples.ray, samples.t_start, t_end, 3)
    with torch.no_grad():
        assert not graded.t_mid.requires_grad
    graded.t_mid.sum().backward()
    torch.testing.assert_close(t_end.grad, torch.full_like(t_end, 0.5))


def test_packed_samples_bad_input():
    t = torch.zeros(3)
    with raises_naming("ray"):
        PackedSamples(torch.tensor([0, 2, 1]), t, t, 3)  # not sorted
    with raises_naming("ray"):
        PackedSamples(torch.tensor([0, 1, 3]), t, t, 3)  # out of range
    with raises_naming("ray"):
        PackedSamples(torch.tensor([0, 1, 2], dtype=torch.int32), t, t, 3)
    with raises_naming("t_end"):
        PackedSamples(torch.tensor([0, 1, 2]), t, t - 1, 3)
    with raises_naming("t_start"):
        PackedSamples(torch.tensor([0, 1, 2]), torch.full((3,), math.nan), t, 3)
    with raises_naming("num_rays"):
        PackedSamples(torch.tensor([0, 1, 2]), t, t, -1)


def inside_box(points: torch.Tensor, aabb: torch.Tensor, tol: float = 0.0) -> torch.Tensor:
    return ((points >= aabb[0] - tol) & (points <= aabb[1] + tol)).all(dim=-1)


@settings(HYPOTHESIS, max_examples=15)
@given(seed=st.integers(0, 2**31 - 1))
def test_ray_aabb_against_dense_stepping(device, seed):
    g = torch.Generator().manual_seed(seed)
    aabb = torch.tensor(AABB, dtype=torch.float64, device=device)
    origins = ((torch.rand(150, 3, generator=g, dtype=torch.float64) * 6 - 3) + torch.tensor([0, 0.5, -1])).to(device)
    dirs = torch.nn.functional.normalize(torch.randn(150, 3, generator=g, dtype=torch.float64), dim=-1).to(device)
    dirs[:20, 0] = 0  # some rays parallel to an axis plane
    dirs = torch.nn.functional.normalize(dirs, dim=-1)
    near, far, hit = ray_aabb(origins, dirs, aabb)
    # Truth: which points on a dense grid of t in [0, 12] are inside the box.
    t = torch.linspace(0, 12, 4001, dtype=torch.float64, device=device)
    points = origins[:, None] + t[None, :, None] * dirs[:, None]
    inside = inside_box(points, aabb)
    crosses = inside.any(dim=1)
    first = torch.where(crosses, t[inside.float().argmax(dim=1)], 0)
    last = torch.where(crosses, t[(inside.float() * torch.arange(4001, device=device)).argmax(dim=1)], 0)
    step = 12 / 4000
    assert (hit | ~crosses).all()  # every ray seen inside is a hit
    sure = hit & (far - near > 3 * step)
    assert crosses[sure].all()
    torch.testing.assert_close(near[sure], first[sure], atol=step, rtol=0)
    torch.testing.assert_close(far[sure], last[sure], atol=step, rtol=0)
    # The entry and exit points lie on the box (or the entry is the origin inside it).
    assert inside_box(origins + near[:, None] * dirs, aabb, 1e-9)[hit].all()
    assert inside_box(origins + far[:, None] * dirs, aabb, 1e-9)[hit].all()
    assert (near[~hit] == 0).all() and (far[~hit] == 0).all()


def test_ray_aabb_axis_aligned_cases(device):
    aabb = torch.tensor([[0.0, 0.0, 0.0], [1.0, 1.0, 1.0]], device=device)
    origins = torch.tensor(
        [[0.5, 0.5, -1.0], [0.5, 0.5, 0.5], [0.5, 2.0, -1.0], [0.5, 0.5, 2.0], [0.0, 0.5, -1.0]], device=device
    )
    dirs = torch.tensor([[0.0, 0.0, 1.0], [0.0, 0.0, 1.0], [0.0, 0.0, 1.0], [0.0, 0.0, 1.0], [0.0, 0.0, 1.0]], device=device)
    box = ray_aabb(origins, dirs, aabb)
    # Through the middle; from inside; parallel outside; box behind the origin; along a face (inclusive).
    assert box.hit.tolist() == [True, True, False, False, True]
    assert box.near.tolist() == [1.0, 0.0, 0.0, 0.0, 1.0] and box.far.tolist() == [2.0, 0.5, 0.0, 0.0, 2.0]
    # Negative zeros (1 / -0 = -inf) behave as zeros: along the far faces, along a near face, outside the slab.
    origins = torch.tensor([[1.0, 1.0, -1.0], [0.0, 0.5, -1.0], [-0.5, 0.5, -1.0]], device=device)
    dirs = torch.tensor([[-0.0, -0.0, 1.0], [-0.0, 0.0, 1.0], [-0.0, -0.0, 1.0]], device=device)
    box = ray_aabb(origins, dirs, aabb)
    assert box.hit.tolist() == [True, True, False]
    assert box.near.tolist() == [1.0, 1.0, 0.0] and box.far.tolist() == [2.0, 2.0, 0.0]


def test_ray_aabb_per_ray_boxes(device):
    """One box per ray: rays along +x from x = -5 through unit-half-size cubes centred at x = c_r, one cube each."""
    centres = torch.tensor([-1.0, 0.0, 2.5, 9.0], device=device)
    boxes = torch.stack(
        [
            torch.stack([centres - 1, -torch.ones(4, device=device), -torch.ones(4, device=device)], -1),
            torch.stack([centres + 1, torch.ones(4, device=device), torch.ones(4, device=device)], -1),
        ],
        1,
    )
    origins = torch.tensor([[-5.0, 0.0, 0.0]], device=device).expand(4, 3)
    dirs = torch.tensor([[1.0, 0.0, 0.0]], device=device).expand(4, 3)
    box = ray_aabb(origins, dirs, boxes)
    assert box.hit.all()
    torch.testing.assert_close(box.near, centres + 4)  # enters at x = c - 1
    torch.testing.assert_close(box.far, centres + 6)


def test_ray_aabb_bad_input():
    o = torch.zeros(2, 3)
    with raises_naming("aabb"):
        ray_aabb(o, o, torch.tensor([[1.0, 0, 0], [0.0, 1, 1]]))
    with raises_naming("aabb"):
        ray_aabb(o, o, torch.zeros(3, 3))
    with raises_naming("dirs"):
        ray_aabb(o, torch.zeros(3, 3), torch.tensor([[0.0, 0, 0], [1.0, 1, 1]]))
    with raises_naming("aabb"):  # one box per ray, but for three rays
        ray_aabb(o, o, torch.tensor([[0.0, 0, 0], [1.0, 1, 1]]).expand(3, 2, 3))


def test_stratified_without_generator_is_evenly_spaced(device):
    origins = torch.zeros(3, 3, dtype=torch.float64, device=device)
    dirs = torch.tensor([[0.0, 0.0, 1.0]], dtype=torch.float64, device=device).expand(3, 3)
    near = torch.tensor([0.0, 1.0, 2.0], dtype=torch.float64, device=device)
    far = torch.tensor([1.0, 3.0, 2.0], dtype=torch.float64, device=device)  # the last ray is empty
    samples = stratified_samples(Rays(origins, dirs, torch.zeros(3, dtype=torch.long, device=device)), near, far, 4)
    assert samples.counts().tolist() == [4, 4, 0]
    expect = torch.tensor([0.125, 0.375, 0.625, 0.875, 1.25, 1.75, 2.25, 2.75], dtype=torch.float64, device=device)
    torch.testing.assert_close(samples.t_mid, expect, atol=1e-15, rtol=0)
    torch.testing.assert_close(samples.deltas, torch.tensor([0.25] * 4 + [0.5] * 4, dtype=torch.float64, device=device))
    # Scalars for near and far, and a plain (origins, dirs) pair.
    again = stratified_samples((origins, dirs), 1.0, 3.0, 4)
    assert again.counts().tolist() == [4, 4, 4]
    torch.testing.assert_close(again.t_mid[4:8], expect[4:])


def test_stratified_with_generator_partitions_each_ray(device):
    n, rays = 8, 4000
    origins = torch.zeros(rays, 3, device=device)
    dirs = torch.tensor([[1.0, 0.0, 0.0]], device=device).expand(rays, 3)
    near = torch.rand(rays, generator=torch.Generator().manual_seed(0)).to(device)
    far = near + 2
    samples = stratified_samples((origins, dirs), near, far, n, torch.Generator().manual_seed(1))
    t0, t1 = samples.t_start.view(rays, n), samples.t_end.view(rays, n)
    torch.testing.assert_close(t0[:, 0], near)
    torch.testing.assert_close(t1[:, -1], far)
    torch.testing.assert_close(t0[:, 1:], t1[:, :-1], atol=0, rtol=0)  # contiguous
    # Each inner boundary is the midpoint of two points jittered within consecutive bins of width 2/n:
    # within half a bin of the bin edge, and on average at the edge.
    bin_width = 2 / n
    edges = (t0[:, 1:] - near[:, None]) / bin_width - torch.arange(1, n, device=device)
    assert (edges.abs() <= 0.5 + 1e-5).all()
    assert edges.mean(dim=0).abs().max() < 0.02  # sd of a mean of 4000 triangular variates ~ 0.003
    assert edges.std() > 0.1  # actually jittered
    PackedSamples(samples.ray, samples.t_start, samples.t_end, samples.num_rays)  # passes the full validation
    # The same generator seed gives the same samples.
    again = stratified_samples((origins, dirs), near, far, n, torch.Generator().manual_seed(1))
    assert torch.equal(again.t_start, samples.t_start)


def test_stratified_bad_input():
    o = torch.zeros(2, 3)
    d = torch.tensor([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0]])
    with raises_naming("dirs"):
        stratified_samples((o, o), 0.0, 1.0, 4)  # zero directions
    with raises_naming("num_samples"):
        stratified_samples((o, d), 0.0, 1.0, 0)
    with raises_naming("near"):
        stratified_samples((o, d), torch.zeros(3), 1.0, 4)
    with raises_naming("far"):
        stratified_samples((o, d), 0.0, math.inf, 4)
    with raises_naming("rays"):
        stratified_samples((o, torch.zeros(3, 3)), 0.0, 1.0, 4)
    with raises_naming("generator"):
        stratified_samples((o, d), 0.0, 1.0, 4, generator=0)


def test_mesh_guided_filter_against_trimesh(device):
    # Two frames of a sphere: the second moved and scaled. Rays through both; keep samples near the surface.
    v, f = uv_sphere(16, 32, device=device)
    vertices = torch.stack([v, v * 0.7 + torch.tensor([0.3, 0.0, 0.1], device=device)])
    mesh = TriangleMesh(vertices, f)
    g = torch.Generator().manual_seed(2)
    rays = 64
    origins = (torch.rand(rays, 3, generator=g) * 0.6 - 0.3 + torch.tensor([0.0, 0.0, -3.0])).to(device)
    dirs = torch.nn.functional.normalize(torch.tensor([0.0, 0.0, 1.0]) + torch.randn(rays, 3, generator=g) * 0.1, dim=-1)
    dirs = dirs.to(device)
    frame = (torch.arange(rays) % 2).to(device)
    samples = stratified_samples((origins, dirs), 1.0, 5.0, 200, g.manual_seed(3))
    max_distance = 0.05
    kept = mesh_guided_filter(samples, origins, dirs, mesh, frame, max_distance)
    # Truth: trimesh's exact distances from every midpoint to its frame's mesh.
    points = samples.midpoints(origins, dirs).cpu().numpy()
    distance = np.empty(len(samples))
    for k in range(2):
        sel = (frame[samples.ray] == k).cpu().numpy()
        tm = trimesh.Trimesh(vertices[k].cpu().numpy(), f.cpu().numpy(), process=False)
        distance[sel] = trimesh.proximity.closest_point(tm, points[sel])[1]
    clear = np.abs(distance - max_distance) > 1e-5
    expected = torch.from_numpy((distance <= max_distance) & clear)
    # Kept samples, as (ray, t_start) pairs, are exactly the clear ones within reach (ties either way).
    got = set(zip(kept.ray.tolist(), kept.t_start.tolist(), strict=True))
    mask = torch.from_numpy(clear)
    want = set(zip(samples.ray.cpu()[expected].tolist(), samples.t_start.cpu()[expected].tolist(), strict=True))
    ambiguous = set(zip(samples.ray.cpu()[~mask].tolist(), samples.t_start.cpu()[~mask].tolist(), strict=True))
    assert want <= got and got - want <= ambiguous
    assert len(want) > 100  # the test means something
    assert (kept.ray[1:] >= kept.ray[:-1]).all()


def test_mesh_guided_filter_bad_input(box_mesh):
    device = box_mesh.device
    o = torch.zeros(2, 3, device=device)
    d = torch.tensor([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0]], device=device)
    samples = stratified_samples((o, d), 0.0, 1.0, 3)
    with raises_naming("max_distance"):
        mesh_guided_filter(samples, o, d, box_mesh, 0, -1.0)
    with raises_naming("frame"):
        mesh_guided_filter(samples, o, d, box_mesh, 3, 0.1)
    with raises_naming("origins"):
        mesh_guided_filter(samples, torch.zeros(3, 3, device=device), torch.zeros(3, 3, device=device), box_mesh, 0, 0.1)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_midpoints_keep_dtype(dtype):
    samples = stratified_samples((torch.zeros(2, 3, dtype=dtype), torch.ones(2, 3, dtype=dtype)), 0.0, 1.0, 2)
    assert samples.t_start.dtype == dtype
    assert samples.midpoints(torch.zeros(2, 3, dtype=dtype), torch.ones(2, 3, dtype=dtype)).dtype == dtype


def test_shell_cells_bound_the_distance_to_the_mesh():
    # Truth: trimesh's exact distances. A point in a cell wholly inside lies within the shell; one in a cell out of
    # reach lies beyond it; both kinds exist, and cells across the edge are neither.
    v, f = uv_sphere(16, 32)
    vertices = torch.stack([v, v * 0.7 + torch.tensor([0.3, 0.0, 0.1])])
    mesh, shell = TriangleMesh(vertices, f), 0.2
    grid = OccupancyGrid(torch.tensor([[-1.2] * 3, [1.2] * 3]), 24)
    grid.binary[:, :, :3] = False  # cells never classified: out of reach
    cells = shell_cells(grid, mesh, 1, shell)
    points = torch.rand(20000, 3, generator=torch.Generator().manual_seed(0)) * 2.4 - 1.2
    tm = trimesh.Trimesh(vertices[1].numpy(), f.numpy(), process=False)
    distance = torch.from_numpy(trimesh.proximity.closest_point(tm, points.numpy())[1]).float()
    inside = cells.contains(points)
    c = torch.floor((points - grid.aabb[0]) * grid._scale).long().clamp(0, 23)
    out_of_reach = ~cells.reach[c[:, 0], c[:, 1], c[:, 2]]
    assert inside.sum() > 500 and out_of_reach.sum() > 5000 and (~inside & ~out_of_reach).sum() > 500
    assert (distance[inside] <= shell + 1e-6).all()
    assert (distance[out_of_reach & grid.binary[c[:, 0], c[:, 1], c[:, 2]]] > shell - 1e-6).all()
    assert not cells.reach[:, :, :3].any() and not (cells.inside & ~cells.reach).any()
    with raises_naming("frame"):
        shell_cells(grid, mesh, 2, shell)


def test_frame_shells_give_the_same_samples_and_keep_the_frame_s_cells():
    head = bent_head(frames=2, seed=1)
    box = torch.stack([head.vertices.amin((0, 1)) - 0.3, head.vertices.amax((0, 1)) + 0.3]).float()
    sampler = OccupancySampler(box, 64, 512, 0, 0.95, 0.01, shell=0.08)
    g = torch.Generator().manual_seed(4)
    centre = head.vertices[1].mean(0).float()
    origins = centre + torch.tensor([0.0, 0.0, -4.0]) + torch.randn(300, 3, generator=g) * 0.2
    dirs = torch.nn.functional.normalize(centre + torch.randn(300, 3, generator=g) * 0.5 - origins, dim=-1)
    rays = Rays(origins, dirs, torch.ones(300, dtype=torch.long))
    plain = sampler(rays, head)
    with sampler.frame_shells():
        fast = sampler(rays, head)
        kept = sampler._shell_cells[1]
        assert kept.inside.any() and (kept.reach & ~kept.inside).any() and not kept.reach.all()
        again = sampler(rays, head)
        assert sampler._shell_cells[1] is kept  # the frame's cells reused
        sampler.grid.binary[0] = False  # the grid changed: classified again
        sampler(rays, head)
        assert sampler._shell_cells[1] is not kept
        mixed = sampler(Rays(origins, dirs, torch.arange(300) % 2), head)  # two frames: the plain path
    assert len(plain) > 1000
    for samples in (fast, again):
        assert torch.equal(samples.ray, plain.ray) and torch.equal(samples.t_start, plain.t_start)
        assert torch.equal(samples.t_end, plain.t_end)
    assert torch.equal(mixed.ray, sampler(Rays(origins, dirs, torch.arange(300) % 2), head).ray)


@pytest.mark.parametrize("padding", [0.02, 0.2])
def test_a_stratified_sampler_s_frame_shells_give_the_same_samples(padding):
    """StratifiedSampler in frame_shells(): a grid around the frame's mesh classified once; samples in its cells out
    of reach are dropped untested, those wholly inside kept, the rest (and any outside the grid, with a padding
    beyond the shell) tested: exactly the samples of the plain filter, for one frame's rays and for mixed frames."""
    head = bent_head(frames=2, seed=2)
    sampler = StratifiedSampler(48, padding=padding, shell=0.08)
    g = torch.Generator().manual_seed(5)
    centre = head.vertices[1].mean(0).float()
    origins = centre + torch.tensor([0.0, 0.0, -4.0]) + torch.randn(400, 3, generator=g) * 0.2
    dirs = torch.nn.functional.normalize(centre + torch.randn(400, 3, generator=g) * 0.5 - origins, dim=-1)
    rays = Rays(origins, dirs, torch.ones(400, dtype=torch.long))

    def seeded():  # the same strata every call
        return torch.Generator().manual_seed(0)

    plain, centres = sampler(rays, head, None, seeded()), sampler(rays, head)
    with sampler.frame_shells():
        fast = sampler(rays, head, None, seeded())
        cells = sampler._shell_cells[1]
        assert cells.inside.any() and (cells.reach & ~cells.inside).any() and not cells.reach.all()
        assert sampler(rays, head, None, seeded()) is not None and sampler._shell_cells[1] is cells  # reused
        mixed = sampler(Rays(origins, dirs, torch.arange(400) % 2), head, None, seeded())
        fast_centres = sampler(rays, head)  # no generator: the kept bins alone made (stratified_shell_samples)
    assert 1000 < len(plain) < 48 * 400 and 1000 < len(centres) < 48 * 400
    for want, got in ((plain, fast), (centres, fast_centres)):
        assert torch.equal(got.ray, want.ray) and torch.equal(got.t_start, want.t_start)
        assert torch.equal(got.t_end, want.t_end)
    assert torch.equal(mixed.ray, sampler(Rays(origins, dirs, torch.arange(400) % 2), head, None, seeded()).ray)


def test_a_labelled_march_gives_the_march_s_samples_and_their_cells_labels(device):
    """march_labelled walks the cells of a nonzero label as march walks those cells, and gives each sample the label
    of the cell its midpoint lies in (placed here in float64, away from the cells' faces: float32 may place a
    midpoint within its rounding of a face on either side)."""
    grid = OccupancyGrid(torch.tensor([[-1.0, -0.8, -1.2], [1.0, 0.8, 1.2]], device=device), (16, 12, 20))
    g = torch.Generator().manual_seed(3)
    labels = torch.randint(0, 3, grid.resolution, generator=g, dtype=torch.uint8).to(device)
    origins = (torch.randn(400, 3, generator=g) * 0.3 + torch.tensor([0.0, 0.0, -3.0])).to(device)
    dirs = torch.nn.functional.normalize(torch.randn(400, 3, generator=g) * 0.3 + torch.tensor([0.0, 0.0, 1.0]), dim=-1)
    dirs = dirs.to(device)
    samples, got = grid.march_labelled(origins, dirs, labels, step_size=0.01)
    want = grid.march(origins, dirs, step_size=0.01, cells=labels > 0)
    assert len(samples) > 10_000 and got.dtype == torch.uint8 and got.shape == samples.ray.shape
    for name in ("ray", "t_start", "t_end"):
        assert torch.equal(getattr(samples, name), getattr(want, name)), name
    t = (samples.t_start.double() + samples.t_end.double()) / 2
    x = origins.double()[samples.ray] + t[:, None] * dirs.double()[samples.ray]
    position = (x - grid.aabb[0].double()) / grid.cell_size.double()
    clear = ((position - position.round()).abs() > 1e-4).all(dim=1)
    c = position.floor().long()
    assert clear.float().mean() > 0.99 and set(got.unique().tolist()) == {1, 2}
    assert torch.equal(got[clear], labels[c[clear, 0], c[clear, 1], c[clear, 2]])
    with raises_naming("labels"):
        grid.march_labelled(origins, dirs, labels > 0)
    with raises_naming("labels"):
        grid.march_labelled(origins, dirs, labels[:, :, :4])


def test_march_cells_bad_input():
    grid = OccupancyGrid(torch.tensor([[-1.0] * 3, [1.0] * 3]), 8)
    o, d = torch.zeros(1, 3), torch.tensor([[0.0, 0.0, 1.0]])
    with raises_naming("cells"):
        grid.march(o, d, cells=torch.ones(8, 8, 4, dtype=torch.bool))
    with raises_naming("cells"):
        grid.march(o, d, cells=torch.ones(8, 8, 8))
    # labels are march_labelled's: a uint8 mask is refused, not read as one, by march's own check (the runtime type
    # checker, which refuses it too, off, as where a user runs without it)
    with shapes_unchecked(), raises_naming("cells"):
        grid.march(o, d, cells=torch.ones(8, 8, 8, dtype=torch.uint8))
    assert len(grid.march(o, d, cells=torch.zeros(8, 8, 8, dtype=torch.bool))) == 0
