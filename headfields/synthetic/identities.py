"""Synthetic identities: heads that differ by more than FLAME's shape space can say, for a prior learnt from scans
of many people (MonoNPHM's NPHM) and for a video of a person it never saw.

An identity is FLAME shape coefficients plus *personal detail*: a per-vertex displacement of the template that no
combination of FLAME's directions reaches. It holds a hair volume over the scalp (a thickness along the outward
normal), a few smooth bumps and dents on the cranium and the face, and ears of the person's own size and
protrusion. :func:`personal_model` puts the displacement into a copy of the model's template, so blend shapes and
skinning carry it through every expression and pose, and vertex ``k`` is the same material point in all of them.

Every field is smooth, tapers to zero where it ends (the hairline, the ears' rim, a band around the lips, the
eyes and the neck) and moves along normals smoothed over a few rings of faces, so the displaced mesh folds
nowhere and meets itself nowhere the template does not (the eyeballs sit inside the face on the template already;
``PersonalDetailConfig``'s bounds are where this was checked). The joint regressor reads the displaced template:
large ears reach the synthetic head's jaw hinge, so a person's jaw may turn about a hinge of their own (under a
millimetre off at the default ranges); the neck carries no detail, so the head turns about the template's neck.
"""

from __future__ import annotations

import copy
import math
import numbers
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from jaxtyping import Bool, Float, Int
from torch import Tensor

from ..checks import check_count, check_float, check_positive
from ..data import SPLITS
from ..geometry import vertex_normals
from ..parametric.model import EYE_JOINTS, ParametricModel
from ..parametric.skinning import skinned_to
from ._appearance import value_noise

__all__ = [
    "GROUND_TRUTH_FILE",
    "PersonalDetailConfig",
    "SyntheticIdentity",
    "load_ground_truth",
    "personal_detail",
    "personal_model",
    "save_ground_truth",
]

# Region names, the synthetic model's first and real FLAME's (its FLAME_masks.pkl) after.
HAIR_REGIONS = ("hair", "scalp")
EAR_REGIONS = ("left_ear", "right_ear")  # FLAME's; the synthetic head has no ears (see _ear_frames)
KEEP_OUT_REGIONS = ("lips", "eyes", "teeth", "mouth_interior", "left_eyeball", "right_eyeball")
NO_BUMP_REGIONS = ("neck", "boundary")  # bumps lie on the cranium and the face, not the neck

# Fall-backs for a model without the regions above, relative to its eyeballs' centres (the eye joints).
HAIRLINE_ABOVE_EYES = 0.05  # metres: the forehead's hairline sits about 5 cm above the eyes
EAR_BELOW_EYES = 0.017  # metres: an adult ear's centre sits about 1.7 cm below the eyes' centres...
EAR_BEHIND_EYES = 0.085  # ... and 8.5 cm behind them
EAR_SNAP = 0.005  # metres: the ear's centre is the mean of the side's vertices within about this of its place

NORMAL_SMOOTHING = 8  # rounds of averaging the displacement's direction over neighbouring faces (see _smooth_normals)
HAIR_NOISE_CELL = 0.05  # metres: the hair thins in patches about 5 cm across
EAR_HEIGHT, EAR_WIDTH = 0.03, 0.02  # metres: half the ear's height and width at scale 1 (the profile's reach)
EAR_CORE = 0.3  # where the ear's weight exceeds this, no hair grows (it would bury the ear)
BUMP_KEEP_OUT = 0.015  # metres: bumps fade to zero over this distance from the lips, mouth, eyes and neck
SHAPE_DIRECTIONS = 20  # identities vary along the first directions: the named proportions and 15 random fields
# Shape coefficients' standard deviation: +-1 moves the synthetic head's sides by 5 mm (head_width) and its
# random fields by 1-3 mm; about the spread of adult head breadths (s.d. 3 mm per side) to twice it.
SHAPE_STD = 1.0
GROUND_TRUTH_FILE = "ground_truth.npz"

DETAIL_BOUNDS = {  # what PersonalDetailConfig's ranges may span (see its __post_init__)
    "hair_thickness": (0.0, 0.04),
    "bumps": (0, 8),
    "bump_height": (0.0, 0.006),
    "bump_radius": (0.01, 0.04),
    "ear_scale": (0.5, 2.0),
    "ear_push": (0.0, 0.01),
}
GROWN_EARS_BOUND = 0.02


@dataclass(frozen=True)
class PersonalDetailConfig:
    """The ranges personal detail is drawn from (metres; each pair a ``(low, high)`` range, drawn per identity).

    ``hair_thickness``: at the crown and the back of the head, thinning by up to ``hair_variation`` (a fraction)
    in smooth random patches and tapering to zero over ``hair_taper`` from the hairline and the ears.
    ``bumps``: how many Gaussian bumps or dents (random sign) of peak ``bump_height`` and standard deviation
    ``bump_radius``. ``ear_scale``: each identity's ears are scaled about their centre by this factor, and
    pushed out by ``ear_push``. The synthetic head has no ears: on a model without ear regions, ears of
    ``grown_ears`` (their protrusion at scale 1) are grown first. A range ``(0, 0)`` (``ear_scale`` ``(1, 1)``,
    ``grown_ears`` 0) switches a part off."""

    hair_thickness: tuple[float, float] = (0.008, 0.025)
    hair_taper: float = 0.04
    hair_variation: float = 0.3
    bumps: tuple[int, int] = (3, 6)
    bump_height: tuple[float, float] = (0.002, 0.005)
    bump_radius: tuple[float, float] = (0.02, 0.04)
    ear_scale: tuple[float, float] = (0.8, 1.3)
    ear_push: tuple[float, float] = (0.002, 0.006)
    grown_ears: float = 0.01

    def __post_init__(self) -> None:
        # The bounds: all parts at them at once left the synthetic head free of folds (seeds 0-9, each at the least
        # and the largest radius and ear scale); 8 bumps of 8 mm at a 4 cm radius fold it (two dents meet).
        for name, (lo, hi) in DETAIL_BOUNDS.items():
            _check_range(name, getattr(self, name), lo, hi, integer=name == "bumps")
        check_positive("hair_taper", self.hair_taper)
        if not 0.0 <= self.grown_ears <= GROWN_EARS_BOUND:
            raise ValueError(f"grown_ears: expected metres in [0, {GROWN_EARS_BOUND}], got {self.grown_ears}")
        if not 0.0 <= self.hair_variation < 1.0:
            raise ValueError(f"hair_variation: expected a fraction in [0, 1), got {self.hair_variation}")


def _check_range(name: str, value: object, lo: float, hi: float, integer: bool = False) -> None:
    kind = numbers.Integral if integer else numbers.Real
    if not (isinstance(value, tuple) and len(value) == 2 and all(isinstance(v, kind) and not isinstance(v, bool) for v in value)):
        raise TypeError(f"{name}: expected a (low, high) pair of {'integers' if integer else 'numbers'}, got {value!r}")
    if not lo <= value[0] <= value[1] <= hi:
        raise ValueError(f"{name}: expected {lo} <= low <= high <= {hi}, got {value}")


def personal_detail(model: ParametricModel, seed: int, config: PersonalDetailConfig | None = None) -> Float[Tensor, "V 3"]:
    """The canonical per-vertex displacement of identity ``seed``'s personal detail (see the module's docstring),
    on the model's device in its dtype. Deterministic: the random draws are made on the CPU from ``seed``.

        detail = personal_detail(model, seed=3)
        head = personal_model(model, detail)(shape=shape)
    """
    seed = check_count("seed", seed, 0)
    config = config or PersonalDetailConfig()
    if not isinstance(config, PersonalDetailConfig):
        raise TypeError(f"config: expected a PersonalDetailConfig or None, got {type(config).__name__}")
    draws = _Draws.of(config, torch.Generator().manual_seed(seed))
    template = model.v_template.detach().double()
    normals = _smooth_normals(template, model.faces)
    regions = model.regions
    keep_out = _keep_out(model, regions)
    ears, ear_weight = _ears(model, template, normals, regions, keep_out, config, draws)
    hair = _hair(model, template, regions, ear_weight > EAR_CORE, config, draws, seed)
    bumps = _bumps(template, regions, keep_out, draws)
    return (normals * (hair + bumps)[:, None] + ears).to(model.v_template.dtype)


@dataclass
class _Draws:
    """Every random number of one identity's detail, drawn in a fixed order (so one part's draws never shift
    another's)."""

    hair_thickness: float
    bump_centres: Tensor  # [K] uniform in [0, 1): picks a candidate vertex each
    bump_heights: Tensor  # [K], signed
    bump_radii: Tensor  # [K]
    ear_scale: float
    ear_push: float

    @classmethod
    def of(cls, c: PersonalDetailConfig, generator: torch.Generator) -> _Draws:
        def uniform(pair: tuple[float, float], n: int = 1) -> Tensor:
            return pair[0] + (pair[1] - pair[0]) * torch.rand(n, generator=generator, dtype=torch.float64)

        hair = float(uniform(c.hair_thickness))
        count = int(torch.randint(c.bumps[0], c.bumps[1] + 1, (), generator=generator))
        most = DETAIL_BOUNDS["bumps"][1]  # as many bumps drawn as there can be, the first ``count`` kept
        sign = torch.where(torch.rand(most, generator=generator) < 0.5, -1.0, 1.0).double()
        centres = torch.rand(most, generator=generator, dtype=torch.float64)
        heights, radii = sign * uniform(c.bump_height, most), uniform(c.bump_radius, most)
        return cls(
            hair_thickness=hair,
            bump_centres=centres[:count],
            bump_heights=heights[:count],
            bump_radii=radii[:count],
            ear_scale=float(uniform(c.ear_scale)),
            ear_push=float(uniform(c.ear_push)),
        )


def _smooth_normals(vertices: Float[Tensor, "V 3"], faces: Int[Tensor, "F 3"]) -> Float[Tensor, "V 3"]:
    """Vertex normals averaged over their faces' corners ``NORMAL_SMOOTHING`` times (over about as many rings of
    faces): the direction the detail moves along. Raw normals turn fast across a crease (where the lower head
    meets the neck, 90 degrees over two thin rows), and a few mm along them there flip faces; smoothed, the
    direction field varies over centimetres like the detail itself."""
    normals = vertex_normals(vertices, faces)
    for _ in range(NORMAL_SMOOTHING):
        summed = torch.zeros_like(normals)
        face_sum = normals[faces].sum(dim=1)  # [F, 3]
        for corner in range(3):
            summed.index_add_(0, faces[:, corner], face_sum)
        normals = F.normalize(summed, dim=-1)
    return normals


def _mask(model: ParametricModel, ids: list[Tensor]) -> Bool[Tensor, " V"]:
    mask = torch.zeros(model.num_vertices, dtype=torch.bool, device=model.v_template.device)
    for i in ids:
        mask[i] = True
    return mask


def _eye_vertices(model: ParametricModel) -> Bool[Tensor, " V"]:
    """The eyeballs: the vertices skinned mostly to the eye joints (a geometric rule that needs no regions)."""
    return skinned_to(model, [name for name in EYE_JOINTS if name in model.joint_names])


def _keep_out(model: ParametricModel, regions: dict[str, Tensor]) -> Bool[Tensor, " V"]:
    """Where no detail goes: the lips, the mouth and the eyes (by region name; the eyeballs also by skinning, so a
    model without those regions still keeps its eyes clear; one without a lips region gets bumps at the mouth)."""
    return _mask(model, [regions[name] for name in KEEP_OUT_REGIONS if name in regions]) | _eye_vertices(model)


def _eye_centres(model: ParametricModel) -> Float[Tensor, "2 3"]:
    joints = [model.joint_index(name) for name in EYE_JOINTS]
    return model().joints[0, joints].detach().double()


def _smoothstep(edge0: float, edge1: float, x: Tensor) -> Tensor:
    u = ((x - edge0) / (edge1 - edge0)).clamp(0.0, 1.0)
    return u * u * (3.0 - 2.0 * u)


def _nearest_distance(points: Float[Tensor, "N 3"], to: Float[Tensor, "M 3"]) -> Float[Tensor, " N"]:
    if len(to) == 0:
        return torch.full((len(points),), math.inf, dtype=points.dtype, device=points.device)
    return torch.cdist(points, to).min(dim=1).values


def _ear_frames(
    model: ParametricModel, template: Tensor, normals: Tensor, regions: dict[str, Tensor], keep_out: Tensor
) -> tuple[list[tuple[Tensor, Tensor]], bool]:
    """Each ear's centre and outward direction, and whether the model has ears: the ear regions' centroids and
    mean normals where it has them (FLAME). The synthetic head has none: there, the mean of each side's vertices
    near the ear's place relative to the eyes (``EAR_BELOW_EYES``, ``EAR_BEHIND_EYES``; Gaussian weights of
    ``EAR_SNAP``), and of their normals."""
    if all(name in regions for name in EAR_REGIONS):
        frames = [(template[regions[n]].mean(dim=0), F.normalize(normals[regions[n]].mean(dim=0), dim=0)) for n in EAR_REGIONS]
        return frames, True
    eyes = _eye_centres(model).mean(dim=0)
    target_y, target_z = eyes[1] - EAR_BELOW_EYES, eyes[2] - EAR_BEHIND_EYES
    frames = []
    for side in (1.0, -1.0):  # the subject's left (+x), then right, as EAR_REGIONS
        off = (template[:, 1] - target_y) ** 2 + (template[:, 2] - target_z) ** 2
        off = torch.where(~keep_out & (side * template[:, 0] > 0), off, math.inf)
        # A soft nearest vertex (not an argmin, whose ties would fall on different sides of a symmetric head).
        weight = torch.exp(-0.5 * (off - off.min()) / EAR_SNAP**2)
        weight = weight / weight.sum()
        frames.append((weight @ template, F.normalize(weight @ normals, dim=0)))
    return frames, False


def _ears(
    model: ParametricModel,
    template: Tensor,
    normals: Tensor,
    regions: dict[str, Tensor],
    keep_out: Tensor,
    config: PersonalDetailConfig,
    draws: _Draws,
) -> tuple[Float[Tensor, "V 3"], Float[Tensor, " V"]]:
    """The ears' displacement and weight: about each ear's centre ``c`` (outward ``n``), a weight
    ``w = (1 - q)^3`` for ``q = (height / H)^2 + (across / W)^2 < 1`` (zero beyond: the ear ends, no tail reaches
    the jaw's hinge or the neck), H and W the ear's half-height and half-width times its scale ``s``, and the
    displacement ``w ((s - 1)(v - c) + push n)``, the push including ``grown_ears`` on a model without ears. The
    map's Jacobian ``I + (s - 1)(w I + (v - c) grad w^T)`` has eigenvalues 1 + (s - 1) w and
    1 + (s - 1)(1 - q)^2 (1 - 7q), positive for s in [0.5, 2] (the last factor's least value is -0.65 at
    q = 3/7): the ear grows or shrinks without folding."""
    s = draws.ear_scale
    displacement = torch.zeros_like(template)
    weight = torch.zeros(len(template), dtype=template.dtype, device=template.device)
    up = torch.tensor([0.0, 1.0, 0.0], dtype=template.dtype, device=template.device)
    frames, has_ears = _ear_frames(model, template, normals, regions, keep_out)
    push = draws.ear_push + (0.0 if has_ears else config.grown_ears)
    if s == 1.0 and push == 0.0:
        return displacement, weight
    for centre, outward in frames:
        vertical = F.normalize(up - (up @ outward) * outward, dim=0)  # up, in the ear's tangent plane
        offset = template - centre
        height = offset @ vertical
        across = (offset - height[:, None] * vertical).norm(dim=1)  # sideways and through the head
        q = (height / (EAR_HEIGHT * s)) ** 2 + (across / (EAR_WIDTH * s)) ** 2
        w = (1.0 - q).clamp(min=0.0) ** 3
        w = torch.where(keep_out, 0.0, w)  # FLAME's ears lie far from the eyes; this only guards odd models
        displacement += w[:, None] * ((s - 1.0) * offset + push * outward)
        weight = torch.maximum(weight, w)
    return displacement, weight


def _hair(
    model: ParametricModel,
    template: Tensor,
    regions: dict[str, Tensor],
    ears: Bool[Tensor, " V"],
    config: PersonalDetailConfig,
    draws: _Draws,
    seed: int,
) -> Float[Tensor, " V"]:
    """The hair's thickness along the outward normal: the identity's thickness over the hair region, thinned in
    patches (value noise) and tapered smoothly to zero with the distance to the nearest vertex off the hair (the
    hairline, the neck) or in an ear's core. Without a hair region: the vertices above the eyes by
    ``HAIRLINE_ABOVE_EYES``."""
    names = [name for name in HAIR_REGIONS if name in regions]
    if names:
        hair = _mask(model, [regions[name] for name in names])
    else:
        hair = template[:, 1] > _eye_centres(model)[:, 1].mean() + HAIRLINE_ABOVE_EYES
    hair = hair & ~ears
    thickness = torch.zeros(len(template), dtype=template.dtype, device=template.device)
    if not hair.any() or draws.hair_thickness == 0:
        return thickness
    points = template[hair]
    taper = _smoothstep(0.0, config.hair_taper, _nearest_distance(points, template[~hair]))
    patches = value_noise(points / HAIR_NOISE_CELL, seed).to(points)
    thickness[hair] = draws.hair_thickness * taper * (1.0 - config.hair_variation * patches)
    return thickness


def _bumps(template: Tensor, regions: dict[str, Tensor], keep_out: Bool[Tensor, " V"], draws: _Draws) -> Float[Tensor, " V"]:
    """Gaussian bumps and dents (heights along the normal) centred on vertices of the cranium and the face at least
    ``BUMP_KEEP_OUT`` from the lips, mouth, eyes and neck, faded to zero towards those. None on the neck: the
    joint regressor reads the neck's rings (a bump there would move the head's joint)."""
    height = torch.zeros(len(template), dtype=template.dtype, device=template.device)
    if len(draws.bump_heights) == 0:
        return height
    avoid = keep_out.clone()
    for name in NO_BUMP_REGIONS:
        if name in regions:
            avoid[regions[name]] = True
    fade = _smoothstep(0.0, BUMP_KEEP_OUT, _nearest_distance(template, template[avoid]))
    fade = torch.where(avoid, 0.0, fade)
    centre_ok = fade >= 1.0
    candidates = torch.nonzero(centre_ok)[:, 0]
    if len(candidates) == 0:
        raise ValueError("model: found no vertex away from the lips, mouth, eyes and neck to centre a bump on")
    pick = (draws.bump_centres * len(candidates)).long().clamp(max=len(candidates) - 1).to(candidates.device)
    centres = template[candidates[pick]]
    heights, radii = draws.bump_heights.to(template.device), draws.bump_radii.to(template.device)
    gauss = torch.exp(-0.5 * torch.cdist(template, centres) ** 2 / radii**2)  # [V, K]
    return fade * (gauss @ heights)


def personal_model(model: ParametricModel, displacement: Float[Tensor, "V 3"]) -> ParametricModel:
    """A copy of ``model`` whose template carries ``displacement`` (``v_template + displacement``), so the detail
    follows expressions and poses through blend shapes and skinning. ``model`` is left as it was; the copy shares
    its other (read-only) buffers rather than copying them.

        subject = personal_model(model, personal_detail(model, seed=3))
    """
    if not isinstance(model, ParametricModel):
        raise TypeError(f"model: expected a ParametricModel, got {type(model).__name__}")
    check_float("displacement", displacement, [model.num_vertices, 3], device=model.v_template.device)
    shared = {id(b): b for name, b in model.named_buffers() if name != "v_template"}  # deepcopy's memo: not copied
    subject = copy.deepcopy(model, memo=shared)
    subject.v_template = model.v_template.detach() + displacement.detach().to(model.v_template.dtype)
    return subject


@dataclass(frozen=True)
class SyntheticIdentity:
    """One synthetic person: the leading FLAME ``shape`` coefficients (the rest are zero), the seeds of their
    personal detail and appearance, and the detail's ranges. Plain numbers only, so the repr (the synthetic video
    cache's key) is deterministic; a list or tensor given as ``shape`` is stored as a tuple of floats."""

    shape: tuple[float, ...] | list[float] | Float[Tensor, " S"]  # stored as a tuple of floats
    detail_seed: int
    appearance_seed: int
    detail: PersonalDetailConfig = field(default_factory=PersonalDetailConfig)

    def __post_init__(self) -> None:
        shape = self.shape.detach().cpu().reshape(-1).tolist() if isinstance(self.shape, Tensor) else self.shape
        if not isinstance(shape, tuple | list) or not all(isinstance(x, numbers.Real) and not isinstance(x, bool) for x in shape):
            raise TypeError(f"shape: expected a tuple of shape coefficients, got {self.shape!r}")
        if not all(math.isfinite(x) for x in shape):
            raise ValueError(f"shape: expected finite coefficients, got {shape}")
        object.__setattr__(self, "shape", tuple(float(x) for x in shape))
        check_count("detail_seed", self.detail_seed, 0)
        check_count("appearance_seed", self.appearance_seed, 0)
        if not isinstance(self.detail, PersonalDetailConfig):
            raise TypeError(f"detail: expected a PersonalDetailConfig, got {type(self.detail).__name__}")

    @classmethod
    def random(
        cls,
        model_num_shape: int,
        seed: int,
        shape_std: float = SHAPE_STD,
        directions: int = SHAPE_DIRECTIONS,
        detail: PersonalDetailConfig | None = None,
    ) -> SyntheticIdentity:
        """Identity ``seed``: the first ``directions`` shape coefficients drawn from N(0, ``shape_std``^2) and the
        detail and appearance seeds, all from ``seed`` (on the CPU).

            identity = SyntheticIdentity.random(model.num_shape, seed=100)
        """
        num_shape = check_count("model_num_shape", model_num_shape, 0)
        seed = check_count("seed", seed, 0)
        check_positive("shape_std", shape_std)
        directions = min(check_count("directions", directions, 0), num_shape)
        generator = torch.Generator().manual_seed(seed)
        shape = shape_std * torch.randn(directions, generator=generator, dtype=torch.float64)
        detail_seed, appearance_seed = torch.randint(0, 2**31 - 1, (2,), generator=generator).tolist()
        return cls(tuple(shape.tolist()), detail_seed, appearance_seed, detail or PersonalDetailConfig())

    def shape_coefficients(self, model: ParametricModel) -> Float[Tensor, " S"]:
        """The identity's shape coefficients for ``model`` (zeros past the stored ones), on its device and dtype."""
        if len(self.shape) > model.num_shape:
            raise ValueError(f"shape: the identity has {len(self.shape)} coefficients, the model only {model.num_shape}")
        coefficients = torch.zeros(model.num_shape, dtype=model.v_template.dtype, device=model.v_template.device)
        coefficients[: len(self.shape)] = torch.tensor(self.shape, dtype=coefficients.dtype)
        return coefficients

    def personal_model(self, model: ParametricModel) -> tuple[ParametricModel, Float[Tensor, "V 3"]]:
        """:func:`personal_model` of ``model`` with this identity's detail, and the detail itself."""
        detail = personal_detail(model, self.detail_seed, self.detail)
        return personal_model(model, detail), detail


def save_ground_truth(
    root: str | Path,
    vertices: Float[Tensor, "N V 3"],
    faces: Int[Tensor, "F 3"],
    splits: dict[str, Int[Tensor, " _"]],
    displacement: Float[Tensor, "V 3"],
) -> Path:
    """Write ``root/ground_truth.npz``: the subject's true posed meshes (with its personal detail), row ``f`` for
    the video's frame ``f``. Keys: ``vertices [N, V, 3]`` float32, ``faces [F, 3]`` int64, ``frames_train``,
    ``frames_val``, ``frames_test`` (each split's frame ids, the rows of ``vertices``, in the split's order) and
    ``displacement [V, 3]`` float32 (the canonical detail the tracked meshes lack)."""
    path = Path(root) / GROUND_TRUTH_FILE
    arrays = {
        "vertices": vertices.detach().cpu().float().numpy(),
        "faces": faces.cpu().long().numpy(),
        **{f"frames_{split}": splits[split].cpu().long().numpy() for split in SPLITS},
        "displacement": displacement.detach().cpu().float().numpy(),
    }
    np.savez(path, **arrays)  # np.savez: fixed timestamps, so the same arrays give the same bytes
    return path


def load_ground_truth(root: str | Path, split: str) -> tuple[Float[Tensor, "n V 3"], Int[Tensor, "F 3"]]:
    """The true posed meshes of an identity video's ``split`` frames, in the split's order (as
    :func:`headfields.data.load_insta_dataset` gives its frames), and their faces.

        vertices, faces = load_ground_truth(root, "test")
    """
    if split not in SPLITS:
        raise ValueError(f"split: expected one of {', '.join(SPLITS)}, got {split!r}")
    path = Path(root) / GROUND_TRUTH_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no ground truth (only a video made with SyntheticVideoConfig.identity has one)")
    with np.load(path, allow_pickle=False) as data:
        vertices = torch.from_numpy(data["vertices"][data[f"frames_{split}"]])
        faces = torch.from_numpy(data["faces"])
    return vertices, faces
