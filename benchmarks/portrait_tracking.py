"""How close does the dynamic 360-degree video's tracking against the personal template come to the truth, and how
fast?

The synthetic 360-degree subject (``portrait_person``) is rendered (cached): the static turn and the dynamic video
(two turns, front-heavy, a swinging head, expressions and the jaw). The turn is tracked and its template built
(``track_turn``), the template's colours taken from the turn (``vertex_colours``), then the dynamic video tracked
against it (``track_with_template``). Both get the true landmark points projected with 0.5 px of noise at 128 px (a
detector's 2 px at 512) on the frames whose face is within 50 degrees of the camera, and the true masks. Printed:
the head's rotation error (the body's global rotation composed with the head's joint), the body's, and the head's
position (the template's head, neither hair nor torso, against the truth's: one scale about the camera for the
video) on the frames with a face, on those seen from behind (the body turned more than 120 degrees) and on all; the
jaw's on the frames with a face; minutes per 100 frames for each stage.

    python benchmarks/portrait_tracking.py                  # 128 px
    python benchmarks/portrait_tracking.py --resolution 64
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
from headfields.fitting import (
    SurfaceLandmarks,
    TemplateTrackingConfig,
    TurnTrackingConfig,
    track_turn,
    track_with_template,
    vertex_colours,
)
from headfields.fitting.landmark_tracking import OPENCV_FROM_WORLD
from headfields.parametric import load_model
from headfields.synthetic import cached_synthetic_video, portrait_person

IN_VIEW = math.radians(50.0)  # a face's yaw from the camera where a detector still finds it
BEHIND = math.radians(120.0)
NOISE_512 = 2.0  # the landmarks' noise, pixels of a 512 frame


def _video(config, seed: int, splits: tuple[str, ...] = ("train", "val")):
    """A rendered video's frames (its training and validation splits: the turns), the model and the truth in the
    tracker's world (its fixed camera at the origin; OPENCV_FROM_WORLD is its own inverse), and its landmark track."""
    root = cached_synthetic_video(config)
    parts = [load_insta_dataset(root, split) for split in splits]
    cameras = replace(parts[0].cameras, camera_to_world=torch.cat([p.cameras.camera_to_world for p in parts]))
    params = [p.params for p in parts]
    pose, translation = torch.cat([p.pose for p in params]), torch.cat([p.translation for p in params])
    expression = torch.cat([p.expression for p in params])
    model = load_model(root / "model", model_type="smplx")
    n = len(pose)
    to_tracker = OPENCV_FROM_WORLD.float() @ torch.linalg.inv(cameras.camera_to_world)
    vertices = model(shape=params[0].shape, expression=expression, pose=pose, translation=translation).vertices
    vertices = torch.einsum("nij,nvj->nvi", to_tracker[:, :3, :3], vertices) + to_tracker[:, None, :3, 3]
    body = to_tracker[:, :3, :3] @ batch_rodrigues(pose[:, 0])
    head = body @ batch_rodrigues(pose[:, model.joint_index("head")])
    surface = SurfaceLandmarks.static(model)
    on_face = surface.points(vertices, model.faces)
    k = on_face.shape[1]
    fixed = replace(cameras, camera_to_world=OPENCV_FROM_WORLD.float().expand(n, 4, 4).clone())
    pixels = project_points(fixed, on_face.reshape(-1, 3), torch.arange(n).repeat_interleave(k)).pixels.view(n, k, 2)
    noise = NOISE_512 * cameras.width / 512 * torch.randn(n, k, 2, generator=torch.Generator().manual_seed(seed))
    points = torch.full((n, 68, 2), float("nan"))
    points[:, surface.observed] = pixels + noise
    facing = torch.atan2(head[:, 0, 2], head[:, 2, 2]).abs()
    turned = torch.atan2(body[:, 0, 2], body[:, 2, 2]).abs()
    frames = dict(images=torch.cat([p.images for p in parts]), masks=torch.cat([p.masks for p in parts]), points=points)
    truth = dict(body=body, head=head, jaw=pose[:, model.joint_index("jaw")], vertices=vertices)
    return model, frames, truth, facing < IN_VIEW, turned > BEHIND, float(cameras.fx), surface


def _angle(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    cosine = ((a.transpose(-1, -2) @ b.to(a)).diagonal(dim1=-2, dim2=-1).sum(-1) - 1) / 2
    return torch.rad2deg(torch.acos(cosine.clamp(-1, 1)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--resolution", type=int, default=128, help="the videos' image size, pixels")
    parser.add_argument("--seed", type=int, default=0, help="the person (portrait_person's seed)")
    args = parser.parse_args()
    turn, dynamic = portrait_person(seed=args.seed, resolution=args.resolution)
    model, frames, truth, found, _, focal, surface = _video(turn, args.seed)
    n = len(found)
    start = time.perf_counter()
    fit = track_turn(model, frames["masks"], frames["points"], found, surface, focal, TurnTrackingConfig())
    posed = torch.einsum("nij,vj->nvi", fit.rotation, fit.template.canonical(model)) + fit.translation[:, None]
    colours = vertex_colours(posed, model.faces, frames["images"], fit.cameras)
    template_minutes = (time.perf_counter() - start) / 60 * 100 / n

    model, frames, truth, found, behind, focal, surface = _video(dynamic, args.seed)
    n = len(found)
    start = time.perf_counter()
    track = track_with_template(
        model, fit.template, colours, frames["images"], frames["masks"], frames["points"], found, surface, focal,
        TemplateTrackingConfig(),
    )  # fmt: skip
    minutes = (time.perf_counter() - start) / 60 * 100 / n
    params = track.params
    body = batch_rodrigues(params.pose[:, 0])
    head = body @ batch_rodrigues(params.pose[:, model.joint_index("head")])
    vertices = fit.template.posed(model, params.pose, params.translation, params.expression)
    on = torch.ones(model.num_vertices, dtype=torch.bool)
    for region in ("hair", "torso"):
        on[model.regions[region]] = False
    centre, true_centre = vertices[:, on].mean(1), truth["vertices"][:, on].mean(1)
    scale = (centre * true_centre).sum() / centre.square().sum()  # the monocular scale, about the camera
    position = (scale * centre - true_centre).norm(dim=-1) * 1000
    head_error, body_error = _angle(head, truth["head"]), _angle(body, truth["body"])
    jaw = torch.rad2deg((params.pose[:, model.joint_index("jaw")] - truth["jaw"]).norm(dim=-1))
    print(f"the turn: {len(fit.rotation)} frames, tracked with its template and colours, {template_minutes:.2f} min / 100 frames")
    print(f"the dynamic video: {n} frames at {args.resolution} px, tracked in {minutes:.2f} min / 100 frames\n")
    print("| frames | count | head rotation, median degrees | body rotation | head position, median mm | jaw |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, rows in (("with a face", found), ("seen from behind", behind), ("all", torch.ones_like(found))):
        jaw_cell = f"{jaw[rows].median():.2f}" if name == "with a face" else ""
        print(
            f"| {name} | {int(rows.sum())} | {head_error[rows].median():.2f} | {body_error[rows].median():.2f} | "
            f"{position[rows].median():.1f} | {jaw_cell} |"
        )


if __name__ == "__main__":
    main()
