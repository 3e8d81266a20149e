"""The one loop of a fit: the learning rates it sets (decayed, scheduled) and where its hook runs (run_stage, built on
it: test_neus_tracking.py)."""

import pytest
import torch

from headfields.fitting import decayed_steps


def test_rates_decay_and_follow_the_schedule():
    x = torch.zeros(1, requires_grad=True)
    sgd = torch.optim.SGD([{"params": [x], "lr": 0.1}])
    seen = []

    def loss(step):
        seen.append(sgd.param_groups[0]["lr"])
        return (x - 1).square().sum(), {}

    decayed_steps([sgd], 5, loss, decay=0.01, factors=lambda step: [[2.0 if step >= 3 else 1.0]])
    expected = [0.1 * 0.01 ** (s / 4) * (2.0 if s >= 3 else 1.0) for s in range(5)]
    assert seen == pytest.approx(expected, rel=1e-12)


def test_after_backward_sees_the_gradient_before_the_step():
    x = torch.tensor([3.0], requires_grad=True)
    events = []
    sgd = torch.optim.SGD([x], lr=0.5)

    def masked():
        events.append(("grad", float(x.grad), float(x.detach())))
        x.grad.mul_(0.5)  # what a mask does: the step takes the changed gradient

    history = decayed_steps([sgd], 1, lambda step: (x.square().sum(), {}), after_backward=masked)
    assert events == [("grad", 6.0, 3.0)] and float(x) == pytest.approx(3.0 - 0.5 * 3.0)
    assert history.steps == 1 and history.logs[-1]["loss"] == 9.0
