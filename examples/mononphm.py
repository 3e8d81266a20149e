"""MonoNPHM's tracking half: fit a saved NPHM prior (benchmarks/nphm.py trains one) to a monocular video of a person
it never saw, then measure it on the held-out frames.

    python benchmarks/nphm.py --out outputs/nphm                                  # the prior (and a full run)
    python examples/mononphm.py --prior outputs/nphm/prior.pt --out outputs/mononphm
    python examples/mononphm.py --prior PRIOR --data /path/to/capture --model /path/to/FLAME2020 --device cuda

The default video is the synthetic held-out person of benchmarks/nphm.py: a FLAME shape with personal detail
(hair volume, bumps, ears) that FLAME cannot express, tracked with plain FLAME. Writes ``out/metrics.json``:
held-out ``psnr``, ``ssim``, ``l1`` (each frame's expression and pose tracked with the person's codes fixed) and the
same from the prior's mean codes (``*_mean_codes``); ``chamfer`` (the tracked surface against the true one, as a
fraction of the head's size, over what the camera sees) and ``chamfer_flame`` (the capture's tracked FLAME mesh,
the same measure), in millimetres too, with normal consistency and F-scores; renders (render | truth | error)
under ``out/renders/`` and the meshes ``out/mesh_XXXXX.obj``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from headfields.checkpoints import RunFolder
from headfields.cli import add_recipe_flag, recipe_config, recipe_name, rounded
from headfields.data import load_subject
from headfields.models import mononphm
from headfields.models.nphm import load_prior
from headfields.synthetic import load_ground_truth, nphm_held_out_video
from headfields.training import seed_everything


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--prior", type=Path, required=True, help="a prior saved by benchmarks/nphm.py (prior.pt)")
    parser.add_argument("--data", type=Path, default=None, help="an INSTA-format capture (default: the held-out person)")
    parser.add_argument("--model", type=Path, default=None, help="FLAME model folder (default: the capture's own)")
    parser.add_argument(
        "--landmarks", type=Path, default=None,
        help="a folder with train.npy and test.npy: detected landmarks [frames, L, 2] in pixels, in the order of the "
        "FLAME model's landmarks (default: the capture's tracked landmarks, projected)",
    )  # fmt: skip
    parser.add_argument("--out", type=Path, default=Path("outputs/mononphm"))
    add_recipe_flag(parser)
    parser.add_argument(
        "--max-minutes", type=float, default=None,
        help="the budget of the whole reconstruction: its renders and meshes are measured ahead, the tracking steps "
        "scale down to fit what is left (said before tracking starts)",
    )  # fmt: skip
    parser.add_argument("--eval-frames", type=int, default=5, help="held-out frames measured")
    parser.add_argument("--geometry-frames", type=int, default=3, help="of them, frames whose surface is measured")
    parser.add_argument("--mesh-resolution", type=int, default=128)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if not args.prior.is_file():
        parser.error(f"--prior: no file {args.prior} (train one: python benchmarks/nphm.py --out DIR, then DIR/prior.pt)")

    with RunFolder(args.out):  # writable and ours before minutes of tracking, not after
        device = torch.device(args.device)
        prior = load_prior(args.prior, device)
        video = None if args.data is not None else nphm_held_out_video()
        subject = load_subject(args.data, args.model, "test", video=video, device=device)
        root = subject.root
        truth = load_ground_truth(root, "test") if (root / "ground_truth.npz").is_file() else None
        config, recipe = recipe_config(args, mononphm), recipe_name(args)
        tracking = mononphm.TrackingConfig(max_minutes=args.max_minutes, seed=args.seed)
        if recipe == "cpu":
            tracking = mononphm.cpu_tracking(max_minutes=args.max_minutes, seed=args.seed)
        landmarks = None
        if args.landmarks is not None:
            landmarks = tuple(torch.from_numpy(np.load(args.landmarks / f"{split}.npy")) for split in ("train", "test"))
        seed_everything(args.seed)
        result = mononphm.reconstruct(
            prior, subject.train, subject.eval, subject.parametric, config, tracking, truth,
            args.eval_frames, args.geometry_frames, args.mesh_resolution, args.out, landmarks,
        )  # fmt: skip
        metrics = {"recipe": recipe, **result.metrics}
        (args.out / "metrics.json").write_text(json.dumps(metrics, indent=2))
        print(rounded(metrics))


if __name__ == "__main__":
    main()
