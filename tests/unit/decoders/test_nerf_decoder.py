"""NeRF decoder: shapes and ranges, trunc_exp, where conditioning enters, gradcheck, bad input."""

import math

import pytest
import torch
import torch.nn.functional as F

from headfields.decoders import NerfDecoder, NerfDecoderConfig, trunc_exp

from helpers import raises_naming

DIMS = (4, 3, 2)  # feature_dim, dir_dim, cond_dim
TINY = dict(hidden_dim=5, density_layers=1, color_layers=2, geometry_dim=3)


def inputs(dec: NerfDecoder, n: int, device, dtype=torch.float32, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    feats = torch.randn(n, dec.feature_dim, generator=g, dtype=dtype).to(device)
    dirs = torch.randn(n, dec.dir_dim, generator=g, dtype=dtype).to(device)
    cond = torch.randn(n, dec.cond_dim, generator=g, dtype=dtype).to(device) if dec.cond_dim else None
    return feats, dirs, cond


@pytest.mark.parametrize("activation", ["trunc_exp", "softplus"])
def test_insta_defaults_shapes_and_ranges(device, activation):
    torch.manual_seed(0)
    # INSTA: 16 levels x 2 hash-grid features, SH degree 4 (16), 16 expression coefficients.
    dec = NerfDecoder(32, 16, 16, NerfDecoderConfig(density_activation=activation)).to(device)
    # INSTA's sizes: density MLP 2 hidden layers of 64 -> 1 + 15; colour MLP 3 hidden layers of 64 -> 3.
    dense = [m for m in dec.density_net if isinstance(m, torch.nn.Linear)]
    color = [m for m in dec.color_net if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in dense] == [(32 + 16, 64), (64, 64), (64, 16)]
    assert [(m.in_features, m.out_features) for m in color] == [(15 + 16, 64), (64, 64), (64, 64), (64, 3)]
    feats, dirs, cond = inputs(dec, 257, device)
    out = dec(feats * 10, dirs, cond)
    assert out.density.shape == (257,) and out.rgb.shape == (257, 3) and out.extras["geometry"].shape == (257, 15)
    assert out.density.device.type == device.type
    assert (out.density >= 0).all() and ((out.rgb >= 0) & (out.rgb <= 1)).all()
    torch.testing.assert_close(dec.density(feats * 10, cond), out.density)


def test_monoavatar_sizes_give_the_colour_mlp_its_own_width():
    # MonoAvatar (PAPERS.md): MLP1 3 x 128 -> density (+ features), MLP2 64 wide with the encoded direction.
    config = NerfDecoderConfig(hidden_dim=128, density_layers=3, color_layers=1, color_hidden_dim=64, geometry_dim=32)
    dec = NerfDecoder(128, 27, 0, config)
    dense = [(m.in_features, m.out_features) for m in dec.density_net if isinstance(m, torch.nn.Linear)]
    color = [(m.in_features, m.out_features) for m in dec.color_net if isinstance(m, torch.nn.Linear)]
    assert dense == [(128, 128), (128, 128), (128, 128), (128, 33)]
    assert color == [(32 + 27, 64), (64, 3)]


def test_density_activation_is_applied_to_the_first_output():
    for activation, fn in [("trunc_exp", torch.exp), ("softplus", F.softplus)]:
        dec = NerfDecoder(*DIMS, NerfDecoderConfig(**TINY, density_activation=activation))
        feats, dirs, cond = inputs(dec, 10, "cpu")
        raw = dec.density_net(torch.cat([feats, cond], dim=-1))
        out = dec(feats, dirs, cond)
        torch.testing.assert_close(out.density, fn(raw[:, 0]))
        torch.testing.assert_close(out.extras["geometry"], raw[:, 1:])
        torch.testing.assert_close(out.rgb, torch.sigmoid(dec.color_net(torch.cat([raw[:, 1:], dirs], dim=-1))))


def test_trunc_exp_forward_is_exp_and_gradient_is_clamped():
    x = torch.tensor([-3.0, 0.0, 2.0, 14.0, 16.0, 100.0, 1000.0], requires_grad=True)
    y = trunc_exp(x)
    torch.testing.assert_close(y, torch.exp(x.detach()))
    assert torch.isinf(y[-1])  # exp overflows in float32 ...
    y.backward(torch.ones_like(y))
    assert torch.isfinite(x.grad).all()  # ... but the gradient stays finite
    expected = torch.exp(torch.tensor([-3.0, 0.0, 2.0, 14.0, 15.0, 15.0, 15.0]))
    torch.testing.assert_close(x.grad, expected)


def test_cond_enters_only_through_the_density_mlp_input():
    torch.manual_seed(1)
    dec = NerfDecoder(*DIMS, NerfDecoderConfig(**TINY))
    feats, dirs, cond = inputs(dec, 20, "cpu")
    a, b = dec(feats, dirs, cond), dec(feats, dirs, cond + 1.0)
    assert not torch.allclose(a.density, b.density) and not torch.allclose(a.rgb, b.rgb)
    # Zero the density MLP's input columns that read cond: the output no longer depends on cond at all.
    with torch.no_grad():
        dec.density_net[0].weight[:, dec.feature_dim :] = 0
    a, b = dec(feats, dirs, cond), dec(feats, dirs, torch.randn_like(cond) * 5)
    torch.testing.assert_close(a.density, b.density, rtol=0, atol=0)
    torch.testing.assert_close(a.rgb, b.rgb, rtol=0, atol=0)


def test_cond_to_color_adds_cond_to_the_colour_input():
    dec = NerfDecoder(*DIMS, NerfDecoderConfig(**TINY, cond_to_color=True))
    feats, dirs, cond = inputs(dec, 6, "cpu")
    out = dec(feats, dirs, cond)
    torch.testing.assert_close(out.rgb, torch.sigmoid(dec.color_net(torch.cat([out.extras["geometry"], dirs, cond], dim=-1))))


def test_cond_to_colour_only_leaves_the_density_alone():
    dec = NerfDecoder(*DIMS, NerfDecoderConfig(**TINY, cond_to_color=True, cond_to_density=False))
    assert dec.density_net[0].in_features == dec.feature_dim  # the density MLP does not read cond
    feats, dirs, cond = inputs(dec, 6, "cpu")
    a, b = dec(feats, dirs, cond), dec(feats, dirs, torch.randn_like(cond) * 5)
    torch.testing.assert_close(a.density, b.density, rtol=0, atol=0)
    torch.testing.assert_close(a.density, dec.density(feats))  # the density needs no cond
    assert not torch.allclose(a.rgb, b.rgb)
    torch.testing.assert_close(a.rgb, torch.sigmoid(dec.color_net(torch.cat([a.extras["geometry"], dirs, cond], dim=-1))))
    with raises_naming("cond"):
        dec(feats, dirs)  # the colour MLP needs it


def test_no_cond_and_empty_batch(device):
    dec = NerfDecoder(4, 3, 0, NerfDecoderConfig(**TINY)).to(device)
    feats, dirs, _ = inputs(dec, 0, device)
    out = dec(feats, dirs)
    assert out.density.shape == (0,) and out.rgb.shape == (0, 3)


@pytest.mark.parametrize("activation", ["trunc_exp", "softplus"])
def test_gradcheck_float64(activation):
    torch.manual_seed(2)
    dec = NerfDecoder(*DIMS, NerfDecoderConfig(**TINY, density_activation=activation)).double()
    feats, dirs, cond = (t.requires_grad_() for t in inputs(dec, 6, "cpu", torch.float64))

    def f(feats, dirs, cond, *params):
        out = torch.func.functional_call(dec, dict(zip(names, params, strict=True)), (feats, dirs, cond))
        return out.density, out.rgb

    names = [k for k, _ in dec.named_parameters()]
    params = [p.detach().clone().requires_grad_() for p in dec.parameters()]
    assert torch.autograd.gradcheck(f, (feats, dirs, cond, *params))


def test_parameter_count_matches_the_layer_sizes():
    dec = NerfDecoder(32, 16)
    expected = (32 * 64 + 64) + (64 * 64 + 64) + (64 * 16 + 16) + (31 * 64 + 64) + 2 * (64 * 64 + 64) + (64 * 3 + 3)
    assert sum(p.numel() for p in dec.parameters()) == expected


def test_bad_input():
    dec = NerfDecoder(*DIMS, NerfDecoderConfig(**TINY))
    feats, dirs, cond = inputs(dec, 5, "cpu")
    with raises_naming("features"):
        dec(feats[:, :3], dirs, cond)
    with raises_naming("features"):
        dec(feats.double(), dirs, cond)
    with raises_naming("features"):
        dec(torch.full_like(feats, math.nan), dirs, cond)
    with raises_naming("dirs_encoded"):
        dec(feats, dirs[:4], cond)
    with raises_naming("cond"):
        dec(feats, dirs, None)
    with raises_naming("cond"):
        dec(feats, dirs, cond[:, :1])
    with raises_naming("cond"):
        dec.density(feats, None)
    plain = NerfDecoder(4, 3, 0, NerfDecoderConfig(**TINY))
    with raises_naming("cond"):
        plain(feats, dirs, cond)
    with raises_naming("density_activation"):
        NerfDecoderConfig(density_activation="relu")
    with raises_naming("hidden_dim"):
        NerfDecoderConfig(hidden_dim=0)
    with raises_naming("color_hidden_dim"):
        NerfDecoderConfig(color_hidden_dim=0)
    with raises_naming("feature_dim"):
        NerfDecoder(0, 3)
    with raises_naming("cond_dim"):
        NerfDecoder(4, 3, -1)
    with raises_naming("config"):
        NerfDecoder(4, 3, 0, NerfDecoderConfig(cond_to_color=True))
    with raises_naming("config"):  # cond would go nowhere
        NerfDecoder(4, 3, 2, NerfDecoderConfig(cond_to_density=False))
