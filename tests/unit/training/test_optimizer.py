"""The step of a fixed-shape batch whose loss may be non-finite (training.step_if): against torch's own Adam
stepping (or not stepping) the same parameters, for the fused Adam the loop builds and for another optimiser."""

import pytest
import torch
from torch import nn

from headfields.training import OptimizerConfig, build_optimizer, step_if


def _model_and_grads(device, seed=0):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3)).to(device)
    grads = [torch.randn_like(p) for p in model.parameters()]
    return model, grads


def _state(optimizer):
    return [{k: v.clone() if torch.is_tensor(v) else v for k, v in s.items()} for s in optimizer.state.values()]


@pytest.mark.parametrize("finite", [True, False])
def test_the_fused_step_is_adam_s_step_or_none_at_all(device, finite):
    """Two steps (the moments exist), the second under the flag: a finite one is torch's plain Adam step; a
    non-finite one leaves weights, moments and the step count as they were, with NaN gradients too."""
    ours, grads = _model_and_grads(device)
    theirs, _ = _model_and_grads(device)
    optimizer = build_optimizer(ours, OptimizerConfig(learning_rate=1e-2))
    assert optimizer.defaults["fused"]  # the loop's Adam on CPU and CUDA: the flag goes to the kernel
    reference = torch.optim.Adam(theirs.parameters(), lr=1e-2, foreach=False)
    for step in range(2):
        for model in (ours, theirs):
            for p, g in zip(model.parameters(), grads, strict=True):
                p.grad = g.clone() if finite or step == 0 else torch.full_like(g, float("nan"))
        if step == 0:
            optimizer.step()
            reference.step()
            before = ([p.detach().clone() for p in ours.parameters()], _state(optimizer))
            continue
        step_if(optimizer, torch.tensor(finite, device=device))
        if finite:
            reference.step()
            for a, b in zip(ours.parameters(), theirs.parameters(), strict=True):
                torch.testing.assert_close(a, b)
        else:
            for a, b in zip(ours.parameters(), before[0], strict=True):
                assert torch.equal(a, b)
            for a, b in zip(_state(optimizer), before[1], strict=True):
                assert all(torch.equal(a[k], b[k]) for k in a)  # moments and step count
    assert not hasattr(optimizer, "found_inf")  # the flag lives for its step only


def test_another_optimiser_gets_its_gradients_zeroed():
    """An optimiser that takes no flag: the gradients are zeroed instead (SGD without momentum: no change)."""
    model, grads = _model_and_grads("cpu")
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    for p, g in zip(model.parameters(), grads, strict=True):
        p.grad = torch.full_like(g, float("nan"))
    before = [p.detach().clone() for p in model.parameters()]
    step_if(optimizer, torch.tensor(False))
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), before, strict=True))


POSITIVE = r"expected a positive number float32 holds \(at most 3.403e\+38\), got"
NON_NEGATIVE = r"expected a non-negative number float32 holds \(at most 3.403e\+38\), got"


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("learning_rate", float("inf"), f"learning_rate: {POSITIVE} inf"),
        ("learning_rate", float("nan"), f"learning_rate: {POSITIVE} nan"),
        ("learning_rate", -1e-3, f"learning_rate: {POSITIVE} -0.001"),
        # Finite in Python's float64, not in the float32 weights: Adam took it and the checkpoint held inf.
        ("learning_rate", 1e39, f"learning_rate: {POSITIVE} 1e\\+39"),
        ("final_learning_rate", float("inf"), f"final_learning_rate: {POSITIVE} inf"),
        ("betas", (0.9, 1.0), r"betas: expected two numbers in \[0, 1\), got \(0.9, 1.0\)"),
        ("betas", (0.9, float("nan")), r"betas: expected two numbers in \[0, 1\)"),
        ("eps", float("inf"), f"eps: {NON_NEGATIVE} inf"),
        ("eps", 1e39, f"eps: {NON_NEGATIVE} 1e\\+39"),
        ("weight_decay", float("nan"), f"weight_decay: {NON_NEGATIVE} nan"),
    ],
)
def test_a_rate_that_is_not_a_finite_number_is_refused_by_name(field, value, message):
    """Adam takes lr=inf, and the first step turned every weight to NaN: the loss then named a tensor, not the rate."""
    with pytest.raises(ValueError, match=f"^{message}"):
        OptimizerConfig(**{"learning_rate": 1e-3, field: value})


def test_descend_is_a_plain_sgd_step_clipped_after_the_hook_and_none_when_not_finite():
    """The one gradient step: analytic on a quadratic. loss = sum(w^2) has gradient 2w; the hook sees it before the
    step; clipped to norm 1 the step is lr * 2w / |2w|; a non-finite flag leaves w as it was."""
    from headfields.training import descend

    w = nn.Parameter(torch.tensor([3.0, 4.0], dtype=torch.float64))
    sgd = torch.optim.SGD([w], lr=0.1)
    seen = []
    descend([sgd], w.square().sum(), after_backward=lambda: seen.append(w.grad.clone()))
    torch.testing.assert_close(seen[0], torch.tensor([6.0, 8.0], dtype=torch.float64))
    torch.testing.assert_close(w.detach(), torch.tensor([2.4, 3.2], dtype=torch.float64))
    descend([sgd], w.square().sum(), clip=([w], 1.0))
    torch.testing.assert_close(w.detach(), torch.tensor([2.4 - 0.06, 3.2 - 0.08], dtype=torch.float64))
    before = w.detach().clone()
    descend([sgd], w.square().sum() * float("nan"), finite=torch.tensor(False))
    torch.testing.assert_close(w.detach(), before)
