"""Losses against direct formulas and torch.nn.functional, with weights, empty batches and masks, bad input;
the EMA of the weights (the issue lists it with the losses) against the recursion written out."""

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st

from headfields.losses import depth_loss, huber_loss, l1_loss, mask_loss, mse_loss, ngp_huber_loss, region_weights
from headfields.training.ema import ExponentialMovingAverage

from helpers import raises_naming


def pair(n=64, c=3, seed=0, device="cpu", dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    pred = torch.rand(n, c, generator=g, dtype=dtype).to(device)
    target = torch.rand(n, c, generator=g, dtype=dtype).to(device)
    weight = (torch.rand(n, generator=g, dtype=dtype) * 3).to(device)
    return pred, target, weight


def huber_direct(r: float, delta: float) -> float:
    return 0.5 * r * r if abs(r) < delta else delta * (abs(r) - 0.5 * delta)


@given(st.lists(st.floats(-2, 2), min_size=1, max_size=20), st.floats(0.01, 1.0))
def test_huber_matches_the_direct_formula(values, delta):
    pred = torch.tensor(values, dtype=torch.float64)[:, None]
    expected = sum(huber_direct(v, delta) for v in values) / len(values)
    assert math.isclose(float(huber_loss(pred, torch.zeros_like(pred), delta=delta)), expected, rel_tol=1e-12, abs_tol=1e-15)


def test_instant_ngp_huber_on_a_hand_computed_case(device):
    """instant-ngp's Huber as INSTA trains with it (testbed_nerf.cu: tiny-cuda-nn's Huber at delta 0.1, divided by
    5; channel gradients summed per ray, divided by the number of rays). By hand, delta = 0.1:
    ray 0, r = (0.05, 0.3, -0.02): 0.05^2 + (0.3 - 0.05) / 5 + 0.02^2 = 0.0025 + 0.05 + 0.0004 = 0.0529;
    ray 1, r = (0, 0, 0.1), weight 2: the kink, where both branches give 0.1^2 = (0.1 - 0.05) / 5 = 0.01; x 2 = 0.02.
    Mean over the two rays: 0.03645."""
    pred = torch.tensor([[0.05, 0.3, -0.02], [0.0, 0.0, 0.1]], dtype=torch.float64, device=device, requires_grad=True)
    weight = torch.tensor([1.0, 2.0], dtype=torch.float64, device=device)
    loss = ngp_huber_loss(pred, torch.zeros_like(pred), weight=weight)
    assert math.isclose(float(loss.detach()), 0.03645, rel_tol=1e-12)
    loss.backward()
    # Gradient per element: 2 r inside delta, sign(r) / 5 beyond; times the ray's weight, over the 2 rays.
    expected = torch.tensor([[0.1, 0.2, -0.04], [0.0, 0.0, 0.4]], dtype=torch.float64, device=device) / 2
    torch.testing.assert_close(pred.grad, expected, atol=1e-12, rtol=0)
    assert math.isclose(float(ngp_huber_loss(pred[:1], torch.zeros(1, 3, dtype=torch.float64, device=device)).detach()), 0.0529)
    empty = torch.zeros(0, 3, requires_grad=True)
    assert float(ngp_huber_loss(empty, torch.zeros(0, 3)).detach()) == 0.0
    with raises_naming("delta"):
        ngp_huber_loss(pred, pred, delta=0.0)
    with raises_naming("pred"):
        ngp_huber_loss(pred[:, :, None], pred[:, :, None])


def test_photometric_losses_match_torch_and_weights_scale_rays(device):
    pred, target, weight = pair(device=device)
    torch.testing.assert_close(l1_loss(pred, target), F.l1_loss(pred, target))
    torch.testing.assert_close(mse_loss(pred, target), F.mse_loss(pred, target))
    torch.testing.assert_close(huber_loss(pred, target), F.huber_loss(pred, target, delta=0.1))
    # Per-ray weights multiply that ray's terms; the mean is still over all N * C elements (not renormalised).
    for loss, ref in [(l1_loss, F.l1_loss), (mse_loss, F.mse_loss)]:
        direct = (weight[:, None] * ref(pred, target, reduction="none")).sum() / pred.numel()
        torch.testing.assert_close(loss(pred, target, weight=weight), direct)
    direct = (weight[:, None] * F.huber_loss(pred, target, reduction="none", delta=0.3)).mean()
    torch.testing.assert_close(huber_loss(pred, target, 0.3, weight), direct)
    # Weight 40 on one ray out of two equal rays: (40 + 1) / 2 times the unweighted loss.
    p, t = torch.tensor([[0.5], [0.5]]), torch.zeros(2, 1)
    torch.testing.assert_close(l1_loss(p, t, torch.tensor([40.0, 1.0])), torch.tensor(0.5 * 41 / 2))


def test_gradients_flow_and_higher_dims():
    pred, target, weight = pair(n=8)
    pred.requires_grad_()
    huber_loss(pred, target, weight=weight).backward()
    # d/dp of the Huber term: the residual clamped to [-delta, delta], times the ray's weight, over N * C.
    expected = weight[:, None] * (pred.detach() - target).clamp(-0.1, 0.1) / pred.numel()
    torch.testing.assert_close(pred.grad, expected)
    img, w = torch.rand(2, 4, 5, 3), torch.tensor([1.0, 2.0])
    torch.testing.assert_close(mse_loss(img, img * 0.5, w), ((img * 0.5) ** 2 * w[:, None, None, None]).mean())


def test_empty_batches_give_zero_connected_to_the_graph():
    pred = torch.zeros(0, 3, requires_grad=True)
    for loss in (l1_loss, mse_loss, huber_loss):
        value = loss(pred, torch.zeros(0, 3), weight=torch.zeros(0))
        assert value.item() == 0.0 and value.requires_grad
        value.backward()
    opacity = torch.zeros(0, requires_grad=True)
    assert mask_loss(opacity, torch.zeros(0)).item() == 0.0


def test_region_weights_mapping_and_lookup(device):
    labels = torch.tensor([0, 3, 5, 3, -1, 2], device=device)
    w = region_weights(labels, {3: 40.0, 5: 0.0}, default=1.0)
    torch.testing.assert_close(w, torch.tensor([1.0, 40.0, 0.0, 40.0, 1.0, 1.0], device=device))
    assert w.device.type == device.type
    table = torch.tensor([1.0, 2.0, 3.0, 4.0], device=device)
    torch.testing.assert_close(region_weights(labels[[0, 1, 5]], table), torch.tensor([1.0, 4.0, 3.0], device=device))
    assert region_weights(torch.zeros(0, dtype=torch.long), {1: 2.0}).shape == (0,)


def test_depth_loss_is_l1_over_the_mask(device):
    g = torch.Generator().manual_seed(3)
    pred, target = torch.rand(50, generator=g).to(device), torch.rand(50, generator=g).to(device)
    mask = torch.rand(50, generator=g).to(device) > 0.4
    target_with_misses = torch.where(mask, target, torch.full_like(target, math.inf))  # rays that miss the mesh
    expected = sum(abs(float(p) - float(t)) for p, t, m in zip(pred, target, mask, strict=True) if m) / int(mask.sum())
    assert math.isclose(float(depth_loss(pred, target_with_misses, mask)), expected, rel_tol=1e-6)
    # An all-False mask: exactly 0, gradient 0, no NaN.
    p = pred.clone().requires_grad_()
    value = depth_loss(p, target_with_misses, torch.zeros_like(mask))
    value.backward()
    assert value.item() == 0.0 and torch.equal(p.grad, torch.zeros_like(p))


def test_mask_loss_matches_bce():
    g = torch.Generator().manual_seed(4)
    opacity, target = torch.rand(30, generator=g), (torch.rand(30, generator=g) > 0.5).float()
    weight = torch.rand(30, generator=g)
    torch.testing.assert_close(mask_loss(opacity, target), F.binary_cross_entropy(opacity, target))
    direct = -(weight * (target * opacity.log() + (1 - target) * (1 - opacity).log())).mean()
    torch.testing.assert_close(mask_loss(opacity, target, weight), direct)
    # Saturated opacities (and rounding just above 1) stay finite, with finite gradients.
    o = torch.tensor([0.0, 1.0, 1.0 + 1e-6], requires_grad=True)
    value = mask_loss(o, torch.tensor([1.0, 0.0, 1.0]))
    value.backward()
    assert torch.isfinite(value) and torch.isfinite(o.grad).all()


@pytest.mark.parametrize(
    "call, name",
    [
        (lambda: l1_loss(torch.zeros(4, 3), torch.zeros(4, 2)), "target"),
        (lambda: mse_loss(torch.full((4, 3), math.nan), torch.zeros(4, 3)), "pred"),
        (lambda: huber_loss(torch.zeros(4, 3), torch.zeros(4, 3), weight=torch.ones(3)), "weight"),
        (lambda: huber_loss(torch.zeros(4, 3), torch.zeros(4, 3), weight=-torch.ones(4)), "weight"),
        (lambda: huber_loss(torch.zeros(4, 3), torch.zeros(4, 3), delta=0.0), "delta"),
        (lambda: region_weights(torch.tensor([0, 4]), torch.ones(4)), "labels"),
        (lambda: region_weights(torch.tensor([0.0, 1.0]), {0: 1.0}), "labels"),
        (lambda: region_weights(torch.tensor([0, 1]), {0: -1.0}), "weights"),
        (lambda: region_weights(torch.tensor([0, 1]), [1.0, 2.0]), "weights"),
        (lambda: depth_loss(torch.zeros(4), torch.zeros(4), torch.ones(4)), "mask"),
        (lambda: depth_loss(torch.zeros(4), torch.zeros(3), torch.ones(3, dtype=torch.bool)), "target"),
        (lambda: depth_loss(torch.zeros(2), torch.tensor([1.0, math.nan]), torch.ones(2, dtype=torch.bool)), "target"),
        (lambda: mask_loss(torch.tensor([0.5, 1.5]), torch.zeros(2)), "opacity"),
        (lambda: mask_loss(torch.tensor([0.5, 0.5]), torch.tensor([0.0, 2.0])), "target"),
    ],
)
def test_bad_input(call, name):
    with raises_naming(name):
        call()


# --- exponential moving average of the weights (INSTA evaluates with decay 0.95) ---


def small_net(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2), torch.nn.BatchNorm1d(2))


def perturb(net: torch.nn.Module, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(torch.randn(p.shape, generator=g, dtype=p.dtype).to(p.device))  # the same draws on every device


def test_ema_follows_the_recursion(device):
    net = small_net().to(device)
    ema = ExponentialMovingAverage(net, decay=0.95)
    assert ema.decay == 0.95
    expected = {k: p.detach().clone() for k, p in net.named_parameters()}
    for step in range(5):
        perturb(net, step)
        ema.update()
        for k, p in net.named_parameters():
            expected[k] = 0.95 * expected[k] + 0.05 * p.detach()
    assert ema.num_updates == 5
    for k in expected:
        torch.testing.assert_close(ema.shadow[k], expected[k])
        assert ema.shadow[k].device.type == device.type
    # decay 0: the average is the latest weights; decay 1: the weights at construction.
    for decay in (0.0, 1.0):
        net2 = small_net(1)
        start = [p.detach().clone() for p in net2.parameters()]
        e = ExponentialMovingAverage(net2, decay=decay)
        perturb(net2, 9)
        e.update()
        for (k, p), p0 in zip(net2.named_parameters(), start, strict=True):
            torch.testing.assert_close(e.shadow[k], p.detach() if decay == 0.0 else p0, rtol=0, atol=0)


def test_ema_average_parameters_swaps_in_and_restores():
    net = small_net()
    ema = ExponentialMovingAverage(net)
    perturb(net, 0)
    ema.update()
    perturb(net, 1)
    training = {k: p.detach().clone() for k, p in net.named_parameters()}
    x = torch.randn(6, 3)
    net.eval()
    with ema.average_parameters():
        for k, p in net.named_parameters():
            assert torch.equal(p, ema.shadow[k]) and not torch.equal(p, training[k])
        averaged_out = net(x)
    for k, p in net.named_parameters():
        assert torch.equal(p, training[k])
    # The averaged output is what a copy of the net holding the averages computes.
    copy = small_net()
    copy.load_state_dict(net.state_dict())
    with torch.no_grad():
        for k, p in copy.named_parameters():
            p.copy_(ema.shadow[k])
    copy.eval()
    torch.testing.assert_close(averaged_out, copy(x))
    # Restored even when the block raises.
    with pytest.raises(RuntimeError, match="boom"), ema.average_parameters():
        raise RuntimeError("boom")
    for k, p in net.named_parameters():
        assert torch.equal(p, training[k])


def test_ema_state_dict_round_trips_exactly(tmp_path):
    net = small_net()
    ema = ExponentialMovingAverage(net, decay=0.9)
    for step in range(3):
        perturb(net, step)
        ema.update()
    torch.save(ema.state_dict(), tmp_path / "ema.pt")
    other = ExponentialMovingAverage(small_net(5), decay=0.5)
    other.load_state_dict(torch.load(tmp_path / "ema.pt"))
    assert other.decay == 0.9 and other.num_updates == 3
    assert list(other.shadow) == list(ema.shadow)
    for k in ema.shadow:
        assert torch.equal(other.shadow[k], ema.shadow[k])
    # Both continue identically from there.
    perturb(net, 7)
    other.module.load_state_dict(net.state_dict())
    ema.update()
    other.update()
    for k in ema.shadow:
        assert torch.equal(other.shadow[k], ema.shadow[k])


def test_ema_bad_input():
    net = small_net()
    with raises_naming("decay"):
        ExponentialMovingAverage(net, decay=1.5)
    with raises_naming("module"):
        ExponentialMovingAverage(torch.zeros(3))
    ema = ExponentialMovingAverage(net)
    state = ema.state_dict()
    with raises_naming("state_dict"):
        ExponentialMovingAverage(torch.nn.Linear(3, 5)).load_state_dict(state)
    with raises_naming("state_dict"):
        ema.load_state_dict({"shadow": state["shadow"]})
    with raises_naming("state_dict"):
        ema.load_state_dict({**state, "shadow": {k: v for k, v in list(state["shadow"].items())[1:]}})
