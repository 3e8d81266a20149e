"""How close does a personal template fitted to a turning subject's masks come to the true one, and how fast?

The synthetic 360-degree subject's static turn (``portrait_person``: hair and a shape of their own, a neutral face,
one even turn) is rendered (cached), and ``fit_mask_template`` fits SMPL-X's shape and per-vertex offsets to its
masks, given the true poses and cameras (the turn's own tracking is still to come: issue 94). Printed beside the bare
body's: the median distance from the template's vertices to the true surface on the hair, on the rest of the head
and on the torso, and the fit's minutes per 100 frames.

    python benchmarks/portrait_template.py                       # 128 px, the turn's 120 frames
    python benchmarks/portrait_template.py --resolution 64 --steps 300
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace

import torch

from headfields.data import load_insta_dataset
from headfields.fitting import MaskTemplateConfig, fit_mask_template
from headfields.geometry import TriangleMesh
from headfields.geometry.queries import closest_point
from headfields.parametric import load_model
from headfields.synthetic import cached_synthetic_video, load_template_truth, portrait_person

REGIONS = ("hair", "head", "torso")


def _errors(model, vertices: torch.Tensor, truth: torch.Tensor, faces: torch.Tensor) -> dict[str, float]:
    """Median mm from ``vertices`` to the true surface, by region (the head: neither hair nor torso)."""
    distance = closest_point(TriangleMesh(truth[None], faces), vertices).distance * 1000
    hair = torch.zeros(len(vertices), dtype=torch.bool)
    hair[model.regions["hair"]] = True
    torso = torch.zeros_like(hair)
    torso[model.regions["torso"]] = True
    parts = {"hair": hair, "head": ~hair & ~torso, "torso": torso}
    return {name: float(distance[parts[name]].median()) for name in REGIONS}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--resolution", type=int, default=128, help="the turn's image size, pixels")
    parser.add_argument("--steps", type=int, default=MaskTemplateConfig().steps, help="the fit's steps")
    parser.add_argument("--seed", type=int, default=0, help="the person (portrait_person's seed)")
    args = parser.parse_args()
    turn, _ = portrait_person(seed=args.seed, resolution=args.resolution)
    start = time.perf_counter()
    root = cached_synthetic_video(turn)
    print(f"the turn: {turn.num_frames} frames at {args.resolution} px ({time.perf_counter() - start:.0f} s to render or read)")
    parts = [load_insta_dataset(root, split) for split in ("train", "val", "test")]
    cameras = replace(parts[0].cameras, camera_to_world=torch.cat([p.cameras.camera_to_world for p in parts]))
    pose = torch.cat([p.params.pose for p in parts])
    translation = torch.cat([p.params.translation for p in parts])
    masks = torch.cat([p.masks for p in parts])
    model = load_model(root / "model", model_type="smplx")
    truth, faces = load_template_truth(root)
    start = time.perf_counter()
    template = fit_mask_template(model, masks, cameras, pose, translation, MaskTemplateConfig(steps=args.steps))
    seconds = time.perf_counter() - start
    rows = [("the bare body", _errors(model, model().canonical_vertices, truth, faces), "")]
    per_100 = seconds / 60 * 100 / len(masks)
    rows.append(("fitted to the masks", _errors(model, template.canonical(model), truth, faces), f"{per_100:.2f}"))
    print("| template | hair, median mm | rest of the head | torso | fit, minutes per 100 frames |")
    print("|---|---:|---:|---:|---:|")
    for name, errors, minutes in rows:
        print(f"| {name} | " + " | ".join(f"{errors[r]:.2f}" for r in REGIONS) + f" | {minutes} |")
    ratio = {r: rows[0][1][r] / max(rows[1][1][r], 1e-9) for r in REGIONS}
    print("bare / fitted: " + ", ".join(f"{r} {ratio[r]:.2f}x" for r in REGIONS) + f"; {args.steps} steps in {seconds:.0f} s")


if __name__ == "__main__":
    main()
