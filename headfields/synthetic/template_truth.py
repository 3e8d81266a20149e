"""The true personal template of the synthetic 360-degree subject: the surface a template fitted to its turning video
(SMPL-X with its shape and per-vertex offsets, as the 360-degree portrait's tracker builds one) should reach.

The subject's hair is a volume (:mod:`.hair`), not a surface: its surface here is where it makes the silhouette, as
the images' masks take it (a pixel shows hair where the hair's opacity along its ray passes 0.5). A camera turning
about the subject at head height meets the hair with horizontal rays, and a silhouette ray grazes the hair: each
canonical vertex moves out along the ray from the hair's centre through it to the farthest point where a horizontal
line tangent there (perpendicular to that ray) is opaque. Along the radial ray itself the hair turns opaque deeper
(its density fades over the shell's outer half): that surface's silhouettes meet the masks with an IoU of 0.95,
this one's 0.99 (portrait_person's turn at 64 px). Every other vertex stays. The hair rides the head joint
rigidly, as do the scalp's vertices, so the template poses with SMPL-X's skinning like the body it holds.

    vertices, faces = load_template_truth(root)  # [V, 3] canonical (zero pose, neutral face), [F, 3]
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from torch import Tensor

from ._render import OPACITY_LABEL
from .hair import HairVolume

__all__ = ["TEMPLATE_TRUTH", "load_template_truth", "save_template_truth", "true_template"]

TEMPLATE_TRUTH = "template_truth.npz"  # in the folder of an orbit video of a person's own shape (portrait_person)
BISECTIONS = 16  # the hair's surface to reach / 2^16: under 0.01 mm


def true_template(canonical: Float[Tensor, "V 3"], hair: HairVolume | None) -> Float[Tensor, "V 3"]:
    """``canonical`` (the subject's vertices, zero pose and neutral face) with the hair's surface: each vertex under
    the hair moved out to it along the ray from the hair's centre (see the module's docstring)."""
    if hair is None:
        return canonical.detach().clone()
    points = canonical.detach().to(hair.centre)
    offset = points - hair.centre
    direction = F.normalize(offset, dim=-1)
    up = torch.tensor([0.0, 1.0, 0.0]).to(points)
    tangent = torch.linalg.cross(up.expand_as(direction), direction)
    # Straight up (no horizontal tangent): any horizontal line; x.
    tangent = torch.where(tangent.norm(dim=-1, keepdim=True) > 1e-6, tangent, torch.tensor([1.0, 0.0, 0.0]).to(points))
    tangent = F.normalize(tangent, dim=-1)
    reach = 2 * float(hair.bound_radii.max())  # from the line's point to beyond the volume, either way

    def opaque(radius: Tensor, rows: Tensor) -> Tensor:
        at = hair.centre + radius[:, None] * direction[rows]
        seen = hair.composite(at - reach * tangent[rows], tangent[rows], torch.full_like(radius, 2 * reach), colour=False)
        return seen.opacity > OPACITY_LABEL  # as the masks take a pixel (synthetic._render)

    every = torch.arange(len(points), device=points.device)
    covered = every[opaque(offset.norm(dim=-1), every)]  # the hair is opaque over these vertices: they move out
    low = offset[covered].norm(dim=-1)
    high = torch.full_like(low, reach)
    for _ in range(BISECTIONS):  # opaque at low, not at high: halve the bracket
        mid = (low + high) / 2
        inside = opaque(mid, covered)
        low, high = torch.where(inside, mid, low), torch.where(inside, high, mid)
    moved = points.clone()
    moved[covered] = hair.centre + low[:, None] * direction[covered]
    return moved.to(canonical)


def save_template_truth(root: str | Path, vertices: Float[Tensor, "V 3"], faces: Int[Tensor, "F 3"]) -> Path:
    """Write the true template into ``root`` (``TEMPLATE_TRUTH``); returns its path."""
    path = Path(root) / TEMPLATE_TRUTH
    np.savez(path, vertices=vertices.detach().cpu().float().numpy(), faces=faces.cpu().numpy().astype(np.int64))
    return path


def load_template_truth(root: str | Path) -> tuple[Float[Tensor, "V 3"], Int[Tensor, "F 3"]]:
    """The true template of the orbit video in ``root`` (one of :func:`~headfields.synthetic.portrait_person`'s, or
    any with a ``shape`` of its own): canonical vertices and faces."""
    path = Path(root) / TEMPLATE_TRUTH
    if not path.is_file():
        raise ValueError(
            f"root: expected the folder of a synthetic orbit video with a shape of its own (portrait_person's), holding "
            f"{TEMPLATE_TRUTH}; {str(root)!r} has none"
        )
    with np.load(path) as data:
        return torch.from_numpy(data["vertices"]), torch.from_numpy(data["faces"])
