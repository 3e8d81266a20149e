"""What the synthetic head video renders (:class:`SyntheticVideoConfig`, read by :func:`.make_synthetic_video`), and the
360-degree portrait's videos of one person (:func:`portrait_person`)."""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..checks import check_count, check_positive
from .hair import HairVolumeConfig
from .identities import SyntheticIdentity

__all__ = ["PERSON_SHAPES", "PORTRAIT_EXPRESSION_GAIN", "SyntheticVideoConfig", "portrait_person"]

# The portrait subject's expressions (coefficients and jaw angle) are this many times what its tracker reports.
PORTRAIT_EXPRESSION_GAIN = 1.5
PERSON_SHAPES = 10  # the leading shape coefficients a portrait person of their own draws (SyntheticIdentity's std)


@dataclass(frozen=True)
class SyntheticVideoConfig:
    """What to render. Defaults: a monocular FLAME video of 300 frames at 96x96 pixels."""

    num_frames: int = 300
    num_val: int = 10  # held out from the training episodes (seen kinds of expression)
    num_test: int = 50  # the last frames: unseen combinations of expressions
    resolution: int = 96  # square images, pixels
    supersampling: int = 2  # colour rays per pixel side (anti-aliasing); depth, mask and labels: the centre ray
    fov: float = math.radians(30.0)
    episode_frames: int = 25
    orbit: bool = False  # True: the SMPL-X head and torso turning before the camera (the 360 degree portrait)
    orbit_turns: float = 2.0  # turns over the training and validation frames; the test frames make one even turn
    orbit_front_weight: float = 0.0  # in [0, 1): training frames per yaw angle ~ 1 + weight * cos(yaw)
    expression_gain: float = 1.0  # rendered expression and jaw pose = gain x the tracked (stored) ones
    background: tuple[float, float, float] = (1.0, 1.0, 1.0)
    seed: int = 0
    # What the tracked template lacks (off by default): a volume of hair over the scalp (True: the default
    # HairVolumeConfig) and a pair of glasses. Neither is in the written meshes; each has its own label.
    hair_volume: HairVolumeConfig | bool | None = None
    glasses: bool = False
    # A person of their own (FLAME monocular video only): the images show the identity's shape with its personal
    # detail; the written meshes and parameters are plain FLAME with its shape (the best a FLAME tracker can
    # reach), and root/ground_truth.npz holds the true meshes (see make_synthetic_video).
    identity: SyntheticIdentity | None = None
    # Noisy tracking: each timestep's written expression coefficients carry a tracker's error, zero-mean Gaussian of
    # this standard deviation (drawn from the seed); the images show the true ones. None: the tracking is exact.
    expression_noise: float | None = None
    # A novel-view validation split (GaussianAvatars'): num_val training timesteps, evenly spread, seen by the camera
    # turned this many radians about the vertical through the head, their tracking the training frames'. None: the
    # validation frames are timesteps of their own.
    val_view_yaw: float | None = None
    # The static turn (orbit only): a neutral face (no expression, jaw shut, eyes ahead, no head swing) while the
    # subject turns, what a personal template is built from.
    turn: bool = False
    # The subject's leading shape coefficients (the rest 0; None: the template's shape). Not with an identity.
    shape: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        check_count("num_frames", self.num_frames, 3)
        check_count("num_val", self.num_val, 1)
        check_count("num_test", self.num_test, 1)
        if self.num_val + self.num_test >= self.num_frames:
            raise ValueError(
                f"num_frames: expected more than num_val + num_test = {self.num_val + self.num_test} frames, "
                f"got {self.num_frames}"
            )
        check_count("resolution", self.resolution, 8, 4096)
        check_count("supersampling", self.supersampling, 1, 8)
        check_count("episode_frames", self.episode_frames, 2)
        check_positive("fov", self.fov)
        if not self.fov < math.pi:
            raise ValueError(f"fov: expected a field of view below pi radians, got {self.fov}")
        check_positive("orbit_turns", self.orbit_turns)
        if not 0.0 <= self.orbit_front_weight < 1.0:
            raise ValueError(f"orbit_front_weight: expected a weight in [0, 1), got {self.orbit_front_weight}")
        check_positive("expression_gain", self.expression_gain)
        if isinstance(self.hair_volume, bool):  # True: the default hair; stored as a config, so caches agree
            object.__setattr__(self, "hair_volume", HairVolumeConfig() if self.hair_volume else None)
        if self.hair_volume is not None and not isinstance(self.hair_volume, HairVolumeConfig):
            raise TypeError(f"hair_volume: expected a HairVolumeConfig, True, False or None, got {self.hair_volume!r}")
        if not isinstance(self.glasses, bool):
            raise TypeError(f"glasses: expected True or False, got {self.glasses!r}")
        if self.identity is not None and not isinstance(self.identity, SyntheticIdentity):
            raise TypeError(f"identity: expected a SyntheticIdentity or None, got {type(self.identity).__name__}")
        if self.expression_noise is not None:
            check_positive("expression_noise", self.expression_noise, finite=True)
        yaw = self.val_view_yaw
        if yaw is not None and not (isinstance(yaw, int | float) and not isinstance(yaw, bool) and abs(yaw) < math.pi):
            raise ValueError(f"val_view_yaw: expected an angle in radians in (-pi, pi) or None, got {self.val_view_yaw!r}")
        if self.identity is not None and self.orbit:
            raise ValueError("identity: expected the monocular FLAME video (orbit=False); the orbit video is SMPL-X's")
        if not isinstance(self.turn, bool):
            raise TypeError(f"turn: expected True or False, got {self.turn!r}")
        if self.turn and not self.orbit:
            raise ValueError("turn: expected the orbit video (orbit=True); a static turn is the 360-degree portrait's")
        if self.shape is not None:
            shape = list(self.shape) if isinstance(self.shape, tuple | list) else [None]
            if not all(isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x) for x in shape):
                raise ValueError(f"shape: expected a tuple of finite shape coefficients or None, got {self.shape!r}")
            if self.identity is not None:
                raise ValueError("shape: expected None with an identity, which holds its own shape")
            object.__setattr__(self, "shape", tuple(float(x) for x in shape))

    @classmethod
    def portrait360(cls, **changes) -> SyntheticVideoConfig:
        """The 360-degree portrait video: the SMPL-X bust turning twice before the camera, front-heavy
        (``orbit_front_weight`` 0.8: about 55% front, 33% side and 11% back training views), with expressions
        ``PORTRAIT_EXPRESSION_GAIN`` times the tracked ones. ``changes`` override any field."""
        defaults = dict(orbit=True, orbit_front_weight=0.8, expression_gain=PORTRAIT_EXPRESSION_GAIN)
        return cls(**{**defaults, **changes})

    @classmethod
    def portrait_turn(cls, **changes) -> SyntheticVideoConfig:
        """The 360-degree portrait subject's static turn: the SMPL-X bust turning once, evenly, with a neutral face
        (``turn``), 120 frames; the last 10 held out, one even turn. ``changes`` override any field; give the
        dynamic video's ``seed``, ``shape`` and ``hair_volume`` for the same person (:func:`portrait_person`)."""
        defaults = dict(orbit=True, turn=True, orbit_turns=1.0, num_frames=120, num_val=1, num_test=10)
        return cls(**{**defaults, **changes})


def portrait_person(seed: int = 0, **changes) -> tuple[SyntheticVideoConfig, SyntheticVideoConfig]:
    """One 360-degree portrait subject's two videos: the static turn and the dynamic video
    (:meth:`SyntheticVideoConfig.portrait_turn`, :meth:`~SyntheticVideoConfig.portrait360`), the same person in
    both: the same seed, hair over the scalp, and ``PERSON_SHAPES`` shape coefficients of their own (drawn as
    :meth:`~headfields.synthetic.identities.SyntheticIdentity.random` draws a FLAME identity's from ``seed``).
    ``changes`` apply to both (``resolution``, ...).

        turn, dynamic = portrait_person(resolution=64)
        template_video, video = cached_synthetic_video(turn), cached_synthetic_video(dynamic)
    """
    shape = SyntheticIdentity.random(PERSON_SHAPES, seed=seed).shape
    person = dict(seed=seed, shape=shape, hair_volume=True, **changes)
    return SyntheticVideoConfig.portrait_turn(**person), SyntheticVideoConfig.portrait360(**person)
