"""How close does our CPU tracker come to the truth, how fast is it, and what does an avatar lose by training on its
tracking instead of the true one?

The built-in synthetic video (its FLAME parameters known) is written as a phone stores a portrait clip: an mp4 whose
frames lie sideways with a 90-degree rotation flag. It is tracked with MediaPipe's face mesh and irises (its points on
the model where the model's own views place them, the default; through our iBUG table; through an embedding derived on
the video's training frames and their true meshes), and from the true landmarks plus 1.5 pixels of noise (in a
512-pixel frame) given as landmark files: iBUG's 51, or MediaPipe's in the tracker's own correspondence (the model's
views' embedding, ``--variants dense``), fitted with ``TRUSTED_LANDMARKS``. Each tracking is compared with the truth
(the face's vertex error after one similarity transform for the whole video, the head's rotation, the jaw, the gaze,
and where the face lands in the image: what decides how a held-out frame renders), timed per stage, and (unless
``--minutes 0``) each model trains for the same minutes on the true and on the tracked capture, scored on the same
held-out frames: the difference is what the tracker costs. The true tracking trains twice: on the renders with their
exact masks, and on the tracked capture's own pixels (the video's frames, compressed, as the tracker's masks matte
them) with the true parameters. Against the second the difference is the FLAME tracking's alone.

    python benchmarks/tracking.py --minutes 5 --models gaussian_avatar insta
    python benchmarks/tracking.py --iterations 2000 --models gaussian_avatar   # the same steps on either capture
    python benchmarks/tracking.py --iterations 4650 --models gaussian_avatar --seeds 3   # each PSNR a mean of 3 runs
    python benchmarks/tracking.py --minutes 0            # the tracking alone (~3 minutes)
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from headfields.apps.media import write_video
from headfields.apps.tracking.accuracy import capture_tracking, tracking_accuracy
from headfields.apps.tracking.avatar_refinement import AvatarRefinementConfig
from headfields.apps.tracking.embedding import derive_mediapipe_embedding, model_embedding, save_embedding
from headfields.apps.tracking.video_tracker import VideoTrackerConfig, track_video
from headfields.cameras import PinholeCameras, project_points
from headfields.data import TrackedParams, load_insta_dataset, save_insta_dataset
from headfields.fitting import TRUSTED_LANDMARKS
from headfields.parametric import load_model
from headfields.synthetic import SyntheticVideoConfig, cached_synthetic_video

SPLITS = ("train", "val", "test")
VARIANTS = ("mediapipe", "alone", "table", "derived", "true", "dense")  # the trackings' folders, as --variants names them
NOISE_PX = 1.5  # in a 512-pixel frame, the "true landmarks plus 1.5 px noise"
DENSE_VIEWS = 128  # pixels a side of the model's views whose MediaPipe points are the dense variant's correspondence
# The tracker's log lines that start the landmark stages: detection (with the masks and labels), the fit's four, the gaze.
LANDMARK_STAGES = ("MediaPipe", "fitting", "rigid", "keyframes", "frames", "global", "gaze")
HEADER = (
    "| landmarks | frames | with a face | face vertices, median mm | head rotation, median deg | jaw, median deg "
    "| gaze, median deg | in the image, median px: face, neck, eyes | landmark stages, s a frame | photometric stage, s a frame "
    "| avatar refinement, s a frame | all, s |"
)


def _pixels(accuracy) -> str:
    """Where the face, the neck (the body's turn) and the eyes (gaze) land in the image, against the truth."""
    values = (accuracy.image_px, *(accuracy.regions_px.get(name, float("nan")) for name in ("neck", "eyes")))
    return ", ".join(f"{v:.2f}" for v in values)


def _frames(root: Path):
    """The truth's tracking over the whole video, its images and its splits' sizes."""
    params, cameras = capture_tracking(root)
    parts = [load_insta_dataset(root, split) for split in SPLITS]
    return params, cameras, torch.cat([p.images for p in parts]), [len(p) for p in parts]


def _landmark_files(points: torch.Tensor, cameras: PinholeCameras, folder: Path, ids: torch.Tensor | None = None) -> None:
    """Files of the true landmarks ``points [N, K, 3]`` in ``cameras``' pixels plus NOISE_PX of noise: iBUG-68 with
    the jaw contour left out (``ids`` None: the static embedding's 51), or MediaPipe's 468 ids, ``ids`` the points'."""
    n, k = points.shape[:2]
    pixels = project_points(cameras, points.reshape(-1, 3), torch.arange(n).repeat_interleave(k)).pixels.reshape(n, k, 2)
    pixels = pixels + torch.randn(n, k, 2, generator=torch.Generator().manual_seed(0)) * NOISE_PX * cameras.width / 512
    folder.mkdir(parents=True)
    for i in range(n):
        # The points no file holds (the jaw contour; MediaPipe's ids off the embedding) are not fitted: any value.
        array = np.tile(pixels[i].mean(0).numpy(), (68 if ids is None else 468, 1))
        array[(slice(68 - k, None) if ids is None else ids.numpy())] = pixels[i].numpy()
        np.save(folder / f"{i:05d}.npy", array)


def _track(video: Path, out: Path, config: VideoTrackerConfig, **options) -> tuple[Path, dict[str, float]]:
    """Track, with each stage's seconds: read from the tracker's own log lines as they come."""
    marks: list[tuple[str, float]] = []
    start = time.perf_counter()

    def log(line: str) -> None:
        marks.append((line, time.perf_counter() - start))

    capture = track_video(video, out, config, log=log, **options)
    seconds = {}
    ends = [t for _, t in marks[1:]] + [time.perf_counter() - start]
    for (line, t0), t1 in zip(marks, ends, strict=True):
        if not line.startswith("track: "):  # the avatar's training lines: its stage goes on
            stage = list(seconds)[-1]
            seconds[stage] += t1 - t0
            continue
        stage = line.removeprefix("track: ").split(" ")[0]
        seconds[stage] = seconds.get(stage, 0.0) + t1 - t0
    return capture, seconds


def _rewritten(source: Path, model_root: Path, out: Path, change) -> Path:
    """The capture ``source`` with ``change(model, split, params, cameras, images) -> (params, cameras, images)`` applied
    to each split, written to ``out`` (replaced) with its meshes recomputed and the model folder ``model_root`` copied
    in."""
    shutil.rmtree(out, ignore_errors=True)
    model = load_model(model_root)
    folder = Path(shutil.copytree(model_root, out / "model"))
    sets = {}
    for split in SPLITS:
        frames = load_insta_dataset(source, split)
        params, cameras, images = change(model, split, frames.params, frames.cameras, frames.images)
        head = model(shape=params.shape, expression=params.expression, pose=params.pose, translation=params.translation)
        meshes = None if frames.mesh_vertices is None else head.vertices.detach()
        sets[split] = replace(frames, params=params, cameras=cameras, images=images, model_path=folder, mesh_vertices=meshes)
    return save_insta_dataset(out, sets)


def _on_true_tracking(
    capture: Path, truth_root: Path, params: TrackedParams, cameras: PinholeCameras, sizes: list[int], out: Path
) -> Path:
    """``capture``'s pixels, masks and labels (the video's frames as the tracker matted them) with the true parameters
    and cameras: a model trained on it differs from one trained on ``capture`` by the tracking alone, not by the
    video's compression or the masks. ``sizes``: the splits' frames, the truth's and the capture's alike."""
    starts = np.cumsum([0, *sizes[:-1]]).tolist()
    parts = {split: slice(start, start + n) for split, start, n in zip(SPLITS, starts, sizes, strict=True)}

    def true_tracking(model, split, tracked, tracked_cameras, images):
        part = parts[split]
        true = TrackedParams(params.shape, params.expression[part], params.pose[part], params.translation[part])
        return true, replace(cameras, camera_to_world=cameras.camera_to_world[part]), images

    return _rewritten(capture, truth_root / "model", out, true_tracking)


def _train(model: str, data: Path, out: Path, minutes: float, iterations: int | None, seed: int = 0) -> dict:
    from headfields.apps.commands.train import train

    budget = ["--max-iterations", str(iterations), "--max-minutes", "1000"] if iterations else ["--max-minutes", str(minutes)]
    metrics, _, _ = train(model, ["--data", str(data), "--out", str(out), *budget, "--device", "cpu", "--seed", str(seed)])
    return metrics


def _psnr(model: str, data: Path, out: Path, args: argparse.Namespace) -> tuple[float, str]:
    """Held-out PSNR of ``model`` trained on ``data``, the mean over ``args.seeds`` runs (one a seed, into
    ``out``, ``out_1``, ...), and the cell that shows it: with several seeds, their range beside the mean."""
    runs = [
        _train(model, data, out.with_name(f"{out.name}_{seed}" if seed else out.name), args.minutes, args.iterations, seed)
        for seed in range(args.seeds)
    ]
    values = [run["psnr"] for run in runs]
    mean = sum(values) / len(values)
    return mean, f"{mean:.2f}" + (f" ({min(values):.2f}–{max(values):.2f})" if len(values) > 1 else "")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=5.0, help="training minutes a model and capture (0: none)")
    parser.add_argument(
        "--iterations", type=int, default=None, help="train this many steps instead (the same work however busy the CPU)"
    )
    parser.add_argument("--models", nargs="+", default=["gaussian_avatar", "insta"])
    parser.add_argument("--resolution", type=int, default=None, help="render the video this size (default: the built-in 96 px)")
    parser.add_argument(
        "--crop", action="store_true", help="the tracker's own crop around the face, resized to 512 (default: the whole frame)"
    )
    parser.add_argument(
        "--variants",
        nargs="+",
        choices=VARIANTS,
        default=list(VARIANTS),
        help="the trackings to run (mediapipe: the default; alone: no avatar; table: the iBUG table; derived; true: true iBUG "
        "landmarks; dense: true MediaPipe points)",
    )
    parser.add_argument("--out", type=Path, default=None, help="keep the captures and runs here (default: a temporary folder)")
    parser.add_argument(
        "--avatar-steps", type=int, default=None, help="the tracking refinement's avatar steps (default: the tracker's, 3,000)"
    )
    parser.add_argument(
        "--seeds",
        type=int,
        default=1,
        help="train each model and capture once a seed (0, 1, ...): the table's PSNRs are their means, with their range",
    )
    args = parser.parse_args()
    if args.seeds < 1:
        parser.error(f"--seeds: expected at least 1, got {args.seeds}")
    if args.crop and args.minutes > 0:
        parser.error("--crop: the true tracking's cameras frame the whole video; train on whole frames, or give --minutes 0")
    work = args.out or Path(tempfile.mkdtemp(prefix="tracking-"))
    work.mkdir(parents=True, exist_ok=True)
    config = SyntheticVideoConfig() if args.resolution is None else SyntheticVideoConfig(resolution=args.resolution)
    truth_root = cached_synthetic_video(config)
    params, cameras, images, sizes = _frames(truth_root)
    video = work / "phone.mp4"
    write_video(video, torch.rot90(images, k=-1, dims=(1, 2)), fps=25, rotation=90)
    model = load_model(truth_root / "model")
    # The capture the whole frame at the video's size, its splits the truth's: the same pixels, scored alike.
    framing = {} if args.crop else {"size": config.resolution, "whole_frame": True}
    tracker = VideoTrackerConfig(**framing, val_frames=sizes[1], test_frames=sizes[2])
    if args.avatar_steps is not None:  # the refinement's avatar (the variants without one keep none)
        tracker = replace(tracker, refine=replace(tracker.refine, avatar_steps=args.avatar_steps))
    rows = []
    landmarks, dense = work / "landmarks", work / "dense_landmarks"
    for folder in (landmarks, dense):
        shutil.rmtree(folder, ignore_errors=True)
    head = model(shape=params.shape, expression=params.expression, pose=params.pose, translation=params.translation)
    _landmark_files(head.landmarks, cameras, landmarks)
    views_file = None
    if "dense" in args.variants:  # (MediaPipe on the model's 96 views: only when the variant runs)
        # MediaPipe's points in the tracker's own correspondence (the model's views'), the truth's where it places them.
        views = model_embedding(model, DENSE_VIEWS)
        _landmark_files(views.points(head.vertices, model.faces), cameras, dense, views.observed)
        views_file = save_embedding(work / "views_embedding.npz", views)
    # MediaPipe's points on the synthetic FLAME, derived from the training frames (the held-out ones not seen).
    train = slice(0, sizes[0])
    posed = model(
        shape=params.shape, expression=params.expression[train], pose=params.pose[train], translation=params.translation[train]
    )
    train_cameras = replace(cameras, camera_to_world=cameras.camera_to_world[train])
    embedding = save_embedding(
        work / "embedding.npz", derive_mediapipe_embedding(model, images[train], train_cameras, posed.vertices)
    )
    captures = {}
    alone = replace(tracker, refine=AvatarRefinementConfig(avatar_steps=0))  # the landmark and photometric stages alone
    table = replace(alone, correspondence="table")
    variants = [("MediaPipe", "mediapipe", tracker, {}), ("MediaPipe, no avatar", "alone", alone, {})]
    variants += [("MediaPipe, the iBUG table (no avatar)", "table", table, {})]
    variants += [("MediaPipe, derived embedding", "derived", tracker, {"embedding": embedding})]
    variants += [(f"true landmarks + {NOISE_PX} px", "true", tracker, {"landmarks": landmarks})]
    trusted = replace(alone, fit=TRUSTED_LANDMARKS)
    variants += [(f"true MediaPipe points + {NOISE_PX} px", "dense", trusted, {"landmarks": dense, "embedding": views_file})]
    for name, folder, variant, options in (v for v in variants if v[1] in args.variants):
        out = work / folder
        shutil.rmtree(out, ignore_errors=True)
        capture, seconds = _track(video, out, variant, **options)
        accuracy = tracking_accuracy(model, capture_tracking(capture), (params, cameras))
        report = json.loads((capture / "tracking.json").read_text())
        frames = report["frames"]
        landmark_stages = sum(v for k, v in seconds.items() if k in LANDMARK_STAGES)
        photometric, avatar = (seconds.get(stage, 0.0) / frames for stage in ("photometric", "avatar"))
        per_frame = (landmark_stages / frames, photometric, avatar)
        rows.append((name, frames, sum(report["found"]), accuracy, *per_frame, sum(seconds.values())))
        captures[name] = capture
    print(f"tracking the synthetic video ({len(params.expression)} frames at {config.resolution} px, a 90-degree flag)")
    print(HEADER)
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name, frames, found, acc, per_frame, photometric, avatar, total in rows:
        errors = f"{acc.vertex_mm:.2f} | {acc.rotation_deg:.2f} | {acc.jaw_deg:.2f} | {acc.gaze_deg:.2f} | {_pixels(acc)}"
        cells = f"{errors} | {per_frame:.3f} | {photometric:.3f} | {avatar:.3f} | {total:.0f}"
        print(f"| {name} | {frames} | {found} | {cells} |")
    if args.minutes <= 0:
        return
    budget = f"{args.iterations} steps" if args.iterations else f"{args.minutes:g} minutes"
    print(f"\ntraining {budget} a model and capture, held-out PSNR on the same {sizes[2]} frames")
    print(
        "(the true tracking twice: on the renders with their exact masks, and on the video's frames with the tracker's "
        "masks, the same pixels as the tracked captures; each difference is against the second, then the first)"
    )
    any_capture = next(iter(captures.values()))  # every tracking's pixels and masks are the same
    same_pixels = _on_true_tracking(any_capture, truth_root, params, cameras, sizes, work / "true_tracking")
    trained = [
        v
        for v in ("MediaPipe", "MediaPipe, no avatar", "MediaPipe, derived embedding", f"true landmarks + {NOISE_PX} px")
        + (f"true MediaPipe points + {NOISE_PX} px",)
        if v in captures
    ]
    columns = " | ".join(f"{v} | difference, dB" for v in trained)
    print(f"| model | true tracking | true tracking, the video's pixels | {columns} |")
    print("|---|---:|---:|" + "---:|---:|" * len(trained))
    for name in args.models:
        renders, renders_cell = _psnr(name, truth_root, work / f"{name}_truth", args)
        true_run, true_cell = _psnr(name, same_pixels, work / f"{name}_truth_pixels", args)
        cells = [renders_cell, true_cell]
        for k, variant in enumerate(trained):
            psnr, cell = _psnr(name, captures[variant], work / f"{name}_{k}", args)
            cells += [cell, f"{psnr - true_run:+.2f}, {psnr - renders:+.2f}"]
        print(f"| {name} | {' | '.join(cells)} |")


if __name__ == "__main__":
    main()
