"""tools/step_anatomy.py on MonoAvatar's, the 360° portrait's and the triangle-frame NeuS mix's training steps, on
CUDA's paths at a tiny size: their read-backs, copies and operations held as ceilings (lower one when a step does
less). All train with fixed shapes, read nothing back and, their shapes settled, replay as one CUDA graph
(TrainingConfig.cuda_graph); MonoAvatar without them reads back its variable sample counts."""

import dataclasses

import pytest
from tiny_configs import TINY_MONOAVATAR, TINY_PORTRAIT

# Today's figures (2026-11-29), a step: ceilings. MonoAvatar: TINY_MONOAVATAR with its error correction on, 1,024
# samples, no early termination (its recipes have none), 2 steps counted after 5.
MONOAVATAR_READ_BACKS = 8  # without fixed shapes, 8 measured: the masks of the sampler and the merge, the loop's check
MONOAVATAR_OPERATIONS = 2_400  # with fixed shapes, 2,341 measured (without: 2,231, and 8 read-backs)
# The portrait: TINY_PORTRAIT, fixed shapes, 1,024 samples, 4 steps after 20 (the rays and march slots settled; steps
# 7-10 still change them). 20 read-backs a step, then 4 (the view balance's), now none.
PORTRAIT_OPERATIONS = 465  # 458 measured (at steps 7-10 441 with the view balance's read-backs, 456 with its draw on the device)
# The triangle-frame NeuS mix: its CPU recipe with 16 + 8 samples a ray, fixed shapes without a sample budget (the rays
# that miss the box kept), 2 steps after 2. Without fixed shapes, 3 read-backs a step: the rays that hit the box, the
# up-sampling round's rays with sections, the loop's finite check.
NEUS_OPERATIONS = 1_000  # 975 measured (955 without fixed shapes)
# The hyper NeuS avatar: its paper recipe with small networks and 8 anchors, fixed shapes, 2 steps after 2. Without
# fixed shapes: the rays that hit, the up-sampling's rays, the loop's check (the ensemble's group sizes no more).
HYPER_NEUS_OPERATIONS = 1_800  # 1,763 measured (1,737 and 3 read-backs a step without fixed shapes)


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


def test_monoavatar_s_step_in_fixed_shapes_reads_nothing_back_and_replays_as_one_graph(anatomy):
    steps = 2
    f = anatomy("monoavatar", "paper", 1024, 5, steps, True, 12, 16, overrides=_fields(TINY_MONOAVATAR), early_stop=None)
    assert f["fixed_shapes"] and f["copies_to_device"] == 0 and f["read_backs"] == 0, f["sites"]
    assert f["sites"] == ["2 x tolist in training/host_copy.py:read (a late read of a host copy)"]
    # the batch's frames, the coarse slots, the fine draws on every ray and the merge's slots: one shape, one replay
    assert f["shape_signatures"] == 1
    assert f["replay_signatures"] == 1 and f["replay_differences"] == [], f["replay_differences"]
    assert 0 < f["operations"] <= MONOAVATAR_OPERATIONS, f["top_operations"]


def test_monoavatar_s_step_without_fixed_shapes_reads_back_only_its_sample_counts(anatomy):
    steps = 2
    f = anatomy("monoavatar", "paper", 1024, 5, steps, False, 12, 16, overrides=_fields(TINY_MONOAVATAR), early_stop=None)
    assert f["copies_to_device"] == 0, f["sites"]  # the correction's window weights made on the device
    assert 0 < f["read_backs"] <= MONOAVATAR_READ_BACKS * steps, f["sites"]
    # the batch's frames known, the UV layout and the vertex features read nothing back
    sites = [line for line in f["sites"] if any(part in line for part in ("encoders/", "geometry/", "deformers/"))]
    assert sites == [], f["sites"]


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


def test_the_triangle_neus_mix_s_step_in_fixed_shapes_reads_nothing_back_and_replays_as_one_graph(anatomy):
    from headfields.renderers import NeusSampler

    steps = 2
    small = dict(sampler=NeusSampler(coarse=16, rounds=1, per_round=8, padding=0.03), eikonal_points=64)
    f = anatomy("mix_triangle_neus", "cpu", 0, 2, steps, True, 12, 16, overrides=small)
    assert f["fixed_shapes"] and f["copies_to_device"] == 0 and f["read_backs"] == 0, f["sites"]
    assert f["sites"] == ["1 x tolist in training/host_copy.py:read (a late read of a host copy)"]  # the loss
    assert f["shape_signatures"] == 1
    assert f["replay_signatures"] == 1 and f["replay_differences"] == [], f["replay_differences"]
    assert 0 < f["operations"] <= NEUS_OPERATIONS, f["top_operations"]


def test_the_hyper_neus_avatar_s_step_in_fixed_shapes_reads_nothing_back_and_replays_as_one_graph(anatomy):
    """Its paper recipe with small networks and 8 anchors: the ensemble's members in tiles, the misses kept."""
    from headfields.decoders import AnchorSdfConfig, AppearanceConfig, SdfMlpConfig
    from headfields.deformers import HyperDeformerConfig
    from headfields.renderers import NeusSampler

    small = dict(
        deformer=HyperDeformerConfig(hidden_dim=16, hidden_layers=2, skip_layer=1),
        num_anchors=8,
        anchor_sdf=AnchorSdfConfig(local=SdfMlpConfig(hidden_dim=16, hidden_layers=2), neighbours=4, sigma_rank=4),
        appearance=AppearanceConfig(hidden_dim=16, hidden_layers=2, feature_dim=8),
        sampler=NeusSampler(coarse=16, rounds=1, per_round=8, padding=0.04),
        eikonal_points=64,
        correspondence_vertices=64,
    )
    f = anatomy("hyper_neus", "paper", 0, 2, 2, True, 12, 16, overrides=small)
    assert f["fixed_shapes"] and f["copies_to_device"] == 0 and f["read_backs"] == 0, f["sites"]
    assert f["shape_signatures"] == 1
    assert f["replay_signatures"] == 1 and f["replay_differences"] == [], f["replay_differences"]
    assert 0 < f["operations"] <= HYPER_NEUS_OPERATIONS, f["top_operations"]
