"""``python -m headfields render RUN``: a video of a trained avatar, replaying its held-out frames, driven by
another capture's tracking, or seen from a new camera path.

    python -m headfields render outputs/insta                                   # the held-out split, its cameras
    python -m headfields render outputs/insta --camera orbit --frames 48 --resolution 128 --out orbit.mp4
    python -m headfields render outputs/insta --drive /path/to/other/capture    # reenactment (relative transfer)
    python -m headfields render outputs/insta --drive other_clip.mp4            # from a video, tracked first
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import re
from dataclasses import dataclass
from pathlib import Path

import torch
from jaxtyping import Float
from torch import Tensor

from ...backends.cpu.process_tuning import process_tuning
from ...cameras import CAMERA_PATHS, PinholeCameras, camera_path, camera_rig, resized_cameras
from ...checks import check_memory
from ...heads import tracked_head
from ...metrics import psnr
from ...networks import products_in
from ...outputs import atomic_folder, hold, probe_folder, write_atomic
from ...parametric import Head
from ...progress import Progress
from ...renderers.volume import EARLY_STOP_TRANSMITTANCE, check_early_stop
from ...training import render_view, save_png
from ...training.evaluation import image_bytes
from ..driving import TRANSFERS, drive, is_own_capture
from ..runs import Run, load_run, run_checkpoint
from ._common import add_render_options, ray_flags, refuse_unused_flags, run_model, run_parser

__all__ = ["CAMERAS", "PNG_MARKER", "RenderPlan", "add_parser", "check_png_folder", "plan_render", "render"]

CAMERAS = ("track", *CAMERA_PATHS)  # track: the driving frames' own cameras
STILL_FRAMES = 48  # frames of a camera path around the still avatar when --frames is not given
PRECISION = "float32"  # the MLPs' products: as the scores
RAY_FLAGS = ray_flags(EARLY_STOP_TRANSMITTANCE, PRECISION)  # what a rasterised model's run refuses
# Written into every --png folder: what marks a folder as a render's own, which a later render may replace. A name
# pattern alone would not do: a VHAP capture's images/ folder holds 00000.png, 00001.png, ... too.
PNG_MARKER = ".headfields_render.json"
PNG_FRAME = re.compile(r"\d{5,}\.png")  # the frames' names: 00000.png, ...


def add_parser(commands) -> None:
    parser = run_parser(
        commands, "render", "a video of a trained run: its held-out frames, another capture driving it, or a camera path", __doc__
    )
    parser.add_argument(
        "--drive", type=Path, default=None, metavar="CAPTURE",
        help="a capture (INSTA, VHAP or metrical-tracker layout) whose tracking drives the avatar, or a video of a "
        "face, tracked first (default: the avatar's own held-out split)",
    )  # fmt: skip
    parser.add_argument("--split", default=None, help="the driving capture's split (default: the run's held-out split)")
    transfer = parser.add_mutually_exclusive_group()
    transfer.add_argument(
        "--transfer", choices=TRANSFERS, default="auto",
        help="relative: the driver's expression, jaw and head pose as offsets from its neutral frame, added to the "
        "avatar's; absolute: as they are; auto: absolute for the avatar's own capture, relative otherwise",
    )  # fmt: skip
    transfer.add_argument("--absolute", dest="transfer", action="store_const", const="absolute", help="--transfer absolute")
    transfer.add_argument("--relative", dest="transfer", action="store_const", const="relative", help="--transfer relative")
    parser.add_argument("--driver-neutral", type=int, default=0, metavar="N", help="the driver's neutral frame (relative)")
    parser.add_argument(
        "--avatar-neutral", type=int, default=0, metavar="N",
        help="the avatar's neutral training frame: what relative transfer adds to, and the still pose of a camera path",
    )  # fmt: skip
    parser.add_argument(
        "--camera", choices=CAMERAS, default="track",
        help="track: the driving frames' cameras; orbit / spiral / front: a path around the head at the training "
        "cameras' distance and elevation",
    )  # fmt: skip
    parser.add_argument(
        "--frames", type=int, default=None,
        help=f"frames to render (default: every driving frame; a camera path without --drive: {STILL_FRAMES})",
    )  # fmt: skip
    parser.add_argument("--fps", type=float, default=25.0, help="the video's frames a second")
    parser.add_argument(
        "--resolution", type=int, default=None,
        help="pixels of the longer image side (default: the capture's); sizes are rounded to even numbers (mp4)",
    )  # fmt: skip
    parser.add_argument("--yaw-range", type=float, default=360.0, help="degrees an orbit turns")
    parser.add_argument("--elevation-range", type=float, default=15.0, help="degrees a spiral swings up and down")
    parser.add_argument("--out", type=Path, default=None, help="the mp4 (default: RUN/videos/<camera>.mp4)")
    parser.add_argument(
        "--png", action="store_true",
        help="also each frame as a PNG, in a folder named like the video (orbit.mp4: orbit/), replaced whole; a folder "
        f"there that is not an earlier render's (its {PNG_MARKER} and NNNNN.png frames only) is refused",
    )  # fmt: skip
    parser.add_argument(
        "--side-by-side", action="store_true",
        help="the capture's image beside each render (the avatar's own capture, --camera track)",
    )  # fmt: skip
    add_render_options(parser, EARLY_STOP_TRANSMITTANCE, PRECISION)
    parser.set_defaults(command=render)


@dataclass
class RenderPlan:
    """What to render: camera ``k`` of ``cameras`` sees frame ``head_frames[k]`` of ``head``; ``truth`` holds the
    capture's image of each rendered frame where it is the same view (else None), at the capture's size."""

    cameras: PinholeCameras
    head: Head
    head_frames: list[int]
    truth: torch.Tensor | None  # uint8 [K, h, w, 3]
    notes: list[str]

    def truth_image(self, k: int) -> Float[Tensor, "H W 3"]:
        """The capture's image of rendered frame ``k``, in [0, 1] at the render's size (resampled one at a time:
        a long sequence's images are never held twice)."""
        image = self.truth[k].float() / 255
        if image.shape[:2] != (self.cameras.height, self.cameras.width):  # the same view at another size
            size = (self.cameras.height, self.cameras.width)
            image = torch.nn.functional.interpolate(image.permute(2, 0, 1)[None], size, mode="area")[0].permute(1, 2, 0)
            image = (image * 255).round().clamp(0, 255) / 255  # as the capture would store it at this size
        return image

    def frame_bytes(self) -> int:
        """Bytes one frame's buffers take: the render, the capture's image beside it and the encoder's copy."""
        pixels = self.cameras.width * self.cameras.height
        return image_bytes(self.cameras.width, self.cameras.height) + pixels * 3 * (4 + 4 + 1) * 2


def _even(value: float) -> int:
    return max(2, 2 * round(value / 2))


def _flame_folder(run: Run) -> str | Path | None:
    """The FLAME folder the run was trained with (its ``--model``, else its capture's own); None for another model
    or a capture of tracked meshes alone (a driving clip is then fitted with the synthetic FLAME)."""
    if run.config.subject.model_type != "flame" or run.subject.train.model_type not in (None, "flame"):
        return None
    return run.config.subject.model or run.subject.train.model_path


def plan_render(run: Run, args: argparse.Namespace) -> RenderPlan:
    """The cameras, heads and ground truth ``args`` ask of ``run`` (see :func:`add_parser` for the flags)."""
    from ...data import load_tracker_dataset

    avatar = run.subject.train
    notes = []
    if args.drive is not None and args.drive.is_file():  # a video: tracked first (once; cached by its content)
        from ..tracking.avatar_refinement import AvatarRefinementConfig
        from ..tracking.video_tracker import VideoTrackerConfig, tracked_capture

        # Every frame of a driving clip drives: one split, nothing held out; fitted with the avatar's own FLAME. No
        # avatar of the driver: what drives is the motion relative to its first frame, which the landmarks give; the
        # refinement makes a training capture's frames agree in their pixels.
        config = VideoTrackerConfig(test_frames=0, val_frames=0, refine=AvatarRefinementConfig(avatar_steps=0))
        args.drive = tracked_capture(args.drive, config, flame=_flame_folder(run))
        args.split = args.split or "train"
    if args.drive is not None:
        if not args.drive.is_dir():
            raise FileNotFoundError(f"drive: no capture folder {args.drive}")
        split = args.split or run.subject.eval.split
        driver = load_tracker_dataset(args.drive, split)
    else:
        split = args.split or run.subject.eval.split
        driver = run.frames(split)
    own = is_own_capture(avatar, driver)
    transfer = args.transfer if args.transfer != "auto" else ("absolute" if own else "relative")
    notes.append(f"driving: {'the avatar' if own else 'another'} capture's {split} split ({len(driver)} frames), {transfer}")
    driven = drive(avatar, driver, transfer == "relative", args.avatar_neutral, args.driver_neutral)
    parametric = run.model.parametric
    # The run's own split replayed as tracked: its heads as loaded, with what the run fitted per frame (MonoNPHM's codes).
    replay = args.drive is None and transfer == "absolute"
    template = avatar.cameras
    if args.camera == "track":
        count = len(driver) if args.frames is None else args.frames
        if not 1 <= count <= len(driver):
            raise ValueError(f"frames: expected 1 to the driver's {len(driver)} frames with --camera track, got {count}")
        head, head_frames = run.head(split) if replay else tracked_head(parametric, driven), list(range(count))
        c2w = driver.cameras.camera_to_world[:count]
        if transfer == "relative":  # the driver's camera motion from its neutral frame, applied to the avatar's camera
            base = avatar.cameras.camera_to_world[args.avatar_neutral]
            c2w = base @ torch.linalg.inv(driver.cameras.camera_to_world[args.driver_neutral]) @ c2w
        else:
            template = driver.cameras
        cameras = PinholeCameras(template.fx, template.fy, template.cx, template.cy, template.width, template.height, c2w)
    else:
        if args.drive is not None:
            count = len(driver) if args.frames is None else args.frames
            head = run.head(split) if replay else tracked_head(parametric, driven)
            head_frames = [k % len(driver) for k in range(count)]
        else:  # the still avatar in its neutral training frame
            count = STILL_FRAMES if args.frames is None else args.frames
            head, head_frames = run.train_head, [args.avatar_neutral] * count
        if count < 1:
            raise ValueError(f"frames: expected at least 1 frame, got {count}")
        neutral = run.train_head.vertices[args.avatar_neutral]
        center = (neutral.amin(dim=0) + neutral.amax(dim=0)) / 2
        rig = camera_rig(avatar.cameras.to(center.device), center)
        cameras = camera_path(
            args.camera, rig, count, avatar.cameras, yaw_range=math.radians(args.yaw_range),
            elevation_range=math.radians(args.elevation_range),
        )  # fmt: skip
    width, height = cameras.width, cameras.height
    if args.resolution is not None:
        scale = args.resolution / max(width, height)
        width, height = _even(width * scale), _even(height * scale)
    else:
        width, height = _even(width), _even(height)
    if (width, height) != (cameras.width, cameras.height):
        cameras = resized_cameras(cameras, width, height)
    truth = driver.images[: len(head_frames)] if own and transfer == "absolute" and args.camera == "track" else None
    if args.side_by_side and truth is None:
        raise ValueError(
            "side_by_side: needs the capture's images of the same views: drive with the avatar's own capture "
            "(no --drive, or its folder), --camera track, without --relative"
        )
    return RenderPlan(cameras, head, head_frames, truth, notes)


def check_png_folder(folder: Path) -> None:
    """``folder``, the PNG folder of a render (``--png``), absent, empty or an earlier render's (its
    :data:`PNG_MARKER` and ``NNNNN.png`` frames only, nothing else): what the render may replace whole. Anything
    else (a capture's ``images/``, a file, a link) raises a ValueError naming it, so that no one's files are lost."""
    if not folder.is_symlink() and not folder.exists():
        return
    if folder.is_symlink() or not folder.is_dir():
        found = "not a folder"
    else:
        names = sorted(p.name for p in folder.iterdir())
        others = [n for n in names if not (n == PNG_MARKER or PNG_FRAME.fullmatch(n)) or not (folder / n).is_file()]
        if not names or (PNG_MARKER in names and not others):
            return
        found = f"it holds {others[0]}" if others else f"no {PNG_MARKER}: not a render's frames"
    raise ValueError(
        f"png: {folder} (the frames' folder of --out) is not an earlier render's ({found}); --png replaces it whole: "
        "give --out another name, or move that folder away"
    )


def render(args: argparse.Namespace) -> dict:
    """The ``render`` command: writes the video (and the PNGs), prints and returns a summary.

    The video is written whole (:class:`~headfields.apps.media.VideoWriter`): an interrupted or failed render leaves the
    previous file at ``--out``, or none. The PNG folder (``--png``) is written whole too
    (:func:`headfields.outputs.atomic_folder`): its frames go to a hidden folder beside it, which then replaces the
    folder of an earlier render, so that it holds one render's frames, and a killed render leaves the earlier one
    whole; a folder there that is not a render's is refused (:func:`check_png_folder`) before anything is written.
    The folder is probed and the outputs held (:func:`headfields.outputs.hold`)
    before the run is loaded: a read-only folder, a full disk or a second render into the same file fails at once. On
    the CPU the frames render with freed memory kept in the process (``--keep-freed-memory``, put back after). A
    flag for a field's rays (``--chunk``, ``--early-stop``, ``--precision``) given for a rasterised model's run
    (a Gaussian avatar) is refused by name before anything is written: it would change nothing."""
    if args.fps <= 0:
        raise ValueError(f"fps: expected a positive frame rate, got {args.fps}")
    if args.chunk is not None and args.chunk < 1:
        raise ValueError(f"chunk: expected at least 1 ray, got {args.chunk}")
    check_early_stop(args.early_stop)
    if args.resolution is not None and args.resolution < 2:
        raise ValueError(f"resolution: expected at least 2 pixels, got {args.resolution}")
    VideoWriter, video_frames = _video()  # before minutes of loading: an unusable PyAV fails now
    run_checkpoint(args.run)  # a run folder mistyped is refused before its videos folder is made
    refuse_unused_flags(args, run_model(args.run), RAY_FLAGS)  # before its videos folder is made, too
    out = args.out if args.out is not None else args.run / "videos" / f"{args.camera}.mp4"
    if out.suffix != ".mp4":
        raise ValueError(f"out: expected a .mp4 file, got {out}")
    pngs = out.with_suffix("") if args.png else None
    if pngs is not None:
        check_png_folder(pngs)
    probe_folder(out.parent, "out")
    with hold(out, "out"), hold(pngs, "png") if pngs is not None else contextlib.nullcontext():
        # Only a tracked camera replays the capture's own views, whose images the render scores and shows beside.
        run = load_run(args.run, args.device, pixels=args.camera == "track")
        refuse_unused_flags(args, run.config.model, RAY_FLAGS)  # a run without config.json: its model now
        plan = plan_render(run, args)
        print(*plan.notes, sep="\n")
        flag = "resolution" if args.resolution is not None else "cameras"
        size = f"{plan.cameras.width} x {plan.cameras.height} pixels"
        check_memory(flag, size, plan.frame_bytes(), "cpu", "a frame's buffers")
        with process_tuning(run.device, flush_denormals=False, tune_malloc=args.keep_freed_memory):
            return _render(run, plan, out, pngs, args, VideoWriter, video_frames)


def _render(
    run: Run, plan: RenderPlan, out: Path, pngs: Path | None, args: argparse.Namespace, VideoWriter, video_frames
) -> dict:
    scores = []
    cameras = plan.cameras.to(run.device)
    with contextlib.ExitStack() as stack:
        video = stack.enter_context(VideoWriter(out, fps=args.fps))
        folder = stack.enter_context(atomic_folder(pngs, "png")) if pngs is not None else None
        bar = stack.enter_context(Progress(len(plan.head_frames), "render", "frame"))
        for k, frame in enumerate(plan.head_frames):
            chunk = run.config.training.render_chunk if args.chunk is None else args.chunk
            with products_in(args.precision):
                image = render_view(run.model, cameras, k, plan.head, frame, chunk, run.device, args.early_stop)
            if plan.truth is not None:
                truth = plan.truth_image(k)
                scores.append(float(psnr(image, truth)))
                bar.set_values(psnr=sum(scores) / len(scores))
                if args.side_by_side:
                    image = torch.cat([truth, image], dim=1)
            video.write(image)
            if folder is not None:
                save_png(image, folder / f"{k:05d}.png")
            bar.update(1)
        if folder is not None:  # complete: marked as a render's own, then in place of the earlier render's
            write_atomic(folder / PNG_MARKER, json.dumps({"video": out.name, "frames": len(plan.head_frames)}) + "\n", "png")
            check_png_folder(pngs)  # still no one else's (the check before loading the run was minutes ago)
    summary = {"video": str(out), "frames": len(plan.head_frames), "width": video.width, "height": video.height}
    if scores:
        summary["psnr"] = sum(scores) / len(scores)  # the renders themselves
        # The video as written (this process holds out: no other render can have replaced it), compressed; the
        # renders are on its right.
        decoded = (frame[:, -plan.cameras.width :].float() / 255 for frame in video_frames(out))
        truths = (plan.truth_image(k) for k in range(len(plan.head_frames)))
        video_scores = [float(psnr(v, t)) for v, t in zip(decoded, truths, strict=True)]
        summary["video_psnr"] = sum(video_scores) / len(video_scores)
        scored = run.split_metrics(args.split or run.subject.eval.split)
        if scored is not None and scored.get("psnr") is not None:
            summary["run_psnr"] = scored["psnr"]  # the run's PSNR of this held-out split, for comparison
    print(json.dumps(summary))
    return summary


def _video():
    """headfields.apps.media's writer and reader, imported here: ``export`` and ``view`` work without a usable PyAV."""
    try:
        from ..media import VideoWriter, video_frames
    except (ImportError, AttributeError) as error:  # no PyAV, or one older than the APIs media.py uses
        raise ImportError(f"render needs PyAV 18 or newer for its videos ({error}): pip install 'av>=18'") from None
    return VideoWriter, video_frames
