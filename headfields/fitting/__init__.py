"""Fitting: the optimisation beside the training loop, whatever the model: trackings, which fit a few quantities beside
frozen networks to frames, and fits that draw their own batches (a prior on scans). One job a module: ``stages``
(staged Adam over named parameter groups, its schedules), ``pose`` (a tracked head pose with a fitted correction),
``preimages`` (canonical points carried into posed space by root finding), ``pixels`` (the frames' pixel pools,
MonoNPHM's silhouette term), ``silhouette`` (masks as distances to their edges: a surface's points fitted into them
without a renderer), ``mask_template`` (a personal template's shape and offsets from a turn's masks),
``rigid_motion`` (a turning body's rigid poses: projection, yaw, the landmark start and the turn through
the back), ``turn_tracking`` (a static turn's poses from its landmarks and masks, and its template),
``template_appearance`` (the template's colours, and which points a camera sees), ``template_tracking`` (a dynamic
video tracked against the template), ``landmarks`` (the landmark
term), ``steps`` (optimiser steps under a budget with decaying rates), ``landmark_tracking`` (a parametric head fitted
to a video's 2D landmarks: the video tracker's fit, :mod:`headfields.apps.tracking`) and ``photometric_term`` (its
last stage: the frames' pixels against the face's colours).

MonoNPHM's tracking (:mod:`headfields.models.mononphm`) and the hyper NeuS avatar's
(:mod:`headfields.models.hyper_neus_tracking`) are built from them, and MonoNPHM's prior trains with ``steps``; what
is specific to a model stays with it.
"""

from .landmark_config import TRUSTED_LANDMARKS
from .landmark_tracking import LandmarkFit, LandmarkTrackingConfig, SurfaceLandmarks, phone_focal, track_landmarks
from .landmarks import detected_landmarks, landmark_error
from .mask_template import MaskTemplateConfig, PersonalTemplate, fit_mask_template
from .photometric_term import PhotometricTerm, face_region
from .pixels import FramePixels, soft_jaccard
from .pose import corrected_pose
from .preimages import ROOT_TOLERANCE, PosedPoints, posed_points
from .silhouette import MaskDistances
from .stages import Schedule, check_schedule, frozen, run_stage, scheduled
from .steps import StepHistory, decayed_steps
from .template_appearance import VertexColours, vertex_colours
from .template_tracking import TemplateTrack, TemplateTrackingConfig, track_with_template
from .turn_tracking import TurnFit, TurnTrackingConfig, track_turn

__all__ = [
    "ROOT_TOLERANCE",
    "TRUSTED_LANDMARKS",
    "FramePixels",
    "LandmarkFit",
    "LandmarkTrackingConfig",
    "MaskDistances",
    "MaskTemplateConfig",
    "PersonalTemplate",
    "PhotometricTerm",
    "PosedPoints",
    "Schedule",
    "StepHistory",
    "SurfaceLandmarks",
    "TemplateTrack",
    "TemplateTrackingConfig",
    "TurnFit",
    "TurnTrackingConfig",
    "VertexColours",
    "check_schedule",
    "corrected_pose",
    "decayed_steps",
    "detected_landmarks",
    "face_region",
    "fit_mask_template",
    "frozen",
    "landmark_error",
    "phone_focal",
    "posed_points",
    "run_stage",
    "scheduled",
    "soft_jaccard",
    "track_landmarks",
    "track_turn",
    "track_with_template",
    "vertex_colours",
]
