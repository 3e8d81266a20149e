"""A run's fingerprint and a capture's static offsets (VHAP's, carried by the subject's model since): their own
entry, so a checkpoint made before them still loads, and one made with other offsets is refused by name."""

from pathlib import Path

import pytest
import torch

from headfields.cameras import PinholeCameras
from headfields.data import FrameSet
from headfields.data.frames import TrackedParams
from headfields.parametric import ParametricModel
from headfields.training import AvatarModel, TrainingConfig
from headfields.training.checkpoints import CheckpointError, check_fingerprint, run_fingerprint

from model_files import flame_arrays


def frames() -> FrameSet:
    cameras = PinholeCameras(4.0, 4.0, 2.0, 2.0, 4, 4, torch.eye(4).expand(2, 4, 4).clone())
    params = TrackedParams(torch.zeros(4), torch.zeros(2, 3), torch.zeros(2, 5, 3), torch.zeros(2, 3))
    return FrameSet("train", cameras, torch.zeros(2, 4, 4, 3, dtype=torch.uint8), params=params)


def avatar(parametric: ParametricModel) -> AvatarModel:
    model = AvatarModel()
    model.parametric = parametric
    return model


def test_static_offsets_have_their_own_entry():
    flame = ParametricModel(flame_arrays(1), num_shape=4, num_expression=3)
    offset = torch.full((flame.num_vertices, 3), 1e-3)
    plain = run_fingerprint(avatar(flame), frames(), TrainingConfig())
    moved = run_fingerprint(avatar(flame.with_static_offset(offset)), frames(), TrainingConfig())
    assert plain["model files"] == moved["model files"] and plain["static offsets"] == "none" != moved["static offsets"]
    before = {k: v for k, v in plain.items() if k != "static offsets"}  # a checkpoint from before the entry
    check_fingerprint(Path("checkpoint.pt"), before, moved)
    check_fingerprint(Path("checkpoint.pt"), moved, moved)
    with pytest.raises(CheckpointError, match="static offsets differ"):
        check_fingerprint(Path("checkpoint.pt"), plain, moved)
    other = run_fingerprint(avatar(flame.with_static_offset(2 * offset)), frames(), TrainingConfig())
    with pytest.raises(CheckpointError, match="static offsets differ"):
        check_fingerprint(Path("checkpoint.pt"), other, moved)
