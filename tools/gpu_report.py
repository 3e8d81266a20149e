"""tools/gpu.py's report: a step's record (:class:`Step`) and the report's sections, each from what the steps
printed or wrote (pytest's counts, the benchmarks' tables, INSTA's metrics.json and log.jsonl, render.py's render.json,
frame_variants.py's table). Kept apart from the runner, which only starts the steps and writes what this returns."""

from __future__ import annotations

import json
import platform
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

TAIL_LINES = 30  # of a failed step's output, in the report
PSNR_MINUTES = (1.0, 2.5, 5.0)
INSTA_STEPS = 20_000  # INSTA's training length: its C++ trains them in under 10 minutes on an RTX 3090
FRAME_GOAL_MS = 1000 / 30  # issue 40: INSTA's 512² frame at 30 frames a second on an H100
NPHM_FLAGS = ["--identities", "4", "--expressions", "3"]  # benchmarks/ablations/nphm.py's small prior, in the examples step


@dataclass
class Step:
    """One subprocess: its command, exit status (None: it ran past its time limit, or was skipped), seconds and
    output."""

    name: str
    command: list[str]
    returncode: int | None
    seconds: float
    stdout: str
    stderr: str
    skipped: bool = False  # not started: --deadline had passed

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    def status(self) -> str:
        if self.skipped:
            return "**SKIPPED**: `--deadline` had passed"
        if self.returncode is None:
            return f"**FAILED**: ran past its time limit ({self.seconds:.0f} s)"
        return f"ok ({self.seconds:.0f} s)" if self.ok else f"**FAILED**: exit status {self.returncode} ({self.seconds:.0f} s)"

    def tail(self, lines: int = TAIL_LINES) -> str:
        return "\n".join((self.stdout + "\n" + self.stderr).strip().splitlines()[-lines:])


def pytest_counts(output: str) -> dict[str, int]:
    """pytest's closing counts ("3 passed, 1 skipped, 9 deselected in 4.2s") as {outcome: count}."""
    for line in reversed(output.splitlines()):
        if re.search(r"\bin [\d.]+s", line):
            found = re.findall(r"(\d+) (passed|failed|skipped|deselected|errors?|xfailed|xpassed|warnings?)", line)
            return {word.rstrip("s") if word.startswith(("error", "warning")) else word: int(n) for n, word in found}
    return {}


def machine_lines(device: str) -> list[str]:
    import warp as wp

    return [
        f"- device: {device}",
        f"- python {platform.python_version()}, torch {torch.__version__}, warp {wp.__version__}; {platform.platform()}",
        f"- command: `python {' '.join([Path(sys.argv[0]).name, *sys.argv[1:]])}`; {time.strftime('%Y-%m-%d %H:%M:%S')}",
    ]


def failure_block(step: Step) -> list[str]:
    return [f"Last {TAIL_LINES} lines of its output:", "", "```", step.tail(), "```", ""]


def tests_section(step: Step) -> list[str]:
    counts = pytest_counts(step.stdout)
    lines = ["## Tests", "", f"`{' '.join(step.command[2:])}`: {step.status()}", ""]
    if counts:
        values = " | ".join(map(str, counts.values()))
        lines += ["| " + " | ".join(counts) + " |", "|" + "---:|" * len(counts), f"| {values} |", ""]
    summary = [ln for ln in step.stdout.splitlines() if ln.startswith(("FAILED", "ERROR", "SKIPPED"))]
    if summary:
        lines += ["```", *summary[:40], *(["..."] if len(summary) > 40 else []), "```", ""]
    return lines + ([] if step.ok and counts else failure_block(step))


def benchmark_section(title: str, step: Step, fenced: bool) -> list[str]:
    lines = [f"## {title}", "", f"`{' '.join(step.command[1:])}`: {step.status()}", ""]
    if not step.ok:
        return lines + failure_block(step)
    out = step.stdout.strip()
    return lines + (["```", out, "```", ""] if fenced else [out, ""])


def peak_memory(memory_file: Path) -> str:
    """torch's peak CUDA memory as the wrapper wrote it."""
    try:
        memory = json.loads(memory_file.read_text())
    except (OSError, ValueError):
        return "—"  # the wrapper wrote nothing
    allocated, reserved = memory.get("max_memory_allocated"), memory.get("max_memory_reserved")
    return f"{allocated / 2**30:.2f} GiB ({reserved / 2**30:.2f} GiB reserved)" if allocated is not None else "— (no CUDA)"


def insta_section(step: Step, run: Path, memory_file: Path, cuda: bool) -> tuple[list[str], bool]:
    """The INSTA figures from ``run/metrics.json`` and the wrapper's memory file, and whether they were there."""
    lines = ["## INSTA", "", f"`{' '.join(step.command[4:])}`: {step.status()}", ""]
    try:
        metrics = json.loads((run / "metrics.json").read_text())
        rate = metrics["iterations"] / metrics["train_seconds"]
    except (OSError, ValueError, KeyError, ZeroDivisionError) as error:
        return lines + [f"No figures: {run / 'metrics.json'}: {error}", ""] + failure_block(step), False
    peak = peak_memory(memory_file)
    head = f"{metrics['psnr_head']:.2f} dB" if metrics.get("psnr_head") is not None else "—"
    lines += [
        "| held-out PSNR | head PSNR | SSIM | iterations | train s | it/s | peak GPU memory (torch) | eval frames |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
        f"| {metrics['psnr']:.2f} dB | {head} | {metrics['ssim']:.4f} | {metrics['iterations']} | "
        f"{metrics['train_seconds']:.1f} | {rate:.2f} it/s | {peak} | "
        f"{metrics['eval_frames']} of {metrics['eval_frames_total']} |",
        "",
        f"Run folder: `{run}` (renders, log.jsonl, checkpoint)." + ("" if cuda else " CPU recipe, 3 iterations."),
        "",
    ]
    lines += sample_lines(metrics, rate, run / "log.jsonl")
    if not step.ok:  # figures written, yet the process failed afterwards
        lines += failure_block(step)
    return lines, True


def sample_lines(metrics: dict, rate: float, log: Path) -> list[str]:
    """The rays and samples of INSTA's steps (metrics.json), the trained samples a second, the held-out PSNR of the
    last evaluation by each of PSNR_MINUTES of training (log.jsonl) and INSTA_STEPS at the run's rate."""
    trained = metrics.get("samples_trained_per_step")
    evaluations = []
    try:
        for line in log.read_text().splitlines():
            record = json.loads(line)
            if "eval" in record:
                evaluations.append((record["time"], record["eval"]["psnr"]))
    except (OSError, ValueError, KeyError):
        pass
    by = []
    for minutes in PSNR_MINUTES:
        done = [psnr for seconds, psnr in evaluations if seconds <= minutes * 60]
        by.append(f"{done[-1]:.2f} dB" if done else "—")
    return [
        "| rays a step | samples marched a step | samples trained a step | trained samples/s | "
        + " | ".join(f"PSNR by {m:g} min" for m in PSNR_MINUTES)
        + f" | {INSTA_STEPS:,} steps at this rate |",
        "|---:|---:|---:|---:|" + "---:|" * len(PSNR_MINUTES) + "---:|",
        f"| {metrics.get('rays_per_step', 0):,.0f} | {metrics.get('samples_marched_per_step') or 0:,.0f} | "
        f"{trained or 0:,.0f} | {(trained or 0) * rate:,.0f} | " + " | ".join(by) + f" | {INSTA_STEPS / rate:,.0f} s |",
        "",
    ]


def example_row(name: str, step: Step, run: Path, memory_file: Path) -> str:
    """One row of the examples table: status, recipe (as the example printed it), it/s, peak memory, PSNR."""
    recipe = re.search(r"^recipe: (\w+)", step.stdout, flags=re.M)
    try:
        metrics = json.loads((run / "metrics.json").read_text())
    except (OSError, ValueError):
        metrics = {}
    seconds, iterations = metrics.get("train_seconds"), metrics.get("iterations")
    rate = f"{iterations / seconds:.2f}" if seconds and iterations else "—"
    psnr = f"{metrics['psnr']:.2f} dB" if isinstance(metrics.get("psnr"), int | float) else "—"
    recipe_name = recipe.group(1) if recipe else "—"
    return f"| {name} | {step.status()} | {recipe_name} | {rate} | {peak_memory(memory_file)} | {psnr} |"


def examples_section(rows: list[str], failed: list[Step], minutes: float, cuda: bool) -> list[str]:
    lines = ["## Every other example", ""]
    if not cuda:
        return lines + ["Left out: CUDA only (the CPU runs them in the test suite and benchmarks/compare.py).", ""]
    if not rows:
        return lines + ["Left out (`--example-minutes 0`).", ""]
    lines += [
        f"`examples/NAME.py --device cuda --max-minutes {minutes:g} --eval-frames 8` (and `benchmarks/ablations/nphm.py "
        f"--device cuda --prior-minutes {minutes:g} --track-minutes {minutes:g} {' '.join(NPHM_FLAGS)}`): a check that "
        "each CUDA path trains and evaluates; a minute is far from converged.",
        "",
        "| run | status | recipe | it/s | peak GPU memory (torch) | held-out PSNR |",
        "|---|---|---|---:|---:|---:|",
        *rows,
        "",
    ]
    for step in failed:
        lines += [f"{step.name}:", "", *failure_block(step)]
    return lines


def report_lines(
    args, cuda: bool, quick: bool, out: Path, steps: dict, examples: list, peers: dict, device: str, final: bool = True
) -> tuple[list, list]:
    """The report of the steps run so far (a step not yet run is None), and the names of those that failed (or were
    skipped). Before the ``final`` one it says that it is incomplete."""
    insta = steps["insta"]
    insta_lines, insta_figures = insta_section(insta, out / "insta", out / "insta_memory.json", cuda) if insta else ([], True)
    ran = [step for step in steps.values() if step is not None] + [step for _, step in examples]
    failed = [s.name + (" (skipped: --deadline)" if s.skipped else "") for s in ran if not s.ok]
    failed += [] if insta_figures or not insta.ok else ["insta (no metrics.json)"]
    lines = ["# headfields on the GPU", ""]
    if not cuda:
        lines += ["> **no CUDA device: CPU fallback at tiny sizes, not GPU figures.**", ""]
    elif quick:
        lines += ["> `--quick`: a test subset, smaller benchmark sizes and a 1-minute INSTA run.", ""]
    lines += machine_lines(device)
    if not final:
        lines += ["- **incomplete**: written after each step; the steps not shown here had not run yet"]
    if failed:
        lines += [f"- steps failed: {', '.join(failed)}", ""]
    else:
        lines += ["- every step passed" if final else "- every step so far passed", ""]
    tests = steps["tests"]
    lines += tests_section(tests) if tests else ["## Tests", "", "Left out (`--skip-tests`).", ""]
    if args.skip_benchmarks:
        lines += ["## Hash grid and mesh queries", "", "Left out (`--skip-benchmarks`).", ""]
    for title, key in (("Hash grid", "hashgrid"), ("Hash grid, float16 table", "hashgrid_half")):
        if steps[key] is not None:
            lines += benchmark_section(title, steps[key], fenced=True)
    if steps["mesh"] is not None:
        lines += benchmark_section("Mesh queries", steps["mesh"], fenced=False)
    if peers:
        lines += ["## Optional CUDA peers", "", *(f"- {name}: {status}" for name, status in peers.items())]
        lines += ["", "(Neither is benchmarked by the scripts above; listed so a GPU run says which could be compared.)", ""]
    lines += insta_lines
    if steps["frame"] is not None:
        lines += frame_section(steps["frame"], out / "render.json", cuda)
    for key, title in (("variants", "INSTA's frame by variant"), ("fused", "INSTA's frame with the fused decoder")):
        if steps[key] is not None:
            lines += variants_section(steps[key], title)
    rows = [example_row(name, step, out / "examples" / name, out / "examples" / f"{name}_memory.json") for name, step in examples]
    lines += examples_section(rows, [step for _, step in examples if not step.ok], args.example_minutes, cuda)
    return lines + [f"Full output of every step under `{out / 'logs'}`.", ""], failed


def variants_section(step: Step, title: str) -> list[str]:
    """frame_variants.py's table as it printed it, and the variants it left out (its figures: the step's JSON)."""
    lines = [f"## {title}", "", f"`{' '.join(step.command[1:])}`: {step.status()}", ""]
    lines += [line for line in step.stdout.splitlines() if line.startswith(("|", "left out: "))] + [""]
    return lines + ([] if step.ok else failure_block(step))


def frame_section(step: Step, results: Path, cuda: bool) -> list[str]:
    """INSTA's frame from render.py's render.json, against issue 40's goal, and render.py's own tables."""
    lines = ["## INSTA's frame", "", f"`{' '.join(step.command[1:])}`: {step.status()}", ""]
    try:
        timings = json.loads(results.read_text())["models"]["insta"]["sizes"]
    except (OSError, ValueError, KeyError) as error:
        return lines + [f"No figures: {results}: {error}", ""] + failure_block(step)
    lines += ["| size | scores (stop at 1e-4) | viewer (1e-2, bfloat16) | training renderer |", "|---:|---:|---:|---:|"]
    # With --baseline, render.py times ours in the turns alone: the baseline's training renderer, not ours, is timed.
    for size, t in timings.items():
        training = f"{t['training_ms']:,.1f} ms" if "training_ms" in t else "not timed (--baseline)"
        lines.append(f"| {size}² | {t['inference_ms']:,.1f} ms | {t['interactive_ms']:,.1f} ms | {training} |")
    if cuda and "512" in timings:
        lines.append("")
        for how, key in (("as scored", "inference_ms"), ("as the viewer renders it (INSTA's own stop)", "interactive_ms")):
            ms = timings["512"][key]
            verdict = "met" if ms <= FRAME_GOAL_MS else "not met"
            lines.append(f"- The 512² frame {how}: {ms:.1f} ms against the goal's {FRAME_GOAL_MS:.1f} ms: **{verdict}**.")
    lines += ["", "render.py's tables (its images against the training renderer's, where the frame's time goes, its kernels):"]
    previous = ""
    for line in step.stdout.splitlines():
        if "under the profiler" in line:  # the profile's heading: the frame's time and the device's busy time
            lines += ["", line]
        elif line.startswith("== taking turns with the baseline:"):  # the A/B's table follows
            checkout = line.split("baseline: ", 1)[1].rstrip(" =")
            lines += ["", f"Ours and the baseline's renderers taking turns on the same run (baseline: {checkout}):"]
        elif line.startswith("|"):
            lines += [""] if not previous.startswith("|") else []  # a blank line before each table
            lines.append(line)
        previous = line
    return lines + [""]
