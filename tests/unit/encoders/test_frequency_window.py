"""Nerfies' coarse-to-fine window on the frequency encoding: the edge cases (all off, all on, half a band), the
closed formula written out in NumPy for any window (hypothesis), the unwindowed input part, the linear schedule,
and bad input."""

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from headfields.encoders import FrequencyEncoding
from headfields.encoders.frequency import frequency_window, window_bands, window_weights

from helpers import raises_naming

K = 4


def numpy_windowed(x: np.ndarray, num_frequencies: int, alpha: float) -> np.ndarray:
    """``[x, w_k sin(2^k pi x), w_k cos(2^k pi x) for k]`` with ``w_k = (1 - cos(pi clip(alpha - k, 0, 1))) / 2``."""
    out = [x]
    for k in range(num_frequencies):
        w = (1 - math.cos(math.pi * min(max(alpha - k, 0.0), 1.0))) / 2
        out += [w * np.sin(2.0**k * math.pi * x), w * np.cos(2.0**k * math.pi * x)]
    return np.concatenate(out, axis=1)


def points(n=5, d=3, seed=0, device="cpu"):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(n, d, generator=g, dtype=torch.float64) * 2 - 1).to(device)


def test_window_zero_keeps_only_the_input_and_full_window_keeps_everything(device):
    enc = FrequencyEncoding(3, K).to(device)
    x = points(device=device)
    off = enc(x, window=0.0)
    assert torch.equal(off[:, :3], x)
    assert torch.equal(off[:, 3:], torch.zeros_like(off[:, 3:]))
    assert torch.equal(enc(x, window=K), enc(x))
    assert torch.equal(enc(x, window=float(K)), enc(x, window=None))


def test_half_open_band_is_weighted_one_half():
    enc = FrequencyEncoding(2, K)
    x = points(d=2)
    full = enc(x).reshape(x.shape[0], -1)
    out = enc(x, window=1.5)  # band 0 fully on, band 1 halfway, bands 2, 3 off
    blocks, full_blocks = out[:, 2:].reshape(-1, K, 4), full[:, 2:].reshape(-1, K, 4)
    torch.testing.assert_close(blocks[:, 0], full_blocks[:, 0], rtol=0, atol=0)
    torch.testing.assert_close(blocks[:, 1], 0.5 * full_blocks[:, 1], rtol=0, atol=1e-15)
    assert torch.equal(blocks[:, 2:], torch.zeros_like(blocks[:, 2:]))
    assert window_weights(1.5, K) == pytest.approx([1.0, 0.5, 0.0, 0.0], abs=1e-15)


@settings(max_examples=25)
@given(st.floats(0.0, float(K)), st.booleans())
def test_window_matches_the_closed_formula(alpha, include_input):
    enc = FrequencyEncoding(3, K, include_input=include_input)
    x = points(n=7, seed=3)
    expected = numpy_windowed(x.numpy(), K, alpha)
    if not include_input:
        expected = expected[:, 3:]
    np.testing.assert_allclose(enc(x, window=alpha).numpy(), expected, atol=1e-12)


@pytest.mark.parametrize("alpha", [0.0, 0.3, 1.0, 1.5, 2.999, float(K)])
def test_bands_computed_on_the_device_are_the_window_s(alpha, host_sync_spy):
    """window_bands: the closed formula's weights, made without a copy from the host; given as ``bands`` the
    encoding is the closed formula's, as with ``window``."""
    from headfields.device_paths import cuda_paths

    with cuda_paths(), host_sync_spy() as spy:
        bands = window_bands(alpha, K)
    assert not spy.copies and not spy.reads, spy.report()
    closed = [(1 - math.cos(math.pi * min(max(alpha - k, 0.0), 1.0))) / 2 for k in range(K)]
    np.testing.assert_allclose(bands.numpy(), closed, rtol=0, atol=1e-15)
    enc, x = FrequencyEncoding(3, K), points(n=7, seed=4)
    np.testing.assert_allclose(enc(x, bands=bands).numpy(), numpy_windowed(x.numpy(), K, alpha), atol=1e-12)
    with raises_naming("bands"):
        enc(x, window=alpha, bands=bands)
    with raises_naming("bands"):
        enc(x, bands=bands[:-1])


def test_window_keeps_gradients_and_dtype():
    enc = FrequencyEncoding(3, K)
    x = points(n=4).float().requires_grad_(True)
    out = enc(x, window=2.3)
    assert out.dtype == torch.float32
    out.sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()


def test_schedule_grows_linearly_then_holds():
    assert frequency_window(0, 6, 80_000) == 0.0
    assert frequency_window(40_000, 6, 80_000) == pytest.approx(3.0)
    assert frequency_window(80_000, 6, 80_000) == 6.0
    assert frequency_window(200_000, 6, 80_000) == 6.0
    assert frequency_window(4_999, 6, 100, start_step=5_000) == 0.0
    assert frequency_window(5_025, 6, 100, start_step=5_000) == pytest.approx(1.5)
    assert frequency_window(10, 6, 0, start_step=10) == 6.0
    assert frequency_window(9, 6, 0, start_step=10) == 0.0


def test_bad_window_and_schedule_arguments():
    enc = FrequencyEncoding(3, K)
    x = points()
    for bad in (-0.1, K + 0.1, float("nan"), True, "1"):
        with raises_naming("window"):
            enc(x, window=bad)
    with raises_naming("step"):
        frequency_window(-1, 6, 10)
    with raises_naming("ramp_steps"):
        frequency_window(0, 6, -5)
    with raises_naming("num_frequencies"):
        frequency_window(0, -1, 10)
    with raises_naming("start_step"):
        frequency_window(0, 6, 10, start_step=-1)


def test_no_points_give_an_empty_encoding():
    encoding = FrequencyEncoding(3, 4)
    assert encoding(torch.zeros(0, 3)).shape == (0, 3 + 2 * 4 * 3)
    assert encoding(torch.zeros(0, 3), window=2.0).shape == (0, 27)
