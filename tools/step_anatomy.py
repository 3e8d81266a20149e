"""What a training step asks of a GPU, counted on the CPU on CUDA's code paths (``headfields.device_paths.cuda_paths``):
per step, the torch operations that do work (each a kernel launch on a GPU) and those of them outside the part that
``TrainingConfig.cuda_graph`` captures (the loop's ``ray_step``: with a graph, a step launches these and one replay),
the Warp launches, the copies of host values to the device and the read-backs from it (``host_syncs.py``; apart
from them, the late reads of host copies made steps earlier, which wait for nothing), the distinct shape signatures
and replay signatures (``replay_audit.py``: a graph captured at the first counted step would replay steps of one
signature exactly) over the counted steps (the occupancy refresh apart), and the rows the deformer and the hash grid
evaluate per trained sample.

    python tools/step_anatomy.py                          # INSTA's paper recipe, fixed shapes, 16 steps after 20
    python tools/step_anatomy.py --model insta --samples 65536 --steps 16 --json insta.json
    python tools/step_anatomy.py --no-fixed-shapes        # the shapes following the sample budget

The model is built from its registry entry's recipe (``--recipe``, default ``paper``) with a smaller hash table
(``--log2-table-size``: the launches and operations do not depend on it) and trained by ``headfields.training.train``
on a small synthetic video (``--resolution`` pixels, 8 frames) with the recipe's training defaults, the sample budget
``--samples``, early termination at 1e-4 (``--early-stop``; 0: off) and, by default, fixed shapes. The first
``--warmup`` steps run uncounted (Warp compiles, the occupancy grid passes its warm-up, the budget settles), then
``--steps`` steps are counted, between torch's optimiser-step hooks (the library is not touched: the counters are a
torch dispatch mode, a torch function mode, Python's profile hook and forward hooks on the model's deformer and hash
grids). 16 steps hold one occupancy refresh, as training pays it. The milliseconds are this CPU's wall time a step on
CUDA's paths (slower than its own paths): a host figure for comparing two versions of the code here, not a GPU's time.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import inspect
import json
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import torch
import warp as wp
from torch import nn
from torch.optim.optimizer import register_optimizer_step_post_hook
from torch.utils._python_dispatch import TorchDispatchMode, _disable_current_modes
from torch.utils._pytree import tree_leaves

from headfields.device_paths import cuda_paths, takes_cuda_path
from headfields.encoders import HashGrid, hashgrid
from headfields.models.registry import MODELS
from headfields.renderers import EARLY_STOP_TRANSMITTANCE
from headfields.synthetic import SyntheticVideoConfig, synthetic_subject
from headfields.training import train
from headfields.training.loop import _Loop

from calls import NO_KERNEL, counted_calls, profiled
from host_syncs import HostSyncSpy
from replay_audit import ReplayRecorder, differences, watched_launches

# Warp's launches, and its BVH refits (a kernel each inside Warp, per frame mesh whose vertices moved).
WARP_LAUNCHES = (wp.launch, wp.launch_tiled, wp.Mesh.refit, wp.Bvh.refit)


class OperationCounter(TorchDispatchMode):
    """The torch operations dispatched inside the block that do work (not in NO_KERNEL), forward and backward, each with
    the shapes of its tensors (while ``shaping``): a step's shape signature is their sequence."""

    def __init__(self, graphed: dict | None = None):
        super().__init__()
        self.operations: Counter[str] = Counter()
        self.eager: Counter[str] = Counter()  # those outside the graphed part (while graphed["depth"] is 0)
        self.shapes: list[tuple] = []
        self.shaping = True
        self.graphed = graphed

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = func.overloadpacket.__name__
        if name not in NO_KERNEL:
            self.operations[name] += 1
            if self.graphed is not None and not self.graphed["depth"]:
                self.eager[name] += 1
        if name not in NO_KERNEL and self.shaping:
            leaves = tree_leaves((args, kwargs))
            self.shapes.append((name, tuple(tuple(x.shape) for x in leaves if isinstance(x, torch.Tensor))))
        return func(*args, **kwargs)


@contextlib.contextmanager
def running(function, state: dict) -> Iterator[None]:
    """``state["depth"]``: how many calls of ``function`` are running on this thread, within the block
    (``calls.profiled``)."""
    code = inspect.unwrap(function).__code__
    frame, state["depth"] = sys._getframe(), 0
    while frame is not None:  # the calls already running (the block may open inside one)
        state["depth"] += frame.f_code is code
        frame = frame.f_back

    def hook(frame, event, arg):
        if frame.f_code is code and event in ("call", "return"):
            state["depth"] += 1 if event == "call" else -1

    with profiled(hook):
        yield


class _Closed(Exception):
    """The counted window closed: the run stops there."""


class RowCounter:
    """Rows each of the model's deformers (the ``deformer`` of each of its fields) and hash grids evaluate while
    ``on``, by forward hooks, by ``phase`` (the step's passes, or the occupancy refresh before it)."""

    def __init__(self, model: nn.Module):
        self.on, self.phase, self.rows = False, "step", Counter()
        deformers = {id(d): d for m in model.modules() if isinstance(d := getattr(m, "deformer", None), nn.Module)}
        grids = [m for m in model.modules() if isinstance(m, HashGrid)]
        for kind, modules in (("deformer", deformers.values()), ("hash grid", grids)):
            for module in modules:
                module.register_forward_hook(self._hook(kind))

    def _hook(self, kind: str):
        def count(module, inputs, output) -> None:
            if self.on:
                self.rows[(self.phase, kind)] += inputs[0].shape[0]

        return count


class TableAdds:
    """The rows the hash grids' table gradients add into while ``on`` (``hashgrid._table_gradient``'s kernel: a thread
    adds up a run of ``run`` consecutive points of a level and, when the cell changes, adds those of its 8 corner rows
    the next cell does not share; all 8 on the CPU's own path), and the rows a thread a point and level would add (8
    each): each add is a row of atomic adds on a GPU. Cells stand for the rows (a hash collision aside)."""

    def __init__(self):
        self.on, self.adds, self.point_adds = False, 0, 0
        self.code = inspect.unwrap(hashgrid._table_gradient).__code__

    def hook(self, frame, event, arg) -> None:
        if event != "call" or frame.f_code is not self.code or not self.on:
            return
        levels, points = frame.f_locals["levels"], frame.f_locals["points"]
        with torch._C.DisableTorchFunction(), _disable_current_modes():  # the other counters' modes: not the step's
            resolution = levels[:, 0, None, None].to(points.dtype)
            cells = torch.minimum(torch.floor(points.clamp(0, 1) * resolution), resolution - 1)  # [levels, N, 3]
            step = (cells[:, 1:] - cells[:, :-1]).abs()
            # A step to a neighbouring cell keeps the corners the two share (a face's 4, an edge's 2, a vertex).
            kept = torch.where((step <= 1).all(-1), (2 - step).prod(-1), 0) if takes_cuda_path(points.device) else 0
            flushed = torch.where((step != 0).any(-1), hashgrid.CORNERS - kept, 0)
            runs_start = torch.arange(1, points.shape[0], device=points.device) % frame.f_locals["run"] == 0
            flushed = torch.where(runs_start, hashgrid.CORNERS, flushed)
            adds = int(flushed.sum()) + hashgrid.CORNERS * levels.shape[0] * min(points.shape[0], 1)
        self.adds += adds
        self.point_adds += hashgrid.CORNERS * levels.shape[0] * points.shape[0]


def build(name: str, recipe: str, log2_table_size: int, resolution: int, overrides: dict | None = None):
    """The model and its subject: the recipe with a smaller hash table and ``overrides``, on a small synthetic video."""
    entry = MODELS[name]
    config = entry.recipe(recipe)
    if dataclasses.is_dataclass(getattr(config, "hash_grid", None)):
        config = dataclasses.replace(config, hash_grid=dataclasses.replace(config.hash_grid, log2_table_size=log2_table_size))
    config = dataclasses.replace(config, **(overrides or {}))
    video = SyntheticVideoConfig(num_frames=8, num_val=1, num_test=2, resolution=resolution, episode_frames=2)
    subject = synthetic_subject(video)
    torch.manual_seed(0)
    return entry, entry.build(subject, config), subject


def anatomy(
    name: str = "insta",
    recipe: str = "paper",
    samples: int = 1 << 14,
    warmup: int = 20,
    steps: int = 16,
    fixed_shapes: bool = True,
    log2_table_size: int = 14,
    resolution: int = 32,
    timed: int = 8,
    overrides: dict | None = None,
    early_stop: float | None = EARLY_STOP_TRANSMITTANCE,
) -> dict:
    """Train model ``name`` on CUDA's paths and count steps ``warmup + 1`` to ``warmup + steps``; the ``timed`` steps
    before them are timed, uncounted. ``overrides``: recipe fields set. Returns the figures a step (medians over the
    counted steps), their totals and the rows evaluated per trained sample."""
    timed = min(timed, warmup)
    entry, model, subject = build(name, recipe, log2_table_size, resolution, overrides)
    # Without a budget, fixed shapes where the model's follow from its rays (the triangle-frame NeuS avatar)
    fixed_shapes = fixed_shapes and (bool(samples) or model.renders_every_ray)
    budget = dict(fixed_shapes=fixed_shapes)
    if samples:
        budget.update(samples_per_batch=samples, early_stop=early_stop)
    config = dataclasses.replace(
        entry.training_defaults(recipe), **budget, max_iterations=warmup + steps + 1, max_minutes=None, eval_every=0,
        checkpoint_every=0, log_every=10**9,
    )  # fmt: skip
    rows, table_adds = RowCounter(model), TableAdds()
    trained: list = []
    training_step = model.training_step

    def counting_step(*args, **kwargs):  # the model's own step; its count kept (a device tensor: read after the window)
        out = training_step(*args, **kwargs)
        if rows.on and out.samples is not None:  # (a model may count none: a rasterised one, the hyper NeuS avatar)
            trained.append(out.samples.trained)
        return out

    model.training_step = counting_step
    counters: dict = {}
    # The occupancy refresh (before_step: nothing where a model has none), its rows and shapes apart.
    before_step = model.before_step

    def refreshing(*args, **kwargs):
        rows.phase = "refresh"
        if "ops" in counters:
            counters["ops"].shaping = counters["replay"].recording = False
        try:
            return before_step(*args, **kwargs)
        finally:
            rows.phase = "step"
            if "ops" in counters:
                counters["ops"].shaping = counters["replay"].recording = True

    model.before_step = refreshing
    state = {"n": 0, "times": [], "steps": []}

    def open_counters() -> None:
        graphed: dict = {}
        counters["ops"], counters["spy"], counters["replay"] = OperationCounter(graphed), HostSyncSpy(), ReplayRecorder()
        counters["launches"] = counted_calls(*WARP_LAUNCHES)
        counters["calls"] = counters["launches"].__enter__()
        counters["watch"] = watched_launches(counters["replay"])
        counters["watch"].__enter__()
        counters["graphed"] = running(_Loop.ray_step, graphed)  # what TrainingConfig.cuda_graph captures
        counters["graphed"].__enter__()
        counters["table_adds"] = profiled(table_adds.hook)
        counters["table_adds"].__enter__()
        counters["spy"].__enter__()
        counters["replay"].__enter__()
        counters["ops"].__enter__()
        rows.on = table_adds.on = True

    def close_counters() -> None:
        rows.on = table_adds.on = False
        counters["ops"].__exit__(None, None, None)
        counters["replay"].__exit__(None, None, None)
        counters["table_adds"].__exit__(None, None, None)
        counters["graphed"].__exit__(None, None, None)
        counters["watch"].__exit__(None, None, None)
        counters["spy"].__exit__(None, None, None)
        counters["launches"].__exit__(None, None, None)

    def after_step(optimizer, args_, kwargs_) -> None:
        state["n"] += 1
        n, now = state["n"], time.perf_counter()
        if warmup - timed < n <= warmup:
            state["times"].append(now - state["last"])
        state["last"] = now
        if n == warmup:
            open_counters()
        elif warmup < n <= warmup + steps:
            ops, spy, calls = counters["ops"], counters["spy"], counters["calls"]
            state["steps"].append({
                "operations": sum(ops.operations.values()),
                "eager_operations": sum(ops.eager.values()),
                "eager_by_operation": dict(ops.eager),
                "warp_launches": sum(calls.values()),
                "copies_to_device": sum(spy.copies.values()),
                "read_backs": sum(spy.reads.values()),
                "late_reads": sum(spy.late.values()),
                "signature": hash(tuple(ops.shapes)),
                "by_operation": dict(ops.operations),
                "sites": spy.report(),
            })  # fmt: skip
            counters["replay"].next_step()
            ops.operations.clear()
            ops.eager.clear()
            ops.shapes.clear()
            calls.clear()
            spy.reads.clear()
            spy.copies.clear()
            spy.late.clear()
            if n == warmup + steps:
                close_counters()
                raise _Closed

    hook = register_optimizer_step_post_hook(after_step)
    try:
        with tempfile.TemporaryDirectory() as out, cuda_paths():
            state["last"] = time.perf_counter()
            train(model, subject.train, subject.eval, Path(out) / "run", config, log=None)
    except _Closed:
        pass
    finally:
        hook.remove()
        if rows.on:
            close_counters()
    counted, replay = state["steps"], counters["replay"]
    if len(counted) < steps:
        raise RuntimeError(f"the run ended after {state['n']} steps, before the window of steps {warmup + 1}-{warmup + steps}")
    trained_total = float(sum(float(t) for t in trained)) if trained else None
    median = lambda key: statistics.median(s[key] for s in counted)  # noqa: E731
    return {
        "model": name,
        "recipe": recipe,
        "fixed_shapes": fixed_shapes,
        "samples_per_batch": samples,
        "steps": steps,
        "operations": median("operations"),
        "operations_most": max(s["operations"] for s in counted),
        "eager_operations": median("eager_operations"),
        "eager_operations_most": max(s["eager_operations"] for s in counted),
        "eager_top_operations": Counter(sum((Counter(s["eager_by_operation"]) for s in counted), Counter())).most_common(),
        "warp_launches": median("warp_launches"),
        "warp_launches_most": max(s["warp_launches"] for s in counted),
        "copies_to_device": sum(s["copies_to_device"] for s in counted),
        "read_backs": sum(s["read_backs"] for s in counted),
        "late_reads": sum(s["late_reads"] for s in counted),
        "shape_signatures": len({s["signature"] for s in counted}),
        "replay_signatures": len({tuple(s) for s in replay.steps}),
        "replay_differences": differences(replay),
        "trained_per_step": None if trained_total is None else trained_total / steps,
        **{
            f"{kind.replace(' ', '_')}_rows_per_trained_sample{'' if phase == 'step' else '_in_refresh'}": (
                None if not trained_total else rows.rows[(phase, kind)] / trained_total
            )
            for phase in ("step", "refresh")
            for kind in ("deformer", "hash grid")
        },
        "table_adds_per_trained_sample": None if not trained_total else table_adds.adds / trained_total,
        "table_adds_per_trained_sample_a_point_a_thread": None if not trained_total else table_adds.point_adds / trained_total,
        "wall_ms": 1e3 * statistics.median(state["times"]) if state["times"] else None,
        "top_operations": Counter(sum((Counter(s["by_operation"]) for s in counted), Counter())).most_common(),
        "sites": sorted({line for s in counted for line in s["sites"].splitlines()}),
    }


def print_figures(f: dict) -> None:
    shapes = "fixed shapes" if f["fixed_shapes"] else "shapes following the budget"
    budget = f"{f['samples_per_batch']:,} samples a step, {shapes}" if f["samples_per_batch"] else "the recipe's rays"
    if not f["samples_per_batch"] and f["fixed_shapes"]:
        budget += ", fixed shapes"
    print(f"{f['model']} ({f['recipe']} recipe, {budget}), {f['steps']} steps")
    print(f"  torch operations a step (median / most):  {f['operations']:,.0f} / {f['operations_most']:,}")
    print(f"  of them outside a graphed step (cuda_graph: its replay is one launch): {f['eager_operations']:,.0f} / "
          f"{f['eager_operations_most']:,}")  # fmt: skip
    print(f"  Warp launches a step (median / most):     {f['warp_launches']:,.0f} / {f['warp_launches_most']:,}")
    print(f"  copies to the device, all steps:          {f['copies_to_device']}")
    print(f"  read-backs from the device, all steps:    {f['read_backs']}")
    print(f"  late reads of host copies, all steps:     {f['late_reads']}")
    print(f"  distinct shape signatures (refresh apart): {f['shape_signatures']}")
    print(f"  distinct replay signatures (a graph's):    {f['replay_signatures']}")
    for d in f["replay_differences"]:
        print(f"    departs at counted step {d['step'] + 1}, operation {d['operation']} ({d['name']}), {d['site']}")
        print(f"      first step: {d['first']}")
        print(f"      then:       {d['then']}")
    if f["trained_per_step"] is None:
        print("  samples trained a step:                   not counted (the model reports none)")
    else:
        print(f"  samples trained a step:                   {f['trained_per_step']:,.0f}")
    for kind in ("deformer", "hash_grid") if f["trained_per_step"] else ():
        step, refresh = f[f"{kind}_rows_per_trained_sample"], f[f"{kind}_rows_per_trained_sample_in_refresh"]
        label = f"{kind.replace('_', '-')} rows per trained sample:"
        print(f"  {label:<42}{step:.2f} in the step, {refresh:.2f} more in the occupancy refresh")
    if f["table_adds_per_trained_sample"]:
        print(f"  table-gradient row adds per trained sample: {f['table_adds_per_trained_sample']:.1f} "
              f"({f['table_adds_per_trained_sample_a_point_a_thread']:.1f} a point a thread)")  # fmt: skip
    if f["wall_ms"] is not None:
        print(f"  wall ms a step here (CPU, CUDA's paths):  {f['wall_ms']:,.0f}")
    print("  operations of the counted steps, most first: " + ", ".join(f"{n} {c}" for n, c in f["top_operations"]))
    print("  of them outside a graphed step: " + ", ".join(f"{n} {c}" for n, c in f["eager_top_operations"]))
    for line in f["sites"]:
        print(f"  {line}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="insta", choices=sorted(MODELS))
    parser.add_argument("--recipe", default="paper")
    parser.add_argument(
        "--samples", type=int, default=1 << 14,
        help="the sample budget a step (default 2^14; 0: the recipe's own rays, for a model that counts no samples; "
        "in fixed shapes where its shapes follow from its rays)",
    )  # fmt: skip
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--steps", type=int, default=16)
    parser.add_argument("--fixed-shapes", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--log2-table-size", type=int, default=14)
    parser.add_argument("--resolution", type=int, default=32)
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=JSON", help="a recipe field (occupancy_every=4)")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    parser.add_argument(
        "--early-stop", type=float, default=EARLY_STOP_TRANSMITTANCE, help="the transmittance of early termination; 0: off"
    )
    args = parser.parse_args(argv)
    overrides = {}
    for item in args.set:
        field, sep, value = item.partition("=")
        if not sep:
            parser.error(f"--set: expected FIELD=JSON, got {item!r}")
        overrides[field] = json.loads(value)
    figures = anatomy(
        args.model, args.recipe, args.samples, args.warmup, args.steps, args.fixed_shapes, args.log2_table_size,
        args.resolution, overrides=overrides, early_stop=args.early_stop or None,
    )  # fmt: skip
    print_figures(figures)
    if args.json is not None:
        args.json.write_text(json.dumps(figures, indent=1))


if __name__ == "__main__":
    sys.exit(main())
