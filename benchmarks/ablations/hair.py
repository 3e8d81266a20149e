"""What the mesh shell costs on hair the template lacks: INSTA and the 360° portrait, each with its CPU recipe's
3 cm shell and without it, trained for the same budget on the synthetic video with a hair volume
(``cached_synthetic_video(hair_volume=True)``: hair 1–6 cm beyond the scalp, rendered volumetrically, not in the
tracked mesh), in one run.

    python benchmarks/ablations/hair.py                        # 1500 iterations per variant
    python benchmarks/ablations/hair.py --iterations 100       # a quick look
    python benchmarks/ablations/hair.py --only INSTA           # the variants whose name holds one of these
    python benchmarks/ablations/hair.py --only Portrait360 --iterations 300 --rays 1024

Prints per variant: held-out PSNR over the whole frame and over the head, PSNR on the hair volume's pixels and
on the face (the template's skin, lips, eyes), iterations/s and rendering rays/s, and each model's
ΔPSNR without the shell against with it. The budget is a number of iterations, the same for every variant, so
the comparison holds on a loaded machine; the time each variant took is printed beside it.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import torch

from headfields.data import load_insta_dataset
from headfields.models import insta, portrait360
from headfields.models.insta import Insta
from headfields.models.portrait360 import Portrait360
from headfields.parametric import load_model
from headfields.synthetic import HAIR_VOLUME_LABEL, cached_synthetic_video
from headfields.training import TrainingConfig, evenly_spread

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/: the harness every model benchmark shares
from avatars import train_variant  # noqa: E402

DEFAULT_ITERATIONS = 1500
EVAL_FRAMES = 10  # held-out frames evaluated, spread evenly over the test split
FACE_REGIONS = ("skin", "lips", "eyes")  # the template's own surface: what the shell was made for

VARIANTS = {
    "INSTA, shell 3 cm (cpu_config)": lambda p, labels: Insta(p, labels, insta.cpu_config()),
    "INSTA, no shell": lambda p, labels: Insta(p, labels, insta.cpu_config(shell=None)),
    "Portrait360, shell 3 cm (cpu_config)": lambda p, labels: Portrait360(p, portrait360.cpu_config()),
    "Portrait360, no shell": lambda p, labels: Portrait360(p, portrait360.cpu_config(shell=None)),
}
RAYS = {"INSTA": 2048, "Portrait360": 2048}  # the batch of each model's own benchmark


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--iterations", type=int, default=DEFAULT_ITERATIONS, help="training iterations per variant")
    parser.add_argument("--only", nargs="+", default=None, help="variants whose name holds one of these")
    parser.add_argument("--rays", type=int, default=None, help="rays per batch for every variant (default: RAYS)")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    out = args.out or Path(tempfile.mkdtemp(prefix="hair_bench_"))

    root = cached_synthetic_video(hair_volume=True)
    train_frames, eval_frames = load_insta_dataset(root, "train"), load_insta_dataset(root, "test")
    eval_frames = eval_frames.select(evenly_spread(EVAL_FRAMES, len(eval_frames)))
    parametric = load_model(train_frames.model_path, train_frames.model_type)
    labels = train_frames.segmentation_labels
    regions = {"hair": (labels[HAIR_VOLUME_LABEL],), "face": tuple(labels[r] for r in FACE_REGIONS)}

    names = [n for n in VARIANTS if args.only is None or any(o.lower() in n.lower() for o in args.only)]
    if not names:
        raise SystemExit(f"--only: expected parts of {list(VARIANTS)}, got {args.only}")
    results = {}
    for i, name in enumerate(names):
        print(f"\n== {name}: {args.iterations} iterations ==", flush=True)
        torch.manual_seed(0)  # the same initial weights for both variants of a model
        model = VARIANTS[name](parametric, labels)
        config = TrainingConfig(
            max_iterations=args.iterations,
            max_minutes=None,
            rays_per_batch=args.rays or RAYS[name.split(",")[0]],
            eval_every=0,
            checkpoint_every=0,
            log_every=100,
            eval_regions=regions,
        )
        results[name] = train_variant(model, train_frames, eval_frames, out / f"variant_{i}", config)

    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    print(
        f"\n{len(train_frames)} training frames, {len(eval_frames)} held-out test frames at {eval_frames.cameras.width} px; "
        f"{args.iterations} iterations per variant on {torch.get_num_threads()} CPU threads\n"
    )
    print("| variant | PSNR | head PSNR | hair PSNR | face PSNR | SSIM | train s | it/s | render rays/s |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name, m in results.items():
        hair, face = m["psnr_regions"]["hair"], m["psnr_regions"]["face"]
        print(
            f"| {name} | {m['psnr']:.2f} dB | {m['psnr_head']:.2f} dB | {hair:.2f} dB | {face:.2f} dB | {m['ssim']:.4f} | "
            f"{m['train_seconds']:.0f} | {m['iterations_per_second']:.2f} | {m['render_rays_per_second']:,.0f} |"
        )
    print()
    for model in ("INSTA", "Portrait360"):
        on, off = (results.get(f"{model}, shell 3 cm (cpu_config)"), results.get(f"{model}, no shell"))
        if on is None or off is None:
            continue
        delta = {k: off["psnr_regions"][k] - on["psnr_regions"][k] for k in ("hair", "face")}
        print(
            f"{model}: without the shell {delta['hair']:+.2f} dB on the hair, {delta['face']:+.2f} dB on the face, "
            f"{off['psnr_head'] - on['psnr_head']:+.2f} dB on the head; "
            f"it/s ×{off['iterations_per_second'] / on['iterations_per_second']:.2f}"
        )
    print(f"\nrenders and metrics under {out}")


if __name__ == "__main__":
    main()
