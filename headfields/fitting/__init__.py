"""Fitting: what fits a few quantities of a trained or frozen model to frames (a tracking), whatever the model.
Its parts, one job a module: ``stages`` (staged Adam over named parameter groups, its schedules), ``pose`` (a
tracked head pose with a fitted correction), ``preimages`` (canonical points carried into posed space by root
finding), ``pixels`` (the frames' pixel pools, the silhouette term) and ``landmarks`` (the landmark term).

MonoNPHM's tracking (:mod:`headfields.models.mononphm`) and the hyper NeuS avatar's
(:mod:`headfields.models.hyper_neus_tracking`) are built from them; what is specific to a model stays with it.
"""

from .landmarks import detected_landmarks, landmark_error
from .pixels import FramePixels, soft_jaccard
from .pose import corrected_pose
from .preimages import ROOT_TOLERANCE, PosedPoints, posed_points
from .stages import Schedule, check_schedule, frozen, run_stage, scheduled

__all__ = [
    "ROOT_TOLERANCE",
    "FramePixels",
    "PosedPoints",
    "Schedule",
    "check_schedule",
    "corrected_pose",
    "detected_landmarks",
    "frozen",
    "landmark_error",
    "posed_points",
    "run_stage",
    "scheduled",
    "soft_jaccard",
]
