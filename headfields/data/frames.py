"""The frame container: :class:`FrameSet`, one split of a dataset (cameras, images and whatever per-frame data
a capture has), and :class:`TrackedParams`, the parametric-model parameters tracked for its frames. What the
readers return, the writer takes and the models train on."""

from __future__ import annotations

import collections
import math
import numbers
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from jaxtyping import Bool, Float, Int, UInt8
from torch import Tensor

from ..cameras import PinholeCameras
from ..checks import check_finite, check_float, check_int, check_shape
from .compositing import composite_images

SPLITS = ("train", "val", "test")
MODEL_TYPES = ("flame", "smplx")
BACKGROUND_LABEL = 0  # the segmentation label of pixels that show no subject
PARAM_KEYS = ("shape", "expression", "pose", "translation")


def check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"split: expected one of {', '.join(SPLITS)}, got {split!r}")


def check_frame_sets(frame_sets: object) -> None:
    """What a writer is given: a non-empty ``{split: FrameSet}`` mapping, each FrameSet of its own split."""
    if not isinstance(frame_sets, Mapping) or not frame_sets:
        raise ValueError(f"frame_sets: expected a non-empty {{split: FrameSet}} mapping, got {frame_sets!r}"[:200])
    for split, fs in frame_sets.items():
        if split not in SPLITS:
            raise ValueError(f"frame_sets: expected splits among {', '.join(SPLITS)}, got {split!r}")
        if not isinstance(fs, FrameSet):
            raise TypeError(f"frame_sets: expected FrameSet values, got {type(fs).__name__} for {split!r}")
        if fs.split != split:
            raise ValueError(f"frame_sets: the FrameSet under {split!r} is of split {fs.split!r}")


@dataclass
class TrackedParams:
    """Tracked parametric-model parameters of N frames (one identity), in headfields' pose convention.

    ``static_offset``: the identity's per-vertex offsets where the tracker fits them (VHAP), added to the rest
    vertices with the shape (:meth:`~headfields.parametric.ParametricModel.with_static_offset`); None: none."""

    shape: Float[Tensor, " S"]
    expression: Float[Tensor, "N E"]
    pose: Float[Tensor, "N J 3"]  # axis-angle per joint, smplx's joint order
    translation: Float[Tensor, "N 3"]
    static_offset: Float[Tensor, "V 3"] | None = None

    def __post_init__(self) -> None:
        n = self.expression.shape[0] if isinstance(self.expression, Tensor) else None
        for name, dims in (("shape", [None]), ("expression", [n, None]), ("pose", [n, None, 3]), ("translation", [n, 3])):
            check_float(name, getattr(self, name), dims)
        if self.static_offset is not None:
            check_float("static_offset", self.static_offset, [None, 3])

    @property
    def num_frames(self) -> int:
        return self.expression.shape[0]

    def to(self, device: torch.device | str) -> TrackedParams:
        offset = None if self.static_offset is None else self.static_offset.to(device)
        return TrackedParams(*(getattr(self, k).to(device) for k in PARAM_KEYS), static_offset=offset)

    def select(self, frames: Int[Tensor, " K"]) -> TrackedParams:
        """The parameters of the given frames, in that order (the shape and static offsets are shared)."""
        return TrackedParams(self.shape, self.expression[frames], self.pose[frames], self.translation[frames], self.static_offset)


@dataclass
class FrameSet:
    """One split of a dataset: N frames with shared intrinsics and whatever per-frame data it has.

    The loader fills ``root`` and ``image_paths``; a FrameSet built in memory for the writer leaves them None. A
    FrameSet loaded without its pixels (``pixels`` False) holds zeros in their place.
    """

    split: str
    cameras: PinholeCameras
    images: UInt8[Tensor, "N H W 3"]
    masks: Bool[Tensor, "N H W"] | None = None  # foreground (the reader: alpha >= ALPHA_THRESHOLD)
    depths: Float[Tensor, "N H W"] | None = None  # metres along the camera z axis, any float dtype; 0 = no depth
    segmentation: UInt8[Tensor, "N H W"] | None = None  # region labels, see segmentation_labels
    expression: Float[Tensor, "N E"] | None = None  # exp_path files or NeRFace's inline lists
    params: TrackedParams | None = None
    mesh_vertices: Float[Tensor, "N V 3"] | None = None  # posed tracked mesh per frame
    mesh_faces: Int[Tensor, "F 3"] | None = None
    model_type: str | None = None  # "flame" | "smplx"
    model_path: Path | None = None  # folder of the model files
    segmentation_labels: dict[str, int] = field(default_factory=dict)
    root: Path | None = None
    image_paths: list[Path] | None = None
    # False: the loader read no pixels (``pixels=False``, for what neither scores nor shows them): images are zeros
    # standing in for them, masks and depths None.
    pixels: bool = True

    def __post_init__(self) -> None:
        if self.split not in SPLITS:
            raise ValueError(f"split: expected one of {', '.join(SPLITS)}, got {self.split!r}")
        if not isinstance(self.cameras, PinholeCameras):
            raise TypeError(f"cameras: expected PinholeCameras, got {type(self.cameras).__name__}")
        n, h, w = self.cameras.num_frames, self.cameras.height, self.cameras.width
        _check_dtype("images", self.images, [n, h, w, 3], torch.uint8)
        if self.masks is not None:
            _check_dtype("masks", self.masks, [n, h, w], torch.bool)
        if self.depths is not None:
            _check_depths(self.depths, [n, h, w])
        if self.segmentation is not None:
            _check_dtype("segmentation", self.segmentation, [n, h, w], torch.uint8)
        if self.expression is not None:
            check_float("expression", self.expression, [n, None])
        if self.params is not None and self.params.num_frames != n:
            raise ValueError(f"params: expected parameters of {n} frames (the cameras'), got {self.params.num_frames}")
        if (self.mesh_vertices is None) != (self.mesh_faces is None):
            raise ValueError("mesh_faces: expected mesh_vertices and mesh_faces together, got only one of them")
        if self.mesh_vertices is not None:
            check_float("mesh_vertices", self.mesh_vertices, [n, None, 3])
            check_int("mesh_faces", self.mesh_faces, [None, 3], upper=self.mesh_vertices.shape[1])
        if self.model_type is not None and self.model_type not in MODEL_TYPES:
            raise ValueError(f"model_type: expected one of {', '.join(MODEL_TYPES)} or None, got {self.model_type!r}")
        if (self.model_type is None) != (self.model_path is None):
            raise ValueError("model_path: expected model_type and model_path together, got only one of them")
        if self.model_path is not None:
            self.model_path = Path(self.model_path)
        for name, label in self.segmentation_labels.items():
            if not isinstance(name, str) or isinstance(label, bool) or not isinstance(label, numbers.Integral):
                raise TypeError(f"segmentation_labels: expected {{region name: integer label}}, got {name!r}: {label!r}")
            if not 0 <= label <= 255:
                raise ValueError(f"segmentation_labels: expected labels in [0, 255], got {name!r}: {label}")
        counts = collections.Counter(self.segmentation_labels.values())
        shared = {label for label, count in counts.items() if count > 1}
        if shared:  # a region weight (INSTA's mouth) would land on every region sharing the label
            names = sorted(n for n, label in self.segmentation_labels.items() if label in shared)
            raise ValueError(f"segmentation_labels: expected one label per region, got {sorted(shared)} shared by {names}")
        if self.image_paths is not None and len(self.image_paths) != n:
            raise ValueError(f"image_paths: expected {n} paths (one per frame), got {len(self.image_paths)}")

    def __len__(self) -> int:
        return self.cameras.num_frames

    @property
    def num_frames(self) -> int:
        return self.cameras.num_frames

    def select(self, frames: Sequence[int] | Int[Tensor, " K"]) -> FrameSet:
        """Frames ``frames`` of this split, in that order: every per-frame field sliced, the shared ones kept."""
        index = torch.as_tensor(frames, dtype=torch.long, device=self.cameras.device).reshape(-1)
        cameras = self.cameras.select(index)  # checks the indices, naming ``frames``

        def pick(x: Tensor | None) -> Tensor | None:
            return None if x is None else x[index.to(x.device)]

        return replace(
            self,
            cameras=cameras,
            images=pick(self.images),
            masks=pick(self.masks),
            depths=pick(self.depths),
            segmentation=pick(self.segmentation),
            expression=pick(self.expression),
            params=None if self.params is None else self.params.select(index.to(self.params.expression.device)),
            mesh_vertices=pick(self.mesh_vertices),
            segmentation_labels=dict(self.segmentation_labels),
            image_paths=None if self.image_paths is None else [self.image_paths[i] for i in index.tolist()],
        )

    def over_background(self, background: tuple[float, float, float]) -> FrameSet:
        """The frames with every pixel outside their masks set to ``background`` (a mask as a binary alpha); the frames
        themselves where they have no masks."""
        if self.masks is None:
            return self
        alphas = self.masks.cpu().numpy().astype(np.uint8) * 255
        images = composite_images(self.images.cpu().numpy(), alphas, background)
        return replace(self, images=torch.from_numpy(images).to(self.images.device))

    def to(self, device: torch.device | str) -> FrameSet:
        """The same frames with every tensor on ``device``."""

        def move(x):
            return None if x is None else x.to(device)

        tensors = ("images", "masks", "depths", "segmentation", "expression", "params", "mesh_vertices", "mesh_faces")
        moved = {name: move(getattr(self, name)) for name in tensors}
        return replace(self, cameras=self.cameras.to(device), segmentation_labels=dict(self.segmentation_labels), **moved)


def _check_depths(depths: Tensor, shape: list[int]) -> None:
    """Finite, non-negative metres, from the least and the largest value (NaN in either): no temporary as large
    as the depths (a 2,000-frame capture's are 2 GB)."""
    check_shape("depths", depths, shape)
    if not depths.is_floating_point():
        raise TypeError(f"depths: expected a floating-point tensor, got {depths.dtype}")
    if depths.numel() == 0:
        return
    lo, hi = (float(v) for v in torch.aminmax(depths))
    if not (math.isfinite(lo) and math.isfinite(hi)):
        check_finite("depths", depths)  # names the first row with a NaN or Inf
    if lo < 0:
        raise ValueError("depths: expected non-negative depths in metres (0 = no depth), got negative values")


def _check_dtype(name: str, x: Tensor, shape: list[int], dtype: torch.dtype) -> None:
    check_shape(name, x, shape)
    if x.dtype != dtype:
        raise TypeError(f"{name}: expected a {dtype} tensor, got {x.dtype}")
