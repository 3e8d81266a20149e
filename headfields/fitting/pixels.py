"""The pixels a fit draws from and compares a render with: each frame's pixel pools (:class:`FramePixels`: the
foreground and every pixel) and MonoNPHM's silhouette term (:func:`soft_jaccard`)."""

from __future__ import annotations

import torch
from jaxtyping import Float
from torch import Tensor

from ..cameras import PinholeCameras, Rays, image_pixels, pixel_rays
from ..data import FrameSet

__all__ = ["JACCARD_SMOOTH", "FramePixels", "soft_jaccard"]

JACCARD_SMOOTH = 5.0  # MonoNPHM's get_jaccard_distance_loss(smooth=5), its result times 5


class FramePixels:
    """The pixels of a frame set that tracking draws from: per frame the foreground and every pixel, their colours
    in [0, 1], the masks (all ones without) and the mouth interior (None where the frames have no such label)."""

    def __init__(self, frames: FrameSet, device: torch.device | str):
        self.cameras: PinholeCameras = frames.cameras.to(device)
        self.pixels = image_pixels(self.cameras)
        n = len(frames)
        self.rgb = frames.images.to(device).float().reshape(n, -1, 3) / 255.0
        masks = frames.masks
        self.mask = masks.to(device).reshape(n, -1) if masks is not None else torch.ones_like(self.rgb[..., 0], dtype=torch.bool)
        self.has_masks = masks is not None
        self.foreground = [torch.nonzero(m.cpu())[:, 0] for m in self.mask]
        labels = frames.segmentation_labels or {}
        self.mouth = None
        if frames.segmentation is not None and "mouth_interior" in labels:
            self.mouth = frames.segmentation.to(device).reshape(n, -1) == labels["mouth_interior"]

    def draw(self, frame: int, count: int, fraction: float, generator: torch.Generator) -> Tensor:
        """Pixel ids of frame ``frame``: ``fraction`` of ``count`` on the foreground, the rest anywhere."""
        fg = self.foreground[frame]
        k = int(round(count * fraction)) if len(fg) else 0
        pick_fg = fg[torch.randint(0, max(len(fg), 1), (k,), generator=generator)] if k else fg[:0]
        pick_any = torch.randint(0, len(self.pixels), (count - k,), generator=generator)
        return torch.cat([pick_fg, pick_any]).to(self.pixels.device)

    def rays(self, frame: int, pick: Tensor) -> Rays:
        return pixel_rays(self.cameras, frame, self.pixels[pick])


def soft_jaccard(opacity: Float[Tensor, " N"], mask: Float[Tensor, " N"]) -> Tensor:
    """MonoNPHM's silhouette term: (1 - J) x 5 with J = (sum y yhat + 5) / (sum (y + yhat) - sum y yhat + 5)."""
    both = (opacity * mask).sum()
    return (1 - (both + JACCARD_SMOOTH) / ((opacity + mask).sum() - both + JACCARD_SMOOTH)) * 5
