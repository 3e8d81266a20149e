"""Train the 360° portrait avatar on the built-in synthetic orbit video (the SMPL-X bust turning before the
camera, default) or on a real INSTA-format capture tracked with SMPL-X.

    python examples/portrait360.py --out outputs/portrait360 --max-minutes 20
    python examples/portrait360.py --blend colour                # the paper's ablation: blend colours, not deformations
    python examples/portrait360.py --uniform-views               # uniform ray sampling instead of view-balanced
    python examples/portrait360.py --data /path/to/subject --model /path/to/SMPLX --device cuda

Writes ``out/metrics.json`` (held-out psnr, ssim, train_seconds, iterations), renders (truth | render | error)
under ``out/renders/`` and a checkpoint; run again with the same ``--out`` to resume.
"""

from __future__ import annotations

from headfields.cli import add_recipe_flag, recipe_config, rounded, training_config, training_parser
from headfields.data import SyntheticVideoConfig, load_subject
from headfields.distributed import destroy_distributed, init_distributed
from headfields.models import portrait360
from headfields.models.portrait360 import Portrait360
from headfields.training import seed_everything, train


def main() -> None:
    parser = training_parser(
        __doc__.split("\n")[0], "outputs/portrait360", minutes=20.0, rays=2048, model="SMPL-X", video="the synthetic orbit video"
    )
    parser.add_argument("--blend", default="deformation", choices=("deformation", "colour"))
    parser.add_argument("--uniform-views", action="store_true", help="draw rays uniformly over frames, not per view bin")
    add_recipe_flag(parser)
    args = parser.parse_args()

    device = init_distributed(args.device)  # under torchrun: this rank's device, in the process group
    subject = load_subject(
        args.data, args.model, args.eval_split, video=SyntheticVideoConfig.portrait360(), model_type="smplx", device=device
    )
    train_frames, eval_frames, parametric = subject.train, subject.eval, subject.parametric
    seed_everything(args.seed)  # the initial weights
    model = Portrait360(parametric, recipe_config(args, portrait360, blend=args.blend)).to(device)
    training = training_config(args, balance_views=not args.uniform_views, eval_every=1000)
    metrics = train(model, train_frames, eval_frames, args.out, training, device=device)
    print(rounded(metrics))
    destroy_distributed()


if __name__ == "__main__":
    main()
