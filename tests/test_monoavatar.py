"""MonoAvatar on a tiny synthetic video: the loss falls and every piece (UV rasterisation, U-Net, mesh-anchored
encoder, decoder, error-correction field) receives gradients; the correction is off at test time; the vertex
features follow the expression; the shared training loop runs it; bad configurations raise."""

import dataclasses

import pytest
import torch
from tiny_configs import TINY_MONOAVATAR

from headfields.checkpoints import load_checkpoint
from headfields.heads import tracked_head
from headfields.models.monoavatar import MonoAvatar
from headfields.parametric import load_model
from headfields.training import TrainingConfig, ray_batch, train

from helpers import fit, raises_naming

TINY = TINY_MONOAVATAR


@pytest.fixture
def video(tiny_video):
    return tiny_video


def _model(frames, config=TINY, seed=0):
    torch.manual_seed(seed)
    return MonoAvatar(load_model(frames.model_path, frames.model_type), len(frames), config)


def _head_batch(model, frames, count, seed=0):
    """Rays from two frames, only where the head is (so every ray has samples)."""
    head = tracked_head(model.parametric, frames)
    generator, cpu = torch.Generator().manual_seed(seed), torch.device("cpu")
    batch = ray_batch(frames, 4 * count, generator, cpu, frames_per_batch=2, head=head)
    batch.generator = torch.Generator().manual_seed(seed + 1)
    keep = batch.mask.nonzero()[:count, 0]
    return dataclasses.replace(batch.select(keep), depth=None, segmentation=None)


def test_loss_falls_and_every_piece_gets_gradients(video):
    train_frames, _ = video
    model = _model(train_frames)
    losses, optimizer, out = fit(model, _head_batch(model, train_frames, 96), 30)  # the correction is on from step 3
    assert losses[-1] < 0.5 * losses[0], losses
    assert "elastic" in out.logs and "magnitude" in out.logs
    assert optimizer.param_groups[0]["lr"] == pytest.approx(5e-3 * 0.1 ** (29 / 100))
    encoder = model.field.encoder
    pieces = {
        "U-Net": encoder.vertex_features.unet,
        "mesh-anchored MLP": encoder.anchored,
        "decoder": model.field.decoder,
        "correction trunk": model.correction.trunk,
        "correction latents": model.correction.latent,
    }
    for name, module in pieces.items():
        grads = [p.grad for p in module.parameters() if p.grad is not None]
        assert grads and sum(float(g.abs().sum()) for g in grads) > 0, name


def test_the_correction_moves_training_renders_only(video):
    train_frames, _ = video
    model = _model(train_frames)
    batch = _head_batch(model, train_frames, 32)
    rays, head = batch.rays, batch.head
    model.before_step(TINY.error_correction.start_step, head)
    with torch.no_grad():
        model.field.decoder.density_net[-1].bias[0] = 300.0  # an opaque field, so a shifted sample shows
        model.eval()
        before = model.render_rays(rays, head)
        for out in (model.correction.translation_head, model.correction.center_head):
            torch.nn.init.constant_(out.bias, 0.01)  # a 1 cm correction everywhere
        evaluated = model.render_rays(rays, head)  # evaluation: no correction
        model.train()
        corrected = model.render_rays(rays, head)  # what training_step renders
        model.before_step(TINY.error_correction.start_step - 1, head)
        early = model.render_rays(rays, head)  # before its start step: no correction
    assert (corrected - before).abs().max() > 1e-4
    torch.testing.assert_close(evaluated, before, rtol=0, atol=0)
    torch.testing.assert_close(early, before, rtol=0, atol=0)


def test_features_see_the_expression_not_the_head_pose_or_the_identity(video):
    """Variant D reads V(expression, pose) - V(0, 0) in the head's frame: a rigidly moved head (global rotation,
    translation) of another identity with the same expression gets the same features. (A neck rotation does
    change them: it bends the neck against the head and drives pose correctives; so does an open jaw, whose
    displacements depend on where the identity's jaw joint is.)"""
    train_frames, _ = video
    model = _model(train_frames)
    parametric = model.parametric
    generator = torch.Generator().manual_seed(5)
    expression = 0.5 * torch.randn(1, parametric.num_expression, generator=generator).expand(2, -1)
    pose = torch.zeros(2, parametric.num_joints, 3)
    pose[1, 0] = torch.tensor([0.3, -0.5, 0.1])  # global
    translation = torch.tensor([[0.0, 0.0, 0.0], [0.05, -0.02, 0.1]])
    with torch.no_grad():
        features = []
        for shape in (torch.zeros(parametric.num_shape), 0.5 * torch.randn(parametric.num_shape, generator=generator)):
            head = parametric(shape=shape, expression=expression, pose=pose, translation=translation)
            features.append(model.field.encoder.frame_features(head, torch.tensor([0, 1])))
        neutral = parametric(shape=0.5 * torch.ones(parametric.num_shape), translation=translation)
        at_rest = model.field.encoder.frame_features(neutral, torch.tensor([0, 1]))
    torch.testing.assert_close(features[0][1], features[0][0], atol=1e-4, rtol=1e-3)  # head pose removed
    torch.testing.assert_close(features[1], features[0], atol=1e-3, rtol=1e-2)  # identity removed
    assert (features[0][0] - at_rest[0]).abs().max() > 1e-3  # the expression is seen
    # A neutral face of any identity, anywhere, reads the zero displacement map.
    zero = model.field.encoder.vertex_features(torch.zeros(1, parametric.num_vertices, 3))
    torch.testing.assert_close(at_rest, zero.expand_as(at_rest), atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("features", ["displacement", "code"])
def test_vertex_features_follow_the_expression_and_static_ones_do_not(video, features):
    train_frames, _ = video
    model = _model(train_frames, dataclasses.replace(TINY, features=features))
    head = tracked_head(model.parametric, train_frames)
    frame = torch.arange(head.num_frames)
    per_frame = model.field.encoder.frame_features(head, frame)
    assert per_frame.shape == (head.num_frames, head.vertices.shape[1], 8)
    spread = (per_frame - per_frame.mean(0)).abs().amax()
    assert spread > 1e-3 * per_frame.abs().amax()  # frames with different expressions get different features
    static = _model(train_frames, dataclasses.replace(TINY, features="static")).field.encoder.frame_features(head, frame)
    assert torch.equal(static, static[:1].expand_as(static))


def test_the_training_loop_runs_it_and_resumes_exactly(video, tmp_path):
    """Straight through 4 steps, or 2 then a resume into a fresh model: the same weights, learning rate and
    correction step (the correction switches on at step 3, after the resume; the lr decays every step)."""
    train_frames, eval_frames = video
    config = TrainingConfig(
        max_iterations=4, rays_per_batch=64, frames_per_batch=2, eval_every=0, checkpoint_every=2, eval_frames=1
    )
    straight = _model(train_frames)
    metrics = train(straight, train_frames, eval_frames, tmp_path / "straight", config)
    assert metrics["iterations"] == 4 and (tmp_path / "straight" / "side_by_side.png").exists()
    train(_model(train_frames), train_frames, eval_frames, tmp_path / "halves", dataclasses.replace(config, max_iterations=2))
    resumed = _model(train_frames, seed=7)  # other initial weights: everything must come from the checkpoint
    train(resumed, train_frames, eval_frames, tmp_path / "halves", config)
    assert resumed.correction.step == straight.correction.step == 3  # before_step of the last step
    states = [load_checkpoint(tmp_path / run / "checkpoint.pt") for run in ("straight", "halves")]
    lr = [state["optimizer"]["param_groups"][0]["lr"] for state in states]
    assert lr[0] == lr[1] == pytest.approx(5e-3 * 0.1 ** (3 / 100))
    for name, value in straight.state_dict().items():
        if isinstance(value, torch.Tensor):
            torch.testing.assert_close(resumed.state_dict()[name], value, rtol=0, atol=1e-6, msg=name)


def test_bad_configuration_raises(video):
    train_frames, _ = video
    with raises_naming("head_joint"):
        _model(train_frames, dataclasses.replace(TINY, head_joint="tail"))
    with raises_naming("features"):
        _model(train_frames, dataclasses.replace(TINY, features="voxels"))
    with raises_naming("num_frames"):
        MonoAvatar(load_model(train_frames.model_path), 0, TINY)
    parametric = load_model(train_frames.model_path)
    parametric.uvs = None  # a model file without 'vt' / 'ft'
    with raises_naming("uvs"):
        MonoAvatar(parametric, len(train_frames), TINY)
