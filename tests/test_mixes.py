"""Two of issue 8's combinations on a tiny synthetic video, built by their examples: INSTA with a hyper-dimensional
backward field (starts as INSTA's deformation, trains every piece) and MonoAvatar's anchored features with a hash
grid (with the grid's decoder inputs zeroed it renders exactly as MonoAvatar, and it trains every piece); the
models reject encoders without a width."""

import dataclasses
import importlib.util
from pathlib import Path

import pytest
import torch
from tiny_configs import TINY_GRID, TINY_INSTA, TINY_MONOAVATAR
from torch import nn

from headfields.deformers import TriangleFrameDeformer
from headfields.models.insta import Insta
from headfields.models.monoavatar import MonoAvatar
from headfields.parametric import load_model
from headfields.training import ray_batch

from helpers import raises_naming

EXAMPLES = Path(__file__).parents[1] / "examples"
GRID, INSTA = TINY_GRID, TINY_INSTA
MONOAVATAR = dataclasses.replace(TINY_MONOAVATAR, warp=None)


def _example(name: str):
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _parametric(frames):
    return load_model(frames.model_path, frames.model_type)


def _batch(frames, count, seed=0, frames_per_batch=None):
    return ray_batch(frames, count, torch.Generator().manual_seed(seed), torch.device("cpu"), frames_per_batch)


def _train(model, batch, steps):
    optimizer = model.configure_optimizer()
    losses = []
    for step in range(steps):
        model.before_step(step, batch.frames)
        out = model.training_step(batch, step)
        optimizer.zero_grad()
        out.loss.backward()
        optimizer.step()
        losses.append(float(out.loss.detach()))
    return losses


def _has_gradient(module: nn.Module) -> bool:
    return any(p.grad is not None and float(p.grad.abs().sum()) > 0 for p in module.parameters())


def test_hyper_insta_starts_with_insta_deformation(tiny_video):
    """The backward field's offsets start at zero and its hyper coordinates near zero: the chain's canonical
    points are the triangle frames' own."""
    train_frames, _ = tiny_video
    torch.manual_seed(0)
    model = _example("mix_hyper_insta").build(_parametric(train_frames), train_frames, INSTA)
    head = model.head(train_frames)
    rays = _batch(train_frames, 64).rays
    x = rays.origins + 0.5 * rays.directions  # near the head: the camera sits ~0.5-1 m away
    frame = rays.frame
    with torch.no_grad():
        chained = model.deformer(x, head, frame)
        alone = TriangleFrameDeformer()(x, head, frame)
    assert chained.points.shape == (64, 5)
    torch.testing.assert_close(chained.points[:, :3], alone.points, rtol=0, atol=1e-6)
    assert chained.points[:, 3:].abs().max() < 1e-3
    torch.testing.assert_close(chained.face, alone.face.masked_fill(~alone.valid, -1))


def test_hyper_insta_trains_every_piece(tiny_video):
    train_frames, _ = tiny_video
    torch.manual_seed(0)
    model = _example("mix_hyper_insta").build(_parametric(train_frames), train_frames, INSTA)
    losses = _train(model, _batch(train_frames, 128), 25)
    assert losses[-1] < 0.5 * losses[0], losses
    hyper = model.deformer.deformers[1]
    for name, module in {"hyper trunk": hyper.layers, "hyper output": hyper.output, "hash grid": model.encoder}.items():
        assert _has_gradient(module), name


def _anchored_pair(frames):
    """The combination and plain MonoAvatar with the same weights, the combination's grid inputs zeroed."""
    parametric = _parametric(frames)
    torch.manual_seed(0)
    mixed = _example("mix_anchored_hashgrid").build(parametric, frames, MONOAVATAR, GRID)
    plain = MonoAvatar(parametric, len(frames), MONOAVATAR)
    state = mixed.state_dict()
    first = "decoder.density_net.0.weight"
    anchored = plain.anchored.out_dim
    with torch.no_grad():
        mixed.decoder.density_net[0].weight[:, anchored:] = 0.0
    own = {k: v for k, v in state.items() if not k.startswith("point_encoder.")}
    own[first] = state[first][:, :anchored]
    plain.load_state_dict(own)
    return mixed, plain


def test_anchored_hashgrid_with_silent_grid_is_monoavatar(tiny_video):
    train_frames, _ = tiny_video
    mixed, plain = _anchored_pair(train_frames)
    rays = _batch(train_frames, 96, frames_per_batch=2).rays
    generator = lambda: torch.Generator().manual_seed(3)  # noqa: E731 - the same jitter for both
    with torch.no_grad():
        a = mixed.render(rays, mixed.head(train_frames), generator()).composite
        b = plain.render(rays, plain.head(train_frames), generator()).composite
    assert a.opacity.max() > 0.1  # the rays see the head
    torch.testing.assert_close(a.rgb, b.rgb, rtol=0, atol=1e-6)


def test_anchored_hashgrid_trains_every_piece(tiny_video):
    train_frames, _ = tiny_video
    torch.manual_seed(0)
    model = _example("mix_anchored_hashgrid").build(_parametric(train_frames), train_frames, MONOAVATAR, GRID)
    batch = _batch(train_frames, 256, frames_per_batch=2)
    keep = batch.mask.nonzero()[:96, 0]  # rays on the head, so every one has samples
    rays = dataclasses.replace(
        batch.rays, origins=batch.rays.origins[keep], directions=batch.rays.directions[keep], frame=batch.rays.frame[keep]
    )
    batch = dataclasses.replace(batch, rays=rays, rgb=batch.rgb[keep], mask=batch.mask[keep], depth=None, segmentation=None)
    losses = _train(model, batch, 25)
    assert losses[-1] < 0.5 * losses[0], losses
    for name in ("point_encoder", "anchored", "vertex_features", "decoder"):
        assert _has_gradient(getattr(model, name)), name


def test_encoders_without_a_width_are_rejected(tiny_video):
    train_frames, _ = tiny_video
    parametric = _parametric(train_frames)
    with raises_naming("encoder"):
        Insta(parametric, train_frames.segmentation_labels, INSTA, encoder=nn.Identity())
    with raises_naming("point_encoder"):
        MonoAvatar(parametric, len(train_frames), MONOAVATAR, point_encoder=nn.Identity())


@pytest.mark.parametrize("name", ["mix_hyper_insta", "mix_anchored_hashgrid"])
def test_examples_name_their_batch(name):
    module = _example(name)
    assert module.RAYS_PER_BATCH > 0 and (module.FRAMES_PER_BATCH is None or module.FRAMES_PER_BATCH > 0)
