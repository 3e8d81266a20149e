"""Data: the INSTA / NeRFace ``transforms.json`` dataset format (one loader for real captures and the synthetic
video) and its writer, and the synthetic head video generator."""

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
from .synthetic import SyntheticVideoConfig, cached_synthetic_video, make_synthetic_video

__all__ = [
    "BACKGROUND_LABEL",
    "DEFAULT_INTEGER_DEPTH_SCALE",
    "SPLITS",
    "FrameSet",
    "SyntheticVideoConfig",
    "TrackedParams",
    "cached_synthetic_video",
    "load_insta_dataset",
    "make_synthetic_video",
    "save_insta_dataset",
    "write_obj",
]
