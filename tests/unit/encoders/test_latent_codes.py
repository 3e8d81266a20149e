"""Latent codes: read by index, zero (the mean code) at init unless drawn, and the Gaussian-prior regulariser
against a hand computation."""

import pytest
import torch

from headfields.encoders import LatentCodes, LatentCodesConfig

from helpers import raises_naming


def test_codes_are_read_by_index_and_start_at_the_mean():
    codes = LatentCodes(5, LatentCodesConfig(dim=3))
    assert torch.equal(codes(torch.tensor([4, 0, 4])), torch.zeros(3, 3))
    with torch.no_grad():
        codes.codes.copy_(torch.arange(15.0).reshape(5, 3))
    assert torch.equal(codes(torch.tensor([4, 1])), torch.tensor([[12.0, 13.0, 14.0], [3.0, 4.0, 5.0]]))
    torch.manual_seed(0)
    drawn = LatentCodes(1000, LatentCodesConfig(dim=4, init_std=0.01)).codes.detach()
    assert 0.009 < float(drawn.std()) < 0.011


def test_regularizer_is_the_weighted_mean_squared_norm():
    codes = LatentCodes(3, LatentCodesConfig(dim=2, weight=0.5))
    with torch.no_grad():
        codes.codes.copy_(torch.tensor([[1.0, 2.0], [0.0, 3.0], [4.0, 0.0]]))
    assert float(codes.regularizer().detach()) == pytest.approx(0.5 * (5 + 9 + 16) / 3)
    assert float(codes.regularizer(codes(torch.tensor([1]))).detach()) == pytest.approx(0.5 * 9)
    codes.regularizer(codes(torch.tensor([0]))).backward()
    assert torch.equal(codes.codes.grad, torch.tensor([[1.0, 2.0], [0.0, 0.0], [0.0, 0.0]]))  # 0.5 * 2 z
    empty = LatentCodes(2, LatentCodesConfig(dim=0, weight=1.0))
    assert empty(torch.tensor([1])).shape == (1, 0) and float(empty.regularizer().detach()) == 0.0


def test_bad_input_raises():
    codes = LatentCodes(3, LatentCodesConfig(dim=2))
    with raises_naming("index"):
        codes(torch.tensor([3]))
    with raises_naming("index"):
        codes(torch.tensor([0.0]))
    with raises_naming("count"):
        LatentCodes(0, LatentCodesConfig(dim=2))
    with raises_naming("dim"):
        LatentCodesConfig(dim=-1)
    with raises_naming("init_std"):
        LatentCodesConfig(dim=2, init_std=-1.0)
    with raises_naming("weight"):
        LatentCodesConfig(dim=2, weight=-1.0)
