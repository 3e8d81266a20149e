"""tools/profile_step.py: the ranges of its table of primitives (tools/primitive_ranges.py: every link of a deformer
chain gets its row, as a chain calls its links' ``canonicalize``, which forward hooks never see, nested under the
chain); the device's busy time as the union of its intervals; and ``--train``, a training run as a user runs it,
profiled between two optimiser steps."""

import json

import pytest
import torch
from torch.profiler import ProfilerActivity, profile

from headfields.deformers import DeformerChain, RigidDeformer
from headfields.heads import tracked_head
from headfields.parametric import load_model


@pytest.fixture
def primitive_ranges(tool_script):
    return tool_script("primitive_ranges")


def test_every_link_of_a_chain_gets_its_range(primitive_ranges, tiny_video):
    frames = tiny_video[0]
    head = tracked_head(load_model(frames.model_path, frames.model_type), frames)
    model = torch.nn.Module()
    model.deformer = DeformerChain(RigidDeformer(), RigidDeformer())
    labels = primitive_ranges.hook_primitives(model)
    assert labels == [
        "deformer (DeformerChain)",
        "deformer.deformers.0 (RigidDeformer)",
        "deformer.deformers.1 (RigidDeformer)",
    ]
    x = torch.randn(64, 3) * 0.1
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        out = model.deformer(x, head, 0)
    counts = {e.key: e.count for e in prof.key_averages()}
    assert all(counts.get(label) == 1 for label in labels), counts
    # The same points as without the ranges: the wrap changes nothing.
    torch.testing.assert_close(out.points, DeformerChain(RigidDeformer(), RigidDeformer())(x, head, 0).points)


@pytest.fixture
def profile_step(tool_script):
    return tool_script("profile_step")


def test_busy_time_counts_overlapping_intervals_once(profile_step):
    assert profile_step.busy_seconds([]) == 0.0
    assert profile_step.busy_seconds([(0.0, 2.0), (1.0, 3.0), (2.5, 2.75), (5.0, 6.0)]) == 4.0


def test_a_training_run_is_profiled_between_its_optimiser_steps(profile_step, tiny_video, tmp_path, capsys):
    figures = tmp_path / "figures.json"
    train = ["--data", str(tiny_video[0].root), "--device", "cpu", "--out", str(tmp_path / "run"), "--recipe", "cpu"]
    train += ["--max-iterations", "20", "--rays-per-batch", "64", "--eval-every", "0", "--checkpoint-every", "0"]
    with pytest.raises(SystemExit) as ended:
        profile_step.main(["--train", "insta", "--warmup", "2", "--steps", "3", "--json", str(figures), "--", *train])
    assert ended.value.code == 0
    found = json.loads(figures.read_text())
    assert found["steps"] == 3 and found["wall_ms_per_step"] > 0 and found["aten_ops_per_step"] > 0
    assert "note" in found or found["kernels_per_step"] > 0  # host figures only without CUDA


def test_a_run_that_ends_before_the_window_closes_says_so(profile_step, tiny_video, tmp_path, capsys):
    train = ["--data", str(tiny_video[0].root), "--device", "cpu", "--out", str(tmp_path / "run"), "--recipe", "cpu"]
    train += ["--max-iterations", "3", "--rays-per-batch", "64", "--eval-every", "0", "--checkpoint-every", "0"]
    with pytest.raises(SystemExit) as ended:
        profile_step.main(["--train", "insta", "--warmup", "2", "--steps", "3", "--", *train])
    assert ended.value.code == 1
    assert "nothing profiled" in capsys.readouterr().err
    assert not torch.autograd._profiler_enabled()  # the window it opened is closed
