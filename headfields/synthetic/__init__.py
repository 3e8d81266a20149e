"""Synthetic ground truth for tests, demos and benchmarks, kept apart from the primitives: small FLAME and SMPL-X
model files in the official formats (:func:`write_synthetic_flame`, :func:`write_synthetic_smplx`) and a tracked
head video rendered from them in the INSTA format (:func:`make_synthetic_video`, cached by
:func:`cached_synthetic_video`; its subject to train on: :func:`synthetic_subject`), also as a real INSTA capture
with no model files (:func:`write_insta_capture`).
The video can add what a tracked template lacks: a hair volume (:class:`HairVolume`, :class:`HairVolumeConfig`)
and glasses (:func:`glasses_mesh`), with labels of their own (:data:`HAIR_VOLUME_LABEL`, :data:`GLASSES_LABEL`).
For a parametric head prior: identities with detail FLAME lacks (:class:`SyntheticIdentity`,
:func:`personal_detail`, :func:`personal_model`), a registered scan set of them (:func:`synthetic_scan_set`) and
a video of one it never saw (``SyntheticVideoConfig(identity=...)``, :func:`nphm_held_out_video`; its true meshes
by :func:`load_ground_truth`), a person unlike any in the set (:data:`OUT_OF_RANGE_DETAIL`), and a capture whose
tracked pose and landmarks carry a tracker's errors (:func:`noisy_tracking`, :class:`TrackingNoise`). For a face
tracker: a model's own head seen as a detector sees a face (:func:`model_views`, :func:`views_resolution`). For
the 360-degree portrait's tracker: one person's static turn and dynamic video (:func:`portrait_person`) and the
personal template they should give (:func:`load_template_truth`).

It builds on ``headfields.data`` and ``headfields.parametric``; neither imports it."""

from .glasses import GLASSES_LABEL, glasses_mesh
from .hair import HAIR_VOLUME_LABEL, HairVolume, HairVolumeConfig, VolumeComposite
from .identities import PersonalDetailConfig, SyntheticIdentity, load_ground_truth, personal_detail, personal_model
from .insta_capture import subdivide, write_insta_capture
from .model_files import (
    REGION_NAMES,
    SMPLX_REGION_NAMES,
    SYNTHETIC_EXPRESSIONS,
    SYNTHETIC_SHAPES,
    write_synthetic_flame,
    write_synthetic_smplx,
)
from .model_views import model_views, views_resolution
from .scan_set import OUT_OF_RANGE_DETAIL, ScanSetConfig, anchor_vertices, nphm_held_out_video, synthetic_scan_set
from .template_truth import load_template_truth
from .tracking_noise import LANDMARKS_FOLDER, TrackingNoise, noisy_tracking
from .video import cached_synthetic_video, make_synthetic_video, synthetic_subject
from .video_config import SyntheticVideoConfig, portrait_person

__all__ = [
    "model_views",
    "views_resolution",
    "GLASSES_LABEL",
    "HAIR_VOLUME_LABEL",
    "HairVolume",
    "HairVolumeConfig",
    "LANDMARKS_FOLDER",
    "OUT_OF_RANGE_DETAIL",
    "PersonalDetailConfig",
    "REGION_NAMES",
    "SMPLX_REGION_NAMES",
    "SYNTHETIC_EXPRESSIONS",
    "SYNTHETIC_SHAPES",
    "ScanSetConfig",
    "SyntheticIdentity",
    "SyntheticVideoConfig",
    "TrackingNoise",
    "VolumeComposite",
    "anchor_vertices",
    "cached_synthetic_video",
    "glasses_mesh",
    "load_ground_truth",
    "load_template_truth",
    "make_synthetic_video",
    "nphm_held_out_video",
    "noisy_tracking",
    "personal_detail",
    "personal_model",
    "portrait_person",
    "subdivide",
    "synthetic_scan_set",
    "synthetic_subject",
    "write_synthetic_flame",
    "write_insta_capture",
    "write_synthetic_smplx",
]
