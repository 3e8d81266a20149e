"""The deformation regularisers: the elastic loss against hand values (scalings), zero on rotations (hypothesis),
NumPy's SVD, the Geman-McClure form written out, gradcheck; the magnitude loss against a hand value; weights,
empty batches and bad input."""

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from headfields.losses import ELASTIC_MIN_SINGULAR, elastic_loss, magnitude_loss

from helpers import raises_naming


def random_rotations(n: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(n, 3, 3, generator=g, dtype=torch.float64))
    return q * torch.sign(torch.det(q))[:, None, None]


@settings(max_examples=20)
@given(st.integers(0, 10_000))
def test_elastic_is_zero_on_rotations(seed):
    assert float(elastic_loss(random_rotations(8, seed))) == pytest.approx(0.0, abs=1e-24)


def test_elastic_hand_values(device):
    j = torch.diag(torch.tensor([2.0, 1.0, 1.0], dtype=torch.float64, device=device))[None]
    assert float(elastic_loss(j)) == pytest.approx(math.log(2) ** 2, rel=1e-12)
    # A rotated non-uniform scaling: log singular values 2, 3, 0.5 whatever the rotations.
    r = random_rotations(2, 1).to(device)
    s = torch.diag(torch.tensor([2.0, 3.0, 0.5], dtype=torch.float64, device=device))
    both = torch.stack([j[0], r[0] @ s @ r[1]])
    expected = (math.log(2) ** 2 + (math.log(2) ** 2 + math.log(3) ** 2 + math.log(0.5) ** 2)) / 2
    assert float(elastic_loss(both)) == pytest.approx(expected, rel=1e-12)
    assert float(elastic_loss(2 * r)) > 0


def test_elastic_matches_numpy_svd_and_robust_form():
    g = torch.Generator().manual_seed(0)
    j = torch.randn(16, 3, 3, generator=g, dtype=torch.float64)
    per_sample = (np.log(np.linalg.svd(j.numpy(), compute_uv=False)) ** 2).sum(axis=1)
    assert float(elastic_loss(j)) == pytest.approx(per_sample.mean(), rel=1e-10)
    c = 0.03
    robust = (2 * (per_sample / c**2) / (per_sample / c**2 + 4)).mean()
    assert float(elastic_loss(j, scale=c)) == pytest.approx(robust, rel=1e-10)
    diag = torch.diag(torch.tensor([2.0, 1.0, 1.0], dtype=torch.float64))[None]
    e = math.log(2) ** 2
    assert float(elastic_loss(diag, scale=0.5)) == pytest.approx(2 * (e / 0.25) / (e / 0.25 + 4), rel=1e-12)
    w = torch.rand(16, generator=g, dtype=torch.float64)
    assert float(elastic_loss(j, weight=w)) == pytest.approx((w.numpy() * per_sample).mean(), rel=1e-10)


def test_elastic_is_finite_on_a_singular_jacobian_and_differentiable():
    flat = torch.zeros(1, 3, 3, dtype=torch.float64)
    assert float(elastic_loss(flat)) == pytest.approx(3 * math.log(ELASTIC_MIN_SINGULAR) ** 2)
    # svdvals' gradient is stable at repeated singular values (the identity: where a warp starts).
    eye = torch.eye(3, dtype=torch.float64).repeat(2, 1, 1).requires_grad_(True)
    elastic_loss(eye).backward()
    assert torch.isfinite(eye.grad).all() and float(eye.grad.abs().max()) == 0.0
    g = torch.Generator().manual_seed(2)
    j = (torch.eye(3, dtype=torch.float64) + 0.3 * torch.randn(4, 3, 3, generator=g, dtype=torch.float64)).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda a: elastic_loss(a), (j,))
    assert torch.autograd.gradcheck(lambda a: elastic_loss(a, scale=0.1), (j,))


def test_magnitude_hand_value(device):
    d = torch.tensor([[1.0, 2.0, 2.0], [0.0, 0.0, 0.5]], dtype=torch.float64, device=device)
    assert float(magnitude_loss(d)) == pytest.approx((9.0 + 0.25) / 2)
    w = torch.tensor([2.0, 4.0], dtype=torch.float64, device=device)
    assert float(magnitude_loss(d, weight=w)) == pytest.approx((18.0 + 1.0) / 2)


def test_empty_batches_give_zero_with_a_graph():
    j = torch.zeros(0, 3, 3, requires_grad=True)
    d = torch.zeros(0, 3, requires_grad=True)
    for loss in (elastic_loss(j), magnitude_loss(d)):
        assert float(loss.detach()) == 0.0
        loss.backward()


def test_bad_input():
    with raises_naming("jacobian"):
        elastic_loss(torch.zeros(4, 3))
    with raises_naming("jacobian"):
        elastic_loss(torch.full((1, 3, 3), float("nan")))
    with raises_naming("scale"):
        elastic_loss(torch.eye(3)[None], scale=0.0)
    with raises_naming("weight"):
        elastic_loss(torch.eye(3)[None], weight=-torch.ones(1))
    with raises_naming("displacement"):
        magnitude_loss(torch.zeros(4, 2))
    with raises_naming("weight"):
        magnitude_loss(torch.zeros(4, 3), weight=torch.ones(3))
