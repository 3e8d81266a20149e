"""Landmark files: the points written are the points read (both formats, .npy and .txt, numbered and unnumbered
names), frames without a face are missing, empty or NaN files, and each bad file is named in one line."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from headfields.apps.tracking.landmark_files import read_landmark_files


def random_points(n: int, k: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0, 1000, (n, k, 2))


def raises_on(name: str):
    """A one-line ValueError/TypeError that starts with ``name``."""
    return pytest.raises((ValueError, TypeError), match=rf"^{name}:[^\n]*$")


@pytest.mark.parametrize("k, layout", [(68, "ibug68"), (468, "mediapipe"), (478, "mediapipe")])
def test_numbered_files_with_missing_and_empty_frames(tmp_path, k, layout):
    truth = random_points(6, k)
    np.save(tmp_path / "00000.npy", truth[0])
    np.savetxt(tmp_path / "00001.txt", np.c_[truth[1], np.ones(k)])  # a confidence column, ignored
    # 00002: no file (no face)
    (tmp_path / "00003.txt").write_text("")  # empty: no face
    np.save(tmp_path / "00004.npy", np.full((k, 3), np.nan))  # all NaN: no face
    np.save(tmp_path / "00005.npy", truth[5].astype(np.float32))
    (tmp_path / "notes.md").write_text("other files are ignored")
    track = read_landmark_files(tmp_path, num_frames=7)  # frame 6: past the last file, no face
    assert track.layout == layout and track.points.shape == (7, k, 2) and track.points.dtype == torch.float32
    assert track.found.tolist() == [True, True, False, False, False, True, False]
    for i in (0, 1, 5):
        np.testing.assert_allclose(track.points[i].numpy(), truth[i], rtol=1e-6)
    assert bool(track.points[~track.found].isnan().all())


def test_numbers_sort_numerically_and_may_start_at_one(tmp_path):
    truth = random_points(12, 68)
    for i in range(12):
        np.save(tmp_path / f"frame_{i + 1}.npy", truth[i])  # frame_10 sorts before frame_2 by name
    track = read_landmark_files(tmp_path, num_frames=12, first_number=1)
    np.testing.assert_allclose(track.points.numpy(), truth, rtol=1e-6)
    with raises_on("frame_12.npy"):  # counted from 0, frame_12 is past the 12 frames
        read_landmark_files(tmp_path, num_frames=12)


def test_unnumbered_names_one_per_frame_in_name_order(tmp_path):
    truth = random_points(3, 68)
    for name, points in zip(["a.txt", "b.npy", "c.txt"], truth, strict=True):
        (np.save if name.endswith(".npy") else np.savetxt)(tmp_path / name, points)
    track = read_landmark_files(tmp_path, num_frames=3)
    np.testing.assert_allclose(track.points.numpy(), truth, rtol=1e-6)
    with raises_on("a.txt"):
        read_landmark_files(tmp_path, num_frames=4)


def test_one_array_for_the_video(tmp_path):
    truth = np.concatenate([random_points(4, 478), np.zeros((4, 478, 1))], axis=2)
    truth[2] = np.nan
    np.save(tmp_path / "landmarks.npy", truth)
    for source in (tmp_path, tmp_path / "landmarks.npy"):
        track = read_landmark_files(source, num_frames=4)
        assert track.layout == "mediapipe" and track.found.tolist() == [True, True, False, True]
        np.testing.assert_allclose(track.points[[0, 1, 3]].numpy(), truth[[0, 1, 3], :, :2], rtol=1e-6)
    with raises_on("landmarks.npy"):
        read_landmark_files(tmp_path, num_frames=5)  # the count differs from the video's


def test_bad_files_are_named(tmp_path):
    good = random_points(1, 68)[0]

    def folder(name: str, **files) -> str:
        path = tmp_path / name
        path.mkdir()
        np.save(path / "00000.npy", good)
        for file, content in files.items():
            file = file.replace("_", ".")
            if isinstance(content, bytes):
                (path / file).write_bytes(content)
            elif isinstance(content, str):
                (path / file).write_text(content)
            else:
                np.save(path / file, content)
        return path

    with raises_on("00001.npy"):  # not an npy
        read_landmark_files(folder("corrupt", **{"00001_npy": b"\x93NUMPY garbage"}), 2)
    with raises_on("00001.txt"):  # not numbers
        read_landmark_files(folder("text", **{"00001_txt": "1 2\nthree 4\n"}), 2)
    with raises_on("00001.npy"):  # wrong K
        read_landmark_files(folder("k", **{"00001_npy": np.zeros((67, 2))}), 2)
    with raises_on("00001.npy"):  # wrong columns
        read_landmark_files(folder("cols", **{"00001_npy": np.zeros((68, 4))}), 2)
    with raises_on("00001.npy"):  # mixed K across files
        read_landmark_files(folder("mixed", **{"00001_npy": np.zeros((468, 2))}), 2)
    partial = good.copy()
    partial[5, 1] = np.nan
    with raises_on("00001.npy"):  # NaN in some points only
        read_landmark_files(folder("nan", **{"00001_npy": partial}), 2)
    partial[5, 1] = np.inf
    with raises_on("00001.npy"):
        read_landmark_files(folder("inf", **{"00001_npy": partial}), 2)
    with raises_on("00005.npy"):  # past the video's frames
        read_landmark_files(folder("count", **{"00005_npy": good}), 2)
    with raises_on("00000.txt"):  # two files for one frame
        read_landmark_files(folder("twice", **{"00000_txt": "1 2\n"}), 2)
    with raises_on("folder"):
        read_landmark_files(tmp_path / "missing", 2)
    (tmp_path / "empty").mkdir()
    with raises_on("folder"):
        read_landmark_files(tmp_path / "empty", 2)
    with raises_on("num_frames"):
        read_landmark_files(folder("n", **{}), 0)
