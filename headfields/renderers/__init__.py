"""Renderers: cameras and rays now; samplers, compositing and the paper renderers follow.

Every ray carries the index of its frame, so one batch can mix rays from many frames (INSTA trains this way).
"""

from .cameras import (
    PinholeCameras,
    PixelSamples,
    Projection,
    Rays,
    focal_from_fov,
    image_pixels,
    image_rays,
    look_at,
    pixel_rays,
    project_points,
    sample_pixels,
)

__all__ = [
    "PinholeCameras",
    "PixelSamples",
    "Projection",
    "Rays",
    "focal_from_fov",
    "image_pixels",
    "image_rays",
    "look_at",
    "pixel_rays",
    "project_points",
    "sample_pixels",
]
