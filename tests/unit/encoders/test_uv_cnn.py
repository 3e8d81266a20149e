"""MonoAvatar's UV-space CNNs: shapes, gradient flow to every parameter, the U-Net's receptive field (a deep
one reaches across the map, a shallow one cannot), the code decoder's dependence on its code, and bad input."""

from __future__ import annotations

import pytest
import torch

from headfields.encoders import UVCodeDecoder, UVCodeDecoderConfig, UVUNet, UVUNetConfig

from helpers import raises_naming


@pytest.mark.parametrize(
    ("config", "size"),
    [
        (UVUNetConfig(), (64, 32)),  # six levels: sides divisible by 32
        (UVUNetConfig(in_channels=5, out_channels=7, channels=(4, 8)), (6, 10)),
        (UVUNetConfig(channels=(4,)), (5, 3)),  # one level: any size
        (UVUNetConfig(channels=(4, 6, 9), negative_slope=0.0), (12, 8)),
    ],
)
def test_unet_output_shape(device, config, size):
    torch.manual_seed(0)
    net = UVUNet(config).to(device)
    x = torch.randn(2, config.in_channels, *size, device=device)
    out = net(x)
    assert out.shape == (2, config.out_channels, *size)
    assert out.device == x.device and out.dtype == x.dtype
    assert torch.isfinite(out).all()


@pytest.mark.parametrize(
    ("config", "code_dim"),
    [
        (UVCodeDecoderConfig(), 65),  # 8 x 8 -> 256 x 256
        (UVCodeDecoderConfig(out_channels=3, resolution=8, channels=(16, 8)), 4),  # derived start 4
        (UVCodeDecoderConfig(resolution=12, channels=(8, 4, 2), start_resolution=3), 1),
        (UVCodeDecoderConfig(resolution=5, channels=(6,)), 2),  # no doubling
    ],
)
def test_code_decoder_output_shape(device, config, code_dim):
    torch.manual_seed(0)
    dec = UVCodeDecoder(code_dim, config).to(device)
    out = dec(torch.randn(3, code_dim, device=device))
    r = config.resolution
    assert out.shape == (3, config.out_channels, r, r)
    assert torch.isfinite(out).all()


def assert_every_parameter_gets_gradient(module: torch.nn.Module, out: torch.Tensor) -> None:
    # A random projection, so no output channel's gradient can cancel.
    (out * torch.randn_like(out)).sum().backward()
    for name, p in module.named_parameters():
        assert p.grad is not None, name
        assert (p.grad != 0).all(), f"{name}: {(p.grad == 0).sum()} of {p.numel()} entries get no gradient"


def test_unet_gradients_reach_every_parameter():
    torch.manual_seed(1)
    # The full six levels. At 64 x 64 the bottleneck is 2 x 2, the least size at which every tap of the 4x4
    # (transposed) convolutions meets a texel rather than padding.
    net = UVUNet()
    x = torch.randn(2, 3, 64, 64, requires_grad=True)
    assert_every_parameter_gets_gradient(net, net(x))
    assert (x.grad != 0).all()


def test_code_decoder_gradients_reach_every_parameter():
    torch.manual_seed(2)
    dec = UVCodeDecoder(6, UVCodeDecoderConfig(resolution=64))  # a 2 x 2 start grid (see above)
    code = torch.randn(2, 6, requires_grad=True)
    assert_every_parameter_gets_gradient(dec, dec(code))
    assert (code.grad != 0).all()


def far_corner_response(net: UVUNet, size: int) -> torch.Tensor:
    """How much the output at texel (size-1, size-1) moves when the input at texel (0, 0) gets an impulse."""
    x = torch.randn(1, net.in_channels, size, size, dtype=torch.float64)
    impulse = x.clone()
    impulse[0, :, 0, 0] += 1.0
    with torch.no_grad():
        return (net(impulse) - net(x))[0, :, -1, -1].abs().max()


def test_unet_receptive_field_covers_the_map():
    torch.manual_seed(3)
    size = 64  # 2 x 2 at the bottleneck of six levels
    deep = UVUNet(UVUNetConfig(channels=(4, 4, 4, 4, 4, 4))).double()
    assert far_corner_response(deep, size) > 1e-9
    # The control: two levels see about 30 texels, so the far corner cannot move at all.
    shallow = UVUNet(UVUNetConfig(channels=(4, 4))).double()
    assert far_corner_response(shallow, size) == 0


def test_unet_rows_are_independent():
    torch.manual_seed(4)
    net = UVUNet(UVUNetConfig(channels=(4, 8, 16))).double()
    x = torch.randn(3, 3, 16, 16, dtype=torch.float64)
    torch.testing.assert_close(net(x)[1:2], net(x[1:2]), rtol=1e-12, atol=1e-12)


def test_outputs_start_small_but_nonzero():
    torch.manual_seed(5)
    net_out = UVUNet()(torch.randn(2, 3, 64, 64))
    dec_out = UVCodeDecoder(65)(torch.randn(2, 65))
    for out in (net_out, dec_out):
        assert 1e-3 < out.std() < 0.2
        assert (out != 0).float().mean() > 0.99


def test_code_decoder_depends_on_the_code_and_is_deterministic():
    torch.manual_seed(6)
    dec = UVCodeDecoder(8, UVCodeDecoderConfig(resolution=16, channels=(16, 8, 8)))
    a, b = torch.randn(2, 8, dtype=torch.float64).unbind()
    dec = dec.double()
    out_a, out_b = dec(a[None]), dec(b[None])
    torch.testing.assert_close(dec(a[None]), out_a, rtol=0, atol=0)
    assert (out_a - out_b).abs().amax() > 1e-3 * out_a.abs().amax()
    # A batch decodes each code on its own.
    torch.testing.assert_close(dec(torch.stack([a, b])), torch.cat([out_a, out_b]), rtol=1e-12, atol=1e-12)


def test_unet_bad_input():
    net = UVUNet(UVUNetConfig(channels=(4, 8, 16)))
    with raises_naming("x"):
        net(torch.zeros(1, 4, 16, 16))  # wrong channels
    with raises_naming("x"):
        net(torch.zeros(1, 3, 16, 18))  # 18 is not divisible by 4
    with raises_naming("x"):
        net(torch.zeros(3, 16, 16))  # no batch dimension
    with raises_naming("x"):
        net(torch.zeros(1, 3, 16, 16, dtype=torch.float64))  # not the parameters' dtype
    with raises_naming("x"):
        net(torch.full((1, 3, 16, 16), float("nan")))


def test_code_decoder_bad_input():
    dec = UVCodeDecoder(5, UVCodeDecoderConfig(resolution=8, channels=(8, 4)))
    with raises_naming("code"):
        dec(torch.zeros(2, 4))
    with raises_naming("code"):
        dec(torch.zeros(5))
    with raises_naming("code_dim"):
        UVCodeDecoder(0)


@pytest.mark.parametrize(
    ("name", "make"),
    [
        ("channels", lambda: UVUNetConfig(channels=())),
        ("channels", lambda: UVUNetConfig(channels=(8, 0))),
        ("channels", lambda: UVUNetConfig(channels=[8, 16])),
        ("in_channels", lambda: UVUNetConfig(in_channels=0)),
        ("out_channels", lambda: UVUNetConfig(out_channels=-1)),
        ("negative_slope", lambda: UVUNetConfig(negative_slope=1.5)),
        ("negative_slope", lambda: UVUNetConfig(negative_slope=-0.1)),
        ("resolution", lambda: UVCodeDecoderConfig(resolution=100)),  # not a multiple of 2^5
        ("resolution", lambda: UVCodeDecoderConfig(start_resolution=4)),  # 4 * 2^5 = 128, not 256
        ("start_resolution", lambda: UVCodeDecoderConfig(start_resolution=0)),
        ("out_channels", lambda: UVCodeDecoderConfig(out_channels=0)),
        ("channels", lambda: UVCodeDecoderConfig(channels=(16, -8))),
        ("negative_slope", lambda: UVCodeDecoderConfig(negative_slope=1.0)),
    ],
)
def test_bad_config(name, make):
    with raises_naming(name):
        make()
