"""Train MonoAvatar on the built-in synthetic head video (default) or on a real INSTA-format capture.

    python examples/monoavatar.py --out outputs/monoavatar --max-minutes 15
    python examples/monoavatar.py --features static          # the paper's ablation: expression-independent features
    python examples/monoavatar.py --data /path/to/subject --model /path/to/FLAME2020 --device cuda --uv-resolution 256
    python examples/monoavatar.py --data /path/to/insta/subject   # INSTA's layout: tracked meshes, no model files

Writes ``out/metrics.json`` (held-out psnr, ssim, train_seconds, iterations), renders (truth | render | error)
under ``out/renders/`` and a checkpoint; run again with the same ``--out`` to resume.
"""

from __future__ import annotations

from headfields.cli import add_recipe_flag, recipe_config, rounded, training_config, training_parser
from headfields.data import load_subject
from headfields.distributed import destroy_distributed, init_distributed
from headfields.encoders import FEATURE_KINDS
from headfields.models import monoavatar
from headfields.models.monoavatar import MonoAvatar
from headfields.parametric import ParametricModel, add_mouth_interior
from headfields.training import seed_everything, train


def main() -> None:
    parser = training_parser(__doc__.split("\n")[0], "outputs/monoavatar", minutes=15.0, rays=1024)  # MonoAvatar: 1024
    parser.add_argument("--features", default="displacement", choices=FEATURE_KINDS, help="D, C (code_cnn), or an ablation")
    add_recipe_flag(parser)
    parser.add_argument("--frames-per-batch", type=int, default=4, help="frames the rays of a batch come from")
    args = parser.parse_args()

    device = init_distributed(args.device)  # under torchrun: this rank's device, in the process group
    subject = load_subject(args.data, args.model, args.eval_split, device=device, regions=args.regions)
    print(*subject.notes, sep="\n")  # what a capture without model files was read as
    train_frames, eval_frames, parametric = subject.train, subject.eval, subject.parametric
    # Real FLAME has no mouth cavity: anchor features inside it. A capture's own tracked meshes (no model files)
    # are used as the tracker made them.
    if isinstance(parametric, ParametricModel) and "mouth_interior" not in parametric.regions:
        if train_frames.params is None:
            raise SystemExit(
                "--data: a capture with tracked meshes needs a FLAME with a mouth interior "
                "(its meshes fix the topology); track with parameters, or use such a model"
            )
        parametric = add_mouth_interior(parametric)
    config = recipe_config(args, monoavatar, features=args.features)
    seed_everything(args.seed)  # the initial weights
    model = MonoAvatar(parametric, len(train_frames), config).to(device)
    training = training_config(args, frames_per_batch=args.frames_per_batch, eval_every=500)
    metrics = train(model, train_frames, eval_frames, args.out, training, device=device)
    print(rounded(metrics))
    destroy_distributed()


if __name__ == "__main__":
    main()
