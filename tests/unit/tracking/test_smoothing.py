"""Smoothing a landmark track: exact on constant and linear motion (gaps included), white noise reduced by the
kernel's analytic factor, a brute-force weighted line fit per frame as the reference, and no NaN leaking."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from headfields.apps.tracking.smoothing import smooth_track

from helpers import raises_naming


def random_found(n: int, seed: int, share: float = 0.7) -> torch.Tensor:
    found = torch.rand(n, generator=torch.Generator().manual_seed(seed)) < share
    found[0] = True
    return found


@pytest.mark.parametrize("sigma", [0.5, 1.0, 2.5])
def test_constant_and_linear_tracks_are_unchanged(sigma):
    n, k = 60, 5
    found = random_found(n, 1)
    t = torch.arange(n, dtype=torch.float64)[:, None, None]
    base = torch.randn(1, k, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(2)) * 100
    velocity = torch.randn(1, k, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    for track in (base.expand(n, k, 2), base + velocity * t):
        out = smooth_track(track.clone(), found, sigma)
        torch.testing.assert_close(out[found], track[found], rtol=0, atol=1e-9)
        assert bool(out[~found].isnan().all())


def test_white_noise_drops_by_the_kernels_factor():
    n, k, sigma = 20_000, 8, 1.5
    noise = torch.randn(n, k, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    out = smooth_track(noise, torch.ones(n, dtype=torch.bool), sigma)
    radius = math.ceil(3 * sigma)
    w = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    factor = np.sqrt((w**2).sum()) / w.sum()  # the std of a normalised weighted sum of unit white noise: 0.376
    measured = float(out[radius:-radius].std() / noise[radius:-radius].std())
    assert measured == pytest.approx(factor, rel=0.02)


def brute_force(points: np.ndarray, found: np.ndarray, sigma: float) -> np.ndarray:
    """Per found frame, the Gaussian-weighted least-squares line through the found frames within 3 sigma (numpy's
    lstsq), read at the frame; a single frame in reach: its value."""
    n = len(points)
    radius = math.ceil(3 * sigma)
    out = np.full_like(points, np.nan)
    for i in np.nonzero(found)[0]:
        j = np.array([j for j in range(max(0, i - radius), min(n, i + radius + 1)) if found[j]])
        d = (j - i).astype(float)
        w = np.exp(-0.5 * (d / sigma) ** 2)
        if len(j) == 1:
            out[i] = points[j[0]]
            continue
        design = np.stack([np.ones_like(d), d], axis=1) * np.sqrt(w)[:, None]
        target = points[j].reshape(len(j), -1) * np.sqrt(w)[:, None]
        coef = np.linalg.lstsq(design, target, rcond=None)[0]
        out[i] = coef[0].reshape(points.shape[1:])
    return out


@settings(max_examples=40)
@given(n=st.integers(1, 40), sigma=st.floats(0.3, 4.0), seed=st.integers(0, 2**16), share=st.floats(0.1, 1.0))
def test_matches_a_brute_force_line_fit(n, sigma, seed, share):
    found = random_found(n, seed, share)
    points = torch.randn(n, 3, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(seed + 1)) * 10
    out = smooth_track(points, found, sigma)
    want = brute_force(points.numpy(), found.numpy(), sigma)
    np.testing.assert_allclose(out.numpy(), want, rtol=1e-7, atol=1e-7)  # NaN where not found, in both


@settings(max_examples=30)
@given(seed=st.integers(0, 2**16), garbage=st.sampled_from([float("nan"), float("inf"), -1e30, 7.0]))
def test_frames_without_a_face_never_leak(seed, garbage):
    n = 30
    found = random_found(n, seed, 0.5)
    points = torch.randn(n, 4, 2, generator=torch.Generator().manual_seed(seed)) * 50
    clean = points.clone()
    clean[~found] = 0.0
    dirty = points.clone()
    dirty[~found] = garbage
    a, b = smooth_track(clean, found, 1.7), smooth_track(dirty, found, 1.7)
    assert bool(torch.isfinite(a[found]).all()) and bool(a[~found].isnan().all())
    torch.testing.assert_close(a, b, equal_nan=True, rtol=0, atol=0)


def test_sigma_zero_and_bad_input():
    points, found = torch.randn(5, 68, 2), torch.tensor([True, False, True, True, False])
    out = smooth_track(points, found, 0)
    torch.testing.assert_close(out[found], points[found])
    assert bool(out[~found].isnan().all())
    with raises_naming("points"):
        smooth_track(torch.randn(5, 68, 3), found)
    with raises_naming("points"):
        bad = points.clone()
        bad[0, 0, 0] = float("nan")
        smooth_track(bad, found)
    with raises_naming("found"):
        smooth_track(points, found[:4])
    with raises_naming("found"):
        smooth_track(points, found.int())
    with raises_naming("sigma_frames"):
        smooth_track(points, found, -1.0)
