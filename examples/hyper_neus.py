"""Fit the hyper NeuS avatar (a mix: MonoNPHM's networks without the prior) to the built-in synthetic head video
(default) or a real INSTA-format capture, then track held-out frames with the networks frozen and extract the
head's mesh at one of them. The paper's MonoNPHM (a prior learnt from scans, then fitted) is examples/mononphm.py.

    python examples/hyper_neus.py --out outputs/hyper_neus --max-minutes 20
    python examples/hyper_neus.py --data /path/to/subject --model /path/to/FLAME2020 --device cuda   # MonoNPHM's sizes

Writes ``out/metrics.json`` (held-out psnr, ssim, train_seconds, iterations), renders (truth | render | error)
under ``out/renders/``, a checkpoint (run again with the same ``--out`` to resume), ``out/tracking.json``
(each tracked frame's colour error from the neutral code before and after tracking), the tracked renders
under ``out/tracked/`` and ``out/mesh_XXXXX.obj``.
"""

from __future__ import annotations

import json

import torch

from headfields.cli import add_recipe_flag, recipe_config, rounded, training_config, training_parser
from headfields.data import load_subject, write_obj
from headfields.distributed import destroy_distributed, init_distributed, rank
from headfields.heads import tracked_head
from headfields.models import hyper_neus
from headfields.models.hyper_neus import HyperNeusAvatar
from headfields.models.hyper_neus_tracking import TrackingConfig, frame_error, track_frame
from headfields.training import comparison, render_image, save_png, seed_everything, train


def main() -> None:
    parser = training_parser(__doc__.split("\n")[0], "outputs/hyper_neus", minutes=20.0, rays=512)
    add_recipe_flag(parser)
    parser.add_argument("--frames-per-batch", type=int, default=4, help="frames the rays of a batch come from")
    parser.add_argument("--track", type=int, default=3, help="held-out frames to track after training")
    parser.add_argument("--track-steps", type=int, default=60)
    parser.add_argument("--mesh-resolution", type=int, default=128)
    args = parser.parse_args()

    device = init_distributed(args.device)  # under torchrun: this rank's device, in the process group
    subject = load_subject(args.data, args.model, args.eval_split, device=device, regions=args.regions)
    print(*subject.notes, sep="\n")  # what a capture without model files was read as
    train_frames, eval_frames, parametric = subject.train, subject.eval, subject.parametric
    config = recipe_config(args, hyper_neus)
    seed_everything(args.seed)  # the initial weights
    model = HyperNeusAvatar(parametric, len(train_frames), config).to(device)
    training = training_config(args, frames_per_batch=args.frames_per_batch, eval_every=500)
    metrics = train(model, train_frames, eval_frames, args.out, training, device=device)
    print(rounded(metrics))
    main_rank = rank() == 0
    destroy_distributed()
    if not main_rank:  # tracking and the mesh: rank 0 alone
        return

    model.eval()
    tracked = {}
    count = min(args.track, len(eval_frames))
    for f in torch.linspace(0, len(eval_frames) - 1, count).round().long().tolist():
        result = track_frame(model, eval_frames, f, TrackingConfig(steps=args.track_steps))
        tracked[f] = {
            "neutral_error": frame_error(model, eval_frames, f, result.start),
            "tracked_error": frame_error(model, eval_frames, f, result.head),
            "tracked_expression_error": frame_error(model, eval_frames, f),
        }
        print(f"frame {f}: " + ", ".join(f"{k} {v:.4f}" for k, v in tracked[f].items()))
        save_png(
            comparison(render_image(model, eval_frames, f, 4096, device, head=result.head), eval_frames.images[f].float() / 255),
            args.out / "tracked" / f"{f:05d}.png",
        )
    (args.out / "tracking.json").write_text(json.dumps(tracked, indent=2))

    f = len(eval_frames) // 2
    surface = model.extract_mesh(tracked_head(parametric, eval_frames), f, args.mesh_resolution)
    write_obj(args.out / f"mesh_{f:05d}.obj", surface.vertices.cpu().numpy(), surface.faces.cpu().numpy())


if __name__ == "__main__":
    main()
