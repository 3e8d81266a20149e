"""Render the synthetic head video in the INSTA format and save a contact sheet of two of its frames.

    python examples/synthetic_video.py --out data/synthetic_head --sheet docs/images/synthetic_video.png
    python examples/synthetic_video.py --orbit --out data/synthetic_portrait --sheet docs/images/synthetic_orbit.png
    python examples/synthetic_video.py --hair --glasses --out data/synthetic_hair --sheet docs/images/synthetic_hair.png

The sheet shows the first training frame and the test frame with the mouth open widest (test frames combine
expressions never combined in training): RGB, region segmentation, depth.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from PIL import Image

from headfields.data import FrameSet, load_insta_dataset
from headfields.synthetic.video import SyntheticVideoConfig, make_synthetic_video


def _label_colours(count: int) -> np.ndarray:
    """A fixed colour per segmentation label; 0 (background) is black."""
    rng = np.random.default_rng(7)
    colours = rng.integers(60, 255, size=(count, 3), dtype=np.uint8)
    colours[0] = 0
    return colours


def _panels(frames: FrameSet, index: int, colours: np.ndarray) -> list[np.ndarray]:
    rgb = frames.images[index].numpy()
    labels = colours[frames.segmentation[index].numpy()]
    depth = frames.depths[index].numpy()
    inside = depth > 0
    near, far = (depth[inside].min(), depth[inside].max()) if inside.any() else (0.0, 1.0)
    shade = np.where(inside, 255 - 200 * (depth - near) / max(far - near, 1e-6), 0).astype(np.uint8)
    return [rgb, labels, np.repeat(shade[..., None], 3, axis=-1)]


def contact_sheet(root: Path, out: Path, scale: int = 2) -> None:
    train, test = load_insta_dataset(root, "train"), load_insta_dataset(root, "test")
    colours = _label_colours(max(train.segmentation_labels.values()) + 1)
    mouth = [test.segmentation_labels[name] for name in ("teeth", "mouth_interior")]
    widest = int(np.isin(test.segmentation.numpy(), mouth).sum(axis=(1, 2)).argmax())
    rows = [np.concatenate(_panels(frames, index, colours), axis=1) for frames, index in ((train, 0), (test, widest))]
    sheet = np.concatenate(rows, axis=0).repeat(scale, axis=0).repeat(scale, axis=1)
    out.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(sheet).save(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path("data/synthetic_head"))
    parser.add_argument("--sheet", type=Path, default=None, help="also write a contact sheet PNG here")
    parser.add_argument("--frames", type=int, default=SyntheticVideoConfig.num_frames)
    parser.add_argument("--resolution", type=int, default=SyntheticVideoConfig.resolution)
    parser.add_argument(
        "--orbit", action="store_true", help="the 360° portrait video: SMPL-X head and torso turning before the camera"
    )
    parser.add_argument("--hair", action="store_true", help="a hair volume 1-6 cm beyond the scalp (not in the meshes)")
    parser.add_argument("--glasses", action="store_true", help="glasses (not in the meshes)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    sizes = dict(num_frames=args.frames, resolution=args.resolution, seed=args.seed, hair_volume=args.hair, glasses=args.glasses)
    config = SyntheticVideoConfig.portrait360(**sizes) if args.orbit else SyntheticVideoConfig(**sizes)
    start = time.perf_counter()
    make_synthetic_video(args.out, config)
    seconds = time.perf_counter() - start
    print(f"{config.num_frames} frames at {config.resolution}x{config.resolution} in {seconds:.1f} s -> {args.out}")
    if args.sheet is not None:
        contact_sheet(args.out, args.sheet)
        print(f"contact sheet -> {args.sheet}")


if __name__ == "__main__":
    main()
