"""tools/step_anatomy.py on MonoAvatar's and the 360° portrait's training steps, on CUDA's paths at a tiny size: their
read-backs, copies and operations held as ceilings (lower one when a step does less). MonoAvatar trains without fixed
shapes (its fine pass has no slots yet): its read-backs are the variable sample counts' alone; the portrait trains
with fixed shapes: its only read-backs are the view balance's, where the loop draws the rays."""

import dataclasses

import pytest
from tiny_configs import TINY_MONOAVATAR, TINY_PORTRAIT

# Today's figures (2026-11-28), a step: ceilings. MonoAvatar: TINY_MONOAVATAR with its error correction on, 1,024
# samples, 2 steps counted after 5 (at this branch's start: 31 read-backs a step on the cpu recipe, 5 copies).
MONOAVATAR_READ_BACKS = 17  # 17 measured: the masks of the sampler, the merge and early termination, the loop's check
MONOAVATAR_OPERATIONS = 2_600  # 2,590 measured
# The portrait: TINY_PORTRAIT, fixed shapes, 1,024 samples, 4 steps after 6 (20 read-backs a step before).
PORTRAIT_READ_BACKS = 4  # the view balance's bincount, tolist (2) and int: the batch drawn from the frames' bins
PORTRAIT_OPERATIONS = 450  # 441 measured


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


def test_the_portrait_s_step_in_fixed_shapes_reads_back_only_the_view_balance(anatomy):
    steps = 4
    f = anatomy("portrait360", "paper", 1024, 6, steps, True, 12, 16, overrides=_fields(TINY_PORTRAIT))
    assert f["fixed_shapes"] and f["copies_to_device"] == 0
    assert f["read_backs"] <= PORTRAIT_READ_BACKS * steps, f["sites"]
    assert all("renderers/view_balance.py" in line or "a late read" in line for line in f["sites"]), f["sites"]
    assert f["late_reads"] == 2 * steps  # the counts and the loss, from host copies two steps later
    assert 0 < f["operations"] <= PORTRAIT_OPERATIONS, f["top_operations"]
    assert f["shape_signatures"] <= 2  # the slots kept from step to step (a change of rays: a second)
