"""MonoNPHM's hyper-dimensional backward deformation: exact identity at init (and gradients past it), the network
re-evaluated layer by layer in NumPy (skip connection, Softplus β, PE), second derivatives (gradgradcheck), the
regularisers by hand, the default condition from the head; root finding against an affine map's closed-form
inverse and to 1e-8 on a random network, implicit gradients against finite differences (gradcheck), never-NaN
failures; bad input."""

import copy
import dataclasses
import math

import numpy as np
import pytest
import torch
from torch.func import functional_call

from headfields.backends.cpu import row_blocks
from headfields.deformers import (
    DeformerChain,
    HyperDeformation,
    HyperDeformer,
    HyperDeformerConfig,
    RigidDeformer,
    find_preimage,
)
from headfields.deformers import hyper as hyper_module
from headfields.parametric import load_model
from headfields.synthetic import write_synthetic_flame

from helpers import raises_naming

FRAMES = 3
EXPRESSIONS = 10
SMALL = HyperDeformerConfig(hidden_dim=16, hidden_layers=3, skip_layer=2, beta=10.0, hyper_dim=2, hyper_init_std=0.0)
TINY = HyperDeformerConfig(hidden_dim=16, hidden_layers=2, skip_layer=1, beta=10.0, hyper_dim=2)  # "2 x 16"


@pytest.fixture(scope="module")
def flame_heads(tmp_path_factory):
    """``heads(device)``: a synthetic FLAME head with FRAMES frames and random expressions on ``device``."""
    folder = tmp_path_factory.mktemp("flame")
    write_synthetic_flame(folder)
    model = load_model(folder, num_shape=10, num_expression=EXPRESSIONS, dtype=torch.float64)
    expression = torch.randn(FRAMES, EXPRESSIONS, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    cache = {}

    def heads(device="cpu"):
        device = torch.device(device)
        if device not in cache:
            cache[device] = copy.deepcopy(model).to(device)(expression=expression.to(device))
        return cache[device]

    return heads


@pytest.fixture
def flame_head(flame_heads):
    return flame_heads("cpu")


def samples(n=12, c=EXPRESSIONS, seed=0, device="cpu", dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    x = (torch.rand(n, 3, generator=g, dtype=torch.float64) - 0.5) * 0.4
    condition = torch.randn(n, c, generator=g, dtype=torch.float64)
    return x.to(device, dtype), condition.to(device, dtype)


def random_deformer(config=SMALL, condition_dim=EXPRESSIONS, scale=0.3, seed=0, dtype=torch.float64) -> HyperDeformer:
    """A deformer whose output layer is random (non-identity), scaled by ``scale``."""
    torch.manual_seed(seed)
    deformer = HyperDeformer(condition_dim, config).to(dtype)
    with torch.no_grad():
        deformer.output.weight.normal_(0, scale)
        deformer.output.bias.normal_(0, scale)
    return deformer


# ---------------------------------------------------------------- identity at init


def test_identity_at_init_is_exact(flame_heads, device):
    deformer = HyperDeformer(EXPRESSIONS, SMALL).to(device)
    x, condition = samples(device=device, dtype=torch.float32)
    out = deformer.deform(x, condition)
    assert torch.equal(out.offset, torch.zeros_like(x)) and torch.equal(out.hyper, torch.zeros(12, 2, device=device))
    assert torch.equal(out.points, torch.cat([x, torch.zeros(12, 2, device=device)], dim=1))
    head = flame_heads(device)
    x64 = x.double()
    dirs = torch.nn.functional.normalize(torch.randn(12, 3, dtype=torch.float64, device=device), dim=-1)
    canonical = deformer(x64, head, torch.arange(12, device=device) % FRAMES, dirs)
    assert torch.equal(canonical.points, torch.cat([x64, torch.zeros_like(x64[:, :2])], dim=1))
    assert canonical.points.dtype == torch.float64 and canonical.dirs is dirs
    assert canonical.valid.all() and canonical.face is None


def test_default_hyper_head_starts_near_zero_not_at_zero():
    """HyperNeRF's init: the offsets are exactly zero, the hyper coordinates tiny but not zero, so a canonical field
    whose hyper weights start at zero still gets (and gives) a gradient."""
    torch.manual_seed(0)
    deformer = HyperDeformer(EXPRESSIONS, dataclasses.replace(SMALL, hyper_init_std=1e-5))
    x, condition = samples(dtype=torch.float32)
    out = deformer.deform(x, condition)
    assert torch.equal(out.offset, torch.zeros_like(x))
    assert 0 < float(out.hyper.detach().abs().max()) < 1e-3
    assert HyperDeformerConfig().hyper_init_std == 1e-5


def test_gradients_reach_the_output_then_the_trunk():
    deformer = HyperDeformer(EXPRESSIONS, SMALL).double()
    x, condition = samples()
    target = torch.randn(12, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    optimiser = torch.optim.SGD(deformer.parameters(), lr=0.1)

    def step():
        optimiser.zero_grad()
        (
            deformer.deform(x, condition).points - torch.cat([x, torch.zeros(12, 2, dtype=x.dtype)], 1) - target
        ).square().sum().backward()

    step()
    assert deformer.output.weight.grad.abs().sum() > 0 and deformer.output.bias.grad.abs().sum() > 0
    assert all(layer.weight.grad.abs().sum() == 0 for layer in deformer.layers)  # zero output layer: no signal yet
    optimiser.step()
    step()
    assert all(layer.weight.grad.abs().sum() > 0 for layer in deformer.layers)


# ---------------------------------------------------------------- the network in NumPy


def numpy_deformer(deformer: HyperDeformer, x: np.ndarray, condition: np.ndarray) -> np.ndarray:
    """``[Δx, h]`` evaluated layer by layer from the module's weights."""
    config = deformer.config
    p = {k: v.detach().numpy() for k, v in deformer.state_dict().items()}
    bands = [x]
    for k in range(config.position_frequencies):
        bands += [np.sin(2**k * math.pi * x), np.cos(2**k * math.pi * x)]
    features = np.concatenate(bands + [condition], axis=1)
    h = features
    for i in range(config.hidden_layers):
        if i == config.skip_layer:
            h = np.concatenate([h, features], axis=1)
        z = h @ p[f"layers.{i}.weight"].T + p[f"layers.{i}.bias"]
        h = np.logaddexp(0.0, config.beta * z) / config.beta  # softplus_β(z) = log(1 + exp(β z)) / β
    return h @ p["output.weight"].T + p["output.bias"]


@pytest.mark.parametrize(
    "config",
    [
        SMALL,
        HyperDeformerConfig(hidden_dim=12, hidden_layers=4, skip_layer=1, beta=100.0, hyper_dim=3, position_frequencies=2),
        HyperDeformerConfig(hidden_dim=8, hidden_layers=2, skip_layer=None, beta=3.0, hyper_dim=0),
    ],
)
def test_network_matches_a_numpy_evaluation(config):
    deformer = random_deformer(config, condition_dim=4)
    x, condition = samples(n=9, c=4, seed=2)
    out = deformer.deform(x, condition)
    expected = numpy_deformer(deformer, x.numpy(), condition.numpy())
    # torch's Softplus is linear above β z = 20: log(1 + e^-20) / β < 2.1e-9 / β off the exact curve.
    np.testing.assert_allclose(out.offset.detach().numpy(), expected[:, :3], atol=1e-10)
    np.testing.assert_allclose(out.hyper.detach().numpy(), expected[:, 3:], atol=1e-10)
    np.testing.assert_allclose(
        out.points.detach().numpy(), np.concatenate([x.numpy() + expected[:, :3], expected[:, 3:]], 1), atol=1e-10
    )
    assert out.hyper.shape == (9, config.hyper_dim) and deformer.out_dim == 3 + config.hyper_dim


@pytest.mark.parametrize(
    "config",
    [SMALL, HyperDeformerConfig(hidden_dim=8, hidden_layers=0, skip_layer=None, hyper_dim=2)],
    ids=["skip", "no hidden layer"],
)
def test_blocks_without_autograd_match_a_numpy_evaluation(monkeypatch, config):
    # Without autograd the CPU runs blocks of points through every layer, each Softplus in place: blocks of 4 over 9
    # points (a last block of 1), with a condition per point and with shared rows and their index.
    monkeypatch.setattr(row_blocks, "ROW_BLOCK", 4)
    calls = []
    monkeypatch.setattr(hyper_module, "row_blocks", lambda *args: calls.append(1) or row_blocks.row_blocks(*args))
    deformer = random_deformer(config, condition_dim=4)
    x, condition = samples(n=9, c=4, seed=2)
    rows, index = condition[:3], torch.tensor([2, 0, 1, 1, 2, 0, 0, 2, 1])
    given = [t.clone() for t in (x, condition, index)]
    with torch.no_grad():
        per_point, shared = deformer.deform(x, condition), deformer.deform(x, rows, index)
    assert len(calls) == 2
    assert all(torch.equal(a, b) for a, b in zip(given, (x, condition, index), strict=True))  # the Softplus wrote its own
    for out, given in ((per_point, condition), (shared, rows[index])):
        expected = numpy_deformer(deformer, x.numpy(), given.numpy())
        np.testing.assert_allclose(out.offset.numpy(), expected[:, :3], atol=1e-10)
        np.testing.assert_allclose(out.hyper.numpy(), expected[:, 3:], atol=1e-10)


def test_default_config_is_mononphm():
    deformer = HyperDeformer(116)  # 100-d expression + 16-d identity codes
    assert [(layer.in_features, layer.out_features) for layer in deformer.layers] == [
        (119, 400),
        (400, 400),
        (400, 400),
        (519, 400),  # skip at layer 3: the input again
        (400, 400),
        (400, 400),
    ]
    assert deformer.activation.beta == 100.0 and deformer.output.out_features == 5
    assert (deformer.config.offset_weight, deformer.config.hyper_weight) == (0.0025, 0.05)


def test_twice_differentiable():
    deformer = random_deformer(TINY, condition_dim=2)
    x, condition = samples(n=3, c=2, seed=3)
    x.requires_grad_(True)
    condition.requires_grad_(True)

    def fn(x, condition):
        return deformer.deform(x, condition).points

    assert torch.autograd.gradcheck(fn, (x, condition))
    assert torch.autograd.gradgradcheck(fn, (x, condition))
    # An SDF through the deformation, its gradient kept in the graph (NeuS): the weights get a second-order signal.
    points = deformer.deform(x, condition).points
    sdf = points.square().sum(-1).sqrt() - 0.1
    (grad,) = torch.autograd.grad(sdf.sum(), x, create_graph=True)
    (grad.norm(dim=-1) - 1).square().sum().backward()
    assert deformer.layers[0].weight.grad.abs().sum() > 0


@pytest.mark.parametrize(
    "config",
    [
        SMALL,
        HyperDeformerConfig(hidden_dim=8, hidden_layers=0, skip_layer=None, hyper_dim=2),
        dataclasses.replace(TINY, position_frequencies=2),
    ],
    ids=["skip", "no hidden layer", "encoded"],
)
def test_shared_condition_rows_are_the_per_point_condition(config):
    """``deform(x, rows, index)`` is ``deform(x, rows[index])``: values, first derivatives and the second-order
    signal an SDF's eikonal term sends through the deformation (to the weights and to the rows)."""
    deformer = random_deformer(config, condition_dim=4)
    x, _ = samples(n=10, seed=5)
    rows = torch.randn(3, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(6))
    index = torch.tensor([2, 0, 1, 1, 2, 0, 0, 2, 1, 2])

    def eikonal(shared: bool) -> list[torch.Tensor]:
        deformer.zero_grad()
        q, r = x.clone().requires_grad_(True), rows.clone().requires_grad_(True)
        points = (deformer.deform(q, r, index) if shared else deformer.deform(q, r[index])).points
        sdf = points[:, :3].square().sum(-1).sqrt() + points[:, 3:].sum(-1) - 0.1
        (grad,) = torch.autograd.grad(sdf.sum(), q, create_graph=True)
        ((grad.norm(dim=-1) - 1).square().sum() + sdf.sum()).backward()
        return [points.detach(), grad.detach(), r.grad] + [p.grad.clone() for p in deformer.parameters()]

    for shared, per_point in zip(eikonal(True), eikonal(False), strict=True):
        torch.testing.assert_close(shared, per_point, rtol=1e-12, atol=1e-14)
    q, r = x[:4].clone().requires_grad_(True), rows.clone().requires_grad_(True)
    assert torch.autograd.gradgradcheck(lambda q, r: deformer.deform(q, r, index[:4]).points, (q, r))


def test_shared_condition_rows_leave_the_per_point_products_to_the_position():
    """With rows per frame, no product runs over points by the condition's columns: the multiply-adds counted by
    torch's FlopCounterMode are the analytic ones (SMALL: layers 3+C -> 16, 16 -> 16, skip 16+3+C -> 16, 16 -> 5)."""
    from torch.utils.flop_counter import FlopCounterMode

    n, u, c, h = 1000, 4, EXPRESSIONS, SMALL.hidden_dim
    deformer = random_deformer(SMALL, condition_dim=c)
    x, _ = samples(n=n, c=c)
    rows = torch.randn(u, c, dtype=torch.float64)
    index = torch.arange(n) % u

    def flops(*args) -> int:
        with FlopCounterMode(display=False) as counter:
            deformer.deform(x, *args)
        return counter.get_total_flops()

    trunk = h * h + h * (3 + 2)  # layer 1 and the output layer
    assert flops(rows[index]) == 2 * n * ((3 + c) * h + trunk + (h + 3 + c) * h)
    assert flops(rows, index) == 2 * n * (3 * h + trunk + (h + 3) * h) + 2 * u * (c * h + c * h)


# ---------------------------------------------------------------- regularisers and the Deformer interface


def test_regularizers_by_hand():
    config = HyperDeformerConfig(**{**SMALL.__dict__, "offset_weight": 0.5, "hyper_weight": 3.0})
    deformer = random_deformer(config)
    x, condition = samples(n=7, seed=4)
    deformation = deformer.deform(x, condition)
    reg = deformer.regularizers(deformation)
    raw = numpy_deformer(deformer, x.numpy(), condition.numpy())
    offset = float(np.mean(np.sum(raw[:, :3] ** 2, axis=1)))
    hyper = float(np.mean(np.sum(raw[:, 3:] ** 2, axis=1)))
    assert offset > 0 and hyper > 0
    assert float(reg.offset.detach()) == pytest.approx(offset, rel=1e-9)
    assert float(reg.hyper.detach()) == pytest.approx(hyper, rel=1e-9)
    assert float(reg.total.detach()) == pytest.approx(0.5 * offset + 3.0 * hyper, rel=1e-9)
    reg.total.backward()
    assert deformer.output.weight.grad.abs().sum() > 0
    # No samples, no hyper-dimensions: zeros, and backward still works.
    empty = deformer.regularizers(deformer.deform(x[:0], condition[:0]))
    assert float(empty.total.detach()) == 0.0
    empty.total.backward()
    plain = random_deformer(HyperDeformerConfig(hidden_dim=8, hidden_layers=2, skip_layer=1, hyper_dim=0))
    assert float(plain.regularizers(plain.deform(x, condition)).hyper.detach()) == 0.0


def test_forward_defaults_to_the_head_expression(flame_heads, device):
    head = flame_heads(device)
    deformer = random_deformer().to(device)
    x, _ = samples(device=device)
    frame = torch.tensor([2, 0, 1] * 4, device=device)
    out = deformer(x, head, frame)
    # The head's expression rows, read once per frame: exactly deform's shared rows, per point to rounding.
    torch.testing.assert_close(out.points, deformer.deform(x, head.expression, frame).points, rtol=0, atol=0)
    torch.testing.assert_close(out.points, deformer.deform(x, head.expression[frame]).points, rtol=0, atol=1e-14)
    # Frames differ only by expression, so their canonical points differ.
    assert not torch.allclose(deformer(x, head, 0).points, deformer(x, head, 1).points)
    # An explicit condition overrides the head; a deformer of another width needs one.
    other = random_deformer(condition_dim=3).to(device)
    _, condition = samples(c=3, device=device)
    torch.testing.assert_close(other(x, head, frame, condition=condition).points, other.deform(x, condition).points)
    with raises_naming("condition"):
        other(x, head, frame)


def test_chain_after_the_rigid_deformer(flame_head):
    deformer = random_deformer()
    x, _ = samples(seed=5)
    frame = torch.arange(12) % FRAMES
    rigid = RigidDeformer()(x, flame_head, frame)
    chained = DeformerChain(RigidDeformer(), deformer)(x, flame_head, frame)
    torch.testing.assert_close(chained.points, deformer(rigid.points, flame_head, frame).points, rtol=0, atol=0)
    assert chained.points.shape == (12, 5)


def test_float32_deformer_on_float64_points():
    reference = random_deformer()
    deformer = copy.deepcopy(reference).float()
    x, condition = samples()
    out = deformer.deform(x, condition)
    assert out.points.dtype == torch.float64
    torch.testing.assert_close(out.points, reference.deform(x, condition).points, atol=1e-5, rtol=1e-5)


# ---------------------------------------------------------------- root finding


def test_preimage_of_an_affine_map_is_the_closed_form(device):
    g = torch.Generator().manual_seed(6)
    m = (0.4 * torch.randn(3, 3, generator=g, dtype=torch.float64)).to(device).requires_grad_(True)
    b = torch.randn(3, generator=g, dtype=torch.float64).to(device).requires_grad_(True)
    a = torch.randn(20, 3, generator=g, dtype=torch.float64).to(device).requires_grad_(True)
    result = find_preimage(lambda x: x @ m.T + b, a, tolerance=1e-12)
    inverse = torch.linalg.inv(torch.eye(3, dtype=torch.float64, device=device) + m.detach())
    expected = (a.detach() - b.detach()) @ inverse.T
    torch.testing.assert_close(result.points, expected, atol=1e-12, rtol=0)
    assert result.converged.all() and (result.residual <= 1e-12).all()
    # Implicit gradients against the closed form's: x = (I + M)^-1 (a - b).
    weights = torch.randn(20, 3, generator=g, dtype=torch.float64).to(device)
    grads = torch.autograd.grad((result.points * weights).sum(), (a, b, m))
    closed = torch.linalg.solve(torch.eye(3, dtype=torch.float64, device=device) + m, (a - b).T).T
    expected_grads = torch.autograd.grad((closed * weights).sum(), (a, b, m))
    for got, want in zip(grads, expected_grads, strict=True):
        torch.testing.assert_close(got, want, atol=1e-10, rtol=1e-10)


def test_preimage_of_a_random_network_to_1e_8(device):
    deformer = random_deformer(scale=0.05).to(device)
    targets, condition = samples(n=32, seed=7, device=device)
    offsets = deformer.deform(targets, condition).offset
    assert offsets.abs().max() > 1e-2  # a real deformation, not the identity
    result = find_preimage(lambda x: deformer.deform(x, condition).offset, targets, tolerance=1e-10)
    assert result.converged.all()
    check = result.points + deformer.deform(result.points, condition).offset - targets
    assert check.norm(dim=-1).max() < 1e-8
    torch.testing.assert_close(result.residual, check.norm(dim=-1).detach(), atol=1e-12, rtol=0)
    # A far start converges too (damped steps).
    far = find_preimage(lambda x: deformer.deform(x, condition).offset, targets, init=targets + 0.3, tolerance=1e-10)
    assert far.converged.all()
    torch.testing.assert_close(far.points, result.points, atol=1e-9, rtol=0)


def test_preimage_float32():
    deformer = random_deformer(scale=0.05, dtype=torch.float32)
    targets, condition = samples(n=16, seed=8, dtype=torch.float32)
    result = find_preimage(lambda x: deformer.deform(x, condition).offset, targets, tolerance=1e-5)
    assert result.points.dtype == torch.float32 and result.converged.all()
    check = result.points + deformer.deform(result.points, condition).offset - targets
    assert check.norm(dim=-1).max() < 1e-5


def test_implicit_gradients_match_finite_differences():
    deformer = random_deformer(TINY, condition_dim=2, scale=0.2, seed=9)
    deformer.forward = deformer.deform  # functional_call runs forward: point it at deform for this test
    targets, condition = samples(n=2, c=2, seed=9)
    base = deformer.layers[1].weight.detach().clone()  # a trunk weight: reached only through the network
    mask = torch.zeros_like(base)
    mask[0, 5] = 1.0

    def solve(targets, condition, entry):
        params = {"layers.1.weight": base * (1 - mask) + entry * mask}
        result = find_preimage(
            lambda x: functional_call(deformer, params, (x, condition), strict=False).offset, targets, tolerance=1e-13
        )
        assert result.converged.all()
        return result.points

    entry = base[0, 5].reshape(1).clone()
    inputs = tuple(t.requires_grad_(True) for t in (targets, condition, entry))
    assert torch.autograd.gradcheck(solve, inputs, eps=1e-6, atol=1e-6, rtol=1e-5)
    # The weight really moves the solution (so its check above is not of a zero).
    (grad,) = torch.autograd.grad(solve(targets, condition, entry).sum(), entry)
    assert grad.abs().item() > 0.1


def test_failures_are_flagged_never_nan():
    targets = torch.tensor([[0.5, 0.0, 0.0], [0.0, 0.0, 0.0], [2.0, 0.0, 0.0]], dtype=torch.float64, requires_grad=True)

    # x + offset(x) = 0 everywhere: no preimage except of 0, a singular Jacobian.
    result = find_preimage(lambda x: -x, targets)
    assert result.converged.tolist() == [False, True, False]
    assert torch.isfinite(result.points).all() and torch.isfinite(result.residual).all()
    (grad,) = torch.autograd.grad(result.points.sum(), targets)
    assert torch.isfinite(grad).all()

    # The offset is NaN beyond |x| = 1 (outside its domain): a target out there has no reachable preimage.
    def partial(x):
        assert torch.isfinite(x).all()  # the solver only ever evaluates finite points
        return torch.where(x.norm(dim=-1, keepdim=True) > 1, torch.full_like(x, math.nan), 0.1 * x**3)

    result = find_preimage(partial, targets, tolerance=1e-10)
    assert result.converged.tolist() == [True, True, False]
    assert torch.isfinite(result.points).all() and math.isinf(float(result.residual[2]))
    (grad,) = torch.autograd.grad(result.points[:2].sum(), targets)
    assert torch.isfinite(grad).all()
    # x + 0.1 x^3 = 0.5 on the axis (Cardano's real root, by bisection in NumPy).
    lo, hi = 0.0, 0.5
    for _ in range(200):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if mid + 0.1 * mid**3 < 0.5 else (lo, mid)
    assert float(result.points[0, 0].detach()) == pytest.approx(lo, abs=1e-10)  # residual <= 1e-10, slope > 1

    # No iterations: only targets that are already fixed points count as converged.
    zero = find_preimage(lambda x: 0.1 * x, targets, iterations=0)
    assert zero.converged.tolist() == [False, True, False] and torch.equal(zero.points, targets.detach())


# ---------------------------------------------------------------- bad input


def test_bad_input(flame_head):
    deformer = random_deformer()
    x, condition = samples()
    with raises_naming("x"):
        deformer.deform(x[:, :2], condition)
    with raises_naming("x"):
        deformer.deform(torch.full((2, 3), math.nan, dtype=torch.float64), condition[:2])
    with raises_naming("condition"):
        deformer.deform(x, condition[:, :3])
    with raises_naming("condition"):
        deformer.deform(x, condition[:5])
    with raises_naming("index"):
        deformer.deform(x, condition[:3], torch.full((len(x),), 3))
    with raises_naming("index"):
        deformer.deform(x, condition[:3], torch.zeros(len(x) - 1, dtype=torch.long))
    with raises_naming("index"):
        deformer.deform(x, condition[:3], torch.zeros(len(x)))
    with raises_naming("condition"):
        deformer(x, flame_head, 0, condition=condition[:, :4])
    with raises_naming("frame"):
        deformer(x, flame_head, FRAMES)
    with raises_naming("deformation"):  # a Canonical with no offsets: not one this deformer made
        deformer.regularizers(RigidDeformer()(x, flame_head, 0))
    with raises_naming("condition_dim"):
        HyperDeformer(-1)
    offset_fn = lambda x: deformer.deform(x, condition).offset  # noqa: E731
    with raises_naming("targets"):
        find_preimage(offset_fn, x[:, :2])
    with raises_naming("init"):
        find_preimage(offset_fn, x, init=x[:4])
    with raises_naming("iterations"):
        find_preimage(offset_fn, x, iterations=-1)
    with raises_naming("tolerance"):
        find_preimage(offset_fn, x, tolerance=-1.0)
    with raises_naming("offset_fn"):
        find_preimage(lambda x: x[:, :2], x)
    with raises_naming("offset_fn"):
        find_preimage(None, x)
    for name, value in [
        ("hidden_dim", 0),
        ("hidden_layers", -1),
        ("skip_layer", 0),
        ("skip_layer", 6),
        ("beta", 0.0),
        ("hyper_dim", -1),
        ("position_frequencies", -1),
        ("offset_weight", -1.0),
        ("hyper_weight", math.nan),
    ]:
        with raises_naming(name):
            HyperDeformerConfig(**{name: value})
    with raises_naming("skip_layer"):
        HyperDeformerConfig(hidden_layers=1)  # the default skip at layer 3 needs more layers
    assert isinstance(deformer.deform(x, condition), HyperDeformation)
