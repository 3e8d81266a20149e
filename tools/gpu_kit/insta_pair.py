"""INSTA's paper recipe eager and as one CUDA graph, in one process (torch's CUDA context and Warp's kernels loaded
once), for issue 97's figures: the eager run trains ``--minutes`` of training time (its held-out PSNR is the figure
"after 2 minutes"), the graphed run ``GRAPHED_STEPS`` steps; each run's steady it/s is the least-squares slope of its
``log.jsonl`` steps over training seconds between steps ``STEADY`` (past the occupancy grid's warm-up, the recipe's
warm-up at step 500, where the graph's phase changes and it is captured again, and the captures). The figures are
written after each run, so a call cut short keeps the first run's.

    python tools/gpu_kit/insta_pair.py --data VIDEO --work DIR --json insta.json [--minutes 2]
    python tools/gpu_kit/insta_pair.py --dry-run --json insta.json    # the figures' names, no training
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import traceback
from pathlib import Path

STEADY = (600, 900)  # steps between which a run's rate is taken
GRAPHED_STEPS = 900
FIGURES = (
    "insta_eager_it_per_s", "insta_graph_it_per_s", "insta_graph_over_eager", "insta_psnr_after_minutes",
    "insta_minutes", "insta_graph_captures", "insta_graph_psnr", "insta_errors",
)  # fmt: skip


def steady_rate(log: Path, window: tuple[int, int] = STEADY) -> float | None:
    """Steps a second between ``window``'s steps: the least-squares slope of step over training time (None: fewer
    than two logged steps there)."""
    rows = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    points = [(r["time"], r["step"]) for r in rows if "loss" in r and window[0] <= r["step"] <= window[1]]
    if len({t for t, _ in points}) < 2:
        return None
    return statistics.linear_regression(*zip(*points, strict=True)).slope


def _last(log: Path, key: str):
    rows = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    return next((r[key] for r in reversed(rows) if key in r), None)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default=None)
    parser.add_argument("--work", default="outputs/gpu_kit/insta_pair")
    parser.add_argument("--json", required=True)
    parser.add_argument("--minutes", type=float, default=2.0)
    parser.add_argument("--dry-run", action="store_true")
    args = parser.parse_args(argv)
    figures: dict = dict.fromkeys(FIGURES)
    figures["insta_minutes"], figures["insta_errors"] = args.minutes, []
    if not args.dry_run:
        from headfields.apps.commands import main as headfields

        work = Path(args.work)
        common = ["train", "insta", "--device", "cuda", "--data", args.data, "--recipe", "paper", "--eval-every", "0"]
        runs = {
            "eager": [*common, "--out", str(work / "eager"), "--max-minutes", str(args.minutes), "--budget", "training"],
            "graph": [*common, "--out", str(work / "graph"), "--iterations", str(GRAPHED_STEPS), "--cuda-graph", "True"],
        }
        for name, command in runs.items():
            try:
                code = headfields(command)
                if code:
                    figures["insta_errors"].append(f"{name}: exit {code}")
                    continue
                metrics = json.loads((work / name / "metrics.json").read_text())
                figures[f"insta_{name}_it_per_s"] = steady_rate(work / name / "log.jsonl")
                if name == "eager":
                    figures["insta_psnr_after_minutes"] = metrics.get("psnr")
                else:
                    figures["insta_graph_psnr"] = metrics.get("psnr")
                    figures["insta_graph_captures"] = _last(work / name / "log.jsonl", "graph_captures")
            except (Exception, SystemExit):  # noqa: BLE001 (a bad argument exits: the other run and the figures go on)
                figures["insta_errors"].append(f"{name}: {traceback.format_exc(limit=3)}")
            finally:
                eager, graph = figures["insta_eager_it_per_s"], figures["insta_graph_it_per_s"]
                figures["insta_graph_over_eager"] = graph / eager if eager and graph else None
                Path(args.json).write_text(json.dumps(figures, indent=1) + "\n")
    Path(args.json).write_text(json.dumps(figures, indent=1) + "\n")
    print(json.dumps(figures, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
