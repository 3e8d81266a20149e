"""Data: the frame container (:class:`FrameSet`), the reader and writer of the INSTA / NeRFace ``transforms.json``
dataset format (one loader for real captures and the synthetic video), the reader and writer of VHAP's exported
captures, the reader of IMavatar's, a capture's tracked meshes as its model (no model files needed),
:func:`load_subject`, which gives an example script its frames and model, and 3D scans for a head prior
(:class:`ScanSet`, :func:`sample_scans`, :func:`read_scan_folder`). ``python -m headfields inspect CAPTURE`` checks a
capture. The synthetic video itself, and its subject (``synthetic_subject``), are in ``headfields.synthetic``."""

from ._io import write_obj
from .capture_cache import clear_capture_cache
from .detected_landmarks import LANDMARKS_FOLDER, load_detected_landmarks, save_detected_landmarks
from .frames import BACKGROUND_LABEL, SPLITS, FrameSet, TrackedParams
from .imavatar_reader import load_imavatar_dataset
from .insta_reader import composited_over, load_insta_dataset
from .insta_writer import DEFAULT_INTEGER_DEPTH_SCALE, save_insta_dataset
from .labels import INSTA_FACE_PARSING, LABEL_PRESETS, detect_label_preset
from .scans import ScanSamples, ScanSet, read_scan_folder, sample_scans
from .subject import Subject, held_out_splits, load_subject
from .tracked_mesh_reader import load_tracked_mesh_model, read_region_file, regions_from_segmentation
from .trackers import detect_capture_format, load_tracker_dataset
from .vhap_reader import load_vhap_dataset
from .vhap_writer import save_vhap_dataset

__all__ = [
    "LANDMARKS_FOLDER",
    "clear_capture_cache",
    "BACKGROUND_LABEL",
    "DEFAULT_INTEGER_DEPTH_SCALE",
    "SPLITS",
    "Subject",
    "FrameSet",
    "INSTA_FACE_PARSING",
    "LABEL_PRESETS",
    "ScanSamples",
    "ScanSet",
    "TrackedParams",
    "composited_over",
    "detect_label_preset",
    "detect_capture_format",
    "held_out_splits",
    "load_imavatar_dataset",
    "load_detected_landmarks",
    "load_insta_dataset",
    "load_subject",
    "load_tracked_mesh_model",
    "load_tracker_dataset",
    "load_vhap_dataset",
    "read_region_file",
    "read_scan_folder",
    "regions_from_segmentation",
    "sample_scans",
    "save_detected_landmarks",
    "save_insta_dataset",
    "save_vhap_dataset",
    "write_obj",
]
