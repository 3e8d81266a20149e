"""Density control of bound Gaussians: clone, split, prune (a face keeps its last Gaussians), opacity reset, the
schedule, the Adam rows that follow their Gaussians, and bad input."""

import dataclasses
import math

import pytest
import torch

from headfields.deformers.gaussian_binding import GaussianSet
from headfields.models.gaussian_avatars import GaussianAvatarConfig
from headfields.models.gaussian_avatars.density import (
    PARAMETER_NAMES,
    DensityConfig,
    DensityControl,
    gaussian_param_groups,
)
from headfields.models.gaussian_avatars.rates import learning_rates

# GaussianAvatars' rates (the recipe's defaults), for a scene of extent 1.
PAPER_RATES = learning_rates(GaussianAvatarConfig(), extent=1.0)

# Every step densifies; the first opacity reset (and the size rules) far away.
EVERY_STEP = DensityConfig(densify_from=0, densification_interval=1, opacity_reset_interval=1000)
HIGH = 1e-5  # pixel gradient: x 100 / 2 = 5e-4 in NDC, above the 2e-4 threshold


def logit(p):
    return math.log(p / (1 - p))


def make_set(rows):
    """Rows of (parent, log scale [3], opacity, quaternion); two faces; the other parameters tell rows apart."""
    n = len(rows)
    index = torch.arange(n, dtype=torch.float32)
    return GaussianSet(
        parent=torch.tensor([r[0] for r in rows]),
        local_means=index[:, None].repeat(1, 3) * 0.1,
        local_quats=torch.tensor([r[3] for r in rows], dtype=torch.float32),
        local_log_scales=torch.tensor([r[1] for r in rows], dtype=torch.float32),
        opacity_logits=torch.tensor([logit(r[2]) for r in rows]),
        sh_dc=index[:, None, None].repeat(1, 1, 3),
        sh_rest=index[:, None, None].repeat(1, 3, 3) + 0.5,
        num_faces=2,
    )


def make_optimizer(gaussians):
    """Adam over the set, with known moments: row i of every exp_avg holds i + 1, of every exp_avg_sq 10 (i + 1)."""
    optimizer = torch.optim.Adam(gaussian_param_groups(gaussians, PAPER_RATES), lr=0.0, eps=1e-15)
    for name in PARAMETER_NAMES:
        getattr(gaussians, name).grad = torch.zeros_like(getattr(gaussians, name))
    optimizer.step()
    for name in PARAMETER_NAMES:
        param = getattr(gaussians, name)
        rows = torch.arange(1.0, gaussians.num_gaussians + 1).reshape(-1, *[1] * (param.dim() - 1)).expand_as(param)
        optimizer.state[param]["exp_avg"] = rows.clone()
        optimizer.state[param]["exp_avg_sq"] = 10 * rows.clone()
    return optimizer


def first_moment_rows(gaussians, optimizer, name, moment="exp_avg"):
    return optimizer.state[getattr(gaussians, name)][moment].reshape(gaussians.num_gaussians, -1)[:, 0].tolist()


ID = (1.0, 0.0, 0.0, 0.0)
QUARTER_Z = (math.sqrt(0.5), 0.0, 0.0, math.sqrt(0.5))  # local x -> local y
SMALL, LARGE = [math.log(0.005)] * 3, [math.log(0.05), math.log(1e-4), math.log(1e-4)]


def test_accumulate_converts_pixel_gradients_to_ndc_and_counts_only_drawn_gaussians():
    control = DensityControl()
    control.accumulate(torch.tensor([[3.0, 4.0], [1.0, 1.0]]), torch.tensor([5, 0]), width=200, height=100)
    control.accumulate(torch.tensor([[0.0, 1.0], [0.0, 2.0]]), torch.tensor([2, 7]), width=200, height=100)
    # (3, 4) px -> (300, 200) NDC; (0, 1) -> (0, 50); (0, 2) -> (0, 100).
    torch.testing.assert_close(control.grad_sum, torch.tensor([math.hypot(300, 200) + 50, 100.0]))
    torch.testing.assert_close(control.count, torch.tensor([2.0, 1.0]))
    torch.testing.assert_close(control.max_radii, torch.tensor([5.0, 7.0]))


def test_clone_split_and_prune_with_the_optimizer_rows_following_their_gaussians():
    rows = [(0, SMALL, 0.5, ID), (1, LARGE, 0.5, QUARTER_Z), (0, SMALL, 0.001, ID), (1, SMALL, 0.5, ID)]
    gaussians = make_set(rows)
    before = {name: getattr(gaussians, name).detach().clone() for name in PARAMETER_NAMES}
    optimizer = make_optimizer(gaussians)
    control = DensityControl(EVERY_STEP, generator=torch.Generator().manual_seed(0))
    control.accumulate(
        torch.tensor([[HIGH, 0.0], [0.0, HIGH], [0.0, 0.0], [0.0, 0.0]]), torch.ones(4, dtype=torch.int32), 100, 100
    )
    counts = control.step(1, gaussians, optimizer, extent=1.0, face_scale=torch.tensor([1.0, 2.0]))
    assert counts == {"cloned": 1, "split": 1, "pruned": 1, "reset": 0}
    # Kept 0 and 3, the clone of 0, the two children of 1; 2 (transparent) pruned.
    assert gaussians.num_gaussians == 5 and gaussians.parent.tolist() == [0, 1, 0, 1, 1]
    for name in PARAMETER_NAMES:
        value = getattr(gaussians, name).detach()
        torch.testing.assert_close(value[:2], before[name][[0, 3]])
        torch.testing.assert_close(value[2], before[name][0])  # the clone: an exact copy
        if name not in ("local_means", "local_log_scales"):
            torch.testing.assert_close(value[3:], before[name][[1, 1]])
        assert optimizer.param_groups[PARAMETER_NAMES.index(name)]["params"][0] is getattr(gaussians, name)
        assert first_moment_rows(gaussians, optimizer, name) == [1.0, 4.0, 0.0, 0.0, 0.0]
        assert first_moment_rows(gaussians, optimizer, name, "exp_avg_sq") == [10.0, 40.0, 0.0, 0.0, 0.0]
    # The children: scale / (0.8 * 2), offsets along the parent's long local axis, turned by its rotation (x -> y).
    torch.testing.assert_close(gaussians.local_log_scales.detach()[3:], before["local_log_scales"][[1, 1]] - math.log(1.6))
    offsets = gaussians.local_means.detach()[3:] - before["local_means"][1]
    assert (offsets[:, 1].abs() > 1e-3).all() and (offsets[:, [0, 2]].abs() < 1e-2).all()
    assert (offsets[:, 1].abs() < 5 * 0.05 * 2).all()  # std: the world scale s' k (k = 2), as densify_and_split
    # Statistics start again; the optimiser still steps.
    assert control.grad_sum.tolist() == [0.0] * 5
    sum(getattr(gaussians, name).sum() for name in PARAMETER_NAMES).backward()
    optimizer.step()


def test_pruning_never_empties_a_face():
    rows = [(0, SMALL, 0.001, ID), (0, SMALL, 0.5, ID), (1, SMALL, 0.001, ID), (1, SMALL, 0.002, ID)]
    gaussians = make_set(rows)
    optimizer = make_optimizer(gaussians)
    counts = DensityControl(EVERY_STEP).step(1, gaussians, optimizer, 1.0, torch.ones(2))
    # Face 0 loses its transparent Gaussian; face 1 would lose both, so keeps both (prune_points, binding_counter).
    assert counts["pruned"] == 1 and gaussians.parent.tolist() == [0, 1, 1]
    assert first_moment_rows(gaussians, optimizer, "opacity_logits") == [2.0, 3.0, 4.0]


def test_size_rules_apply_after_the_first_opacity_reset():
    rows = [(0, [math.log(0.2)] * 3, 0.5, ID), (0, SMALL, 0.5, ID), (0, SMALL, 0.5, ID), (1, SMALL, 0.5, ID)]
    radii = torch.tensor([1, 30, 1, 1])
    config = DensityConfig(densify_from=0, densification_interval=1, opacity_reset_interval=5)
    for step, screen, survivors in [(4, False, 4), (6, False, 3), (6, True, 2)]:
        gaussians = make_set(rows)
        control = DensityControl(dataclasses.replace(config, prune_by_screen_size=screen))
        control.accumulate(torch.zeros(4, 2), radii, 64, 64)
        control.step(step, gaussians, make_optimizer(gaussians), extent=1.0, face_scale=torch.ones(2))
        # Max world scale 0.2 > 0.1 x extent; max radius 30 > 20 pixels only counts when asked for.
        assert gaussians.num_gaussians == survivors and gaussians.parent.tolist()[-1] == 1


def test_opacity_reset_caps_opacities_and_zeroes_their_moments():
    gaussians = make_set([(0, SMALL, 0.5, ID), (1, SMALL, 0.005, ID), (1, SMALL, 0.002, ID)])
    optimizer = make_optimizer(gaussians)
    control = DensityControl(DensityConfig(densify_from=100, opacity_reset_interval=10))
    assert control.step(10, gaussians, optimizer, 1.0, torch.ones(2))["reset"] == 1
    torch.testing.assert_close(torch.sigmoid(gaussians.opacity_logits.detach()), torch.tensor([0.01, 0.005, 0.002]))
    assert first_moment_rows(gaussians, optimizer, "opacity_logits") == [0.0, 0.0, 0.0]
    assert first_moment_rows(gaussians, optimizer, "local_means") == [1.0, 2.0, 3.0]


def test_nothing_happens_off_the_schedule():
    rows = [(0, SMALL, 0.001, ID), (0, SMALL, 0.5, ID), (1, LARGE, 0.5, ID)]
    for step in (9_999, 10_000, 11_000, 12_001, 60_001, 600_000, 610_000):
        gaussians = make_set(rows)
        optimizer = make_optimizer(gaussians)
        params = [getattr(gaussians, name) for name in PARAMETER_NAMES]
        control = DensityControl()  # GaussianAvatars' schedule
        control.accumulate(torch.full((3, 2), HIGH), torch.ones(3, dtype=torch.long), 100, 100)
        assert control.step(step, gaussians, optimizer, 1.0, torch.ones(2)) == {"cloned": 0, "split": 0, "pruned": 0, "reset": 0}
        assert all(getattr(gaussians, name) is p for name, p in zip(PARAMETER_NAMES, params, strict=True))
    gaussians = make_set(rows)
    control = DensityControl()
    control.accumulate(torch.full((3, 2), HIGH), torch.ones(3, dtype=torch.long), 100, 100)
    assert control.step(12_000, gaussians, make_optimizer(gaussians), 1.0, torch.ones(2)) == {
        "cloned": 2,
        "split": 1,
        "pruned": 2,  # the transparent Gaussian and its clone
        "reset": 0,
    }
    assert DensityControl().step(60_000, gaussians, make_optimizer(gaussians), 1.0, torch.ones(2))["reset"] == 1


def test_bad_input_names_the_argument():
    gaussians = make_set([(0, SMALL, 0.5, ID), (1, SMALL, 0.5, ID)])
    optimizer = make_optimizer(gaussians)
    control = DensityControl(EVERY_STEP)
    control.accumulate(torch.zeros(2, 2), torch.ones(2, dtype=torch.long), 10, 10)
    with pytest.raises(ValueError, match="means2d_grad"):
        control.accumulate(torch.zeros(3, 2), torch.ones(3, dtype=torch.long), 10, 10)
    with pytest.raises(ValueError, match="means2d_grad"):
        control.accumulate(torch.full((2, 2), math.nan), torch.ones(2, dtype=torch.long), 10, 10)
    with pytest.raises(ValueError, match="radii"):
        control.accumulate(torch.zeros(2, 2), torch.tensor([1, -1]), 10, 10)
    with pytest.raises(ValueError, match="width"):
        control.accumulate(torch.zeros(2, 2), torch.ones(2, dtype=torch.long), 0, 10)
    with pytest.raises(ValueError, match="face_scale"):
        control.step(1, gaussians, optimizer, 1.0, torch.ones(3))
    with pytest.raises(ValueError, match="extent"):
        control.step(1, gaussians, optimizer, -1.0, torch.ones(2))
    unnamed = torch.optim.Adam(gaussians.parameters())
    with pytest.raises(ValueError, match="optimizer"):
        control.step(1, gaussians, unnamed, 1.0, torch.ones(2))
    with pytest.raises(ValueError, match="lrs"):
        gaussian_param_groups(gaussians, {"local_means": 1e-3})
    with pytest.raises(ValueError, match="densification_interval"):
        DensityConfig(densification_interval=0)
