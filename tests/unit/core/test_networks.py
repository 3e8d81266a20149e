"""The twice-differentiable Softplus of headfields.networks against torch's own and the analytic derivatives; the
oneDNN-backed linear layer against torch's ``F.linear`` (values, derivatives of every order, the fallbacks), and the
private torch op it calls, which must be there and be ``F.linear`` wherever torch has oneDNN."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.testing import assert_close

from headfields import networks
from headfields.backends.cpu import onednn, row_blocks
from headfields.backends.cpu.onednn import onednn_linear, use_onednn
from headfields.networks import Linear, Softplus, linear, mlp, softplus

from helpers import raises_naming

BETAS = [1.0, 3.0, 100.0]


def values(beta: float, dtype: torch.dtype) -> torch.Tensor:
    """Inputs on both sides of torch's threshold (beta x = 20) and deep in the flat part, plus random ones."""
    grid = torch.linspace(-30.0, 30.0, 121, dtype=dtype) / beta
    return torch.cat([grid, torch.randn(200, dtype=dtype, generator=torch.Generator().manual_seed(0)) * 5 / beta])


@pytest.mark.parametrize("beta", BETAS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_values_are_torch_s_bit_for_bit(beta, dtype):
    x = values(beta, dtype)
    assert torch.equal(softplus(x, beta), F.softplus(x, beta=beta))
    assert torch.equal(Softplus(beta)(x), torch.nn.Softplus(beta=beta)(x))


@pytest.mark.parametrize("beta", BETAS)
def test_first_and_second_derivatives_are_the_analytic_ones(beta):
    x = values(beta, torch.float64).requires_grad_(True)
    weights = torch.rand_like(x)
    (first,) = torch.autograd.grad((softplus(x, beta) * weights).sum(), x, create_graph=True)
    (second,) = torch.autograd.grad(first.sum(), x)
    s = torch.sigmoid(beta * x.detach())
    assert_close(first, weights * s, rtol=1e-12, atol=1e-12)  # d softplus / dx = sigmoid(beta x)
    assert_close(second, weights * beta * s * (1 - s), rtol=1e-12, atol=1e-12)
    # The same as torch's derivatives of its own softplus, to its threshold's shortcut (< 2e-9 of the slope).
    (theirs,) = torch.autograd.grad((F.softplus(x, beta=beta) * weights).sum(), x, create_graph=True)
    (theirs_second,) = torch.autograd.grad(theirs.sum(), x)
    assert_close(first, theirs, rtol=0, atol=3e-9)
    assert_close(second, theirs_second, rtol=0, atol=3e-9 * beta)


@pytest.mark.parametrize("beta", [1.0, 7.0])
def test_gradcheck_to_the_third_derivative(beta):
    x = (torch.randn(24, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(1)) / beta).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda x: softplus(x, beta), (x,))
    assert torch.autograd.gradgradcheck(lambda x: softplus(x, beta), (x,))

    def slope_times_grad(x, grad):  # the first derivative, as a function of the input and the incoming gradient
        (first,) = torch.autograd.grad(softplus(x, beta), x, grad, create_graph=True)
        return first

    grad = torch.randn(24, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradgradcheck(slope_times_grad, (x, grad))  # third derivatives in x and grad


def test_an_eikonal_step_through_an_mlp_matches_torch_s_softplus():
    # The use it is for: gradients of a loss on an MLP's input gradient, w.r.t. the weights.
    generator = torch.Generator().manual_seed(2)
    layers = [
        torch.randn(3, 16, generator=generator, dtype=torch.float64),
        torch.randn(16, 1, generator=generator, dtype=torch.float64),
    ]
    for w in layers:
        w.requires_grad_(True)
    points = torch.randn(64, 3, generator=generator, dtype=torch.float64, requires_grad=True)

    def weight_grads(activation):
        sdf = activation(points @ layers[0]) @ layers[1]
        (normal,) = torch.autograd.grad(sdf.sum(), points, create_graph=True)
        return torch.autograd.grad((normal.norm(dim=1) - 1).square().mean(), layers)

    ours, theirs = weight_grads(lambda h: softplus(h, 10.0)), weight_grads(lambda h: F.softplus(h, beta=10.0))
    for a, b in zip(ours, theirs, strict=True):
        assert_close(a, b, rtol=1e-7, atol=1e-10)  # torch's threshold shortcut: < 2e-9 of a slope


@settings(max_examples=50, deadline=None)
@given(st.floats(-1e4, 1e4, allow_nan=False), st.sampled_from(BETAS))
def test_finite_and_monotone_anywhere(value, beta):
    x = torch.tensor([value, value + 1e-3], dtype=torch.float32, requires_grad=True)
    y = softplus(x, beta)
    (first,) = torch.autograd.grad(y.sum(), x, create_graph=True)
    (second,) = torch.autograd.grad(first.sum(), x)
    assert torch.isfinite(y).all() and torch.isfinite(first).all() and torch.isfinite(second).all()
    assert y[1] >= y[0] and (y >= 0).all() and ((first >= 0) & (first <= 1)).all() and (second >= 0).all()


@pytest.mark.parametrize(
    ("beta", "error"), [(0.0, ValueError), (-1.0, ValueError), (float("inf"), ValueError), (True, TypeError), ("100", TypeError)]
)
def test_bad_beta_is_named(beta, error):
    with pytest.raises(error, match="beta"):
        softplus(torch.zeros(3), beta)
    with pytest.raises(error, match="beta"):
        Softplus(beta)
    with pytest.raises(error, match="beta"):
        networks.softplus_(torch.zeros(3), beta)


@pytest.mark.parametrize("beta", BETAS)
def test_softplus_in_place_is_torch_s_written_over_its_input(beta):
    x = values(beta, torch.float32)
    y = x.clone()
    assert networks.softplus_(y, beta) is y
    assert torch.equal(y, F.softplus(x, beta=beta))


def test_row_blocks_write_each_block_into_place_and_name_bad_input(monkeypatch):
    monkeypatch.setattr(row_blocks, "ROW_BLOCK", 4)
    x, w = torch.randn(10, 3), torch.randn(10)
    seen = []

    def fn(x, w):
        seen.append(len(x))
        return x.sum(1) * w, x * 2

    total, double = row_blocks.row_blocks(fn, x, w)
    assert seen == [4, 4, 2]
    assert_close(total, x.sum(1) * w)
    assert_close(double, x * 2)
    with raises_naming(r"inputs\[1\]"):
        row_blocks.row_blocks(fn, x, w[:9])
    with raises_naming(r"inputs\[0\]"):
        row_blocks.row_blocks(fn, x[:0], w[:0])
    with raises_naming("fn"):
        row_blocks.row_blocks(lambda x, w: (x[:1],), x, w)  # one row for a block of 4
    with raises_naming("fn"):
        row_blocks.row_blocks(lambda x, w: x, x, w)  # not a tuple


def test_a_numpy_beta_is_a_number():
    x = torch.linspace(-1, 1, 11)
    assert torch.equal(softplus(x, np.float32(5.0)), F.softplus(x, beta=5.0))


# ---------------------------------------------------------------- linear


def _linear_case(shape, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(*shape, 7, generator=g, dtype=dtype, requires_grad=True)
    weight = torch.randn(5, 7, generator=g, dtype=dtype, requires_grad=True)
    bias = torch.randn(5, generator=g, dtype=dtype, requires_grad=True)
    return x, weight, bias


def _ran_onednn(fn) -> bool:
    with torch.profiler.profile() as prof:
        fn()
    return any("_linear_pointwise" in e.key for e in prof.key_averages())


@pytest.mark.parametrize("shape", [(9000,), (2, 3000), (300,), (0,)], ids=["blocks and rest", "batched", "rest only", "empty"])
@pytest.mark.parametrize("with_bias", [True, False])
def test_linear_values_and_gradients_are_f_linear_s(shape, with_bias):
    x, weight, bias = _linear_case(shape)
    bias = bias if with_bias else None
    upstream = torch.randn(*shape, 5, generator=torch.Generator().manual_seed(1))
    ours, theirs = linear(x, weight, bias), F.linear(x, weight, bias)
    assert_close(ours, theirs, rtol=1e-6, atol=1e-5)
    wanted = [x, weight] + ([bias] if with_bias else [])
    for a, b in zip(
        torch.autograd.grad((ours * upstream).sum(), wanted), torch.autograd.grad((theirs * upstream).sum(), wanted), strict=True
    ):
        assert_close(a, b, rtol=1e-5, atol=1e-4)


def test_linear_runs_on_onednn_for_float32_cpu_and_falls_back_elsewhere():
    x, weight, bias = _linear_case((onednn.ONEDNN_BLOCK_ROWS,))
    assert _ran_onednn(lambda: linear(x, weight, bias)) == onednn_linear()
    assert not _ran_onednn(lambda: linear(x[:-1], weight, bias))  # under one block: torch's product
    assert not _ran_onednn(lambda: linear(x.double(), weight.double(), bias.double()))  # oneDNN: float32 only
    assert not _ran_onednn(lambda: linear(x.t().contiguous().t(), weight, bias))  # strided rows: torch's product
    # Strided input still gives F.linear's result.
    strided = torch.randn(7, 64).t()
    assert_close(linear(strided, weight, bias), F.linear(strided, weight, bias))


def test_linear_memory_stays_bounded_over_many_row_counts():
    """oneDNN keeps an output-sized buffer per row count it has seen: the fixed blocks keep that to one. Unbounded,
    40 row counts of about 20,000 rows of 128 would keep some 400 MB."""
    weight, bias = torch.randn(128, 128), torch.randn(128)

    def resident_mib() -> float:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * 4096 / 2**20

    linear(torch.randn(20_000, 128), weight, bias)
    before = resident_mib()
    for i in range(40):
        linear(torch.randn(20_000 + 13 * i, 128), weight, bias)
    assert resident_mib() - before < 100


def test_linear_second_and_third_derivatives_are_f_linear_s():
    """Through a Softplus, as an SDF's eikonal term differentiates the layer's backward (second order) and a third
    derivative on top: float32 on the oneDNN path against F.linear's."""
    x, weight, bias = _linear_case((onednn.ONEDNN_BLOCK_ROWS + 40,))

    def derivatives(fn):
        q = x.detach().requires_grad_(True)
        (grad,) = torch.autograd.grad(softplus(fn(q, weight, bias), 10.0).sum(), q, create_graph=True)
        second = torch.autograd.grad(grad.square().sum(), [q, weight, bias], create_graph=True)
        third = torch.autograd.grad(second[0].square().sum(), [weight, bias])
        return [*second, *third]

    for a, b in zip(derivatives(linear), derivatives(F.linear), strict=True):  # float32 sums over 4,136 rows
        assert_close(a, b, rtol=5e-3, atol=1e-3)


def test_linear_module_is_an_nn_linear_and_mlp_uses_it():
    layer = Linear(7, 5)
    assert isinstance(layer, torch.nn.Linear) and set(layer.state_dict()) == {"weight", "bias"}
    net = mlp(7, 16, 2, 3)
    assert [type(m) for m in net if isinstance(m, torch.nn.Linear)] == [Linear] * 3
    x = torch.randn(50, 7)
    reference = x
    for m in net:
        reference = F.linear(reference, m.weight, m.bias) if isinstance(m, torch.nn.Linear) else m(reference)
    assert_close(net(x), reference, rtol=1e-5, atol=1e-5)


def _layer_by_layer(net, x):
    """The reference: F.linear and each other layer in turn, in float64."""
    out = x.double()
    for m in net:
        out = F.linear(out, m.weight.double(), m.bias.double()) if isinstance(m, torch.nn.Linear) else m(out)
    return out


@pytest.mark.parametrize("rows", [1, 4096, 2 * 4096 + 37])
@pytest.mark.parametrize(
    "build", [lambda: mlp(19, 64, 2, 16), lambda: networks.mlp_trunk(19, 32, 3), lambda: mlp(7, 19, 2, 5)[1:]]
)
def test_mlp_without_autograd_runs_blocks_through_every_layer(rows, build):
    # Blocks of rows through every layer (the ReLU inside the product), the last rows layer by layer: the same values
    # as the layers one after another, with and without autograd, for a trunk that ends in a ReLU too.
    torch.manual_seed(0)
    net, x = build(), torch.randn(rows, 19)
    assert isinstance(net, networks.Mlp)
    with torch.no_grad():
        fused = net(x)
    layered = net(x)
    assert_close(fused.double(), _layer_by_layer(net, x), rtol=1e-5, atol=1e-5)
    if onednn.onednn_linear():  # the same products, block for block
        assert torch.equal(fused, layered.detach())
    assert layered.requires_grad and not fused.requires_grad
    with torch.no_grad():  # leading dimensions kept
        assert net(x.reshape(1, rows, 19)).shape == (1, rows, net(x[:1]).shape[-1])


@pytest.mark.parametrize("rows", [5, 4096, 2 * 4096 + 37])
def test_reduced_precision_runs_the_products_in_bfloat16_without_autograd_on_this_thread(rows, device):
    """Inside reduced_precision() a reducible MLP without autograd (and linear) gives bfloat16 products' values: within
    bfloat16's rounding of the float64 layers (an input and weight rounding a layer, 2^-9 relative), equal to the
    same layers run in bfloat16 by torch but the output layer (float32: its rounding would shift every colour alike; a
    slice ending on a hidden layer's ReLU runs every product in bfloat16), float32 out; with autograd, on another
    thread, after the block and for an MLP not built reducible (a deformation's, an SDF's), float32. A slice keeps the
    flag. On the CPU by oneDNN, on a CUDA GPU by cuBLAS."""
    import threading

    torch.manual_seed(2)
    net, x = mlp(19, 64, 2, 16, reducible=True).to(device), torch.randn(rows, 19).to(device)
    exact_net = mlp(19, 64, 2, 16).to(device)
    exact_net.load_state_dict(net.state_dict())
    assert net[1:].reducible and not exact_net[1:].reducible
    products = onednn.bfloat16_products() if device.type == "cpu" else networks._cuda_bfloat16_products(device.index)
    if not products:  # an AVX2-only CPU (or an old GPU): the block keeps float32's values, and does not fail
        with torch.no_grad(), networks.products_in("bfloat16"):
            assert torch.equal(net(x), exact_net(x))
        pytest.skip(f"{device.type} has no bfloat16 products here (the float32 fallback is checked above)")
    exact = _layer_by_layer(net, x).detach()
    with torch.no_grad():
        plain, plain_first = net(x), linear(x, net[0].weight, net[0].bias)
        with networks.reduced_precision():
            reduced = net(x)
            alone = linear(x, net[0].weight, net[0].bias, reducible=True)
            assert torch.equal(exact_net(x), plain) and torch.equal(linear(x, net[0].weight, net[0].bias), plain_first)
            elsewhere = []
            # Another thread may split the float32 product differently (its own thread pool's blocking): close to
            # float32's within 1e-5, where bfloat16 products would be ~4e-3 off (CI, a loaded EPYC: not bit-equal).
            thread = threading.Thread(target=lambda: elsewhere.append(torch.allclose(net(x), plain, rtol=1e-5, atol=1e-6)))
            thread.start()
            thread.join()
            with torch.enable_grad():
                assert torch.equal(net(x).detach(), plain)
        assert torch.equal(net(x), plain)
    assert elsewhere == [True]
    assert reduced.dtype == alone.dtype == torch.float32 and not torch.equal(reduced, plain)
    assert (reduced.double() - exact).abs().max() <= 0.02 * exact.abs().max()
    h = x.bfloat16()  # the same products by torch: in bfloat16 but the output layer's (float32 on bfloat16 input)
    for m in net[:-1]:
        h = F.linear(h, m.weight.bfloat16(), m.bias.bfloat16()) if isinstance(m, torch.nn.Linear) else m(h)
    assert_close(reduced, net[-1](h.float()), rtol=0.02, atol=0.02 * float(exact.abs().max()))
    # A slice that ends on a ReLU (a hidden layer, MonoAvatar's mlp0[1:-1]) runs its last product in bfloat16 too:
    # every value it returns is a bfloat16 number; the output layer's are not.
    with torch.no_grad(), networks.reduced_precision():
        hidden = net[:-1](x)
    assert torch.equal(hidden.bfloat16().float(), hidden) and not torch.equal(reduced.bfloat16().float(), reduced)
    assert_close(hidden, h.float(), rtol=0.02, atol=0.02 * float(h.detach().float().abs().max()))
    assert_close(alone, F.linear(x.bfloat16(), net[0].weight.bfloat16(), net[0].bias.bfloat16()).float(), rtol=0.01, atol=0.01)
    with pytest.raises(ValueError, match="dtype"), networks.reduced_precision(torch.float16):
        pass
    with torch.no_grad():  # the commands' --precision
        with networks.products_in("float32"):
            assert torch.equal(net(x), plain)
        with networks.products_in("bfloat16"):
            assert torch.equal(net(x), reduced)
    with raises_naming("precision"):
        networks.products_in("float16")


def test_reduced_precision_with_autograd_trains_the_float32_weights_through_bfloat16_products(device):
    """Inside reduced_precision(autograd=True) (training's TrainingConfig.precision) a reducible MLP with autograd
    runs its products in bfloat16 (the output layer's float32) and its gradients reach the float32 weights: within
    bfloat16's rounding of the float64 layers' gradients, and not float32's own. An MLP not built reducible, and the
    block without autograd=True, keep float32's values and gradients to the bit."""
    torch.manual_seed(3)
    net, x = mlp(19, 64, 2, 16, reducible=True).to(device), torch.randn(500, 19).to(device)
    weights = torch.randn(500, 16).to(device)
    products = onednn.bfloat16_products() if device.type == "cpu" else networks._cuda_bfloat16_products(device.index)
    if not products:
        pytest.skip(f"{device.type} has no bfloat16 products here")
    plain = net(x)
    plain_grads = torch.autograd.grad((plain * weights).sum(), list(net.parameters()))
    with networks.reduced_precision():  # autograd's products stay float32 without autograd=True
        assert torch.equal(net(x), plain)
    exact_net = mlp(19, 64, 2, 16).to(device)
    exact_net.load_state_dict(net.state_dict())
    with networks.reduced_precision(autograd=True):
        reduced = net(x)
        assert torch.equal(exact_net(x), plain)  # not reducible
        grads = torch.autograd.grad((reduced * weights).sum(), list(net.parameters()))
    exact = _layer_by_layer(net, x)
    exact_grads = torch.autograd.grad((exact * weights.double()).sum(), list(net.parameters()))
    assert reduced.dtype == torch.float32 and all(g.dtype == torch.float32 for g in grads)
    assert (reduced.double() - exact).abs().max() <= 0.02 * exact.abs().max()
    for g, e in zip(grads, exact_grads, strict=True):
        assert (g.double() - e).norm() <= 0.05 * e.norm(), float((g.double() - e).norm() / e.norm())
    # bfloat16's, not float32's (but the output bias's: the sum of its outputs' gradients, whatever the products)
    assert not any(torch.equal(g, f) for g, f in zip(grads[:-1], plain_grads[:-1], strict=True))
    assert torch.equal(grads[-1], plain_grads[-1])
    with raises_naming("autograd"), networks.reduced_precision(autograd=1):
        pass


def test_mlp_with_other_layers_or_input_runs_them_one_by_one():
    torch.manual_seed(1)
    net = networks.Mlp(Linear(5, 8), Softplus(), Linear(8, 2))
    x = torch.randn(5000, 5)
    with torch.no_grad():
        assert_close(net(x).double(), _layer_by_layer(net, x), rtol=1e-5, atol=1e-5)  # not fused: a softplus
        double = mlp(5, 8, 1, 2).double()
        assert_close(double(x.double()), _layer_by_layer(double, x), rtol=1e-12, atol=1e-12)  # float64: plain


# ---------------------------------------------------------------- linear: the private oneDNN op, its fallback, its switch


@pytest.fixture
def onednn_state(monkeypatch):
    """The switch and the op's check start undecided and are put back after (both are per process)."""
    monkeypatch.delenv(onednn.ONEDNN_SWITCH, raising=False)
    monkeypatch.setattr(onednn, "_onednn_on", None)
    onednn._onednn_works.cache_clear()
    yield
    onednn._onednn_works.cache_clear()


def test_torch_s_private_onednn_op_is_there_and_is_f_linear():
    """Fails, not skips, when a torch with oneDNN drops ``torch.ops.mkldnn._linear_pointwise`` or changes what it takes
    or gives: networks.linear would fall back to F.linear, slower on the CPU (a warning says so to users)."""
    if not torch.backends.mkldnn.is_available():
        assert not onednn._onednn_works()  # no oneDNN: F.linear, and nothing to warn about
        return
    assert hasattr(torch.ops.mkldnn, "_linear_pointwise"), f"torch {torch.__version__} has no mkldnn._linear_pointwise"
    g = torch.Generator().manual_seed(3)
    x, weight, bias = torch.randn(onednn.ONEDNN_BLOCK_ROWS, 64, generator=g), torch.randn(32, 64, generator=g), torch.randn(32)
    # The call onednn._onednn_op makes, spelled out here so that a change of the op's schema shows in this test.
    for b in (bias, None):
        ours = torch.ops.mkldnn._linear_pointwise(x, weight, b, "none", [], "")
        assert ours.shape == (onednn.ONEDNN_BLOCK_ROWS, 32) and ours.dtype == torch.float32
        assert_close(ours, F.linear(x, weight, b), rtol=1e-5, atol=1e-4)
    assert onednn._onednn_works()


def test_the_op_is_checked_once_and_a_failing_one_falls_back_to_f_linear_with_a_warning(onednn_state, monkeypatch):
    def changed(x, weight, bias):  # as a torch whose op took other arguments would answer
        raise RuntimeError("mkldnn::_linear_pointwise() Expected a value of type 'str' for argument 'attr'")

    monkeypatch.setattr(onednn, "_onednn_op", changed)
    x, weight, bias = _linear_case((onednn.ONEDNN_BLOCK_ROWS,))
    with pytest.warns(RuntimeWarning, match="_linear_pointwise failed: RuntimeError"):
        out = linear(x, weight, bias)
    assert torch.equal(out, F.linear(x, weight, bias)) and not onednn_linear()
    assert not _ran_onednn(lambda: linear(x, weight, bias))
    (grad,) = torch.autograd.grad(linear(x, weight, bias).sum(), x)  # F.linear's derivatives
    assert torch.equal(grad, torch.autograd.grad(F.linear(x, weight, bias).sum(), x)[0])


def test_an_op_that_gives_other_values_falls_back_too(onednn_state, monkeypatch):
    monkeypatch.setattr(onednn, "_onednn_op", lambda x, weight, bias: F.linear(x, weight, bias) + 1)
    with pytest.warns(RuntimeWarning, match="other values than F.linear"):
        assert not onednn_linear()


def test_the_environment_or_use_onednn_switches_it_off(onednn_state, monkeypatch):
    x, weight, bias = _linear_case((onednn.ONEDNN_BLOCK_ROWS,))
    monkeypatch.setenv(onednn.ONEDNN_SWITCH, "0")
    assert not onednn_linear() and not _ran_onednn(lambda: linear(x, weight, bias))
    assert torch.equal(linear(x, weight, bias), F.linear(x, weight, bias))
    on = use_onednn(True)  # the call overrides the environment
    assert on == onednn._onednn_works() and _ran_onednn(lambda: linear(x, weight, bias)) == on
    assert not use_onednn(False) and not _ran_onednn(lambda: linear(x, weight, bias))
    with pytest.raises(TypeError, match="enabled"):
        use_onednn(1)
