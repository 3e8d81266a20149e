"""The GPU session's one summary (``session.sh`` runs it last): every figure issue 97 asks for, by name (null where its
step did not run), beside its target, the steps' times against the plan, and one archive of the steps' logs and small
outputs. Writes ``OUT/summary.json`` and ``OUT/logs.tar.gz``, nothing else.

    python tools/gpu_kit/summary.py --work /tmp/gpu_kit_work --out outputs/gpu_kit --plan 540 --dry-run 0
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tarfile
from importlib import metadata
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from insta_pair import FIGURES as INSTA_FIGURES  # noqa: E402

PLAN_LIMIT_S = 600  # a call's limit on the lent machine
GAUSSIAN_SIZE = "512"
GAUSSIAN_FIGURES = (
    "gaussians", "gaussian_512_frames_per_s", "gaussian_512_forward_ms", "gaussian_512_forward_backward_ms",
    "gsplat_512_forward_ms", "gsplat_512_forward_backward_ms", "gaussian_512_forward_backward_over_gsplat",
)  # fmt: skip
TEST_FIGURES = ("cuda_tests_passed", "cuda_tests_failed", "cuda_tests_errors", "cuda_tests_skipped", "cuda_tests_failures")
# pytest's last line, "=== 1 failed, 40 passed, 3 skipped in 9.1s ===" (-q: without the rules): a run cut short has none
FINAL_LINE = re.compile(r"^=*\s*((?:\d+ \w+(?:, )?)+) in [\d.]+s")
# Issue 97's acceptance on a GPU: figure -> (comparison, target)
TARGETS = {
    "insta_graph_it_per_s": (">=", 100.0),
    "insta_psnr_after_minutes": (">=", 35.84),
    "gaussian_512_frames_per_s": (">=", 300.0),
    "gaussian_512_forward_backward_over_gsplat": ("<=", 1.5),
}
ARCHIVED = ("*.log", "*.json", "*.txt", "**/log.jsonl", "**/metrics.json")  # not the video, images or checkpoints


def _json(path: Path) -> dict:
    return json.loads(path.read_text()) if path.is_file() else {}


def _gaussians(work: Path) -> dict:
    found = _json(work / "gaussians.json")
    row = found.get("sizes", {}).get(GAUSSIAN_SIZE, {})
    ms = lambda key: None if row.get(key) is None else 1e3 * row[key]  # noqa: E731
    values = (
        found.get("gaussians"), row.get("frames_per_s"), ms("forward_s"), ms("forward_backward_s"),
        ms("gsplat_forward_s"), ms("gsplat_forward_backward_s"), row.get("forward_backward_over_gsplat"),
    )  # fmt: skip
    return dict(zip(GAUSSIAN_FIGURES, values, strict=True))


def _tests(work: Path) -> dict:
    """The CUDA tests' counts from pytest's last line (all null where the run was cut short before it) and the tests
    that failed or errored (named by -rfE as the run ends)."""
    log = work / "cuda_tests.log"
    figures = dict.fromkeys(TEST_FIGURES)
    if not log.is_file():
        return figures
    text = log.read_text(errors="replace")
    finals = [m for line in text.splitlines() if (m := FINAL_LINE.match(line.strip()))]
    if finals:
        said = re.findall(r"(\d+) (\w+)", finals[-1].group(1))
        counts = {("errors" if word == "error" else word): int(n) for n, word in said}  # (pytest: "1 error")
        for name in ("passed", "failed", "errors", "skipped"):
            figures[f"cuda_tests_{name}"] = counts.get(name, 0)
    figures["cuda_tests_failures"] = re.findall(r"^(?:FAILED|ERROR) (\S+)", text, flags=re.M)[:30]
    return figures


def _steps(work: Path) -> dict:
    steps = {}
    for line in (work / "steps.txt").read_text().splitlines() if (work / "steps.txt").is_file() else []:
        name, expected, rc, seconds = line.split()
        steps[name] = {"expected_s": int(expected), "rc": rc, "seconds": int(seconds)}
    return steps


def _machine() -> dict:
    def said(command: list[str]) -> str | None:
        try:
            return subprocess.run(command, capture_output=True, text=True, timeout=20).stdout.strip() or None
        except (OSError, subprocess.TimeoutExpired):
            return None

    try:
        torch = metadata.version("torch")
    except metadata.PackageNotFoundError:
        torch = None
    gpu = said(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"])
    return {"gpu": gpu, "torch": torch, "commit": said(["git", "rev-parse", "--short", "HEAD"])}


def summary(work: Path, plan: int, dry_run: bool) -> dict:
    """Every figure by name: from the outputs of the steps this call ran (``steps.txt``), null for the others."""
    steps = _steps(work)
    ran = {name for name, step in steps.items() if step["rc"] not in ("dry", "skipped")}
    insta = _json(work / "insta.json") if "insta" in ran else {}
    figures = {name: insta.get(name) for name in INSTA_FIGURES}
    figures |= _gaussians(work) if "gaussians" in ran else dict.fromkeys(GAUSSIAN_FIGURES)
    figures |= _tests(work) if "cuda_tests" in ran else dict.fromkeys(TEST_FIGURES)
    met = {}
    for name, (op, target) in TARGETS.items():
        value = figures[name]
        met[name] = None if value is None else (value >= target if op == ">=" else value <= target)
    return {
        "dry_run": dry_run,
        "machine": _machine(),
        "plan_s": plan,
        "plan_fits": plan <= PLAN_LIMIT_S,
        "steps": steps,
        "figures": figures,
        "targets": {name: f"{op} {target}" for name, (op, target) in TARGETS.items()},
        "met": met,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--work", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--plan", type=int, required=True)
    parser.add_argument("--dry-run", type=int, default=0)
    args = parser.parse_args(argv)
    work, out = Path(args.work), Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    result = summary(work, args.plan, bool(args.dry_run))
    (out / "summary.json").write_text(json.dumps(result, indent=1) + "\n")
    with tarfile.open(out / "logs.tar.gz", "w:gz") as archive:
        for pattern in ARCHIVED:
            for path in sorted(work.glob(pattern)):
                if path.is_file() and path.stat().st_size < 8 << 20:
                    archive.add(path, arcname=str(path.relative_to(work)))
    print(json.dumps(result["figures"], indent=1))
    print(f"[kit] plan {args.plan}s ({'fits' if result['plan_fits'] else 'over'} {PLAN_LIMIT_S}s); met: {result['met']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
