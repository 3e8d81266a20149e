"""MonoNPHM's reconstruction of a video and its measures: :func:`reconstruct` tracks the training frames and then
the held-out frames (:mod:`~headfields.models.mononphm.tracking`), and scores the held-out frames' renders (PSNR,
SSIM, L1) and, where the capture has true meshes, the tracked surface next to the capture's tracked FLAME mesh, two
ways (:mod:`~headfields.models.mononphm.evaluation`): as MonoNPHM's paper does (``scan``: the face region of a depth
scan of the true head to the mesh after a similarity ICP, L1 and L2 distances, normals, F-scores at 1, 2.5, 5 and
10 mm), and over the whole head the camera sees (``geometry_score``: symmetric Chamfer distance, normal
consistency, F-scores at 5 to 20 mm, no alignment).

    result = reconstruct(prior, subject.train, subject.eval, subject.parametric, cpu_config(), truth=truth)
    result.metrics["psnr"], result.metrics["chamfer"], result.metrics["chamfer_flame"]
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import torch
from torch import Tensor

from ...checks import check_count, check_positive
from ...data import FrameSet, write_obj
from ...fields import padded_box
from ...heads import tracked_head
from ...metrics import l1, psnr, ssim
from ...parametric import Head, SubjectModel
from ...progress import Progress, format_seconds
from ...training import comparison, evenly_spread, render_image, save_png
from .evaluation import face_scan, geometry_score, scan_score
from .model import MonoNphm, MonoNphmConfig
from .tracking import MonoNphmTracking, TrackingHistory, track_frames, track_sequence

if TYPE_CHECKING:
    from .prior import Nphm

__all__ = ["Reconstruction", "reconstruct"]

BUDGETS = ("run", "training")  # what reconstruct's max_minutes bounds (TrainingConfig.budget's meaning)
_IMAGE_SCORES = (("psnr", psnr), ("ssim", ssim), ("l1", l1))  # each held-out render's, of the whole image and the head


@dataclass
class Reconstruction:
    """What :func:`reconstruct` fitted and measured."""

    model: MonoNphm  # fitted to the training frames, and to the held-out frames' expressions and poses ("held_out")
    metrics: dict
    history: TrackingHistory  # of the training frames
    held_out_history: TrackingHistory


def _render_frames(model: MonoNphm, head: Head, frames: FrameSet, ids: list[int], chunk: int) -> list[Tensor]:
    device = model.box.device
    return [render_image(model, frames, f, chunk, device, head=head) for f in ids]


def _image_scores(renders: list[Tensor], frames: FrameSet, ids: list[int]) -> dict[str, float]:
    """Mean PSNR, SSIM and L1 over the frames, of the whole image and, with masks, of the head (``_head``)."""
    truth = [frames.images[f].float() / 255 for f in ids]
    pairs = list(zip(renders, truth, strict=True))
    scores = {name: sum(float(f(r, t)) for r, t in pairs) / len(ids) for name, f in _IMAGE_SCORES}
    if frames.masks is not None:
        masks = [frames.masks[f].bool() for f in ids]
        for name, f in _IMAGE_SCORES:
            scores[f"{name}_head"] = sum(float(f(r, t, mask=m)) for (r, t), m in zip(pairs, masks, strict=True)) / len(ids)
    return scores


def _share_budget(
    model: MonoNphm,
    held_out: FrameSet,
    tracking: MonoNphmTracking,
    minutes: float,
    whole: bool,
    seconds: float,
    renders: int,
    meshes: list[int],
    resolution: int,
) -> tuple[float, float]:
    """The minutes of tracking of the train and of the held-out frames within ``minutes``. With ``whole`` (the
    budget of the whole of :func:`reconstruct`), what the ``renders`` (timed: ``seconds``, done once already) and
    the ``meshes`` (one chunk of SDF queries timed and scaled to ``resolution``^3) will take is set aside first;
    what is left is shared by the two splits' steps."""
    budget = 60.0 * minutes
    left = budget
    if whole:
        head = tracked_head(model.parametric, held_out)
        box = padded_box(head.vertices[0].detach(), model.config.sampler.padding)
        points = box[0] + (box[1] - box[0]) * torch.rand(MESH_PROBE_POINTS, 3, device=box.device)
        start = time.perf_counter()
        with torch.no_grad():
            model.field.geometry(points, torch.zeros(len(points), dtype=torch.long, device=box.device), head)
        mesh_seconds = (time.perf_counter() - start) * resolution**3 / MESH_PROBE_POINTS
        left = budget - 2 * seconds - mesh_seconds * len(meshes)  # the renders after tracking take what they took before
        floor = TRACKING_FLOOR * budget
        note = ""
        if left < floor:
            note = (
                f"; over the budget by about {format_seconds(floor - left)}: fewer eval_frames or geometry_frames, or a "
                "smaller mesh_resolution, fit it (--eval-frames, --mononphm.geometry-frames, --mononphm.mesh-resolution)"
            )
        left = max(left, floor)
        print(
            f"budget {format_seconds(budget)}: tracking {format_seconds(left)}, then rendering {renders} held-out frames "
            f"(about {format_seconds(seconds)}) and {len(meshes)} meshes at {resolution}^3 (about "
            f"{format_seconds(mesh_seconds * len(meshes))}){note}"
        )
    c, n = tracking, model.track("train").count
    train_steps = c.first_frame.steps + (n - 1) * c.per_frame.steps + c.joint.steps
    held_steps = len(held_out) * c.per_frame.steps
    share = left * train_steps / (train_steps + held_steps)
    return share / 60, (left - share) / 60


MESH_PROBE_POINTS = 4096  # SDF queries timed to estimate a mesh's marching cubes
TRACKING_FLOOR = 0.1  # the share of the budget tracking keeps however long the evaluation takes


def reconstruct(
    prior: Nphm,
    train: FrameSet,
    held_out: FrameSet,
    parametric: SubjectModel,
    config: MonoNphmConfig | None = None,
    *,
    truth: tuple[Tensor, Tensor] | None = None,
    out: Path | None = None,
    landmarks: tuple[Tensor, Tensor] | None = None,
    eval_frames: int = 5,
    max_minutes: float | None = None,
    budget: Literal["run", "training"] = "run",
    seed: int = 0,
    chunk: int = 2048,
) -> Reconstruction:
    """MonoNPHM on a video: fit the frozen ``prior`` to the ``train`` frames (:func:`track_sequence`), then the
    ``held_out`` frames' expressions and poses alone (:func:`track_frames`), with ``config``'s renderer and tracking,
    and measure, on ``eval_frames`` held-out frames spread over the split (their ids: ``eval_frames``): PSNR / SSIM /
    L1 before tracking (the prior's mean codes on the tracked FLAME pose: ``*_mean_codes``) and after; and on
    ``config.geometry_frames`` of them (``geometry_frames``), with ``truth`` (the true vertices ``[N, V, 3]`` and faces),
    the Chamfer distance of the tracked surface (``chamfer``, a fraction of the head's size; ``chamfer_mm`` in mm,
    normal consistency, F-scores) and of the capture's tracked FLAME mesh (``chamfer_flame``), over the surface the
    frame's camera sees (meshes at ``config.mesh_resolution``). ``out``: where renders and meshes go; ``landmarks``:
    detected landmarks of the train and the held-out frames (see :func:`track_sequence`); ``seed``:
    the tracking's rays; ``chunk``: rays rendered at once.

    ``max_minutes`` with ``budget`` "run" is the budget of the whole: the renders are timed and the meshing
    measured ahead, and the tracking of both splits gets what is left (shared by their steps), said before it
    starts; with "training" the tracking alone gets it (the measures follow outside it).

        result = reconstruct(prior, subject.train, subject.eval, subject.parametric, cpu_config(), max_minutes=10)
        result.metrics["psnr"], result.model.head(subject.eval, "held_out")
    """
    config = config or MonoNphmConfig()
    check_count("eval_frames", eval_frames, 1)
    check_count("chunk", chunk, 1)
    check_positive("max_minutes", max_minutes)
    if budget not in BUDGETS:
        raise ValueError(f"budget: expected one of {BUDGETS}, got {budget!r}")
    device = prior.template_anchors.device
    model = MonoNphm(prior, parametric, len(train), config, held_out_frames=len(held_out)).to(device)
    ids = evenly_spread(min(eval_frames, len(held_out)), len(held_out))
    measured = (
        []
        if truth is None or held_out.mesh_vertices is None
        else evenly_spread(min(config.geometry_frames, len(ids)), len(held_out))
    )
    metrics: dict = {"train_frames": len(train), "eval_frames": ids, "geometry_frames": measured}
    began = time.perf_counter()
    with torch.no_grad():  # the tracked head without codes: the prior's mean expression on the tracked pose
        before = _image_scores(_render_frames(model, tracked_head(parametric, held_out), held_out, ids, chunk), held_out, ids)
    metrics.update({f"{k}_mean_codes": v for k, v in before.items()})
    train_minutes = held_minutes = None
    if max_minutes is not None:
        seconds = time.perf_counter() - began
        train_minutes, held_minutes = _share_budget(
            model, held_out, config.tracking, max_minutes, budget == "run", seconds, len(ids), measured,
            config.mesh_resolution,
        )  # fmt: skip
    start = time.perf_counter()
    history = track_sequence(
        model, train, config.tracking, None if landmarks is None else landmarks[0], max_minutes=train_minutes, seed=seed
    )
    held_history = track_frames(
        model, held_out, config.tracking, None if landmarks is None else landmarks[1], max_minutes=held_minutes, seed=seed
    )
    metrics["tracking_seconds"] = time.perf_counter() - start
    metrics["tracking_steps"] = {**history.steps, "held_out": held_history.steps.get("stage1", 0)}
    head = model.head(held_out, "held_out")
    with torch.no_grad():
        renders = _render_frames(model, head, held_out, ids, chunk)
    metrics.update(_image_scores(renders, held_out, ids))
    if out is not None:
        for f, image in zip(ids, renders, strict=True):
            save_png(comparison(image, held_out.images[f].float() / 255), Path(out) / "renders" / f"{f:05d}.png")
    if not measured:
        metrics["chamfer"] = metrics["chamfer_flame"] = None
        metrics["chamfer_note"] = (
            "no ground-truth geometry for this capture" if truth is None or held_out.mesh_vertices is None
            else "geometry_frames is 0"
        )  # fmt: skip
        return Reconstruction(model, metrics, history, held_history)
    scores, flame, scans, scans_flame = [], [], [], []
    bar = Progress(len(measured), "meshes", "mesh")
    for f in measured:
        with torch.no_grad():
            surface = model.extract_mesh(head, f, config.mesh_resolution)
        bar.update(1)
        eye = held_out.cameras.camera_to_world[f, :3, 3].to(device)
        true_vertices, true_faces = truth[0][f].to(device), truth[1].to(device)
        scores.append(geometry_score(surface.vertices, surface.faces, true_vertices, true_faces, eye))
        tracked = held_out.mesh_vertices[f].to(device), held_out.mesh_faces.to(device)
        flame.append(geometry_score(*tracked, true_vertices, true_faces, eye))
        points, normals = face_scan(held_out, f, true_vertices, true_faces)
        scans.append(scan_score(surface.vertices, surface.faces, points, normals))
        scans_flame.append(scan_score(*tracked, points, normals))
        if out is not None:
            write_obj(Path(out) / f"mesh_{f:05d}.obj", surface.vertices.cpu().numpy(), surface.faces.cpu().numpy())
    bar.close()
    mean = lambda values: sum(values) / len(values)  # noqa: E731
    metrics["chamfer"] = mean([s.relative for s in scores])
    metrics["chamfer_flame"] = mean([s.relative for s in flame])
    metrics["chamfer_mm"] = 1000 * mean([s.chamfer for s in scores])
    metrics["chamfer_flame_mm"] = 1000 * mean([s.chamfer for s in flame])
    metrics["chamfer_l2_mm2"] = 1e6 * mean([s.chamfer_l2 for s in scores])
    metrics["chamfer_l2_flame_mm2"] = 1e6 * mean([s.chamfer_l2 for s in flame])
    metrics["normal_consistency"] = mean([s.normal_consistency for s in scores])
    metrics["normal_consistency_flame"] = mean([s.normal_consistency for s in flame])
    metrics["f_score"] = {k: mean([s.f_score[k] for s in scores]) for k in scores[0].f_score}
    metrics["f_score_flame"] = {k: mean([s.f_score[k] for s in flame]) for k in flame[0].f_score}
    metrics["head_size_m"] = mean([s.size for s in scores])
    for key, measures in (("scan", scans), ("scan_flame", scans_flame)):
        metrics[key] = {
            "chamfer_l1_mm": 1000 * mean([m.chamfer_l1 for m in measures]),
            "chamfer_l2_mm": 1000 * mean([m.chamfer_l2 for m in measures]),
            "normals": mean([m.normal_consistency for m in measures]),
            "f_score": {k: mean([m.f_score[k] for m in measures]) for k in measures[0].f_score},
        }
    metrics["scan_region"] = "face" if held_out.segmentation is not None else "all the head the camera sees (no segmentation)"
    return Reconstruction(model, metrics, history, held_history)
