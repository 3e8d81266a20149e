"""What a frame of each model's inference renderer asks of the device: its rounds, the torch operations that do work
(each a kernel launch on a GPU: views, reshapes and allocations are left out) and the Warp launches.

    python tools/launches.py --device cuda                    # INSTA, MonoAvatar, Portrait360, hyper NeuS on a GPU
    python tools/launches.py --only insta --baseline ../old    # and another checkout's code, same runs

On a GPU a small operation costs a few microseconds whatever its size, so a 512² frame whose rounds each launch a
few hundred operations spends milliseconds launching them (``docs/results.md``, "INSTA's 512² frame": what a
frame launches). Each model is trained for ``--train-minutes`` into ``--out/<model>`` as ``benchmarks/render.py``
trains it (a finished run there is reused), then the first held-out frame at ``--size`` is rendered once on
``--device`` under ``torch.profiler`` (on CUDA the paper recipe and the GPU's own paths). The counts are the device's
own: on the CPU its mesh queries may walk a renderer's samples unsorted and its rounds are capped at
``MAX_ROUND_STEPS`` steps a ray, so a CPU counts more, smaller rounds than a GPU would (the library has no switch
that takes CUDA's paths on the CPU yet). Rounds and Warp launches are counted by Python's profile hook
(``calls.counted_calls``), which replaces nothing. ``--baseline CHECKOUT`` runs this same script on that checkout's
package (``PYTHONPATH``) on the same runs and prints the ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

import headfields.kernels as kernels
from headfields.apps.runs import load_run
from headfields.cameras import resized_cameras

from calls import NO_KERNEL, counted_calls

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))  # render.py: its models, runs and frame
from render import CHOICES, MODELS, held_out_frame, train_model  # noqa: E402


def _works(event) -> bool:
    """Whether a profiled operation launches work: an aten operation not in NO_KERNEL none of whose callees does."""
    return event.name.startswith("aten::") and event.name[6:] not in NO_KERNEL and not _calls_work(event)


def _calls_work(event) -> bool:
    return any(_works(child) or _calls_work(child) for child in event.cpu_children)


def count(run_dir: Path, size: int, device: torch.device) -> dict:
    """One frame's rounds (None where the package has no ``round_kernels.gather_round``, one call a round), working
    torch operations and Warp launches (the frame rendered once before, uncounted)."""
    try:
        from headfields.renderers.round_kernels import gather_round
    except ImportError:  # an older checkout's package
        gather_round = None
    run = load_run(run_dir, device)
    cameras = resized_cameras(run.subject.eval.cameras, size, size).to(device)
    held_out_frame(run, cameras)
    watched = [kernels.launch_rows, kernels.launch_grid] + ([gather_round] if gather_round is not None else [])
    with counted_calls(*watched) as calls, profile(activities=[ProfilerActivity.CPU]) as prof:
        held_out_frame(run, cameras)
    events = [e for e in prof.events() if e.name.startswith("aten::")]
    work = sum(1 for e in events if _works(e))
    rounds = calls["gather_round"] if gather_round is not None else None
    return {"rounds": rounds, "operations": work, "warp_launches": calls["launch_rows"] + calls["launch_grid"]}


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
        env = {**os.environ, "PYTHONPATH": str(args.baseline.resolve())}
        subprocess.run([*command, "--json", str(answer)], env=env, check=True)
        old = json.loads(answer.read_text())
    header = f"| model, {args.size}² | rounds | torch operations | Warp launches | both, a round |"
    print("\n" + header + (" baseline, a round | fewer |" if old else ""))
    print("|---|---:|---:|---:|---:|" + ("---:|---:|" if old else ""))
    for name, r in results.items():
        per_round = _per_round(r)
        shown = f"{per_round:.0f}" if per_round else "—"
        line = f"| {name} | {r['rounds'] or '—'} | {r['operations']:,} | {r['warp_launches']:,} | {shown} |"
        if old:
            before = _per_round(old[name])
            line += f" {before:.0f} | {before / per_round:.2f}x |" if before and per_round else " — | — |"
        print(line)


def _per_round(counts: dict) -> float | None:
    """Operations and Warp launches a round (None where the rounds were not counted)."""
    return (counts["operations"] + counts["warp_launches"]) / counts["rounds"] if counts["rounds"] else None


if __name__ == "__main__":
    main()
