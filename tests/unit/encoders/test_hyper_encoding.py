"""HyperEncoding: the spatial encoder reads the first three coordinates and the frequency encoding the hyper ones
(checked against the analytic encoding), gradients reach both, and bad input raises naming the argument."""

import math

import torch

from headfields.encoders import FrequencyEncoding, HashGrid, HashGridConfig, HyperEncoding

from helpers import raises_naming


def test_spatial_then_hyper_bands():
    spatial = FrequencyEncoding(3, 0)  # x itself
    encoding = HyperEncoding(spatial, hyper_dim=2, num_frequencies=2)
    x = torch.tensor([[0.1, 0.2, 0.3, 0.25, -0.5]])
    h = x[0, 3:]
    bands = [f(math.pi * 2**k * h) for k in range(2) for f in (torch.sin, torch.cos)]
    expected = torch.cat([x[0, :3], h, *bands])
    assert encoding.in_dim == 5 and encoding.out_dim == 3 + 2 * 5
    torch.testing.assert_close(encoding(x)[0], expected)


def test_window_closes_the_hyper_bands():
    encoding = HyperEncoding(FrequencyEncoding(3, 0), hyper_dim=1, num_frequencies=3)
    x = torch.rand(4, 4)
    out = encoding(x, window=0.0)
    torch.testing.assert_close(out[:, :4], x)  # x and h pass, every band is off
    assert out[:, 4:].abs().max() == 0


def test_gradients_reach_the_grid_and_the_hyper_coordinates():
    encoding = HyperEncoding(HashGrid(HashGridConfig(levels=2, log2_table_size=8, base_resolution=4, finest_resolution=8)), 2, 1)
    x = torch.rand(16, 5, requires_grad=True)
    encoding(x).square().sum().backward()
    assert encoding.spatial.table.grad.abs().sum() > 0
    assert x.grad[:, 3:].abs().sum() > 0


def test_bad_input_names_the_argument():
    with raises_naming("spatial"):
        HyperEncoding(FrequencyEncoding(2, 1), 2)
    with raises_naming("hyper_dim"):
        HyperEncoding(FrequencyEncoding(3, 1), 0)
    with raises_naming("x"):
        HyperEncoding(FrequencyEncoding(3, 1), 2)(torch.rand(4, 4))
