"""tools/step_anatomy.py: what INSTA's paper training step asks of a GPU, counted on the CPU on CUDA's paths. The
figures are held here so that they cannot creep back (issue 78); lower a ceiling when the step does less. Its counters
are checked against what they count: the torch operations against torch's own profiler, the host traffic against the
spy's sites."""

import pytest
from tiny_configs import TINY_PAPER_STEP

# INSTA's paper recipe on the tiny video (TINY_PAPER_STEP), 1,024 samples a step: 4 steps counted after 12 (the grid
# and the rays settled), one refresh among them.

# Today's figures (2026-11-28): ceilings.
OPERATIONS = 274  # torch operations that do work, a step (median of the 4; 270 measured)
EAGER_OPERATIONS = 6  # of them, outside what TrainingConfig.cuda_graph captures (5 measured)
WARP_LAUNCHES = 10  # issue 78's ceiling: early termination's count and compaction are two of them
TABLE_ADDS = 0.1  # the table gradient's row adds against a thread a point and level's (0.082; at 2^14 and INSTA's grid 0.39)
ROWS = 6.0  # deformer rows per trained sample in the step's passes: the march's slots, padding included (5.42; at
# 2^18 samples and the paper's grid, 1.28)


@pytest.fixture(scope="module")
def figures(tmp_path_factory):
    import importlib
    import sys
    from pathlib import Path

    tools = str(Path(__file__).resolve().parents[2] / "tools")
    sys.path.insert(0, tools)
    try:
        anatomy = importlib.import_module("step_anatomy")
        return anatomy.anatomy(samples=1024, warmup=12, steps=4, resolution=16, overrides=TINY_PAPER_STEP)
    finally:
        sys.path.remove(tools)
        for name in ("step_anatomy", "host_syncs", "calls"):
            sys.modules.pop(name, None)


def test_insta_s_step_launches_no_more_than_today(figures):
    assert figures["steps"] == 4 and figures["fixed_shapes"]
    assert figures["shape_signatures"] == 1  # past the grid's warm-up, a refresh among the steps: a CUDA graph's one
    # and a graph captured at the first would replay the others exactly: no scalar, address or launch changes
    assert figures["replay_signatures"] == 1 and figures["replay_differences"] == [], figures["replay_differences"]
    # with cuda_graph, what a step launches besides the graph: the host copies of the loss and counts, the EMA
    assert 0 < figures["eager_operations"] <= EAGER_OPERATIONS, figures["eager_top_operations"]
    assert 0 < figures["operations"] <= OPERATIONS, figures["top_operations"]
    assert figures["operations_most"] > figures["operations"]  # the refresh's step launches more
    assert 0 < figures["warp_launches"] <= WARP_LAUNCHES


def test_insta_s_step_copies_nothing_and_reads_nothing_back(figures):
    assert figures["copies_to_device"] == 0 and figures["read_backs"] == 0
    # the loss and the counts of the step two before, from host copies: the GPU has finished that step
    assert figures["sites"] == ["2 x tolist in training/host_copy.py:read (a late read of a host copy)"]
    assert figures["late_reads"] == 2 * figures["steps"]


def test_insta_evaluates_each_trained_sample_no_more_often_than_today(figures):
    assert 0 < figures["trained_per_step"] <= 1024
    step, refresh = figures["deformer_rows_per_trained_sample"], figures["deformer_rows_per_trained_sample_in_refresh"]
    assert 1 < step <= ROWS and 0 < refresh
    assert figures["hash_grid_rows_per_trained_sample"] == step  # INSTA encodes what it deforms, once each


def test_insta_s_table_gradient_adds_a_ray_s_samples_up_before_the_table(figures):
    # a thread a point and level adds its cell's 8 corner rows; a run of a ray's samples adds them once a cell, and on
    # CUDA's paths (these) keeps the rows the next cell shares
    adds, a_point_a_thread = figures["table_adds_per_trained_sample"], figures["table_adds_per_trained_sample_a_point_a_thread"]
    assert 0 < adds <= TABLE_ADDS * a_point_a_thread, (adds, a_point_a_thread)


def test_the_operation_counter_counts_kernels_not_views_and_tells_shapes_apart(tool_script):
    import torch

    anatomy = tool_script("step_anatomy")

    def work(n: int):
        x = torch.randn(n, requires_grad=True)
        y = x.view(2, n // 2).t()  # views: no kernel
        # mul, add, sum; backward: its seed (ones_like), the mul's mul, and the leaf's gradient stored (a clone: the
        # gradient reaching it is transposed)
        (y * 2 + 1).sum().backward()

    counted = []
    for n in (8, 8, 10):
        with anatomy.OperationCounter() as counter:
            work(n)
        counted.append(counter)
    assert counted[0].operations == {"randn": 1, "mul": 2, "add": 1, "sum": 1, "ones_like": 1, "clone": 1}, counted[0].operations
    assert counted[0].shapes == counted[1].shapes != counted[2].shapes  # one signature a shape


def test_the_replay_recorder_tells_a_step_a_graph_would_replay_from_one_it_would_not(tool_script):
    import torch
    import warp as wp

    audit = tool_script("replay_audit")
    tool_script("calls")  # (imported by it: forgotten after the test too)
    weights = torch.ones(4)

    @wp.kernel
    def scale(x: wp.array(dtype=float), by: float):
        x[wp.tid()] = x[wp.tid()] * by

    def steps(step):
        recorder = audit.ReplayRecorder()
        with recorder, audit.watched_launches(recorder):
            for n in range(3):
                step(n)
                recorder.next_step()
        return len({tuple(s) for s in recorder.steps}), audit.differences(recorder)

    def same(n):  # its own tensors (new each step), the weights updated in place, a constant
        x = weights * 2 + torch.zeros(4)
        wp.launch(scale, dim=4, inputs=[wp.from_torch(x), 0.5], device="cpu")
        weights.add_(x.sum() * 1e-3)

    assert steps(same) == (1, [])
    count, found = steps(lambda n: weights.mul_(1 + n))  # a scalar from the step number: a graph keeps the first
    assert count == 3 and found[0]["name"] == "mul_" and "1" in found[0]["first"] and "2" in found[0]["then"]
    elsewhere = [torch.ones(4) for _ in range(3)]  # made outside the step, at another address each step
    count, found = steps(lambda n: weights.add_(elsewhere[n]))
    assert count == 3 and "'at'" in found[0]["first"]
    count, found = steps(lambda n: wp.launch(scale, dim=4, inputs=[wp.from_torch(weights), 1.0 + n], device="cpu"))
    assert count == 3 and found[0]["name"].startswith("warp:")


def test_the_table_adds_counter_counts_what_the_kernel_adds(tool_script):
    """TableAdds' count from cells against the table gradient's own rule run by hand, a point at a time: a run's rows
    added when its cell changes (on CUDA's path only those the next cell does not share) and at its end. Dense levels
    (no hash collision): rays whose samples stay, step to a face, an edge or a corner neighbour, and jump."""
    import types

    import torch

    from headfields.device_paths import cuda_paths

    anatomy = tool_script("step_anatomy")
    gen = torch.Generator().manual_seed(3)
    origins = torch.rand(30, 3, generator=gen)
    directions = torch.nn.functional.normalize(torch.randn(30, 3, generator=gen), dim=-1)
    steps = torch.rand(30, generator=gen) * 0.2  # a sample's step: from within a cell to several cells
    t = torch.arange(23)[None, :] * steps[:, None]
    points = (origins[:, None] + t[..., None] * directions[:, None]).reshape(-1, 3).clamp(0, 1)
    resolutions, run = (4, 16, 64), 16
    levels = torch.tensor([[r, 1, 0, (r + 1) ** 3] for r in resolutions], dtype=torch.int32)

    def rows(point, res):  # the 8 corners' rows of a dense level, in _level_corners' order
        cell = torch.minimum(torch.floor(point * res), torch.tensor(res - 1.0)).long()
        strides = torch.tensor([1, res + 1, (res + 1) ** 2])
        return [int(((cell + torch.tensor([c & 1, c >> 1 & 1, c >> 2 & 1])) * strides).sum()) for c in range(8)]

    def by_hand(carry: bool) -> int:
        adds = 0
        for res in resolutions:
            for first in range(0, len(points), run):
                held = rows(points[first], res)
                for i in range(first + 1, min(first + run, len(points))):
                    row = rows(points[i], res)
                    if row != held:
                        adds += sum(1 for h in held if not (carry and h in row))
                    held = row
                adds += 8
        return adds

    counted = {}
    for carry in (False, True):
        counter = anatomy.TableAdds()
        counter.on = True
        frame = types.SimpleNamespace(f_code=counter.code, f_locals={"levels": levels, "points": points, "run": run})
        with cuda_paths(carry):
            counter.hook(frame, "call", None)
        assert counter.adds == by_hand(carry) and counter.point_adds == 8 * len(resolutions) * len(points)
        counted[carry] = counter.adds
    assert counted[True] < counted[False] < 8 * len(resolutions) * len(points), counted
