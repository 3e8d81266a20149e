"""tools/step_anatomy.py on MonoAvatar's and the 360° portrait's training steps, on CUDA's paths at a tiny size: their
read-backs, copies and operations held as ceilings (lower one when a step does less). MonoAvatar trains without fixed
shapes (its fine pass has no slots yet): its read-backs are the variable sample counts' alone; the portrait trains
with fixed shapes, reads nothing back and, its shapes settled, replays as one CUDA graph (TrainingConfig.cuda_graph)."""

import dataclasses

import pytest
from tiny_configs import TINY_MONOAVATAR, TINY_PORTRAIT

# Today's figures (2026-11-28), a step: ceilings. MonoAvatar: TINY_MONOAVATAR with its error correction on, 1,024
# samples, 2 steps counted after 5 (at this branch's start: 31 read-backs a step on the cpu recipe, 5 copies).
MONOAVATAR_READ_BACKS = 17  # 17 measured: the masks of the sampler, the merge and early termination, the loop's check
MONOAVATAR_OPERATIONS = 2_600  # 2,590 measured
# The portrait: TINY_PORTRAIT, fixed shapes, 1,024 samples, 4 steps after 20 (the rays and march slots settled; steps
# 7-10 still change them). 20 read-backs a step, then 4 (the view balance's), now none.
PORTRAIT_OPERATIONS = 465  # 458 measured (at steps 7-10 441 with the view balance's read-backs, 456 with its draw on the device)


def _fields(config) -> dict:
    return {f.name: getattr(config, f.name) for f in dataclasses.fields(config)}


@pytest.fixture(scope="module")
def anatomy():
    import importlib
    import sys
    from pathlib import Path

    tools = str(Path(__file__).resolve().parents[2] / "tools")
    sys.path.insert(0, tools)
    try:
        yield importlib.import_module("step_anatomy").anatomy
    finally:
        sys.path.remove(tools)
        for name in ("step_anatomy", "host_syncs", "calls", "replay_audit"):
            sys.modules.pop(name, None)


def test_monoavatar_s_step_reads_back_only_its_sample_counts(anatomy):
    steps = 2
    f = anatomy("monoavatar", "paper", 1024, 5, steps, False, 12, 16, overrides=_fields(TINY_MONOAVATAR))
    assert f["copies_to_device"] == 0, f["sites"]  # the correction's window weights made on the device
    assert 0 < f["read_backs"] <= MONOAVATAR_READ_BACKS * steps, f["sites"]
    assert 0 < f["operations"] <= MONOAVATAR_OPERATIONS, f["top_operations"]
    # the UV layout, the rays' frames (one unique a step) and the vertex features read nothing else back
    sites = [line for line in f["sites"] if any(part in line for part in ("encoders/", "geometry/", "deformers/"))]
    assert sites == ["1 x unique in encoders/mesh_features.py:reuse_frame_features (read back)"], f["sites"]


def test_the_portrait_s_step_in_fixed_shapes_reads_nothing_back_and_replays_as_one_graph(anatomy):
    steps = 4
    f = anatomy("portrait360", "paper", 1024, 20, steps, True, 12, 16, overrides=_fields(TINY_PORTRAIT))
    assert f["fixed_shapes"] and f["copies_to_device"] == 0 and f["read_backs"] == 0, f["sites"]
    # the counts and the loss, from host copies two steps later: the GPU has finished that step
    assert f["sites"] == ["2 x tolist in training/host_copy.py:read (a late read of a host copy)"]
    assert f["late_reads"] == 2 * steps
    # a graph captured at the first counted step would replay the others exactly: no shape, scalar or address changes
    assert f["shape_signatures"] == 1
    assert f["replay_signatures"] == 1 and f["replay_differences"] == [], f["replay_differences"]
    assert 0 < f["operations"] <= PORTRAIT_OPERATIONS, f["top_operations"]
