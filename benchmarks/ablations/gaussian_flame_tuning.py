"""GaussianAvatars: does fine-tuning each training timestep's FLAME parameters pay on a capture with noisy tracking?

    python benchmarks/ablations/gaussian_flame_tuning.py                      # 400 steps a variant
    python benchmarks/ablations/gaussian_flame_tuning.py --iterations 100     # a quick look

The synthetic head video with a tracker's error on every timestep's expression (``--noise``, the standard deviation
of each written coefficient; the images show the true ones), trained with the CPU recipe for the same number of steps
with fine-tuning off and on (GaussianAvatars' rates, and those rates times ``--rate-scale``), and with the exact
tracking for reference (the same images). The budget is steps, not minutes, so that a CPU shared with other work
compares like with like; the it/s column gives what fine-tuning costs a step.

Held out: the validation split, GaussianAvatars' novel-view split: training timesteps seen by a camera turned
``--yaw`` radians, posed with what the run fitted for them. Unseen timesteps (its self-reenactment split) keep their
own tracking, so fine-tuning could reach them only through the Gaussians it trained.

Prints per variant: held-out PSNR / SSIM, iterations and it/s, the RMS error of the training timesteps' expressions
against the truth, and ΔPSNR against fine-tuning off.
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import torch

from headfields.data import load_subject
from headfields.heads import tracked_head
from headfields.models.gaussian_avatars import GaussianAvatar, cpu_config
from headfields.synthetic import SyntheticVideoConfig, cached_synthetic_video

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/: the harness every model benchmark shares
from avatars import ablation_parser, ablation_training, budget_line, metric_cells, parse_ablation, print_table, train_variant  # noqa: E402

OFF = "fine-tuning off"
# A short video at 32 px (16 training timesteps, each drawn tens of times in a few CPU minutes), its validation frames
# novel views of training timesteps, its test frames unseen ones.
VIDEO = dict(num_frames=24, num_val=4, num_test=4, episode_frames=4, resolution=32)
# The CPU recipe runs 3DGS's 30,000 steps, GaussianAvatars' 600,000 are 20 times more: a timestep is drawn 20 times less
# often, and rates 20 times GaussianAvatars' let its parameters move about as far.
RATE_SCALE = 20.0


def main() -> None:
    parser = ablation_parser(__doc__)
    parser.add_argument("--iterations", type=int, default=400, help="training steps a variant")
    parser.add_argument("--noise", type=float, default=0.5, help="s.d. of the tracker's error on each expression coefficient")
    parser.add_argument("--yaw", type=float, default=0.25, help="radians: the novel-view camera's turn about the head")
    parser.add_argument("--rate-scale", type=float, default=RATE_SCALE, help="the third variant: FLAME rates times this")
    args = parse_ablation(parser, "gaussian_flame_tuning")
    video = SyntheticVideoConfig(**VIDEO, val_view_yaw=args.yaw)
    noisy = load_subject(cached_synthetic_video(dataclasses.replace(video, expression_noise=args.noise)), eval_split="val")
    exact = load_subject(cached_synthetic_video(video), eval_split="val")
    truth = exact.train.params.expression
    scale = args.rate_scale
    recipes = {
        OFF: (noisy, cpu_config(fine_tune_flame=False)),
        "fine-tuning on (GaussianAvatars' rates)": (noisy, cpu_config(fine_tune_flame=True)),
        f"fine-tuning on (rates × {scale:g})": (
            noisy,
            cpu_config(
                fine_tune_flame=True,
                flame_expression_lr=1e-3 * scale,
                flame_pose_lr=1e-5 * scale,
                flame_translation_lr=1e-6 * scale,
            ),
        ),
        "exact tracking, fine-tuning off (reference)": (exact, cpu_config(fine_tune_flame=False)),
    }
    training = ablation_training(args, max_iterations=args.iterations, log_every=200)
    results = {}
    for i, (name, (subject, recipe)) in enumerate(recipes.items()):
        print(f"\n== {name} ==", flush=True)
        torch.manual_seed(0)
        model = GaussianAvatar(subject.parametric, recipe)
        metrics = train_variant(model, subject.train, subject.eval, args.out / f"variant_{i}", training)
        with torch.no_grad():
            fitted = model.fitted_head(tracked_head(model.parametric, subject.train)).expression.cpu()
        metrics["expression_error"] = float((fitted - truth).pow(2).mean().sqrt())
        results[name] = metrics

    base = results[OFF]
    print(
        budget_line(
            noisy,
            f"{args.iterations} steps per variant",
            f" (expression noise {args.noise:g} s.d.)",
            f" (novel views of training timesteps, {args.yaw:g} rad)",
        )
    )
    header = ["variant", "held-out PSNR", "SSIM", "iterations", "it/s", "expression RMS error", "ΔPSNR"]
    rows = [
        [
            name,
            *metric_cells(m, "psnr", "ssim", "iterations", "iterations_per_second"),
            f"{m['expression_error']:.3f}",
            f"{m['psnr'] - base['psnr']:+.2f} dB",
        ]
        for name, m in results.items()
    ]
    print_table(header, "lrrrrrr", rows)
    print(f"\nrenders and metrics under {args.out}")


if __name__ == "__main__":
    main()
