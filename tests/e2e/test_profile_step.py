"""tools/primitive_ranges.py, the ranges of tools/profile_step.py's table of primitives: every link of a deformer
chain gets its row (a chain calls its links' ``canonicalize``, which forward hooks never see), nested under the
chain."""

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
