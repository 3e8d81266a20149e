"""One subject to train on: the training and held-out frames of an INSTA-format capture, or of the built-in
synthetic video, with the parametric model they are tracked with. What every example script starts from."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from ..parametric import load_model
from ..parametric.model import ParametricModel
from .frames import SPLITS, FrameSet
from .insta_reader import load_insta_dataset

if TYPE_CHECKING:  # headfields.synthetic imports this package: load_subject imports it when it renders the video
    from ..synthetic import SyntheticVideoConfig


@dataclass
class Subject:
    train: FrameSet
    eval: FrameSet  # the held-out split
    parametric: ParametricModel  # on the requested device
    root: Path  # the dataset folder


def load_subject(
    data: str | Path | None = None,
    model: str | Path | None = None,
    eval_split: str = "test",
    video: SyntheticVideoConfig | None = None,
    model_type: str = "flame",
    device: str | torch.device | None = None,
) -> Subject:
    """The frames of the INSTA-format folder ``data`` (default: the synthetic video of ``video``, rendered once
    and cached) and the parametric model of the folder or file ``model`` (default: the one the dataset names;
    ``model_type`` where the dataset names no type)."""
    if eval_split not in SPLITS or eval_split == "train":
        raise ValueError(f"eval_split: expected a held-out split of {[s for s in SPLITS if s != 'train']}, got {eval_split!r}")
    if data is None:
        from ..synthetic import cached_synthetic_video

        data = cached_synthetic_video(video)
    root = Path(data)
    train = load_insta_dataset(root, "train")
    held_out = load_insta_dataset(root, eval_split)
    path = model if model is not None else train.model_path
    if path is None:
        raise ValueError(f"model: {root} names no parametric model folder; give the {model_type} model folder")
    parametric = load_model(path, train.model_type or model_type, device=device)
    return Subject(train=train, eval=held_out, parametric=parametric, root=root)
