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

import argparse
import sys
import tempfile
from pathlib import Path

import torch

from headfields.data import load_insta_dataset
from headfields.models.monoavatar import MonoAvatar, cpu_config
from headfields.parametric import load_model
from headfields.synthetic import cached_synthetic_video
from headfields.training import TrainingConfig

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/: the harness every model benchmark shares
from avatars import train_variant  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, default=15.0, help="training budget per variant")
    parser.add_argument("--rays", type=int, default=1024, help="rays per batch (MonoAvatar: 1024)")
    parser.add_argument("--frames-per-batch", type=int, default=4)
    parser.add_argument("--code", action="store_true", help="also train variant C")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    out = args.out or Path(tempfile.mkdtemp(prefix="monoavatar_bench_"))

    root = cached_synthetic_video()
    train_frames, eval_frames = load_insta_dataset(root, "train"), load_insta_dataset(root, "test")
    parametric = load_model(train_frames.model_path, train_frames.model_type)
    variants = {"UV-CNN on displacements (D)": "displacement", "static vertex features": "static"}
    if args.code:
        variants["UV-CNN on codes (C)"] = "code"
    training = TrainingConfig(
        max_minutes=args.minutes,
        rays_per_batch=args.rays,
        frames_per_batch=args.frames_per_batch,
        eval_every=0,
        checkpoint_every=0,
        log_every=100,
    )
    results = {}
    for i, (name, features) in enumerate(variants.items()):
        torch.manual_seed(0)
        # The synthetic video's tracking is exact: the error correction would have nothing to correct.
        model = MonoAvatar(parametric, len(train_frames), cpu_config(features=features, error_correction=None))
        results[name] = train_variant(model, train_frames, eval_frames, out / f"variant_{i}", training)

    base = results["static vertex features"]
    print(
        f"\n{len(train_frames)} training frames, {len(eval_frames)} held-out test frames at "
        f"{eval_frames.cameras.width} px; {args.minutes:g} min per variant on {torch.get_num_threads()} CPU threads\n"
    )
    print("| vertex features | held-out PSNR | head PSNR | SSIM | iterations | it/s | render rays/s | ΔPSNR / Δhead vs static |")
    print("|---|---:|---:|---:|---:|---:|---:|---|")
    for name, m in results.items():
        print(
            f"| {name} | {m['psnr']:.2f} dB | {m['psnr_head']:.2f} dB | {m['ssim']:.4f} | {m['iterations']} | "
            f"{m['iterations_per_second']:.2f} | {m['render_rays_per_second']:,.0f} | "
            f"{m['psnr'] - base['psnr']:+.2f} / {m['psnr_head'] - base['psnr_head']:+.2f} dB |"
        )
    print(f"\nrenders and metrics under {out}")


if __name__ == "__main__":
    main()
