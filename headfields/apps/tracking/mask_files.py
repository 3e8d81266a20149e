"""The user's own foreground masks (a matting tool's output: RobustVideoMatting, BackgroundMattingV2), one image a
source frame, read into the tracker's crop: the alpha channel where an image has one, else its grey level.

    alpha = read_mask_files("alpha/", frames.source_frames, crop, 512, (width, height))  # uint8 [N, 512, 512]
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from jaxtyping import Int, UInt8
from PIL import Image
from torch import Tensor

from .ingest import Crop, crop_frames

__all__ = ["read_mask_files"]

MASK_SUFFIXES = (".png", ".jpg", ".jpeg")


def read_mask_files(
    folder: Path, source: Int[Tensor, " N"], crop: Crop, size: int, frame_size: tuple[int, int]
) -> UInt8[Tensor, "N S S"]:
    """The masks of the video's stored frames ``source`` (indices into the folder's images, sorted by name), each
    resized to the decoded frames' ``frame_size`` (width, height), cropped by ``crop`` and resized to ``size``."""
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in MASK_SUFFIXES) if folder.is_dir() else []
    if len(files) <= int(source.max()):
        raise ValueError(f"masks: expected a mask image for each of the video's frames in {str(folder)!r}, found {len(files)}")
    out = []
    for i in source.tolist():
        try:
            image = Image.open(files[i])
            grey = np.asarray(image.getchannel("A") if "A" in image.getbands() else image.convert("L"), dtype=np.uint8)
        except OSError as error:
            raise ValueError(f"masks: cannot read {str(files[i])!r} as an image ({error})") from None
        resized = np.asarray(Image.fromarray(grey).resize(frame_size, Image.BILINEAR))
        out.append(torch.from_numpy(resized.copy())[..., None].expand(-1, -1, 3))
    return crop_frames(torch.stack(out), crop, size)[..., 0]
