"""Occupancy grid: the decayed-maximum update against a direct computation, and Warp ray marching against
the same stepping rule in torch (fully occupied grid), against dense stepping filtered by a float64 cell
lookup (a sphere of occupied cells), analytic constant steps, misses, the per-ray cap, and bad input."""

from __future__ import annotations

import math
import types

import pytest
import torch

from headfields.renderers import OccupancyGrid, OccupancySampler, PackedSamples, composite, ray_aabb

from hand_heads import bent_head
from helpers import raises_naming

AABB = [[-1.0, -0.75, -1.25], [1.0, 1.25, 0.75]]
CONE, STEP, MAX_STEP = 2.0**-8, 2.0**-8, 2.0**-6  # exact in float32, so torch and Warp round alike


def camera_rays(n: int, seed: int, device, dtype=torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    """Rays from a small cluster of origins about 3 units in front of the box, most of them hitting it."""
    g = torch.Generator().manual_seed(seed)
    origins = torch.tensor([0.0, 0.25, -4.0]) + torch.randn(n, 3, generator=g) * 0.3
    target = torch.tensor([0.0, 0.25, -0.25]) + (torch.rand(n, 3, generator=g) * 2 - 1) * 1.3
    dirs = torch.nn.functional.normalize(target - origins, dim=-1)
    return origins.to(device=device, dtype=dtype), dirs.to(device=device, dtype=dtype)


def dense_steps(near, far, step=STEP, max_step=MAX_STEP, cone=CONE):
    """Every step of the marching rule, in float32 as the kernel: (ray, t0, t1) of steps, in ray order."""
    t, t_far = near.float().clone(), far.float()
    active = t < t_far
    rays, starts, ends = [], [], []
    index = torch.arange(len(t), device=t.device)
    while active.any():
        t1 = torch.minimum(t + (t * cone).clamp(min=step).clamp(max=max_step), t_far)
        active = active & (t1 > t)
        rays.append(index[active])
        starts.append(t[active])
        ends.append(t1[active])
        t = torch.where(active, t1, t)
        active = active & (t < t_far)
    ray = torch.cat(rays)
    order = torch.sort(ray, stable=True).indices  # steps were appended step by step: regroup by ray
    return ray[order], torch.cat(starts)[order], torch.cat(ends)[order]


def box_range(origins, dirs, aabb):
    near, far, hit = ray_aabb(origins, dirs, aabb)
    return near, torch.where(hit, far, near)


def cell_lookup(points: torch.Tensor, aabb: torch.Tensor, mask: torch.Tensor):
    """Float64 lookup of ``mask [X,Y,Z]`` at ``points``; also whether a point is within 1e-4 cells of a cell
    boundary (where float32 marching may round to the neighbour)."""
    res = torch.tensor(mask.shape, dtype=torch.float64, device=points.device)
    c = (points.double() - aabb[0].double()) / (aabb[1].double() - aabb[0].double()) * res
    ambiguous = ((c - c.round()).abs() < 1e-4).any(dim=-1)
    inside = ((c >= 0) & (c < res)).all(dim=-1)
    i = c.floor().long().clamp(min=torch.zeros(3, dtype=torch.long, device=points.device), max=res.long() - 1)
    return inside & mask[i[:, 0], i[:, 1], i[:, 2]], ambiguous


def sphere_mask(res, aabb, centre, radius):
    axes = [(torch.arange(n, dtype=torch.float64) + 0.5) / n for n in res]
    grid = torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1)
    centres = aabb[0].double().cpu() + grid * (aabb[1] - aabb[0]).double().cpu()
    return (centres - torch.tensor(centre, dtype=torch.float64)).norm(dim=-1) < radius


def test_fully_occupied_march_matches_torch_stepping(device):
    aabb = torch.tensor(AABB, device=device)
    grid = OccupancyGrid(aabb, 16)
    origins, dirs = camera_rays(500, seed=0, device=device)
    near = torch.zeros(500, device=device)
    near[:50] = 3.5  # some rays start inside the box, some end early
    far = torch.full((500,), 100.0, device=device)
    far[50:100] = 3.7
    samples = grid.march(origins, dirs, near, far, step_size=STEP, cone_angle=CONE, max_step=MAX_STEP)
    lo, hi = box_range(origins, dirs, aabb)
    ray, t0, t1 = dense_steps(torch.maximum(lo, near), torch.minimum(hi, far))
    assert torch.equal(samples.counts(), torch.bincount(ray, minlength=500))
    assert torch.equal(samples.ray, ray)
    torch.testing.assert_close(samples.t_start, t0, atol=1e-6, rtol=0)
    torch.testing.assert_close(samples.t_end, t1, atol=1e-6, rtol=0)
    assert (samples.counts() > 0).sum() > 300
    # Steps grow with t (cone) between the two clamps, and the last step of a ray ends at its exit.
    assert samples.deltas.max() <= MAX_STEP + 1e-6 and samples.deltas.min() > 0
    last = torch.cumsum(samples.counts(), 0)[samples.counts() > 0] - 1
    torch.testing.assert_close(samples.t_end[last], torch.minimum(hi, far)[samples.counts() > 0])


def test_constant_steps_are_analytic(device):
    grid = OccupancyGrid(torch.tensor([[-1.0, -1.0, -1.0], [1.0, 1.0, 1.0]], device=device), 8)
    origins = torch.tensor([[0.1, 0.2, -3.0], [0.1, -3.0, 0.2]], device=device)
    dirs = torch.tensor([[0.0, 0.0, 1.0], [0.0, 1.0, 0.0]], device=device)
    samples = grid.march(origins, dirs, step_size=0.25, cone_angle=0.0)
    # Entry at t = 2, exit at t = 4: eight steps of 0.25 on each ray.
    assert samples.counts().tolist() == [8, 8]
    expect = 2 + 0.25 * torch.arange(8, device=device)
    torch.testing.assert_close(samples.t_start, expect.repeat(2), atol=0, rtol=0)
    torch.testing.assert_close(samples.t_end, (expect + 0.25).repeat(2), atol=0, rtol=0)
    # A last partial step is cut at the exit.
    samples = grid.march(origins, dirs, step_size=0.3, cone_angle=0.0)
    assert samples.counts().tolist() == [7, 7]
    assert samples.t_end[6].item() == 4.0 and samples.deltas[6].item() == pytest.approx(0.2, abs=1e-6)


def test_insta_marches_with_constant_steps(device):
    """INSTA's box is instant-ngp's unit cube (aabb_scale 1), where instant-ngp sets the cone angle to 0: constant
    steps of sqrt(3)/1024 times the box's side. A grid built with INSTA's cone angle marches that by default."""
    from headfields.renderers.occupancy import INSTA_CONE_ANGLE

    box = torch.tensor([[-0.5, -0.5, -0.5], [0.5, 0.5, 0.5]], device=device)
    grid = OccupancyGrid(box, 8, cone_angle=INSTA_CONE_ANGLE)
    assert INSTA_CONE_ANGLE == 0.0 and grid.cone_angle == 0.0 and OccupancyGrid(box, 8).cone_angle == 1 / 256
    origins = torch.tensor([[0.0, 0.1, -3.0]], device=device)
    dirs = torch.tensor([[0.0, 0.0, 1.0]], device=device)
    samples = grid.march(origins, dirs)  # entry t = 2.5, exit t = 3.5: 1024 / sqrt(3) ~ 591.2 steps
    step = math.sqrt(3) / 1024
    assert len(samples) == math.ceil(1.0 / step)
    torch.testing.assert_close(samples.deltas[:-1], torch.full((len(samples) - 1,), step, device=device), rtol=1e-3, atol=0)
    with raises_naming("cone_angle"):
        OccupancyGrid(box, 8, cone_angle=float("nan"))


def test_default_steps_follow_instant_ngp_s_cone(device):
    # Defaults: cone 1/256 clamped to [sqrt(3)/1024, sqrt(3)/128] times the box's largest side (2 here).
    grid = OccupancyGrid(torch.tensor([[-1.0, -1.0, -1.0], [1.0, 1.0, 1.0]], device=device), 8)
    origins = torch.tensor([[0.0, 0.0, -1.0], [0.0, 0.0, -200.0]], device=device)
    dirs = torch.tensor([[0.0, 0.0, 1.0], [0.0, 0.0, 1.0]], device=device)
    samples = grid.march(origins, dirs)
    deltas = samples.deltas
    near_ray, far_ray = deltas[samples.ray == 0], deltas[samples.ray == 1]
    assert near_ray[0].item() == pytest.approx(2 * math.sqrt(3) / 1024, rel=1e-5)  # t = 0: minimum step
    t = samples.t_start[samples.ray == 0]
    rule = (t / 256).clamp(min=2 * math.sqrt(3) / 1024, max=2 * math.sqrt(3) / 128)
    torch.testing.assert_close(near_ray[:-1], rule[:-1], rtol=1e-4, atol=0)  # all but the last, cut at the exit
    assert (rule > 2 * math.sqrt(3) / 1024 * 1.5).any()  # the cone regime is reached
    assert far_ray[0].item() == pytest.approx(2 * math.sqrt(3) / 128, rel=1e-3)  # float32 t ~ 199  # t/256 > max: maximum step


def test_sphere_of_occupied_cells_matches_dense_filtering(device):
    aabb = torch.tensor(AABB, device=device)
    res = (24, 20, 28)  # distinct axes catch a transposed cell layout
    grid = OccupancyGrid(aabb, res)
    mask = sphere_mask(res, aabb, (0.2, 0.3, -0.4), 0.6).to(device)
    grid.binary.copy_(mask)
    origins, dirs = camera_rays(600, seed=1, device=device)
    samples = grid.march(origins, dirs, step_size=STEP, cone_angle=CONE, max_step=MAX_STEP)
    occupied, ambiguous = cell_lookup(samples.midpoints(origins, dirs), aabb, mask)
    assert (occupied | ambiguous).all()  # every emitted midpoint is in an occupied cell
    lo, hi = box_range(origins, dirs, aabb)
    ray, t0, t1 = dense_steps(lo, hi)
    mid = origins[ray] + ((t0 + t1) / 2)[:, None] * dirs[ray]
    want, unsure = cell_lookup(mid, aabb, mask)
    got = set(zip(samples.ray.tolist(), samples.t_start.tolist(), strict=True))
    expected = set(zip(ray[want & ~unsure].tolist(), t0[want & ~unsure].tolist(), strict=True))
    either = set(zip(ray[unsure].tolist(), t0[unsure].tolist(), strict=True))
    assert expected <= got and got - expected <= either
    assert len(expected) > 5000
    assert grid.occupied(samples.midpoints(origins, dirs))[~ambiguous].all()
    PackedSamples(samples.ray, samples.t_start, samples.t_end, samples.num_rays)  # passes the full validation


def test_large_batches_split_over_threads_give_the_same_samples():
    # Over 2 x 8192 rays a CPU launch is split into chunks run on several threads (when there are cores).
    aabb = torch.tensor(AABB)
    grid = OccupancyGrid(aabb, 16)
    grid.binary.copy_(sphere_mask((16, 16, 16), aabb, (0.0, 0.25, -0.25), 0.7))
    origins, dirs = camera_rays(20000, seed=7, device="cpu")
    whole = grid.march(origins, dirs)
    parts = [grid.march(origins[i : i + 5000], dirs[i : i + 5000]) for i in range(0, 20000, 5000)]
    assert torch.equal(whole.ray, torch.cat([p.ray + 5000 * k for k, p in enumerate(parts)]))
    assert torch.equal(whole.t_start, torch.cat([p.t_start for p in parts]))
    assert torch.equal(whole.t_end, torch.cat([p.t_end for p in parts]))


def test_max_samples_per_ray_keeps_the_first_occupied_steps(device):
    aabb = torch.tensor(AABB, device=device)
    grid = OccupancyGrid(aabb, 16)
    grid.binary.copy_(sphere_mask((16, 16, 16), aabb, (0.0, 0.25, -0.25), 0.7).to(device))
    origins, dirs = camera_rays(200, seed=2, device=device)
    full = grid.march(origins, dirs, step_size=STEP, cone_angle=CONE, max_step=MAX_STEP)
    capped = grid.march(origins, dirs, step_size=STEP, cone_angle=CONE, max_step=MAX_STEP, max_samples_per_ray=10)
    assert torch.equal(capped.counts(), full.counts().clamp(max=10))
    rank = torch.arange(len(full), device=device) - (torch.cumsum(full.counts(), 0) - full.counts())[full.ray]
    assert torch.equal(capped.t_start, full.t_start[rank < 10])


def test_rays_missing_the_box_emit_nothing(device):
    grid = OccupancyGrid(torch.tensor([[-1.0, -1.0, -1.0], [1.0, 1.0, 1.0]], device=device), 8)
    origins = torch.tensor([[0.0, 3.0, -3.0], [0.0, 0.0, 3.0], [0.0, 0.0, -3.0], [0.0, 0.0, -3.0]], device=device)
    dirs = torch.tensor([[0.0, 0.0, 1.0], [0.0, 0.0, 1.0], [0.0, 0.0, 1.0], [0.0, 0.0, 1.0]], device=device)
    far = torch.tensor([10.0, 10.0, 1.5, 10.0], device=device)  # ray 2 stops before the box
    samples = grid.march(origins, dirs, far=far)
    assert samples.counts().tolist()[:3] == [0, 0, 0] and samples.counts()[3] > 0
    grid.binary.fill_(False)
    assert len(grid.march(origins, dirs)) == 0
    empty = grid.march(torch.zeros(0, 3, device=device), torch.zeros(0, 3, device=device))
    assert len(empty) == 0 and empty.num_rays == 0


def test_march_returns_the_dtype_of_the_rays(device):
    grid = OccupancyGrid(torch.tensor([[-1.0, -1.0, -1.0], [1.0, 1.0, 1.0]], device=device), 8)
    origins, dirs = camera_rays(10, seed=3, device=device, dtype=torch.float64)
    samples = grid.march(origins, dirs)
    assert samples.t_start.dtype == torch.float64 and len(samples) > 0
    assert samples.t_mid.dtype == torch.float64 and torch.equal(samples.t_mid, (samples.t_start + samples.t_end) / 2)


@pytest.mark.parametrize("num_cells", [None, 100])
def test_update_is_a_decayed_maximum(device, num_cells):
    aabb = torch.tensor(AABB, device=device)
    res = (6, 5, 7)
    grid = OccupancyGrid(aabb, res)
    start = torch.rand(res, generator=torch.Generator().manual_seed(4)).to(device) * 0.05
    grid.occupancy.copy_(start)
    seen = []

    def density_fn(points):
        seen.append(points)
        return (points[:, 0] + 1) * 0.02  # 0 .. 0.04 across the box

    grid.update(density_fn, decay=0.9, threshold=0.03, num_cells=num_cells, generator=torch.Generator().manual_seed(5))
    points = torch.cat(seen)
    # Each point lies in its own cell (distinct cells; all of them when num_cells is None).
    cell = ((points.double() - aabb[0]) / (aabb[1] - aabb[0]) * torch.tensor(res, device=device)).floor().long()
    flat = (cell[:, 0] * res[1] + cell[:, 1]) * res[2] + cell[:, 2]
    assert len(flat) == (num_cells or 210) and len(flat.unique()) == len(flat)
    # instant-ngp's ema_grid_samples_nerf: every cell decays, the sampled ones keep the larger of that and the new value.
    expected = 0.9 * start.clone().view(-1)
    expected[flat] = torch.maximum(0.9 * start.view(-1)[flat], (points[:, 0] + 1) * 0.02)
    torch.testing.assert_close(grid.occupancy.view(-1), expected, atol=1e-7, rtol=0)
    assert torch.equal(grid.binary, grid.occupancy > 0.03)


def test_update_with_no_occupied_cell_draws_cells_all_over(device):
    """num_occupied with every cell empty: as many cells drawn uniformly instead, none outside the grid."""
    aabb = torch.tensor(AABB, device=device)
    grid = OccupancyGrid(aabb, (6, 5, 7))
    seen = []

    def density_fn(points):
        seen.append(points)
        return torch.zeros(len(points), device=points.device)

    grid.update(density_fn, threshold=0.1, num_cells=1, num_occupied=300, generator=torch.Generator().manual_seed(3))
    points = torch.cat(seen)
    assert len(points) == 301
    assert ((points >= aabb[0]) & (points <= aabb[1])).all()
    cell = ((points.double() - aabb[0]) / (aabb[1] - aabb[0]) * torch.tensor((6, 5, 7), device=device)).floor().long()
    assert len(torch.unique(cell, dim=0)) > 100  # spread over the grid's 210 cells, not piled on one


def test_update_draws_occupied_cells_among_the_occupied(device):
    """num_occupied: cells drawn (with repeats) among those above the threshold; a cell drawn twice keeps the larger
    of its two random points' densities."""
    aabb = torch.tensor(AABB, device=device)
    res = (6, 5, 7)
    grid = OccupancyGrid(aabb, res)
    occupied = torch.tensor([3, 50, 51, 199], device=device)
    grid.occupancy.view(-1)[occupied] = 0.5
    seen = []

    def density_fn(points):
        seen.append(points)
        return points[:, 1] + 2.0  # 1 .. 3 across the box, above every decayed value: the maximum is the density

    grid.update(density_fn, decay=0.5, threshold=0.1, num_cells=1, num_occupied=40, generator=torch.Generator().manual_seed(2))
    points = torch.cat(seen)
    assert len(points) == 41
    cell = ((points.double() - aabb[0]) / (aabb[1] - aabb[0]) * torch.tensor(res, device=device)).floor().long()
    flat = (cell[:, 0] * res[1] + cell[:, 1]) * res[2] + cell[:, 2]
    assert torch.isin(flat[1:], occupied).all() and len(flat[1:].unique()) == len(occupied)  # 40 draws of 4 cells
    expected = 0.5 * grid.occupancy.new_zeros(210).index_fill_(0, occupied, 0.5)
    for c in flat.unique():
        expected[c] = (points[flat == c, 1] + 2.0).max()
    torch.testing.assert_close(grid.occupancy.view(-1), expected, atol=1e-6, rtol=0)


def test_occupancy_sampler_refresh_follows_instant_ngps_schedule():
    """Every cell at each refresh before the warm-up step, then a quarter of them uniformly and a quarter among the
    occupied ones (half the evaluations); None keeps every cell."""
    box = torch.tensor(AABB)
    counts = []

    def field(x, dirs, frames, head):
        counts.append(len(x))
        return types.SimpleNamespace(density=torch.full((len(x),), 10.0))

    head = bent_head(frames=3)
    sampler = OccupancySampler(box, 16, 128, every=4, decay=0.95, threshold=0.01, warmup_steps=8)
    for step in range(12):
        sampler.refresh(field, head, step)
    assert counts == [16**3, 16**3, 16**3 // 4 + 16**3 // 4]  # steps 0, 4, then 8 (past the warm-up)
    counts.clear()
    always = OccupancySampler(box, 16, 128, every=4, decay=0.95, threshold=0.01, warmup_steps=None)
    always.refresh(field, head, 400)
    assert counts == [16**3]
    with raises_naming("warmup_steps"):
        OccupancySampler(box, 16, 128, every=4, decay=0.95, threshold=0.01, warmup_steps=-1)


def test_update_decays_unseen_density_and_marks_cells(device):
    # A blob seen once fades below the threshold after enough updates without it: 0.95^n * 1 < 0.01.
    grid = OccupancyGrid(torch.tensor([[0.0, 0.0, 0.0], [1.0, 1.0, 1.0]], device=device), 4)
    assert grid.binary.all()  # fully occupied before any update
    g = torch.Generator().manual_seed(6)
    grid.update(lambda p: (p < 0.5).all(dim=-1).float(), generator=g)
    assert grid.binary.sum() == 8 and grid.binary[:2, :2, :2].all()
    for n in range(1, 100):
        grid.update(lambda p: torch.zeros(len(p), device=p.device), generator=g)
        assert grid.binary.any() == (0.95**n > 0.01 + 1e-6)
    grid.mark_all()
    assert grid.binary.all()
    # The state round-trips through a state dict.
    other = OccupancyGrid(torch.tensor([[0.0, 0.0, 0.0], [1.0, 1.0, 1.0]], device=device), 4)
    other.load_state_dict(grid.state_dict())
    assert torch.equal(other.occupancy, grid.occupancy) and torch.equal(other.binary, grid.binary)


def test_occupied_lookup(device):
    grid = OccupancyGrid(torch.tensor([[0.0, 0.0, 0.0], [2.0, 1.0, 1.0]], device=device), (2, 1, 1))
    grid.binary.copy_(torch.tensor([[[True]], [[False]]], device=device))
    points = torch.tensor([[0.5, 0.5, 0.5], [1.5, 0.5, 0.5], [-0.1, 0.5, 0.5], [0.5, 1.1, 0.5]], device=device)
    assert grid.occupied(points).tolist() == [True, False, False, False]


def test_bad_input():
    aabb = torch.tensor([[-1.0, -1.0, -1.0], [1.0, 1.0, 1.0]])
    with raises_naming("aabb"):
        OccupancyGrid(aabb.flip(0))
    with raises_naming("resolution"):
        OccupancyGrid(aabb, 0)
    with raises_naming("resolution"):
        OccupancyGrid(aabb, (4, 4))
    grid = OccupancyGrid(aabb, 4)
    o, d = torch.zeros(2, 3), torch.tensor([[0.0, 0.0, 1.0]]).expand(2, 3)
    with raises_naming("step_size"):
        grid.march(o, d, step_size=0.0)
    with raises_naming("max_step"):
        grid.march(o, d, step_size=0.1, max_step=0.05)
    with raises_naming("cone_angle"):
        grid.march(o, d, cone_angle=-1.0)
    with raises_naming("max_samples_per_ray"):
        grid.march(o, d, max_samples_per_ray=0)
    with raises_naming("near"):
        grid.march(o, d, near=torch.zeros(3))
    with raises_naming("dirs"):
        grid.march(o, torch.zeros(3, 3))
    with raises_naming("decay"):
        grid.update(lambda p: torch.zeros(len(p)), decay=1.5)
    with raises_naming("density_fn"):
        grid.update(lambda p: torch.zeros(len(p), 2))
    with raises_naming("density_fn"):
        grid.update("not callable")
    with raises_naming("num_cells"):
        grid.update(lambda p: torch.zeros(len(p)), num_cells=65)
    with raises_naming("num_occupied"):
        grid.update(lambda p: torch.zeros(len(p)), num_occupied=-1)


def test_update_threshold_capped_at_the_mean_keeps_the_densest_cells_of_a_young_field():
    grid = OccupancyGrid(torch.tensor([[0.0, 0.0, 0.0], [1.0, 1.0, 1.0]]), 4)

    # A young field: every value far below the threshold; x decides how dense a cell is.
    def field(points):
        return 1e-4 * (1.0 + torch.floor(points[:, 0] * 4))

    grid.update(field, decay=0.0, threshold=0.01)
    assert not grid.binary.any()  # the plain threshold prunes everything
    grid.update(field, decay=0.0, threshold=0.01, cap_at_mean=True)
    expected = grid.occupancy > grid.occupancy.mean()  # instant-ngp: min(threshold, mean)
    assert torch.equal(grid.binary, expected)
    assert expected.any() and not expected.all()
    assert torch.equal(grid.binary[:, 0, 0], torch.tensor([False, False, True, True]))


# --- march_fixed: a fixed number of samples, nothing read back (CUDA graphs) ----------------------------------


def sphere_grid(device) -> OccupancyGrid:
    aabb = torch.tensor(AABB, device=device)
    grid = OccupancyGrid(aabb, 16)
    grid.binary.copy_(sphere_mask((16, 16, 16), aabb, (0.0, 0.25, -0.25), 0.7).to(device))
    return grid


STEPS = dict(step_size=STEP, cone_angle=CONE, max_step=MAX_STEP)


def test_march_fixed_holds_the_march_then_zero_length_padding(device):
    grid = sphere_grid(device)
    origins, dirs = camera_rays(300, seed=3, device=device)
    full = grid.march(origins, dirs, **STEPS)
    slots = grid.march_fixed(origins, dirs, len(full) + 77, **STEPS)
    fixed, n = slots.samples, len(full)
    assert len(fixed) == n + 77 and int(slots.count) == n and bool(slots.fits.all())
    assert torch.equal(fixed.ray[:n], full.ray) and torch.equal(fixed.t_start[:n], full.t_start)
    assert torch.equal(fixed.t_end[:n], full.t_end)
    assert bool((fixed.ray[n:] == 299).all()) and bool((fixed.deltas[n:] == 0).all())
    # The midpoints the kernel wrote (the padding's too): the torch expression's, to the bit.
    assert torch.equal(fixed.t_mid, (fixed.t_start + fixed.t_end) / 2)
    assert torch.equal(fixed.first(), torch.searchsorted(fixed.ray, torch.arange(300, device=device)))  # the kernel's too
    # The padding is valid packed samples (sorted, within the last ray's range) and composites to nothing.
    PackedSamples(fixed.ray, fixed.t_start, fixed.t_end, fixed.num_rays)
    g = torch.Generator().manual_seed(0)
    density, rgb = torch.rand(len(fixed), generator=g).to(device) * 50, torch.rand(len(fixed), 3, generator=g).to(device)
    want = composite(full, density[:n], rgb[:n])
    got = composite(fixed, density, rgb, validate=False)
    torch.testing.assert_close(got.rgb, want.rgb, rtol=0, atol=1e-6)
    torch.testing.assert_close(got.opacity, want.opacity, rtol=0, atol=1e-6)
    assert bool((got.weights[n:] == 0).all())


def test_march_fixed_cuts_what_does_not_fit_and_says_so(device):
    grid = sphere_grid(device)
    origins, dirs = camera_rays(300, seed=4, device=device)
    full = grid.march(origins, dirs, **STEPS)
    capacity = len(full) // 3
    slots = grid.march_fixed(origins, dirs, capacity, **STEPS)
    fixed = slots.samples
    assert len(fixed) == capacity and int(slots.count) == capacity
    # The slots hold exactly the march's first samples: later rays' samples are the ones cut.
    assert torch.equal(fixed.ray, full.ray[:capacity]) and torch.equal(fixed.t_start, full.t_start[:capacity])
    # Each ray's first slot, the kernel's: where a binary search of the rays finds it (past the cut, the slots' end).
    assert torch.equal(fixed.first(), torch.searchsorted(fixed.ray, torch.arange(300, device=device)))
    assert torch.equal(full.first(), torch.searchsorted(full.ray, torch.arange(300, device=device)))
    # A ray fits if all of its samples are in the slots: the rays before the one the cut crosses.
    per_ray_end = torch.cumsum(full.counts(), 0)
    assert torch.equal(slots.fits, (per_ray_end <= capacity) | (full.counts() == 0)) and not bool(slots.fits.all())


def test_march_fixed_and_compositing_read_nothing_back(monkeypatch):
    """Nothing in the march or the compositing turns a tensor into a Python value (each would be a host
    synchronisation on CUDA, which a CUDA graph cannot capture)."""
    grid = sphere_grid("cpu")
    origins, dirs = camera_rays(300, seed=5, device="cpu")
    grid.march_fixed(origins, dirs, 16384, **STEPS)  # Warp compiles its kernels outside the watch

    def refuse(self, *args, **kwargs):
        raise AssertionError("a tensor was read back to the host")

    for name in ("item", "tolist", "__bool__", "__int__", "__float__", "__index__"):
        monkeypatch.setattr(torch.Tensor, name, refuse)
    slots = grid.march_fixed(origins, dirs, 16384, validate=False, **STEPS)
    samples = slots.samples
    density, rgb = torch.ones(16384), torch.full((16384, 3), 0.5)
    result = composite(samples, density, rgb, background=torch.zeros(3), validate=False)
    with pytest.raises(AssertionError, match="read back"):  # the watch works: the checks read values
        composite(samples, density, rgb)
    monkeypatch.undo()
    assert result.rgb.shape == (300, 3) and bool(slots.fits.all())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_march_fixed_and_compositing_replay_in_a_cuda_graph():
    device = torch.device("cuda")
    grid = sphere_grid(device)
    origins, dirs = camera_rays(300, seed=6, device=device)
    static_origins, static_dirs = origins.clone(), dirs.clone()
    density = torch.rand(8192, device=device) * 20
    rgb = torch.rand(8192, 3, device=device)

    def step():
        slots = grid.march_fixed(static_origins, static_dirs, 8192, validate=False, **STEPS)
        return composite(slots.samples, density, rgb, validate=False).rgb, slots.fits

    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        step()  # warm-up outside the capture: Warp loads its module
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out, fits = step()
    new_origins, new_dirs = camera_rays(300, seed=7, device=device)
    static_origins.copy_(new_origins)
    static_dirs.copy_(new_dirs)
    graph.replay()
    want = grid.march_fixed(new_origins, new_dirs, 8192, **STEPS)
    torch.testing.assert_close(out, composite(want.samples, density, rgb).rgb)
    assert torch.equal(fits, want.fits)


def test_march_fixed_bad_input():
    grid = sphere_grid("cpu")
    origins, dirs = camera_rays(4, seed=0, device="cpu")
    with raises_naming("capacity"):
        grid.march_fixed(origins, dirs, 0)
    with raises_naming("origins"):
        grid.march_fixed(origins[:0], dirs[:0], 16)
    with raises_naming("validate"):
        grid.march(origins, dirs, validate="no")
