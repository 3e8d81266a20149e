"""The per-ray exclusive scan behind compositing: checked against a per-ray loop in float64 (rays of any length,
a batch's padding slots in its last ray included), differentiated to second order by gradcheck, and float32
compositing against float64."""

import math

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from headfields.checks import trusted_values
from headfields.renderers import PackedSamples, composite, composite_alpha
from headfields.renderers.scan import exclusive_sum

HYPOTHESIS = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def _packed(counts: list[int], device, dtype=torch.float32) -> PackedSamples:
    ray = torch.repeat_interleave(torch.arange(len(counts)), torch.tensor(counts, dtype=torch.long))
    edges = torch.cat([torch.arange(c, dtype=dtype) for c in counts]) if counts else torch.zeros(0, dtype=dtype)
    return PackedSamples(ray.to(device), (edges / 100).to(device), ((edges + 1) / 100).to(device), len(counts))


def _loop(counts: list[int], x: torch.Tensor) -> torch.Tensor:
    """The exclusive sums by a Python loop over each ray, in float64."""
    out, i = [], 0
    for c in counts:
        total = 0.0
        for v in x[i : i + c].double().tolist():
            out.append(total)
            total += v
        i += c
    return torch.tensor(out, dtype=torch.float64)


@HYPOTHESIS
@given(counts=st.lists(st.integers(0, 60), min_size=0, max_size=30), seed=st.integers(0, 2**31 - 1))
def test_the_scan_sums_each_ray_s_earlier_samples_as_a_loop_does(counts, seed):
    samples = _packed(counts, "cpu")
    x = torch.rand(len(samples), generator=torch.Generator().manual_seed(seed), dtype=torch.float64) * 10
    torch.testing.assert_close(exclusive_sum(samples, x), _loop(counts, x), rtol=1e-12, atol=1e-12)
    # float32: summed in float64, so within a few ulps of the exact sum however long the ray
    torch.testing.assert_close(exclusive_sum(samples, x.float()).double(), _loop(counts, x), rtol=3e-7, atol=1e-6)


def test_float32_sums_of_long_rays_stay_within_ulps(device):
    counts = [4096, 0, 3, 10_000]
    x = torch.rand(sum(counts), generator=torch.Generator().manual_seed(1), dtype=torch.float64) * 1e-2
    got = exclusive_sum(_packed(counts, device), x.float().to(device)).double().cpu()
    truth = _loop(counts, x)
    # a plain float32 running sum drifts by about n * eps * sum (here ~1e-5); a float64 one does not
    assert (got - truth).abs().max() <= 4 * torch.finfo(torch.float32).eps * truth.max()


def test_the_scan_s_first_and_second_derivatives_pass_gradcheck(device):
    samples = _packed([3, 0, 7, 1, 5], device, torch.float64)
    x = torch.rand(len(samples), dtype=torch.float64, device=device, requires_grad=True)
    assert torch.autograd.gradcheck(lambda v: exclusive_sum(samples, v), (x,))
    assert torch.autograd.gradgradcheck(lambda v: exclusive_sum(samples, v), (x,))


def test_the_scan_names_a_misshapen_input():
    samples = _packed([2, 3], "cpu")
    with pytest.raises(ValueError, match=r"x: expected one value a sample, shape \(5,\)"):
        exclusive_sum(samples, torch.zeros(4))


def test_short_rays_after_a_long_one_keep_their_transmittance(device):
    """The batch's running sum is large when the short rays come (a fixed-slot batch's padding, a long opaque ray):
    their sums are differences of two large numbers, in float64 off by about eps64 times the batch's total, far
    below a float32 ulp of the transmittance exp(-sum) that compositing takes of them."""
    counts = [200_000, 3, 5]
    x = torch.cat([torch.full((200_000,), 50.0, dtype=torch.float64), torch.rand(8, dtype=torch.float64) * 1e-3])
    got = exclusive_sum(_packed(counts, device), x.float().to(device)).double().cpu()[200_000:]
    truth = _loop(counts, x.float().double())[200_000:]
    assert (got - truth).abs().max() <= 4 * torch.finfo(torch.float64).eps * 50.0 * 200_000
    torch.testing.assert_close(torch.exp(-got).float(), torch.exp(-truth).float(), rtol=torch.finfo(torch.float32).eps, atol=0)


def test_the_scan_refuses_a_nan_unless_trusted():
    """A NaN would spread to every later ray of the batch through the running sum: refused by name."""
    samples = _packed([2, 3], "cpu")
    x = torch.tensor([1.0, float("nan"), 0.0, 1.0, 2.0])
    with pytest.raises(ValueError, match="x: expected finite values"):
        exclusive_sum(samples, x)
    with trusted_values():  # the caller vouches for its values: no read-back
        assert exclusive_sum(samples, torch.ones(5)).tolist() == [0, 1, 0, 1, 2]


def test_no_rays_and_no_samples():
    assert exclusive_sum(_packed([], "cpu"), torch.zeros(0)).shape == (0,)
    assert exclusive_sum(_packed([0, 0], "cpu"), torch.zeros(0)).shape == (0,)


@HYPOTHESIS
@given(counts=st.lists(st.integers(0, 300), min_size=1, max_size=40), seed=st.integers(0, 2**31 - 1))
def test_float32_compositing_agrees_with_float64_within_1e_5(counts, seed):
    """Issue 39's acceptance: colour, depth, opacity and weights of a float32 composite within 1e-5 of float64's,
    on rays from transparent to opaque well before their end."""
    g = torch.Generator().manual_seed(seed)
    samples = _packed(counts, "cpu", torch.float64)
    s = len(samples)
    density = torch.rand(s, generator=g, dtype=torch.float64) * 10 ** torch.empty(s, dtype=torch.float64).uniform_(
        -2, 3, generator=g
    )
    rgb = torch.rand(s, 3, generator=g, dtype=torch.float64)
    background = torch.tensor([1.0, 0.5, 0.0], dtype=torch.float64)
    f32 = _packed(counts, "cpu", torch.float32)
    for fn, field in ((composite, density), (composite_alpha, 1 - torch.exp(-density * samples.deltas))):
        ref = fn(samples, field, rgb, background)
        got = fn(f32, field.float(), rgb.float(), background.float())
        for name in ("rgb", "depth", "opacity", "weights"):
            assert getattr(got, name).dtype == torch.float32
            error = (getattr(got, name).double() - getattr(ref, name)).abs().max() if s else 0.0
            assert error <= 1e-5, f"{fn.__name__}: {name} off by {error:.3g}"


def test_float32_transmittance_follows_the_analytic_exponential(device):
    """A ray through constant density sigma: T(t_i) = exp(-sigma * t_i) at each sample's start, in float32."""
    n, sigma = 2000, 3.0
    samples = _packed([n], device)
    weights = composite(samples, torch.full((n,), sigma, device=device), torch.zeros(n, 3, device=device)).weights
    t = torch.arange(n, dtype=torch.float64) / 100
    expected = torch.exp(-sigma * t) * (1 - math.exp(-sigma / 100))
    torch.testing.assert_close(weights.double().cpu(), expected, rtol=2e-5, atol=1e-7)
