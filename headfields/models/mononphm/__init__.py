"""MonoNPHM (Giebenhain et al., CVPR 2024): a neural parametric head prior learnt from 3D scans, frozen and fitted
by inverse rendering to a monocular video of a person it never saw. A module a concept:

- ``prior``: the NPHM prior (:class:`Nphm`), its sizes, saving and loading;
- ``prior_training``: its losses on scans and how it trains (:func:`train_prior`);
- ``model``: the paper's assembly on a video (:class:`MonoNphm`): the prior inside a NeuS renderer, with what is
  fitted per frame and per sequence;
- ``tracking``: the two tracking stages' settings and their runs (:func:`track_sequence`, :func:`track_frames`);
- ``evaluation``: the geometry measures (MonoNPHM's depth-scan protocol, the Chamfer distance over the head);
- ``reconstruction``: a video tracked and measured (:func:`reconstruct`);
- ``ceiling``: what the prior can express of a person (:func:`surface_identity`);
- ``method``: MonoNPHM's method, a fit of its own in the run's engine (``python -m headfields train mononphm``).

    prior = load_prior("outputs/nphm/prior.pt")
    model = MonoNphm(prior, subject.parametric, len(subject.train))
    track_sequence(model, subject.train, cpu_tracking())
    rgb = render_image(model, subject.train, 0, 4096, "cpu", head=model.head(subject.train))
"""

from .ceiling import identity_code, surface_identity
from .evaluation import GeometryScore, ScanScore, depth_scan, face_region, face_scan, geometry_score, scan_score
from .model import (
    ColourTransform,
    CorrectedPose,
    MonoNphm,
    MonoNphmConfig,
    TrackedFrames,
    cpu_config,
    paper_config,
)
from .prior import NPHM_UNIT, Nphm, NphmConfig, cpu_prior_config, load_prior, save_prior
from .prior_training import (
    PriorLossWeights,
    PriorTrainingConfig,
    cpu_prior_training,
    prior_losses,
    train_prior,
)
from .reconstruction import Reconstruction, reconstruct
from .tracking import (
    MonoNphmTracking,
    StageConfig,
    TrackingHistory,
    cpu_tracking,
    landmark_pairs,
    track_frames,
    track_sequence,
)

__all__ = [
    "NPHM_UNIT",
    "ColourTransform",
    "CorrectedPose",
    "GeometryScore",
    "MonoNphm",
    "MonoNphmConfig",
    "MonoNphmTracking",
    "Nphm",
    "NphmConfig",
    "PriorLossWeights",
    "PriorTrainingConfig",
    "Reconstruction",
    "ScanScore",
    "StageConfig",
    "TrackedFrames",
    "TrackingHistory",
    "cpu_config",
    "cpu_prior_config",
    "cpu_prior_training",
    "cpu_tracking",
    "depth_scan",
    "face_region",
    "face_scan",
    "geometry_score",
    "identity_code",
    "landmark_pairs",
    "load_prior",
    "paper_config",
    "prior_losses",
    "reconstruct",
    "save_prior",
    "scan_score",
    "surface_identity",
    "track_frames",
    "track_sequence",
    "train_prior",
]
