"""The video tracker: a video of a face turned into a capture every FLAME model trains on, on the CPU. One job a
module: ``ingest`` (decode upright at a fixed rate, one square crop), ``mediapipe`` and ``model_files`` (MediaPipe's
face mesh and selfie mask on LiteRT, their files from the mediapipe==0.10.21 wheel), ``landmark_files`` (a user's own
detector's points), ``correspondence`` (MediaPipe's mesh as iBUG-68 points), ``smoothing`` (the track over time),
``mouth`` (lip and mouth-interior labels), ``avatar_refinement`` (each frame's head turn refitted through an avatar of the
video), ``embedding`` (MediaPipe's points on a model's surface, derived from frames
whose meshes are known), ``staging`` (a run's work folder and its result put in place whole), ``video_tracker`` (the
stages end to end, resumable), ``template_tracker`` (a turn's video into a personal template, the same way) and
``accuracy`` (a tracking against the truth, where it is known). The FLAME fit itself is
:func:`headfields.fitting.track_landmarks`, the turn's :func:`headfields.fitting.track_turn`.

    from headfields.apps.tracking import track_video

    root = track_video("clip.mp4", "captures/me")  # python -m headfields track clip.mp4 --out captures/me
"""

from .accuracy import TrackingAccuracy, capture_tracking, face_region, tracking_accuracy
from .avatar_refinement import AvatarRefinementConfig, refine_tracking
from .correspondence import MEDIAPIPE_FOR_IBUG, mediapipe_to_ibug
from .embedding import derive_mediapipe_embedding, read_embedding, save_embedding
from .ingest import Crop, FramePlan, Ingested, VideoProbe, crop_frames, plan_frames, probe_video, read_frames, square_crop
from .landmark_files import LandmarkTrack, read_landmark_files
from .mediapipe import FaceLandmarker, FaceLandmarks, SelfieSegmenter
from .model_files import install_mediapipe_models, mediapipe_folder, mediapipe_model
from .mouth import MouthRegions, mouth_regions
from .smoothing import smooth_track
from .template_tracker import TemplateTrackerConfig, load_template, track_template
from .video_tracker import VideoTrackerConfig, track_video, tracked_capture

__all__ = [
    "MEDIAPIPE_FOR_IBUG",
    "AvatarRefinementConfig",
    "Crop",
    "FaceLandmarker",
    "FaceLandmarks",
    "FramePlan",
    "Ingested",
    "LandmarkTrack",
    "MouthRegions",
    "SelfieSegmenter",
    "TemplateTrackerConfig",
    "TrackingAccuracy",
    "VideoProbe",
    "VideoTrackerConfig",
    "capture_tracking",
    "crop_frames",
    "derive_mediapipe_embedding",
    "face_region",
    "install_mediapipe_models",
    "mediapipe_folder",
    "mediapipe_model",
    "mediapipe_to_ibug",
    "mouth_regions",
    "probe_video",
    "read_embedding",
    "plan_frames",
    "read_frames",
    "read_landmark_files",
    "refine_tracking",
    "save_embedding",
    "load_template",
    "smooth_track",
    "square_crop",
    "track_template",
    "track_video",
    "tracked_capture",
    "tracking_accuracy",
]
