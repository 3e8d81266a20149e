"""Train INSTA on the built-in synthetic head video (default) or on a real INSTA-format capture.

    python examples/insta.py --out outputs/insta --max-minutes 15     # --recipe cpu on a CPU, paper on CUDA
    python examples/insta.py --recipe paper                               # INSTA's sizes whatever the device
    python examples/insta.py --data /path/to/insta/subject --device cuda   # INSTA's layout: its meshes, no model files
    python examples/insta.py --data /path/to/subject --model /path/to/FLAME2020   # tracked FLAME parameters

Writes ``out/metrics.json`` (held-out psnr, ssim, train_seconds, iterations), renders (prediction | truth) under
``out/renders/`` and a checkpoint; run again with the same ``--out`` to resume.
"""

from __future__ import annotations

from headfields.cli import add_recipe_flag, recipe_config, rounded, training_config, training_parser
from headfields.data import load_subject
from headfields.distributed import destroy_distributed, init_distributed
from headfields.models import insta
from headfields.models.insta import Insta
from headfields.training import seed_everything, train


def main() -> None:
    parser = training_parser(__doc__.split("\n")[0], "outputs/insta", minutes=15.0, rays=2048)
    add_recipe_flag(parser)
    args = parser.parse_args()

    device = init_distributed(args.device)  # under torchrun: this rank's device, in the process group
    subject = load_subject(args.data, args.model, args.eval_split, device=device, regions=args.regions)
    print(*subject.notes, sep="\n")  # what a capture without model files was read as
    train_frames, eval_frames, parametric = subject.train, subject.eval, subject.parametric
    seed_everything(args.seed)  # the initial weights
    model = Insta(parametric, train_frames.segmentation_labels, recipe_config(args, insta)).to(device)
    config = training_config(args, eval_every=500)
    metrics = train(model, train_frames, eval_frames, args.out, config, device=device)
    print(rounded(metrics))
    destroy_distributed()


if __name__ == "__main__":
    main()
