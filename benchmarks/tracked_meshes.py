"""INSTA trained through the tracked-mesh path against the parametric path, on the same synthetic video and budget.

The synthetic video is written in INSTA's released layout (``write_insta_capture``: RGB label images with INSTA's
face-parsing codes, millimetre depth, RGBA images, tracked meshes, ``canonical.obj``, no model files) and read back
as a real capture would be: a ``TrackedMeshModel`` with regions from the segmentation. The parametric path reads
the same video with its FLAME parameters and model files.

    python benchmarks/tracked_meshes.py --iterations 500           # the two paths, 500 iterations each
    python benchmarks/tracked_meshes.py --iterations 500 --remesh  # and a re-meshed head (another topology)
    python benchmarks/tracked_meshes.py --model-regions             # and the tracked meshes with FLAME's regions

Prints held-out PSNR / SSIM on every test frame (EMA weights) and the difference; writes ``OUT/metrics.json``.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import torch

from headfields.data import load_subject
from headfields.models import insta
from headfields.models.insta import Insta
from headfields.synthetic import synthetic_subject, write_insta_capture
from headfields.training import TrainingConfig, seed_everything

from avatars import train_variant


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--iterations", type=int, default=500, help="training iterations per path (the budget)")
    parser.add_argument("--rays", type=int, default=2048)
    parser.add_argument("--remesh", action="store_true", help="also train on the re-meshed head")
    parser.add_argument(
        "--model-regions",
        action="store_true",
        help="also train the tracked-mesh path with the synthetic FLAME's own regions (a region file) instead of the vote",
    )
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--seed", type=int, default=0, help="the initial weights and the sampling, the same on every path")
    args = parser.parse_args()
    out = args.out or Path(tempfile.mkdtemp(prefix="tracked_meshes_"))

    subjects = {"parametric (FLAME parameters, model files)": synthetic_subject()}
    subjects["tracked meshes (INSTA layout, no model)"] = load_subject(write_insta_capture(out / "capture"))
    if args.model_regions:
        name = "tracked meshes, FLAME's regions (regions.json)"
        subjects[name] = load_subject(out / "capture", regions=flame_region_file(subjects, out / "flame_regions.json"))
    if args.remesh:
        capture = write_insta_capture(out / "capture_remeshed", remesh=True)
        subjects["tracked meshes, re-meshed head"] = load_subject(capture)
    config = TrainingConfig(
        seed=args.seed,
        max_iterations=args.iterations,
        max_minutes=1e6,
        rays_per_batch=args.rays,
        eval_every=0,
        checkpoint_every=0,
        log_every=100,
    )
    results = {}
    for i, (name, subject) in enumerate(subjects.items()):
        for note in subject.notes:
            print(f"{name}: {note}")
        seed_everything(args.seed)  # the same initial weights on every path
        model = Insta(subject.parametric, subject.train.segmentation_labels, insta.cpu_config())
        results[name] = train_variant(model, subject.train, subject.eval, out / f"path_{i}", config)

    base = results["parametric (FLAME parameters, model files)"]
    frames, threads = len(subject.eval), torch.get_num_threads()
    print(f"\nINSTA, {args.iterations} iterations per path, {frames} held-out test frames, {threads} threads")
    print(f"{'path':48s} {'PSNR':>7s} {'SSIM':>7s} {'dPSNR':>7s} {'seconds':>8s}")
    for name, r in results.items():
        print(f"{name:48s} {r['psnr']:7.2f} {r['ssim']:7.4f} {r['psnr'] - base['psnr']:+7.2f} {r['train_seconds']:8.0f}")
    (out / "metrics.json").write_text(json.dumps(results, indent=1) + "\n")
    print(f"metrics: {out / 'metrics.json'}")


def flame_region_file(subjects: dict, path: Path) -> Path:
    """The synthetic FLAME's regions as a region file of the tracked meshes (same topology): each region's faces."""
    neutral = subjects["parametric (FLAME parameters, model files)"].parametric()
    regions = {name: neutral.face_mask(name).nonzero().flatten().tolist() for name in neutral.regions}
    path.write_text(json.dumps(regions))
    return path


if __name__ == "__main__":
    main()
