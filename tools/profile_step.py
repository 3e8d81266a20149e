"""Where a training step's time goes: one paper model's steps under ``torch.profiler``, per primitive.

    python tools/profile_step.py                    # INSTA, MonoAvatar, MonoNPHM (hyper NeuS), Portrait360
    python tools/profile_step.py --only INSTA --steps 10

Each model is built as ``benchmarks/compare.py`` builds it (its CPU recipe, its batch size) on the default
synthetic video, trained for ``--warmup`` steps (Warp compiles, the occupancy grid and the optimiser settle), then
``--steps`` more are profiled: 16 by default, so that INSTA's and the portrait's occupancy-grid refresh (every
16 steps, in ``before_step``) falls once among them and each figure carries its share, as training pays it.
Every step runs as the training loop runs it (batch, forward, loss, backward, Adam), under the process tuning a
training run applies on the CPU (``headfields.backends.cpu.process_tuning.process_tuning`` with ``TrainingConfig``'s defaults, or
``--flush-denormals`` / ``--tune-malloc`` true or false).

Printed per model, in milliseconds per step, means over the profiled steps (the refresh amortised):

- **forward, per primitive**: the inclusive forward time of each of the model's primitives (deformers,
  encoders, decoders, samplers, vertex features), found as the submodules of those packages, each wrapped in a
  ``record_function`` range by a forward hook; nested primitives are indented under the one that calls them;
- **the step's phases**: batch (with ``before_step``: the refresh), forward and loss, backward, optimiser;
- **backward, per autograd function**: the top backward nodes by time (``XBackward0`` is torch's derivative of
  op ``X``; ``_HashGridFunctionBackward`` and the like are ours).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile, record_function

from headfields.backends.cpu.process_tuning import process_tuning
from headfields.checks import trusted_values
from headfields.heads import tracked_head
from headfields.parametric import load_model
from headfields.training import TrainingConfig, build_optimizer, ray_batch, set_learning_rate

from primitive_ranges import hook_primitives

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))  # compare.py: its models, as it builds them
from compare import HYPER_NEUS, PAPERS, load_video  # noqa: E402

MONONPHM_LABEL = "MonoNPHM"  # the hyper NeuS avatar: MonoNPHM's networks and renderer, no prior (compare.py)
TOP_BACKWARD = 12


def entries() -> dict[str, object]:
    found = {e.key: e for e in PAPERS}
    found[MONONPHM_LABEL] = HYPER_NEUS
    return found


def profile_model(key: str, steps: int, warmup: int, device: torch.device, ops: int = 0) -> None:
    entry = entries()[key]
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
            if hasattr(model, "before_step"):
                model.before_step(step, head)
            batch = ray_batch(train_frames, entry.rays_per_batch, generator, device, entry.frames_per_batch, None, head)
            batch.generator = torch.Generator(device).manual_seed(step)
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
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for step in range(warmup, warmup + steps):
            one_step(step)
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


def true_or_false(text: str) -> bool:
    if text.lower() not in ("true", "false"):
        raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")
    return text.lower() == "true"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", nargs="+", choices=list(entries()), default=list(entries()))
    parser.add_argument("--steps", type=int, default=16, help="profiled steps (16: one occupancy-grid refresh)")
    parser.add_argument("--warmup", type=int, default=20, help="steps before profiling")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--ops", type=int, default=0, help="also print the top OPS operators by self time (torch.profiler)")
    defaults = TrainingConfig()
    for flag in ("flush_denormals", "tune_malloc"):
        parser.add_argument(
            f"--{flag.replace('_', '-')}",
            type=true_or_false,
            default=getattr(defaults, flag),
            help=f"true or false (default: TrainingConfig's, {getattr(defaults, flag)}; headfields.backends.cpu.process_tuning)",
        )
    args = parser.parse_args()
    device = torch.device(args.device)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    # As a training run does: the profile is of the steps training runs.
    with process_tuning(device, flush_denormals=args.flush_denormals, tune_malloc=args.tune_malloc) as applied:
        print(f"process tuning: {applied}")
        for key in args.only:
            profile_model(key, args.steps, args.warmup, device, args.ops)


if __name__ == "__main__":
    main()
