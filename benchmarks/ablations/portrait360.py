"""The 360° portrait on the synthetic orbit video (the SMPL-X bust turning before the camera): blending
deformation fields against blending colours (the paper's ablation), and view-balanced against uniform ray
sampling, each trained for the same time budget in the same run.

    python benchmarks/ablations/portrait360.py                # 20 minutes per variant (the issue's budget)
    python benchmarks/ablations/portrait360.py --minutes 5    # a quick look

Prints held-out PSNR (EMA weights, all test frames: expression combinations never seen in training) over whole
images and per view bin (front, side, back: the angle between where the subject faces and the camera), over the
face's pixels in front views (where the expressions show), and training iterations per second.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from headfields.data import load_insta_dataset
from headfields.metrics import psnr
from headfields.models.portrait360 import Portrait360, Portrait360Config
from headfields.parametric import load_model
from headfields.renderers import BACK, FRONT, SIDE
from headfields.synthetic import SyntheticVideoConfig, cached_synthetic_video
from headfields.training import TrainingConfig

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/: the harness every model benchmark shares
from avatars import train_variant  # noqa: E402

BIN_NAMES = {FRONT: "front", SIDE: "side", BACK: "back"}


FACE_REGIONS = ("skin", "lips", "teeth", "mouth_interior", "eyes")  # where expressions show


def psnr_by_bin(renders: Path, frames, bins: torch.Tensor) -> dict[str, float]:
    """Mean PSNR of the final renders per view bin (NaN for a bin without frames), and ``face``: the PSNR of the
    face's pixels (ground-truth labels in FACE_REGIONS) pooled over the front views."""
    values: dict[int, list[float]] = {b: [] for b in BIN_NAMES}
    labels = torch.tensor([frames.segmentation_labels[name] for name in FACE_REGIONS])
    face_pred, face_true = [], []
    for f in range(len(frames)):
        pred = torch.from_numpy(np.array(Image.open(renders / f"{f:05d}.png"))).float() / 255.0
        true = frames.images[f].float() / 255.0
        values[int(bins[f])].append(float(psnr(pred, true)))
        if bins[f] == FRONT:
            face = torch.isin(frames.segmentation[f].long(), labels)
            face_pred.append(pred[face])
            face_true.append(true[face])
    result = {BIN_NAMES[b]: float(np.mean(v)) if v else float("nan") for b, v in values.items()}
    result["face"] = float(psnr(torch.cat(face_pred), torch.cat(face_true))) if face_pred else float("nan")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, default=20.0, help="training budget per variant")
    parser.add_argument("--rays", type=int, default=2048)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--only", type=int, nargs="+", default=None, help="run these variants (0, 1, 2) only")
    args = parser.parse_args()
    out = args.out or Path(tempfile.mkdtemp(prefix="portrait360_bench_"))

    root = cached_synthetic_video(SyntheticVideoConfig.portrait360())
    train_frames, eval_frames = load_insta_dataset(root, "train"), load_insta_dataset(root, "test")
    parametric = load_model(train_frames.model_path, train_frames.model_type)
    variants = {
        "deformation fields, balanced views": ("deformation", True),
        "colour blending, balanced views": ("colour", True),
        "deformation fields, uniform views": ("deformation", False),
    }
    results = {}
    for i, (name, (blend, balanced)) in enumerate(variants.items()):
        if args.only is not None and i not in args.only:
            continue
        torch.manual_seed(0)
        model = Portrait360(parametric, Portrait360Config(blend=blend))
        training = TrainingConfig(
            max_minutes=args.minutes,
            rays_per_batch=args.rays,
            balance_views=balanced,
            eval_every=0,
            checkpoint_every=0,
            log_every=100,
        )
        results[name] = m = train_variant(model, train_frames, eval_frames, out / f"variant_{i}", training)
        m.update(psnr_by_bin(out / f"variant_{i}" / "renders" / "final", eval_frames, model.view_bins(eval_frames)))
        m["train_bins"] = torch.bincount(model.view_bins(train_frames), minlength=3).tolist()

    bins = torch.bincount(model.view_bins(eval_frames), minlength=3)
    print(
        f"\n{len(train_frames)} training frames (front/side/back {m['train_bins']}), "
        f"{len(eval_frames)} held-out test frames (front/side/back {bins.tolist()}) at {eval_frames.cameras.width} px; "
        f"{args.minutes:g} min per variant on {torch.get_num_threads()} CPU threads\n"
    )
    print("| variant | held-out PSNR | front | side | back | face (front) | SSIM | iterations | it/s |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name, m in results.items():
        print(
            f"| {name} | {m['psnr']:.2f} dB | {m['front']:.2f} dB | {m['side']:.2f} dB | {m['back']:.2f} dB | "
            f"{m['face']:.2f} dB | "
            f"{m['ssim']:.4f} | {m['iterations']} | {m['iterations_per_second']:.2f} |"
        )
    print(f"\nrenders and metrics under {out}")


if __name__ == "__main__":
    main()
