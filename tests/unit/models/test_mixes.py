"""Two of the mixes on a tiny synthetic video (``headfields.models.mixes``): INSTA with a hyper-dimensional
backward field (starts as INSTA's deformation, trains every piece) and MonoAvatar's anchored features with a hash
grid (with the grid's decoder inputs zeroed it renders exactly as MonoAvatar, and it trains every piece); the
models reject encoders without a width; each example script runs its library mix."""

import ast
import dataclasses
import runpy
import sys
from pathlib import Path

import pytest
import torch
from tiny_configs import TINY_GRID, TINY_INSTA, TINY_MONOAVATAR
from torch import nn

from headfields.heads import tracked_head
from headfields.models.insta import Insta, insta_deformer, insta_face_masks
from headfields.models.mixes import MIXES, anchored_hashgrid, hyper_insta
from headfields.models.monoavatar import MonoAvatar
from headfields.parametric import load_model
from headfields.renderers import RenderContext
from headfields.training import ray_batch

from helpers import fit, raises_naming

EXAMPLES = Path(__file__).parents[3] / "examples"
GRID, INSTA = TINY_GRID, TINY_INSTA
MONOAVATAR = dataclasses.replace(TINY_MONOAVATAR, error_correction=None)


def _parametric(frames):
    return load_model(frames.model_path, frames.model_type)


def _batch(model, frames, count, seed=0, frames_per_batch=None):
    head = tracked_head(model.parametric, frames)
    return ray_batch(frames, count, torch.Generator().manual_seed(seed), torch.device("cpu"), frames_per_batch, head=head)


def _train(model, batch, steps):
    return fit(model, batch, steps)[0]


def _has_gradient(module: nn.Module) -> bool:
    return any(p.grad is not None and float(p.grad.abs().sum()) > 0 for p in module.parameters())


def test_hyper_insta_starts_with_insta_deformation(tiny_video):
    """The backward field's offsets start at zero and its hyper coordinates near zero: the chain's canonical
    points are the triangle frames' own."""
    train_frames, _ = tiny_video
    torch.manual_seed(0)
    model = hyper_insta(_parametric(train_frames), train_frames, INSTA)
    batch = _batch(model, train_frames, 64)
    rays, head = batch.rays, batch.head
    x = rays.origins + 0.5 * rays.directions  # near the head: the camera sits ~0.5-1 m away
    frame = rays.frame
    with torch.no_grad():
        chained = model.field.deformer(x, head, frame)
        alone = insta_deformer(insta_face_masks(model.parametric(), INSTA))(x, head, frame)  # INSTA's own
    assert chained.points.shape == (64, 5)
    torch.testing.assert_close(chained.points[:, :3], alone.points, rtol=0, atol=1e-6)
    assert chained.points[:, 3:].abs().max() < 1e-3
    torch.testing.assert_close(chained.face, alone.face.masked_fill(~alone.valid, -1))


def test_hyper_insta_trains_every_piece(tiny_video):
    train_frames, _ = tiny_video
    torch.manual_seed(0)
    model = hyper_insta(_parametric(train_frames), train_frames, INSTA)
    losses = _train(model, _batch(model, train_frames, 128), 25)
    assert losses[-1] < 0.5 * losses[0], losses
    hyper = model.field.deformer.deformers[1]
    for name, module in {"hyper trunk": hyper.layers, "hyper output": hyper.output, "hash grid": model.field.encoder}.items():
        assert _has_gradient(module), name


def _anchored_pair(frames):
    """The combination and plain MonoAvatar with the same weights, the combination's grid inputs zeroed."""
    parametric = _parametric(frames)
    torch.manual_seed(0)
    mixed = anchored_hashgrid(parametric, frames, MONOAVATAR, GRID)
    plain = MonoAvatar(parametric, len(frames), MONOAVATAR)
    first = "field.decoder.density_net.0.weight"
    anchored = plain.field.encoder.out_dim
    with torch.no_grad():
        mixed.field.decoder.density_net[0].weight[:, anchored:] = 0.0
    state = mixed.state_dict()
    # The mix's encoder is [anchored features, grid]: its first part is plain MonoAvatar's encoder.
    own = {k.replace("field.encoder.encoders.0.", "field.encoder."): v for k, v in state.items()}
    own = {k: v for k, v in own.items() if not k.startswith(("field.encoder.encoders.", "field.encoder.mappings."))}
    own[first] = state[first][:, :anchored]
    plain.load_state_dict(own)
    return mixed, plain


def test_anchored_hashgrid_with_silent_grid_is_monoavatar(tiny_video):
    train_frames, _ = tiny_video
    mixed, plain = _anchored_pair(train_frames)
    batch = _batch(plain, train_frames, 96, frames_per_batch=2)
    rays, head = batch.rays, batch.head
    generator = lambda: torch.Generator().manual_seed(3)  # noqa: E731 - the same jitter for both
    with torch.no_grad():
        a = mixed.render(rays, head, RenderContext(generator())).composite
        b = plain.render(rays, head, RenderContext(generator())).composite
    assert a.opacity.max() > 0.1  # the rays see the head
    torch.testing.assert_close(a.rgb, b.rgb, rtol=0, atol=1e-6)


def test_anchored_hashgrid_trains_every_piece(tiny_video):
    train_frames, _ = tiny_video
    torch.manual_seed(0)
    model = anchored_hashgrid(_parametric(train_frames), train_frames, MONOAVATAR, GRID)
    batch = _batch(model, train_frames, 256, frames_per_batch=2)
    keep = batch.mask.nonzero()[:96, 0]  # rays on the head, so every one has samples
    batch = dataclasses.replace(batch.select(keep), depth=None, segmentation=None)
    losses = _train(model, batch, 25)
    assert losses[-1] < 0.5 * losses[0], losses
    anchored, grid = model.field.encoder.encoders
    pieces = {"hash grid": grid, "anchored": anchored.anchored, "vertex features": anchored.vertex_features}
    for name, module in {**pieces, "decoder": model.field.decoder}.items():
        assert _has_gradient(module), name


def test_encoders_without_a_width_are_rejected(tiny_video):
    train_frames, _ = tiny_video
    parametric = _parametric(train_frames)
    with raises_naming("encoder"):
        Insta(parametric, train_frames.segmentation_labels, INSTA, encoder=nn.Identity())
    with raises_naming("point_encoder"):
        MonoAvatar(parametric, len(train_frames), MONOAVATAR, point_encoder=nn.Identity())


@pytest.mark.parametrize("name", sorted(MIXES))
def test_each_example_is_the_train_command_of_its_mix(name, monkeypatch):
    import headfields.apps.commands

    called = []
    monkeypatch.setattr(headfields.apps.commands, "main", lambda argv: called.append(argv) or 0)
    monkeypatch.setattr(sys, "argv", [f"{name}.py", "--max-minutes", "5"])
    with pytest.raises(SystemExit) as exit_status:
        runpy.run_path(str(EXAMPLES / f"{name}.py"), run_name="__main__")
    assert exit_status.value.code == 0 and called == [["train", name, "--max-minutes", "5"]]
    mix = MIXES[name]
    assert mix.rays_per_batch > 0 and mix.peer in ("INSTA", "MonoAvatar", "MonoNPHM", "Portrait360")
    assert ast.get_docstring(ast.parse((EXAMPLES / f"{name}.py").read_text())).startswith(mix.name)
