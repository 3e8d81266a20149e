"""The mesh shell is an optional filter of every sampler: with it, every sample lies within ``shell`` of its frame's
posed mesh (checked by brute force over the triangles); without it (None) nothing is dropped, samples off the
template survive, and every NeRF model trains."""

import dataclasses

import pytest
import torch
from tiny_configs import TINY_INSTA, TINY_MONOAVATAR

from headfields.geometry import closest_point
from headfields.heads import tracked_head
from headfields.models.insta import Insta
from headfields.models.monoavatar import MonoAvatar
from headfields.models.portrait360 import Portrait360, Portrait360Config
from headfields.parametric import load_model
from headfields.renderers import RenderContext, StratifiedSampler
from headfields.training import ray_batch

from helpers import fit

SHELL = 0.03


def _brute_force_distance(vertices, faces, points):
    """Distance from each point to the nearest of the triangles, by sampling every triangle densely (an upper bound
    within the sampling step of the exact distance)."""
    u, v = torch.meshgrid(torch.linspace(0, 1, 9), torch.linspace(0, 1, 9), indexing="ij")
    keep = (u + v) <= 1
    u, v = u[keep], v[keep]
    a, b, c = vertices[faces[:, 0]], vertices[faces[:, 1]], vertices[faces[:, 2]]
    surface = (a[:, None] + u[:, None] * (b - a)[:, None] + v[:, None] * (c - a)[:, None]).reshape(-1, 3)
    return torch.cdist(points, surface).amin(dim=1)


def test_the_shell_keeps_exactly_the_samples_near_the_mesh(tiny_video):
    train_frames, _ = tiny_video
    parametric = load_model(train_frames.model_path, train_frames.model_type)
    head = tracked_head(parametric, train_frames)
    batch = ray_batch(train_frames, 64, torch.Generator().manual_seed(0), torch.device("cpu"), head=head)
    rays, generator = batch.rays, lambda: torch.Generator().manual_seed(1)
    everything = StratifiedSampler(24, padding=0.05)(rays, head, None, generator())
    shelled = StratifiedSampler(24, padding=0.05, shell=SHELL)(rays, head, None, generator())
    hit = int((everything.counts() > 0).sum())
    assert len(everything) == 24 * hit  # no shell: every sample of every ray that meets its box
    points = everything.midpoints(rays.origins, rays.directions)
    frame = rays.frame[everything.ray]
    near = closest_point(head.posed_mesh, points, frame).distance <= SHELL
    assert 0 < int(near.sum()) < len(points)  # the shell does cut: some samples are off the template
    kept = shelled.midpoints(rays.origins, rays.directions)
    torch.testing.assert_close(kept, points[near])  # exactly the near ones, in order
    one = int(frame[0])
    mine = frame == one
    brute = _brute_force_distance(head.vertices[one], head.faces, points[mine])
    assert (brute[near[mine]] <= SHELL + 2e-3).all()  # the kept ones are near by brute force too


def _models(frames):
    parametric = load_model(frames.model_path, frames.model_type)
    labels = frames.segmentation_labels
    portrait = Portrait360Config(num_samples=24, shell=None)
    return {
        "INSTA": lambda: Insta(parametric, labels, dataclasses.replace(TINY_INSTA, shell=None)),
        "MonoAvatar": lambda: MonoAvatar(parametric, len(frames), dataclasses.replace(TINY_MONOAVATAR, shell=None)),
        "Portrait360": lambda: Portrait360(parametric, portrait),
    }


@pytest.mark.parametrize("name", ["INSTA", "MonoAvatar", "Portrait360"])
def test_every_nerf_model_trains_with_the_shell_off(tiny_video, name):
    train_frames, _ = tiny_video
    torch.manual_seed(0)
    model = _models(train_frames)[name]()
    sampler = model.sampler.coarse if hasattr(model.sampler, "coarse") else model.sampler
    assert sampler.shell is None
    head = tracked_head(model.parametric, train_frames)
    batch = ray_batch(train_frames, 512, torch.Generator().manual_seed(0), torch.device("cpu"), frames_per_batch=2, head=head)
    keep = batch.mask.nonzero()[:96, 0]  # rays on the head: what the field has to learn
    batch = dataclasses.replace(batch.select(keep), depth=None, segmentation=None)
    batch.context = RenderContext(torch.Generator().manual_seed(2))
    losses, _, _ = fit(model, batch, 25)
    assert losses[-1] < 0.5 * losses[0], losses
    assert all(torch.isfinite(torch.tensor(losses)))
