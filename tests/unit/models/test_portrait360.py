"""The 360-degree portrait on a tiny orbit video: the blend basis starts as the identity (the same render as the
chain without it), training lowers the loss and reaches every piece, both blend kinds train, the subject's
views fall into front, side and back bins as the orbit says, the shared loop trains with balanced views, its step
decides nothing by the step number (one CUDA graph phase), and bad configurations raise."""

import dataclasses

import pytest
import torch
from tiny_configs import TINY_PORTRAIT

from headfields.deformers import DeformerChain
from headfields.heads import tracked_head
from headfields.models.portrait360 import Portrait360, Portrait360Config
from headfields.parametric import load_model
from headfields.renderers import BACK, FRONT, SIDE, RenderContext
from headfields.training import TrainingConfig, ray_batch, train
from headfields.training.step_graph import check_graph

from helpers import eager_and_graphed, fit, raises_naming

TINY = TINY_PORTRAIT


def _model(frames, config=TINY, seed=0):
    torch.manual_seed(seed)
    return Portrait360(load_model(frames.model_path, frames.model_type), config)


def _batch(model, frames, count, seed=0):
    head = tracked_head(model.parametric, frames)
    return ray_batch(frames, count, torch.Generator().manual_seed(seed), torch.device("cpu"), head=head)


def test_the_blend_basis_starts_as_the_identity(tiny_orbit_video):
    train_frames, _ = tiny_orbit_video
    model = _model(train_frames)
    batch = _batch(model, train_frames, 128)
    rays, head = batch.rays, batch.head
    with torch.no_grad():
        with_blend = model.render(rays, head).composite
        model.field.deformer = DeformerChain(*list(model.field.deformer.deformers)[:2])  # skinning, triangle frames
        without = model.render(rays, head).composite
    torch.testing.assert_close(with_blend.rgb, without.rgb, rtol=0, atol=0)
    assert with_blend.opacity.max() > 0  # the rays see the bust


@pytest.mark.parametrize("blend", ["deformation", "colour"])
def test_loss_falls_and_every_piece_gets_gradients(tiny_orbit_video, blend):
    train_frames, _ = tiny_orbit_video
    model = _model(train_frames, dataclasses.replace(TINY, blend=blend))
    losses, _, _ = fit(model, _batch(model, train_frames, 256), 30)  # about a fifth of the first loss by then
    assert losses[-1] < 0.5 * losses[0], losses
    pieces = {"hash grid": model.field.encoder, "decoder": model.field.decoder}
    if blend == "deformation":
        blend_fields = model.field.deformer.deformers[2]
        pieces.update(basis=blend_fields.basis_net, mapping=blend_fields.mapping)
    else:
        pieces["mapping"] = model.field.condition.network
    for name, module in pieces.items():
        grads = [p.grad for p in module.parameters() if p.grad is not None]
        assert grads and sum(float(g.abs().sum()) for g in grads) > 0, name


def test_view_bins_follow_the_orbit(tiny_orbit_video):
    """One turn of the subject before a fixed camera: facing the camera, then sideways, then away, and back."""
    train_frames, _ = tiny_orbit_video
    model = _model(train_frames)
    bins = model.view_bins(train_frames, tracked_head(model.parametric, train_frames))
    assert set(bins.tolist()) == {FRONT, SIDE, BACK}
    assert bins[0] == FRONT  # the orbit starts facing the camera
    yaw = train_frames.params.pose[:, 0, 1]  # the global yaw the generator swept
    facing_away = torch.cos(yaw) < -0.7  # more than ~135 degrees from the camera (the head swings a little)
    assert (bins[facing_away] == BACK).all()


def test_the_training_loop_trains_with_balanced_views(tiny_orbit_video, tmp_path):
    train_frames, eval_frames = tiny_orbit_video
    config = TrainingConfig(
        max_iterations=3, rays_per_batch=64, eval_every=0, checkpoint_every=0, eval_frames=1, balance_views=True
    )
    metrics = train(_model(train_frames), train_frames, eval_frames, tmp_path, config)
    assert metrics["iterations"] == 3
    with raises_naming("balance_views"):
        TrainingConfig(balance_views=True, frames_per_batch=2)


def test_its_step_decides_nothing_by_the_step_number(tiny_orbit_video):
    """TrainingConfig.cuda_graph: one graph phase for every step, and the step is indeed the same at any step number
    (the same batch, jitter and weights: the same loss and gradients at step 0 and at step 10^6)."""
    train_frames, _ = tiny_orbit_video
    model = _model(train_frames)
    assert {model.graph_phase(step) for step in (0, 1, 7, 1000, 10**6)} == {True}
    check_graph(model, torch.device("cuda"), 1)  # taken where a graph can be
    with raises_naming("cuda_graph"):
        check_graph(model, torch.device("cpu"), 1)
    batch = _batch(model, train_frames, 64)
    runs = []
    for step in (0, 10**6):
        batch.context = RenderContext(torch.Generator().manual_seed(3))
        model.zero_grad(set_to_none=True)
        out = model.training_step(batch, step)
        out.loss.backward()
        runs.append([out.loss.detach()] + [p.grad for p in model.parameters() if p.grad is not None])
    assert len(runs[0]) == len(runs[1]) > 1 and all(torch.equal(a, b) for a, b in zip(*runs, strict=True))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_its_step_is_captured_replayed_and_trains_as_the_eager_step_on_cuda(tiny_orbit_video, tmp_path, monkeypatch):
    train_frames, eval_frames = tiny_orbit_video

    def train_one(graphed: bool) -> dict:
        config = TrainingConfig(
            max_iterations=60, rays_per_batch=64, samples_per_batch=1024, early_stop=1e-4, fixed_shapes=True,
            cuda_graph=graphed, balance_views=True, eval_every=0, checkpoint_every=0, eval_frames=1,
        )  # fmt: skip
        return train(_model(train_frames), train_frames, eval_frames, tmp_path / str(graphed), config, device="cuda")

    graph, runs = eager_and_graphed(monkeypatch, train_one)
    assert graph.captures >= 1 and not graph.failed and graph.graphs
    # replayed steps run the eager step's kernels (the hash grid's atomic sums in any order): the runs score alike
    assert abs(runs[True]["psnr"] - runs[False]["psnr"]) < 0.5, (runs[True]["psnr"], runs[False]["psnr"])


def test_bad_configuration_raises(tiny_orbit_video):
    train_frames, _ = tiny_orbit_video
    with raises_naming("blend"):
        Portrait360Config(blend="texture")
    with raises_naming("num_samples"):
        Portrait360Config(num_samples=0)
    with raises_naming("shell"):
        Portrait360Config(shell=-1.0)
    with raises_naming("padding"):
        Portrait360Config(padding=0.0)
