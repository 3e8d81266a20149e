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

import json
import sys
from pathlib import Path

from headfields.models import insta, portrait360
from headfields.models.insta import Insta
from headfields.models.portrait360 import Portrait360
from headfields.synthetic import HAIR_VOLUME_LABEL, SyntheticVideoConfig, synthetic_subject
from headfields.training import evenly_spread

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/: the harness every model benchmark shares
from avatars import ablation_parser, ablation_training, budget_line, metric_cells, parse_ablation, print_table, train_variants  # noqa: E402

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
    parser = ablation_parser(__doc__)
    parser.add_argument("--iterations", type=int, default=DEFAULT_ITERATIONS, help="training iterations per variant")
    parser.add_argument("--only", nargs="+", default=None, help="variants whose name holds one of these")
    parser.add_argument("--rays", type=int, default=None, help="rays per batch for every variant (default: RAYS)")
    args = parse_ablation(parser, "hair")

    subject = synthetic_subject(SyntheticVideoConfig(hair_volume=True))
    subject.eval = subject.eval.select(evenly_spread(EVAL_FRAMES, len(subject.eval)))
    labels = subject.train.segmentation_labels
    regions = (("hair", (labels[HAIR_VOLUME_LABEL],)), ("face", tuple(labels[r] for r in FACE_REGIONS)))

    names = [n for n in VARIANTS if args.only is None or any(o.lower() in n.lower() for o in args.only)]
    if not names:
        raise SystemExit(f"--only: expected parts of {list(VARIANTS)}, got {args.only}")

    def training(name: str):  # a number of iterations, not minutes: the comparison holds on a loaded machine
        rays = args.rays or RAYS[name.split(",")[0]]
        return ablation_training(
            args, max_iterations=args.iterations, max_minutes=None, rays_per_batch=rays, eval_regions=regions
        )

    variants = {name: lambda build=build: build(subject.parametric, labels) for name, build in VARIANTS.items()}
    results = train_variants(variants, subject, args.out, training, only=names)

    (args.out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    print(budget_line(subject, f"{args.iterations} iterations per variant"))
    header = ["variant", "PSNR", "head PSNR", "hair PSNR", "face PSNR", "SSIM", "train s", "it/s", "render rays/s"]
    rows = []
    for name, m in results.items():
        hair, face = m["psnr_regions"]["hair"], m["psnr_regions"]["face"]
        rows.append(
            [name, *metric_cells(m, "psnr", "psnr_head"), f"{hair:.2f} dB", f"{face:.2f} dB"]
            + metric_cells(m, "ssim", "train_seconds", "iterations_per_second", "render_rays_per_second")
        )
    print_table(header, "lrrrrrrrr", rows)
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
    print(f"\nrenders and metrics under {args.out}")


if __name__ == "__main__":
    main()
