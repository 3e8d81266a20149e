"""Derive the MediaPipe -> iBUG-68 table of headfields.apps.tracking.correspondence: on the synthetic head's video (the
truth known), the MediaPipe index whose detected point lies nearest (median over frames) to each projected static
iBUG point (17..67). Prints the table and each pair's median distance in pixels of a 256-pixel frame; the module keeps
all but the brows (17..26), whose pairs sit furthest apart (its docstring says why).

    python tools/mediapipe_ibug_table.py [--frames 60]
"""

from __future__ import annotations

import argparse
import tempfile

import torch

from headfields.apps.tracking.mediapipe import FaceLandmarker
from headfields.cameras import project_points
from headfields.data import load_insta_dataset
from headfields.parametric import load_model
from headfields.synthetic import SyntheticVideoConfig, make_synthetic_video


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=60)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        config = SyntheticVideoConfig(num_frames=args.frames, num_val=1, num_test=2, resolution=256, supersampling=1)
        root = make_synthetic_video(tmp, config)
        frames = load_insta_dataset(root, "train")
        model = load_model(root / "model")
        p = frames.params
        truth = model(shape=p.shape, expression=p.expression, pose=p.pose, translation=p.translation).landmarks
        n, k = truth.shape[:2]
        index = torch.arange(n).repeat_interleave(k)
        ibug = project_points(frames.cameras, truth.reshape(-1, 3), index).pixels.reshape(n, k, 2)
        faces = FaceLandmarker()(frames.images)
        found = faces.found
        detected = faces.points[found, :, :2]
        distance = (ibug[found][:, :, None] - detected[:, None]).norm(dim=-1).median(dim=0).values  # [K, 468]
        best = distance.argmin(dim=1)
        first = 68 - k
        print("MEDIAPIPE_FOR_IBUG = {")
        for i in range(k):
            print(f"    {first + i}: {int(best[i])},  # {float(distance[i, best[i]]):.2f} px")
        print("}")


if __name__ == "__main__":
    main()
