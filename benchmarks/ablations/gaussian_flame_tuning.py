"""GaussianAvatars: does fine-tuning each training timestep's FLAME parameters pay on a capture with noisy tracking?

    python benchmarks/ablations/gaussian_flame_tuning.py                      # 1,500 steps a variant
    python benchmarks/ablations/gaussian_flame_tuning.py --iterations 300     # a quick look
    python benchmarks/ablations/gaussian_flame_tuning.py --only off on        # two of the five variants

The synthetic head video at 64 px, copied by :func:`headfields.synthetic.noisy_tracking` with a tracker's error on
every timestep's head pose (``--rotation`` degrees and ``--translation`` metres s.d. per axis; the images show the
true pose), trained with the CPU recipe for the same number of steps with fine-tuning off, on at the CPU recipe's
rates (``cpu_config(fine_tune_flame=True)``) and on at GaussianAvatars' own rates; and the exact tracking, off and
on, for reference (the same images). The budget is steps, not minutes, so that a CPU shared with other work
compares like with like; the it/s column gives what fine-tuning costs a step.

Held out: the validation split, GaussianAvatars' novel-view split: training timesteps seen by a camera turned
``--yaw`` radians, posed with what the run fitted for them (the noisy copy gives them their timestep's very error).

Prints per variant: held-out PSNR / SSIM, iterations and it/s, the RMS distance of the training timesteps' posed
meshes from the true ones and its jitter (the same without the error all timesteps share: a common drift, which the
Gaussians follow, blurs nothing), and ΔPSNR against fine-tuning off. The ablations' figures are from one CPU thread
(``OMP_NUM_THREADS=1``): on two cores shared with other work, torch's two threads ran 20 times slower.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from headfields.data import load_subject
from headfields.heads import tracked_head
from headfields.models.gaussian_avatars import GaussianAvatar, GaussianAvatarConfig, cpu_config
from headfields.synthetic import SyntheticVideoConfig, TrackingNoise, cached_synthetic_video, noisy_tracking

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/: the harness every model benchmark shares
from avatars import ablation_parser, ablation_training, budget_line, metric_cells, parse_ablation, print_table, train_variant  # noqa: E402

OFF = "noisy, fine-tuning off"
# A short video at 64 px (16 training timesteps, each drawn about a hundred times in 1,500 steps), its validation
# frames novel views of training timesteps, its test frames unseen ones. At 32 px a few millimetres are under a pixel.
VIDEO = dict(num_frames=24, num_val=4, num_test=4, episode_frames=4, resolution=64)


def main() -> None:
    parser = ablation_parser(__doc__)
    parser.add_argument("--iterations", type=int, default=1500, help="training steps a variant")
    parser.add_argument("--rotation", type=float, default=3.0, help="degrees: s.d. of the tracker's error per rotation axis")
    parser.add_argument("--translation", type=float, default=0.006, help="metres: s.d. of its error on each translation axis")
    parser.add_argument("--only", nargs="+", help="the variants to run (default: all): off on on-paper-rates exact exact-on")
    parser.add_argument("--yaw", type=float, default=0.25, help="radians: the novel-view camera's turn about the head")
    args = parse_ablation(parser, "gaussian_flame_tuning")
    clean = cached_synthetic_video(SyntheticVideoConfig(**VIDEO, val_view_yaw=args.yaw))
    noise = TrackingNoise(rotation_deg=args.rotation, translation=args.translation, landmarks=0.0)
    noisy = load_subject(noisy_tracking(clean, args.out / "noisy_capture", noise), eval_split="val")
    exact = load_subject(clean, eval_split="val")
    truth = tracked_head(exact.parametric, exact.train).vertices
    paper_rates = {
        name: getattr(GaussianAvatarConfig(), name) for name in ("flame_expression_lr", "flame_pose_lr", "flame_translation_lr")
    }
    variants = {  # a key (--only), its name in the table, the capture and the recipe
        "off": (OFF, noisy, cpu_config(fine_tune_flame=False)),
        "on": ("noisy, fine-tuning on (the CPU recipe's rates)", noisy, cpu_config(fine_tune_flame=True)),
        "on-paper-rates": (
            "noisy, fine-tuning on (GaussianAvatars' rates)",
            noisy,
            cpu_config(fine_tune_flame=True, **paper_rates),
        ),
        "exact": ("exact, fine-tuning off (reference)", exact, cpu_config(fine_tune_flame=False)),
        "exact-on": ("exact, fine-tuning on (the CPU recipe's rates)", exact, cpu_config(fine_tune_flame=True)),
    }
    unknown = set(args.only or ()) - set(variants)
    if unknown:
        parser.error(f"--only: expected some of {', '.join(variants)}, got {', '.join(sorted(unknown))}")
    training = ablation_training(args, max_iterations=args.iterations, log_every=500)
    results = {}
    for i, (key, (name, subject, recipe)) in enumerate(variants.items()):
        if args.only and key not in args.only:
            continue
        print(f"\n== {name} ==", flush=True)
        torch.manual_seed(0)
        model = GaussianAvatar(subject.parametric, recipe)
        metrics = train_variant(model, subject.train, subject.eval, args.out / f"variant_{i}", training)
        with torch.no_grad():
            fitted = model.fitted_head(tracked_head(model.parametric, subject.train)).vertices.cpu()
        error = fitted - truth.cpu()
        metrics["mesh_error"] = float(error.norm(dim=-1).pow(2).mean().sqrt())
        # What blurs: each timestep's error apart from what all share (a common drift the Gaussians follow).
        metrics["mesh_jitter"] = float((error - error.mean(dim=0)).norm(dim=-1).pow(2).mean().sqrt())
        results[name] = metrics

    base = results.get(OFF)
    print(
        budget_line(
            noisy,
            f"{args.iterations} steps per variant",
            f" (head pose noise {args.rotation:g} degrees, {args.translation * 1000:g} mm s.d. per axis)",
            f" (novel views of training timesteps, {args.yaw:g} rad)",
        )
    )
    header = ["variant", "held-out PSNR", "SSIM", "iterations", "it/s", "mesh RMS error", "its jitter", "ΔPSNR"]
    rows = [
        [
            name,
            *metric_cells(m, "psnr", "ssim", "iterations", "iterations_per_second"),
            f"{m['mesh_error'] * 1000:.2f} mm",
            f"{m['mesh_jitter'] * 1000:.2f} mm",
            "(off not run)" if base is None else f"{m['psnr'] - base['psnr']:+.2f} dB",
        ]
        for name, m in results.items()
    ]
    print_table(header, "lrrrrrrr", rows)
    print(f"\nrenders and metrics under {args.out}")


if __name__ == "__main__":
    main()
