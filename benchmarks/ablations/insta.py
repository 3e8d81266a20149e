"""INSTA on the synthetic head video: the triangle-frame deformer against a rigid one, and the occupancy grid
against none, each trained for the same time budget in the same run, with INSTA's CPU recipe (``cpu_config``).

    python benchmarks/ablations/insta.py                 # 15 minutes per trained variant (the issue's budget)
    python benchmarks/ablations/insta.py --minutes 2     # a quick look

Prints held-out PSNR / SSIM (EMA weights, all test frames: expression combinations never seen in training),
training iterations per second and rendering rays per second, and the ratios.
"""

from __future__ import annotations

import sys
from pathlib import Path

from headfields.deformers import RigidDeformer, RigidDeformerConfig
from headfields.models.insta import Insta, cpu_config
from headfields.synthetic import synthetic_subject

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/: the harness every model benchmark shares
from avatars import ablation_parser, ablation_training, budget_line, metric_cells, parse_ablation, print_table, train_variants  # noqa: E402

BASE = "INSTA (triangle frames, occupancy grid)"


def main() -> None:
    args = parse_ablation(ablation_parser(__doc__, minutes=15.0, rays=2048), "insta")
    subject = synthetic_subject()
    parametric, labels = subject.parametric, subject.train.segmentation_labels
    variants = {
        BASE: lambda: Insta(parametric, labels, cpu_config()),
        "rigid deformer": lambda: Insta(
            parametric, labels, cpu_config(), deformer=RigidDeformer(RigidDeformerConfig(nearest_face=True))
        ),
        "no occupancy grid": lambda: Insta(parametric, labels, cpu_config(occupancy_every=0)),
    }
    results = train_variants(variants, subject, args.out, ablation_training(args, log_every=200))

    base = results[BASE]
    print(budget_line(subject, f"{args.minutes:g} min per variant"))
    header = [
        "variant",
        "held-out PSNR",
        "SSIM",
        "iterations",
        "it/s",
        "render rays/s",
        "ΔPSNR",
        "INSTA speed-up (train / render)",
    ]
    rows = []
    for name, m in results.items():
        train_ratio = base["iterations_per_second"] / m["iterations_per_second"]
        render_ratio = base["render_rays_per_second"] / m["render_rays_per_second"]
        rows.append(
            [
                name,
                *metric_cells(m, "psnr", "ssim", "iterations", "iterations_per_second", "render_rays_per_second"),
                f"{m['psnr'] - base['psnr']:+.2f} dB",
                f"{train_ratio:.2f}× / {render_ratio:.2f}×",
            ]
        )
    print_table(header, "lrrrrrrl", rows)
    print(f"\nrenders and metrics under {args.out}")


if __name__ == "__main__":
    main()
