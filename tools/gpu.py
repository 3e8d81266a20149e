"""GPU in one command: the CUDA tests, the kernel and encoder benchmarks, a timed INSTA training and its 512² frame,
in one report.

Run it from the repository root::

    python tools/gpu.py                        # writes outputs/gpu/gpu_report.md and prints it
    python tools/gpu.py --deadline 9           # in a ten-minute call: no step runs past 9 minutes
    python tools/gpu.py --out /tmp/gpu --minutes 10 --example-minutes 1
    python tools/gpu.py --quick                # a few minutes in all: a test subset, smaller sizes, 1 min INSTA
    python tools/gpu.py --deadline 9 --baseline ../old   # and INSTA's frame by another checkout's renderers
    python tools/gpu.py --deadline 8 --skip-benchmarks   # a short call: the tests, INSTA, its frame and variants

The defaults are sized for one ten-minute call on a lent GPU: INSTA trains for 2 minutes and the other examples
are left out (``--example-minutes 1`` runs each for a minute: seven more runs); ``--deadline 9`` ends the step
running 9 minutes after the start and starts no other. Each step runs in a subprocess of its own (its full output
under ``OUT/logs/``), so one that fails is reported, with its last lines, and the next still runs; the report is
written after every step (marked incomplete until the last), so a call cut short keeps what it measured; the exit
status is 1 if any step failed or was skipped:

1. the CUDA test cases: ``pytest tests -q -k cuda`` (every device test is parametrised ``cpu``/``cuda``, see
   tests/conftest.py's ``DEVICES``; ``--quick``: the hash grid and mesh-query test files only);
2. ``benchmarks/hashgrid.py`` and ``benchmarks/mesh_queries.py`` with ``--device cuda`` (their tables go into the
   report as printed; ``--skip-benchmarks`` leaves them out), and whether the optional CUDA peers tiny-cuda-nn and
   cubvh are importable;
3. ``examples/insta.py --device cuda --max-minutes M`` (the paper recipe, the default on CUDA) into ``OUT/insta``
   (removed first: a benchmark starts afresh rather than resuming), on the synthetic video rendered at
   ``--resolution`` (512², INSTA's size) with INSTA's budget of 2^18 trained samples a step and early termination
   at transmittance 1e-4: held-out PSNR, iterations per second and the peak GPU memory, which a small wrapper
   around the example reads from torch's allocator in the child and writes to ``OUT/insta_memory.json`` (Warp's own
   allocations, if any, are not in it); then the rays and samples a step, the trained samples a second, the
   held-out PSNR of the last evaluation by 1, 2.5 and 5 minutes of training (``log.jsonl``) and the time 20,000
   steps take at the run's rate;
4. INSTA's frame: ``benchmarks/render.py --only insta --anatomy --profile`` on that run, at 256² and 512² (medians
   of 5): the inference renderer as the evaluation scores (stop at 1e-4), as the viewer renders (1e-2, bfloat16
   products: INSTA's own renderer stops at 1e-2) and the training renderer, against issue 40's goal of 33 ms a 512²
   frame (30 frames a second), and the 512² frame's kernels by their GPU time; with ``--baseline CHECKOUT``, that
   checkout's renderers on the same run too (render.py's A/B: the previous code in the same call, the two taking
   turns); then ``tools/frame_variants.py`` on the same run: the 512² frame under each knob a GPU has yet to
   settle (the rounds' size, a float16 hash table, BVH leaves of 2 and 8 triangles), interleaved; then, in a call of
   its own, the fused decoder (``experimental.fused_nerf``) against "as is" (on the CPU, in the same call as the
   others);
5. on CUDA only, every other example (the paper models and the mixes, each at its default recipe on CUDA) and
   ``benchmarks/ablations/nphm.py`` for ``--example-minutes`` each (default 0: left out) into ``OUT/examples/``: a
   check that each CUDA path trains and evaluates, with its it/s, peak memory and held-out PSNR (a minute is far
   from converged: not a quality figure).

Without a CUDA device it runs the same steps on the CPU at tiny sizes (``--quick`` implied), so the script stays
working on every machine: a fast CPU test file, the benchmarks on a few points, INSTA for 3 iterations on a tiny
synthetic video, its frame at 32² (its variants at 24²). The report then says at the top
that its figures are not GPU figures.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import os
import platform
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch

from gpu_report import NPHM_FLAGS, Step, report_lines

ROOT = Path(__file__).resolve().parents[1]

# Runs a script (INSTA's example, the other examples, nphm.py) as its own __main__, then writes torch's peak CUDA
# memory where the parent reads it: argv = [-c, memory.json, script.py, flags...].
PEAK_MEMORY_CHILD = """
import json, runpy, sys, torch
memory_file, script = sys.argv[1], sys.argv[2]
sys.argv = [script] + sys.argv[3:]
try:
    runpy.run_path(script, run_name="__main__")
finally:
    cuda = torch.cuda.is_available() and torch.cuda.is_initialized()
    peak = {"max_memory_allocated": torch.cuda.max_memory_allocated() if cuda else None,
            "max_memory_reserved": torch.cuda.max_memory_reserved() if cuda else None}
    with open(memory_file, "w") as f:
        json.dump(peak, f)
"""


# INSTA's trained samples a step (instant-ngp's target batch size) and its early termination, in fixed shapes: a
# step that reads nothing back (TrainingConfig.fixed_shapes).
INSTA_BUDGET_FLAGS = ["--samples-per-batch", str(2**18), "--early-stop", "1e-4", "--fixed-shapes", "True"]

# The steps of a run, as the report keys them ("video": INSTA's synthetic video rendered on the GPU, when not cached).
STEPS = ("tests", "hashgrid", "hashgrid_half", "mesh", "video", "insta", "frame", "variants", "fused")
# Step 5: the examples besides INSTA, and the MonoNPHM pipeline (prior, then tracking; gpu_report.NPHM_FLAGS).
EXAMPLES = ("monoavatar", "portrait360", "hyper_neus", "mix_anchored_hashgrid", "mix_hyper_insta", "mix_triangle_neus")


def shown(command: list[str]) -> str:
    """``command`` as a line, the INSTA wrapper's code named rather than spelt out."""
    return " ".join("<peak-memory wrapper>" if "\n" in part else part for part in command)


def run_step(name: str, command: list[str], timeout: float, logs: Path, deadline: float | None = None) -> Step:
    """Run ``command`` from the repository root in a session of its own (so a timeout ends its children too), log
    its output to ``logs/name.log`` and say how it went. ``deadline`` (``time.monotonic()``'s clock, None: none): the
    step's time limit ends there, and a step it has passed is not started."""
    if deadline is not None:
        timeout = min(timeout, deadline - time.monotonic())
        if timeout <= 0:
            print(f"[gpu.py] {name}: skipped (--deadline)", flush=True)
            return Step(name, command, None, 0.0, "", "", skipped=True)
    print(f"[gpu.py] {name}: {shown(command)}", flush=True)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    started = time.perf_counter()
    proc = subprocess.Popen(
        command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
        returncode: int | None = proc.returncode
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # the session started above: this child and its own children only
        stdout, stderr = proc.communicate()
        returncode = None
    step = Step(name, command, returncode, time.perf_counter() - started, stdout or "", stderr or "")
    (logs / f"{name}.log").write_text(f"$ {shown(command)}\n\n--- stdout\n{step.stdout}\n--- stderr\n{step.stderr}")
    print(f"[gpu.py] {name}: {step.status()}", flush=True)
    return step


def peer_status(name: str) -> str:
    """An optional CUDA peer: its version, or why it is not available. Not benchmarked here."""
    if importlib.util.find_spec(name) is None:
        return "not installed"
    try:
        module = importlib.import_module(name)
    except Exception as error:  # an extension built for another torch or CUDA fails in many ways
        return f"installed, import failed: {type(error).__name__}: {error}"
    return f"available, version {getattr(module, '__version__', 'unknown')}"


# The GPU as its report names it, asked by a child: the parent holds no CUDA context while the steps run.
DEVICE_CHILD = """
import torch
props = torch.cuda.get_device_properties(0)
print(f"{props.name}, {props.total_memory / 2**30:.1f} GiB, CUDA {torch.version.cuda}")
"""


def device_name(cuda: bool) -> str:
    if not cuda:
        return f"none (CPU: {platform.processor() or platform.machine()}, {os.cpu_count()} logical CPUs)"
    try:
        done = subprocess.run([sys.executable, "-c", DEVICE_CHILD], capture_output=True, text=True, timeout=120)
    except subprocess.TimeoutExpired:
        return "CUDA (not described: the child asking took over 120 s)"
    return done.stdout.strip() or f"CUDA (not described: {done.stderr.strip()[-200:]})"


def tiny_video(folder: Path) -> Path:
    from headfields.synthetic import SyntheticVideoConfig, make_synthetic_video

    if folder.exists():
        shutil.rmtree(folder)
    config = SyntheticVideoConfig(num_frames=8, num_val=1, num_test=2, resolution=16, episode_frames=2)
    return make_synthetic_video(folder, config)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path("outputs/gpu"), help="where the report, logs and INSTA run go")
    parser.add_argument("--minutes", type=float, default=2.0, help="INSTA's training budget on the GPU")
    parser.add_argument("--resolution", type=int, default=512, help="the synthetic video INSTA trains on, on CUDA")
    parser.add_argument("--quick", action="store_true", help="a test subset and smaller sizes (implied without CUDA)")
    parser.add_argument("--skip-tests", action="store_true", help="leave out step 1 (the CUDA tests ran on their own)")
    parser.add_argument(
        "--skip-benchmarks",
        action="store_true",
        help="leave out step 2 (hash grid and mesh queries: 2.5 minutes of an H200), for INSTA's frame in a short call",
    )
    parser.add_argument("--example-minutes", type=float, default=0.0, help="each other example's budget on CUDA (0: none)")
    parser.add_argument(
        "--deadline", type=float, default=0.0, help="minutes from the start after which no step runs on (0: none)"
    )
    parser.add_argument("--baseline", type=Path, default=None, help="a checkout whose renderers also render INSTA's frame")
    args = parser.parse_args()
    if args.minutes <= 0:
        parser.error("--minutes: expected a positive number")
    if args.example_minutes < 0:
        parser.error("--example-minutes: expected a non-negative number")
    if args.deadline < 0:
        parser.error("--deadline: expected a non-negative number of minutes")
    if args.baseline is not None and not (args.baseline / "headfields").is_dir():
        parser.error(f"--baseline: expected a headfields checkout, got {args.baseline} (no headfields/)")
    deadline = time.monotonic() + 60 * args.deadline if args.deadline > 0 else None
    cuda = torch.cuda.is_available()
    quick = args.quick or not cuda
    out = args.out.resolve()
    logs = out / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    python = sys.executable

    # 1. tests
    if cuda:
        quick_files = [
            "tests/unit/encoders/test_hashgrid.py",
            "tests/unit/geometry/test_closest_point.py",
            "tests/unit/geometry/test_ray.py",
        ]
        files = quick_files if quick else ["tests"]
        # A module that cannot be imported there (PyAV, nbformat missing on a lent GPU) is an ERROR row of the report,
        # not the end of every test.
        selection, test_timeout = ["-k", "cuda", "--continue-on-collection-errors"], (300 if quick else 360)
        if not quick and importlib.util.find_spec("xdist") is not None:  # the GPU is shared; Warp compiles per process
            selection += ["-n", str(min(8, os.cpu_count() or 1))]
    else:  # a fast file, its CPU cases: a few seconds on 2 cores (the fallback checks the step, not the suite)
        files, selection, test_timeout = ["tests/unit/core/test_kernels.py"], ["-k", "cpu"], 300
    test_command = [python, "-m", "pytest", *files, "-q", *selection]
    steps: dict[str, Step | None] = dict.fromkeys(STEPS)
    examples: list[tuple[str, Step]] = []
    peers: dict[str, str] = {}
    device_line = device_name(cuda)

    def step(key: str, name: str, command: list[str], timeout: float) -> Step:
        """Run one step, then write the report as it stands: a call cut short keeps what it measured."""
        steps[key] = done = run_step(name, command, timeout, logs, deadline)
        save(final=False)
        return done

    def save(final: bool) -> tuple[str, list[str]]:
        lines, failed = report_lines(args, cuda, quick, out, steps, examples, peers, device_line, final)
        (out / "gpu_report.md").write_text("\n".join(lines))
        return "\n".join(lines), failed

    if not args.skip_tests:
        step("tests", "tests", test_command, test_timeout)

    # 2. benchmarks
    device = "cuda" if cuda else "cpu"
    if not cuda:  # hashgrid.py checks its first 4096 points against the reference; fewer is fine
        hash_flags, mesh_flags = ["--points", "1024", "--repeats", "1"], ["--points", "2000", "--repeats", "1"]
        mesh_flags += ["--trimesh-points", "500", "--trimesh-rays", "200", "--meshes", "head_proxy"]
        hash_flags += ["--grids", "ngp"]  # INSTA's 8-feature reference costs as much at 1024 points as at 2^18
    elif quick:
        hash_flags, mesh_flags = ["--points", str(2**16), "--repeats", "3"], ["--points", "100000", "--repeats", "3"]
    else:
        hash_flags, mesh_flags = ["--points", str(2**20), "--repeats", "5"], ["--points", "1000000", "--repeats", "5"]
    bench_timeout = 600 if quick else 1800
    hashgrid = [python, "benchmarks/hashgrid.py", "--device", device, *hash_flags]
    if not args.skip_benchmarks:
        step("hashgrid", "hashgrid", hashgrid, bench_timeout)
        if cuda:  # tiny-cuda-nn's default: the table read in half precision
            step("hashgrid_half", "hashgrid (float16 table)", [*hashgrid, "--table-dtype", "float16"], bench_timeout)
        step("mesh", "mesh_queries", [python, "benchmarks/mesh_queries.py", "--device", device, *mesh_flags], bench_timeout)
    peers.update({name: peer_status(name) for name in ("tinycudann", "cubvh")})

    # 3. INSTA
    run = out / "insta"
    if run.exists():
        shutil.rmtree(run)  # a fresh run: the example resumes an existing one
    (out / "render.json").unlink(missing_ok=True)  # step 4's, of an earlier run
    memory_file = out / "insta_memory.json"
    memory_file.unlink(missing_ok=True)
    minutes = min(args.minutes, 1.0) if quick else args.minutes
    insta_flags = ["--out", str(run), "--device", device, "--max-minutes", f"{minutes:g}"]
    if cuda:  # INSTA's image size, rendered on the GPU in a child (the parent holds no CUDA context)
        video = out / f"video{args.resolution}"
        config = f"SyntheticVideoConfig(resolution={args.resolution})"
        render = (
            "from headfields.synthetic import SyntheticVideoConfig, make_synthetic_video; "
            f"make_synthetic_video({str(video)!r}, {config}, device='cuda')"
        )
        if not (video / "transforms_train.json").is_file():
            step("video", "video", [python, "-c", render], 1800)
        insta_flags += ["--data", str(video), "--eval-every", "500", *INSTA_BUDGET_FLAGS]
    else:  # the same path at a budget the tiny video fills
        tiny = ["--iterations", "3", "--rays", "256", "--eval-frames", "1", "--samples-per-batch", "2048", "--early-stop", "1e-4"]
        tiny += ["--fixed-shapes", "True"]
        insta_flags += ["--data", str(tiny_video(out / "video")), *tiny]
    # The budget covers training and evaluation; the synthetic video's first rendering and Warp's compilation come on top.
    insta_cmd = [python, "-c", PEAK_MEMORY_CHILD, str(memory_file), "examples/insta.py", *insta_flags]
    step("insta", "insta", insta_cmd, minutes * 60 + 1200)

    # 4. INSTA's frame, on the run just trained (render.py reuses a finished run in its --out)
    if (run / "metrics.json").is_file():
        sizes = ["256", "512"] if cuda else ["32"]
        frame = [python, "benchmarks/render.py", "--only", "insta", "--sizes", *sizes, "--repeats", "5" if cuda else "1"]
        frame += ["--anatomy", "--profile", "--device", device, "--out", str(out)]
        frame += [] if args.baseline is None else ["--baseline", str(args.baseline.resolve())]
        step("frame", "frame", frame, 900 if args.baseline is None else 1200)
        # ... and under each knob whose answer awaits a GPU (frame_variants.py), on the same run. On CUDA the fused
        # decoders apart and last: their first call compiles cuBLASDx products, whose time on a GPU is not known yet,
        # and a call that --deadline cuts short keeps the other variants' table. The CPU compiles no cuBLASDx: every
        # variant in one call there (a process's start and the run's load, a third of each call's seconds, once).
        groups = (("variants", "knobs"), ("fused", "fused")) if cuda else (("variants", "all"),)
        for key, group in groups:
            (out / f"{key}.json").unlink(missing_ok=True)  # an earlier run's
            variants = [python, "tools/frame_variants.py", str(run), "--size", "512" if cuda else "24", "--group", group]
            variants += ["--repeats", "5" if cuda else "1", "--device", device, "--json", str(out / f"{key}.json")]
            step(key, key, variants, 600)

    # 5. the other examples (CUDA only)
    if cuda and args.example_minutes > 0:
        folder = out / "examples"
        if folder.exists():
            shutil.rmtree(folder)
        folder.mkdir(parents=True)
        budget = f"{args.example_minutes:g}"
        commands = {name: [f"examples/{name}.py", "--max-minutes", budget, "--eval-frames", "8"] for name in EXAMPLES}
        commands["nphm"] = ["benchmarks/ablations/nphm.py", "--prior-minutes", budget, "--track-minutes", budget, *NPHM_FLAGS]
        for name, command in commands.items():
            memory = folder / f"{name}_memory.json"
            full = [python, "-c", PEAK_MEMORY_CHILD, str(memory), *command, "--device", "cuda", "--out", str(folder / name)]
            examples.append((name, run_step(f"example {name}", full, args.example_minutes * 60 * 3 + 600, logs, deadline)))
            save(final=False)

    report, failed = save(final=True)
    print(report)
    print(f"[gpu.py] report: {out / 'gpu_report.md'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
