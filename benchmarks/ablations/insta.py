"""INSTA on the synthetic head video: the triangle-frame deformer against a rigid one, and the occupancy grid
against none, each trained for the same time budget in the same run, with INSTA's CPU recipe (``cpu_config``).

    python benchmarks/ablations/insta.py                 # 15 minutes per trained variant (the issue's budget)
    python benchmarks/ablations/insta.py --minutes 2     # a quick look

Prints held-out PSNR / SSIM (EMA weights, all test frames: expression combinations never seen in training),
training iterations per second and rendering rays per second, and the ratios.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import torch

from headfields.data import load_insta_dataset
from headfields.deformers import RigidDeformer, RigidDeformerConfig
from headfields.models.insta import Insta, cpu_config
from headfields.parametric import load_model
from headfields.synthetic import cached_synthetic_video
from headfields.training import TrainingConfig

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/: the harness every model benchmark shares
from avatars import train_variant  # noqa: E402


def run(name: str, model: Insta, train_frames, eval_frames, minutes: float, rays: int, out: Path) -> dict:
    config = TrainingConfig(max_minutes=minutes, rays_per_batch=rays, eval_every=0, checkpoint_every=0, log_every=200)
    return train_variant(model, train_frames, eval_frames, out / name, config)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, default=15.0, help="training budget per variant")
    parser.add_argument("--rays", type=int, default=2048)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    out = args.out or Path(tempfile.mkdtemp(prefix="insta_bench_"))

    root = cached_synthetic_video()
    train_frames, eval_frames = load_insta_dataset(root, "train"), load_insta_dataset(root, "test")
    parametric = load_model(train_frames.model_path, train_frames.model_type)
    labels = train_frames.segmentation_labels

    variants = {
        "INSTA (triangle frames, occupancy grid)": lambda: Insta(parametric, labels, cpu_config()),
        "rigid deformer": lambda: Insta(
            parametric, labels, cpu_config(), deformer=RigidDeformer(RigidDeformerConfig(nearest_face=True))
        ),
        "no occupancy grid": lambda: Insta(parametric, labels, cpu_config(occupancy_every=0)),
    }
    results = {}
    for i, (name, build) in enumerate(variants.items()):
        torch.manual_seed(0)  # the same initial weights for every variant
        results[name] = run(f"variant_{i}", build(), train_frames, eval_frames, args.minutes, args.rays, out)

    base = results["INSTA (triangle frames, occupancy grid)"]
    print(
        f"\n{len(train_frames)} training frames, {len(eval_frames)} held-out test frames at "
        f"{eval_frames.cameras.width} px; {args.minutes:g} min per variant on {torch.get_num_threads()} CPU threads\n"
    )
    header = "| variant | held-out PSNR | SSIM | iterations | it/s | render rays/s | ΔPSNR | INSTA speed-up (train / render) |"
    print(header)
    print("|---|---:|---:|---:|---:|---:|---:|---|")
    for name, m in results.items():
        train_ratio = base["iterations_per_second"] / m["iterations_per_second"]
        render_ratio = base["render_rays_per_second"] / m["render_rays_per_second"]
        print(
            f"| {name} | {m['psnr']:.2f} dB | {m['ssim']:.4f} | {m['iterations']} | {m['iterations_per_second']:.2f} | "
            f"{m['render_rays_per_second']:,.0f} | {m['psnr'] - base['psnr']:+.2f} dB | "
            f"{train_ratio:.2f}× / {render_ratio:.2f}× |"
        )
    print(f"\nrenders and metrics under {out}")


if __name__ == "__main__":
    main()
