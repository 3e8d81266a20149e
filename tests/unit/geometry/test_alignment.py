"""Umeyama's similarity against a known one: points moved by a rotation, scale and shift are brought back exactly, and
a mirrored target still gets a rotation, never a reflection; a NaN is refused."""

import pytest
import torch

from headfields.geometry import similarity_transform


def _rotation(generator):
    q, r = torch.linalg.qr(torch.randn(3, 3, generator=generator, dtype=torch.float64))
    q = q * torch.sign(torch.diagonal(r))
    return q if torch.det(q) > 0 else -q


def test_a_known_similarity_comes_back():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(50, 3, generator=g, dtype=torch.float64)
    rotation, scale, shift = (
        _rotation(g),
        torch.tensor(1.7, dtype=torch.float64),
        torch.tensor([0.3, -2.0, 5.0], dtype=torch.float64),
    )
    b = scale * a @ rotation.T + shift
    got = similarity_transform(a, b)
    for ours, true in zip(got, (rotation, scale, shift), strict=True):
        torch.testing.assert_close(ours, true, atol=1e-10, rtol=0)


def test_a_mirrored_target_gets_a_rotation():
    g = torch.Generator().manual_seed(1)
    a = torch.randn(40, 3, generator=g, dtype=torch.float64)
    rotation, scale, _ = similarity_transform(a, a * torch.tensor([1.0, 1.0, -1.0], dtype=torch.float64))
    assert float(torch.det(rotation)) == pytest.approx(1.0) and float(scale) > 0
    torch.testing.assert_close(rotation @ rotation.T, torch.eye(3, dtype=torch.float64), atol=1e-12, rtol=0)


def test_a_nan_partner_is_refused_by_name():
    b = torch.zeros(5, 3)
    b[2, 1] = float("nan")
    with pytest.raises(ValueError, match="b: expected finite values"):
        similarity_transform(torch.randn(5, 3), b)
