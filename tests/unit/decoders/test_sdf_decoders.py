"""SDF decoders against independent truth: the analytic sphere at initialisation (and its eikonal residual), a numpy
brute force of the anchor blend, a numpy MLP re-evaluating the members, gradcheck / gradgradcheck; the eikonal
loss against hand values."""

import math

import numpy as np
import pytest
import torch

from headfields.backends.cpu import row_blocks
from headfields.checks import trusted_values
from headfields.decoders import AnchorSdf, AnchorSdfConfig, SdfMlp, SdfMlpConfig
from headfields.decoders import sdf as sdf_module
from headfields.device_paths import cuda_paths
from headfields.losses import eikonal_loss

from helpers import raises_naming

CENTER = (0.1, -0.2, 0.05)


def box(n: int, center, half: float, seed: int = 0, dtype=torch.float64) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.tensor(center, dtype=dtype) + (torch.rand(n, 3, generator=g, dtype=dtype) * 2 - 1) * half


def sdf_and_gradient(field, x, *args):
    x = x.clone().requires_grad_()
    sdf = field(x, *args).sdf
    (grad,) = torch.autograd.grad(sdf.sum(), x)
    return sdf.detach(), grad


def perturb(module: torch.nn.Module, scale: float, seed: int) -> None:
    """Random parameter noise so that members differ (at initialisation they are one sphere)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            if p.dim() > 0 and p is not getattr(module, "anchors", None):
                p.add_(scale * torch.randn(p.shape, generator=g, dtype=p.dtype).to(p.device))


# Tolerances of the initial sphere, |sdf - (||x - c|| - r)| over the box c +- r (points up to sqrt(3) r from the
# centre), in units of r: the zonotope's directional error is ~0.4% of ||x - c|| at width 200, ~1.7% at width 64.
SPHERE_TOL = {200: 1e-2, 64: 4e-2}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_sdf_mlp_starts_as_the_sphere_whatever_the_extra_inputs(device, dtype):
    # The acceptance test: MonoNPHM's sizes (4 x 200, Softplus 100), a sphere of radius 0.3 off the origin.
    r = 0.3
    mlp = SdfMlp(extra_dim=5, config=SdfMlpConfig(radius=r), center=CENTER).to(device, dtype)
    x = box(4000, CENTER, r, dtype=dtype).to(device)
    truth = torch.linalg.vector_norm(x - torch.tensor(CENTER, dtype=dtype, device=device), dim=1) - r
    g = torch.Generator().manual_seed(1)
    for extra in (torch.zeros(4000, 5, dtype=dtype), 3 * torch.randn(4000, 5, generator=g, dtype=dtype)):
        sdf, grad = sdf_and_gradient(mlp, x, extra.to(device))
        assert float((sdf - truth).abs().max()) < SPHERE_TOL[200] * r
        # Eikonal residual (||grad|| - 1)^2 from the autograd gradient: tiny on average; the cone tip at the centre
        # is rounded by the Softplus, so the bound away from it is looser than the mean.
        assert float(eikonal_loss(grad)) < 1e-4
        away = (truth > -0.8 * r).cpu()
        assert float(((torch.linalg.vector_norm(grad, dim=1) - 1) ** 2).cpu()[away].max()) < 1e-2
        assert sdf.dtype == dtype and sdf.device.type == device.type


@pytest.mark.parametrize("skip_layer, bands", [(None, 0), (2, 3), (1, 0)])
def test_skip_layer_and_encoding_bands_keep_the_initial_sphere(skip_layer, bands):
    r = 2.0  # the fit is scale-free: a large sphere too
    config = SdfMlpConfig(hidden_dim=64, hidden_layers=3, skip_layer=skip_layer, position_frequencies=bands, radius=r)
    mlp = SdfMlp(extra_dim=0, config=config)
    x = box(2000, (0, 0, 0), r)
    mlp.double()
    out = mlp(x)
    assert out.features.shape == (2000, 64)
    truth = torch.linalg.vector_norm(x, dim=1) - r
    assert float((out.sdf - truth).detach().abs().max()) < SPHERE_TOL[64] * r


def anchor_cloud(k: int, seed: int, scale: float = 0.3) -> torch.Tensor:
    return scale * torch.randn(k, 3, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def test_anchor_sdf_starts_as_one_sphere(device):
    anchors = anchor_cloud(20, seed=0)
    config = AnchorSdfConfig(local=SdfMlpConfig(hidden_dim=64), radius=0.4)
    field = AnchorSdf(anchors, extra_dim=3, config=config, local_dim=2, center=CENTER).double().to(device)
    x = box(600, CENTER, 0.4, seed=2).to(device)
    g = torch.Generator().manual_seed(3)
    extra = torch.randn(600, 3, generator=g, dtype=torch.float64).to(device)
    local = torch.randn(20, 2, generator=g, dtype=torch.float64).to(device)
    x.requires_grad_(True)
    out = field(x, extra, local)
    truth = torch.linalg.vector_norm(x - torch.tensor(CENTER, dtype=torch.float64, device=device), dim=1) - 0.4
    assert float((out.sdf - truth).detach().abs().max()) < SPHERE_TOL[64] * 0.4
    (gradient,) = torch.autograd.grad(out.sdf.sum(), x)  # the blend of equal members is a distance field too
    assert float(eikonal_loss(gradient)) < 1e-3
    # Every member is the same function of x (each first-layer bias shifted by W1 a_k): they agree to the float32
    # rounding of the parameters (built in the default dtype, then made float64).
    members, glob = out.extras["member_sdf"], out.extras["global_sdf"]
    torch.testing.assert_close(members, glob[:, None].expand(-1, 12), atol=1e-6, rtol=0)
    assert out.features.shape == (600, 64)


def numpy_blend(x: np.ndarray, anchors: np.ndarray, neighbours: int, rank: int, divisor: float, global_weight: float):
    """Brute force: sort each point's distances to every anchor, sigma from the rank-th, Gaussians of the nearest."""
    index, weight, glob = [], [], []
    for p in x:
        d = np.sqrt(((anchors - p) ** 2).sum(axis=1))
        order = np.argsort(d)
        sigma = d[order[rank - 1]] / divisor
        gauss = np.exp(-0.5 * (d[order[:neighbours]] / sigma) ** 2)
        total = gauss.sum() + global_weight
        index.append(order[:neighbours])
        weight.append(gauss / total)
        glob.append(global_weight / total)
    return np.array(index), np.array(weight), np.array(glob)


@pytest.mark.parametrize("neighbours, rank, global_weight", [(12, 8, 0.1), (5, 7, 0.0), (3, 2, 2.0)])
def test_blend_weights_match_a_brute_force(neighbours, rank, global_weight):
    anchors = anchor_cloud(30, seed=4)
    config = AnchorSdfConfig(
        local=SdfMlpConfig(hidden_dim=8, hidden_layers=1), neighbours=neighbours, sigma_rank=rank, global_weight=global_weight
    )
    field = AnchorSdf(anchors, config=config).double()
    x = box(80, (0, 0, 0), 0.6, seed=5)
    blend = field.blend(x)
    anchors = field.anchors.numpy()  # float32-rounded at construction (the default dtype), then float64
    index, weight, glob = numpy_blend(x.numpy(), anchors, neighbours, rank, 3.75, global_weight)
    np.testing.assert_array_equal(blend.index.numpy(), index)
    np.testing.assert_allclose(blend.weight.numpy(), weight, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(blend.global_weight.numpy(), glob, rtol=1e-12, atol=1e-15)


def numpy_softplus(z: np.ndarray, beta: float) -> np.ndarray:
    # Exact; torch returns z itself beyond beta z = 20, off by exp(-20) / beta per unit (hence ATOL).
    return np.logaddexp(0.0, beta * z) / beta


ATOL = 1e-8


def numpy_member(enc: np.ndarray, weights: list, biases: list, skip, beta: float) -> np.ndarray:
    """The member MLP written out: Softplus layers, IGR's skip ([h, enc] / sqrt 2), a linear sdf."""
    h = enc
    for i in range(len(weights) - 1):
        if i == skip:
            h = np.concatenate([h, enc], axis=1) / math.sqrt(2)
        h = numpy_softplus(h @ weights[i] + biases[i], beta)
    return (h @ weights[-1] + biases[-1])[:, 0]


def numpy_encoding(y: np.ndarray, bands: int) -> np.ndarray:
    parts = [y]
    for k in range(bands):
        parts += [np.sin(2**k * math.pi * y), np.cos(2**k * math.pi * y)]
    return np.concatenate(parts, axis=1)


def test_members_and_blend_match_a_numpy_re_evaluation():
    anchors = anchor_cloud(16, seed=6)
    local_config = SdfMlpConfig(hidden_dim=12, hidden_layers=3, skip_layer=2, position_frequencies=2, beta=10.0)
    field = AnchorSdf(anchors, extra_dim=2, config=AnchorSdfConfig(local=local_config, neighbours=6), local_dim=3).double()
    perturb(field, 0.3, seed=7)
    n = 40
    x = box(n, (0, 0, 0), 0.5, seed=8)
    g = torch.Generator().manual_seed(9)
    extra = torch.randn(n, 2, generator=g, dtype=torch.float64)
    local = torch.randn(16, 3, generator=g, dtype=torch.float64)
    out = field(x, extra, local)
    anchors = field.anchors  # float32-rounded at construction (the default dtype), then float64
    index = out.extras["index"].numpy()
    weights = [w.detach().numpy() for w in field.weights]
    biases = [b.detach().numpy() for b in field.biases]
    member_sdf = np.empty((n, 6))
    for k in np.unique(index):
        rows, cols = np.nonzero(index == k)  # the pairs of member k
        y = x.numpy()[rows] - anchors.numpy()[k]
        enc = np.concatenate([numpy_encoding(y, 2), extra.numpy()[rows], np.repeat(local.numpy()[k : k + 1], len(rows), 0)], 1)
        member_sdf[rows, cols] = numpy_member(enc, [w[k] for w in weights], [b[k] for b in biases], 2, 10.0)
    np.testing.assert_allclose(out.extras["member_sdf"].detach().numpy(), member_sdf, rtol=1e-10, atol=ATOL)
    glob = field.global_mlp
    enc = np.concatenate([numpy_encoding(x.numpy(), 2), extra.numpy()], 1)
    global_sdf = numpy_member(enc, [w.detach().numpy() for w in glob.weights], [b.detach().numpy() for b in glob.biases], 2, 10.0)
    np.testing.assert_allclose(out.extras["global_sdf"].detach().numpy(), global_sdf, rtol=1e-10, atol=ATOL)
    _, weight, gw = numpy_blend(x.numpy(), anchors.numpy(), 6, 8, 3.75, 0.1)
    expected = (weight * member_sdf).sum(1) + gw * global_sdf
    np.testing.assert_allclose(out.sdf.detach().numpy(), expected, rtol=1e-10, atol=ATOL)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_blocks_without_autograd_match_a_numpy_mlp_and_the_autograd_path(monkeypatch, dtype):
    # Without autograd the CPU runs blocks of rows through every layer, each Softplus in place: 7-row blocks over 40
    # rows (a last block of 5), the skip layer inside a block.
    monkeypatch.setattr(row_blocks, "ROW_BLOCK", 7)
    calls = []
    monkeypatch.setattr(sdf_module, "row_blocks", lambda *args: calls.append(1) or row_blocks.row_blocks(*args))
    config = SdfMlpConfig(hidden_dim=12, hidden_layers=3, skip_layer=2, position_frequencies=2, beta=10.0)
    field = SdfMlp(extra_dim=2, config=config).to(dtype)
    perturb(field, 0.3, seed=11)
    x = box(40, (0, 0, 0), 0.5, seed=12, dtype=dtype)
    extra = torch.randn(40, 2, generator=torch.Generator().manual_seed(13), dtype=torch.float64).to(dtype)
    given = [x.clone(), extra.clone()]
    with torch.no_grad():
        blocked = field(x, extra)
    assert torch.equal(given[0], x) and torch.equal(given[1], extra)  # the Softplus wrote over its own products
    plain = field(x, extra)  # with autograd: layer by layer over all the rows
    assert calls == [1] and plain.sdf.requires_grad and not blocked.sdf.requires_grad
    torch.testing.assert_close(blocked.sdf, plain.sdf.detach())  # BLAS sums a block's rows in its own order
    torch.testing.assert_close(blocked.features, plain.features.detach())
    enc = np.concatenate([numpy_encoding(x.double().numpy(), 2), extra.double().numpy()], 1)
    weights = [w.detach().double().numpy() for w in field.weights]
    biases = [b.detach().double().numpy() for b in field.biases]
    expected = numpy_member(enc, weights, biases, 2, 10.0)
    rtol, atol = (1e-5, 1e-6) if dtype == torch.float32 else (1e-10, ATOL)
    np.testing.assert_allclose(blocked.sdf.double().numpy(), expected, rtol=rtol, atol=atol)


def test_a_point_at_an_isolated_anchor_takes_that_anchors_member():
    # Anchor 0 at the origin, 7 anchors at distance 10 (so sigma = 10 / 3.75), 4 more at distance 50.
    ring = [(10 * math.cos(t), 10 * math.sin(t), 0.0) for t in np.linspace(0, 2 * math.pi, 7, endpoint=False)]
    far = [(50.0, 0, 0), (-50.0, 0, 0), (0, 50.0, 0), (0, 0, 50.0)]
    anchors = torch.tensor([(0.0, 0, 0)] + ring + far, dtype=torch.float64)
    config = AnchorSdfConfig(local=SdfMlpConfig(hidden_dim=8, hidden_layers=2), global_weight=0.0)
    field = AnchorSdf(anchors, config=config).double()
    perturb(field, 0.5, seed=10)
    x = torch.tensor([[1e-3, -2e-3, 5e-4]], dtype=torch.float64)
    out = field(x)
    w0 = 1 / (1 + 7 * math.exp(-0.5 * 3.75**2))  # the far ring contributes exp(-3.75^2 / 2) each
    assert abs(float(out.extras["weight"][0, 0]) - w0) < 1e-4 and int(out.extras["index"][0, 0]) == 0
    members, sdf = out.extras["member_sdf"][0].detach(), out.sdf[0].detach()
    spread = float((members - members[0]).abs().max())
    assert spread > 1e-3  # the members differ, so the bound below says something
    assert abs(float(sdf - members[0])) <= (1 - w0) * spread + 1e-12


def tiny_field(seed: int, learn_anchors: bool = False) -> AnchorSdf:
    config = AnchorSdfConfig(
        local=SdfMlpConfig(hidden_dim=5, hidden_layers=2, beta=5.0, skip_layer=1),
        neighbours=4,
        sigma_rank=3,
        learn_anchors=learn_anchors,
    )
    field = AnchorSdf(anchor_cloud(7, seed=seed, scale=0.5), extra_dim=2, config=config, local_dim=1).double()
    perturb(field, 0.3, seed=seed + 1)
    return field


def test_gradcheck_and_gradgradcheck_of_the_ensemble():
    field = tiny_field(11, learn_anchors=True)
    g = torch.Generator().manual_seed(12)
    x = torch.randn(5, 3, generator=g, dtype=torch.float64).mul(0.4).requires_grad_()
    extra = torch.randn(5, 2, generator=g, dtype=torch.float64).requires_grad_()
    local = torch.randn(7, 1, generator=g, dtype=torch.float64).requires_grad_()

    def f(x, extra, local):
        out = field(x, extra, local)
        return out.sdf, out.features

    assert torch.autograd.gradcheck(f, (x, extra, local))
    assert torch.autograd.gradgradcheck(lambda x: field(x, extra.detach(), local.detach()).sdf, (x,))
    # The eikonal loss of the autograd gradient reaches every parameter, the anchors included (NeuS trains so).
    xs = x.detach().clone().requires_grad_()
    (grad,) = torch.autograd.grad(field(xs, extra.detach(), local.detach()).sdf.sum(), xs, create_graph=True)
    eikonal_loss(grad).backward()
    assert field.anchors.grad is not None and float(field.anchors.grad.abs().sum()) > 0
    assert all(p.grad is not None for p in field.parameters())


@pytest.mark.parametrize("mirrored", [False, True])
def test_on_cuda_s_paths_the_members_run_in_tiles_as_split_and_read_nothing_back(mirrored, monkeypatch, host_sync_spy):
    """CUDA's paths run the members in tiles of one member (3 rows: a member's group spans several): the sdf,
    features and the gradients of an eikonal term (a double backward) are the split path's, mirror pairs' shared
    members too, and no group size is read back nor the mirror's sign copied."""
    monkeypatch.setattr(sdf_module, "MEMBER_TILE", 3)
    field = tiny_field(31, learn_anchors=True)
    if mirrored:  # 3 pairs and one anchor on the plane: 4 members for 7 anchors
        anchors, mirror = mirrored_cloud(3, 1, seed=33)
        field = AnchorSdf(anchors, extra_dim=2, config=field.config, local_dim=1, mirror=mirror).double()
        perturb(field, 0.3, seed=34)
    g = torch.Generator().manual_seed(32)
    x = torch.randn(9, 3, generator=g, dtype=torch.float64).mul(0.4)
    extra = torch.randn(9, 2, generator=g, dtype=torch.float64)
    local = torch.randn(7, 1, generator=g, dtype=torch.float64)

    def run():
        xs = x.clone().requires_grad_()
        out = field(xs, extra, local)
        (grad,) = torch.autograd.grad(out.sdf.sum(), xs, create_graph=True)
        loss = eikonal_loss(grad) + out.features.square().mean()
        return [out.sdf, out.features, grad, *torch.autograd.grad(loss, list(field.parameters()))]

    split = run()
    with cuda_paths(), trusted_values(), host_sync_spy() as spy:
        tiled = run()
    assert spy.reads == {} and not spy.copies, spy.report()
    for a, b in zip(tiled, split, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    with cuda_paths():
        assert torch.autograd.gradgradcheck(lambda x: field(x, extra, local).sdf, (x.clone().requires_grad_(),))


def test_the_ensemble_blends_each_points_members_as_written_out_by_hand():
    """sdf and features against the blend written out a point and a neighbour at a time: member ``k`` on
    ``[x - a_k, extra, local[k]]`` (its skip layer reading ``[h, enc] / sqrt(2)``), weighted, plus the global member."""
    field = tiny_field(21)
    g = torch.Generator().manual_seed(22)
    x = torch.randn(6, 3, generator=g, dtype=torch.float64).mul(0.4)
    extra = torch.randn(6, 2, generator=g, dtype=torch.float64)
    local = torch.randn(7, 1, generator=g, dtype=torch.float64)
    out = field(x, extra, local)
    beta, skip = field.member_config.beta, field.member_config.skip_layer

    def member(k: int, enc: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = enc
        for i in range(len(field.weights) - 1):
            inputs = torch.cat([h, enc]) / math.sqrt(2) if i == skip else h
            h = torch.nn.functional.softplus(inputs @ field.weights[i][k] + field.biases[i][k], beta)
        return h @ field.weights[-1][k][:, 0] + field.biases[-1][k][0], h

    glob = field.global_mlp(x, extra)
    for n in range(6):
        sdf, features = out.extras["global_weight"][n] * glob.sdf[n], out.extras["global_weight"][n] * glob.features[n]
        for m, k in enumerate(out.extras["index"][n].tolist()):
            s, h = member(k, torch.cat([x[n] - field.anchors[k], extra[n], local[k]]))
            sdf, features = sdf + out.extras["weight"][n, m] * s, features + out.extras["weight"][n, m] * h
        torch.testing.assert_close(out.sdf[n], sdf)
        torch.testing.assert_close(out.features[n], features)


def test_sdf_mlp_gradgradcheck():
    mlp = SdfMlp(2, SdfMlpConfig(hidden_dim=6, hidden_layers=2, beta=3.0, position_frequencies=1)).double()
    perturb(mlp, 0.3, seed=13)
    g = torch.Generator().manual_seed(14)
    x = torch.randn(4, 3, generator=g, dtype=torch.float64).requires_grad_()
    extra = torch.randn(4, 2, generator=g, dtype=torch.float64).requires_grad_()
    assert torch.autograd.gradcheck(lambda x, e: mlp(x, e).sdf, (x, extra))
    assert torch.autograd.gradgradcheck(lambda x, e: mlp(x, e).sdf, (x, extra))


def test_anchors_are_a_buffer_unless_learned_and_follow_the_device(device):
    fixed = tiny_field(15).to(device)
    assert "anchors" in dict(fixed.named_buffers()) and "anchors" not in dict(fixed.named_parameters())
    assert "anchors" in dict(tiny_field(15, learn_anchors=True).named_parameters())
    x = box(30, (0, 0, 0), 0.5).to(device)
    out = fixed(x, torch.zeros(30, 2, dtype=torch.float64, device=device), torch.zeros(7, 1, dtype=torch.float64, device=device))
    assert out.sdf.device.type == device.type and out.sdf.shape == (30,)
    empty = fixed(
        x[:0], torch.zeros(0, 2, dtype=torch.float64, device=device), torch.zeros(7, 1, dtype=torch.float64, device=device)
    )
    assert empty.sdf.shape == (0,) and empty.features.shape == (0, 5)


def test_bad_input_names_the_argument():
    mlp = SdfMlp(2, SdfMlpConfig(hidden_dim=4, hidden_layers=1))
    with raises_naming("x"):
        mlp(torch.zeros(3, 2), torch.zeros(3, 2))
    with raises_naming("x"):
        mlp(torch.zeros(3, 3, dtype=torch.float64), torch.zeros(3, 2))
    with raises_naming("extra"):
        mlp(torch.zeros(3, 3))
    with raises_naming("extra"):
        mlp(torch.zeros(3, 3), torch.zeros(4, 2))
    with raises_naming("extra"):
        SdfMlp(0, SdfMlpConfig(hidden_dim=4, hidden_layers=1))(torch.zeros(3, 3), torch.zeros(3, 2))
    with raises_naming("center"):
        SdfMlp(0, center=(0.0, 1.0))
    with raises_naming("skip_layer"):
        SdfMlpConfig(hidden_layers=2, skip_layer=2)
    with raises_naming("radius"):
        SdfMlpConfig(radius=0.0)
    with raises_naming("hidden_dim"):
        SdfMlpConfig(hidden_dim=1)
    field = tiny_field(16).float()
    with raises_naming("local"):
        field(torch.zeros(3, 3), torch.zeros(3, 2))
    with raises_naming("local"):
        field(torch.zeros(3, 3), torch.zeros(3, 2), torch.zeros(6, 1))
    with raises_naming("x"):
        field(torch.full((3, 3), float("nan")), torch.zeros(3, 2), torch.zeros(7, 1))
    with raises_naming("anchors"):
        AnchorSdf(torch.zeros(5, 3))  # fewer than the 12 neighbours
    with raises_naming("anchors"):
        AnchorSdf(torch.zeros(20, 2))
    with raises_naming("global_weight"):
        AnchorSdfConfig(global_weight=-1.0)
    with raises_naming("sigma_divisor"):
        AnchorSdfConfig(sigma_divisor=0.0)


def test_eikonal_loss_hand_values():
    g = torch.tensor([[3.0, 4.0, 0.0], [0.0, 0.0, 1.0], [0.0, 0.0, 0.0], [0.6, 0.0, 0.8]], dtype=torch.float64)
    # (5 - 1)^2 = 16, 0, (0 - 1)^2 = 1, 0.
    assert math.isclose(float(eikonal_loss(g)), 17 / 4, rel_tol=1e-12)
    weight = torch.tensor([0.5, 3.0, 2.0, 1.0], dtype=torch.float64)
    assert math.isclose(float(eikonal_loss(g, weight)), (8 + 2) / 4, rel_tol=1e-12)
    zero = g[:0].clone().requires_grad_()
    loss = eikonal_loss(zero)
    loss.backward()
    assert float(loss.detach()) == 0.0 and zero.grad is not None
    leaf = g.clone().requires_grad_()
    eikonal_loss(leaf).backward()
    # d/dg (|g| - 1)^2 / N = 2 (|g| - 1) g / |g| / N: at (3, 4, 0): 2 * 4 * (0.6, 0.8, 0) / 4.
    torch.testing.assert_close(leaf.grad[0], torch.tensor([1.2, 1.6, 0.0], dtype=torch.float64))
    assert torch.isfinite(leaf.grad).all()  # the zero gradient row too
    with raises_naming("gradients"):
        eikonal_loss(torch.zeros(4, 2))
    with raises_naming("weight"):
        eikonal_loss(g, -weight)
    with raises_naming("weight"):
        eikonal_loss(g, weight[:3])


def mirrored_cloud(pairs: int, middle: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Anchors in mirror pairs across x = 0 (listed (2i, 2i + 1)), then ``middle`` on the plane, and the pairing."""
    half = anchor_cloud(pairs, seed=seed)
    half[:, 0] = half[:, 0].abs() + 0.05
    plane = anchor_cloud(middle, seed=seed + 1)
    plane[:, 0] = 0.0
    anchors = torch.cat([torch.stack([half, half * torch.tensor([-1.0, 1, 1], dtype=torch.float64)], 1).reshape(-1, 3), plane])
    mirror = torch.cat([torch.arange(2 * pairs).reshape(-1, 2).flip(1).reshape(-1), torch.arange(2 * pairs, 2 * pairs + middle)])
    return anchors, mirror


FLIP = torch.tensor([-1.0, 1.0, 1.0], dtype=torch.float64)


def test_mirror_pairs_share_a_member_and_give_a_symmetric_field():
    # Pairs only: a member on the plane reads x - a unmirrored, so it is symmetric only if its MLP is.
    anchors, mirror = mirrored_cloud(6, 0, seed=20)
    config = AnchorSdfConfig(local=SdfMlpConfig(hidden_dim=10, hidden_layers=2), neighbours=5, sigma_rank=4, global_weight=0.0)
    field = AnchorSdf(anchors, config=config, local_dim=2, mirror=mirror).double()
    assert field.num_members == 6 and field.weights[0].shape[0] == 6  # one MLP per pair
    perturb(field, 0.5, seed=21)
    x = box(50, (0, 0, 0), 0.5, seed=22)
    local = torch.randn(12, 2, generator=torch.Generator().manual_seed(23), dtype=torch.float64)
    symmetric_local = local.clone()
    symmetric_local[mirror] = local  # each pair's codes swapped: the mirror image of the code layout
    symmetric_local = (local + symmetric_local) / 2  # equal within each pair
    # The mirror image of the point reads the partner anchors, mirrored: the same values, exactly.
    torch.testing.assert_close(
        field(x * FLIP, None, symmetric_local).sdf, field(x, None, symmetric_local).sdf, rtol=1e-12, atol=1e-12
    )
    # Without the mirror pairing the (perturbed, independent) members are not symmetric: the check above says something.
    plain = AnchorSdf(anchors, config=config, local_dim=2).double()
    perturb(plain, 0.5, seed=21)
    assert float((plain(x * FLIP, None, symmetric_local).sdf - plain(x, None, symmetric_local).sdf).detach().abs().max()) > 1e-3


def test_per_call_anchors_move_the_field_with_them_and_groups_match_separate_calls():
    anchors = anchor_cloud(12, seed=30)
    config = AnchorSdfConfig(local=SdfMlpConfig(hidden_dim=8, hidden_layers=2), neighbours=4, sigma_rank=3, global_weight=0.0)
    field = AnchorSdf(anchors, extra_dim=1, config=config, local_dim=2).double()
    perturb(field, 0.4, seed=31)
    g = torch.Generator().manual_seed(32)
    x = box(30, (0, 0, 0), 0.5, seed=33)
    extra = torch.randn(30, 1, generator=g, dtype=torch.float64)
    local = torch.randn(2, 12, 2, generator=g, dtype=torch.float64)
    shift = torch.tensor([0.3, -0.2, 0.1], dtype=torch.float64)
    moved = torch.stack([field.anchors, field.anchors + shift])
    # Local members read x - a: the field of anchors moved by t at x + t is the field at x (no global member here).
    group1 = torch.ones(30, dtype=torch.long)
    torch.testing.assert_close(
        field(x + shift, extra, local, moved, group1).sdf, field(x, extra, local[1], field.anchors).sdf, rtol=1e-12, atol=1e-12
    )
    group = torch.arange(30) % 2
    both = field(x, extra, local, moved, group).sdf
    for k in (0, 1):
        alone = field(x[group == k], extra[group == k], local[k], moved[k]).sdf
        torch.testing.assert_close(both[group == k], alone, rtol=1e-12, atol=1e-12)
    with raises_naming("group"):
        field(x, extra, local, moved)
    with raises_naming("mirror"):
        AnchorSdf(anchors, config=config, mirror=torch.tensor([1, 2, 0] + list(range(3, 12))))


def test_global_distance_weights_the_global_member_as_an_anchor_that_far():
    anchors = anchor_cloud(20, seed=40)
    config = AnchorSdfConfig(local=SdfMlpConfig(hidden_dim=8, hidden_layers=1), neighbours=12, sigma_rank=8, global_distance=0.75)
    field = AnchorSdf(anchors, config=config).double()
    x = box(40, (0, 0, 0), 0.6, seed=41)
    blend = field.blend(x)
    d = torch.cdist(x, field.anchors).sort(dim=1).values
    sigma = d[:, 7] / 3.75
    gauss = torch.exp(-0.5 * (d[:, :12] / sigma[:, None]) ** 2)
    glob = torch.exp(-0.5 * (0.75 / sigma) ** 2)
    torch.testing.assert_close(blend.global_weight, glob / (gauss.sum(1) + glob), rtol=1e-10, atol=1e-14)
    torch.testing.assert_close(blend.weight, gauss / (gauss.sum(1) + glob)[:, None], rtol=1e-10, atol=1e-14)
