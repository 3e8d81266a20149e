"""Data: the INSTA / NeRFace ``transforms.json`` dataset format (one loader for real captures and the synthetic
video) and its writer, the synthetic head video generator, and :func:`load_subject`, which gives an example script its
frames and parametric model."""

from ._io import write_obj
from .insta import (
    BACKGROUND_LABEL,
    DEFAULT_INTEGER_DEPTH_SCALE,
    SPLITS,
    FrameSet,
    TrackedParams,
    load_insta_dataset,
    save_insta_dataset,
)
from .subject import Subject, load_subject
from .synthetic import SyntheticVideoConfig, cached_synthetic_video, make_synthetic_video

__all__ = [
    "BACKGROUND_LABEL",
    "DEFAULT_INTEGER_DEPTH_SCALE",
    "SPLITS",
    "Subject",
    "FrameSet",
    "SyntheticVideoConfig",
    "TrackedParams",
    "cached_synthetic_video",
    "load_insta_dataset",
    "load_subject",
    "make_synthetic_video",
    "save_insta_dataset",
    "write_obj",
]
