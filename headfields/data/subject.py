"""One subject to train on: the training and held-out frames of a capture folder, with the parametric model they
are tracked with. What every example script starts from (the built-in synthetic video's subject:
:func:`headfields.synthetic.synthetic_subject`, which renders the video and reads it with :func:`load_subject`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..checks import check_device
from ..parametric import ParametricModel, load_model
from ..parametric.teeth import FLAME_TEETH_VERTICES
from ..parametric.tracked_meshes import SubjectModel
from ._io import read_json
from .frames import SPLITS, FrameSet
from .insta_reader import load_insta_dataset
from .tracked_mesh_reader import load_tracked_mesh_model
from .trackers import detect_capture_format, load_vhap_dataset


@dataclass
class Subject:
    train: FrameSet
    eval: FrameSet  # the held-out split (the primary one: metrics.json's top-level scores)
    parametric: SubjectModel  # on the requested device
    root: Path  # the dataset folder
    notes: list[str] = field(default_factory=list)  # what the loader inferred (a tracked-mesh subject's regions)
    # The capture's other held-out splits by name (load_subject's all_held_out): GaussianAvatars scores its novel
    # views ("val": held-out cameras of the training timesteps) and self-reenactment ("test": held-out timesteps).
    more_held_out: dict[str, FrameSet] = field(default_factory=dict)

    @property
    def held_out(self) -> dict[str, FrameSet]:
        """Every held-out split loaded, by name: ``eval`` first, then :attr:`more_held_out`."""
        return {self.eval.split: self.eval, **self.more_held_out}


def load_subject(
    data: str | Path,
    model: str | Path | None = None,
    eval_split: str = "test",
    model_type: str = "flame",
    device: str | torch.device | None = None,
    regions: str | Path | None = None,
    background: tuple[float, float, float] = (1.0, 1.0, 1.0),
    allow_outside_root: bool = False,
    pixels: bool = True,
    all_held_out: bool = False,
) -> Subject:
    """The frames of the capture folder ``data`` (INSTA's or VHAP's layout) and the parametric model of the folder
    or file ``model`` (default: the one the dataset names; ``model_type`` where the dataset names no type).

    A capture that names no model and has tracked meshes (INSTA's layout) gets a :class:`TrackedMeshModel` of
    its ``canonical.obj``, with regions from ``regions`` (a region file) or its segmentation; ``notes`` say which.
    A VHAP capture's static offsets (``params.static_offset``) go into the model
    (:meth:`~headfields.parametric.ParametricModel.with_static_offset`), so its posed mesh is the tracker's.
    RGBA images are composited over ``background`` (the models' default white). Every file the capture names
    (its model folder's files too) must resolve inside ``data`` unless ``allow_outside_root``. ``pixels=False``
    reads no image of an INSTA-layout capture (see :func:`load_insta_dataset`): for what neither scores nor shows
    them; a VHAP capture's are read all the same. ``all_held_out``: also every other held-out split the capture has
    frames in (:func:`held_out_splits`), into ``more_held_out``, so that a run scores them all."""
    if eval_split not in SPLITS or eval_split == "train":
        raise ValueError(f"eval_split: expected a held-out split of {[s for s in SPLITS if s != 'train']}, got {eval_split!r}")
    if device is not None:
        device = check_device("device", device)
    if data is None:  # the synthetic video lives a tier above the readers
        raise TypeError("data: expected a capture folder (the synthetic video's: headfields.synthetic.synthetic_subject())")
    root = Path(data)
    more = [s for s in held_out_splits(root) if s != eval_split] if all_held_out else []
    train, held_out, *others, notes = _frames(root, (eval_split, *more), background, allow_outside_root, pixels)
    extra = dict(zip(more, others, strict=True))
    path = model if model is not None else train.model_path
    if path is None and train.params is None and train.mesh_vertices is not None:
        parametric, notes_more = load_tracked_mesh_model(root, train, regions, device, allow_outside_root)
        return Subject(train, held_out, parametric, root, notes + notes_more, extra)
    if path is None:
        raise ValueError(
            f"model: {root} names no parametric model folder and has no tracked meshes; give the {model_type} model folder"
        )
    sizes = {}
    if train.params is not None:  # as many directions as the tracker fitted (IMavatar: 100 shape, 50 expression)
        sizes = dict(num_shape=train.params.shape.shape[0], num_expression=train.params.expression.shape[1])
    parametric = load_model(path, train.model_type or model_type, device=device, **sizes)
    if train.params is not None and train.params.static_offset is not None:
        parametric, notes_more = _with_static_offset(parametric, train.params.static_offset, root)
        notes = notes + notes_more
    return Subject(train, held_out, parametric, root, notes, extra)


def held_out_splits(data: str | Path) -> list[str]:
    """The held-out splits ("val", "test") the capture folder ``data`` has frames in, by its transforms files
    (``transforms_{split}.json`` with frames, or a single ``transforms.json`` listing ``{split}_filenames``), read
    without loading a frame. VHAP writes both (``val``: novel views, ``test``: self-reenactment), and an empty
    ``val`` for one camera.

        held_out_splits("export/UNION10_EMO1")  # ["val", "test"]
    """
    root = Path(data)
    combined = root / "transforms.json"
    found = []
    for split in (s for s in SPLITS if s != "train"):
        path = root / f"transforms_{split}.json"
        if path.is_file():
            listed = _json_key(path, "frames")
        elif combined.is_file():
            listed = _json_key(combined, f"{split}_filenames")
        else:
            continue
        if isinstance(listed, list) and listed:
            found.append(split)
    return found


def _json_key(path: Path, key: str) -> object:
    """``key`` of the JSON object in ``path`` (None where it has none); a file that is not JSON is named."""
    data = read_json(path, "transforms file")
    return data.get(key) if isinstance(data, dict) else None


def _with_static_offset(parametric: ParametricModel, offset: torch.Tensor, root: Path) -> tuple[ParametricModel, list[str]]:
    """``parametric`` with the capture's static offsets, and what was left out: VHAP tracks with its teeth, whose
    rows follow FLAME's, so a model without them takes the first rows."""
    rows, v = offset.shape[0], parametric.num_vertices
    if rows not in (v, v + FLAME_TEETH_VERTICES):
        raise ValueError(
            f"data: {root}'s static_offset has {rows} rows; expected the model's {v} vertices (or {v + FLAME_TEETH_VERTICES} "
            "with VHAP's teeth): was it tracked with another model?"
        )
    notes = ["VHAP's static offsets (static_offset) added to the model's rest vertices, as VHAP's FLAME adds them"]
    if rows > v:
        notes.append(
            f"static_offset: the last {FLAME_TEETH_VERTICES} rows, VHAP's teeth, left out of the subject's model (it has "
            "none; the Gaussian avatar, which adds the teeth to FLAME, takes them)"
        )
    return parametric.with_static_offset(offset[:v]), notes


def _frames(
    root: Path, held_out: tuple[str, ...], background: tuple[float, float, float], allow_outside_root: bool, pixels: bool
) -> tuple:
    """The training frames of the capture in ``root``, those of each split of ``held_out``, in whichever format a
    tracker wrote it (:func:`~headfields.data.trackers.detect_capture_format`), and what the reader left out."""
    fmt = detect_capture_format(root)
    if fmt == "insta":
        train = load_insta_dataset(root, "train", allow_outside_root, background=background, pixels=pixels)
        labels = train.segmentation_labels or None  # the held-out splits' codes must mean the same
        others = [
            load_insta_dataset(root, s, allow_outside_root, segmentation_labels=labels, background=background, pixels=pixels)
            for s in held_out
        ]
        return train, *others, []
    if fmt == "imavatar":
        raise ValueError(
            f"data: {root} is an IMavatar / PointAvatar capture, whose splits are sequence folders named in its "
            "config: read them with headfields.data.trackers.load_imavatar_dataset(root, split, sequences=[...])"
        )
    notes = [
        f"{fmt} capture: dynamic_offset not applied, as in VHAP's exported meshes and GaussianAvatars",
        "images: the pixels outside the foreground masks (fg_mask_path) set to the background",
    ]
    frames = [load_vhap_dataset(root, s).over_background(background) for s in ("train", *held_out)]
    return *frames, notes
