"""MonoNPHM end to end on synthetic data: train an NPHM prior on scans of many synthetic identities with personal
detail FLAME cannot express, then track a held-out identity, never in the prior, from its monocular video.

    python benchmarks/ablations/nphm.py --out outputs/nphm                        # 16 identities, 30 + ~15 minutes on 2 cores
    python benchmarks/ablations/nphm.py --out /tmp/nphm --prior-minutes 2 --identities 4 --expressions 3   # a quick look
    python benchmarks/ablations/nphm.py --out outputs/nphm_harder --prior outputs/nphm/prior.pt --person out-of-range
    python benchmarks/ablations/nphm.py --out outputs/nphm_noisy --prior outputs/nphm/prior.pt --noisy

``--prior`` fits a prior trained before (the scan set's flags must be the ones it was trained with, as they choose
the held-out person); ``--person out-of-range`` tracks a person whose detail lies beyond every range the scan set
draws from (:data:`~headfields.synthetic.OUT_OF_RANGE_DETAIL`); ``--noisy`` tracks from a capture whose head
poses and detected landmarks carry :class:`~headfields.synthetic.TrackingNoise`'s errors (:func:`noisy_tracking`);
``--local-code-scale`` scales the paper's weight on the local codes in every tracking stage.

The prior trains as ``python -m headfields train nphm_prior`` trains it (the library's
:func:`~headfields.models.mononphm.prior_method.train_synthetic_prior`, at the CPU recipe's sizes). Writes
``out/prior.pt`` (``python -m headfields train mononphm --mononphm.prior out/prior.pt`` fits it),
``out/prior_log.json`` (the prior's losses), the tracking's run folder ``out/mononphm`` (the train command's: its
renders, meshes, config.json and checkpoint, which ``python -m headfields render`` / ``export`` / ``view`` open) and
``out/metrics.json``: the prior's budget (identities, scans, steps, seconds) and the tracking's metrics
(:func:`headfields.models.mononphm.reconstruct`: held-out ``psnr`` / ``ssim`` / ``l1`` after tracking and from the
mean codes; ``scan`` and ``scan_flame``, MonoNPHM's own protocol (:mod:`headfields.models.mononphm.evaluation`: the face region
of a depth scan to the mesh after a similarity ICP, L1 and L2 in mm, normals, F-scores at 1, 2.5, 5 and 10 mm);
``chamfer`` and ``chamfer_flame``, the symmetric Chamfer over the whole visible head, as fractions of the head's size,
in mm, normal consistency, F-scores at 5 to 20 mm). Prints both tables, the tracked surface against the capture's
tracked FLAME mesh.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict, replace
from pathlib import Path

import torch

from headfields.apps.runs import RunConfig, SubjectSource, train_run
from headfields.models import mononphm
from headfields.models.mononphm import cpu_prior_config, cpu_prior_training, cpu_tracking
from headfields.models.mononphm.prior_method import NphmPriorConfig, train_synthetic_prior
from headfields.synthetic import (
    LANDMARKS_FOLDER,
    OUT_OF_RANGE_DETAIL,
    ScanSetConfig,
    TrackingNoise,
    cached_synthetic_video,
    noisy_tracking,
    nphm_held_out_video,
)
from headfields.training import TrainingConfig, seed_everything
from headfields.training.checkpoints import RunFolder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--identities", type=int, default=16, help="identities in the prior's scan set")
    parser.add_argument("--expressions", type=int, default=8, help="scans per identity, the neutral one included")
    parser.add_argument("--prior-minutes", type=float, default=30.0, help="the prior's budget (fewer steps: a worse face)")
    parser.add_argument(
        "--prior-steps", type=int, default=2400, help="the prior's steps: its learning-rate schedule (~33 min, 2 idle cores)"
    )
    parser.add_argument("--track-minutes", type=float, default=None, help="the tracking's budget (default: its steps)")
    parser.add_argument("--mesh-resolution", type=int, default=128)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--prior", type=Path, default=None, help="fit this prior (save_prior's file) instead of training one")
    parser.add_argument("--person", choices=("held-out", "out-of-range"), default="held-out", help="whom to track")
    parser.add_argument("--noisy", action="store_true", help="track from noisy head poses and landmarks (TrackingNoise())")
    parser.add_argument("--local-code-scale", type=float, default=1.0, help="scale the local codes' weight in every stage")
    args = parser.parse_args()
    if args.prior is not None and not args.prior.is_file():
        parser.error(f"--prior: {args.prior} is not a file (save_prior writes one)")
    folder = RunFolder(args.out).open()  # writable and ours before the minutes of training, not after
    device = torch.device(args.device)

    seed_everything(args.seed)
    scan_config = ScanSetConfig(num_identities=args.identities, expressions=args.expressions, seed=args.seed)
    prior_path, prior_metrics = args.prior, {"file": str(args.prior)}
    if prior_path is None:
        prior_path, prior_metrics = args.out / "prior.pt", train(args, scan_config, device)

    # The tracking: the train command's MonoNPHM run on a person the scan set does not hold.
    video = nphm_held_out_video(scan_config, OUT_OF_RANGE_DETAIL if args.person == "out-of-range" else None)
    source, landmarks, noise = SubjectSource(video=video), None, None
    if args.noisy:
        noise = TrackingNoise(seed=args.seed)
        capture = noisy_tracking(cached_synthetic_video(video), args.out / "capture", noise)
        source, landmarks = SubjectSource(data=str(capture)), str(capture / LANDMARKS_FOLDER)
    tracking = cpu_tracking()
    stages = {k: getattr(tracking, k) for k in ("first_frame", "per_frame", "joint")}
    tracking = replace(tracking, **{k: replace(v, local_code=v.local_code * args.local_code_scale) for k, v in stages.items()})
    recipe = mononphm.cpu_config(
        prior=str(prior_path), mesh_resolution=args.mesh_resolution, landmarks=landmarks, tracking=tracking
    )
    training = TrainingConfig(max_minutes=args.track_minutes, seed=args.seed, eval_frames=5)
    tracked = train_run(RunConfig("mononphm", recipe, training, source, "cpu"), args.out / "mononphm", device)
    inputs = {"person": args.person, "noise": None if noise is None else asdict(noise), "local_code_scale": args.local_code_scale}
    metrics = {"prior": prior_metrics, "inputs": inputs, **{k: v for k, v in tracked.items() if k != "recipe"}}
    (args.out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    folder.close()
    report(tracked)


def train(args: argparse.Namespace, scan_config: ScanSetConfig, device: torch.device) -> dict:
    """Train the prior on the scan set (the library's, as ``python -m headfields train nphm_prior`` does), save it
    as ``out/prior.pt`` and its losses; its budget, for metrics.json."""
    training = cpu_prior_training(steps=args.prior_steps, max_minutes=args.prior_minutes, seed=args.seed)
    config = NphmPriorConfig(scans=scan_config, prior=cpu_prior_config(), training=training)
    _, history, measured = train_synthetic_prior(args.out, config, device)
    (args.out / "prior_log.json").write_text(json.dumps(history.logs, indent=1))
    return {**measured, "config": "cpu_prior_config()", "training": asdict(training)}


def report(m: dict) -> None:
    """Print both geometry tables and the held-out image scores."""
    if m.get("scan"):  # MonoNPHM's own protocol: the face region's scan to the mesh, after a similarity ICP
        print(f"\nMonoNPHM's protocol ({m['scan_region']} of a depth scan of the true head, to each mesh after ICP):")
        print("| surface | L1 (mm) | L2 (mm) | normals | F@1 mm | F@2.5 mm | F@5 mm | F@10 mm |")
        print("|---|---|---|---|---|---|---|---|")
        for name, key in (("MonoNPHM, tracked", "scan"), ("tracked FLAME", "scan_flame")):
            s, f = m[key], m[key]["f_score"]
            print(f"| {name} | {s['chamfer_l1_mm']:.3f} | {s['chamfer_l2_mm']:.3f} | {s['normals']:.3f} | "
                  f"{f['1mm']:.3f} | {f['2.5mm']:.3f} | {f['5mm']:.3f} | {f['10mm']:.3f} |")  # fmt: skip
    print("\nOver the whole head the camera sees, no alignment:")
    print("| surface | Chamfer (% of head size) | Chamfer (mm) | normal consistency | F-score at 5 mm |")
    print("|---|---|---|---|---|")
    for name, key in (("MonoNPHM, tracked", ""), ("tracked FLAME", "_flame")):
        row = (100 * m[f"chamfer{key}"], m[f"chamfer{key}_mm"], m[f"normal_consistency{key}"], m[f"f_score{key}"]["5mm"])
        print(f"| {name} | {row[0]:.2f} | {row[1]:.2f} | {row[2]:.3f} | {row[3]:.3f} |")
    print(f"\nheld-out PSNR {m['psnr']:.2f} dB (mean codes {m['psnr_mean_codes']:.2f})", end=", ")
    print(f"L1 {m['l1']:.4f} (mean codes {m['l1_mean_codes']:.4f})")


if __name__ == "__main__":
    main()
