"""A model's training steps under ``torch.profiler``, as the shared loop runs them: the GPU's busy share of a step,
kernels, copies and synchronisations a step, and the kernels by GPU time.

    python tools/gpu_kit/step_profile.py insta --warmup 300 --steps 20 -- --device cuda --data VIDEO ...

Everything after ``--`` goes to ``python -m headfields train MODEL``. The first ``--warmup`` steps run untimed
(Warp compiles, the sample budget settles), the next ``--steps`` are profiled, counted by torch's optimiser-step
hook, then the process ends: the run folder it leaves is not a finished run. Writes the figures as JSON to ``--json`` too.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import torch
from torch.autograd import DeviceType
from torch.optim.optimizer import register_optimizer_step_post_hook
from torch.profiler import ProfilerActivity, profile

from headfields.commands import main as headfields_main


def busy_seconds(intervals: list[tuple[float, float]]) -> float:
    """The length of the union of [start, end) intervals, in their unit."""
    total, end = 0.0, -float("inf")
    for a, b in sorted(intervals):
        if b <= end:
            continue
        total += b - max(a, end)
        end = b
    return total


def summary(prof, wall: float, steps: int, cuda: bool) -> dict:
    events = prof.events()
    device = [e for e in events if e.device_type == DeviceType.CUDA]
    kernels = [e for e in device if not e.name.startswith(("Memcpy", "Memset"))]
    copies = [e for e in device if e.name.startswith("Memcpy")]
    host = [e for e in events if e.device_type == DeviceType.CPU]
    count = lambda names: sum(e.name in names for e in host) / steps  # noqa: E731
    by_time = sorted(prof.key_averages(), key=lambda a: -getattr(a, "device_time_total", 0.0))
    out = {
        "steps": steps,
        "wall_ms_per_step": 1e3 * wall / steps,
        "gpu_busy_share": busy_seconds([(e.time_range.start, e.time_range.end) for e in device]) / (1e6 * wall),
        "kernels_per_step": len(kernels) / steps,
        "copies_per_step": {k: sum(e.name == k for e in copies) / steps for k in sorted({e.name for e in copies})},
        "launches_per_step": count({"cudaLaunchKernel", "cuLaunchKernel", "cudaLaunchKernelExC", "cuLaunchKernelEx"}),
        "syncs_per_step": count({"cudaStreamSynchronize", "cudaDeviceSynchronize", "cudaEventSynchronize"}),
        "memcpy_calls_per_step": count({"cudaMemcpyAsync", "cudaMemcpy", "cuMemcpyAsync", "cuMemcpyHtoDAsync_v2"}),
        "aten_ops_per_step": sum(e.name.startswith("aten::") and e.cpu_parent is None for e in host) / steps,
        "top_kernels_ms_per_step": [
            (a.key[:90], round(getattr(a, "device_time_total", 0.0) / 1e3 / steps, 3), a.count // steps)
            for a in by_time[:20]
            if getattr(a, "device_time_total", 0.0) > 0
        ],
    }
    if not cuda:
        out["note"] = "no CUDA device: host figures only"
    return out


def main() -> None:
    argv = sys.argv[1:]
    split = argv.index("--") if "--" in argv else len(argv)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("--warmup", type=int, default=300)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv[:split])
    cuda = torch.cuda.is_available()
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    prof = profile(activities=activities)
    state = {"n": 0}

    # torch's public hook after every optimiser step, the training loop's included: the window opens after step
    # --warmup's step and closes after --steps more, whole steps between (nothing of the library is replaced).
    def after_step(optimizer, args_, kwargs_) -> None:
        state["n"] += 1
        n = state["n"]
        if n == args.warmup:
            if cuda:
                torch.cuda.synchronize()
            prof.__enter__()
            state["start"] = time.perf_counter()
        elif n == args.warmup + args.steps:
            if cuda:
                torch.cuda.synchronize()
            wall = time.perf_counter() - state["start"]
            prof.__exit__(None, None, None)
            figures = summary(prof, wall, args.steps, cuda)
            print(json.dumps(figures, indent=1))
            if args.json:
                with open(args.json, "w") as f:
                    json.dump(figures, f, indent=1)
            raise SystemExit(0)

    register_optimizer_step_post_hook(after_step)
    headfields_main(["train", args.model, *argv[split + 1 :]])
    print(f"the run ended before step {args.warmup + args.steps}: nothing profiled", file=sys.stderr)
    raise SystemExit(1)


if __name__ == "__main__":
    main()
