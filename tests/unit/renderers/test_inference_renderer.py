"""The inference renderer (render_nerf_inference): rounds over the live rays, stopped at a transmittance.

Against the training compositor over every sample (composite, a segmented scan), and in the models against the
training renderer's image of a held-out frame."""

import dataclasses
import math
import platform

import pytest
import torch
from denormal_cases import MANY, kept, product_of_denormals
from hypothesis import given, settings
from hypothesis import strategies as st
from tiny_configs import TINY_INSTA, TINY_MONOAVATAR, TINY_PORTRAIT

from headfields.apps.runs import load_run
from headfields.cameras import Rays, image_pixels, image_rays, pixel_rays
from headfields.checks import trusted_values
from headfields.deformers import Canonical
from headfields.device_paths import cuda_paths
from headfields.fields import FieldOutput
from headfields.heads import tracked_head
from headfields.kernels import flushing_denormals
from headfields.metrics import psnr
from headfields.models.insta import Insta
from headfields.models.monoavatar import MonoAvatar
from headfields.models.portrait360 import Portrait360
from headfields.parametric import load_model
from headfields.renderers import (
    INTERACTIVE_TRANSMITTANCE,
    PackedSamples,
    composite,
    inference,
    nerf_weights_inference,
    render_nerf_inference,
    render_neus,
    render_neus_inference,
)
from headfields.renderers.inference import MAX_ROUND_STEPS, _round_steps, _step_cap
from headfields.training import render_image, render_view

from helpers import raises_naming


@pytest.fixture(scope="module")
def head(tiny_video):
    """A tracked head for the renderer's checks of the rays (the toy fields below ignore it)."""
    frames = tiny_video[0]
    return tracked_head(load_model(frames.model_path, frames.model_type), frames)


class _Waves(torch.nn.Module):
    """A density and a colour that vary along and across the rays; counts the points it is asked for."""

    def __init__(self, scale: float):
        super().__init__()
        self.scale, self.calls = scale, []  # the points each call was asked for

    @property
    def points(self) -> int:
        return sum(self.calls)

    def forward(self, x, dirs, frame, head):
        self.calls.append(len(x))
        density = self.scale * (1 + torch.sin(7 * x[:, 2] + 3 * x[:, 0])) * (x[:, 2] > 0.5)
        rgb = torch.sigmoid(torch.stack([x[:, 0], x[:, 1] - x[:, 2], 2 * x[:, 2]], 1))
        canonical = Canonical(x, dirs, torch.ones(len(x), dtype=torch.bool), None)
        return FieldOutput(canonical=canonical, rgb=rgb, density=density)


def _rays(counts: list[int], seed: int):
    """Rays along +z (tilted at random), ray ``r`` cut into ``counts[r]`` random sorted intervals of [0, 2]."""
    g = torch.Generator().manual_seed(seed)
    r = len(counts)
    tilt = torch.rand(r, 2, generator=g, dtype=torch.float64) * 0.4 - 0.2
    directions = torch.nn.functional.normalize(torch.cat([tilt, torch.ones(r, 1, dtype=torch.float64)], 1), dim=1)
    rays = Rays(torch.zeros(r, 3, dtype=torch.float64), directions, torch.zeros(r, dtype=torch.long))
    starts, ends = [], []
    for n in counts:
        edges = torch.sort(torch.rand(2 * n, generator=g, dtype=torch.float64) * 2).values
        starts.append(edges[0::2])
        ends.append(edges[1::2])  # gaps between intervals, as a shell or an occupancy grid leaves them
    ray = torch.arange(r).repeat_interleave(torch.tensor(counts, dtype=torch.long))
    return rays, PackedSamples(ray, torch.cat(starts), torch.cat(ends), r)


def _reference(field, rays, head, samples, background):
    with torch.no_grad():
        x = samples.midpoints(rays.origins, rays.directions)
        out = field(x, rays.directions[samples.ray], rays.frame[samples.ray], head)
        return composite(samples, out.density, out.rgb, background)


@settings(max_examples=30, deadline=None)
@given(
    counts=st.lists(st.integers(0, 20), min_size=1, max_size=12),
    round_samples=st.integers(1, 100),
    scale=st.sampled_from([0.5, 5.0, 200.0]),
    seed=st.integers(0, 2**16),
)
def test_without_a_stop_the_rounds_composite_every_sample(head, counts, round_samples, scale, seed):
    rays, samples = _rays(counts, seed)
    background = torch.tensor([0.2, 0.5, 0.9], dtype=torch.float64)
    field = _Waves(scale)
    want = _reference(field, rays, head, samples, background)
    got = render_nerf_inference(field, rays, head, samples, background, early_stop=0.0, round_samples=round_samples)
    for name in ("rgb", "depth", "opacity", "weights"):
        torch.testing.assert_close(getattr(got, name), getattr(want, name), rtol=1e-9, atol=1e-12, msg=name)


@settings(max_examples=30, deadline=None)
@given(
    counts=st.lists(st.integers(0, 30), min_size=1, max_size=12),
    round_samples=st.integers(1, 100),
    eps=st.sampled_from([1e-4, 1e-2]),
    seed=st.integers(0, 2**16),
)
def test_a_stopped_ray_differs_by_at_most_the_light_behind_the_stop(head, counts, round_samples, eps, seed):
    rays, samples = _rays(counts, seed)
    background = torch.tensor([1.0, 1.0, 1.0], dtype=torch.float64)
    field = _Waves(50.0)
    want = _reference(field, rays, head, samples, background)
    got = render_nerf_inference(field, rays, head, samples, background, early_stop=eps, round_samples=round_samples)
    # The light behind a stop is under eps: it reaches the colour (each channel in [0, 1], background included),
    # the opacity, and the depth times the farthest t (2).
    assert (got.rgb - want.rgb).abs().max() <= eps
    assert (got.opacity - want.opacity).abs().max() <= eps
    assert (got.depth - want.depth).abs().max() <= 2 * eps
    evaluated = got.weights != 0
    torch.testing.assert_close(got.weights[evaluated], want.weights[evaluated], rtol=1e-9, atol=1e-12)


def _along_z(r: int, per_ray: int, live: int | None = None) -> tuple[Rays, PackedSamples]:
    """``r`` rays along +z from the origin, the first ``live`` of them (all: None) cut into ``per_ray`` samples of
    [0, 2] each, the others empty."""
    live = r if live is None else live
    rays = Rays(torch.zeros(r, 3), torch.tensor([[0.0, 0.0, 1.0]]).expand(r, 3), torch.zeros(r, dtype=torch.long))
    edges = torch.linspace(0, 2, per_ray + 1)
    ray = torch.arange(live).repeat_interleave(per_ray)
    return rays, PackedSamples(ray, edges[:-1].repeat(live), edges[1:].repeat(live), r)


class _Wall(_Waves):
    """A wall of density 1e4 at z > 0.5."""

    def forward(self, x, dirs, frame, head):
        out = super().forward(x, dirs, frame, head)
        out.density = 1e4 * (x[:, 2] > 0.5).to(x.dtype)
        return out


@pytest.mark.parametrize("room", [MAX_ROUND_STEPS, 20])
def test_an_opaque_wall_stops_the_rays_within_a_round(head, room):
    """Every ray meets the wall (its samples 0.1 long): after the first sample inside, the transmittance is
    exp(-1000); each ray is evaluated at most MAX_ROUND_STEPS - 1 samples past the wall, with round_samples of
    MAX_ROUND_STEPS a ray (no round is stretched for the last rays) and with room in a round for every ray's 20
    samples (the CPU keeps its cap)."""
    r, per_ray = 64, 20
    rays, samples = _along_z(r, per_ray)
    field = _Wall(1.0)
    out = render_nerf_inference(field, rays, head, samples, early_stop=1e-4, round_samples=r * room)
    in_front = 6  # midpoints 0.05 ... 0.55: the sixth is the first inside the wall
    assert in_front * r <= field.points <= (in_front + MAX_ROUND_STEPS - 1) * r
    torch.testing.assert_close(out.opacity, torch.ones(r))
    torch.testing.assert_close(out.depth, torch.full((r,), 0.55))


@pytest.mark.parametrize("budget", [2048, 10**6])
def test_uncapped_rounds_hold_no_more_than_the_cap_let_them(head, monkeypatch, budget):
    """The GPU's rule, run on the CPU: 64 rays, 20 samples each for the first 16 (the rest none) or for all. Uncapped,
    a round holds at most what the cap let it hold: 64 x MAX_ROUND_STEPS samples, or budget / MAX_ROUND_STEPS where
    that is more (the least round), within the budget (the field's memory). That is room for the 16 live rays' every
    sample in one round; the 64 rays' 1,280 take three rounds of a budget of 2,048 and one of a million."""
    monkeypatch.setattr(inference, "_step_cap", lambda device: None)
    r, per_ray = 64, 20
    most = min(budget, max(r * MAX_ROUND_STEPS, budget // MAX_ROUND_STEPS))
    rays, samples = _along_z(r, per_ray, live=16)
    field = _Waves(0.1)
    out = render_nerf_inference(field, rays, head, samples, early_stop=1e-4, round_samples=budget)
    assert field.calls == [16 * per_ray]
    want = _reference(_Waves(0.1), rays, head, samples, None)
    assert (out.rgb - want.rgb).abs().max() <= 1e-4

    rays, full = _along_z(r, per_ray)
    field = _Waves(0.1)
    render_nerf_inference(field, rays, head, full, early_stop=1e-4, round_samples=budget)
    assert max(field.calls) <= most and field.points == r * per_ray
    assert len(field.calls) == (3 if budget == 2048 else 1)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_uncapped_rounds_take_the_whole_least_round(head, monkeypatch, dtype):
    """The GPU's rule, run on the CPU: 64 rays of 1,954 samples (125,056), a budget of a million. The cap's rule took
    them in one round (ceil(125,000 / 64) = 1,954 steps: the least round, budget / MAX_ROUND_STEPS, rounded up to
    whole steps); so does the uncapped rule, and with half-precision rays too (their budget bounded once, not again
    for the float32 rounds they run)."""
    monkeypatch.setattr(inference, "_step_cap", lambda device: None)
    rays, samples = _along_z(64, 1954)
    rays = Rays(rays.origins.to(dtype), rays.directions.to(dtype), rays.frame)
    field = _Waves(0.01)
    render_nerf_inference(field, rays, head, samples, early_stop=1e-4, round_samples=10**6)
    assert field.calls == [64 * 1954]


def test_uncapped_steps_are_never_fewer_and_rounds_never_larger_than_under_the_cap():
    """Against the cap's rule (steps = max(min(B // live, 8), ceil(B / 8 / live)), the code before the GPU went
    uncapped), over calls of r rays, live rays and budgets B: the GPU's steps are never fewer (no more rounds), and its
    round never holds more than the cap's could for the call's rays (r x 8 steps, or the least round B / 8, whole
    steps) nor more than the budget allows."""
    for budget in (1, 7, 64, 2048, 10**6, 1 << 21):
        for r in (1, 3, 64, 1000, 16_384, 1 << 18):
            for live in sorted({n for n in (1, 2, 7, r // 3 + 1, r) if n <= r}):  # live rays: some of the call's
                least = budget // MAX_ROUND_STEPS
                capped = max(min(max(budget // live, 1), MAX_ROUND_STEPS), -(-least // live))
                bounded = min(budget, max(r * MAX_ROUND_STEPS, least))
                steps = int(_round_steps(torch.tensor(live), bounded, None, least))
                assert steps >= capped, (budget, r, live)
                most_before = max(r * MAX_ROUND_STEPS, -(-least // live) * live)
                assert steps * live <= max(most_before, live), (budget, r, live)
                assert steps * live <= max(budget, -(-least // live) * live, live), (budget, r, live)


@pytest.mark.parametrize("live", [1, 7, 1000, 96_000, 300_000])
@pytest.mark.parametrize("budget", [64, 1 << 18, 1 << 21])
def test_a_rounds_steps_fill_its_budget_within_the_cap(live, budget):
    """At least one step; a round of at least budget / MAX_ROUND_STEPS samples; within the budget by less than a
    step; the CPU's cap kept unless the round would be smaller than that; a GPU (no cap) as full as whole steps allow."""
    assert _step_cap(torch.device("cpu")) == MAX_ROUND_STEPS and _step_cap(torch.device("cuda")) is None
    for cap in (MAX_ROUND_STEPS, None):
        steps = int(_round_steps(torch.tensor(live), budget, cap, budget // MAX_ROUND_STEPS))
        assert steps >= 1
        assert steps * live >= budget // MAX_ROUND_STEPS
        assert steps * live < max(budget, live) + live
        if cap is not None and live * cap >= budget // MAX_ROUND_STEPS:
            assert steps <= cap
        if cap is not None:
            assert steps >= min(cap, max(1, budget // live))
        if cap is None and live <= budget:
            assert steps * live > budget - live


def test_a_ray_stopped_early_is_renormalised_as_instant_ngps_tracer(head):
    """One ray, three samples, one a round (round_samples 1): a red sample that lets 0.5% of the light through, a
    green one e^-3, a blue one e^-0.5, over a white background. Stopped at 1e-2, the ray is the red sample alone,
    opaque (instant-ngp's tracer divides by the opacity at its stop); at 1e-4 it goes on, composited by hand."""
    along_z = torch.tensor([[0.0, 0.0, 1.0]], dtype=torch.float64)
    rays = Rays(torch.zeros(1, 3, dtype=torch.float64), along_z, torch.zeros(1, dtype=torch.long))
    samples = PackedSamples(torch.zeros(3, dtype=torch.long), torch.tensor([0.0, 1.0, 2.0], dtype=torch.float64),
                            torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64), 1)  # fmt: skip
    tau = torch.tensor([-math.log(0.005), 3.0, 0.5], dtype=torch.float64)  # each sample is 1 long: density = tau
    colours = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]], dtype=torch.float64)

    class _Steps(_Waves):
        def forward(self, x, dirs, frame, head):
            out = super().forward(x, dirs, frame, head)
            k = x[:, 2].floor().long()  # midpoints 0.5, 1.5, 2.5
            out.density, out.rgb = tau[k], colours[k]
            return out

    white = torch.ones(3, dtype=torch.float64)
    stopped = render_nerf_inference(_Steps(1.0), rays, head, samples, white, early_stop=1e-2, round_samples=1)
    torch.testing.assert_close(stopped.rgb[0], colours[0], rtol=0, atol=1e-12)
    torch.testing.assert_close(stopped.opacity[0], torch.tensor(1.0, dtype=torch.float64), rtol=0, atol=1e-12)
    torch.testing.assert_close(stopped.depth[0], torch.tensor(0.5, dtype=torch.float64), rtol=0, atol=1e-12)
    weights = torch.tensor([0.995, 0.005 * (1 - math.exp(-3)), 0.005 * math.exp(-3) * (1 - math.exp(-0.5))], dtype=torch.float64)
    left = 1 - float(weights.sum())  # 1.5e-4: not stopped, it reaches the white background
    full = render_nerf_inference(_Steps(1.0), rays, head, samples, white, early_stop=1e-4, round_samples=1)
    torch.testing.assert_close(full.rgb[0], weights @ colours + left, rtol=0, atol=1e-12)
    torch.testing.assert_close(full.depth[0], weights @ torch.tensor([0.5, 1.5, 2.5], dtype=torch.float64), rtol=0, atol=1e-12)


def test_a_round_reads_back_one_census_and_nothing_else(head, host_sync_spy):
    """On a GPU a read-back waits for the queue to drain: the rounds read the live rays' count, their steps and
    their samples in one copy a round (the last finds no live ray), and nothing else (tools/host_syncs.py)."""

    rays, samples = _rays([0, 30, 5, 17, 0, 40, 1], seed=3)
    rounds = []

    class _Counted(_Waves):
        def forward(self, x, dirs, frame, head):
            rounds.append(len(x))
            return super().forward(x, dirs, frame, head)

    with cuda_paths(), host_sync_spy() as spy, trusted_values():  # as an image's rays are rendered: checked when made
        out = render_nerf_inference(_Counted(50.0), rays, head, samples, early_stop=1e-4, round_samples=12)
    assert len(rounds) > 3 and sum(rounds) < len(samples)  # several rounds, and rays stopped before their end
    # (The denormal modes, put back on the CPU only, are read without a torch operation.)
    assert spy.reads == {("tolist", "renderers/inference.py:_rounds"): len(rounds) + 1} and not spy.copies, spy.report()
    assert out.opacity.isfinite().all()


def test_rays_without_samples_get_the_background(head):
    rays, samples = _rays([0, 3, 0], seed=0)
    background = torch.tensor([0.1, 0.2, 0.3], dtype=torch.float64)
    out = render_nerf_inference(_Waves(1.0), rays, head, samples, background)
    torch.testing.assert_close(out.rgb[[0, 2]], background.expand(2, 3))
    assert out.opacity[[0, 2]].eq(0).all()


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.float16, torch.bfloat16])
def test_the_rounds_composite_every_sample_on_each_device(head, device, dtype):
    """The rounds' kernels where the rays are (CUDA too), against the compositor over every sample in float64 (half
    precision rays are summed in float32 and returned in their dtype)."""
    rays, samples = _rays([0, 30, 5, 17, 0, 40, 1, 12], seed=11)
    tensors = {f.name: getattr(head, f.name) for f in dataclasses.fields(head)}
    on_device = dataclasses.replace(head, **{k: v.to(device) for k, v in tensors.items() if isinstance(v, torch.Tensor)})
    background = torch.tensor([0.2, 0.5, 0.9], dtype=torch.float64)
    want = _reference(_Waves(5.0), rays, head, samples, background)
    rays = Rays(rays.origins.to(device, dtype), rays.directions.to(device, dtype), rays.frame.to(device))
    samples = PackedSamples(samples.ray.to(device), samples.t_start.to(device, dtype), samples.t_end.to(device, dtype), 8)
    got = render_nerf_inference(_Waves(5.0), rays, on_device, samples, background.to(device, dtype), 0.0, 24)
    digits = {torch.float64: 1e-12, torch.float32: 1e-5, torch.float16: 1e-2, torch.bfloat16: 5e-2}[dtype]
    for name in ("rgb", "depth", "opacity", "weights"):
        value = getattr(got, name)
        assert value.device == device and value.dtype == dtype, name
        torch.testing.assert_close(value.cpu().double(), getattr(want, name), rtol=digits, atol=digits, msg=name)


def test_rays_with_int32_frames_mixed_dtypes_or_a_gradient_render_alike_and_are_left_alone(head):
    """The kernels read the rays as they come: int32 frames, float32 directions on float64 origins, origins that want a
    gradient (the render takes none, and gives them no .grad)."""
    rays, samples = _rays([4, 9, 0, 13], seed=7)
    want = render_nerf_inference(_Waves(5.0), rays, head, samples, early_stop=0.0)
    origins = rays.origins.clone().requires_grad_(True)
    odd = Rays(origins, rays.directions.float(), rays.frame.int())
    got = render_nerf_inference(_Waves(5.0), odd, head, samples, early_stop=0.0)
    for name in ("rgb", "depth", "opacity", "weights"):
        torch.testing.assert_close(getattr(got, name), getattr(want, name), rtol=1e-6, atol=1e-7, msg=name)
    assert origins.grad is None and not got.rgb.requires_grad


@pytest.mark.parametrize("length", [8, 1000])
def test_a_round_in_float32_is_within_float32s_rounding_of_float64(length):
    """The round's kernel on float32 optical thicknesses from 1e-9 to 50 (log-uniform), against the same thicknesses
    composited in float64 (-expm1 for the opacity, exp of the depth in front for the light): thin samples keep their
    opacity (1 - exp(-tau) in float32 would be off by up to 6e-8 / tau of it: 6% at 1e-6) and long rays their
    light (the depth in front summed in float64, as torch's cumsum does on the CPU)."""
    from headfields.renderers.round_kernels import composite_round, gather_round

    g = torch.Generator().manual_seed(length)
    rays = 40
    count = torch.randint(1, length + 1, (rays,), generator=g)
    start = torch.cumsum(count, 0) - count
    n = int(count.sum())
    top = 50.0 if length == 8 else 0.05  # long rays of thin samples: their light lasts
    tau = torch.exp(torch.empty(n).uniform_(math.log(1e-9), math.log(top), generator=g))
    rgb, t_mid = torch.rand(n, 3, generator=g), torch.rand(n, generator=g)
    along_z = (torch.zeros(rays, 3), torch.tensor([[0.0, 0.0, 1.0]]).repeat(rays, 1), torch.arange(rays))
    deltas = torch.rand(n, generator=g)
    drawn = gather_round(along_z, (t_mid, deltas), (torch.arange(rays), count, start, start.clone()), n)
    index = drawn.index
    assert torch.equal(index, torch.arange(n))  # one ray after another, each along its samples
    assert torch.equal(drawn.points[:, 2], t_mid) and drawn.points[:, :2].eq(0).all() and torch.equal(drawn.deltas, deltas)
    assert torch.equal(drawn.frame, torch.arange(rays).repeat_interleave(count)) and drawn.directions[:, 2].eq(1).all()
    state = (torch.ones(rays), torch.zeros(rays, 5), torch.zeros(n))
    per_ray = (torch.arange(rays), count, start, start.clone(), count.clone())  # live, count, start, following, left
    keep = composite_round(tau, rgb, index, t_mid, length, 0.0, state, per_ray)
    assert not keep.any()  # every ray's samples are used up
    ray = torch.arange(rays).repeat_interleave(count)
    tau64 = tau.double()
    depth = torch.zeros(rays, dtype=torch.float64).index_add_(0, ray, tau64)
    before = torch.cumsum(tau64, 0) - tau64 - (torch.cumsum(depth, 0) - depth)[ray]  # exclusive, within each ray
    weights = torch.exp(-before) * -torch.expm1(-tau64)
    values = torch.cat([rgb.double(), t_mid.double()[:, None], torch.ones(n, 1, dtype=torch.float64)], 1)
    sums = torch.zeros(rays, 5, dtype=torch.float64).index_add_(0, ray, weights[:, None] * values)
    light, got_sums, got_weights = state
    live = weights > 1e-30
    assert ((got_weights.double() - weights).abs()[live] / weights[live]).max() < 2e-6
    torch.testing.assert_close(light.double(), torch.exp(-depth), rtol=2e-6, atol=1e-30)
    torch.testing.assert_close(got_sums.double(), sums, rtol=2e-6, atol=1e-7)


def test_a_nan_from_the_field_stays_nan(head):
    """A NaN thickness is not taken for an opaque sample (which would hide it): its ray's colour is NaN, the others'
    are the compositor's."""
    rays, samples = _rays([6, 6, 6], seed=2)
    bad = samples.midpoints(rays.origins, rays.directions)[samples.first()[1]]  # ray 1's first sample

    class _Broken(_Waves):
        def forward(self, x, dirs, frame, head):
            out = super().forward(x, dirs, frame, head)
            out.density = torch.where((x - bad).abs().amax(1) < 1e-12, torch.nan, out.density)
            return out

    got = render_nerf_inference(_Broken(5.0), rays, head, samples, early_stop=0.0, round_samples=100)
    assert got.rgb[1].isnan().all()
    want = _reference(_Waves(5.0), rays, head, samples, None)
    torch.testing.assert_close(got.rgb[[0, 2]], want.rgb[[0, 2]], rtol=1e-9, atol=1e-12)


def test_bad_settings_name_their_argument(head):
    rays, samples = _rays([3, 2], seed=0)
    for eps in (-0.1, 1.0, float("nan"), True):
        with raises_naming("early_stop"):
            render_nerf_inference(_Waves(1.0), rays, head, samples, early_stop=eps)
    with raises_naming("round_samples"):
        render_nerf_inference(_Waves(1.0), rays, head, samples, round_samples=0)
    with raises_naming("sampler"):
        render_nerf_inference(_Waves(1.0), rays, head, PackedSamples(samples.ray, samples.t_start, samples.t_end, 5))


class _Mode(_Waves):
    """_Waves that records whether the thread it runs on and torch's team there flush denormals."""

    def forward(self, x, dirs, frame, head):
        self.seen = (flushing_denormals(), kept(product_of_denormals()))
        return super().forward(x, dirs, frame, head)


@pytest.mark.skipif(platform.machine().lower() not in ("x86_64", "amd64"), reason="the FTZ / DAZ modes are x86's")
def test_denormals_are_flushed_within_the_render_and_the_callers_mode_is_back_after(head):
    """A sharp Softplus's denormals (many times slower on x86) read as zero in the rounds, on every thread of torch's
    team; the caller computes with denormals again after, and the image is the one computed without flushing."""
    rays, samples = _rays([5, 3, 7], seed=2)
    field = _Mode(1.0)
    assert not flushing_denormals()
    out = render_nerf_inference(field, rays, head, samples, early_stop=0.0)
    assert field.seen == (True, 0)
    assert not flushing_denormals() and kept(product_of_denormals()) == MANY
    torch.testing.assert_close(out.rgb, _reference(_Waves(1.0), rays, head, samples, None).rgb)


# ------------------------------------------------------------------------------------------- the models


def _opaque(model, bias: float) -> None:
    """Every density bias raised by ``bias``: a young model made opaque, so most rays stop early (the hard case
    for agreement: the renderers differ only by what lies behind a stop)."""
    for field in (getattr(model, "coarse_field", None), model.field):
        if field is not None:
            last = [m for m in field.decoder.density_net.modules() if isinstance(m, torch.nn.Linear)][-1]
            with torch.no_grad():
                last.bias[:1] += bias


def _models(tiny_video, tiny_orbit_video):
    train, _ = tiny_video
    flame = load_model(train.model_path, train.model_type)
    orbit = tiny_orbit_video[0]
    smplx = load_model(orbit.model_path, orbit.model_type)
    return {
        "insta": (Insta(flame, train.segmentation_labels, TINY_INSTA), tiny_video),
        "monoavatar": (MonoAvatar(flame, len(train), TINY_MONOAVATAR), tiny_video),
        "portrait360": (Portrait360(smplx, TINY_PORTRAIT), tiny_orbit_video),
    }


# Density biases that make each young model opaque: INSTA's and the portrait's densities are exponentials of the
# output, MonoAvatar's (tiny recipe) a softplus of it.
OPAQUE_BIAS = {"insta": 8.0, "monoavatar": 2000.0, "portrait360": 8.0}


@pytest.mark.parametrize("name", sorted(OPAQUE_BIAS))
def test_each_model_renders_the_training_renderers_image(name, tiny_video, tiny_orbit_video, monkeypatch):
    # Rounds of 256 samples: the 16-pixel frame's few rays would otherwise fit one round (nothing left to stop).
    monkeypatch.setattr("headfields.renderers.inference.ROUND_SAMPLES", 256)
    torch.manual_seed(0)
    model, (train, test) = _models(tiny_video, tiny_orbit_video)[name]
    _opaque(model, OPAQUE_BIAS[name])
    head = tracked_head(model.parametric, test)

    def training_renderer(rays):
        return model.render(rays, head).composite.rgb

    points = {"n": 0}
    field = model.field
    hook = field.register_forward_hook(lambda module, args, out: points.__setitem__("n", points["n"] + len(args[0])))
    try:
        old = render_image(model, test, 0, 4096, torch.device("cpu"), render=training_renderer)
        old_points, points["n"] = points["n"], 0
        new = render_image(model, test, 0, 4096, torch.device("cpu"), head=head)
    finally:
        hook.remove()
    truth = test.images[0].float() / 255
    assert (new - old).abs().max() <= 1e-3
    assert abs(float(psnr(new, truth)) - float(psnr(old, truth))) <= 0.01  # dB; the issue asks for 0.1
    assert points["n"] < old_points  # the opaque field stops rays: fewer samples evaluated
    assert not math.isnan(float(new.sum()))
    # The viewer's stop (instant-ngp's interactive 1e-2): each pixel within the light behind the stop, 1e-2.
    new_points, points["n"] = points["n"], 0
    fast = render_view(model, test.cameras, 0, head, 0, 4096, torch.device("cpu"), INTERACTIVE_TRANSMITTANCE)
    assert (fast - old).abs().max() <= INTERACTIVE_TRANSMITTANCE + 1e-5
    assert abs(float(psnr(fast, truth)) - float(psnr(old, truth))) <= 0.1
    assert points["n"] <= new_points


def test_a_coarse_pass_weights_from_the_density_alone_are_the_rendered_weights(tiny_video, tiny_orbit_video):
    """nerf_weights_inference: the weights render_nerf_inference gives, bit for bit, without the colour network (MonoAvatar's
    coarse pass, whose colour nothing reads)."""
    torch.manual_seed(0)
    model, (train, test) = _models(tiny_video, tiny_orbit_video)["monoavatar"]
    _opaque(model, 40.0)  # some rays stop within the frame
    head = tracked_head(model.parametric, test)
    rays = image_rays(test.cameras, 0)
    field = model.coarse_field
    colours = {"n": 0}
    hook = field.decoder.color_net.register_forward_hook(lambda *_: colours.__setitem__("n", colours["n"] + 1))
    try:
        with field.encoder.reuse_frame_features():
            samples = model.sampler(rays, head)
            want = render_nerf_inference(field, rays, head, samples, torch.ones(3), round_samples=256).weights
            rendered, colours["n"] = colours["n"], 0
            got = nerf_weights_inference(field, rays, head, samples, round_samples=256)
    finally:
        hook.remove()
    assert rendered > 0 and colours["n"] == 0
    assert bool((want > 0).any()) and bool((want == 0).any())  # weights, and samples behind a stop
    assert torch.equal(got, want)


def test_neus_rounds_without_a_stop_composite_every_sample(tiny_neus_run):
    """The NeuS rounds against render_neus over every sample, on a trained SDF model: the same up-sampling, the
    same opacities and colours (the SDF's gradient taken a round at a time)."""
    run = load_run(tiny_neus_run[0], "cpu")
    model, frames = run.model, run.subject.eval
    rays = pixel_rays(frames.cameras, 0, image_pixels(frames.cameras))
    background = torch.tensor(model.config.background)
    sampler, inv_s = model.config.sampler, model.inverse_variance()
    with torch.no_grad():
        want = render_neus(model.field, rays, run.eval_head, sampler, inv_s, background).composite
    for round_samples in (1, 7, 1 << 18):
        got = render_neus_inference(model.field, rays, run.eval_head, sampler, inv_s, background, 0.0, round_samples)
        for name in ("rgb", "depth", "opacity", "weights"):
            torch.testing.assert_close(getattr(got, name), getattr(want, name), rtol=1e-5, atol=1e-6, msg=name)
    with raises_naming("inv_s"):
        render_neus_inference(model.field, rays, run.eval_head, sampler, torch.ones(3), background)


def test_an_sdf_model_renders_the_training_renderers_image(tiny_neus_run):
    run = load_run(tiny_neus_run[0], "cpu")
    model, frames, head = run.model, run.subject.eval, run.eval_head
    old = render_image(model, frames, 0, 4096, torch.device("cpu"), render=lambda rays: model.render(rays, head).composite.rgb)
    new = render_image(model, frames, 0, 4096, torch.device("cpu"), head=head)
    truth = frames.images[0].float() / 255
    assert (new - old).abs().max() <= 1e-3
    assert abs(float(psnr(new, truth)) - float(psnr(old, truth))) <= 0.01


def test_an_empty_occupancy_grid_or_a_camera_facing_away_renders_the_background(tiny_video):
    """No sample to evaluate: the background, honestly, and no round at all (never a hang)."""
    train, test = tiny_video
    torch.manual_seed(0)
    model = Insta(load_model(train.model_path, train.model_type), train.segmentation_labels, TINY_INSTA)
    head = tracked_head(model.parametric, test)
    background = torch.tensor(model.config.background)
    model.sampler.grid.binary.zero_()  # every cell empty
    image = render_image(model, test, 0, 4096, torch.device("cpu"), head=head)
    torch.testing.assert_close(image, background.expand_as(image))
    model.sampler.grid.binary.fill_(True)
    away = test.cameras.camera_to_world.clone()
    away[:, :3, :3] = away[:, :3, :3] @ torch.diag(torch.tensor([-1.0, 1.0, -1.0]))  # turned about its y axis
    turned = dataclasses.replace(test.cameras, camera_to_world=away)
    image = render_view(model, turned, 0, head, 0, 4096, torch.device("cpu"))
    torch.testing.assert_close(image, background.expand_as(image))
