"""MonoAvatar on the synthetic head video: UV-CNN vertex features (the paper's variant D) against static,
expression-independent vertex features (the paper's ablation baseline), each trained for the same time
budget in the same run; ``--code`` adds variant C (features decoded from expression and pose codes).

    python benchmarks/ablations/monoavatar.py                 # 15 minutes per variant (the issue's budget)
    python benchmarks/ablations/monoavatar.py --minutes 2     # a quick look

Prints held-out PSNR / SSIM over whole images and PSNR over the head's pixels (EMA weights, all test frames:
expression combinations never seen in training), training iterations per second, rendering rays per
second, and the differences to the static baseline.
"""

from __future__ import annotations

import sys
from pathlib import Path

from headfields.models.monoavatar import MonoAvatar, cpu_config
from headfields.synthetic import synthetic_subject

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/: the harness every model benchmark shares
from avatars import ablation_parser, ablation_training, budget_line, metric_cells, parse_ablation, print_table, train_variants  # noqa: E402


def main() -> None:
    helps = {"rays": "rays per batch (MonoAvatar: 1024)"}
    parser = ablation_parser(__doc__, minutes=15.0, rays=1024, frames_per_batch=4, helps=helps)
    parser.add_argument("--code", action="store_true", help="also train variant C")
    args = parse_ablation(parser, "monoavatar")

    subject = synthetic_subject()
    features = {"UV-CNN on displacements (D)": "displacement", "static vertex features": "static"}
    if args.code:
        features["UV-CNN on codes (C)"] = "code"

    def variant(kind: str):
        # The synthetic video's tracking is exact: the error correction would have nothing to correct.
        return lambda: MonoAvatar(subject.parametric, len(subject.train), cpu_config(features=kind, error_correction=None))

    results = train_variants({name: variant(kind) for name, kind in features.items()}, subject, args.out, ablation_training(args))

    base = results["static vertex features"]
    print(budget_line(subject, f"{args.minutes:g} min per variant"))
    header = [
        "vertex features",
        "held-out PSNR",
        "head PSNR",
        "SSIM",
        "iterations",
        "it/s",
        "render rays/s",
        "ΔPSNR / Δhead vs static",
    ]
    rows = [
        [
            name,
            *metric_cells(m, "psnr", "psnr_head", "ssim", "iterations", "iterations_per_second", "render_rays_per_second"),
            f"{m['psnr'] - base['psnr']:+.2f} / {m['psnr_head'] - base['psnr_head']:+.2f} dB",
        ]
        for name, m in results.items()
    ]
    print_table(header, "lrrrrrrl", rows)
    print(f"\nrenders and metrics under {args.out}")


if __name__ == "__main__":
    main()
