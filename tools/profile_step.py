"""Where a training step's time goes: training steps under ``torch.profiler``, either of the benchmark models built
here (per primitive, per phase, per backward node) or of ``python -m headfields train`` as a user runs it (on a GPU:
its busy share, kernels, copies and synchronisations a step).

    python tools/profile_step.py                    # INSTA, MonoAvatar, MonoNPHM (hyper NeuS), Portrait360
    python tools/profile_step.py --only INSTA --steps 10
    python tools/profile_step.py --train insta --warmup 250 --steps 20 --json insta.json -- --device cuda --data VIDEO

**The models built here** (``--only``, the default): each model is built as ``benchmarks/compare.py`` builds it (its
CPU recipe, its batch size) on the default synthetic video, trained for ``--warmup`` steps (default 20: Warp
compiles, the occupancy grid and the optimiser settle), then ``--steps`` more are profiled: 16 by default, so that
INSTA's and the portrait's occupancy-grid refresh (every 16 steps, in ``before_step``) falls once among them and each
figure carries its share, as training pays it. Every step runs as the training loop runs it (batch, forward, loss,
backward, Adam), under the process tuning a training run applies on the CPU
(``headfields.backends.cpu.process_tuning.process_tuning`` with ``TrainingConfig``'s defaults, or
``--flush-denormals`` / ``--tune-malloc`` true or false). Printed per model, in milliseconds per step, means over the
profiled steps (the refresh amortised):

- **forward, per primitive**: the inclusive forward time of each of the model's primitives (deformers,
  encoders, decoders, samplers, vertex features), found as the submodules of those packages, each wrapped in a
  ``record_function`` range by a forward hook (``primitive_ranges.py``); nested primitives are indented under the
  one that calls them;
- **the step's phases**: batch (with ``before_step``: the refresh), forward and loss, backward, optimiser (host
  time: on CUDA the device runs behind);
- **backward, per autograd function**: the top backward nodes by time (``XBackward0`` is torch's derivative of
  op ``X``; ``_HashGridFunctionBackward`` and the like are ours);
- on CUDA, **the device's figures** below.

**A training run** (``--train MODEL``): everything after ``--`` goes to ``python -m headfields train MODEL``. The
first ``--warmup`` steps (default 300) run unprofiled (Warp compiles, the sample budget settles), the next
``--steps`` (default 20) are profiled, counted by torch's optimiser-step hook, which replaces nothing of the
library; then the process ends: the run folder it leaves is not a finished run.

**The device's figures** (a dictionary, printed as JSON and written to ``--json``): wall ms a step; the GPU's busy
share of it; kernels, copies by kind, kernel launches, synchronisations, memcpy calls and top-level aten operations a
step; the kernels by GPU time (without CUDA: the host's figures only).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path

import torch
from torch.autograd import DeviceType
from torch.optim.optimizer import register_optimizer_step_post_hook
from torch.profiler import ProfilerActivity, profile, record_function

from headfields.backends.cpu.process_tuning import process_tuning
from headfields.checks import trusted_values
from headfields.heads import tracked_head
from headfields.parametric import load_model
from headfields.renderers import RenderContext
from headfields.training import TrainingConfig, build_optimizer, ray_batch, set_learning_rate

from primitive_ranges import hook_primitives

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"  # compare.py: its models, as it builds them
MONONPHM_LABEL = "MonoNPHM"  # the hyper NeuS avatar: MonoNPHM's networks and renderer, no prior (compare.py)
TOP_BACKWARD = 12
TOP_KERNELS = 20
MODEL_WARMUP, MODEL_STEPS = 20, 16  # 16: one occupancy-grid refresh among the profiled steps
TRAIN_WARMUP, TRAIN_STEPS = 300, 20
LAUNCHES = {"cudaLaunchKernel", "cuLaunchKernel", "cudaLaunchKernelExC", "cuLaunchKernelEx"}
SYNCS = {"cudaStreamSynchronize", "cudaDeviceSynchronize", "cudaEventSynchronize"}
MEMCPY_CALLS = {"cudaMemcpyAsync", "cudaMemcpy", "cuMemcpyAsync", "cuMemcpyHtoDAsync_v2"}


def entries() -> dict[str, object]:
    """The models ``--only`` names: compare.py's paper models and the hyper NeuS avatar (imported on use: a
    ``--train`` profile needs none of them)."""
    sys.path.insert(0, str(BENCHMARKS))
    from compare import HYPER_NEUS, PAPERS

    found = {e.key: e for e in PAPERS}
    found[MONONPHM_LABEL] = HYPER_NEUS
    return found


def busy_seconds(intervals: list[tuple[float, float]]) -> float:
    """The length of the union of [start, end) intervals, in their unit."""
    total, end = 0.0, -float("inf")
    for a, b in sorted(intervals):
        if b <= end:
            continue
        total += b - max(a, end)
        end = b
    return total


def device_figures(prof: profile, wall: float, steps: int, cuda: bool) -> dict:
    """The device's figures of ``steps`` profiled steps that took ``wall`` seconds (the module's docstring)."""
    events = prof.events()
    device = [e for e in events if e.device_type == DeviceType.CUDA]
    kernels = [e for e in device if not e.name.startswith(("Memcpy", "Memset"))]
    copies = [e for e in device if e.name.startswith("Memcpy")]
    host = [e for e in events if e.device_type == DeviceType.CPU]

    def is_aten(event) -> bool:  # a torch operation; those called by another are its parts, not counted
        return event.name.startswith("aten::")

    def count(names: set[str]) -> float:
        return sum(e.name in names for e in host) / steps

    by_time = sorted(prof.key_averages(), key=lambda a: -getattr(a, "device_time_total", 0.0))
    out = {
        "steps": steps,
        "wall_ms_per_step": 1e3 * wall / steps,
        "gpu_busy_share": busy_seconds([(e.time_range.start, e.time_range.end) for e in device]) / (1e6 * wall),
        "kernels_per_step": len(kernels) / steps,
        "copies_per_step": {k: sum(e.name == k for e in copies) / steps for k in sorted({e.name for e in copies})},
        "launches_per_step": count(LAUNCHES),
        "syncs_per_step": count(SYNCS),
        "memcpy_calls_per_step": count(MEMCPY_CALLS),
        "aten_ops_per_step": sum(is_aten(e) and not (e.cpu_parent and is_aten(e.cpu_parent)) for e in host) / steps,
        "top_kernels_ms_per_step": [
            (a.key[:90], round(getattr(a, "device_time_total", 0.0) / 1e3 / steps, 3), a.count // steps)
            for a in by_time[:TOP_KERNELS]
            if getattr(a, "device_time_total", 0.0) > 0
        ],
    }
    if not cuda:
        out["note"] = "no CUDA device: host figures only"
    return out


def write_figures(figures: dict, path: Path | None) -> None:
    print(json.dumps(figures, indent=1))
    if path is not None:
        path.write_text(json.dumps(figures, indent=1) + "\n")


def profile_model(key: str, steps: int, warmup: int, device: torch.device, ops: int = 0, figures: bool = False) -> dict | None:
    """Profile ``steps`` steps of benchmark model ``key`` after ``warmup`` and print its tables; on CUDA or with
    ``figures``, print and return the device's figures too."""
    entry = entries()[key]
    from compare import load_video  # on the path once entries() has run

    cuda = device.type == "cuda"
    train_frames, _ = load_video(quick=True)
    parametric = load_model(train_frames.model_path, train_frames.model_type, device=device)
    torch.manual_seed(0)
    model = entry.build(parametric, train_frames).to(device)
    labels = hook_primitives(model)
    optimizer = build_optimizer(model, model.optimization)
    head = tracked_head(model.parametric, train_frames)
    generator = torch.Generator().manual_seed(0)
    phases: dict[str, list[float]] = defaultdict(list)

    def one_step(step: int) -> None:
        times = {}
        start = time.perf_counter()
        with record_function("phase: batch"):
            set_learning_rate(optimizer, model.optimization, step)
            model.before_step(step, head)
            batch = ray_batch(train_frames, entry.rays_per_batch, generator, device, entry.frames_per_batch, None, head)
            batch.context = RenderContext(torch.Generator(device).manual_seed(step))
        times["batch"] = time.perf_counter()
        with record_function("phase: forward and loss"), trusted_values():
            result = model.training_step(batch, step)
        times["forward and loss"] = time.perf_counter()
        with record_function("phase: backward"):
            optimizer.zero_grad(set_to_none=True)
            result.loss.backward()
        times["backward"] = time.perf_counter()
        with record_function("phase: optimiser"):
            optimizer.step()
        times["optimiser"] = time.perf_counter()
        last = start
        for name, t in times.items():
            phases[name].append(1e3 * (t - last))
            last = t
        phases["step"].append(1e3 * (last - start))

    model.train()
    for step in range(warmup):
        one_step(step)
    phases.clear()
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    if cuda:
        torch.cuda.synchronize(device)
    with profile(activities=activities) as prof:
        start = time.perf_counter()
        for step in range(warmup, warmup + steps):
            one_step(step)
        if cuda:
            torch.cuda.synchronize(device)  # the window closes on the device's last kernel
        wall = time.perf_counter() - start
    events = {e.key: e for e in prof.key_averages()}

    def per_step(name: str) -> float:
        return events[name].cpu_time_total / 1e3 / steps if name in events else 0.0

    step_ms = statistics.fmean(phases["step"])
    rate = f"{1e3 / step_ms:.2f} it/s under the profiler"
    print(f"\n## {key}: {entry.rays_per_batch} rays a step, mean step {step_ms:.0f} ms ({rate})")
    print("\n| phase | ms / step | share |\n|---|---:|---:|")
    for name in ("batch", "forward and loss", "backward", "optimiser"):
        ms = statistics.fmean(phases[name])
        print(f"| {name} | {ms:.0f} | {ms / step_ms:.0%} |")
    print("\n| primitive (forward, inclusive) | ms / step | share of the step |\n|---|---:|---:|")
    names = [text.split(" ")[0] for text in labels]
    for name, text in zip(names, labels, strict=True):
        ms = per_step(text)
        if ms >= 0.5:
            depth = sum(name.startswith(f"{other}.") for other in names)  # the primitives it lies within
            print(f"| {'· ' * depth}{text} | {ms:.0f} | {ms / step_ms:.0%} |")
    backward = sorted(
        (e for e in prof.key_averages() if e.key.startswith("autograd::engine::evaluate_function")),
        key=lambda e: e.cpu_time_total,
        reverse=True,
    )
    print("\n| backward node | ms / step | share of the step |\n|---|---:|---:|")
    for e in backward[:TOP_BACKWARD]:
        ms = e.cpu_time_total / 1e3 / steps
        print(f"| {e.key.split(': ', 1)[1]} | {ms:.0f} | {ms / step_ms:.0%} |")
    if ops:
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=ops))
    if not (cuda or figures):
        return None
    found = device_figures(prof, wall, steps, cuda)
    print(f"\n{key} on the device:")
    print(json.dumps(found, indent=1))
    return found


def profile_training(model: str, train_args: list[str], steps: int, warmup: int, json_path: Path | None) -> None:
    """Run ``python -m headfields train MODEL TRAIN_ARGS`` and profile its steps ``warmup`` to ``warmup + steps``,
    counted by torch's optimiser-step hook; print the device's figures and end the process (exit status 0), or 1
    when the run ended before the window closed."""
    from headfields.apps.commands import main as headfields_main

    cuda = torch.cuda.is_available()
    prof = profile(activities=[ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else []))
    state = {"n": 0}

    # torch's public hook after every optimiser step, the training loop's included: the window opens after step
    # --warmup's step and closes after --steps more, whole steps between (nothing of the library is replaced).
    def after_step(optimizer, args_, kwargs_) -> None:
        state["n"] += 1
        n = state["n"]
        if n == warmup:
            if cuda:
                torch.cuda.synchronize()
            prof.__enter__()
            state["start"], state["open"] = time.perf_counter(), True
        elif n == warmup + steps:
            if cuda:
                torch.cuda.synchronize()
            wall = time.perf_counter() - state["start"]
            prof.__exit__(None, None, None)
            state["open"] = False
            write_figures(device_figures(prof, wall, steps, cuda), json_path)
            raise SystemExit(0)

    hook = register_optimizer_step_post_hook(after_step)
    try:
        headfields_main(["train", model, *train_args])
    finally:
        hook.remove()  # the process may go on (a test): neither the hook nor an open window outlives the run
        if state.get("open"):
            prof.__exit__(None, None, None)
    print(f"the run ended before step {warmup + steps}: nothing profiled", file=sys.stderr)
    raise SystemExit(1)


def true_or_false(text: str) -> bool:
    if text.lower() not in ("true", "false"):
        raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")
    return text.lower() == "true"


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    split = argv.index("--") if "--" in argv else len(argv)
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], usage="%(prog)s [options] [-- ARGS of `python -m headfields train MODEL`]"
    )
    parser.add_argument("--only", nargs="+", default=None, help="the models built here to profile (default: all)")
    parser.add_argument("--train", metavar="MODEL", default=None, help="profile `python -m headfields train MODEL ARGS`")
    parser.add_argument("--steps", type=int, default=None, help=f"profiled steps ({MODEL_STEPS}; --train: {TRAIN_STEPS})")
    parser.add_argument(
        "--warmup", type=int, default=None, help=f"steps before profiling ({MODEL_WARMUP}; --train: {TRAIN_WARMUP})"
    )
    parser.add_argument("--device", default="cpu", help="the models built here: their device (--train: its --device)")
    parser.add_argument("--ops", type=int, default=0, help="also print the top OPS operators by self time (torch.profiler)")
    parser.add_argument("--json", type=Path, default=None, help="write the device's figures here")
    defaults = TrainingConfig()
    for flag in ("flush_denormals", "tune_malloc"):
        parser.add_argument(
            f"--{flag.replace('_', '-')}",
            type=true_or_false,
            default=getattr(defaults, flag),
            help=f"true or false (default: TrainingConfig's, {getattr(defaults, flag)}; headfields.backends.cpu.process_tuning)",
        )
    args = parser.parse_args(argv[:split])
    if args.train is not None:
        if args.only is not None:
            parser.error("--only names the models built here; --train profiles a training run instead")
        warmup = TRAIN_WARMUP if args.warmup is None else args.warmup
        profile_training(args.train, argv[split + 1 :], TRAIN_STEPS if args.steps is None else args.steps, warmup, args.json)
    if split < len(argv):
        parser.error("the arguments after -- go to --train MODEL's training")
    known = entries()
    only = args.only or list(known)
    if unknown := [key for key in only if key not in known]:
        parser.error(f"--only: expected some of {list(known)}, got {unknown}")
    device = torch.device(args.device)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    # As a training run does: the profile is of the steps training runs.
    figures = {}
    with process_tuning(device, flush_denormals=args.flush_denormals, tune_malloc=args.tune_malloc) as applied:
        print(f"process tuning: {applied}")
        for key in only:
            found = profile_model(
                key,
                MODEL_STEPS if args.steps is None else args.steps,
                MODEL_WARMUP if args.warmup is None else args.warmup,
                device,
                args.ops,
                figures=args.json is not None,
            )
            if found is not None:
                figures[key] = found
    if args.json is not None:
        args.json.write_text(json.dumps(figures, indent=1) + "\n")


if __name__ == "__main__":
    main()
