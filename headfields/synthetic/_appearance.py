"""The synthetic head's procedural appearance: colour as a function of the surface point and the expression.

Colour is attached to the surface: it is computed from the hit point's *canonical* position (template +
shape, no expression, no pose), so it moves with the skin. Lighting is baked in the same way (a fixed light
on the canonical normal): appearance depends only on the surface point and the expression, which every
paper model can represent. Two effects depend on the expression, as on a real face: forehead wrinkles that
darken as the brows rise, and teeth and a dark mouth cavity that the geometry reveals as the jaw opens.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from torch import Tensor

from ..geometry import vertex_normals
from ..parametric.model import ParametricModel
from .model_files import SYNTHETIC_EXPRESSIONS

# Albedo per region (linear RGB in [0, 1]); regions missing from a model are simply unused.
REGION_COLOURS: dict[str, tuple[float, float, float]] = {
    "skin": (0.86, 0.64, 0.52),
    "lips": (0.72, 0.32, 0.33),
    "teeth": (0.93, 0.91, 0.84),
    "mouth_interior": (0.22, 0.05, 0.06),
    "eyes": (0.95, 0.95, 0.93),
    "hair": (0.23, 0.14, 0.08),
    "neck": (0.80, 0.58, 0.47),
    "torso": (0.20, 0.32, 0.58),
}
IRIS_COLOUR = (0.20, 0.38, 0.55)
PUPIL_COLOUR = (0.03, 0.03, 0.03)
IRIS_COS, PUPIL_COS = 0.92, 0.985  # angular radii about the eye's rest gaze (+z): about 23 and 10 degrees
SKIN_NOISE_CELL = 0.012  # metres: blotches about a centimetre across
SKIN_NOISE_AMPLITUDE = 0.12
HAIR_STRAND_PERIOD = 0.004  # metres between dark strand stripes
TORSO_STRIPE_PERIOD = 0.03
WRINKLE_PERIOD = 0.007  # metres between forehead wrinkles
WRINKLE_DEPTH = 0.55  # darkening of a wrinkle's centre at full brow raise
LIGHT_DIRECTION = (0.35, 0.6, 0.75)  # in the canonical frame: above, to the subject's left, in front
AMBIENT = 0.45


@dataclass
class HeadAppearance:
    """Per-vertex data the colour is interpolated from, for one subject.

    ``wrinkle_weight`` is where wrinkles can appear (0 to 1): taken from the brow-raise expression direction
    itself (how far each vertex moves with it), so no forehead coordinates are hard-coded.
    """

    canonical: Float[Tensor, "V 3"]
    normals: Float[Tensor, "V 3"]
    labels: Int[Tensor, " V"]  # index into ``names``
    names: tuple[str, ...]
    wrinkle_weight: Float[Tensor, " V"]
    eye_centres: Float[Tensor, "2 3"]  # canonical eyeball centres
    seed: int

    def colour(
        self, faces: Int[Tensor, "N 3"], bary: Float[Tensor, "N 3"], brow_raise: Float[Tensor, " N"]
    ) -> Float[Tensor, "N 3"]:
        """Shaded colour of surface points given by their face's vertices and barycentrics.

        ``brow_raise`` is the frame's brow-raise expression coefficient (wrinkles darken with it, from 0).
        """
        point = torch.einsum("nk,nkd->nd", bary, self.canonical[faces])
        normal = F.normalize(torch.einsum("nk,nkd->nd", bary, self.normals[faces]), dim=-1)
        label = self.label(faces, bary)
        albedo = torch.tensor([REGION_COLOURS[n] for n in self.names], dtype=point.dtype, device=point.device)[label]

        skin = torch.isin(label, self._label_ids(("skin", "neck", "lips"), point.device))
        blotch = 1.0 + SKIN_NOISE_AMPLITUDE * (2.0 * value_noise(point / SKIN_NOISE_CELL, self.seed) - 1.0)
        albedo = torch.where(skin[:, None], albedo * blotch[:, None], albedo)

        hair = label == self._label_id("hair")
        strands = 0.75 + 0.25 * torch.cos(2 * torch.pi * (point[:, 0] + 0.3 * point[:, 2]) / HAIR_STRAND_PERIOD)
        albedo = torch.where(hair[:, None], albedo * strands[:, None], albedo)

        torso = label == self._label_id("torso")
        stripes = 0.8 + 0.2 * (torch.sin(2 * torch.pi * point[:, 1] / TORSO_STRIPE_PERIOD) > 0).to(point.dtype)
        albedo = torch.where(torso[:, None], albedo * stripes[:, None], albedo)

        albedo = torch.where((label == self._label_id("eyes"))[:, None], self._eye_albedo(point, albedo), albedo)

        wrinkle = torch.einsum("nk,nk->n", bary, self.wrinkle_weight[faces])
        groove = torch.cos(2 * torch.pi * point[:, 1] / WRINKLE_PERIOD).clamp(min=0) ** 4  # thin dark lines
        darken = WRINKLE_DEPTH * wrinkle * groove * brow_raise.clamp(0.0, 1.0)
        albedo = albedo * (1.0 - darken)[:, None]

        light = F.normalize(torch.tensor(LIGHT_DIRECTION, dtype=point.dtype, device=point.device), dim=0)
        shade = AMBIENT + (1.0 - AMBIENT) * (normal @ light).clamp(min=0.0)
        return (albedo * shade[:, None]).clamp(0.0, 1.0)

    def label(self, faces: Int[Tensor, "N 3"], bary: Float[Tensor, "N 3"]) -> Int[Tensor, " N"]:
        """Region (index into ``names``) of each surface point: that of its face's nearest corner."""
        return self.labels[faces.gather(1, bary.argmax(dim=1, keepdim=True))[:, 0]]

    def _label_id(self, name: str) -> int:
        return self.names.index(name) if name in self.names else -1

    def _label_ids(self, names: tuple[str, ...], device: torch.device) -> Tensor:
        return torch.tensor([self._label_id(n) for n in names], device=device)

    def _eye_albedo(self, point: Tensor, albedo: Tensor) -> Tensor:
        """Sclera, iris and pupil around each eyeball's rest gaze direction (+z in canonical space)."""
        centre = self.eye_centres[torch.cdist(point, self.eye_centres).argmin(dim=1)]
        cos_gaze = F.normalize(point - centre, dim=-1)[:, 2]
        iris = torch.tensor(IRIS_COLOUR, dtype=point.dtype, device=point.device)
        pupil = torch.tensor(PUPIL_COLOUR, dtype=point.dtype, device=point.device)
        albedo = torch.where((cos_gaze > IRIS_COS)[:, None], iris, albedo)
        return torch.where((cos_gaze > PUPIL_COS)[:, None], pupil, albedo)


def value_noise(x: Float[Tensor, "N 3"], seed: int) -> Float[Tensor, " N"]:
    """Smooth 3D value noise in [0, 1]: hashed random values on the integer lattice, smoothly interpolated."""
    cell = torch.floor(x)
    frac = x - cell
    w = frac * frac * (3.0 - 2.0 * frac)  # smoothstep: continuous first derivative across cells
    cell = cell.long()
    out = torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
    for corner in range(8):
        offset = torch.tensor([(corner >> k) & 1 for k in range(3)], device=x.device)
        weight = torch.where(offset.bool(), w, 1.0 - w).prod(dim=1)
        out = out + weight * _lattice_value(cell + offset, seed).to(x.dtype)
    return out


def _lattice_value(cell: Int[Tensor, "N 3"], seed: int) -> Float[Tensor, " N"]:
    """A deterministic pseudo-random value in [0, 1) per lattice cell (a multiplicative integer hash)."""
    primes = torch.tensor([73856093, 19349663, 83492791], device=cell.device)
    h = (cell * primes).sum(dim=1) ^ (seed * 2654435761)
    h = (h ^ (h >> 13)) * 1274126177
    h = h ^ (h >> 16)
    return (h & 0xFFFFFF).double() / float(0x1000000)


def head_appearance(model: ParametricModel, seed: int) -> HeadAppearance:
    """Per-vertex appearance data of the model's neutral head (zero shape, expression and pose)."""
    neutral = model()
    canonical = neutral.canonical_vertices.detach()
    names = tuple(neutral.regions)
    labels = torch.full((canonical.shape[0],), -1, dtype=torch.long, device=canonical.device)
    for i, name in enumerate(names):
        labels[neutral.regions[name]] = i
    if (labels < 0).any():
        raise ValueError(f"model: expected regions that cover every vertex, {int((labels < 0).sum())} vertices have none")
    brow_dir = model.expr_dirs[:, :, SYNTHETIC_EXPRESSIONS["brow_raise"]].detach()
    moved = brow_dir.norm(dim=-1)
    joints = {name: i for i, name in enumerate(model.joint_names)}
    eye_centres = neutral.joints[0, [joints["left_eye"], joints["right_eye"]]].detach()
    return HeadAppearance(
        canonical=canonical,
        normals=vertex_normals(canonical, neutral.faces),
        labels=labels,
        names=names,
        wrinkle_weight=moved / moved.max(),
        eye_centres=eye_centres,
        seed=seed,
    )
