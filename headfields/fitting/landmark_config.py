"""The settings of the face tracker's fit (:func:`.track_landmarks`): steps, priors and weights of its stages."""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..checks import check_count, check_positive

__all__ = ["FOCAL_PRIOR", "TRUSTED_LANDMARKS", "LandmarkTrackingConfig"]

FOCAL_PRIOR = 1e-3  # on the log focal length's change from its start, per landmark: a weak pull where views cannot say


@dataclass(frozen=True)
class LandmarkTrackingConfig:
    """Steps, priors and weights of the landmark stages; residuals are in pixels of a 512-pixel image (scaled to
    the image's size), so the weights hold for any crop."""

    # Spread over the found frames: shape and focal length (with 1.5 px noise on the synthetic video, 16 -> 48: focal
    # length 151 -> 172 px of 179, vertex error 2.55 -> 2.26 mm, for 2 s more).
    keyframes: int = 48
    expressions: int = 50  # the first coefficients fitted (the rest 0): 51 iBUG points cannot tell 100 apart
    rigid_steps: int = 10  # Levenberg-Marquardt iterations a stage (each stops early once the cost stops falling)
    keyframe_steps: int = 20
    frame_steps: int = 10
    global_steps: int = 10
    robust_scale: float = 4.0  # pixels: the Cauchy loss is quadratic below, logarithmic beyond (a detector's outliers)
    # Shape: 1.0 (was 1e-2) keeps the identity from absorbing noise and trading head size against depth; with 1.5 px
    # noise on the synthetic video: vertex error 2.34 -> 2.20 mm, rotation 1.52 -> 1.35 deg, similarity scale 1.06 -> 1.01.
    shape_prior: float = 1.0  # on the shape coefficients (unit variance in FLAME's PCA)
    expression_prior: float = 0.3
    jaw_prior: float = 1.0  # radians^-2
    # First differences between neighbouring frames: ``smoothness`` per radian of head rotation, times the ratios below
    # for translation (per decimetre), jaw (per radian) and expression (per coefficient). A head that keeps turning is
    # held back by them: with (25, 100) the depth lagged the true one (error against depth -0.56, its acceleration
    # +0.60); (3, 30), true landmarks + 1.5 px on the built-in video, the landmark stages 2.23 -> 1.75 mm, with the
    # photometric stage 1.34 -> 1.16 mm; MediaPipe's 2.02 -> 1.96 mm.
    smoothness: float = 3.0
    # Second differences (a change of velocity: a head turns steadily, so these can be far stiffer than the first)
    # with the same ratios.
    acceleration: float = 1000.0
    translation_smoothness: float = 30.0
    jaw_smoothness: float = 1.0
    expression_smoothness: float = 0.01
    focal_prior: float = FOCAL_PRIOR
    fit_focal: bool = True  # False: the given (or the phone prior's) focal length is held
    # The photometric stage (where images are given): Gauss-Newton steps, each after the face's colours are re-solved;
    # its weight: a frame's mean pixel cost (colours in [0, 1]) counts this many times a landmark's squared pixel.
    # On the 300-frame synthetic video, vertex error in the 512 crop (landmark stages alone -> 1e3 -> 1e4): MediaPipe
    # 4.45 mm at 1e3, 3.10 at 1e4; true landmarks + 1.5 px 2.17 -> 1.79 -> 2.43 (whole frame 2.26 -> 1.64 -> 1.35).
    # A detector's biased points want the pixels to lead; near-perfect landmarks, less so.
    photometric_steps: int = 10
    photometric_weight: float = 1e4
    photometric_grid: int = 128  # pixels sampled a side (every stride-th of a larger image)

    def __post_init__(self) -> None:
        check_count("keyframes", self.keyframes, 1)
        check_count("expressions", self.expressions, 0)
        for name in ("rigid_steps", "keyframe_steps", "frame_steps", "global_steps", "photometric_steps"):
            check_count(name, getattr(self, name), 0)
        for name in ("robust_scale", "shape_prior", "expression_prior", "jaw_prior", "smoothness"):
            check_positive(name, getattr(self, name), finite=True)
        check_positive("photometric_weight", self.photometric_weight, finite=True)
        check_count("photometric_grid", self.photometric_grid, 8)
        for name in ("acceleration", "translation_smoothness", "jaw_smoothness", "expression_smoothness", "focal_prior"):
            if not 0.0 <= getattr(self, name) < math.inf:
                raise ValueError(f"{name}: expected a finite weight >= 0, got {getattr(self, name)}")


# For landmarks one trusts to their noise: dense points in the fit's own correspondence (MediaPipe's, where an
# --embedding places them on the model; a better detector's, or the truth's). 400 points hold more expression and
# shape than 51 iBUG points, so the priors move, and the pixels need less weight than a detector's biased points do.
# On the built-in video from its true MediaPipe points + 1.5 px (the model's views' embedding at 128 px, 408 points),
# five noise draws: 0.82-0.87 mm (median 0.83), 0.88-0.94 deg, jaw at most 0.35 deg. The landmark stages alone gave
# 0.90-1.07 mm (median 0.97) and 0.87-0.97 deg; 10 photometric steps at 1e3, 0.95 mm on the worst draw; on one draw
# the default's priors 0.93 mm but 1.02 deg, expression prior 1.0 1.11 mm and 0.70 deg. docs/bring_your_own_video.md.
TRUSTED_LANDMARKS = LandmarkTrackingConfig(photometric_steps=4, photometric_weight=3e3, expression_prior=0.5, shape_prior=3.0)
