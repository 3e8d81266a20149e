"""Cameras: pinhole cameras for a set of frames (shared intrinsics, one pose per frame), the rays through their
pixels and the projection of points back onto them (:mod:`~headfields.cameras.pinhole`), and camera paths around
a head for novel-view videos, read off a capture's cameras (:mod:`~headfields.cameras.paths`).

Every ray carries the index of its frame, so one batch can mix rays from many frames (INSTA trains this way).
"""

from .paths import CAMERA_PATHS, CameraRig, camera_path, camera_rig, resized_cameras
from .pinhole import (
    PinholeCameras,
    PixelSamples,
    Projection,
    Rays,
    check_rays,
    check_rigid,
    focal_from_fov,
    image_pixels,
    image_rays,
    look_at,
    pixel_rays,
    project_points,
    sample_pixels,
)

__all__ = [
    "CAMERA_PATHS",
    "CameraRig",
    "PinholeCameras",
    "PixelSamples",
    "Projection",
    "Rays",
    "camera_path",
    "camera_rig",
    "check_rays",
    "check_rigid",
    "focal_from_fov",
    "image_pixels",
    "image_rays",
    "look_at",
    "pixel_rays",
    "project_points",
    "resized_cameras",
    "sample_pixels",
]
