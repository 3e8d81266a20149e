"""Frequency (positional) and spherical-harmonics encodings against their formulas, scipy's spherical
harmonics and numerical integration over the sphere."""

import math

import numpy as np
import pytest
import torch
from scipy.special import sph_harm_y

from headfields.encoders import FrequencyEncoding, SphericalHarmonics

from helpers import raises_naming


@pytest.mark.parametrize("include_input", [True, False])
@pytest.mark.parametrize("with_gradient", [False, True], ids=["no-grad", "autograd"])
def test_frequency_encoding_formula(device, include_input, with_gradient):
    """The formula with and without autograd (its own path: the waves written in place), and with it the gradient."""
    enc = FrequencyEncoding(in_dim=2, num_frequencies=3, include_input=include_input).to(device)
    assert enc.out_dim == 2 * (include_input + 2 * 3)
    x = torch.tensor([[0.25, -0.5], [0.1, 0.7]], dtype=torch.float64, device=device, requires_grad=with_gradient)
    with torch.set_grad_enabled(with_gradient):
        out = enc(x)
    assert out.requires_grad == with_gradient
    for n, (a, b) in enumerate(x.tolist()):
        expected = [a, b] if include_input else []
        for k in range(3):
            f = 2.0**k * math.pi
            expected += [math.sin(f * a), math.sin(f * b), math.cos(f * a), math.cos(f * b)]
        np.testing.assert_allclose(out[n].detach().cpu().numpy(), expected, atol=1e-12)
    if with_gradient:  # d/da of [a, sin(fa), cos(fa)] summed: 1 (the input) + f cos(fa) - f sin(fa)
        (grad,) = torch.autograd.grad(out.sum(), x)
        for (a, b), row in zip(x.tolist(), grad.tolist(), strict=True):
            for value, g in zip((a, b), row, strict=True):
                rates = [2.0**k * math.pi for k in range(3)]
                bands = sum(f * (math.cos(f * value) - math.sin(f * value)) for f in rates)
                assert g == pytest.approx(include_input + bands, abs=1e-10)


def test_frequency_encoding_of_a_strided_batch_and_of_none():
    """A column of a wider tensor encodes as its copy; no rows give [0, out_dim]; no bands give x; with and without
    autograd alike, to the bit."""
    enc = FrequencyEncoding(in_dim=3, num_frequencies=4)
    wide = torch.randn(7, 5, generator=torch.Generator().manual_seed(0))
    for grad in (True, False):
        with torch.set_grad_enabled(grad):
            torch.testing.assert_close(enc(wide[:, 1:4]), enc(wide[:, 1:4].contiguous()), atol=0, rtol=0)
            assert enc(torch.zeros(0, 3)).shape == (0, enc.out_dim)
            torch.testing.assert_close(FrequencyEncoding(3, 0)(wide[:, :3]), wide[:, :3], atol=0, rtol=0)
            for include_input in (True, False):
                plain = FrequencyEncoding(3, 4, include_input=include_input)
                with torch.enable_grad():
                    reference = plain(wide[:, 1:4])
                torch.testing.assert_close(plain(wide[:, 1:4]), reference, atol=0, rtol=0)


def test_frequency_encoding_without_input():
    enc = FrequencyEncoding(in_dim=3, num_frequencies=2, include_input=False)
    x = torch.tensor([[0.5, 0.0, 1.0]])
    assert enc.out_dim == 12
    # sin(pi/2)=1, sin(0)=0, sin(pi)=0; cos(pi/2)=0, cos(0)=1, cos(pi)=-1; then at 2 pi x.
    expected = torch.tensor([[1.0, 0.0, 0.0, 0.0, 1.0, -1.0, 0.0, 0.0, 0.0, -1.0, 1.0, 1.0]])
    torch.testing.assert_close(enc(x), expected, atol=1e-6, rtol=0)


def test_frequency_encoding_bad_input():
    enc = FrequencyEncoding(3, 4)
    with raises_naming("x"):
        enc(torch.zeros(5, 2))
    with raises_naming("x"):
        enc(torch.tensor([[0.0, float("inf"), 0.0]]))
    with raises_naming("num_frequencies"):
        FrequencyEncoding(3, -1)
    with raises_naming("num_frequencies"):
        FrequencyEncoding(3, 0, include_input=False)
    with raises_naming("in_dim"):
        FrequencyEncoding(0, 4)


def scipy_real_sh(order: int, m: int, dirs: np.ndarray) -> np.ndarray:
    """Real SH from scipy's complex ones (which carry the Condon-Shortley phase):
    sqrt(2) Re Y_l^m for m > 0, Y_l^0, sqrt(2) Im Y_l^|m| for m < 0."""
    polar = np.arccos(np.clip(dirs[:, 2], -1, 1))
    azimuth = np.arctan2(dirs[:, 1], dirs[:, 0])
    y = sph_harm_y(order, abs(m), polar, azimuth)
    if m > 0:
        return math.sqrt(2) * y.real
    if m < 0:
        return math.sqrt(2) * y.imag
    return y.real


def random_dirs(n: int, seed: int, dtype=torch.float64) -> torch.Tensor:
    d = torch.randn(n, 3, generator=torch.Generator().manual_seed(seed), dtype=dtype)
    return d / torch.linalg.vector_norm(d, dim=-1, keepdim=True)


@pytest.mark.parametrize("degree", [1, 2, 3, 4, 5])
@pytest.mark.parametrize("with_gradient", [False, True], ids=["kernel", "autograd"])
def test_sh_matches_scipy(degree, device, with_gradient):
    """Both ways: one Warp kernel for directions without a gradient, torch's operations for those with one."""
    enc = SphericalHarmonics(degree)
    assert enc.out_dim == degree**2
    dirs = random_dirs(200, seed=degree)
    inputs = dirs.to(device, copy=True).requires_grad_(with_gradient)
    out = enc(inputs)
    assert out.requires_grad == (with_gradient and degree > 1) and out.device == inputs.device  # degree 1: a constant
    out = out.detach().cpu().numpy()
    for order in range(degree):
        for m in range(-order, order + 1):
            expected = scipy_real_sh(order, m, dirs.numpy())
            np.testing.assert_allclose(out[:, order**2 + order + m], expected, atol=1e-12, err_msg=f"l={order} m={m}")


def test_sh_orthonormal_on_sphere():
    """Gauss-Legendre in cos(polar) times a uniform azimuth grid integrates these polynomials exactly."""
    nodes, weights = np.polynomial.legendre.leggauss(12)
    azimuth = np.arange(24) * (2 * math.pi / 24)
    cos_t, phi = np.meshgrid(nodes, azimuth, indexing="ij")
    sin_t = np.sqrt(1 - cos_t**2)
    dirs = np.stack([sin_t * np.cos(phi), sin_t * np.sin(phi), cos_t], axis=-1).reshape(-1, 3)
    w = np.repeat(weights, len(azimuth)) * (2 * math.pi / len(azimuth))
    y = SphericalHarmonics(5)(torch.from_numpy(dirs)).numpy()
    gram = (y * w[:, None]).T @ y
    np.testing.assert_allclose(gram, np.eye(25), atol=1e-12)


def test_sh_float32_and_gradients():
    enc = SphericalHarmonics(4)
    d = random_dirs(50, seed=9)
    out32 = enc(d.float())
    assert out32.dtype == torch.float32
    torch.testing.assert_close(out32.double(), enc(d), atol=1e-6, rtol=0)
    d = d.requires_grad_()
    assert torch.autograd.gradcheck(enc, (d,))


def test_sh_bad_input():
    enc = SphericalHarmonics()
    with raises_naming("dirs"):
        enc(torch.ones(4, 3))  # not unit
    with raises_naming("dirs"):
        enc(torch.ones(4, 2))
    with raises_naming("degree"):
        SphericalHarmonics(6)
    with raises_naming("degree"):
        SphericalHarmonics(0)
