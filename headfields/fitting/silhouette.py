"""Silhouettes without a renderer: a surface fits a frame's mask when each of its points projects inside the mask
and each pixel of the mask's outline has a point projected near it -- the two sides of a 2D chamfer between the
projected points and the mask (SMPLify-X's silhouette term; the visual hull's, over many views). Unlike a
rasterised silhouette it pulls from any distance, which is what a template's first fit to a turning subject needs
before the renderer's pixels can take over; a point's side of the mask needs no visibility (every point of a
solid body projects inside its silhouette).

    masks = MaskDistances(frames.masks)  # [N, H, W]
    pixels = project_points(cameras, points.reshape(-1, 3), frame).pixels.reshape(n, p, 2)
    loss = masks.outside(pixels).mean() + masks.unreached(pixels).mean()
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from jaxtyping import Bool, Float, Int
from torch import Tensor

from ..checks import check_float, check_shape

__all__ = ["MaskDistances"]


class MaskDistances:
    """Frames' masks ``[N, H, W]`` as distances to their edges: each mask's outline (the midpoints of the pixel edges
    between it and the rest: its boundary, half a pixel past the outermost centres) and each pixel centre's signed
    distance to it (in pixels: negative on the mask), so a point on the mask's edge is 0 outside, not half a pixel.
    Where the mask meets the image's border it has no outline: what lies beyond is not seen."""

    def __init__(self, masks: Bool[Tensor, "N H W"]):
        check_shape("masks", masks, [None, None, None])
        if masks.dtype != torch.bool:
            raise ValueError(f"masks: expected booleans [N, H, W], got {masks.dtype}")
        empty = torch.nonzero(~masks.flatten(1).any(1))[:, 0]
        if len(empty):
            raise ValueError(f"masks: expected every frame to show the subject, frame {int(empty[0])} has no mask pixel")
        masks = masks.cpu()
        n, h, w = masks.shape
        # Beyond the image nothing is known: the border's pixels carry on (a torso cut by the frame's edge has no
        # outline there, and a point projected past it is as far out as the border pixel it lies beyond).
        padded = F.pad(masks[:, None].float(), (1, 1, 1, 1), mode="replicate")[:, 0] > 0.5
        rows, cols = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
        centres = torch.stack([cols, rows], dim=-1).float() + 0.5  # (x, y) [H, W, 2]
        neighbours = {
            (-1, 0): padded[:, 1:-1, :-2],
            (1, 0): padded[:, 1:-1, 2:],
            (0, -1): padded[:, :-2, 1:-1],
            (0, 1): padded[:, 2:, 1:-1],
        }
        self.outlines: list[Tensor] = []
        # float16 (half the memory of a long video's maps): within 1e-3 of the distance, 0.4 px at 700.
        self.distance = torch.empty(n, h, w, dtype=torch.float16)
        for f in range(n):
            edges = [
                centres[masks[f] & ~seen[f]] + 0.5 * torch.tensor(step, dtype=torch.float32) for step, seen in neighbours.items()
            ]
            outline = torch.cat(edges)
            self.outlines.append(outline)
            distance = _distances(outline, h, w)
            self.distance[f] = torch.where(masks[f], -distance, distance)  # signed: negative on the mask
        self.size = (w, h)

    def outside(self, pixels: Float[Tensor, "B P 2"], frames: Int[Tensor, " B"] | None = None) -> Float[Tensor, "B P"]:
        """How far each projected point ``pixels`` (x, y in pixels) lies outside its frame's mask (0 inside): the
        signed distance, bilinear between pixel centres; past the image's border, the border's. Row ``b`` of
        ``pixels`` is frame ``frames[b]`` (default: every frame in order). Differentiable in ``pixels``."""
        frames = self._frames(pixels, frames)
        w, h = self.size
        field = self.distance[frames].to(pixels)[:, None]
        scale = torch.tensor([2.0 / w, 2.0 / h]).to(pixels)
        grid = (pixels * scale - 1.0)[:, :, None]  # grid_sample's [-1, 1] spans the image's edges (align_corners=False)
        signed = F.grid_sample(field, grid, mode="bilinear", padding_mode="border", align_corners=False)[:, 0, :, 0]
        return F.relu(signed)

    def unreached(self, pixels: Float[Tensor, "B P 2"], frames: Int[Tensor, " B"] | None = None) -> Float[Tensor, " B"]:
        """Per row of ``pixels`` (frame ``frames[b]``, default every frame in order), the mean distance from each point
        of the frame's mask outline to the nearest projected point: 0 where the points reach the whole outline.
        Differentiable in ``pixels``."""
        frames = self._frames(pixels, frames)
        outlines = [self.outlines[f] for f in frames.tolist()]
        return torch.stack([torch.cdist(o.to(pixels), p).amin(1).mean() for o, p in zip(outlines, pixels, strict=True)])

    def _frames(self, pixels: Tensor, frames: Tensor | None) -> Tensor:
        n = len(self.outlines)
        if frames is None:
            check_float("pixels", pixels, [n, None, 2])
            return torch.arange(n)
        check_shape("frames", frames, [None])
        check_float("pixels", pixels, [len(frames), None, 2])
        if frames.is_floating_point() or len(frames) and not (0 <= int(frames.min()) and int(frames.max()) < n):
            raise ValueError(f"frames: expected frame ids in [0, {n}), got {frames.tolist()}")
        return frames.cpu()


def _distances(outline: Tensor, h: int, w: int) -> Tensor:
    """Each pixel centre's distance to the nearest ``outline`` point ``[M, 2]`` (pixel-edge midpoints), exact: on the
    grid of half pixels, where centres and midpoints are all nodes, the Euclidean distance transform to the outline's
    nodes (SciPy's, linear in the pixels: brute force took a second a 512-pixel frame). ``[H, W]`` float32; with no
    outline (the mask fills the image), ``h + w``: farther than any point of it."""
    if len(outline) == 0:
        return torch.full((h, w), float(h + w))
    from scipy.ndimage import distance_transform_edt

    grid = np.ones((2 * h + 1, 2 * w + 1), dtype=bool)
    nodes = (2 * outline).round().long().numpy()
    grid[nodes[:, 1], nodes[:, 0]] = False
    return torch.from_numpy(distance_transform_edt(grid)[1::2, 1::2] / 2).float()
