"""Train INSTA on the built-in synthetic head video (default) or on a real INSTA-format capture.

    python examples/insta.py --out outputs/insta --max-minutes 15
    python examples/insta.py --data /path/to/insta/subject --model /path/to/FLAME2020 --device cuda

Writes ``out/metrics.json`` (held-out psnr, ssim, train_seconds, iterations), renders (prediction | truth) under
``out/renders/`` and a checkpoint; run again with the same ``--out`` to resume.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from headfields.data import load_subject
from headfields.distributed import destroy_distributed, init_distributed
from headfields.models.insta import Insta, InstaConfig
from headfields.training import TrainingConfig, train


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=None, help="an INSTA-format folder (default: the synthetic video)")
    parser.add_argument("--model", type=Path, default=None, help="FLAME model folder (default: the dataset's own)")
    parser.add_argument("--out", type=Path, default=Path("outputs/insta"))
    parser.add_argument("--max-minutes", type=float, default=15.0, help="training time budget")
    parser.add_argument("--iterations", type=int, default=TrainingConfig.max_iterations)
    parser.add_argument("--rays", type=int, default=2048, help="rays per batch")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--eval-split", default="test", choices=("val", "test"))
    args = parser.parse_args()

    device = init_distributed(args.device)  # under torchrun: this rank's device, in the process group
    subject = load_subject(args.data, args.model, args.eval_split, device=device)
    train_frames, eval_frames, parametric = subject.train, subject.eval, subject.parametric
    model = Insta(parametric, train_frames.segmentation_labels, InstaConfig()).to(device)
    config = TrainingConfig(
        max_iterations=args.iterations, max_minutes=args.max_minutes, rays_per_batch=args.rays, eval_every=500
    )
    metrics = train(model, train_frames, eval_frames, args.out, config, device=device)
    print({k: round(v, 4) if isinstance(v, float) else v for k, v in metrics.items()})
    destroy_distributed()


if __name__ == "__main__":
    main()
