"""The hyper NeuS avatar (a mix: MonoNPHM's networks without the prior) on the synthetic head video: held-out
image quality, the geometry of the SDF at held-out frames, and tracking of held-out frames with the networks frozen.
The paper's MonoNPHM (a prior learnt from scans, then fitted) is benchmarks/ablations/nphm.py.

    python benchmarks/ablations/hyper_neus.py                 # 20 minutes of training (the issue's budget)
    python benchmarks/ablations/hyper_neus.py --minutes 3     # a quick look

Prints held-out PSNR / SSIM over whole images and PSNR over the head's pixels (EMA weights, all test frames:
expression combinations never seen in training, rendered from their tracked expression and the neutral
code); the symmetric Chamfer distance between the marching-cubes mesh of the SDF and the ground-truth mesh
at the peaks of the held-out expression episodes, over the surface the frame's camera sees, in mm and in %
of the head's size (its box diagonal); and the colour error of held-out frames tracked from the neutral code.
Geometry and tracking use the final training weights (the PSNR the EMA of the last ~20 steps, as every model
benchmark here).
"""

from __future__ import annotations

import statistics
import sys
from pathlib import Path

import torch

from headfields.heads import tracked_head
from headfields.metrics import chamfer_distance, visible_faces
from headfields.models.hyper_neus import HyperNeusAvatar, cpu_config
from headfields.models.hyper_neus_tracking import TrackingConfig, frame_error, track_frame
from headfields.synthetic import synthetic_subject

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/: the harness every model benchmark shares
from avatars import ablation_parser, ablation_training, budget_line, metric_cells, parse_ablation, print_table, train_variant  # noqa: E402

EPISODE = 25  # SyntheticVideoConfig.episode_frames: the test episodes peak at their middles


def seen_chamfer(model: HyperNeusAvatar, frames, frame: int, resolution: int) -> tuple[float, float]:
    """Symmetric Chamfer distance (metres) between the visible parts of the extracted and the true meshes, and
    the true mesh's box diagonal."""
    with torch.no_grad():
        surface = model.extract_mesh(tracked_head(model.parametric, frames), frame, resolution)
    eye = frames.cameras.camera_to_world[frame, :3, 3]
    truth = frames.mesh_vertices[frame]
    chamfer = chamfer_distance(
        surface.vertices, visible_faces(surface.vertices, surface.faces, eye), truth, visible_faces(truth, frames.mesh_faces, eye)
    )
    return float(chamfer.symmetric), float((truth.amax(0) - truth.amin(0)).norm())


def main() -> None:
    parser = ablation_parser(__doc__, minutes=20.0, rays=512, frames_per_batch=4, helps={"minutes": "training budget"})
    parser.add_argument("--mesh-resolution", type=int, default=160)
    parser.add_argument("--track", type=int, default=3, help="held-out frames tracked from the neutral code")
    parser.add_argument("--track-steps", type=int, default=60)
    args = parse_ablation(parser, "hyper_neus")

    subject = synthetic_subject()
    eval_frames = subject.eval
    torch.manual_seed(0)
    model = HyperNeusAvatar(subject.parametric, len(subject.train), cpu_config())
    m = train_variant(model, subject.train, eval_frames, args.out, ablation_training(args))
    model.eval()

    peaks = [f for f in range(EPISODE // 2, len(eval_frames), EPISODE)]
    geometry = {f: seen_chamfer(model, eval_frames, f, args.mesh_resolution) for f in peaks}

    tracked = {}
    for f in torch.linspace(0, len(eval_frames) - 1, args.track).round().long().tolist():
        result = track_frame(model, eval_frames, f, TrackingConfig(steps=args.track_steps))
        tracked[f] = (
            frame_error(model, eval_frames, f, result.start),
            frame_error(model, eval_frames, f, result.head),
            frame_error(model, eval_frames, f),
        )

    print(budget_line(subject, f"{args.minutes:g} min of training"))
    print_table(
        ["held-out PSNR", "head PSNR", "SSIM", "iterations", "it/s", "render rays/s"],
        "rrrrrr",
        [metric_cells(m, "psnr", "psnr_head", "ssim", "iterations", "iterations_per_second", "render_rays_per_second")],
    )
    print()
    print_table(
        ["held-out frame", "Chamfer (seen surface)", "head size", "Chamfer / head size"],
        "rrrr",
        [[f"{f}", f"{1000 * c:.2f} mm", f"{1000 * size:.0f} mm", f"{100 * c / size:.2f}%"] for f, (c, size) in geometry.items()],
    )
    print(f"\nmedian Chamfer / head size: {100 * statistics.median(c / s for c, s in geometry.values()):.2f}%")
    steps = args.track_steps
    print()
    print_table(
        ["held-out frame", "error from the neutral code", f"after {steps} tracking steps", "tracked expression, no tracking"],
        "rrrr",
        [[f"{f}", f"{before:.4f}", f"{after:.4f}", f"{given:.4f}"] for f, (before, after, given) in tracked.items()],
    )
    print(f"\nrenders and metrics under {args.out}")


if __name__ == "__main__":
    main()
