"""A video turned into a capture in INSTA's layout that every FLAME model trains on: ingest (the display rotation, a
fixed frame rate, trimmed seconds) -> 2D cues (MediaPipe's face mesh or the user's landmark files, smoothed; the
selfie mask or the user's matting; lip and mouth-interior labels) -> one square crop from the first frames'
landmarks, resized to 512 (metrical-tracker's rule) -> the FLAME fit of :func:`~headfields.fitting.track_landmarks`,
the eyes turned to the irises (:func:`~headfields.fitting.gaze.fit_gaze`) -> the capture, its last frames held out
as INSTA's scripts keep them.

Each stage's result is kept in a work folder beside the output, named by the video's content hash and the settings,
so an interrupted run resumes where it stopped; the capture is written there and renamed into place, so the output
path holds a whole capture or nothing::

    from headfields.apps.tracking import track_video

    root = track_video("clip.mp4", "captures/me")  # then load_subject(root), or python -m headfields train ...
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ...cameras import PinholeCameras
from ...checks import check_count, check_positive
from ...data import (
    FrameSet,
    TrackedParams,
)
from ...data.capture_cache import cache_folder
from ...data.ibug import IBUG_POINTS, model_landmark
from ...fitting.gaze import GazeConfig, fit_gaze
from ...fitting.landmark_tracking import (
    OPENCV_FROM_WORLD,
    LandmarkTrackingConfig,
    SurfaceLandmarks,
    phone_focal,
    track_landmarks,
)
from ...parametric import load_model
from ...progress import LineSink, Progress
from ...synthetic import write_synthetic_flame
from ...synthetic.model_views import views_resolution
from .avatar_refinement import AvatarRefinementConfig, refine_tracking
from .capture_files import MOUTH_LABELS, capture_frames, save_capture
from .correspondence import mediapipe_irises, mediapipe_to_ibug
from .embedding import MODEL_VIEWS, model_embedding, read_embedding
from .ingest import CROP_SCALE, Crop, Ingested, crop_frames, plan_frames, read_frames, square_crop
from .landmark_files import read_landmark_files
from .mask_files import read_mask_files
from .mediapipe import NUM_WITH_IRISES
from .mouth import mouth_regions
from .smoothing import smooth_track
from .staging import move_into_place, staged

__all__ = ["VideoTrackerConfig", "track_video", "tracked_capture"]

# INSTA's scripts hold out the last 350 frames (14 s at 25 fps); a shorter video keeps a tenth of its frames.
INSTA_TEST_FRAMES = 350
CROP_FRAMES = 5  # the crop's box spans the landmarks of the first frames with a face (metrical-tracker: the first)
MEDIAPIPE_CROP_SCALE = 2.0  # the face mesh spans the forehead, ~1.25x the iBUG points' extent: the same box as 2.5x theirs
MASK_THRESHOLD = 0.5
CAPTURE_LAYOUTS = ("insta", "vhap")
CORRESPONDENCES = ("model", "table")
# The model's views are rendered at the video's face size, within these: MediaPipe reads a face through a 192-pixel
# crop of 1.5 times its box, so a larger view tells it no more (at 512, the views' render took minutes on 2 cores).
MODEL_VIEWS_SIZES = (64, 256)
DEFAULT_REFINEMENT = AvatarRefinementConfig()


@dataclass(frozen=True)
class VideoTrackerConfig:
    fps: float | None = 25.0  # resampled to this frame rate (None: every frame as it comes)
    trim_start: float = 0.0  # seconds dropped at the start and the end
    trim_end: float = 0.0
    size: int = 512  # the square crop's side, pixels
    whole_frame: bool = False  # no crop around the face: the whole frame, padded to a square (a clip framed already)
    test_frames: int | None = None  # held out at the end (None: INSTA's 350, at most a tenth of the frames)
    val_frames: int | None = None  # held out before them (None: a thirtieth, at least 1)
    smoothing: float = 1.0  # the landmark track's Gaussian, frames
    max_size: int = 1920  # frames are decoded at most this large (their longer side)
    layout: str = "insta"  # the capture's: INSTA's (metrical-tracker's) or VHAP's exported one (GaussianAvatars')
    # MediaPipe's points on the model (without an --embedding file): "model", where the model's own views place them
    # (tracking.embedding.model_embedding), or "table", our MediaPipe -> iBUG table over the static embedding.
    correspondence: str = "model"
    fit: LandmarkTrackingConfig = field(default_factory=LandmarkTrackingConfig)
    # The eyes turned to MediaPipe's irises (fitting.gaze; iterations 0, or landmark files without irises: straight).
    gaze: GazeConfig = field(default_factory=GazeConfig)
    # The fit made consistent through an avatar of the video (tracking.avatar_refinement; avatar_steps 0: none).
    refine: AvatarRefinementConfig = field(default_factory=lambda: DEFAULT_REFINEMENT)

    def __post_init__(self) -> None:
        if self.fps is not None:
            check_positive("fps", self.fps, finite=True)
        check_count("size", self.size, 64)
        for name in ("test_frames", "val_frames"):
            if getattr(self, name) is not None:
                check_count(name, getattr(self, name), 0)
        check_positive("smoothing", self.smoothing, finite=True)
        check_count("max_size", self.max_size, 64)
        if self.layout not in CAPTURE_LAYOUTS:
            raise ValueError(f"layout: expected one of {', '.join(CAPTURE_LAYOUTS)}, got {self.layout!r}")
        if self.correspondence not in CORRESPONDENCES:
            raise ValueError(f"correspondence: expected one of {', '.join(CORRESPONDENCES)}, got {self.correspondence!r}")


def track_video(
    video: str | Path,
    out: str | Path,
    config: VideoTrackerConfig | None = None,
    *,
    landmarks: str | Path | None = None,
    landmarks_first: int = 0,
    masks: str | Path | None = None,
    flame: str | Path | None = None,
    identity: str | Path | None = None,
    embedding: str | Path | None = None,
    log: Callable[[str], None] = print,
) -> Path:
    """Track ``video`` and write the capture to the new folder ``out``; returns ``out``.

    ``landmarks``: a folder of the user's own landmarks (:func:`~headfields.apps.tracking.landmark_files.read_landmark_files`,
    one file per frame of the video as stored, named by its number counted from ``landmarks_first``: 1 for ffmpeg's
    ``%05d``) instead of MediaPipe's; ``masks``: a folder of a matting tool's per-frame masks (PNG,
    alpha or grey, one per source frame) instead of the selfie model's; ``flame``: the folder of the user's FLAME
    files (default: the synthetic FLAME, written into the capture); ``identity``: MICA's ``identity.npy``, held;
    ``embedding``: MediaPipe's points on the model's surface in metrical-tracker's ``mediapipe_landmark_embedding.npz``
    layout (``lmk_face_idx``, ``lmk_b_coords``, ``landmark_indices``), used instead of the iBUG table."""
    config = config or VideoTrackerConfig()
    video, out = check_inputs(video, out, "capture", landmarks, landmarks_first, masks)
    work = _work_folder(video, out, config, (landmarks, landmarks_first), masks, flame, (identity, embedding))
    with staged(work):
        # The user's files first: a bad one is refused before minutes of detection.
        model_dir = Path(flame) if flame is not None else write_synthetic_flame(work / "model")
        model = load_model(model_dir)
        shape = _identity(identity, model.num_shape) if identity is not None else None
        surface = read_embedding(embedding, model) if embedding is not None else None
        cues = _cues(video, work, config, landmarks, landmarks_first, masks, log)
        fit = _fit(cues, model, shape, surface, work, config, log)
        if config.refine.avatar_steps > 0:
            fit = _refine(cues, fit, model, work, config, log)
        capture = work / "capture"
        shutil.rmtree(capture, ignore_errors=True)
        # The synthetic model goes with the capture that names it; the user's licensed files stay where they are, named
        # by no capture (as INSTA's and metrical-tracker's): train with --model, or on the capture's tracked meshes.
        named = Path(shutil.copytree(model_dir, capture / "model")) if flame is None else None
        _write_capture(capture, cues, fit, model, named, config)
        move_into_place(capture, out)
    log(f"track: {out} ({len(cues['found'])} frames, {int(cues['found'].sum())} with a face)")
    return out


def check_inputs(
    video: str | Path, out: str | Path, result: str, landmarks: str | Path | None, landmarks_first: int, masks: str | Path | None
) -> tuple[Path, Path]:
    """``video`` and ``out`` as paths, checked before anything is written: the video a file, ``out`` (for the
    ``result``) new or empty, ``landmarks_first`` a count, and MediaPipe ready where the user's own ``landmarks`` or
    ``masks`` are not given. The video tracker's and the template tracker's."""
    video, out = Path(video), Path(out)
    if not video.is_file():
        raise ValueError(f"video: expected a video file, {str(video)!r} is not a file")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ValueError(f"out: expected a new or empty folder for the {result}, {str(out)!r} already holds files")
    check_count("landmarks_first", landmarks_first, 0)
    _check_detectors(landmarks is None, masks is None)
    return video, out


def _check_detectors(landmarks: bool, masks: bool) -> None:
    """MediaPipe's runtime (the ``track`` extra) and model files, where the face mesh (``landmarks``) or the selfie
    masks (``masks``) will be needed: each missing one is one line naming the fix."""
    if not (landmarks or masks):
        return
    from .mediapipe import load_litert
    from .model_files import mediapipe_model

    load_litert()
    detector = ("face_detection_short_range", "face_landmark", "iris_landmark")
    names = (detector if landmarks else ()) + (("selfie_segmentation",) if masks else ())
    for name in names:
        mediapipe_model(name)


def tracked_capture(
    video: str | Path,
    config: VideoTrackerConfig | None = None,
    flame: str | Path | None = None,
    log: Callable[[str], None] = print,
) -> Path:
    """The capture of ``video`` tracked with ``config`` (and the user's ``flame`` folder, as :func:`track_video`), tracked
    on first use into the cache folder (``~/.cache/headfields/tracked/``) under the video's content hash and the
    settings, and reused after: what ``train --video`` (with its ``--model``) and ``render --drive VIDEO`` (with the
    run's model) read."""
    config = config or VideoTrackerConfig()
    video = Path(video)
    if not video.is_file():
        raise ValueError(f"video: expected a video file, {str(video)!r} is not a file")
    flame = None if flame is None else Path(flame).expanduser().absolute()
    root = cache_folder() / "tracked" / _digest(video, config, None, None, flame, None)
    if (root / "tracking.json").is_file():
        log(f"track: {video} was tracked before: {root}")
        return root
    return track_video(video, root, config, flame=flame, log=log)


def _digest(video: Path, config, landmarks, masks, flame, identity) -> str:
    """The video's content and every setting, hashed."""
    digest = hashlib.sha256()
    with open(video, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    digest.update(repr((asdict(config), str(landmarks), str(masks), str(flame), str(identity))).encode())
    return digest.hexdigest()[:16]


def _work_folder(video: Path, out: Path, config, landmarks, masks, flame, identity) -> Path:
    """Beside ``out``, named by the video's content and every setting: a rerun with the same finds its stages."""
    return out.parent / f".{out.name}.tracking-{_digest(video, config, landmarks, masks, flame, identity)}"


def _cues(video: Path, work: Path, config: VideoTrackerConfig, landmarks, landmarks_first: int, masks, log) -> dict:
    """Frames, landmarks (iBUG-68 in crop pixels), masks and mouth labels: computed once, then read from the work folder."""
    done = work / "cues.pt"
    if done.is_file():
        log("track: cues from the interrupted run")
        return torch.load(done, weights_only=True)
    log(f"track: reading {video}")

    def read(stage: str, each: Callable[[Tensor], Tensor]) -> Ingested:
        # A frame at a time, kept as ``each`` makes it: a long phone clip is never held whole at its size.
        with Progress(None, stage, "frame") as bar:  # how many the rate keeps is known inside read_frames
            return read_frames(
                video, config.fps, config.trim_start, config.trim_end, config.max_size, bar.update, each
            )  # fmt: skip

    if landmarks is not None:
        # The files number the video's stored frames, in its pixels (before max_size shrank them): which the rate and
        # the trim keep, and their size, is known from the packets, before the one decoding pass below.
        frames = plan_frames(video, config.fps, config.trim_start, config.trim_end, config.max_size)
        track = read_landmark_files(landmarks, frames.source.frames, landmarks_first)
        scale = frames.width / frames.source.width
        points, found = track.points[frames.source_frames] * scale, track.found[frames.source_frames]
        layout = track.layout
    else:
        from .mediapipe import FaceLandmarker, landmarks_of

        log("track: MediaPipe face mesh, a frame as it is decoded")
        frames = read("track: face mesh", FaceLandmarker(irises=True).video())
        faces = landmarks_of(frames.images)
        points, found, layout = faces.points[..., :2], faces.found, "mediapipe"
    n, width, height = len(frames.source_frames), frames.width, frames.height
    if not bool(found.any()):
        raise ValueError(f"video: no face found in any of its {n} frames")
    if config.whole_frame:
        side = max(width, height)
        crop = Crop((width - side) // 2, (height - side) // 2, side)
    else:
        extent = points[torch.nonzero(found)[:CROP_FRAMES, 0]].reshape(-1, 2)
        extent = extent[torch.isfinite(extent).all(-1)]
        crop = square_crop(extent, width, height, scale=CROP_SCALE if layout == "ibug68" else MEDIAPIPE_CROP_SCALE)
    images = read("track: decoding", lambda image: crop_frames(image[None], crop, config.size)[0]).images
    cropped = crop.to_pixels(points.float(), config.size)
    cropped = smooth_track(cropped, found, config.smoothing)
    ibug = mediapipe_to_ibug(cropped) if layout == "mediapipe" else cropped
    if masks is not None:
        alpha = read_mask_files(Path(masks), frames.source_frames, crop, config.size, (width, height))
        alpha = alpha >= int(255 * MASK_THRESHOLD)
    else:
        from .mediapipe import SelfieSegmenter

        with Progress(n, "track: selfie masks", "frame") as bar:
            alpha = SelfieSegmenter()(images, progress=bar.update) >= MASK_THRESHOLD
    mouth = mouth_regions(cropped, layout, config.size, config.size)
    labels = torch.zeros(images.shape[:3], dtype=torch.uint8)
    for name, region in (
        ("upper_lip", mouth.upper_lip),
        ("lower_lip", mouth.lower_lip),
        ("mouth_interior", mouth.mouth_interior),
    ):
        labels[region] = MOUTH_LABELS[name]
    scale = config.size / crop.size
    cues = {
        "images": images,
        "masks": alpha,
        "labels": labels,
        "points": ibug,
        "mediapipe": cropped if layout == "mediapipe" else torch.zeros(0),
        "layout": layout,
        "found": found,
        "focal": torch.tensor(phone_focal(width, height) * scale),
        "times": frames.times,
        "crop": torch.tensor([crop.left, crop.top, crop.size]),
    }
    torch.save(cues, work / "cues.partial")
    (work / "cues.partial").rename(done)
    return cues


def _identity(path: str | Path, count: int) -> Tensor:
    try:
        values = np.load(path).reshape(-1)
    except (OSError, ValueError) as error:
        raise ValueError(f"identity: cannot read {str(path)!r} as a .npy array of shape coefficients ({error})") from None
    if not np.isfinite(values).all() or len(values) == 0:
        raise ValueError(f"identity: expected finite shape coefficients in {str(path)!r}")
    shape = torch.zeros(count, dtype=torch.float64)
    shape[: min(count, len(values))] = torch.from_numpy(values[:count].astype(np.float64))
    return shape


def _fit(cues: dict, model, shape, surface: SurfaceLandmarks | None, work: Path, config: VideoTrackerConfig, log) -> dict:
    done = work / "fit.pt"
    if done.is_file():
        log("track: the FLAME fit from the interrupted run")
        return torch.load(done, weights_only=True)
    size = config.size
    found = cues["found"]
    log(f"track: fitting FLAME to {int(found.sum())} frames with a face")
    if surface is not None and cues["layout"] != "mediapipe":
        raise ValueError("embedding: a MediaPipe embedding needs MediaPipe's points, not --landmarks in iBUG-68 ids")
    if surface is None and cues["layout"] == "mediapipe" and config.correspondence == "model":
        surface = _model_embedding(cues, model, shape, log)
    points = cues["points"] if surface is None else cues["mediapipe"]
    landmarks = (surface or SurfaceLandmarks.static(model)).held_by(points, found)
    fit = config.fit
    stages = [fit.rigid_steps, fit.keyframe_steps, fit.frame_steps, fit.global_steps, fit.photometric_steps]
    begun: list[int] = []

    def stage_begins(stage: str, steps: int) -> None:  # the bar moves a stage at a time (each may stop early)
        log(f"track: {stage} ({steps} iterations)")
        bar.update(begun[-1] if begun else 0)
        bar.set_values(stage=stage)
        begun.append(steps)

    with Progress(sum(stages), "track: FLAME fit", "step") as bar:
        fitted = track_landmarks(
            model, points.double(), found, landmarks, size, size, fit, focal=float(cues["focal"]), shape=shape,
            images=cues["images"], masks=cues["masks"], progress=stage_begins,
        )  # fmt: skip
        bar.update(begun[-1] if begun else 0)
    p = fitted.params
    result = {
        "shape": p.shape,
        "expression": p.expression,
        "pose": _gaze(cues, fitted.params, fitted.focal, config.gaze, model, log),
        "translation": p.translation,
        "focal": torch.tensor(fitted.focal),
        "residual": fitted.residual,
    }
    torch.save(result, work / "fit.partial")
    (work / "fit.partial").rename(done)
    return result


def _gaze(cues: dict, params: TrackedParams, focal: float, config: GazeConfig, model, log) -> Tensor:
    """``params.pose`` (the fit's world: the camera at its origin) with the eyes turned to the irises, where the points
    hold them (MediaPipe's refined mesh)."""
    points = cues["mediapipe"]
    if config.iterations == 0 or points.shape[1:] != (NUM_WITH_IRISES, 2):
        return params.pose
    irises, seen = mediapipe_irises(points.float())
    seen &= cues["found"][:, None]
    log(f"track: gaze ({int(seen.any(1).sum())} frames with an open eye)")
    size = cues["images"].shape[1]
    c2w = OPENCV_FROM_WORLD.float().expand(len(seen), 4, 4)
    return fit_gaze(model, params, PinholeCameras(focal, focal, size / 2, size / 2, size, size, c2w), irises, seen, config)


def _model_embedding(cues: dict, model, shape, log) -> SurfaceLandmarks | None:
    """MediaPipe's points where the model's own views place them, the views at the video's face size (the span of
    iBUG 27..67, which the table gives); None (the iBUG table) where the model cannot be rendered so."""
    count = model().landmarks.shape[1]
    columns = [model_landmark(i, count) for i in range(27, IBUG_POINTS)]
    face = cues["points"][cues["found"]][:, 27:]
    span = float((face.amax(1) - face.amin(1)).amax(-1).median())
    size = min(max(views_resolution(model, span, columns, shape), MODEL_VIEWS_SIZES[0]), MODEL_VIEWS_SIZES[1])
    log(f"track: MediaPipe on the model's own views ({MODEL_VIEWS} at {size} px) for its points on the model")
    try:
        return model_embedding(model, size, shape)
    except ValueError as error:
        log(f"track: no points from the model's views ({error}): MediaPipe's points through the iBUG table")
        return None


def _splits(n: int, config: VideoTrackerConfig) -> dict[str, Tensor]:
    test = config.test_frames if config.test_frames is not None else min(INSTA_TEST_FRAMES, max(1, n // 10))
    val = config.val_frames if config.val_frames is not None else max(1, n // 30)
    if test + val >= n:
        raise ValueError(f"video: {n} frames leave none to train on after {test} test and {val} validation frames")
    splits = {
        "train": torch.arange(0, n - test - val),
        "val": torch.arange(n - test - val, n - test),
        "test": torch.arange(n - test, n),
    }
    return {name: index for name, index in splits.items() if len(index)}  # a driving clip: all of it trains


def _refine(cues: dict, fit: dict, model, work: Path, config: VideoTrackerConfig, log) -> dict:
    done = work / "refined.pt"
    if done.is_file():
        log("track: the refined fit from the interrupted run")
        return torch.load(done, weights_only=True)
    steps = config.refine.avatar_steps
    log(f"track: avatar of the video ({steps} steps), each frame's head turn then refitted through it")
    frames, centre = _video_frames(cues, fit, model, None)
    refined = refine_tracking(frames, model, work / "avatar", config.refine, log=LineSink(log))
    translation = (refined.translation + centre).to(fit["translation"])
    # The gaze again, on the refitted heads: the eyes' pixels moved with each head's turn (on the built-in video the
    # gaze 5.6 -> 4.2 degrees off, the eye region 0.27 -> 0.22 px).
    params = TrackedParams(fit["shape"], fit["expression"], refined.pose.to(fit["pose"]), translation)
    result = {**fit, "pose": _gaze(cues, params, float(fit["focal"]), config.gaze, model, log), "translation": translation}
    torch.save(result, work / "refined.partial")
    (work / "refined.partial").rename(done)
    return result


def _video_frames(cues: dict, fit: dict, model, model_dir: Path | None) -> tuple[FrameSet, Tensor]:
    """The fit as a capture's frames (:func:`.capture_frames`: FLAME's meshes) and its mean translation."""
    params = TrackedParams(fit["shape"], fit["expression"], fit["pose"], fit["translation"])

    def posed(p: TrackedParams) -> Tensor:
        return model(shape=p.shape, expression=p.expression, pose=p.pose, translation=p.translation).vertices

    return capture_frames(cues, params, float(fit["focal"]), posed, model.faces, "flame", model_dir)


def _write_capture(root: Path, cues: dict, fit: dict, model, model_dir: Path | None, config: VideoTrackerConfig) -> None:
    n = len(cues["found"])
    video, _ = _video_frames(cues, fit, model, model_dir)
    save_capture(root, video, cues, _splits(n, config), config.layout)
    residual = fit["residual"]
    report = {
        "frames": n,
        "found": cues["found"].tolist(),
        "reprojection_px": [None if math.isnan(r) else round(r, 3) for r in residual.tolist()],
        "jitter_px": _jitter(cues["points"], cues["found"]),
        "focal_px": video.cameras.fx,
        "crop": cues["crop"].tolist(),
        "times": cues["times"].tolist(),
    }
    (root / "tracking.json").write_text(json.dumps(report))


def _jitter(points: Tensor, found: Tensor) -> float | None:
    """The landmarks' median frame-to-frame acceleration (pixels), over consecutive found frames: what a viewer sees
    as shake, zero on steady motion."""
    ok = found[2:] & found[1:-1] & found[:-2]
    if not bool(ok.any()):
        return None
    acceleration = (points[2:] - 2 * points[1:-1] + points[:-2]).norm(dim=-1)[ok]
    value = acceleration[torch.isfinite(acceleration)].median()
    return round(float(value), 4)
