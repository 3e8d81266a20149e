"""mp4 videos with PyAV: H.264 (libx264) in yuv420p, the format every browser and player plays.

Frames stream to the encoder one at a time, so a long render never holds more than the frame it is writing, into a
hidden temporary file beside the video that is renamed over it when the writer closes
(:class:`headfields.outputs.PendingFile`): an interrupted or failed render leaves the previous video, or none,
never a part of one::

    from headfields.apps.media import VideoWriter, read_video, video_info

    with VideoWriter("orbit.mp4", fps=25) as video:
        for i in range(cameras.num_frames):
            video.write(render(cameras.select(torch.tensor([i]))))  # float [H, W, 3] in [0, 1], or uint8
    assert video_info("orbit.mp4").frames == cameras.num_frames
    frames = read_video("orbit.mp4")  # uint8 [N, H, W, 3]

Colour: frames are sRGB; they are converted to BT.709 limited-range YCbCr and the stream is tagged so (BT.709
primaries and matrix, sRGB transfer), which is what players assume for rendered content. yuv420p keeps one
chroma sample per 2x2 pixels, so width and height must be even: an odd size raises a ValueError (pick an even
render size; padding would make the video's size differ from the frames'). The subsampling also bounds the PSNR
at edges between strongly different colours, whatever the quality setting (see :data:`DEFAULT_CRF`).

Phone clips, for tests of a tracker's ingest: ``rotation`` writes a display matrix (the flag a phone sets on its
landscape sensor frames when held upright; ffprobe shows it as the stream's ``rotation``), and ``write(frame,
time=...)`` gives each frame its own presentation time (a variable-frame-rate clip)::

    with VideoWriter("portrait.mp4", fps=30, rotation=270) as video:  # shown turned 90 degrees clockwise
        for t, frame in zip([0.0, 0.031, 0.07], sensor_frames):
            video.write(frame, time=t)
"""

from __future__ import annotations

import contextlib
import math
import numbers
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from types import TracebackType

import av
import numpy as np
import torch
from av.video.reformatter import ColorPrimaries, ColorRange, Colorspace, ColorTrc, Interpolation
from jaxtyping import Float, UInt8
from torch import Tensor

from ..outputs import PendingFile

__all__ = [
    "DEFAULT_CRF",
    "TIMED_TIME_BASE",
    "VideoInfo",
    "VideoWriter",
    "read_video",
    "video_frames",
    "video_info",
    "write_video",
]

# x264's constant rate factor (0 = lossless luma, 51 = worst; lower = better and larger). Measured on a 128x128
# rendered-looking frame (a shaded skin-coloured head with sharp hair and silhouette edges on a gradient
# background, tests/unit/apps/test_media.py): CRF 14 -> 42.0 dB, 16 -> 41.4 dB, 18 -> 40.8 dB, 23 -> 38.7 dB; the 4:2:0
# chroma subsampling alone caps that frame at 45.2 dB; CRF 10 -> 42.6 dB at ~0.7 kB a frame. On a trained avatar's
# replay of its held-out frames (the demo run: 50 frames at 96 px, 33.87 dB against the capture as rendered), the
# decoded video scores 33.24 dB at CRF 16, 33.49 at 12, 33.60 at 8, 33.67 at 0 (4:2:0 alone): 10 keeps a video's
# PSNR within 0.3 dB of its renders' at ~0.6 kB a frame.
DEFAULT_CRF = 10

# swscale's chroma filtering and rounding: bicubic with full-resolution chroma and accurate rounding lifts the
# 4:2:0 round trip of the test frame from 41.9 dB (its default, bilinear) to 45.2 dB, for a negligible cost.
_SCALE = Interpolation.BICUBIC | Interpolation.ACCURATE_RND | Interpolation.FULL_CHR_H_INT | Interpolation.FULL_CHR_H_INP

# The clock of a clip written with explicit frame times: MPEG's 90 kHz, the time base phones and ffmpeg use for
# variable-frame-rate video (a time is rounded to 1/90000 s).
TIMED_TIME_BASE = Fraction(1, 90_000)


@dataclass(frozen=True)
class VideoInfo:
    frames: int
    width: int
    height: int
    fps: float


def _check_path(path: str | Path) -> Path:
    if not isinstance(path, (str, Path)):
        raise TypeError(f"path: expected a str or pathlib.Path ending in .mp4, got {type(path).__name__}")
    path = Path(path)
    if path.suffix.lower() != ".mp4":
        raise ValueError(f"path: expected a file name ending in .mp4 (H.264 in an mp4 container), got {str(path)!r}")
    if not path.parent.is_dir():
        raise ValueError(f"path: expected a file in an existing folder, {str(path.parent)!r} is not a folder")
    return path


def _check_fps(fps: float | Fraction) -> Fraction:
    if isinstance(fps, bool) or not isinstance(fps, numbers.Real) or not math.isfinite(fps) or not fps > 0:
        raise ValueError(f"fps: expected a finite positive frame rate, got {fps!r}")
    # The mp4 time base is a ratio of integers: 29.97 becomes 2997/100 exactly.
    return Fraction(fps).limit_denominator(1_000_000)


def _check_quality(quality: float) -> float:
    if isinstance(quality, bool) or not isinstance(quality, numbers.Real) or not 0 <= quality <= 51:
        raise ValueError(f"quality: expected x264's CRF, a number in [0, 51] (lower is better), got {quality!r}")
    return float(quality)


def _check_size(name: str, value: int | None) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 2:
        raise ValueError(f"{name}: expected an integer number of pixels >= 2, or None, got {value!r}")
    if value % 2:
        raise ValueError(f"{name}: expected an even number of pixels (yuv420p keeps one chroma sample per 2x2), got {value}")
    return int(value)


def _check_rotation(rotation: int) -> int:
    if isinstance(rotation, bool) or not isinstance(rotation, numbers.Integral) or rotation % 90:
        raise ValueError(
            f"rotation: expected a multiple of 90 degrees (counter-clockwise, as ffprobe shows it), got {rotation!r}"
        )
    return int(rotation) % 360


def _check_time(time: float, previous: int | None) -> int:
    """``time`` in seconds as a pts of :data:`TIMED_TIME_BASE`, after ``previous`` (the last frame's pts)."""
    if isinstance(time, bool) or not isinstance(time, numbers.Real) or not math.isfinite(time) or time < 0:
        raise ValueError(f"time: expected a finite presentation time in seconds >= 0, got {time!r}")
    pts = round(Fraction(time) / TIMED_TIME_BASE)
    if previous is not None and pts <= previous:
        raise ValueError(
            f"time: expected times that increase by at least 1/90000 s, got {time!r} after {float(previous * TIMED_TIME_BASE)!r}"
        )
    return pts


def _frame_uint8(frame: Tensor | np.ndarray) -> np.ndarray:
    """``frame`` [H, W, 3] (float in [0, 1], clamped, or uint8) as a contiguous uint8 numpy array."""
    if isinstance(frame, np.ndarray):
        frame = torch.from_numpy(np.ascontiguousarray(frame) if frame.flags.writeable else frame.copy())
    if not isinstance(frame, Tensor):
        raise TypeError(f"frame: expected a torch.Tensor or numpy array [H, W, 3], got {type(frame).__name__}")
    if frame.dim() != 3 or frame.shape[2] != 3:
        raise ValueError(f"frame: expected an RGB image of shape [H, W, 3], got {list(frame.shape)}")
    if frame.dtype == torch.uint8:
        out = frame
    elif frame.is_floating_point():
        if not bool(torch.isfinite(frame).all()):
            raise ValueError("frame: expected finite values in [0, 1], found NaN or Inf")
        # Quantise on the frame's device (a quarter of the bytes to copy off a GPU); values a renderer puts just
        # outside [0, 1] are clamped, as an image writer does.
        out = (frame.detach().clamp(0, 1) * 255 + 0.5).to(torch.uint8)
    else:
        raise TypeError(f"frame: expected a floating-point image in [0, 1] or uint8, got {frame.dtype}")
    return np.ascontiguousarray(out.cpu().numpy())


class VideoWriter:
    """An mp4 written one frame at a time (a context manager; :meth:`close` flushes the encoder).

    ``fps`` frames per second (a positive number; 29.97 is kept exact as 2997/100); ``width`` and ``height``
    fix the size up front (even numbers), else the first frame fixes it and a frame of another size raises;
    ``quality`` is x264's CRF (lower = better, larger file; see :data:`DEFAULT_CRF`). Each frame is encoded and
    its packets written to the file as it arrives: the writer keeps no frames (the encoder's own look-ahead
    holds a bounded few dozen).

    ``rotation`` (degrees counter-clockwise, a multiple of 90) is stored as the stream's display matrix: players
    show the written frames turned by it, as they show a phone's portrait clip (a phone held upright stores
    landscape frames with rotation 270, i.e. turned 90 degrees clockwise; ffprobe prints -90). Frames are written
    as given, unrotated. Giving the first :meth:`write` a ``time`` makes every frame carry its own presentation
    time (seconds, increasing), on a 90 kHz clock: a variable-frame-rate clip whose nominal rate is ``fps``.

    >>> with VideoWriter(tmp / "ramp.mp4", fps=10) as video:
    ...     for t in torch.linspace(0, 1, 20):
    ...         video.write(torch.full((64, 64, 3), float(t)))
    """

    def __init__(
        self,
        path: str | Path,
        fps: float = 25,
        width: int | None = None,
        height: int | None = None,
        quality: float = DEFAULT_CRF,
        rotation: int = 0,
    ) -> None:
        self.path = _check_path(path)
        self.fps = _check_fps(fps)
        self.width = _check_size("width", width)
        self.height = _check_size("height", height)
        self.quality = _check_quality(quality)
        self.rotation = _check_rotation(rotation)
        if self.rotation and not hasattr(av.video.stream.VideoStream, "set_display_rotation"):
            raise ValueError(
                f"rotation: a display matrix needs PyAV's VideoStream.set_display_rotation (18.1 has it), not in {av.__version__}"
            )
        self.frames_written = 0
        self._timed: bool | None = None  # set by the first frame: True when frames carry their own times
        self._last_pts: int | None = None
        # Opened at the first frame, once the size is known: an mp4 with no frame is never left behind.
        self._pending: PendingFile | None = None  # the file being written, renamed over path when closed
        self._container: av.container.OutputContainer | None = None
        self._stream: av.video.stream.VideoStream | None = None
        self._closed = False

    def _open(self) -> None:
        self._pending = PendingFile(self.path, "path")
        try:
            container = av.open(str(self._pending.temporary), mode="w", options={"movflags": "+faststart"})  # index first
        except BaseException:
            self._pending.discard()
            raise
        stream = container.add_stream("libx264", rate=self.fps)
        stream.width, stream.height, stream.pix_fmt = self.width, self.height, "yuv420p"
        stream.options = {"crf": f"{self.quality:g}"}
        if self._timed:
            stream.codec_context.time_base = stream.time_base = TIMED_TIME_BASE
        if self.rotation:
            # PyAV takes degrees counter-clockwise, the angle VideoFrame.rotation and ffprobe read back.
            stream.set_display_rotation(self.rotation)
        cc = stream.codec_context
        cc.colorspace, cc.color_primaries, cc.color_trc = Colorspace.ITU709, ColorPrimaries.BT709, ColorTrc.IEC61966_2_1
        cc.color_range = ColorRange.MPEG
        self._container, self._stream = container, stream

    def write(self, frame: Float[Tensor, "H W 3"] | UInt8[Tensor, "H W 3"] | np.ndarray, time: float | None = None) -> None:
        """Encode one frame: float [H, W, 3] in [0, 1] (tensor on any device, or numpy), or uint8; ``time``: its
        presentation time in seconds, for every frame or for none (then frame k shows at k / fps)."""
        if self._closed:
            raise ValueError(f"frame: the writer of {str(self.path)!r} is closed, it takes no more frames")
        if self._timed is not None and self._timed != (time is not None):
            raise ValueError(f"time: expected a time for every frame or for none; frame {self.frames_written} breaks the rule")
        pts = _check_time(time, self._last_pts) if time is not None else self.frames_written  # in units of 1 / fps
        image = _frame_uint8(frame)
        h, w = image.shape[:2]
        if self._stream is None:
            for name, want, got in (("width", self.width, w), ("height", self.height, h)):
                if want is not None and want != got:
                    raise ValueError(f"frame: expected {name} {want} (the writer's {name}), got a frame of {got}")
            if w % 2 or h % 2:
                raise ValueError(
                    f"frame: expected an even width and height (yuv420p keeps one chroma sample per 2x2 pixels), "
                    f"got {w}x{h}; render at an even size"
                )
            self.width, self.height = w, h
            self._timed = time is not None
            self._open()
        elif (w, h) != (self.width, self.height):
            raise ValueError(
                f"frame: expected {self.width}x{self.height} (the video's size, fixed by its first frame), got {w}x{h}"
            )
        rgb = av.VideoFrame.from_ndarray(image, format="rgb24")
        yuv = rgb.reformat(
            format="yuv420p", dst_colorspace=Colorspace.ITU709, dst_color_range=ColorRange.MPEG, interpolation=_SCALE
        )
        yuv.pts = pts  # in units of the stream's time base: 1 / fps, or TIMED_TIME_BASE
        self._container.mux(self._stream.encode(yuv))
        self._last_pts = pts
        self.frames_written += 1

    def close(self) -> None:
        """Flush the encoder, finish the file and put it at ``path``; a second call does nothing. Closing a writer
        that got no frame raises (there is no video to write)."""
        if self._closed:
            return
        self._closed = True
        if self._container is None:
            raise ValueError(f"frames: expected at least one frame, none was written to {str(self.path)!r}")
        try:
            self._container.mux(self._stream.encode(None))  # the frames still in x264's look-ahead
            self._container.close()
        except BaseException:
            self.discard()
            raise
        self._container = self._stream = None
        self._pending.commit()

    def discard(self) -> None:
        """Stop without writing the video: ``path`` keeps what it held before (or stays absent)."""
        self._closed = True
        if self._container is not None:
            with contextlib.suppress(Exception):  # the error that brought us here is the one to report
                self._container.close()
            self._container = self._stream = None
        if self._pending is not None:
            self._pending.discard()

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None) -> None:
        if kind is None:
            self.close()
            return
        self.discard()  # an error or an interrupt in the body: no part of a video at path


def write_video(
    path: str | Path,
    frames: Iterable[Float[Tensor, "H W 3"] | UInt8[Tensor, "H W 3"] | np.ndarray] | Tensor | np.ndarray,
    fps: float = 25,
    quality: float = DEFAULT_CRF,
    rotation: int = 0,
    times: Sequence[float] | None = None,
) -> None:
    """Write every frame of ``frames`` (an iterable of [H, W, 3] images, or one [N, H, W, 3] tensor) to ``path``;
    a generator streams as :class:`VideoWriter` does. ``rotation`` and ``times`` (one per frame, seconds): see
    :class:`VideoWriter`.

    >>> write_video(tmp / "flash.mp4", torch.rand(8, 32, 32, 3), fps=8)
    >>> write_video(tmp / "phone.mp4", torch.rand(3, 32, 48, 3), rotation=270, times=[0, 0.04, 0.07])
    """
    if isinstance(frames, (Tensor, np.ndarray)) and frames.ndim != 4:
        raise ValueError(f"frames: expected a stack of images [N, H, W, 3] or an iterable of [H, W, 3], got {list(frames.shape)}")
    times = None if times is None else list(times)
    with VideoWriter(path, fps=fps, quality=quality, rotation=rotation) as video:
        for k, frame in enumerate(frames):
            if times is not None and k >= len(times):
                raise ValueError(f"times: expected one time per frame, got {len(times)} for more frames")
            video.write(frame, None if times is None else times[k])
        if times is not None and video.frames_written != len(times):
            raise ValueError(f"times: expected one time per frame, got {len(times)} for {video.frames_written} frames")


def _open_video(path: str | Path) -> av.container.InputContainer:
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"path: expected an existing video file, {str(path)!r} is not a file")
    container = av.open(str(path))
    if not container.streams.video:
        container.close()
        raise ValueError(f"path: expected a file with a video stream, {str(path)!r} has none")
    return container


def video_frames(path: str | Path) -> Iterator[UInt8[Tensor, "H W 3"]]:
    """The frames of the first video stream of ``path``, decoded to RGB one at a time (uint8 [H, W, 3], on the CPU):
    a long video is never held whole.

    >>> for frame in video_frames(tmp / "flash.mp4"): ...
    """
    with _open_video(path) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        for frame in container.decode(stream):
            # The same chroma filter the writer used (its colour matrix and range come from the stream's tags).
            yield torch.from_numpy(frame.to_ndarray(format="rgb24", interpolation=_SCALE))


def read_video(path: str | Path) -> UInt8[Tensor, "N H W 3"]:
    """Every frame of the first video stream of ``path``, decoded to RGB (uint8 [N, H, W, 3], on the CPU).

    >>> frames = read_video(tmp / "flash.mp4")  # frames.shape == (8, 32, 32, 3)
    """
    frames = list(video_frames(path))
    if not frames:
        info = video_info(path)
        return torch.zeros(0, info.height, info.width, 3, dtype=torch.uint8)
    return torch.stack(frames)


def video_info(path: str | Path) -> VideoInfo:
    """Frame count, size and frame rate of the first video stream of ``path`` (from the container, no decoding
    unless it lacks a frame count).

    >>> video_info(tmp / "flash.mp4")  # VideoInfo(frames=8, width=32, height=32, fps=8.0)
    """
    with _open_video(path) as container:
        stream = container.streams.video[0]
        frames = stream.frames or sum(1 for packet in container.demux(stream) if packet.size)
        rate = stream.average_rate or stream.guessed_rate
        return VideoInfo(frames=frames, width=stream.codec_context.width, height=stream.codec_context.height, fps=float(rate))
