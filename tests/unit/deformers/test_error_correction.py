"""MonoAvatar's SE(3) error-correction field: exact identity at init, in eval and in the warm-up; the closed form
R(q + c) − c + t with R built by Rodrigues' formula in NumPy; the exp map against Rodrigues (hypothesis, tiny
angles), a 90° case and gradcheck across its Taylor switch; the whole network re-evaluated in NumPy at several
windows; the paper's sizes (three 2-layer heads of 128) and schedules (off for 5k steps, the elastic weight 1e-4
→ 1e-5, a tenth of the learning rate); the regularisers' Jacobian against finite differences; gradients;
chaining; the saved step; bad input; the old names, deprecated."""

import copy
import dataclasses
import math
import warnings

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import headfields.deformers
from headfields.deformers import (
    CorrectionRegularizers,
    DeformerChain,
    ErrorCorrectionConfig,
    ErrorCorrectionField,
    RigidDeformer,
    log_quaternion_to_rotation,
)
from headfields.encoders.frequency import frequency_window
from headfields.losses import elastic_loss
from headfields.networks import Linear
from headfields.parametric import load_model
from headfields.synthetic import write_synthetic_flame

from helpers import raises_naming

FRAMES = 3
SMALL = ErrorCorrectionConfig(
    latent_dim=4, hidden_dim=16, hidden_layers=2, head_dim=8, num_frequencies=3, window_steps=100, start_step=10
)
HEADS = ("rotation_head", "center_head", "translation_head")


@pytest.fixture(scope="module")
def flame_heads(tmp_path_factory):
    """``heads(device)``: a synthetic FLAME head with FRAMES frames on ``device`` (the field only checks it)."""
    folder = tmp_path_factory.mktemp("flame")
    write_synthetic_flame(folder)
    model = load_model(folder, num_shape=10, num_expression=10, dtype=torch.float64)
    cache = {}

    def heads(device="cpu"):
        device = torch.device(device)
        if device not in cache:
            m = copy.deepcopy(model).to(device)
            pose = torch.zeros(FRAMES, len(m.joint_names), 3, dtype=torch.float64, device=device)
            pose[:, 0, 1] = torch.tensor([0.0, 0.2, -0.3], dtype=torch.float64, device=device)
            cache[device] = m(pose=pose, translation=torch.zeros(FRAMES, 3, dtype=torch.float64, device=device))
        return cache[device]

    return heads


@pytest.fixture
def flame_head(flame_heads):
    return flame_heads("cpu")


def samples(n=12, seed=0, device="cpu"):
    g = torch.Generator().manual_seed(seed)
    x = (torch.rand(n, 3, generator=g, dtype=torch.float64) - 0.5) * 0.4
    dirs = torch.nn.functional.normalize(torch.randn(n, 3, generator=g, dtype=torch.float64), dim=-1)
    frame = torch.arange(n) % FRAMES
    return x.to(device), frame.to(device), dirs.to(device)


def active_field(config=SMALL, step=None, dtype=torch.float64, seed=0, randomize_heads=True) -> ErrorCorrectionField:
    """A training-mode field past its warm-up; with ``randomize_heads`` every parameter is random (non-identity)."""
    torch.manual_seed(seed)
    field = ErrorCorrectionField(FRAMES, config).to(dtype).train()
    field.set_step(config.start_step if step is None else step)
    if randomize_heads:
        with torch.no_grad():
            for head in (field.rotation_head, field.center_head, field.translation_head):
                for layer in head[::2]:  # the linear layers (ReLUs between them)
                    layer.weight.normal_(0, 0.3)
                    layer.bias.normal_(0, 0.3)
            field.latent.weight.normal_(0, 0.5)
    return field


def rodrigues(omega: np.ndarray) -> np.ndarray:
    """Rotation by angle 2|ω| about ω/|ω|: I + sin φ K + (1 − cos φ) K²."""
    norm = np.linalg.norm(omega)
    if norm == 0:
        return np.eye(3)
    kx, ky, kz = omega / norm
    k = np.array([[0, -kz, ky], [kz, 0, -kx], [-ky, kx, 0]])
    phi = 2 * norm
    return np.eye(3) + math.sin(phi) * k + (1 - math.cos(phi)) * k @ k


# ---------------------------------------------------------------- identity


def test_identity_at_init_is_exact(flame_heads, device):
    field = ErrorCorrectionField(FRAMES, SMALL).to(device).train()
    field.set_step(SMALL.start_step)
    assert field.active
    head = flame_heads(device)
    x, frame, dirs = samples(device=device)
    out = field(x, head, frame, dirs)
    assert torch.equal(out.points, x) and torch.equal(out.dirs, dirs)
    assert out.valid.all() and out.face is None


def test_identity_in_eval_and_before_the_warm_up(flame_head):
    x, frame, dirs = samples()
    field = active_field()
    assert not torch.equal(field(x, flame_head, frame, dirs).points, x)  # really a non-identity field
    field.eval()
    out = field(x, flame_head, frame, dirs)
    assert out.points is x and out.dirs is dirs and out.valid.all() and out.face is None
    field.train()
    field.set_step(SMALL.start_step - 1)
    assert not field.active
    out = field(x, flame_head, frame, None)
    assert out.points is x and out.dirs is None
    # Inactive: frames beyond the latent table (e.g. test frames) are fine.
    small = ErrorCorrectionField(1, SMALL).eval()
    assert small(x, flame_head, frame).points is x


def test_off_for_the_papers_first_5k_steps_and_in_eval(flame_head):
    """The default (MonoAvatar) field is the identity before step 5,000 and in eval mode, and on from 5,000."""
    x, frame, dirs = samples()
    torch.manual_seed(0)
    field = ErrorCorrectionField(FRAMES).double().train()
    with torch.no_grad():
        torch.nn.init.constant_(field.translation_head[-1].bias, 0.01)  # a 1 cm shift wherever it is on
    for step, on in ((0, False), (4_999, False), (5_000, True), (10**6, True)):
        field.set_step(step)
        out = field(x, flame_head, frame, dirs).points
        assert field.active == on
        if on:
            torch.testing.assert_close(out, x + 0.01, rtol=0, atol=1e-15)
        else:
            assert out is x
    field.eval()
    assert not field.active and field(x, flame_head, frame, dirs).points is x


# ---------------------------------------------------------------- the paper's sizes and schedules


def test_three_heads_of_two_layers_128_wide():
    """MonoAvatar: a 5 x 128 trunk, then rotation, pivot and translation heads, each 2 layers of 128, that start
    as the identity (zero output layers)."""
    field = ErrorCorrectionField(FRAMES)
    trunk = [m for m in field.trunk if isinstance(m, torch.nn.Linear)]
    assert [m.out_features for m in trunk] == [128] * 5
    for name in HEADS:
        layers = [m for m in getattr(field, name) if isinstance(m, torch.nn.Linear)]
        assert [(m.in_features, m.out_features) for m in layers] == [(128, 128), (128, 3)], name
        assert isinstance(getattr(field, name)[1], torch.nn.ReLU)
        assert not layers[-1].weight.any() and not layers[-1].bias.any()
    linear = ErrorCorrectionField(FRAMES, ErrorCorrectionConfig(head_layers=1))  # Nerfies' linear heads
    assert [type(m) for m in linear.rotation_head] == [Linear]  # one linear layer (headfields.networks: an nn.Linear)


def test_elastic_weight_decays_from_1e4_to_1e5_log_linearly():
    """1e-4 at step 0, 1e-5 from the end of training (400k) on, the geometric mean half-way; the regularisers
    carry the scheduled weight."""
    config = ErrorCorrectionConfig()
    assert config.elastic_weight_at(0) == pytest.approx(1e-4, rel=1e-12)
    assert config.elastic_weight_at(200_000) == pytest.approx(math.sqrt(1e-4 * 1e-5), rel=1e-12)
    assert config.elastic_weight_at(100_000) == pytest.approx(1e-4 * 10**-0.25, rel=1e-12)
    assert config.elastic_weight_at(400_000) == pytest.approx(1e-5, rel=1e-12)
    assert config.elastic_weight_at(10**7) == pytest.approx(1e-5, rel=1e-12)
    constant = ErrorCorrectionConfig(final_elastic_weight=None)
    assert constant.elastic_weight_at(0) == constant.elastic_weight_at(10**7) == 1e-4
    field = active_field(dataclasses.replace(SMALL, elastic_weight=1e-4, final_elastic_weight=1e-5, elastic_decay_steps=100))
    x, frame, _ = samples(n=4)
    for step, weight in ((10, 1e-4 * 0.1**0.1), (50, 1e-4 * 0.1**0.5), (100, 1e-5), (300, 1e-5)):
        field.set_step(step)
        assert field.elastic_weight == pytest.approx(weight, rel=1e-12)
        reg = field.regularizers(x, frame)
        assert reg.elastic_weight == pytest.approx(weight, rel=1e-12)
        assert float(reg.weighted_elastic.detach()) == pytest.approx(weight * float(reg.elastic.detach()), rel=1e-12)


def test_learning_rate_is_a_tenth_of_the_models():
    assert ErrorCorrectionConfig().learning_rate_scale == 0.1  # MonoAvatar: 1e-4 -> 1e-5 against 1e-3 -> 1e-4


# ---------------------------------------------------------------- the closed form


def test_constant_heads_give_the_closed_form(flame_head):
    field = active_field(randomize_heads=False)
    omega, center, translation = np.array([0.3, -0.5, 0.2]), np.array([0.05, -0.1, 0.02]), np.array([0.01, 0.03, -0.02])
    with torch.no_grad():
        for head, value in ((field.rotation_head, omega), (field.center_head, center), (field.translation_head, translation)):
            head[-1].bias.copy_(torch.from_numpy(value))  # the output layer's weights are zero: a constant
    x, frame, dirs = samples()
    out = field(x, flame_head, frame, dirs)
    r = rodrigues(omega)
    np.testing.assert_allclose(r.T @ r, np.eye(3), atol=1e-14)
    assert np.linalg.det(r) == pytest.approx(1.0, abs=1e-14)
    expected = (x.numpy() + center) @ r.T - center + translation
    np.testing.assert_allclose(out.points.detach().numpy(), expected, atol=1e-13)
    np.testing.assert_allclose(out.dirs.detach().numpy(), dirs.numpy() @ r.T, atol=1e-13)


def test_exp_map_quarter_turn():
    r = log_quaternion_to_rotation(torch.tensor([[0.0, 0.0, math.pi / 4]], dtype=torch.float64))[0]
    torch.testing.assert_close(r, torch.tensor([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]], dtype=torch.float64))


@settings(max_examples=40)
@given(st.lists(st.floats(-1, 1), min_size=3, max_size=3), st.integers(-9, 0))
def test_exp_map_matches_rodrigues_and_is_a_rotation(direction, exponent):
    omega = np.array(direction) * 3.0 * 10.0**exponent  # from 1e-9 to ~5: both sides of the Taylor switch
    r = log_quaternion_to_rotation(torch.from_numpy(omega)[None])[0].numpy()
    np.testing.assert_allclose(r, rodrigues(omega), atol=1e-13)
    np.testing.assert_allclose(r.T @ r, np.eye(3), atol=1e-13)
    assert np.linalg.det(r) == pytest.approx(1.0, abs=1e-13)


def test_exp_map_gradients_are_finite_and_correct_near_zero():
    omega = torch.zeros(1, 3, dtype=torch.float64, requires_grad=True)
    jac = torch.autograd.functional.jacobian(lambda w: log_quaternion_to_rotation(w)[0], omega)[..., 0, :]  # [3, 3, 3]
    # dR/dω_i at 0 = 2 [e_i]x (rotation by 2|ω|).
    for i in range(3):
        e = np.zeros(3)
        e[i] = 1.0
        skew = np.array([[0, -e[2], e[1]], [e[2], 0, -e[0]], [-e[1], e[0], 0]])
        np.testing.assert_allclose(jac[..., i].numpy(), 2 * skew, atol=1e-14)
    # gradcheck on both sides of and right at the switch |ω|^2 = 1e-2.
    for norm in (1e-4, 0.0999, 0.1, 0.1001, 1.3):
        w = (torch.tensor([[0.48, -0.6, 0.64]], dtype=torch.float64) * norm).requires_grad_(True)
        assert torch.autograd.gradcheck(log_quaternion_to_rotation, (w,))


# ---------------------------------------------------------------- the whole network in NumPy


def numpy_correction(field: ErrorCorrectionField, x: np.ndarray, frame: np.ndarray) -> np.ndarray:
    """The module docstring's map, evaluated layer by layer from the module's weights."""
    p = {k: v.detach().numpy() for k, v in field.state_dict().items() if k != "_extra_state"}
    alpha = frequency_window(field.step, field.config.num_frequencies, field.config.window_steps)
    u = x / field.config.length_scale  # the encoding reads positions in units of length_scale
    features = [u]
    for k in range(field.config.num_frequencies):
        w = (1 - math.cos(math.pi * min(max(alpha - k, 0), 1))) / 2
        features += [w * np.sin(2**k * math.pi * u), w * np.cos(2**k * math.pi * u)]
    h = np.concatenate(features + [p["latent.weight"][frame]], axis=1)
    for i in range(field.config.hidden_layers):
        h = np.maximum(h @ p[f"trunk.{2 * i}.weight"].T + p[f"trunk.{2 * i}.bias"], 0)

    def head(name: str) -> np.ndarray:  # head_layers linear layers, ReLU between them
        out = h
        for i in range(field.config.head_layers):
            out = out @ p[f"{name}.{2 * i}.weight"].T + p[f"{name}.{2 * i}.bias"]
            out = np.maximum(out, 0) if i < field.config.head_layers - 1 else out
        return out

    omega, center, translation = (head(n) for n in HEADS)
    out = np.empty_like(x)
    for n in range(x.shape[0]):
        out[n] = rodrigues(omega[n]) @ (x[n] + center[n]) - center[n] + translation[n]
    return out


@pytest.mark.parametrize("step", [10, 60, 135, 1000])  # α = 0.3, 1.8, then 3 (ramp done)
def test_network_matches_a_numpy_evaluation(flame_head, step):
    field = active_field(step=step)
    x, frame, _ = samples(n=9, seed=step)
    out = field(x, flame_head, frame).points.detach().numpy()
    np.testing.assert_allclose(out, numpy_correction(field, x.numpy(), frame.numpy()), atol=1e-12)


def test_window_follows_the_step():
    field = ErrorCorrectionField(FRAMES)
    assert field.window == 0.0
    field.set_step(40_000)
    assert field.window == pytest.approx(3.0)
    field.set_step(10**6)
    assert field.window == 6.0


# ---------------------------------------------------------------- regularisers and gradients


def test_jacobian_matches_finite_differences():
    field = active_field()
    x, frame, _ = samples(n=6, seed=4)
    jac = field.jacobian(x, frame).detach()
    eps = 1e-6
    for j in range(3):
        step = torch.zeros(3, dtype=torch.float64)
        step[j] = eps
        plus, minus = field._correct(x + step, frame).points, field._correct(x - step, frame).points
        torch.testing.assert_close(jac[:, :, j], ((plus - minus) / (2 * eps)).detach(), atol=1e-7, rtol=1e-6)


def test_regularizers_raw_and_weighted(flame_head):
    config = ErrorCorrectionConfig(
        **{**SMALL.__dict__, "elastic_weight": 0.5, "final_elastic_weight": None, "magnitude_weight": 3.0}
    )
    field = active_field(config)
    x, frame, _ = samples(n=8, seed=5)
    reg = field.regularizers(x, frame)
    moved = field(x, flame_head, frame).points.detach()
    elastic, magnitude = float(reg.elastic.detach()), float(reg.magnitude.detach())
    # In units of length_scale (the encoding's unit), where the paper's weights apply.
    scaled = (moved - x) / config.length_scale
    assert magnitude == pytest.approx(float(scaled.square().sum(-1).mean()), rel=1e-12)
    assert elastic == pytest.approx(float(elastic_loss(field.jacobian(x, frame)).detach()), rel=1e-12)
    assert elastic > 0 and magnitude > 0
    assert float(reg.weighted_elastic.detach()) == pytest.approx(0.5 * elastic)
    assert float(reg.weighted_magnitude.detach()) == pytest.approx(3.0 * magnitude)
    assert float(reg.total.detach()) == pytest.approx(0.5 * elastic + 3.0 * magnitude)
    # Identity field (init) and inactive field: both regularisers are 0, and backward still works.
    fresh = ErrorCorrectionField(FRAMES, SMALL).double().train()
    fresh.set_step(SMALL.start_step)
    init = fresh.regularizers(x, frame)
    assert float(init.elastic.detach()) == 0.0 and float(init.magnitude.detach()) == 0.0
    field.eval()
    off = field.regularizers(x, frame)
    assert float(off.total.detach()) == 0.0
    off.total.backward()


def test_gradients_reach_the_latent_and_the_trunk(flame_head):
    field = active_field()
    x, frame, dirs = samples(n=8, seed=6)
    frame = torch.zeros_like(frame)  # only frame 0's latent is used
    out = field(x, flame_head, frame, dirs)
    (out.points.square().sum() + out.dirs.sum() + field.regularizers(x, frame).total).backward()
    latent_grad = field.latent.weight.grad
    assert latent_grad[0].abs().sum() > 0 and latent_grad[1:].abs().sum() == 0
    for name, p in field.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    # The elastic term alone reaches the trunk too (second-order through the Jacobian).
    field.zero_grad()
    field.regularizers(x, frame).elastic.backward()
    assert field.trunk[0].weight.grad.abs().sum() > 0


def test_float32_field_on_float64_points_and_device(flame_heads, device):
    field = active_field(dtype=torch.float32).to(device)
    head = flame_heads(device)
    x, frame, dirs = samples(device=device)
    out = field(x, head, frame, dirs)
    assert out.points.dtype == torch.float64 and out.points.device == x.device
    torch.testing.assert_close(out.dirs.norm(dim=-1), torch.ones(x.shape[0], dtype=torch.float64, device=device))


def test_chain_after_the_rigid_deformer(flame_head):
    field = active_field()
    x, frame, dirs = samples(seed=7)
    rigid = RigidDeformer()(x, flame_head, frame, dirs)
    chained = DeformerChain(RigidDeformer(), field)(x, flame_head, frame, dirs)
    direct = field(rigid.points, flame_head, frame, rigid.dirs)
    torch.testing.assert_close(chained.points, direct.points, rtol=0, atol=0)
    assert not torch.allclose(chained.points, rigid.points)


def test_step_is_saved_with_the_state_dict():
    field = ErrorCorrectionField(FRAMES, SMALL)
    field.set_step(1234)
    other = ErrorCorrectionField(FRAMES, SMALL)
    other.load_state_dict(field.state_dict())
    assert other.step == 1234 and torch.equal(other.latent.weight, field.latent.weight)


# ---------------------------------------------------------------- bad input


def test_bad_input(flame_head):
    x, frame, dirs = samples()
    field = ErrorCorrectionField(2, SMALL).train()  # fewer latents than the head has frames
    field.set_step(SMALL.start_step)
    with raises_naming("frame"):
        field(x, flame_head, torch.full_like(frame, 2))
    with raises_naming("frame"):
        field.regularizers(x, 2)
    with raises_naming("frame"):
        field(x, flame_head, torch.full_like(frame, FRAMES))  # beyond the head too
    with raises_naming("x"):
        field(x[:, :2], flame_head, frame)
    with raises_naming("x"):
        field.regularizers(torch.full((2, 3), float("nan")), 0)
    with raises_naming("omega"):
        log_quaternion_to_rotation(torch.zeros(2, 4))
    with raises_naming("step"):
        field.set_step(-1)
    with raises_naming("num_frames"):
        ErrorCorrectionField(0)
    with raises_naming("latent_dim"):
        ErrorCorrectionConfig(latent_dim=0)
    with raises_naming("start_step"):
        ErrorCorrectionConfig(start_step=-1)
    with raises_naming("length_scale"):
        ErrorCorrectionConfig(length_scale=0.0)
    with raises_naming("elastic_weight"):
        ErrorCorrectionConfig(elastic_weight=-1e-4)
    with raises_naming("magnitude_weight"):
        ErrorCorrectionConfig(magnitude_weight=float("nan"))
    with raises_naming("elastic_scale"):
        ErrorCorrectionConfig(elastic_scale=0.0)
    with raises_naming("head_layers"):
        ErrorCorrectionConfig(head_layers=0)
    with raises_naming("head_dim"):
        ErrorCorrectionConfig(head_dim=0)
    with raises_naming("learning_rate_scale"):
        ErrorCorrectionConfig(learning_rate_scale=0.0)
    for final in (0.0, -1e-5, float("inf")):
        with raises_naming("final_elastic_weight"):
            ErrorCorrectionConfig(final_elastic_weight=final)
    with raises_naming("elastic_decay_steps"):
        ErrorCorrectionConfig(elastic_decay_steps=0)
    with raises_naming("step"):
        ErrorCorrectionConfig().elastic_weight_at(-1)


# ---------------------------------------------------------------- the old names


@pytest.mark.parametrize(
    ("old", "new"), [("ErrorCorrectionWarp", ErrorCorrectionField), ("WarpRegularizers", CorrectionRegularizers)]
)
def test_old_names_warn_and_are_the_new_classes(old, new):
    with pytest.warns(DeprecationWarning, match=f"renamed to {new.__name__}; this alias goes in the next release"):
        assert getattr(headfields.deformers, old) is new
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the new names do not warn
        assert getattr(headfields.deformers, new.__name__) is new
    with pytest.raises(AttributeError, match="NoSuchDeformer"):
        headfields.deformers.NoSuchDeformer  # noqa: B018
