"""A synthetic scan set for a parametric head prior (MonoNPHM's NPHM): identities x expressions of the synthetic
FLAME head, each identity with its own shape, personal detail, colours (:mod:`headfields.synthetic.identities`)
and expressions.

Every scan is the identity's personal model evaluated with an expression and an opened jaw, global and neck pose
zero: the canonical frame. The set is registered (the scans of an identity share vertices and faces, so vertex
``k`` is the same point in every expression) and knows its anchors: the positions of a fixed set of template
vertices (:func:`anchor_vertices`: mirror pairs and points on the midplane) on each identity's neutral scan.

A scanner sees the outside of a head: the faces of the eyeballs that lie inside the skin (most of each ball) and
the skin the balls cover are dropped (decided on the neutral scan, so an identity's scans keep one face list).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from ..checks import check_count, check_positive
from ..data.ibug import ANCHOR_LANDMARK_PAIRS, model_landmark
from ..data.scans import ScanSet
from ..geometry import TriangleMesh, closest_point, farthest_points
from ..parametric.model import ParametricModel
from ._appearance import head_appearance
from .identities import SHAPE_STD, PersonalDetailConfig, SyntheticIdentity, _eye_vertices
from .model_files import NUM_SHAPES, SYNTHETIC_EXPRESSIONS
from .video import BACKGROUND_EXPRESSION_STD, BACKGROUND_EXPRESSIONS, EXPRESSION_PEAK, JAW_PEAK, SyntheticVideoConfig

__all__ = ["OUT_OF_RANGE_DETAIL", "ScanSetConfig", "anchor_vertices", "nphm_held_out_video", "synthetic_scan_set"]

ANCHORS, MIDPLANE_ANCHORS = 65, 5  # MonoNPHM's: 30 mirror pairs and 5 points on the midplane
MIDPLANE_TOLERANCE = 1e-3  # metres: a vertex this close to x = 0 is on the midplane
MIRROR_TOLERANCE = 1e-3  # metres: a vertex's mirror partner lies this close to its mirror image
HIDDEN_REGIONS = ("teeth", "mouth_interior", "eyes", "left_eyeball", "right_eyeball")  # no anchors there
# A scan's expression raises a few channels (the named directions and the jaw) to a random fraction of their
# peak, at least this much, so each one is clearly seen.
MIN_ACTIVATION = 0.3
IDENTITY_SEED_STRIDE = 1_000_000  # identity seeds of scan sets with different seeds never meet (see identities())
# The held-out video: small enough for a CPU (60 frames of 64 px), with 10-frame episodes so its 40 training frames
# see every channel (brows, smile, jaw) and its 15 test frames their combinations.
# 128 px: a pixel is ~3 mm on the head, so its silhouette can tell millimetres of personal detail apart.
HELD_OUT_VIDEO = dict(num_frames=60, num_val=5, num_test=15, resolution=128, episode_frames=10)
# A person whose every part of detail lies beyond the default ranges the scan set draws from (PersonalDetailConfig):
# thicker hair, more, taller bumps, larger and more protruding ears; within DETAIL_BOUNDS, where heads do not fold.
OUT_OF_RANGE_DETAIL = PersonalDetailConfig(
    hair_thickness=(0.03, 0.04), bumps=(7, 8), bump_height=(0.0055, 0.006), ear_scale=(1.5, 1.8), ear_push=(0.007, 0.01)
)


@dataclass(frozen=True)
class ScanSetConfig:
    """What :func:`synthetic_scan_set` makes: ``num_identities`` x ``expressions`` scans (the neutral one
    included). Each expression raises ``active`` channels, drawn among the named expression directions and the
    jaw, to a random ``MIN_ACTIVATION``-1 of ``expression_peak`` (coefficient) or ``jaw_peak`` (radians); the
    ``BACKGROUND_EXPRESSIONS`` directions after the named ones wander with ``background_std``. Identities:
    ``shape_std`` and ``detail`` as :meth:`SyntheticIdentity.random`; their seeds follow from ``seed``."""

    num_identities: int = 16
    expressions: int = 8
    shape_std: float = SHAPE_STD
    expression_peak: float = EXPRESSION_PEAK
    jaw_peak: float = JAW_PEAK
    active: tuple[int, int] = (1, 3)
    background_std: float = BACKGROUND_EXPRESSION_STD
    detail: PersonalDetailConfig = field(default_factory=PersonalDetailConfig)
    anchors: int = ANCHORS
    seed: int = 0

    def __post_init__(self) -> None:
        check_count("num_identities", self.num_identities, 1, IDENTITY_SEED_STRIDE // 2)
        check_count("expressions", self.expressions, 1)
        for name in ("shape_std", "expression_peak", "jaw_peak"):
            check_positive(name, getattr(self, name))
        if not 0 <= self.background_std < math.inf:
            raise ValueError(f"background_std: expected a non-negative number, got {self.background_std}")
        channels = len(SYNTHETIC_EXPRESSIONS) + 1
        if not (isinstance(self.active, tuple) and len(self.active) == 2):
            raise TypeError(f"active: expected a (low, high) pair of channel counts, got {self.active!r}")
        low, high = (check_count("active", k, 1, channels) for k in self.active)
        if low > high:
            raise ValueError(f"active: expected low <= high, got {self.active}")
        if not isinstance(self.detail, PersonalDetailConfig):
            raise TypeError(f"detail: expected a PersonalDetailConfig, got {type(self.detail).__name__}")
        check_count("anchors", self.anchors, MIDPLANE_ANCHORS)
        check_count("seed", self.seed, 0)

    def identities(self, num_shape: int) -> list[SyntheticIdentity]:
        """The set's identities: :meth:`SyntheticIdentity.random` of seeds ``seed * IDENTITY_SEED_STRIDE + i``."""
        first = self.seed * IDENTITY_SEED_STRIDE
        return [self._identity(num_shape, first + i) for i in range(self.num_identities)]

    def held_out_identity(self, num_shape: int, k: int = 0) -> SyntheticIdentity:
        """Identity ``k`` of those the set does not hold (seed ``seed * IDENTITY_SEED_STRIDE + num_identities + k``),
        drawn alike: the unseen person of a video (``SyntheticVideoConfig(identity=...)``)."""
        k = check_count("k", k, 0, IDENTITY_SEED_STRIDE // 2 - 1)
        return self._identity(num_shape, self.seed * IDENTITY_SEED_STRIDE + self.num_identities + k)

    def _identity(self, num_shape: int, seed: int) -> SyntheticIdentity:
        return SyntheticIdentity.random(num_shape, seed, shape_std=self.shape_std, detail=self.detail)


def nphm_held_out_video(
    config: ScanSetConfig | None = None, detail: PersonalDetailConfig | None = None, **changes
) -> SyntheticVideoConfig:
    """The video of a person the scan set of ``config`` does not hold (its first held-out identity), for fitting
    a prior learnt from the set: ``HELD_OUT_VIDEO``'s size, ``changes`` overriding any field. ``detail``: draw
    the person's detail from these ranges instead of the set's (``OUT_OF_RANGE_DETAIL``: a person unlike any
    the prior learnt from).

        root = cached_synthetic_video(nphm_held_out_video())
        harder = cached_synthetic_video(nphm_held_out_video(detail=OUT_OF_RANGE_DETAIL))
    """
    config = config or ScanSetConfig()
    if detail is not None:
        if not isinstance(detail, PersonalDetailConfig):
            raise TypeError(f"detail: expected a PersonalDetailConfig, got {type(detail).__name__}")
        config = replace(config, detail=detail)
    identity = config.held_out_identity(NUM_SHAPES)  # the synthetic FLAME's shape space
    return SyntheticVideoConfig(**{**HELD_OUT_VIDEO, "identity": identity, **changes})


def synthetic_scan_set(model: ParametricModel, config: ScanSetConfig | None = None) -> ScanSet:
    """The synthetic scan set of ``config`` (see the module's docstring), on the model's device. Scan
    ``i * expressions + e`` is expression ``e`` of identity ``i``; names are ``"identity{i}/expression{e}"``.

        model = load_model(write_synthetic_flame("/tmp/flame"), "flame")
        scans = synthetic_scan_set(model, ScanSetConfig(num_identities=4, expressions=3))
    """
    config = config or ScanSetConfig()
    if not isinstance(model, ParametricModel):
        raise TypeError(f"model: expected a ParametricModel, got {type(model).__name__}")
    ids, _ = anchor_vertices(model, config.anchors)
    generator = torch.Generator().manual_seed(config.seed)
    device = model.v_template.device
    vertices, faces, colours, anchors = [], [], [], []
    for identity in config.identities(model.num_shape):
        expression, pose = (x.to(device) for x in _expressions(model, config, generator))  # each person their own
        brow = expression[:, SYNTHETIC_EXPRESSIONS["brow_raise"]]
        subject, _ = identity.personal_model(model)
        with torch.no_grad():
            head = subject(shape=identity.shape_coefficients(model), expression=expression, pose=pose)
        visible = model.faces[_visible_faces(head.vertices[0], model.faces, _eye_vertices(model))]
        appearance = head_appearance(subject, identity.appearance_seed)
        corners = torch.arange(model.num_vertices, device=device)[:, None].expand(-1, 3)  # each vertex's own colour
        first = torch.tensor([1.0, 0.0, 0.0], dtype=head.vertices.dtype, device=device).expand(model.num_vertices, 3)
        for e in range(config.expressions):
            vertices.append(head.vertices[e])
            faces.append(visible)
            colours.append(appearance.colour(corners, first, brow[e].expand(model.num_vertices)))
        anchors.append(head.vertices[0, ids])
    n, k = config.num_identities, config.expressions
    identity = torch.arange(n).repeat_interleave(k)
    expression_index = torch.arange(k).repeat(n)
    names = [f"identity{i}/expression{e}" for i, e in zip(identity.tolist(), expression_index.tolist(), strict=True)]
    return ScanSet(vertices, faces, colours, identity, expression_index, True, torch.stack(anchors), names)


def _expressions(model: ParametricModel, config: ScanSetConfig, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """Expression coefficients ``[E, num_expression]`` and poses ``[E, J, 3]`` (the jaw only) of one identity's
    ``expressions`` scans; the first is neutral (all zero). Drawn on the CPU."""
    k = config.expressions
    expression = torch.zeros(k, model.num_expression)
    pose = torch.zeros(k, model.num_joints, 3)
    named = [i for i in SYNTHETIC_EXPRESSIONS.values() if i < model.num_expression]
    channels = len(named) + 1  # the named directions, then the jaw
    first, last = len(SYNTHETIC_EXPRESSIONS), min(model.num_expression, len(SYNTHETIC_EXPRESSIONS) + BACKGROUND_EXPRESSIONS)
    jaw = model.joint_index("jaw")
    for e in range(1, k):
        count = int(torch.randint(config.active[0], min(config.active[1], channels) + 1, (), generator=generator))
        active = torch.randperm(channels, generator=generator)[:count].tolist()
        level = MIN_ACTIVATION + (1.0 - MIN_ACTIVATION) * torch.rand(count, generator=generator)
        for channel, height in zip(active, level.tolist(), strict=True):
            if channel == len(named):
                pose[e, jaw, 0] = config.jaw_peak * height  # the mouth opens (+x rotation), as in the video
            else:
                expression[e, named[channel]] = config.expression_peak * height
        expression[e, first:last] = config.background_std * torch.randn(last - first, generator=generator)
    return expression, pose


def _visible_faces(vertices: Tensor, faces: Int[Tensor, "F 3"], eyes: Bool[Tensor, " V"]) -> Bool[Tensor, " F"]:
    """The faces a scanner sees: not an eyeball's inside the skin, nor the skin's inside an eyeball (by the side
    of each face's centre with respect to the other surface: the sign of its angle-weighted pseudo-normal)."""
    eye_face = eyes[faces].all(dim=1)
    if not eye_face.any() or eye_face.all():
        return torch.ones(len(faces), dtype=torch.bool, device=faces.device)
    centres = vertices[faces].mean(dim=1)
    hidden = torch.zeros(len(faces), dtype=torch.bool, device=faces.device)
    for part, other in ((eye_face, ~eye_face), (~eye_face, eye_face)):
        surface = TriangleMesh(vertices, faces[other])
        hidden[part] = closest_point(surface, centres[part]).sign < 0
    return ~hidden


def anchor_vertices(model: ParametricModel, count: int = ANCHORS, midplane: int = MIDPLANE_ANCHORS) -> tuple[Tensor, Tensor]:
    """``count`` template vertices spread over the head's outside as MonoNPHM's anchors: ``(count - midplane) / 2``
    mirror pairs, then ``midplane`` vertices on the midplane (``|x| <= MIDPLANE_TOLERANCE``). Returns ``ids
    [count]`` and ``mirror [count]``, ``mirror[k]`` the index (into the ``count``) of k's partner across x = 0,
    itself on the midplane. Order: pairs ``(0, 1), (2, 3), ...``, the first of each on the subject's right (-x, as
    MonoNPHM and iBUG order them) and the second the vertex nearest its mirror image (within ``MIRROR_TOLERANCE``),
    then the midplane ones. In MonoNPHM's layout (65 anchors, 5 on the midplane) on a model with iBUG landmarks,
    the anchors MonoNPHM pairs with landmarks (:data:`~headfields.data.ibug.ANCHOR_LANDMARK_PAIRS`) sit at the
    vertex nearest their landmark (a pair's partner at its mirror); the others, and every anchor of another
    layout, are spread by farthest-point sampling, each the farthest from every anchor so far and its mirror
    image (so no pair straddles the midplane closely). No anchor lies in the mouth or on an eyeball (by region
    names; eyeballs also by their skinning).

        ids, mirror = anchor_vertices(model)  # 30 pairs and 5 on the midplane
    """
    count = check_count("count", count, 1)
    midplane = check_count("midplane", midplane, 0, count)
    if (count - midplane) % 2:
        raise ValueError(f"count: expected count - midplane ({midplane}) to be even (mirror pairs), got {count}")
    template = model.v_template.detach()
    regions = model.regions
    hidden = _eye_vertices(model)
    for name in HIDDEN_REGIONS:
        if name in regions:
            hidden[regions[name]] = True
    candidates = torch.nonzero(~hidden)[:, 0]
    points = template[candidates]
    left = candidates[points[:, 0] > MIDPLANE_TOLERANCE]
    image = template[left] * torch.tensor([-1.0, 1.0, 1.0], dtype=template.dtype, device=template.device)
    distance, nearest = torch.cdist(image, points).min(dim=1)
    paired = distance <= MIRROR_TOLERANCE
    left, right = left[paired], candidates[nearest[paired]]
    centre = candidates[points[:, 0].abs() <= MIDPLANE_TOLERANCE]
    pairs = (count - midplane) // 2
    if len(left) < pairs or len(centre) < midplane:
        raise ValueError(
            f"model: expected {pairs} mirror-symmetric vertex pairs and {midplane} vertices on the midplane, found "
            f"{len(left)} and {len(centre)} (is the template symmetric about x = 0?)"
        )
    placed = _landmark_places(model) if (count, midplane) == (ANCHORS, MIDPLANE_ANCHORS) else {}
    ids = torch.full((count,), -1, dtype=torch.long, device=template.device)
    for k, target in placed.items():
        if k >= 2 * pairs:  # on the midplane
            ids[k] = centre[(template[centre] - target).norm(dim=1).argmin()]
        elif ids[k] < 0:  # the pair's partner may have placed it already
            on_right = torch.cat([-target[:1].abs(), target[1:]])  # the pair's even one, on the subject's right
            j = int((template[right] - on_right).norm(dim=1).argmin())
            ids[k - k % 2], ids[k - k % 2 + 1] = right[j], left[j]
    free_centre = [k for k in range(2 * pairs, count) if ids[k] < 0]
    if free_centre and not bool((ids >= 0).any()):
        ids[free_centre] = centre[farthest_points(template[centre], len(free_centre))]
    elif free_centre:  # each the farthest from the anchors placed so far
        distance = torch.cdist(template[centre], template[ids[ids >= 0]]).min(dim=1).values
        for k in free_centre:
            ids[k] = centre[distance.argmax()]
            distance = torch.minimum(distance, (template[centre] - template[ids[k]]).norm(dim=1))
    free_pairs = [i for i in range(pairs) if ids[2 * i] < 0]
    if free_pairs:
        kept = ids[ids >= 0]
        fresh = _mirrored_farthest(template[left], len(free_pairs), template[kept])
        for i, j in zip(free_pairs, fresh.tolist(), strict=True):
            ids[2 * i], ids[2 * i + 1] = right[j], left[j]
    k = torch.arange(count, device=ids.device)
    mirror = torch.where(k < 2 * pairs, k ^ 1, k)  # 2j <-> 2j + 1
    return ids, mirror


def _landmark_places(model: ParametricModel) -> dict[int, Tensor]:
    """Anchor -> the template position of the iBUG landmark MonoNPHM pairs it with, for the landmarks ``model``
    has (none without a landmark embedding)."""
    neutral = model().landmarks  # the template's (zero shape, expression and pose)
    if neutral is None:
        return {}
    landmarks, places = neutral[0].detach(), {}
    for anchor, ibug in ANCHOR_LANDMARK_PAIRS:
        index = model_landmark(ibug, len(landmarks))
        if index is not None:
            places[anchor] = landmarks[index]
    return places


def _mirrored_farthest(points: Float[Tensor, "N 3"], count: int, chosen: Float[Tensor, "C 3"]) -> Int[Tensor, " K"]:
    """Farthest-point sampling of ``count`` of ``points`` (one half of a symmetric head, x > 0), the distance to a
    point picked being the distance to it or to its mirror image, and every point also kept away from its own
    mirror image and from ``chosen`` (midplane anchors). Starts at the point farthest from those (or nearest the
    centroid without ``chosen``)."""
    mirror = torch.tensor([-1.0, 1.0, 1.0], dtype=points.dtype, device=points.device)
    distance = torch.full((len(points),), math.inf, dtype=points.dtype, device=points.device)
    start = None if len(chosen) else int((points - points.mean(dim=0)).norm(dim=1).argmin())
    if len(chosen):
        distance = torch.cdist(points, chosen).min(dim=1).values
    distance = torch.minimum(distance, 2 * points[:, 0].abs())  # a point's distance to its own pair partner
    picked = []
    for i in range(count):
        k = start if i == 0 and start is not None else int(distance.argmax())
        picked.append(k)
        nearer = torch.minimum((points - points[k]).norm(dim=1), (points - points[k] * mirror).norm(dim=1))
        distance = torch.minimum(distance, nearer)
    return torch.tensor(picked, dtype=torch.long, device=points.device)
