"""Ingest of a phone video: upright frames by the display matrix as FFmpeg's display.h defines it, resampling by
presentation time against a brute-force nearest frame, trims, shrinking, the crop's maps and pixels, bad input."""

from __future__ import annotations

import struct

import av
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from headfields.apps.media import write_video
from headfields.apps.tracking.ingest import Crop, crop_frames, plan_frames, probe_video, read_frames, square_crop

from helpers import raises_naming

COLOURS = np.array([[230, 30, 30], [30, 230, 30], [30, 30, 230], [230, 230, 30]], np.uint8)  # TL, TR, BL, BR


def corner_frame(width: int = 48, height: int = 32, block: int = 8) -> np.ndarray:
    """A grey frame with a coloured block in each corner (red, green, blue, yellow: TL, TR, BL, BR)."""
    frame = np.full((height, width, 3), 128, np.uint8)
    frame[:block, :block], frame[:block, -block:] = COLOURS[0], COLOURS[1]
    frame[-block:, :block], frame[-block:, -block:] = COLOURS[2], COLOURS[3]
    return frame


def shown_by_display_matrix(path, stored: np.ndarray) -> np.ndarray:
    """``stored`` as a player shows it, from the raw display matrix of ``path`` applied as libavutil/display.h
    states: pixel centre (x, y) goes to (a x + c y, b x + d y), then the picture is moved back to the origin."""
    with av.open(str(path)) as container:
        frame = next(container.decode(video=0))
        (side,) = [s for s in frame.side_data if s.type == av.sidedata.sidedata.Type.DISPLAYMATRIX]
    a, b, _, c, d, *_ = (v / 65536 for v in struct.unpack("<9i", bytes(side)))
    h, w = stored.shape[:2]
    ys, xs = np.mgrid[0:h, 0:w] + 0.5
    xd, yd = a * xs + c * ys, b * xs + d * ys
    xd, yd = xd - xd.min(), yd - yd.min()
    out_w, out_h = round(abs(a) * w + abs(c) * h), round(abs(b) * w + abs(d) * h)
    shown = np.zeros((out_h, out_w, 3), np.uint8)
    shown[np.floor(yd).astype(int), np.floor(xd).astype(int)] = stored
    return shown


def grey_frames(count: int, size: int = 16) -> list[np.ndarray]:
    """Frame i is flat grey 16 + 8 i: its index survives H.264 (flat frames decode within +-2)."""
    return [np.full((size, size, 3), 16 + 8 * i, np.uint8) for i in range(count)]


def frame_index(images: torch.Tensor) -> list[int]:
    return [round((float(im.float().mean()) - 16) / 8) for im in images]


# ---------------------------------------------------------------- rotation


@pytest.mark.parametrize("rotation", [0, 90, 180, 270])
def test_frames_come_out_upright(tmp_path, rotation):
    stored = corner_frame()
    path = tmp_path / "phone.mp4"
    write_video(path, [stored] * 3, fps=10, rotation=rotation)
    clip = read_frames(path)
    truth = shown_by_display_matrix(path, stored) if rotation else stored
    assert clip.images.shape == (3, *truth.shape)
    got = clip.images[1].numpy().astype(int)
    for cy, cx in [(2, 2), (2, -3), (-3, 2), (-3, -3)]:  # the middle of each corner block
        assert np.abs(got[cy, cx] - truth[cy, cx]).max() <= 12, (cy, cx, got[cy, cx], truth[cy, cx])
    probe = probe_video(path)
    assert (probe.rotation, probe.width, probe.height) == (rotation, truth.shape[1], truth.shape[0])
    # Checked by hand against ffmpeg 5.1's autorotation (ffmpeg -i phone.mp4 out.png) for 90, 270 and 180.


def test_a_phone_held_upright_turns_its_frames_clockwise(tmp_path):
    # A phone held upright stores landscape sensor frames flagged -90 (ffprobe) = 270 counter-clockwise: the
    # sensor frame's left column is the picture's top row. Written out by hand: red TL goes to TR, blue BL to TL.
    write_video(tmp_path / "portrait.mp4", [corner_frame(48, 32)], fps=10, rotation=270)
    image = read_frames(tmp_path / "portrait.mp4").images[0].numpy().astype(int)
    assert image.shape == (48, 32, 3)
    assert np.abs(image[2, 2] - COLOURS[2]).max() <= 12  # top-left: the stored bottom-left (blue)
    assert np.abs(image[2, -3] - COLOURS[0]).max() <= 12  # top-right: the stored top-left (red)
    assert np.abs(image[-3, -3] - COLOURS[1]).max() <= 12  # bottom-right: the stored top-right (green)


# ---------------------------------------------------------------- time


TIMES = [0.0, 0.03, 0.1, 0.11, 0.25, 0.3, 0.41, 0.47, 0.5, 0.62, 0.7, 0.71, 0.9]


@pytest.fixture(scope="module")
def vfr_clip(tmp_path_factory):
    path = tmp_path_factory.mktemp("vfr") / "vfr.mp4"
    write_video(path, grey_frames(len(TIMES)), fps=30, times=TIMES)
    return path


def test_probe_of_a_variable_rate_clip(vfr_clip):
    probe = probe_video(vfr_clip)
    steps = np.diff(TIMES)
    duration = TIMES[-1] + np.median(steps)  # the last frame lasts the median interval
    assert probe.frames == len(TIMES) and probe.variable_frame_rate
    assert probe.duration == pytest.approx(duration, abs=1e-4)
    assert probe.fps == pytest.approx(len(TIMES) / duration, rel=1e-4)


@pytest.mark.parametrize("fps", [25, 10, 29.97])
def test_probe_of_a_constant_rate_clip(tmp_path, fps):
    write_video(tmp_path / "cfr.mp4", grey_frames(12), fps=fps)
    probe = probe_video(tmp_path / "cfr.mp4")
    assert (probe.frames, probe.width, probe.height, probe.rotation) == (12, 16, 16, 0)
    assert not probe.variable_frame_rate
    assert probe.fps == pytest.approx(fps, rel=1e-4) and probe.duration == pytest.approx(12 / fps, rel=1e-4)


@settings(max_examples=25)
@given(
    fps=st.floats(2.0, 60.0),
    trim_start=st.sampled_from([0.0, 0.05, 0.2, 0.33]),
    trim_end=st.sampled_from([0.0, 0.1, 0.37]),
)
def test_resampling_picks_the_nearest_frame_in_time(vfr_clip, fps, trim_start, trim_end):
    clip = read_frames(vfr_clip, fps=fps, trim_start=trim_start, trim_end=trim_end)
    times = np.array(TIMES)
    end = TIMES[-1] + np.median(np.diff(TIMES)) - trim_end
    targets = trim_start + np.arange(10_000) / fps
    targets = targets[targets < end - 1e-9]
    # Brute force: the written frame nearest each target time, the earlier one on a tie.
    nearest = [int(np.argmin(np.abs(times - t) - 1e-12 * (times < t))) for t in targets]
    assert clip.source_frames.tolist() == nearest
    assert frame_index(clip.images) == nearest  # and the pixels are that frame's
    assert clip.source == probe_video(vfr_clip)  # the stored video, as probe_video finds it, whatever was kept
    np.testing.assert_allclose(clip.times.numpy(), targets, atol=1e-9)
    assert clip.fps == fps


def test_without_a_rate_every_frame_in_the_window_is_kept(vfr_clip):
    clip = read_frames(vfr_clip, trim_start=0.1, trim_end=0.2)
    end = TIMES[-1] + np.median(np.diff(TIMES)) - 0.2
    kept = [i for i, t in enumerate(TIMES) if 0.1 - 1e-6 <= t < end]
    assert clip.source_frames.tolist() == kept and frame_index(clip.images) == kept
    np.testing.assert_allclose(clip.times.numpy(), [TIMES[i] for i in kept], atol=1 / 90_000)


def test_max_size_shrinks_each_frame(tmp_path):
    write_video(tmp_path / "big.mp4", [corner_frame(64, 48, block=16)] * 2, fps=5, rotation=90)
    clip = read_frames(tmp_path / "big.mp4", max_size=16)
    assert clip.images.shape == (2, 16, 12, 3)  # 48 x 64 upright, the longer side to 16
    full = read_frames(tmp_path / "big.mp4")
    # The shrunk frame is the full one, box-averaged 4x4 (corner blocks are 4 px wide at 1/4 scale).
    box = full.images[0].float().reshape(16, 4, 12, 4, 3).mean((1, 3))
    assert (clip.images[0].float() - box)[1:-1, 1:-1].abs().mean() < 6
    assert read_frames(tmp_path / "big.mp4", max_size=100).images.shape == (2, 64, 48, 3)  # never enlarged


def test_each_frame_is_kept_as_each_makes_it(vfr_clip):
    """``each`` sees every kept frame once, upright and in order (a resampled clip's repeated frame once, its result
    in every slot that shows it), and only its results are held; the size is the decoded frames'."""
    clip = read_frames(vfr_clip, fps=40)
    seen = []

    def each(image):
        seen.append(image.clone())
        return image.float().mean((0, 1))

    reduced = read_frames(vfr_clip, fps=40, each=each)
    assert reduced.images.shape == (len(clip.images), 3) and (reduced.width, reduced.height) == (clip.width, clip.height)
    plan = plan_frames(vfr_clip, fps=40)  # the same frames, times and size, from the packets alone
    assert torch.equal(plan.source_frames, clip.source_frames) and torch.equal(plan.times, clip.times)
    assert (plan.fps, plan.source, plan.width, plan.height) == (clip.fps, clip.source, clip.width, clip.height)
    torch.testing.assert_close(reduced.images, clip.images.float().mean((1, 2)))
    distinct = sorted(set(clip.source_frames.tolist()))
    assert len(seen) == len(distinct) < len(clip.images)  # 40 fps from a slower clip: frames repeat
    assert all(torch.equal(s, clip.images[clip.source_frames.tolist().index(i)]) for s, i in zip(seen, distinct, strict=True))


# ---------------------------------------------------------------- crop


def test_square_crop_is_metrical_trackers_box():
    # A face 100 x 60 px centred at (500, 400) of a 1000 x 800 frame: a square of 2.5 x 100 px around it.
    face = torch.tensor([[450.0, 370.0], [550.0, 430.0], [500.0, 400.0]])
    assert square_crop(face, 1000, 800) == Crop(left=375, top=275, size=250)
    # At the left edge: x from -75 clipped to 0 (175 px wide), padded equally both sides back to 250 px.
    assert square_crop(face - torch.tensor([450.0, 0.0]), 1000, 800) == Crop(left=-37, top=275, size=250)
    # NaN rows are skipped.
    assert square_crop(torch.cat([face, torch.full((2, 2), float("nan"))]), 1000, 800) == Crop(375, 275, 250)


@settings(max_examples=40)
@given(
    left=st.integers(-20, 20),
    top=st.integers(-20, 20),
    size=st.integers(4, 40),
    out=st.integers(4, 64),
    # Kept off the far edge by more than rounding: left + 0.9999999999999998 * size rounds onto the edge itself.
    u=st.floats(0, 0.999),
    v=st.floats(0, 0.999),
)
def test_crop_maps_points_in_and_back(left, top, size, out, u, v):
    crop = Crop(left, top, size)
    point = torch.tensor([[left + u * size, top + v * size]], dtype=torch.float64)
    mapped = crop.to_pixels(point, size=out)
    assert bool(((mapped >= 0) & (mapped < out)).all())
    torch.testing.assert_close(crop.from_pixels(mapped, size=out), point)


@settings(max_examples=30)
@given(left=st.integers(-12, 20), top=st.integers(-12, 20), size=st.integers(2, 24), seed=st.integers(0, 2**16))
def test_cropped_pixels_are_the_source_pixels(left, top, size, seed):
    images = torch.randint(0, 256, (2, 20, 26, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))
    crop = Crop(left, top, size)
    out = crop_frames(images, crop, size=size)  # same size: each output pixel is one source pixel
    for row in range(size):
        for col in range(size):
            x, y = crop.from_pixels(torch.tensor([col + 0.5, row + 0.5]), size=size).floor().long().tolist()
            inside = 0 <= x < 26 and 0 <= y < 20
            want = images[:, y, x] if inside else torch.zeros(2, 3, dtype=torch.uint8)
            assert torch.equal(out[:, row, col], want)


def test_resized_crop_of_a_ramp_is_the_ramp_at_the_mapped_point():
    # Bilinear (antialiased) resampling is exact on a linear image: each output pixel holds the ramp's value at its
    # centre mapped back to the frame (interior pixels, whose filter stays inside the frame).
    ys, xs = torch.meshgrid(torch.arange(100.0), torch.arange(120.0), indexing="ij")
    ramp = (xs + 0.5) * 1.5 + (ys + 0.5) * 0.8
    images = ramp.round().clamp(0, 255).to(torch.uint8)[None, ..., None].expand(1, 100, 120, 3).contiguous()
    crop = Crop(10, 5, 90)
    for out in (30, 45, 60, 135):
        got = crop_frames(images, crop, size=out)[0, ..., 0].float()
        rows, cols = torch.meshgrid(torch.arange(out) + 0.5, torch.arange(out) + 0.5, indexing="ij")
        source = crop.from_pixels(torch.stack([cols, rows], -1), size=out)
        want = source[..., 0] * 1.5 + source[..., 1] * 0.8
        inner = slice(3, out - 3)
        assert (got - want)[inner, inner].abs().max() <= 1.0, out


# ---------------------------------------------------------------- bad input


def test_bad_videos(tmp_path):
    with raises_naming("video"):
        read_frames(tmp_path / "missing.mp4")
    (tmp_path / "text.mp4").write_text("not a video")
    with raises_naming("video"):
        probe_video(tmp_path / "text.mp4")
    # A container with a stream and no frame.
    with av.open(str(tmp_path / "empty.mp4"), "w") as container:
        stream = container.add_stream("libx264", rate=10)
        stream.width, stream.height, stream.pix_fmt = 16, 16, "yuv420p"
    with raises_naming("video"):
        read_frames(tmp_path / "empty.mp4")
    # Sound only.
    with av.open(str(tmp_path / "tone.wav"), "w") as container:
        stream = container.add_stream("pcm_s16le", rate=8000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 800), np.int16), format="s16", layout="mono")
        frame.sample_rate = 8000
        container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    with raises_naming("video"):
        probe_video(tmp_path / "tone.wav")
    # The first half of a real video.
    write_video(tmp_path / "whole.mp4", grey_frames(20, size=32), fps=10)
    data = (tmp_path / "whole.mp4").read_bytes()
    (tmp_path / "half.mp4").write_bytes(data[: len(data) // 2])
    try:
        clip = read_frames(tmp_path / "half.mp4")
    except ValueError as error:
        assert str(error).startswith("video:") and "\n" not in str(error)
    else:
        assert len(clip.images) < 20  # FFmpeg read what was there


def test_bad_arguments(tmp_path):
    write_video(tmp_path / "a.mp4", grey_frames(10), fps=10)  # 1 s
    with raises_naming("video"):
        read_frames(tmp_path / "a.mp4", trim_start=0.6, trim_end=0.5)
    with raises_naming("video"):
        read_frames(tmp_path / "a.mp4", fps=25, trim_start=1.0)
    for fps in (0, -5, float("nan"), float("inf")):
        with raises_naming("fps"):
            read_frames(tmp_path / "a.mp4", fps=fps)
    with raises_naming("trim_start"):
        read_frames(tmp_path / "a.mp4", trim_start=-1)
    with raises_naming("trim_end"):
        read_frames(tmp_path / "a.mp4", trim_end=float("nan"))
    with raises_naming("max_size"):
        read_frames(tmp_path / "a.mp4", max_size=0)
    with raises_naming("landmarks"):
        square_crop(torch.full((5, 2), 3.0), 100, 100)  # no extent
    with raises_naming("landmarks"):
        square_crop(torch.tensor([[500.0, 500.0], [520.0, 530.0]]), 100, 100)  # outside the frame
    with raises_naming("width"):
        square_crop(torch.rand(5, 2) * 50, 0, 100)
    with raises_naming("images"):
        crop_frames(torch.zeros(2, 8, 8, 3), Crop(0, 0, 8))
    with raises_naming("size"):
        crop_frames(torch.zeros(2, 8, 8, 3, dtype=torch.uint8), Crop(0, 0, 8), size=0)
