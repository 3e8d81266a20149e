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

import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from headfields.heads import tracked_head
from headfields.metrics import psnr
from headfields.models.portrait360 import Portrait360, Portrait360Config
from headfields.renderers import BACK, FRONT, SIDE
from headfields.synthetic import SyntheticVideoConfig, synthetic_subject

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/: the harness every model benchmark shares
from avatars import ablation_parser, ablation_training, budget_line, metric_cells, parse_ablation, print_table, train_variants  # noqa: E402

BIN_NAMES = {FRONT: "front", SIDE: "side", BACK: "back"}


FACE_REGIONS = ("skin", "lips", "teeth", "mouth_interior", "eyes")  # where expressions show


def psnr_by_bin(renders: Path, frames, bins: torch.Tensor) -> dict[str, float]:
    """Mean PSNR of the final renders per view bin (NaN for a bin without frames), and ``face``: the PSNR of the
    face's pixels (ground-truth labels in FACE_REGIONS) pooled over the front views. Frames the final evaluation did
    not render (a budget too short for them all) are left out."""
    values: dict[int, list[float]] = {b: [] for b in BIN_NAMES}
    labels = torch.tensor([frames.segmentation_labels[name] for name in FACE_REGIONS])
    face_pred, face_true = [], []
    for f in range(len(frames)):
        if not (renders / f"{f:05d}.png").is_file():
            continue
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
    parser = ablation_parser(__doc__, minutes=20.0, rays=2048)
    parser.add_argument("--only", type=int, nargs="+", default=None, help="run these variants (0, 1, 2) only")
    args = parse_ablation(parser, "portrait360")

    subject = synthetic_subject(SyntheticVideoConfig.portrait360())
    variants = {
        "deformation fields, balanced views": ("deformation", True),
        "colour blending, balanced views": ("colour", True),
        "deformation fields, uniform views": ("deformation", False),
    }
    bins = {}

    def by_view(model: Portrait360, m: dict, folder: Path) -> None:
        for split, frames in (("train", subject.train), ("eval", subject.eval)):
            bins[split] = model.view_bins(frames, tracked_head(model.parametric, frames))
        m.update(psnr_by_bin(folder / "renders" / "final", subject.eval, bins["eval"]))

    results = train_variants(
        {
            name: lambda blend=blend: Portrait360(subject.parametric, Portrait360Config(blend=blend))
            for name, (blend, _) in variants.items()
        },
        subject,
        args.out,
        lambda name: ablation_training(args, balance_views=variants[name][1]),
        only=None if args.only is None else [name for i, name in enumerate(variants) if i in args.only],
        measure=by_view,
    )

    notes = {split: f" (front/side/back {torch.bincount(b, minlength=3).tolist()})" for split, b in bins.items()}
    print(budget_line(subject, f"{args.minutes:g} min per variant", notes["train"], notes["eval"]))
    header = ["variant", "held-out PSNR", "front", "side", "back", "face (front)", "SSIM", "iterations", "it/s"]
    rows = [
        [
            name,
            *metric_cells(m, "psnr"),
            *(f"{m[key]:.2f} dB" for key in ("front", "side", "back", "face")),
            *metric_cells(m, "ssim", "iterations", "iterations_per_second"),
        ]
        for name, m in results.items()
    ]
    print_table(header, "lrrrrrrrr", rows)
    print(f"\nrenders and metrics under {args.out}")


if __name__ == "__main__":
    main()
