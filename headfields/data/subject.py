"""One subject to train on: the training and held-out frames of an INSTA-format capture, or of the built-in
synthetic video, with the parametric model they are tracked with. What every example script starts from."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from ..parametric import load_model
from ..parametric.model import ParametricModel
from ..parametric.tracked_meshes import TrackedMeshModel
from .frames import SPLITS, FrameSet
from .insta_reader import load_insta_dataset
from .tracked_meshes import load_tracked_mesh_model

if TYPE_CHECKING:  # headfields.synthetic imports this package: load_subject imports it when it renders the video
    from ..synthetic import SyntheticVideoConfig


@dataclass
class Subject:
    train: FrameSet
    eval: FrameSet  # the held-out split
    parametric: ParametricModel | TrackedMeshModel  # on the requested device
    root: Path  # the dataset folder
    notes: list[str] = field(default_factory=list)  # what the loader inferred (a tracked-mesh subject's regions)


def load_subject(
    data: str | Path | None = None,
    model: str | Path | None = None,
    eval_split: str = "test",
    video: SyntheticVideoConfig | None = None,
    model_type: str = "flame",
    device: str | torch.device | None = None,
    regions: str | Path | None = None,
    background: tuple[float, float, float] = (1.0, 1.0, 1.0),
) -> Subject:
    """The frames of the INSTA-format folder ``data`` (default: the synthetic video of ``video``, rendered once
    and cached) and the parametric model of the folder or file ``model`` (default: the one the dataset names;
    ``model_type`` where the dataset names no type).

    A capture that names no model and has tracked meshes (INSTA's layout) gets a :class:`TrackedMeshModel` of
    its ``canonical.obj``, with regions from ``regions`` (a region file) or its segmentation; ``notes`` say which.
    RGBA images are composited over ``background`` (the models' default white)."""
    if eval_split not in SPLITS or eval_split == "train":
        raise ValueError(f"eval_split: expected a held-out split of {[s for s in SPLITS if s != 'train']}, got {eval_split!r}")
    if data is None:
        from ..synthetic import cached_synthetic_video

        data = cached_synthetic_video(video)
    root = Path(data)
    train = load_insta_dataset(root, "train", background=background)
    held_out = load_insta_dataset(root, eval_split, segmentation_labels=train.segmentation_labels or None, background=background)
    path = model if model is not None else train.model_path
    if path is None and train.params is None and train.mesh_vertices is not None:
        parametric, notes = load_tracked_mesh_model(root, train, regions, device)
        return Subject(train=train, eval=held_out, parametric=parametric, root=root, notes=notes)
    if path is None:
        raise ValueError(
            f"model: {root} names no parametric model folder and has no tracked meshes; give the {model_type} model folder"
        )
    parametric = load_model(path, train.model_type or model_type, device=device)
    return Subject(train=train, eval=held_out, parametric=parametric, root=root)
