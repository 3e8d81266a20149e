"""SH lighting against scipy's spherical harmonics (ambient at initialisation, chosen coefficients, per-frame sets);
the albedo field's sizes, range and gradients; bad input."""

import math

import numpy as np
import pytest
import torch
from scipy.special import sph_harm_y

from headfields.decoders import AppearanceConfig, AppearanceField, SdfMlp, SdfMlpConfig, SHLighting

from helpers import raises_naming


def unit(n: int, seed: int, dtype=torch.float64) -> torch.Tensor:
    d = torch.randn(n, 3, generator=torch.Generator().manual_seed(seed), dtype=dtype)
    return d / torch.linalg.vector_norm(d, dim=1, keepdim=True)


def scipy_basis(normals: np.ndarray) -> np.ndarray:
    """The 9 real SH of orders l <= 2 at column l^2 + l + m, from scipy's complex Y_l^m (Condon-Shortley phase):
    sqrt(2) Re Y_l^m for m > 0, sqrt(2) Im Y_l^|m| for m < 0."""
    polar = np.arccos(np.clip(normals[:, 2], -1, 1))
    azimuth = np.arctan2(normals[:, 1], normals[:, 0])
    columns = []
    for order in range(3):
        for m in range(-order, order + 1):
            y = sph_harm_y(order, abs(m), polar, azimuth)
            columns.append(math.sqrt(2) * y.real if m > 0 else math.sqrt(2) * y.imag if m < 0 else y.real)
    return np.stack(columns, axis=1)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_lighting_is_ambient_at_initialisation(device, dtype):
    light = SHLighting().to(device, dtype)
    assert light.coefficients.shape == (9, 3)
    shading = light(unit(500, seed=0, dtype=dtype).to(device))
    assert shading.shape == (500, 3) and shading.dtype == dtype
    torch.testing.assert_close(shading, torch.ones_like(shading))
    per_frame = SHLighting(num_sets=4).to(device, dtype)
    torch.testing.assert_close(
        per_frame(unit(50, seed=1, dtype=dtype).to(device), 3), torch.ones(50, 3, dtype=dtype, device=device)
    )


def test_lighting_matches_scipy_for_chosen_coefficients(device):
    light = SHLighting().double().to(device)
    g = torch.Generator().manual_seed(2)
    coefficients = torch.randn(9, 3, generator=g, dtype=torch.float64)
    with torch.no_grad():
        light.coefficients.copy_(coefficients)
    normals = torch.cat([torch.eye(3, dtype=torch.float64), -torch.eye(3, dtype=torch.float64), unit(20, seed=3)])
    expected = scipy_basis(normals.numpy()) @ coefficients.numpy()
    np.testing.assert_allclose(light(normals.to(device)).cpu().detach().numpy(), expected, atol=1e-12)
    # By hand at the pole n = z: only Y_00 = 1 / (2 sqrt pi), Y_10 = sqrt(3 / 4 pi), Y_20 = sqrt(5 / 16 pi) * 2 are non-zero.
    pole = coefficients[0] / (2 * math.sqrt(math.pi)) + coefficients[2] * math.sqrt(3 / (4 * math.pi))
    pole = pole + coefficients[6] * 2 * math.sqrt(5 / (16 * math.pi))
    torch.testing.assert_close(light(torch.tensor([[0.0, 0, 1]], dtype=torch.float64, device=device))[0].cpu(), pole)


def test_per_frame_sets_pick_each_samples_coefficients():
    light = SHLighting(num_sets=3).double()
    g = torch.Generator().manual_seed(4)
    coefficients = torch.randn(3, 9, 3, generator=g, dtype=torch.float64)
    with torch.no_grad():
        light.coefficients.copy_(coefficients)
    normals = unit(30, seed=5)
    sets = torch.randint(0, 3, (30,), generator=g)
    basis = scipy_basis(normals.numpy())
    expected = np.stack([basis[i] @ coefficients[s].numpy() for i, s in enumerate(sets.tolist())])
    np.testing.assert_allclose(light(normals, sets).detach().numpy(), expected, atol=1e-12)
    np.testing.assert_allclose(light(normals, 1).detach().numpy(), basis @ coefficients[1].numpy(), atol=1e-12)


def test_appearance_field_sizes_range_and_gradients(device):
    torch.manual_seed(0)
    sdf = SdfMlp(extra_dim=2, config=SdfMlpConfig(hidden_dim=32, hidden_layers=2)).double().to(device)
    field = AppearanceField(in_dim=5, sdf_feature_dim=32, code_dim=4).double().to(device)
    n = 64
    g = torch.Generator().manual_seed(6)
    x = torch.randn(n, 5, generator=g, dtype=torch.float64).to(device).requires_grad_()
    code = torch.randn(n, 4, generator=g, dtype=torch.float64).to(device).requires_grad_()
    features = sdf(x[:, :3], x[:, 3:]).features
    albedo = field(x, features, code)
    assert albedo.shape == (n, 3) and albedo.device.type == device.type
    assert bool(((albedo > 0) & (albedo < 1)).all())
    # Gradients reach the point (directly and through the SDF features), the code and the SDF network's hidden
    # layers (its sdf output layer does not make the features).
    albedo.sum().backward()
    hidden = [(f"sdf layer {i}", p) for i, p in enumerate(list(sdf.weights)[:-1] + list(sdf.biases)[:-1])]
    for name, tensor in [("x", x), ("code", code)] + hidden:
        assert tensor.grad is not None and float(tensor.grad.abs().sum()) > 0, name
    assert all(float(p.grad.abs().sum()) > 0 for p in field.parameters())


def test_appearance_defaults_are_mononphms_network():
    # MonoNPHM (PAPERS.md): 4 x 200 ReLU -> RGB, fed with a 16-d projection of the SDF MLP's last hidden layer.
    field = AppearanceField(in_dim=5, sdf_feature_dim=200, code_dim=0)
    assert (field.projection.in_features, field.projection.out_features) == (200, 16)
    layers = [(m.in_features, m.out_features) for m in field.net if isinstance(m, torch.nn.Linear)]
    assert layers == [(5 + 16, 200), (200, 200), (200, 200), (200, 200), (200, 3)]
    assert sum(isinstance(m, torch.nn.ReLU) for m in field.net) == 4
    encoded = AppearanceField(in_dim=3, sdf_feature_dim=8, config=AppearanceConfig(hidden_layers=1, position_frequencies=2))
    assert encoded.net[0].in_features == 3 * 5 + 16
    out = encoded(torch.zeros(7, 3), torch.zeros(7, 8))
    assert out.shape == (7, 3) and bool(((out > 0) & (out < 1)).all())


def test_bad_input_names_the_argument():
    light = SHLighting()
    with raises_naming("normals"):
        light(torch.tensor([[0.0, 0.0, 2.0]]))
    with raises_naming("normals"):
        light(torch.zeros(3, 2))
    with raises_naming("normals"):
        light(unit(3, seed=7))  # float64 against float32 coefficients
    with raises_naming("set"):
        light(unit(3, seed=7, dtype=torch.float32), 0)
    frames = SHLighting(num_sets=2)
    normals = unit(3, seed=7, dtype=torch.float32)
    with raises_naming("set"):
        frames(normals)
    with raises_naming("set"):
        frames(normals, 2)
    with raises_naming("set"):
        frames(normals, torch.tensor([0, 1, 2]))
    with raises_naming("num_sets"):
        SHLighting(num_sets=0)
    field = AppearanceField(in_dim=3, sdf_feature_dim=4, code_dim=2, config=AppearanceConfig(hidden_dim=8, hidden_layers=1))
    with raises_naming("x"):
        field(torch.zeros(5, 4), torch.zeros(5, 4), torch.zeros(5, 2))
    with raises_naming("sdf_features"):
        field(torch.zeros(5, 3), torch.zeros(6, 4), torch.zeros(5, 2))
    with raises_naming("code"):
        field(torch.zeros(5, 3), torch.zeros(5, 4))
    with raises_naming("feature_dim"):
        AppearanceConfig(feature_dim=0)
