"""A capture's detected landmarks: written and read back as they were, NaN (not found) kept, bad files refused."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from headfields.data import LANDMARKS_FOLDER, load_detected_landmarks, save_detected_landmarks

from helpers import raises_naming


def test_landmarks_read_back_as_written(tmp_path):
    points = torch.rand(5, 68, 2) * 512
    points[2] = float("nan")  # a frame without a face
    points[:, :17] = float("nan")  # the jaw contour a detector does not give
    path = save_detected_landmarks(tmp_path / LANDMARKS_FOLDER, "val", points)
    assert path == tmp_path / LANDMARKS_FOLDER / "val.npy"
    torch.testing.assert_close(load_detected_landmarks(tmp_path / LANDMARKS_FOLDER, "val"), points, equal_nan=True)


def test_bad_landmarks_are_refused_by_name(tmp_path):
    with raises_naming("points"):
        save_detected_landmarks(tmp_path, "train", torch.full((2, 68, 2), float("inf")))
    with raises_naming("points"):
        save_detected_landmarks(tmp_path, "train", torch.zeros(2, 68, 3))
    with raises_naming("split"):
        save_detected_landmarks(tmp_path, "training", torch.zeros(2, 68, 2))
    assert not (tmp_path / "train.npy").exists()  # nothing written by a refusal
    with pytest.raises(FileNotFoundError, match="no test.npy"):
        load_detected_landmarks(tmp_path, "test")
    np.save(tmp_path / "train.npy", np.zeros((2, 68), dtype=np.float32))
    with raises_naming("landmarks"):
        load_detected_landmarks(tmp_path, "train")
    np.save(tmp_path / "train.npy", np.full((2, 68, 2), np.inf, dtype=np.float32))
    with raises_naming("landmarks"):
        load_detected_landmarks(tmp_path, "train")
    (tmp_path / "train.npy").write_bytes(b"not an array")
    with raises_naming("landmarks"):
        load_detected_landmarks(tmp_path, "train")
