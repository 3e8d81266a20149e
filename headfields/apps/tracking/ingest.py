"""A phone video into upright frames at a constant rate, and the one square face crop the tracker works in.

Phones store portrait video as landscape sensor frames plus a display matrix; :func:`read_frames` turns each frame
as a player shows it. Phones also record at a variable frame rate; given ``fps``, each output frame is the source
frame presented nearest to ``t0 + k / fps``, so the capture is sampled evenly in time. Frames are decoded one at a
time and (``max_size``) shrunk as they are decoded, and ``each`` makes what is kept of each (a detector's points, a
crop), so a minute of 1080p (9 GB as frames) is never held whole::

    from headfields.apps.tracking.ingest import crop_frames, probe_video, read_frames, square_crop

    probe = probe_video("me.mp4")  # VideoProbe(frames=5400, width=1080, height=1920, rotation=270, ...)
    clip = read_frames("me.mp4", fps=25, trim_start=2, trim_end=1, max_size=1280)  # images [N, H, W, 3] upright
    crop = square_crop(first_frame_landmarks, clip.width, clip.height)  # metrical-tracker's box, 2.5x the face
    frames = crop_frames(clip.images, crop, size=512)  # uint8 [N, 512, 512, 3]
    frames = read_frames("me.mp4", fps=25, each=lambda image: crop_frames(image[None], crop)[0]).images  # the same
    points_512 = crop.to_pixels(landmarks, size=512)

Pixel coordinates follow headfields' convention (:mod:`headfields.cameras`): the centre of pixel (col, row) is at
(col + 0.5, row + 0.5).
"""

from __future__ import annotations

import math
import numbers
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np
import torch
import torch.nn.functional as F
from jaxtyping import Float, Int, Shaped, UInt8
from torch import Tensor

from ...checks import check_shape
from ..media import _SCALE  # the chroma filtering and rounding media's own reader decodes with

__all__ = [
    "Crop",
    "FramePlan",
    "Ingested",
    "VideoProbe",
    "crop_frames",
    "plan_frames",
    "probe_video",
    "read_frames",
    "resize_images",
    "square_crop",
]

# metrical-tracker's crop (Zielon/metrical-tracker image.py get_bbox, called with bbox_scale 2.5 by
# datasets/generate_dataset.py): a square 2.5 times the extent of the face's 68 landmarks.
CROP_SCALE = 2.5
# A clip is variable-frame-rate when a frame interval differs from the median one by more than this fraction of
# it, and by more than 1.5 ticks of the stream's clock: 29.97 fps on a millisecond clock alternates 33 and 34 ms
# intervals (one tick) and is constant; a phone's 30 fps clip with dropped frames has 67 ms gaps.
VARIABLE_RATE_TOLERANCE = 0.01
TIE_SECONDS = 1e-9  # two source frames this close to equally near a target time are a tie


@dataclass(frozen=True)
class VideoProbe:
    """What :func:`probe_video` finds: sizes as displayed (after the rotation), times in seconds."""

    frames: int
    width: int  # displayed width: the stored height when the rotation is 90 or 270
    height: int
    rotation: int  # degrees counter-clockwise players turn the stored frames (0, 90, 180, 270; ffprobe's, mod 360)
    fps: float  # average: frames / duration
    duration: float  # from the first frame's presentation to the end of the last one
    variable_frame_rate: bool


@dataclass(frozen=True)
class FramePlan:
    """Which of a video's frames :func:`read_frames` keeps, when and how large, known from its packets before any
    frame is decoded (:func:`plan_frames`)."""

    times: Float[Tensor, " N"]  # seconds since the video's first frame (the target times when resampled)
    source_frames: Int[Tensor, " N"]  # the index of the source frame each one is, in presentation order
    fps: float
    source: VideoProbe  # the video as stored (its frame count, displayed size, ...): what probe_video finds
    width: int  # each frame's as decoded (upright, after max_size)
    height: int


@dataclass(frozen=True)
class Ingested(FramePlan):
    """Frames as :func:`read_frames` returns them: upright, at ``fps`` (or what its ``each`` made of each one)."""

    images: Shaped[Tensor, "N ..."]  # uint8 [N, H, W, 3]; with ``each``: its results, stacked


@dataclass(frozen=True)
class Crop:
    """A square of ``size`` pixels whose top-left corner is pixel (left, top) of the original frame; parts past
    the frame's edges are black. It maps points between the frame and the crop resized to ``size`` pixels."""

    left: int
    top: int
    size: int

    def to_pixels(self, points: Float[Tensor, "*B 2"], size: int = 512) -> Float[Tensor, "*B 2"]:
        """Original-frame pixel coordinates (x, y) to those of the crop resized to ``size`` x ``size``.

        >>> Crop(100, 50, 1024).to_pixels(torch.tensor([[612.0, 562.0]]))  # tensor([[256., 256.]])
        """
        scale = _check_output_size(size) / self.size
        return (points - points.new_tensor([self.left, self.top])) * scale

    def from_pixels(self, points: Float[Tensor, "*B 2"], size: int = 512) -> Float[Tensor, "*B 2"]:
        """The inverse of :meth:`to_pixels`: crop pixel coordinates back to the original frame's."""
        scale = self.size / _check_output_size(size)
        return points * scale + points.new_tensor([self.left, self.top])


def _check_output_size(size: int) -> int:
    if isinstance(size, bool) or not isinstance(size, numbers.Integral) or size < 1:
        raise ValueError(f"size: expected the crop's side in pixels, an integer >= 1, got {size!r}")
    return int(size)


def _check_seconds(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value) or value < 0:
        raise ValueError(f"{name}: expected a finite number of seconds >= 0, got {value!r}")
    return float(value)


@dataclass(frozen=True)
class _Scan:
    """The demuxed timeline of a video: every frame's presentation time, in order."""

    pts: np.ndarray  # int64, sorted, in time_base units
    time_base: float
    rotation: int
    stored_width: int
    stored_height: int
    nominal_step: int  # one frame at the container's nominal rate, in time_base units (0: no rate given)

    @property
    def times(self) -> np.ndarray:
        return (self.pts - self.pts[0]) * self.time_base

    @property
    def duration(self) -> float:
        """To the end of the last frame, which lasts the median interval (a single frame: the nominal rate's)."""
        steps = np.diff(self.pts)
        return float((self.pts[-1] - self.pts[0] + (np.median(steps) if len(steps) else self.nominal_step)) * self.time_base)


def _display_rotation(frame: av.VideoFrame, video: Path) -> int:
    """The counter-clockwise quarter turns a player applies to ``frame``, in degrees; a mirrored matrix raises."""
    for side in frame.side_data:
        if side.type == av.sidedata.sidedata.Type.DISPLAYMATRIX:
            # FFmpeg's 3x3 int32 matrix (libavutil/display.h), 16.16 fixed point: a, b, u, c, d, v, x, y, w.
            a, b, _, c, d, *_ = struct.unpack("<9i", bytes(side))
            if a * d - b * c < 0:
                raise ValueError(f"video: {str(video)!r} has a mirrored display matrix, which is not supported")
    rotation = frame.rotation
    if rotation % 90:
        raise ValueError(f"video: {str(video)!r} is turned {rotation} degrees, expected a multiple of 90")
    return int(rotation) % 360


def _open(video: str | Path) -> tuple[Path, av.container.InputContainer]:
    if not isinstance(video, (str, Path)):
        raise TypeError(f"video: expected a path to a video file, got {type(video).__name__}")
    path = Path(video)
    if not path.is_file():
        raise ValueError(f"video: expected an existing video file, {str(path)!r} is not a file")
    try:
        container = av.open(str(path))
    except av.FFmpegError as error:
        raise ValueError(f"video: expected a readable video file, {str(path)!r} is not one ({error})") from None
    if not container.streams.video:
        container.close()
        raise ValueError(f"video: expected a file with a video stream, {str(path)!r} has none")
    return path, container


def _scan(video: str | Path) -> tuple[Path, _Scan]:
    path, container = _open(video)
    try:
        with container:
            stream = container.streams.video[0]
            pts = [packet.pts for packet in container.demux(stream) if packet.size and packet.pts is not None]
            if not pts:
                raise ValueError(f"video: expected at least one frame, {str(path)!r} has none")
            container.seek(0)
            first = next(container.decode(stream), None)
            if first is None:
                raise ValueError(f"video: expected at least one decodable frame, {str(path)!r} has none")
            rotation = _display_rotation(first, path)
            width, height = first.width, first.height
            time_base = float(stream.time_base)
            rate = stream.average_rate or stream.guessed_rate
            nominal_step = round(1 / (float(rate) * time_base)) if rate else 0
    except av.FFmpegError as error:
        raise ValueError(f"video: expected a readable video file, {str(path)!r} is corrupt ({error})") from None
    scan = _Scan(np.unique(np.asarray(pts, np.int64)), time_base, rotation, width, height, nominal_step)
    if not scan.duration > 0:
        raise ValueError(f"video: expected a video of some length, {str(path)!r} lasts 0 s")
    return path, scan


def _probe(scan: _Scan) -> VideoProbe:
    swap = scan.rotation in (90, 270)
    steps = np.diff(scan.pts).astype(np.float64)
    variable = False
    if len(steps):
        median = float(np.median(steps))
        variable = bool((np.abs(steps - median) > max(1.5, VARIABLE_RATE_TOLERANCE * median)).any())
    duration = scan.duration
    return VideoProbe(
        frames=len(scan.pts),
        width=scan.stored_height if swap else scan.stored_width,
        height=scan.stored_width if swap else scan.stored_height,
        rotation=scan.rotation,
        fps=len(scan.pts) / duration,
        duration=duration,
        variable_frame_rate=variable,
    )


def probe_video(video: str | Path) -> VideoProbe:
    """Frame count, displayed size, rotation, rate and whether the rate varies: from the container's packets
    (read, not decoded) and the first frame.

    >>> probe_video("me.mp4")  # VideoProbe(frames=900, width=1080, height=1920, rotation=270, fps=29.98, ...)
    """
    return _probe(_scan(video)[1])


def _select(scan: _Scan, fps: float | None, trim_start: float, trim_end: float, path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(source frame index, time) of each output frame."""
    times, duration = scan.times, scan.duration
    end = duration - trim_end
    nothing = f"video: trim_start={trim_start:g} s and trim_end={trim_end:g} s leave nothing of {str(path)!r} ({duration:g} s)"
    if fps is None:
        eps = 1e-6 * max(duration, 1.0)
        index = np.nonzero((times >= trim_start - eps) & (times < end - eps))[0]
        if not len(index):
            raise ValueError(nothing)
        return index, times[index]
    count = math.ceil((end - trim_start) * fps - 1e-6)
    if count < 1:
        raise ValueError(nothing)
    targets = trim_start + np.arange(count) / fps
    after = np.clip(np.searchsorted(times, targets), 1, len(times) - 1) if len(times) > 1 else np.zeros(count, np.int64)
    before = np.maximum(after - 1, 0)
    # Ties go to the earlier frame, a tie within a nanosecond too (a clock tick is ~11 us): 0.56 s lies 0.06 from
    # both 0.5 and 0.62 in exact arithmetic, not in floating point.
    index = np.where(np.abs(times[after] - targets) < np.abs(targets - times[before]) - TIE_SECONDS, after, before)
    return index, targets


def _shrunk(width: int, height: int, max_size: int | None) -> tuple[int, int]:
    if max_size is None or max(width, height) <= max_size:
        return width, height
    scale = max_size / max(width, height)
    return max(1, round(width * scale)), max(1, round(height * scale))


def _plan(
    video: str | Path, fps: float | None, trim_start: float, trim_end: float, max_size: int | None
) -> tuple[Path, _Scan, FramePlan]:
    """The arguments checked, the video's packets scanned and the frames kept chosen: its path, scan and the plan."""
    if fps is not None and (isinstance(fps, bool) or not isinstance(fps, numbers.Real) or not math.isfinite(fps) or fps <= 0):
        raise ValueError(f"fps: expected a finite positive frame rate, or None to keep the video's frames, got {fps!r}")
    trim_start, trim_end = _check_seconds("trim_start", trim_start), _check_seconds("trim_end", trim_end)
    if max_size is not None and (isinstance(max_size, bool) or not isinstance(max_size, numbers.Integral) or max_size < 1):
        raise ValueError(f"max_size: expected an integer number of pixels >= 1, or None, got {max_size!r}")
    path, scan = _scan(video)
    index, times = _select(scan, fps, trim_start, trim_end, path)
    width, height = _shrunk(scan.stored_width, scan.stored_height, max_size)
    if (scan.rotation // 90) % 2:
        width, height = height, width
    source = _probe(scan)
    plan = FramePlan(
        times=torch.as_tensor(times, dtype=torch.float64),
        source_frames=torch.as_tensor(index, dtype=torch.long),
        fps=float(fps) if fps is not None else source.fps,
        source=source,
        width=width,
        height=height,
    )
    return path, scan, plan


def plan_frames(
    video: str | Path,
    fps: float | None = None,
    trim_start: float = 0.0,
    trim_end: float = 0.0,
    max_size: int | None = None,
) -> FramePlan:
    """What :func:`read_frames` with these arguments keeps (source frames, times, size), from the video's packets
    alone: nothing is decoded.

    >>> plan_frames("me.mp4", fps=25).source_frames[:3]  # tensor([0, 1, 2])
    """
    return _plan(video, fps, trim_start, trim_end, max_size)[2]


def read_frames(
    video: str | Path,
    fps: float | None = None,
    trim_start: float = 0.0,
    trim_end: float = 0.0,
    max_size: int | None = None,
    progress: Callable[[int], object] | None = None,
    each: Callable[[UInt8[Tensor, "H W 3"]], Tensor] | None = None,
) -> Ingested:
    """The frames of ``video``, upright (its display matrix applied), RGB uint8 on the CPU; ``progress(k)`` is told
    each time k more of them are decoded. ``each``: called on each frame as it is decoded, in order, its result kept
    instead (a crop, a detector's points): a long clip is never held whole at its size.

    ``fps`` None keeps every frame presented in the window, with its own time; a rate resamples: output frame k is
    the source frame presented nearest to ``trim_start + k / fps`` (ties to the earlier), for every such time
    before the window's end, so a variable-rate clip comes out at a constant rate (frames repeat or drop as
    needed). ``trim_start`` and ``trim_end`` cut seconds off each end; ``max_size`` shrinks each frame as it is
    decoded so that its longer side is at most that many pixels. Only the frames kept are converted to RGB.

    >>> clip = read_frames("me.mp4", fps=25, trim_start=2.0, max_size=1024)
    >>> clip.images.shape, clip.times[:3]  # (N, 1024, 576, 3), tensor([2.00, 2.04, 2.08])
    """
    path, scan, plan = _plan(video, fps, trim_start, trim_end, max_size)
    index = plan.source_frames.numpy()
    wanted = scan.pts[index]
    copies: dict[int, list[int]] = {}  # source pts -> the output slots that show it
    for slot, pts in enumerate(wanted.tolist()):
        copies.setdefault(pts, []).append(slot)
    turns = scan.rotation // 90
    width, height = (plan.height, plan.width) if turns % 2 else (plan.width, plan.height)  # as stored, to decode
    images = None if each is not None else torch.empty(len(index), plan.height, plan.width, 3, dtype=torch.uint8)
    filled, last = 0, int(wanted.max())
    try:
        with _open(path)[1] as container:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            for frame in container.decode(stream):
                slots = copies.get(frame.pts)
                if slots:
                    rgb = frame.to_ndarray(format="rgb24", width=width, height=height, interpolation=_SCALE)
                    image = torch.rot90(torch.from_numpy(rgb), turns, dims=(0, 1)) if turns else torch.from_numpy(rgb)
                    if each is not None:
                        image = each(image)
                        if images is None:
                            images = torch.empty(len(index), *image.shape, dtype=image.dtype)
                    images[slots] = image
                    filled += len(slots)
                    if progress is not None:
                        progress(len(slots))
                if frame.pts is not None and frame.pts >= last:
                    break
    except av.FFmpegError as error:
        raise ValueError(f"video: expected a readable video file, {str(path)!r} is corrupt ({error})") from None
    if filled != len(index):
        raise ValueError(f"video: {str(path)!r} decoded {filled} of the {len(index)} frames its packets promise (corrupt?)")
    return Ingested(**vars(plan), images=images)


def square_crop(landmarks: Float[Tensor, "K 2"], width: int, height: int, scale: float = CROP_SCALE) -> Crop:
    """metrical-tracker's crop: a square ``scale`` times the larger extent of ``landmarks`` (pixels of a ``width``
    x ``height`` frame; rows with NaN are left out), centred on their box, clipped to the frame, then padded
    equally on both sides of its short side back to a square (black beyond the frame).

    >>> crop = square_crop(landmarks, 1080, 1920)  # Crop(left=190, top=600, size=700)
    """
    check_shape("landmarks", landmarks, [None, 2])
    for name, value in (("width", width), ("height", height)):
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
            raise ValueError(f"{name}: expected the frame's {name} in pixels, an integer >= 1, got {value!r}")
    if isinstance(scale, bool) or not isinstance(scale, numbers.Real) or not math.isfinite(scale) or scale <= 0:
        raise ValueError(f"scale: expected a finite positive factor, got {scale!r}")
    points = landmarks.detach().double().cpu()
    points = points[~torch.isnan(points).any(dim=1)]
    if not bool(torch.isfinite(points).all()):
        raise ValueError("landmarks: expected finite pixel coordinates (NaN rows are skipped), found Inf")
    low, high = (points.amin(dim=0), points.amax(dim=0)) if len(points) else (None, None)
    if low is None or float((high - low).max()) <= 0:
        raise ValueError(f"landmarks: expected points spanning some pixels, got {len(points)} with no extent")
    centre, side = (low + high) / 2, scale * float((high - low).max())
    x0, y0 = (round(float(c) - side / 2) for c in centre)
    x1, y1 = (round(float(c) + side / 2) for c in centre)
    x0, x1, y0, y1 = max(x0, 0), min(x1, width), max(y0, 0), min(y1, height)
    if x1 <= x0 or y1 <= y0:
        raise ValueError(f"landmarks: expected a face inside the {width}x{height} frame, its box lies outside")
    size = max(x1 - x0, y1 - y0)
    return Crop(left=x0 - (size - (x1 - x0)) // 2, top=y0 - (size - (y1 - y0)) // 2, size=size)


def crop_frames(images: UInt8[Tensor, "N H W 3"], crop: Crop, size: int = 512) -> UInt8[Tensor, "N S S 3"]:
    """Each frame's ``crop`` (black where it leaves the frame) resized to ``size`` x ``size`` (bilinear with
    antialiasing when shrinking), one frame at a time.

    >>> crop_frames(clip.images, crop, 512).shape  # (N, 512, 512, 3)
    """
    check_shape("images", images, [None, None, None, 3])
    if images.dtype != torch.uint8:
        raise TypeError(f"images: expected uint8 frames, got {images.dtype}")
    if not isinstance(crop, Crop):
        raise TypeError(f"crop: expected a Crop (from square_crop), got {type(crop).__name__}")
    size = _check_output_size(size)
    n, h, w, _ = images.shape
    out = torch.empty(n, size, size, 3, dtype=torch.uint8, device=images.device)
    # The part of the square inside the frame, in frame and in square pixels.
    fx0, fy0 = max(crop.left, 0), max(crop.top, 0)
    fx1, fy1 = min(crop.left + crop.size, w), min(crop.top + crop.size, h)
    for k in range(n):
        square = torch.zeros(crop.size, crop.size, 3, dtype=torch.uint8, device=images.device)
        if fx1 > fx0 and fy1 > fy0:
            square[fy0 - crop.top : fy1 - crop.top, fx0 - crop.left : fx1 - crop.left] = images[k, fy0:fy1, fx0:fx1]
        if crop.size == size:
            out[k] = square
            continue
        out[k] = resize_images(square[None], size, size)[0]
    return out


def resize_images(images: UInt8[Tensor, "N H W 3"], height: int, width: int) -> UInt8[Tensor, "N h w 3"]:
    """uint8 frames resized to ``height`` x ``width``: bilinear, antialiased when shrinking, rounded back to uint8."""
    resized = F.interpolate(
        images.permute(0, 3, 1, 2).float(), size=(height, width), mode="bilinear", align_corners=False, antialias=True
    )
    return resized.permute(0, 2, 3, 1).round().clamp(0, 255).to(torch.uint8)
