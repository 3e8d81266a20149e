"""What a frame of each model's inference renderer asks of a GPU, counted on any machine: its rounds, the torch
operations that do work (each a kernel launch on a GPU: views, reshapes and allocations are left out) and the
Warp launches.

    python benchmarks/launches.py                                   # INSTA, MonoAvatar, Portrait360, hyper NeuS
    python benchmarks/launches.py --only insta --baseline ../old    # and another checkout's code, same runs

On a GPU a small operation costs a few microseconds whatever its size, so a 512² frame whose rounds each launch a
few hundred operations spends milliseconds launching them (``docs/results.md``, "INSTA's 512² frame": what a
frame launches). The counts are the same on the CPU, where this runs in CI's time: each model is trained for
``--train-minutes`` into ``--out/<model>`` as ``benchmarks/render.py`` trains it (a finished run there is reused),
then the first held-out frame at ``--size`` is rendered once on ``--device`` under ``torch.profiler`` (on CUDA the
paper recipe and the GPU's own paths: the CPU's blocks of rows are not there). Its mesh queries and its rounds take
CUDA's path on the CPU too: the queries sorted, where the CPU walks a renderer's samples unsorted after asking
``kernels.in_local_order``, which a GPU never runs, and CUDA's round budget and its steps a round uncapped
(``renderers.inference``). ``--baseline CHECKOUT``
runs this same script on that checkout's package (``PYTHONPATH``) on the same runs and prints the ratios.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
from pathlib import Path
from unittest import mock

import torch
from torch.profiler import ProfilerActivity, profile

import headfields.kernels as kernels
import headfields.renderers.inference as inference
from headfields.renderers.camera_paths import resized_cameras
from headfields.runs import load_run

from render import CHOICES, MODELS, cuda_rules, held_out_frame, train_model

# Operations that do no work of their own on a GPU: views, metadata and allocations (an allocation comes from torch's
# caching allocator, not a kernel). An operation counts where none of the operations it calls counts.
NO_KERNEL = frozenset(
    "alias as_strided chunk contiguous detach detach_ empty empty_like empty_strided expand expand_as flatten "
    "lift_fresh movedim narrow new_empty numpy_T permute reshape resize_ resolve_conj resolve_neg select set_ "
    "slice split split_with_sizes squeeze t to transpose unbind unflatten unsqueeze view view_as _reshape_alias "
    "_unsafe_view".split()
)


def _works(event) -> bool:
    """Whether a profiled operation launches work: an aten operation not in NO_KERNEL none of whose callees does."""
    return event.name.startswith("aten::") and event.name[6:] not in NO_KERNEL and not _calls_work(event)


def _calls_work(event) -> bool:
    return any(_works(child) or _calls_work(child) for child in event.cpu_children)


def count(run_dir: Path, size: int, device: torch.device) -> dict:
    """One frame's rounds, working torch operations and Warp launches (the frame rendered once before, uncounted)."""
    run = load_run(run_dir, device)
    cameras = resized_cameras(run.subject.eval.cameras, size, size).to(device)
    rounds, launches = [0], [0]

    def counted_rounds(samples, along, evaluate, *args):  # the rays (a checkout's: the samples' midpoints), by position
        def each(batch):
            rounds[0] += 1
            return evaluate(batch)

        return rounds_of(samples, along, each, *args)

    def counted(launch):
        def wrapper(*args, **kwargs):
            launches[0] += 1
            return launch(*args, **kwargs)

        return wrapper

    rounds_of = inference._rounds
    counting = [(inference, "_rounds", counted_rounds)]
    counting += [(kernels, name, counted(getattr(kernels, name))) for name in ("launch_rows", "launch_grid")]
    with contextlib.ExitStack() as patches:
        patches.enter_context(cuda_rules())  # CUDA's path, where the checkout has it
        held_out_frame(run, cameras)
        for module, name, value in counting:
            patches.enter_context(mock.patch.object(module, name, value))
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            held_out_frame(run, cameras)
    events = [e for e in prof.events() if e.name.startswith("aten::")]
    work = sum(1 for e in events if _works(e))
    return {"rounds": rounds[0], "operations": work, "warp_launches": launches[0]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="+", choices=CHOICES, default=list(MODELS))
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--train-minutes", type=float, default=1.0)
    parser.add_argument("--out", type=Path, default=Path("outputs/launches"))
    parser.add_argument("--device", default="cpu", help="where the frame renders (cuda: its own paths, the paper recipe)")
    parser.add_argument("--baseline", type=Path, default=None, help="a checkout whose package renders the same runs")
    parser.add_argument("--json", type=Path, default=None, help=argparse.SUPPRESS)  # the baseline child's answer
    args = parser.parse_args()
    if args.baseline is not None and not (args.baseline / "headfields").is_dir():
        raise SystemExit(f"--baseline: expected a headfields checkout, got {args.baseline} (no headfields/)")
    device = torch.device(args.device)
    recipe = "paper" if device.type == "cuda" else "cpu"  # as benchmarks/render.py trains on each
    results = {}
    for name in args.only:
        folder = args.out / name if args.json else train_model(name, recipe, args.train_minutes, args.out, device)
        results[name] = count(folder, args.size, device)
    if args.json is not None:
        args.json.write_text(json.dumps(results))
        return
    old = None
    if args.baseline is not None:
        answer = args.out / "baseline.json"
        command = [sys.executable, __file__, "--only", *args.only, "--size", str(args.size), "--out", str(args.out)]
        command += ["--device", args.device]
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(args.baseline.resolve()), str(Path(__file__).parent)])}
        subprocess.run([*command, "--json", str(answer)], env=env, check=True)
        old = json.loads(answer.read_text())
    header = f"| model, {args.size}² | rounds | torch operations | Warp launches | both, a round |"
    print("\n" + header + (" baseline, a round | fewer |" if old else ""))
    print("|---|---:|---:|---:|---:|" + ("---:|---:|" if old else ""))
    for name, r in results.items():
        per_round = (r["operations"] + r["warp_launches"]) / max(r["rounds"], 1)
        line = f"| {name} | {r['rounds']} | {r['operations']:,} | {r['warp_launches']:,} | {per_round:.0f} |"
        if old:
            b = old[name]
            before = (b["operations"] + b["warp_launches"]) / max(b["rounds"], 1)
            line += f" {before:.0f} | {before / per_round:.2f}x |"
        print(line)


if __name__ == "__main__":
    main()
