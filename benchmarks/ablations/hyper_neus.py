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

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

import torch

from headfields.data import load_insta_dataset
from headfields.heads import tracked_head
from headfields.metrics import chamfer_distance, visible_faces
from headfields.models.hyper_neus import HyperNeusAvatar, cpu_config
from headfields.models.hyper_neus_tracking import TrackingConfig, frame_error, track_frame
from headfields.parametric import load_model
from headfields.synthetic import cached_synthetic_video
from headfields.training import TrainingConfig

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/: the harness every model benchmark shares
from avatars import train_variant  # noqa: E402


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
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, default=20.0, help="training budget")
    parser.add_argument("--rays", type=int, default=512)
    parser.add_argument("--frames-per-batch", type=int, default=4)
    parser.add_argument("--mesh-resolution", type=int, default=160)
    parser.add_argument("--track", type=int, default=3, help="held-out frames tracked from the neutral code")
    parser.add_argument("--track-steps", type=int, default=60)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    out = args.out or Path(tempfile.mkdtemp(prefix="hyper_neus_bench_"))

    root = cached_synthetic_video()
    train_frames, eval_frames = load_insta_dataset(root, "train"), load_insta_dataset(root, "test")
    torch.manual_seed(0)
    model = HyperNeusAvatar(load_model(train_frames.model_path, train_frames.model_type), len(train_frames), cpu_config())
    training = TrainingConfig(
        max_minutes=args.minutes,
        rays_per_batch=args.rays,
        frames_per_batch=args.frames_per_batch,
        eval_every=0,
        checkpoint_every=0,
        log_every=100,
    )
    m = train_variant(model, train_frames, eval_frames, out, training)
    model.eval()

    episode = 25  # SyntheticVideoConfig.episode_frames: the test episodes peak at their middles
    peaks = [f for f in range(episode // 2, len(eval_frames), episode)]
    geometry = {f: seen_chamfer(model, eval_frames, f, args.mesh_resolution) for f in peaks}

    tracked = {}
    for f in torch.linspace(0, len(eval_frames) - 1, args.track).round().long().tolist():
        result = track_frame(model, eval_frames, f, TrackingConfig(steps=args.track_steps))
        tracked[f] = (
            frame_error(model, eval_frames, f, result.start),
            frame_error(model, eval_frames, f, result.head),
            frame_error(model, eval_frames, f),
        )

    print(
        f"\n{len(train_frames)} training frames, {len(eval_frames)} held-out test frames at {eval_frames.cameras.width} px; "
        f"{args.minutes:g} min of training on {torch.get_num_threads()} CPU threads\n"
    )
    print("| held-out PSNR | head PSNR | SSIM | iterations | it/s | render rays/s |")
    print("|---:|---:|---:|---:|---:|---:|")
    print(
        f"| {m['psnr']:.2f} dB | {m['psnr_head']:.2f} dB | {m['ssim']:.4f} | {m['iterations']} | "
        f"{m['iterations_per_second']:.2f} | {m['render_rays_per_second']:,.0f} |"
    )
    print("\n| held-out frame | Chamfer (seen surface) | head size | Chamfer / head size |")
    print("|---:|---:|---:|---:|")
    for f, (chamfer, size) in geometry.items():
        print(f"| {f} | {1000 * chamfer:.2f} mm | {1000 * size:.0f} mm | {100 * chamfer / size:.2f}% |")
    print(f"\nmedian Chamfer / head size: {100 * statistics.median(c / s for c, s in geometry.values()):.2f}%")
    steps = args.track_steps
    print(f"\n| held-out frame | error from the neutral code | after {steps} tracking steps | tracked expression, no tracking |")
    print("|---:|---:|---:|---:|")
    for f, (before, after, given) in tracked.items():
        print(f"| {f} | {before:.4f} | {after:.4f} | {given:.4f} |")
    print(f"\nrenders and metrics under {out}")


if __name__ == "__main__":
    main()
