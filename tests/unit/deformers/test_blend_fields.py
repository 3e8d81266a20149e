"""The 360° portrait's blend-field deformer: exact identity at init (and gradients past it), the displacement
re-evaluated in NumPy (normalisation, PE, both MLPs, the sum over fields) and as coefficients times basis, a fit of
a known condition-linear displacement with both field kinds, clamping outside the box, the default condition from
the head (expression and jaw pose), the regulariser by hand, dtypes and gradcheck; bad input."""

import copy
import dataclasses
import math

import numpy as np
import pytest
import torch

from headfields.deformers import BlendFieldConfig, BlendFieldDeformer
from headfields.encoders import HashGridConfig
from headfields.parametric import load_model
from headfields.synthetic import write_synthetic_flame

from helpers import raises_naming

FRAMES = 3
EXPRESSIONS = 6
CONDITION = EXPRESSIONS + 3  # expression + jaw pose
BOUNDS = torch.tensor([[-0.3, -0.4, -0.2], [0.3, 0.2, 0.4]])
GRID = HashGridConfig(levels=4, features_per_level=2, log2_table_size=10, base_resolution=2, finest_resolution=16)
SMALL_MLP = BlendFieldConfig(num_fields=4, field="mlp", mlp_hidden_dim=16, position_frequencies=3, mapping_hidden_dim=16)
SMALL_GRID = BlendFieldConfig(num_fields=4, field="hashgrid", hashgrid=GRID, mlp_hidden_dim=16, mapping_hidden_dim=16)
CONFIGS = [pytest.param(SMALL_MLP, id="mlp"), pytest.param(SMALL_GRID, id="hashgrid")]


@pytest.fixture(scope="module")
def flame():
    """``(model, heads(device))``: a synthetic FLAME model and a head of FRAMES frames with random expressions and
    jaw poses."""
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        write_synthetic_flame(folder)
        model = load_model(folder, num_shape=4, num_expression=EXPRESSIONS, dtype=torch.float64)
    g = torch.Generator().manual_seed(3)
    expression = torch.randn(FRAMES, EXPRESSIONS, generator=g, dtype=torch.float64)
    pose = torch.zeros(FRAMES, model.num_joints, 3, dtype=torch.float64)
    pose[:, model.joint_names.index("jaw"), 0] = torch.rand(FRAMES, generator=g, dtype=torch.float64) * 0.3
    cache = {}

    def heads(device="cpu"):
        device = torch.device(device)
        if device not in cache:
            cache[device] = copy.deepcopy(model).to(device)(expression=expression.to(device), pose=pose.to(device))
        return cache[device]

    return model, heads


def samples(n=12, seed=0, device="cpu", dtype=torch.float64, spread=1.0):
    """Points in the box (``spread`` > 1 reaches outside it) and random conditions."""
    g = torch.Generator().manual_seed(seed)
    lo, hi = BOUNDS.double()
    x = lo + (hi - lo) * (0.5 + spread * (torch.rand(n, 3, generator=g, dtype=torch.float64) - 0.5))
    condition = torch.randn(n, CONDITION, generator=g, dtype=torch.float64)
    return x.to(device, dtype), condition.to(device, dtype)


def random_deformer(config=SMALL_MLP, seed=0, dtype=torch.float32, **kwargs) -> BlendFieldDeformer:
    """A deformer whose basis output layer is random (non-identity)."""
    torch.manual_seed(seed)
    deformer = BlendFieldDeformer(CONDITION, BOUNDS, config, **kwargs).to(dtype)
    with torch.no_grad():
        deformer.basis_net[-1].weight.normal_(0, 0.3)
        deformer.basis_net[-1].bias.normal_(0, 0.3)
    return deformer


# ---------------------------------------------------------------- identity at init


@pytest.mark.parametrize("config", CONFIGS)
def test_identity_at_init_is_exact(flame, config, device):
    model, heads = flame
    head = heads(device)
    deformer = BlendFieldDeformer(CONDITION, BOUNDS, config, joint_names=model.joint_names).to(device)
    for dtype in (torch.float32, torch.float64):
        x, condition = samples(device=device, dtype=dtype, spread=2.0)
        assert torch.equal(deformer.displacement(x, condition), torch.zeros_like(x))
        dirs = torch.nn.functional.normalize(torch.randn(12, 3, dtype=dtype, device=device), dim=-1)
        canonical = deformer(x, head, torch.arange(12, device=device) % FRAMES, dirs)
        assert torch.equal(canonical.points, x) and canonical.points.dtype == dtype
        assert canonical.dirs is dirs and canonical.valid.all() and canonical.face is None


@pytest.mark.parametrize("config", CONFIGS)
def test_gradients_reach_the_basis_output_then_the_mapping(config):
    torch.manual_seed(0)
    deformer = BlendFieldDeformer(CONDITION, BOUNDS, config)
    x, condition = samples(dtype=torch.float32)
    target = torch.randn(12, 3, generator=torch.Generator().manual_seed(1))
    optimiser = torch.optim.SGD(deformer.parameters(), lr=0.1)

    def step():
        optimiser.zero_grad()
        (deformer.displacement(x, condition) - target).square().sum().backward()

    step()
    output = deformer.basis_net[-1]
    assert output.weight.grad.abs().sum() > 0 and output.bias.grad.abs().sum() > 0
    mapping = [p.grad for p in deformer.mapping.parameters()]
    assert all(g is None or g.abs().sum() == 0 for g in mapping)  # the basis is zero: no signal to c yet
    optimiser.step()
    step()
    assert all(p.grad.abs().sum() > 0 for p in deformer.mapping.parameters())


# ---------------------------------------------------------------- independent evaluations


def numpy_mlp(sequential: torch.nn.Sequential, x: np.ndarray) -> np.ndarray:
    linears = [m for m in sequential if isinstance(m, torch.nn.Linear)]
    for i, layer in enumerate(linears):
        x = x @ layer.weight.detach().cpu().double().numpy().T + layer.bias.detach().cpu().double().numpy()
        if i < len(linears) - 1:
            x = np.maximum(x, 0.0)
    return x


def numpy_displacement(deformer: BlendFieldDeformer, x: np.ndarray, condition: np.ndarray) -> np.ndarray:
    """``Σ_k c_k B_k(x)`` for the PE field, from the module's weights, point by point and field by field."""
    lo, hi = BOUNDS.double().numpy()
    frequencies = deformer.config.position_frequencies
    out = np.zeros_like(x)
    for n in range(x.shape[0]):
        u = np.clip((x[n] - lo) / (hi - lo), 0.0, 1.0)
        encoded = [u]
        for f in range(frequencies):
            encoded += [np.sin(2.0**f * math.pi * u), np.cos(2.0**f * math.pi * u)]
        basis = numpy_mlp(deformer.basis_net, np.concatenate(encoded)[None])[0].reshape(deformer.num_fields, 3)
        coefficients = numpy_mlp(deformer.mapping, condition[n][None])[0]
        for k in range(deformer.num_fields):
            out[n] += coefficients[k] * basis[k]
    return out


def test_displacement_matches_a_numpy_evaluation():
    deformer = random_deformer(dtype=torch.float64)
    x, condition = samples(spread=1.5)  # some points outside the box: clamped
    expected = numpy_displacement(deformer, x.numpy(), condition.numpy())
    np.testing.assert_allclose(deformer.displacement(x, condition).detach().numpy(), expected, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("config", CONFIGS)
def test_displacement_is_coefficients_times_basis(config, device):
    deformer = random_deformer(config).to(device)
    x, condition = samples(device=device, dtype=torch.float32)
    coefficients, basis = deformer.coefficients(condition), deformer.basis(x)
    assert coefficients.shape == (12, 4) and basis.shape == (12, 4, 3)
    # The hash-grid field's basis: its MLP (in NumPy) on the hash grid's features of the normalised points.
    if config.field == "hashgrid":
        lo, hi = BOUNDS.to(device)
        features = deformer.encoding(((x - lo) / (hi - lo)).clamp(0, 1)).detach().cpu().double().numpy()
        expected = numpy_mlp(deformer.basis_net, features).reshape(12, 4, 3)
        np.testing.assert_allclose(basis.detach().cpu().numpy(), expected, rtol=1e-4, atol=1e-6)
    expected = torch.einsum("nk,nkd->nd", coefficients, basis)
    torch.testing.assert_close(deformer.displacement(x, condition), expected)
    assert float(expected.detach().abs().max()) > 1e-3  # not the identity


@pytest.fixture
def one_thread():
    """Tiny batches gain nothing from threads, and on a busy machine extra threads slow each step tenfold."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("config", CONFIGS)
def test_fits_a_displacement_linear_in_the_condition(config, one_thread):
    """``d(x, c) = c_0 v(x)`` with a smooth ``v``: the mapping must pick out ``c_0`` and the basis learn ``v``.
    Fresh samples every step; the error is measured on other points and conditions."""

    def truth(x, condition):
        v = torch.stack([0.05 + 0.1 * x[:, 1], -0.05 * torch.ones_like(x[:, 0]), 0.1 * x[:, 0]], dim=-1)
        return condition[:, :1] * v

    torch.manual_seed(0)
    deformer = BlendFieldDeformer(CONDITION, BOUNDS, config)
    optimiser = torch.optim.Adam(deformer.parameters(), lr=1e-2)
    steps, batch = 200, 128
    x, condition = samples(n=steps * batch, seed=4, dtype=torch.float32)
    x, condition = x.view(steps, batch, 3), condition.clamp(-1.5, 1.5).view(steps, batch, CONDITION)
    for step in range(steps):
        optimiser.zero_grad()
        (deformer.displacement(x[step], condition[step]) - truth(x[step], condition[step])).square().mean().backward()
        optimiser.step()
    x_test, condition_test = samples(n=256, seed=5, dtype=torch.float32)
    condition_test = condition_test.clamp(-1.5, 1.5)
    error = (deformer.displacement(x_test, condition_test) - truth(x_test, condition_test)).detach().norm(dim=-1)
    scale = truth(x_test, condition_test).norm(dim=-1).mean()
    assert float(error.mean()) < 0.08 * float(scale), (float(error.mean()), float(scale))  # measured: 3-5 %


# ---------------------------------------------------------------- outside the box


@pytest.mark.parametrize("config", CONFIGS)
def test_points_outside_the_box_are_clamped_onto_it(config):
    deformer = random_deformer(config)
    lo, hi = BOUNDS
    x = torch.tensor([[-1.0, 0.0, 0.1], [0.1, 2.0, -5.0], [0.9, -0.9, 0.9]], requires_grad=True)
    clamped = torch.maximum(torch.minimum(x.detach(), hi), lo)
    torch.testing.assert_close(deformer.basis(x), deformer.basis(clamped), rtol=0, atol=0)
    torch.testing.assert_close(deformer.normalize(x), (clamped - lo) / (hi - lo))
    # No gradient along a clamped axis; the free axes of the first two points still move the fields.
    deformer.basis(x).sum().backward()
    outside = (x.detach() < lo) | (x.detach() > hi)
    assert torch.equal(x.grad[outside], torch.zeros_like(x.grad[outside]))
    assert x.grad[~outside].abs().min() > 0


@pytest.mark.parametrize("config", CONFIGS)
def test_outside_identity_leaves_points_outside_the_box_in_place(config, flame):
    model, heads = flame
    head = heads()
    clamping = random_deformer(config)
    deformer = random_deformer(dataclasses.replace(config, outside="identity"))
    deformer.load_state_dict(clamping.state_dict())  # the same networks
    lo, hi = BOUNDS
    x = torch.tensor([[-1.0, 0.0, 0.1], [0.1, 0.0, 0.1], [0.1, 2.0, -5.0], [0.2, -0.3, 0.3]], dtype=torch.float64)
    condition = torch.randn(4, CONDITION, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    frame = torch.tensor([0, 1, 2, 1])
    out = deformer(x, head, frame, condition=condition).points
    inside = ((x >= lo) & (x <= hi)).all(dim=-1)
    assert inside.tolist() == [False, True, False, True]
    torch.testing.assert_close(out[~inside], x[~inside], rtol=0, atol=0)
    torch.testing.assert_close(out[inside], x[inside] + clamping.displacement(x[inside], condition[inside]))
    assert (out[inside] - x[inside]).abs().min() > 0  # the random basis moves the points inside
    # Near a face the displacement fades: x = 0.28 is 1/3 of the taper (0.1 of 0.6) from the face at 0.3,
    # so the smoothstep weight is t^2 (3 - 2t) at t = 1/3, i.e. 7/27.
    near = torch.tensor([[0.28, 0.0, 0.1]], dtype=torch.float64)
    faded = deformer(near, head, torch.tensor([0]), condition=condition[:1]).points
    torch.testing.assert_close(faded, near + 7 / 27 * clamping.displacement(near, condition[:1]))


@pytest.mark.parametrize("config", CONFIGS)
def test_on_cuda_s_paths_outside_identity_reads_nothing_back(config, flame, host_sync_spy):
    """On CUDA's paths the networks see every point (the window is 0 outside the box) and the mapping every frame of
    the head, read back nowhere: points outside stay exactly, those inside move by the displacement times the
    window, with the head's condition (expression and jaw pose) of each point's frame."""
    from headfields.checks import trusted_values
    from headfields.device_paths import cuda_paths

    model, heads = flame
    head, jaw = heads(), model.joint_names.index("jaw")
    clamping = random_deformer(config, joint_names=model.joint_names)
    deformer = random_deformer(dataclasses.replace(config, outside="identity"), joint_names=model.joint_names)
    deformer.load_state_dict(clamping.state_dict())  # the same networks
    x = torch.tensor(
        [[-1.0, 0.0, 0.1], [0.1, 0.0, 0.1], [0.1, 2.0, -5.0], [0.2, -0.3, 0.3], [0.28, 0.0, 0.1]], dtype=torch.float64
    )
    frame = torch.tensor([0, 1, 2, 1, 2])
    with cuda_paths(), trusted_values(), host_sync_spy() as spy:
        out = deformer(x, head, frame).points
    assert not spy.reads and not spy.copies, spy.report()
    condition = torch.cat([head.expression[frame], head.pose[frame, jaw]], dim=-1)
    window = torch.tensor([0.0, 1.0, 0.0, 1.0, 7 / 27], dtype=torch.float64)  # the last: a third of the taper in
    torch.testing.assert_close(out[[0, 2]], x[[0, 2]], rtol=0, atol=0)
    torch.testing.assert_close(out, x + window[:, None] * clamping.displacement(x, condition))
    torch.testing.assert_close(out, deformer(x, head, frame).points)  # the CPU's own paths


# ---------------------------------------------------------------- the head's condition


def test_forward_defaults_to_expression_and_jaw_pose(flame, device):
    model, heads = flame
    head = heads(device)
    jaw = model.joint_names.index("jaw")
    deformer = random_deformer(dtype=torch.float64, joint_names=model.joint_names).to(device)
    x, condition = samples(device=device)
    frame = torch.tensor([2, 0, 1] * 4, device=device)
    expected = x + deformer.displacement(x, torch.cat([head.expression[frame], head.pose[frame, jaw]], dim=-1))
    # The mapping runs once per frame there (rounding may differ from a per-sample mapping).
    torch.testing.assert_close(deformer(x, head, frame).points, expected, rtol=0, atol=1e-14)
    # An explicit condition overrides the head.
    torch.testing.assert_close(deformer(x, head, frame, condition=condition).points, x + deformer.displacement(x, condition))
    # Without joint names the jaw is unknown: a condition is needed.
    with raises_naming("condition"):
        random_deformer(dtype=torch.float64).to(device)(x, head, frame)
    # A width other than E + 3 needs one too.
    other = BlendFieldDeformer(CONDITION + 1, BOUNDS, SMALL_MLP, joint_names=model.joint_names).to(device)
    with raises_naming("condition"):
        other(x, head, frame)


def test_the_jaw_pose_moves_the_points(flame):
    model, heads = flame
    head = heads()
    deformer = random_deformer(dtype=torch.float64, joint_names=model.joint_names)
    x, _ = samples()
    frame = torch.zeros(12, dtype=torch.long)
    base = deformer.head_condition(head, frame)
    jaw = base.clone()
    jaw[:, EXPRESSIONS:] += 0.2  # only the jaw pose changes
    assert not torch.allclose(deformer.displacement(x, base), deformer.displacement(x, jaw))


# ---------------------------------------------------------------- regulariser, dtypes, derivatives


def test_regularizer_by_hand():
    deformer = BlendFieldDeformer(CONDITION, BOUNDS, BlendFieldConfig(field="mlp", magnitude_weight=0.5))
    d = torch.tensor([[3.0, 4.0, 0.0], [0.0, 0.0, 1.0]], requires_grad=True)
    value = deformer.regularizer(d)
    assert float(value.detach()) == pytest.approx(0.5 * (25.0 + 1.0) / 2)
    value.backward()
    torch.testing.assert_close(d.grad, 0.5 * 2 * d.detach() / 2)
    assert float(deformer.regularizer(torch.zeros(0, 3))) == 0.0
    assert BlendFieldConfig().magnitude_weight == 1e-2


def test_float32_module_on_float64_inputs():
    reference = random_deformer(dtype=torch.float64)
    deformer = copy.deepcopy(reference).float()
    x, condition = samples()
    out = deformer.displacement(x, condition)
    assert out.dtype == torch.float64
    torch.testing.assert_close(out, reference.displacement(x, condition), atol=1e-5, rtol=1e-5)
    grid = random_deformer(SMALL_GRID)  # the hash grid stays float32; float64 points still work
    assert grid.displacement(x, condition).dtype == torch.float64


def test_gradcheck_in_points_and_condition():
    deformer = random_deformer(dtype=torch.float64)
    x, condition = samples(n=5, seed=7)
    x.requires_grad_(True)
    condition.requires_grad_(True)
    assert torch.autograd.gradcheck(deformer.displacement, (x, condition))


# ---------------------------------------------------------------- bad input


def test_bad_input(flame):
    model, heads = flame
    head = heads()
    deformer = random_deformer(dtype=torch.float64, joint_names=model.joint_names)
    x, condition = samples()
    with raises_naming("x"):
        deformer.displacement(x[:, :2], condition)
    with raises_naming("x"):
        deformer.basis(torch.full((2, 3), math.nan, dtype=torch.float64))
    with raises_naming("condition"):
        deformer.displacement(x, condition[:5])
    with raises_naming("condition"):
        deformer.coefficients(condition[:, :4])
    with raises_naming("condition"):
        deformer(x, head, 0, condition=condition[:, :4])
    with raises_naming("frame"):
        deformer(x, head, FRAMES)
    with raises_naming("displacement"):
        deformer.regularizer(x[:, :2])
    with raises_naming("condition_dim"):
        BlendFieldDeformer(0, BOUNDS)
    with raises_naming("bounds"):
        BlendFieldDeformer(CONDITION, BOUNDS[:, :2])
    with raises_naming("bounds"):
        BlendFieldDeformer(CONDITION, BOUNDS.flip(0))
    with raises_naming("bounds"):
        BlendFieldDeformer(CONDITION, torch.full((2, 3), math.nan))
    with raises_naming("joint_names"):
        BlendFieldDeformer(CONDITION, BOUNDS, joint_names=["global", "neck"])
    for name, value in [
        ("num_fields", 0),
        ("field", "pe"),
        ("hashgrid", None),
        ("mlp_hidden_dim", 0),
        ("mlp_layers", -1),
        ("position_frequencies", -1),
        ("mapping_hidden_dim", 0),
        ("mapping_layers", -1),
        ("jaw_joint", 3),
        ("magnitude_weight", -1.0),
        ("magnitude_weight", math.inf),
        ("outside", "zero"),
    ]:
        with raises_naming(name):
            BlendFieldConfig(**{name: value})
