"""Data: the INSTA / NeRFace ``transforms.json`` dataset format (one loader for real captures and the synthetic
video) and its writer."""

from .insta import (
    DEFAULT_INTEGER_DEPTH_SCALE,
    SPLITS,
    FrameSet,
    TrackedParams,
    load_insta_dataset,
    save_insta_dataset,
)

__all__ = [
    "DEFAULT_INTEGER_DEPTH_SCALE",
    "SPLITS",
    "FrameSet",
    "TrackedParams",
    "load_insta_dataset",
    "save_insta_dataset",
]
