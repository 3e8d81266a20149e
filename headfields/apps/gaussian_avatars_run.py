"""A trained run's Gaussian avatar in GaussianAvatars' own files: the frames of every split of its capture, each with
what the run fitted, written by :func:`~headfields.models.gaussian_avatars.export.export_gaussian_avatars` with each
frame's capture timestep (what ``python -m headfields export`` runs for a ``gaussian_avatar`` run).

    ply = export_gaussian_avatars_run(load_run("outputs/gaussian_avatar"), "out/ga")
    # python local_viewer.py --point_path out/ga/point_cloud/iteration_30000/point_cloud.ply
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import torch

from ..data import SPLITS, held_out_splits
from ..heads import tracked_head
from ..models.gaussian_avatars.export import capture_timesteps, export_gaussian_avatars
from ..parametric import Head
from .runs import Run

__all__ = ["export_gaussian_avatars_run", "run_timesteps"]


def run_timesteps(run: Run) -> tuple[Head, list[int]]:
    """Every frame of ``run``'s splits (train, val, test: those of its capture, in that order) as one head, each
    split's with what the run fitted, and each frame's capture timestep (:func:`capture_timesteps`): what the npz
    of :func:`export_gaussian_avatars_run` is indexed by. A split the run did not load (a run trained before runs
    loaded every held-out split) is read from the capture.

        head, timesteps = run_timesteps(load_run("outputs/gaussian_avatar"))
    """
    loaded = {"train": run.subject.train, **run.subject.held_out}
    missing = [split for split in held_out_splits(run.subject.root) if split not in loaded]
    if missing:
        more = dataclasses.replace(run.config.subject, all_held_out=True).load(run.device, pixels=False).more_held_out
        loaded.update({split: frames for split, frames in more.items() if split in missing})
    heads, timesteps = [], []
    for split in (s for s in SPLITS if s in loaded):
        frames = loaded[split]
        # A split of the run's: its head as the run fitted it; one read now: as tracked (the export fits it).
        ran = split == "train" or split in run.subject.held_out
        heads.append(run.head(split) if ran else tracked_head(run.model.parametric, frames))
        timesteps += capture_timesteps(frames, start=len(timesteps))  # the frames of the splits before
    return _joined(heads), timesteps


def _joined(heads: list[Head]) -> Head:
    """The frames of ``heads`` (heads of one model) as one head, in order."""
    rows = {}
    for name in Head.PER_FRAME:
        values = [getattr(head, name) for head in heads]
        present = all(value is not None for value in values)
        rows[name] = torch.cat([value.to(values[0].device) for value in values]) if present else None
    return dataclasses.replace(heads[0], **rows)


def export_gaussian_avatars_run(run: Run, out: str | os.PathLike) -> Path:
    """The trained Gaussian avatar of ``run`` in GaussianAvatars' layout under ``out`` (:func:`export_gaussian_avatars`),
    the iteration the run's step, its ``flame_param.npz`` a row per timestep of every split of the capture
    (:func:`run_timesteps`): GaussianAvatars' ``render.py`` poses a frame of any split by its ``timestep_index``.
    Returns the PLY's path.

        ply = export_gaussian_avatars_run(load_run("outputs/gaussian_avatar"), "out/ga")
    """
    if not isinstance(run, Run):
        raise TypeError(f"run: expected a headfields.apps.runs.Run (load_run), got {type(run).__name__}")
    head, timesteps = run_timesteps(run)
    return export_gaussian_avatars(out, run.model, head, run.step, timesteps)
