"""The synthetic video's ground truth: every frame ray cast, with what the template lacks composited exactly.

Each ray meets the posed head mesh and, if the video has them, the glasses (opaque: the nearer hit is the surface)
and the hair volume (semi-transparent). Its colour is the volume integrated up to the first opaque surface plus
that surface's colour (or the background) times the volume's transmittance: ``rgb = V + T * surface``
(:meth:`~headfields.synthetic.hair.HairVolume.composite`, in the head's canonical frame: the rays are carried
into it by the inverse of the head joint's rigid transform). Labels, mask and depth come from each pixel's centre
ray: the hair volume's label where its opacity in front of the surface exceeds 0.5 (its depth then the z where the
opacity reaches 0.5), else the surface's (a head region or the glasses), else the background; the mask is every
labelled pixel.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from jaxtyping import Float
from torch import Tensor

from ..cameras import PinholeCameras, Rays, pixel_rays
from ..data import BACKGROUND_LABEL
from ..geometry import TriangleMesh, ray_intersect
from ..parametric.head import Head
from ._appearance import HeadAppearance
from .glasses import glasses_colour
from .hair import HairVolume

OPACITY_LABEL = 0.5  # a pixel shows the hair volume where the volume's opacity before the surface exceeds this


@dataclass
class Additions:
    """What the video adds to the template, and where it is: in the canonical frame, carried by ``transforms``."""

    transforms: Float[Tensor, "B 4 4"]  # canonical -> world per frame: the head joint's rigid transform
    hair: HairVolume | None
    hair_label: int
    glasses: TriangleMesh | None  # posed per frame
    glasses_label: int


def render_frames(
    head: Head,
    cameras: PinholeCameras,
    appearance: HeadAppearance,
    brow: Tensor,
    resolution: int,
    supersampling: int,
    background: tuple[float, float, float],
    additions: Additions | None = None,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Ray cast every frame: anti-aliased RGB (uint8), and from each pixel's centre ray the mask, z depth and label."""
    n, size, s = head.num_frames, resolution, supersampling
    mesh = head.posed_mesh
    faces = head.faces
    device = head.vertices.device
    background = torch.tensor(background, device=device)
    steps = torch.arange(size, device=device)
    grid = torch.stack(torch.meshgrid(steps, steps, indexing="xy"), dim=-1).reshape(-1, 2)
    sub = (torch.arange(s, device=device) + 0.5) / s
    offsets = torch.stack(torch.meshgrid(sub, sub, indexing="xy"), dim=-1).reshape(-1, 2)  # [s*s, 2]
    colour_pixels = (grid[:, None, :] + offsets[None]).reshape(-1, 2)  # [HW*s*s, 2]
    centre_pixels = grid + 0.5

    images = torch.empty(n, size, size, 3, dtype=torch.uint8, device=device)
    masks = torch.empty(n, size, size, dtype=torch.bool, device=device)
    depths = torch.empty(n, size, size, device=device)
    segmentation = torch.empty(n, size, size, dtype=torch.uint8, device=device)
    forward = cameras.camera_to_world[:, :3, 2]  # OpenCV +z: the viewing axis, for z depth
    with torch.no_grad():
        for f in range(n):
            rays = pixel_rays(cameras, f, colour_pixels)
            hit = ray_intersect(mesh, rays.origins, rays.directions, frame=f)
            colour = background.expand(len(rays), 3).clone()
            corners = faces[hit.face[hit.hit]]
            colour[hit.hit] = appearance.colour(corners, hit.bary[hit.hit], brow[f].expand(len(corners)))
            if additions is not None:
                colour = _add(additions, rays, f, hit.hit, hit.t, colour, labels=None)[0]
            colour = colour.reshape(size * size, s * s, 3).mean(dim=1)
            images[f] = (colour * 255 + 0.5).clamp(0, 255).to(torch.uint8).reshape(size, size, 3)

            rays = pixel_rays(cameras, f, centre_pixels)
            hit = ray_intersect(mesh, rays.origins, rays.directions, frame=f)
            label = torch.full((size * size,), BACKGROUND_LABEL, dtype=torch.long, device=device)
            label[hit.hit] = appearance.label(faces[hit.face[hit.hit]], hit.bary[hit.hit]) + 1
            seen, t = hit.hit, hit.t
            if additions is not None:
                _, seen, t, label = _add(additions, rays, f, hit.hit, hit.t, None, labels=label)
            masks[f] = (label != BACKGROUND_LABEL).reshape(size, size)
            depth = torch.where(seen, t * (rays.directions @ forward[f]), 0.0)
            depths[f] = depth.reshape(size, size)
            segmentation[f] = label.to(torch.uint8).reshape(size, size)
    return images, masks, depths, segmentation


def _add(
    additions: Additions, rays: Rays, f: int, hit: Tensor, t: Tensor, colour: Tensor | None, labels: Tensor | None
) -> tuple[Tensor | None, Tensor, Tensor, Tensor | None]:
    """The glasses and the hair volume added to frame ``f``'s rays that met the head mesh at ``t`` where ``hit``:
    the composited ``colour`` (if given) and, for ``labels`` (if given), what each ray sees (a surface or the
    volume), at which distance, and its label."""
    a = additions
    surface = torch.where(hit, t, torch.inf)
    if a.glasses is not None:
        lens = ray_intersect(a.glasses, rays.origins, rays.directions, frame=f)
        nearer = lens.hit & (lens.t < surface)
        surface = torch.where(nearer, lens.t, surface)
        rotation = a.transforms[f, :3, :3]
        if colour is not None:  # shaded in the canonical frame, as the head is
            colour[nearer] = glasses_colour(lens.normal[nearer] @ rotation, rays.directions[nearer] @ rotation)
        if labels is not None:
            labels[nearer] = a.glasses_label
    seen = surface.isfinite()
    if a.hair is not None:
        rotation, shift = a.transforms[f, :3, :3], a.transforms[f, :3, 3]
        origins, dirs = (rays.origins - shift) @ rotation, rays.directions @ rotation  # world -> canonical
        volume = a.hair.composite(origins, dirs, surface, colour=colour is not None)
        if colour is not None:
            colour = volume.rgb + volume.transmittance[:, None] * colour
        if labels is not None:
            hair = volume.opacity > OPACITY_LABEL
            labels[hair] = a.hair_label
            surface = torch.where(hair, volume.median_t, surface)
            seen = seen | hair
    return colour, seen, surface, labels
