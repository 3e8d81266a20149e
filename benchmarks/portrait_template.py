"""How close do a turning subject's tracking and personal template come to the truth, and how fast?

The synthetic 360-degree subject's static turn (``portrait_person``: hair and a shape of their own, a neutral face,
one even turn) is rendered (cached). Two templates are fitted to its one turn (the frames before the held-out ones):
``fit_mask_template`` under the true poses and cameras, and ``track_turn``'s, which tracks the poses itself from the
masks and the landmarks of the frames whose face is within 50 degrees of the camera (the true landmark points
projected, with 0.5 px of noise at 128 px: a detector's 2 px at 512). Printed beside the bare body's: the median
distance from the template's vertices to the true surface on the hair, on the rest of the head and on the torso
(after one similarity: a monocular tracker knows no scale), and minutes per 100 frames; then the tracked rotation's
error on the frames with a face and on those seen from behind (the body turned more than 120 degrees), and the
head's position (the true template, aligned to ours on the head, posed by each tracking; one scale about the
camera for the whole turn).

    python benchmarks/portrait_template.py                       # 128 px, the turn's 120 frames
    python benchmarks/portrait_template.py --resolution 64 --steps 300
"""

from __future__ import annotations

import argparse
import math
import time
from dataclasses import replace

import torch
from smplx.lbs import batch_rodrigues

from headfields.cameras import project_points
from headfields.data import load_insta_dataset
from headfields.fitting import MaskTemplateConfig, SurfaceLandmarks, TurnTrackingConfig, fit_mask_template, track_turn
from headfields.fitting.landmark_tracking import OPENCV_FROM_WORLD
from headfields.geometry import TriangleMesh, similarity_transform
from headfields.geometry.queries import closest_point
from headfields.parametric import load_model
from headfields.synthetic import cached_synthetic_video, load_template_truth, portrait_person

REGIONS = ("hair", "head", "torso")
IN_VIEW = math.radians(50.0)  # a face's yaw from the camera where a detector still finds it
BEHIND = math.radians(120.0)
NOISE_512 = 2.0  # the landmarks' noise, pixels of a 512 frame


def _aligned(points: torch.Tensor, target: torch.Tensor, on: torch.Tensor) -> torch.Tensor:
    """``points`` moved onto ``target`` (the same vertices) by the similarity that best aligns the vertices ``on``."""
    rotation, scale, shift = similarity_transform(points[on], target[on])
    return scale * points @ rotation.T + shift


def _parts(model) -> dict[str, torch.Tensor]:
    hair = torch.zeros(model.num_vertices, dtype=torch.bool)
    hair[model.regions["hair"]] = True
    torso = torch.zeros_like(hair)
    torso[model.regions["torso"]] = True
    return {"hair": hair, "head": ~hair & ~torso, "torso": torso}


def _errors(model, vertices: torch.Tensor, truth: torch.Tensor, faces: torch.Tensor) -> dict[str, float]:
    """Median mm from ``vertices`` to the true surface after one similarity, by region (the head: neither hair nor
    torso)."""
    aligned = _aligned(vertices, truth, torch.ones(len(vertices), dtype=torch.bool))
    distance = closest_point(TriangleMesh(truth[None], faces), aligned).distance * 1000
    return {name: float(distance[on].median()) for name, on in _parts(model).items()}


def _angle(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    cosine = ((a.transpose(-1, -2) @ b).diagonal(dim1=-2, dim2=-1).sum(-1) - 1) / 2
    return torch.rad2deg(torch.acos(cosine.clamp(-1, 1)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--resolution", type=int, default=128, help="the turn's image size, pixels")
    parser.add_argument("--steps", type=int, default=MaskTemplateConfig().steps, help="each template fit's steps")
    parser.add_argument("--seed", type=int, default=0, help="the person (portrait_person's seed)")
    args = parser.parse_args()
    turn, _ = portrait_person(seed=args.seed, resolution=args.resolution)
    start = time.perf_counter()
    root = cached_synthetic_video(turn)
    print(f"the turn: {turn.num_frames} frames at {args.resolution} px ({time.perf_counter() - start:.0f} s to render or read)")
    parts = [load_insta_dataset(root, split) for split in ("train", "val")]  # one turn (the test frames make another)
    cameras = replace(parts[0].cameras, camera_to_world=torch.cat([p.cameras.camera_to_world for p in parts]))
    pose = torch.cat([p.params.pose for p in parts])
    translation = torch.cat([p.params.translation for p in parts])
    masks = torch.cat([p.masks for p in parts])
    n = len(masks)
    model = load_model(root / "model", model_type="smplx")
    shape = parts[0].params.shape
    truth, faces = load_template_truth(root)
    config = MaskTemplateConfig(steps=args.steps)

    # The truth in the tracker's world (its fixed camera at the origin; OPENCV_FROM_WORLD is its own inverse).
    to_tracker = OPENCV_FROM_WORLD.float() @ torch.linalg.inv(cameras.camera_to_world)
    true_rotation = to_tracker[:, :3, :3] @ batch_rodrigues(pose[:, 0])
    bare = model(shape=shape).canonical_vertices
    posed = model(shape=shape, pose=pose, translation=translation).vertices
    # The turn is rigid: each frame's body is true_rotation @ bare + true_shift.
    true_shift = (torch.einsum("nij,nvj->nvi", to_tracker[:, :3, :3], posed) + to_tracker[:, None, :3, 3]).mean(1)
    true_shift = true_shift - torch.einsum("nij,j->ni", true_rotation, bare.mean(0))
    surface = SurfaceLandmarks.static(model)
    on_face = surface.points(posed, model.faces)
    k = on_face.shape[1]
    pixels = project_points(cameras, on_face.reshape(-1, 3), torch.arange(n).repeat_interleave(k)).pixels.view(n, k, 2)
    noise = NOISE_512 * args.resolution / 512 * torch.randn(n, k, 2, generator=torch.Generator().manual_seed(args.seed))
    points = torch.full((n, 68, 2), float("nan"))
    points[:, surface.observed] = pixels + noise
    yaw = torch.atan2(true_rotation[:, 0, 2], true_rotation[:, 2, 2]).abs()
    found, behind = yaw < IN_VIEW, yaw > BEHIND

    rows = [("the bare body", "", _errors(model, model().canonical_vertices, truth, faces), "")]
    start = time.perf_counter()
    template = fit_mask_template(model, masks, cameras, pose, translation, config)
    minutes = (time.perf_counter() - start) / 60 * 100 / n
    rows.append(("fitted to the masks", "true", _errors(model, template.canonical(model), truth, faces), f"{minutes:.2f}"))
    start = time.perf_counter()
    focal = cameras.fx
    fit = track_turn(model, masks, points, found, surface, focal, TurnTrackingConfig(template=config))
    minutes = (time.perf_counter() - start) / 60 * 100 / n
    rows.append(("track_turn's", "tracked", _errors(model, fit.template.canonical(model), truth, faces), f"{minutes:.2f}"))
    print("| template | poses | hair, median mm | rest of the head | torso | minutes per 100 frames |")
    print("|---|---|---:|---:|---:|---:|")
    for name, poses, errors, cost in rows:
        print(f"| {name} | {poses} | " + " | ".join(f"{errors[r]:.2f}" for r in REGIONS) + f" | {cost} |")

    # The head's position: the true template aligned to ours on the head, posed by our tracking and by the truth.
    ours = fit.template.canonical(model)
    head = _parts(model)["head"]
    aligned = _aligned(truth, ours, head)
    tracked = torch.einsum("nij,vj->nvi", fit.rotation, aligned) + fit.translation[:, None]
    true_posed = (
        torch.einsum("nij,vj->nvi", true_rotation, truth - bare.mean(0))
        + (true_shift + torch.einsum("nij,j->ni", true_rotation, bare.mean(0)))[:, None]
    )
    above = ~_parts(model)["torso"]
    centre, true_centre = tracked[:, above].mean(1), true_posed[:, above].mean(1)
    scale = (centre * true_centre).sum() / centre.square().sum()  # the monocular scale, about the camera
    position = (scale * centre - true_centre).norm(dim=-1) * 1000
    rotation = _angle(fit.rotation, true_rotation)
    print("\n| frames | count | rotation, median degrees | head position, median mm |")
    print("|---|---:|---:|---:|")
    for name, on in (("with a face", found), ("seen from behind", behind), ("all", torch.ones_like(found))):
        print(f"| {name} | {int(on.sum())} | {rotation[on].median():.2f} | {position[on].median():.1f} |")


if __name__ == "__main__":
    main()
