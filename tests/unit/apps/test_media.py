"""mp4 videos: frames written and read back (count, size, fps, order), the quality of the default CRF measured
with numpy's PSNR on a rendered-looking frame, streaming, and bad input."""

from __future__ import annotations

import gc
import weakref
from fractions import Fraction

import numpy as np
import pytest
import torch

from headfields.apps.media import DEFAULT_CRF, VideoWriter, read_video, video_info, write_video

from helpers import raises_naming


def psnr(truth: np.ndarray, decoded: np.ndarray) -> float:
    """Peak signal-to-noise ratio in dB of two uint8 images, in float64 (the independent truth)."""
    mse = np.mean((truth.astype(np.float64) - decoded.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else float(10 * np.log10(255.0**2 / mse))


def rendered(k: int = 0, size: int = 128) -> np.ndarray:
    """A rendered-looking uint8 frame: a shaded, skin-coloured head with a sharp silhouette and a dark hairline on a
    soft gradient background; ``k`` moves the head sideways."""
    y, x = (np.mgrid[0:size, 0:size] + 0.5) / size * 2 - 1
    background = np.stack([0.25 + 0.1 * (y + 1), 0.3 + 0.05 * (x + 1), np.full_like(x, 0.4)], -1)
    cx = -0.1 + 0.02 * k
    r2 = (x - cx) ** 2 + (y / 1.2) ** 2
    inside = r2 < 0.55**2
    nz = np.sqrt(np.clip(1 - r2 / 0.55**2, 0, 1))
    shade = np.clip(0.2 + 0.8 * (0.5 * nz - 0.4 * (x - cx) / 0.55 - 0.5 * y / 0.66).clip(0), 0, 1)
    image = np.where(inside[..., None], np.array([0.85, 0.62, 0.5]) * (0.3 + 0.7 * shade[..., None]), background)
    hair = inside & (y < -0.25 + 0.1 * np.sin(6 * x))
    image[hair] = np.array([0.2, 0.13, 0.08]) * (0.6 + 0.4 * shade[hair, None])
    return (np.clip(image, 0, 1) * 255 + 0.5).astype(np.uint8)


def square_frames(count: int, size: int = 64, square: int = 8) -> list[np.ndarray]:
    """Dark frames with a bright square at a different place in each (left to right, then down)."""
    frames = []
    for i in range(count):
        frame = np.full((size, size, 3), 20, np.uint8)
        row, col = divmod(i, size // square)
        frame[row * square : (row + 1) * square, col * square : (col + 1) * square] = 235
        frames.append(frame)
    return frames


def square_position(frame: np.ndarray, square: int = 8) -> tuple[int, int]:
    """The (row, col) cell of the brightest square-sized block of a decoded frame."""
    h, w = frame.shape[:2]
    blocks = frame.astype(np.float64).mean(-1).reshape(h // square, square, w // square, square).mean((1, 3))
    return divmod(int(blocks.argmax()), w // square)


# ---------------------------------------------------------------- round trip


def test_default_quality_keeps_40_db(tmp_path):
    frames = [rendered(k) for k in range(12)]
    path = tmp_path / "head.mp4"
    write_video(path, frames)
    decoded = read_video(path)
    assert decoded.dtype == torch.uint8 and decoded.shape == (12, 128, 128, 3)
    scores = [psnr(truth, got) for truth, got in zip(frames, decoded.numpy(), strict=True)]
    # Measured: 42.6 dB at the default CRF 10, 41.4 dB at 16 (the 4:2:0 round trip alone: 45.2 dB).
    assert min(scores) >= 40.0, scores
    # Lower CRF is better quality: a coarse setting loses more.
    write_video(tmp_path / "coarse.mp4", frames, quality=35)
    coarse = read_video(tmp_path / "coarse.mp4").numpy()
    assert np.mean([psnr(t, g) for t, g in zip(frames, coarse, strict=True)]) < np.mean(scores) - 3
    assert DEFAULT_CRF == 10


@pytest.mark.parametrize("fps", [25, 10, 29.97])
def test_count_size_fps_and_order(tmp_path, fps):
    frames = square_frames(40, size=64)
    path = tmp_path / "squares.mp4"
    with VideoWriter(path, fps=fps) as video:
        for frame in frames:
            video.write(torch.from_numpy(frame).float() / 255)  # float [0, 1] input
    info = video_info(path)
    assert (info.frames, info.width, info.height) == (40, 64, 64)
    assert info.fps == pytest.approx(float(Fraction(fps).limit_denominator(1000)), rel=1e-6)
    decoded = read_video(path).numpy()
    assert decoded.shape == (40, 64, 64, 3)
    # Every frame keeps its own square, in order: none dropped, repeated or reordered (B-frames decode in order).
    assert [square_position(f) for f in decoded] == [square_position(f) for f in frames]
    assert all(psnr(t, g) >= 40 for t, g in zip(frames, decoded, strict=True))


def test_write_video_takes_a_stack_and_uint8_and_numpy(tmp_path):
    stack = torch.from_numpy(np.stack([rendered(k, 32) for k in range(5)]))  # uint8 [N, H, W, 3]
    write_video(tmp_path / "stack.mp4", stack, fps=5)
    write_video(tmp_path / "numpy.mp4", (f.numpy().astype(np.float32) / 255 for f in stack), fps=5)  # a generator
    for name in ("stack.mp4", "numpy.mp4"):
        assert video_info(tmp_path / name).frames == 5
        decoded = read_video(tmp_path / name).numpy()
        assert min(psnr(t, g) for t, g in zip(stack.numpy(), decoded, strict=True)) >= 35  # 32 px: mostly edges


def test_float_frames_are_clamped_and_rounded(tmp_path):
    grey = torch.full((16, 16, 3), 0.5)
    over = grey.clone()
    over[:8] = 1.7  # a renderer's overshoot is clamped to white, as an image writer does
    write_video(tmp_path / "clamp.mp4", [grey, over], fps=2)
    decoded = read_video(tmp_path / "clamp.mp4").numpy().astype(int)
    assert np.abs(decoded[0] - 128).max() <= 2
    assert np.abs(decoded[1, :6] - 255).max() <= 3


def test_device_frames(tmp_path, device):
    frames = [torch.from_numpy(rendered(k, 32)).to(device).float() / 255 for k in range(3)]
    write_video(tmp_path / "device.mp4", frames, fps=3)
    assert video_info(tmp_path / "device.mp4").frames == 3


def test_colour_tags_for_players(tmp_path):
    import av

    write_video(tmp_path / "tags.mp4", [rendered(0, 32)], fps=1)
    with av.open(str(tmp_path / "tags.mp4")) as container:
        cc = container.streams.video[0].codec_context
        # H.264 4:2:0 8-bit, BT.709 matrix and primaries, sRGB transfer, limited range: what browsers play.
        assert (cc.name, cc.pix_fmt) == ("h264", "yuv420p")
        assert (int(cc.colorspace), int(cc.color_primaries), int(cc.color_trc), int(cc.color_range)) == (1, 1, 13, 1)


# ---------------------------------------------------------------- streaming


def test_writer_streams_without_keeping_frames(tmp_path):
    path = tmp_path / "long.mp4"
    count, size = 200, 64
    alive = []
    frame_bytes = size * size * 3
    with VideoWriter(path, fps=25) as video:
        for i in range(count):
            frame = torch.from_numpy(square_frames(i + 1, size)[i]).float() / 255
            video.write(frame)
            alive.append(weakref.ref(frame))
            del frame
            if i == 150:
                # Packets reach the file as frames arrive (x264 holds a bounded look-ahead, a few dozen frames).
                (pending,) = tmp_path.glob(".long.*.tmp.mp4")  # the video being written, renamed over path when closed
                assert pending.stat().st_size > 0
        gc.collect()
        # The writer holds no reference to a frame it was given ...
        assert all(ref() is None for ref in alive)
        # ... nor any copy: the arrays and tensors reachable from it amount to less than one frame.
        held = 0
        seen, todo = set(), [video]
        while todo:
            obj = todo.pop()
            if id(obj) in seen or isinstance(obj, type):
                continue
            seen.add(id(obj))
            if isinstance(obj, np.ndarray):
                held += obj.nbytes
            elif isinstance(obj, torch.Tensor):
                held += obj.numel() * obj.element_size()
            elif isinstance(obj, (bytes, bytearray)):
                held += len(obj)
            if isinstance(obj, (VideoWriter, dict, list, tuple, set)):
                todo.extend(gc.get_referents(obj))
        assert held < frame_bytes
        assert video.frames_written == count
    assert video_info(path).frames == count


def test_close_is_idempotent_and_write_after_close_raises(tmp_path):
    video = VideoWriter(tmp_path / "once.mp4", fps=5)
    video.write(rendered(0, 16))
    video.close()
    video.close()
    with raises_naming("frame"):
        video.write(rendered(0, 16))
    assert video_info(tmp_path / "once.mp4").frames == 1


def test_an_error_in_the_body_leaves_the_previous_video_and_no_part_of_the_new_one(tmp_path):
    path = tmp_path / "video.mp4"
    write_video(path, np.stack([rendered(k, 16) for k in range(3)]), fps=5)
    before = path.read_bytes()
    with pytest.raises(RuntimeError, match="render failed"):
        with VideoWriter(path, fps=5) as video:
            video.write(rendered(0, 16))
            raise RuntimeError("render failed")
    assert path.read_bytes() == before  # the complete earlier video, untouched
    assert video_info(path).frames == 3
    with pytest.raises(KeyboardInterrupt):
        with VideoWriter(tmp_path / "interrupted.mp4", fps=5) as video:
            video.write(rendered(0, 16))
            raise KeyboardInterrupt  # Ctrl-C mid-render: nothing at the name
    with pytest.raises(RuntimeError, match="before any frame"):
        with VideoWriter(tmp_path / "empty.mp4", fps=5):
            raise RuntimeError("before any frame")  # not masked by the writer's own "no frames" error
    assert sorted(p.name for p in tmp_path.iterdir()) == ["video.mp4"]  # no temporary file either


def test_a_video_appears_at_its_name_only_when_closed(tmp_path):
    path = tmp_path / "video.mp4"
    with VideoWriter(path, fps=5) as video:
        for k in range(2):
            video.write(rendered(k, 16))
            assert not path.exists()
        (pending,) = [p for p in tmp_path.iterdir() if p.name.startswith(".video.")]
        assert pending.suffix == ".mp4"  # being written beside it, hidden
    assert video_info(path).frames == 2 and sorted(p.name for p in tmp_path.iterdir()) == ["video.mp4"]


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize("fps", [0, -5, float("nan"), float("inf"), True, "25"])
def test_bad_fps(tmp_path, fps):
    with raises_naming("fps"):
        VideoWriter(tmp_path / "a.mp4", fps=fps)


@pytest.mark.parametrize("name", ["a.avi", "a.MP4.gif", "a", "a.mkv"])
def test_bad_path_suffix(tmp_path, name):
    with raises_naming("path"):
        VideoWriter(tmp_path / name)
    with raises_naming("path"):
        write_video(tmp_path / name, [rendered(0, 16)])


def test_missing_folder_and_missing_file(tmp_path):
    with raises_naming("path"):
        VideoWriter(tmp_path / "no" / "such" / "a.mp4")
    with raises_naming("path"):
        read_video(tmp_path / "missing.mp4")
    with raises_naming("path"):
        video_info(tmp_path / "missing.mp4")


@pytest.mark.parametrize("quality", [-1, 52, float("nan"), None])
def test_bad_quality(tmp_path, quality):
    with raises_naming("quality"):
        VideoWriter(tmp_path / "a.mp4", quality=quality)


@pytest.mark.parametrize(
    "frame",
    [
        np.zeros((16, 16, 4), np.uint8),  # RGBA
        np.zeros((16, 16), np.uint8),  # grey
        np.zeros((1, 16, 16, 3), np.float32),  # a batch
        np.zeros((3, 16, 16), np.float32),  # channels first
        np.zeros((16, 16, 3), np.int64),  # not float, not uint8
    ],
)
def test_bad_frames(tmp_path, frame):
    with raises_naming("frame"):
        with VideoWriter(tmp_path / "a.mp4") as video:
            video.write(frame)


def test_nan_frame(tmp_path):
    frame = torch.full((16, 16, 3), 0.5)
    frame[3, 4, 1] = float("nan")
    with pytest.raises(ValueError, match="^frame:.*NaN"):
        with VideoWriter(tmp_path / "a.mp4") as video:
            video.write(frame)


def test_odd_size_raises_naming_the_size(tmp_path):
    with pytest.raises(ValueError, match=r"^frame:.*even.*15x16"):
        with VideoWriter(tmp_path / "a.mp4") as video:
            video.write(np.zeros((16, 15, 3), np.uint8))
    with pytest.raises(ValueError, match=r"^width:.*even.*15"):
        VideoWriter(tmp_path / "a.mp4", width=15)
    with raises_naming("height"):
        VideoWriter(tmp_path / "a.mp4", height=0)


def test_frame_of_another_size_raises(tmp_path):
    with pytest.raises(ValueError, match=r"^frame: expected 16x16.*got 32x16"):
        with VideoWriter(tmp_path / "a.mp4") as video:
            video.write(np.zeros((16, 16, 3), np.uint8))
            video.write(np.zeros((16, 32, 3), np.uint8))
    with pytest.raises(ValueError, match=r"^frame: expected width 32"):
        with VideoWriter(tmp_path / "b.mp4", width=32, height=16) as video:
            video.write(np.zeros((16, 16, 3), np.uint8))


def test_no_frames_raises(tmp_path):
    with raises_naming("frames"):
        write_video(tmp_path / "a.mp4", [])
    with raises_naming("frames"):
        write_video(tmp_path / "a.mp4", torch.zeros(16, 16, 3))  # one image, not a stack


# ---------------------------------------------------------------- phone clips: rotation flag, frame times


def display_matrix(path) -> np.ndarray:
    """The raw display matrix of the first frame of ``path`` (FFmpeg's 9 int32, 16.16 fixed point), as floats."""
    import struct

    import av

    with av.open(str(path)) as container:
        frame = next(container.decode(video=0))
        (side,) = [s for s in frame.side_data if s.type == av.sidedata.sidedata.Type.DISPLAYMATRIX]
        values = np.array(struct.unpack("<9i", bytes(side)), np.float64).reshape(3, 3)
        return values[:2, :2] / 65536.0, frame.rotation


@pytest.mark.parametrize("rotation", [90, 180, 270, -90])
def test_rotation_is_written_as_a_display_matrix(tmp_path, rotation):
    write_video(tmp_path / "phone.mp4", [rendered(0, 32)[:, :16]], fps=5, rotation=rotation)
    matrix, read = display_matrix(tmp_path / "phone.mp4")
    # FFmpeg's libavutil/display.h: a point (x, y) is shown at (a x + c y, b x + d y), matrix rows (a b), (c d).
    # A counter-clockwise turn by theta in image coordinates (y down) maps the right-pointing x axis to (cos, -sin).
    theta = np.radians(rotation)
    np.testing.assert_allclose(matrix, [[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]], atol=1e-4)
    assert read % 360 == rotation % 360  # PyAV's own reading (av_display_rotation_get), counter-clockwise
    # Checked by hand with ffprobe 5.1 (Debian's ffmpeg): rotation=90 shows as "rotation=90"; ffmpeg's autorotation
    # then shows the frame turned counter-clockwise (its top-right corner at the top-left).


def test_no_rotation_writes_no_display_matrix(tmp_path):
    import av

    write_video(tmp_path / "plain.mp4", [rendered(0, 16)], fps=5)
    with av.open(str(tmp_path / "plain.mp4")) as container:
        frame = next(container.decode(video=0))
        assert not [s for s in frame.side_data if s.type == av.sidedata.sidedata.Type.DISPLAYMATRIX]
        assert frame.rotation == 0


def test_frame_times_make_a_variable_rate_clip(tmp_path):
    import av

    times = [0.0, 0.033, 0.1, 0.11, 0.25, 0.3001, 0.41]
    frames = square_frames(len(times), size=32)
    write_video(tmp_path / "vfr.mp4", frames, fps=30, times=times)
    with av.open(str(tmp_path / "vfr.mp4")) as container:
        decoded = [(float(f.time), f.to_ndarray(format="rgb24")) for f in container.decode(video=0)]
    # Each frame shows at its time (to the 90 kHz clock) with its own content, in order.
    np.testing.assert_allclose([t for t, _ in decoded], times, atol=1 / 90_000)
    assert [square_position(f) for _, f in decoded] == [square_position(f) for f in frames]


@pytest.mark.parametrize("rotation", [45, 90.0, True, "90"])
def test_bad_rotation(tmp_path, rotation):
    with raises_naming("rotation"):
        VideoWriter(tmp_path / "a.mp4", rotation=rotation)


def test_bad_times(tmp_path):
    frame = rendered(0, 16)
    for times in ([0.0, 0.0], [0.1, 0.05], [0.0, float("nan")], [-1.0, 0.0]):
        with raises_naming("time"):
            with VideoWriter(tmp_path / "a.mp4") as video:
                for t in times:
                    video.write(frame, time=t)
    with raises_naming("time"):  # times for some frames only
        with VideoWriter(tmp_path / "a.mp4") as video:
            video.write(frame, time=0.0)
            video.write(frame)
    with raises_naming("times"):
        write_video(tmp_path / "a.mp4", [frame, frame], times=[0.0])
    with raises_naming("times"):
        write_video(tmp_path / "a.mp4", [frame], times=[0.0, 0.1])
    assert not list(tmp_path.iterdir())
