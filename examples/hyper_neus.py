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

import argparse
import json

import torch

from headfields.apps.commands.train import train
from headfields.apps.runs import load_run
from headfields.data import write_obj
from headfields.models.hyper_neus_tracking import TrackingConfig, frame_error, track_frame
from headfields.training import comparison, render_image, save_png


def main() -> None:
    after = argparse.ArgumentParser(add_help=False)  # the work after training; the rest are the train command's flags
    after.add_argument("--track", type=int, default=3, help="held-out frames to track after training")
    after.add_argument("--track-steps", type=int, default=60)
    after.add_argument("--mesh-resolution", type=int, default=128)
    args, flags = after.parse_known_args()
    if "-h" in flags or "--help" in flags:
        after.print_help()
    else:
        print(
            f"after training (outside --max-minutes): {args.track} held-out frames tracked for {args.track_steps} "
            f"steps each, and one mesh at {args.mesh_resolution}^3 (a line per tracked frame)"
        )
    metrics, out, device = train("hyper_neus", flags)
    if metrics is None:  # tracking and the mesh: rank 0 alone
        return
    run = load_run(out, device)  # the trained model, with its evaluation weights
    model, eval_frames, device = run.model, run.subject.eval, run.device
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
            out / "tracked" / f"{f:05d}.png",
        )
    (out / "tracking.json").write_text(json.dumps(tracked, indent=2))

    f = len(eval_frames) // 2
    surface = model.extract_mesh(run.eval_head, f, args.mesh_resolution)
    write_obj(out / f"mesh_{f:05d}.obj", surface.vertices.cpu().numpy(), surface.faces.cpu().numpy())


if __name__ == "__main__":
    main()
