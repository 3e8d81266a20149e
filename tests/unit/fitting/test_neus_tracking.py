"""The stage loop that MonoNPHM's and the hyper NeuS avatar's tracking share: Adam's steps follow the schedule
(a constant gradient moves Adam by its learning rate a step), fixed groups stay fixed, gradients can be edited
between the backward pass and the step; the pose correction against a closed form."""

import math

import pytest
import torch

from headfields.fitting import corrected_pose, run_stage, scheduled


def test_adam_steps_follow_the_schedule_and_fixed_groups_stay():
    moving, fixed, edited = (torch.zeros((), requires_grad=True) for _ in range(3))
    values = []

    def loss(step: int) -> torch.Tensor:
        values.append(float(moving.detach()))
        return moving + fixed + edited

    def after_backward() -> None:
        edited.grad.neg_()  # the step sees the edited gradient

    groups = [("a", [moving], 0.1), ("a", [fixed], 0.0), ("b", [edited], 0.1)]
    run_stage(groups, 4, loss, schedule=((0.5, "a", 0.5), (0.75, "a", 0.0)), after_backward=after_backward)
    values.append(float(moving.detach()))
    steps = [b - a for a, b in zip(values[:-1], values[1:], strict=True)]
    assert steps == pytest.approx([-0.1, -0.1, -0.05, 0.0], abs=1e-6)  # a constant gradient: Adam moves by its rate
    assert float(fixed.detach()) == 0.0 and float(edited.detach()) == pytest.approx(0.4, abs=1e-6)
    assert scheduled((), "a", 3, 4) == 1.0


def test_corrected_pose_rotates_in_the_head_frame_then_shifts():
    rotation = torch.tensor([[[0.0, 0.0, 1.0], [0.0, 1.0, 0.0], [-1.0, 0.0, 0.0]]])  # tracked: a quarter turn about y
    omega = torch.tensor([[0.0, 0.0, math.pi / 4]])  # exp((0, w)) turns by 2|w|: a quarter turn about the head's z
    r, t = corrected_pose(rotation, torch.tensor([[1.0, 2.0, 3.0]]), omega, torch.tensor([[0.1, 0.0, 0.0]]))
    turn = torch.tensor([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    torch.testing.assert_close(r[0], rotation[0] @ turn, atol=1e-6, rtol=0)
    torch.testing.assert_close(t, torch.tensor([[1.1, 2.0, 3.0]]))
