"""MonoAvatar on a tiny synthetic video: the loss falls and every piece (UV rasterisation, U-Net, both networks'
mesh-anchored MLPs and decoders, error-correction field) receives gradients; both passes are supervised, the
fine one on the coarse and the importance samples together, and the shared UV CNN runs once for both; the
correction trains at a tenth of the learning rate and is off at test time; the recipes (paper = default); each
of the paper's vertex-feature ablations builds and trains; the vertex features follow the expression; the
shared training loop runs it; bad configurations raise."""

import dataclasses

import numpy as np
import pytest
import torch
from tiny_configs import TINY_CODE_DECODER, TINY_MONOAVATAR

from headfields.cameras import Rays
from headfields.checks import trusted_values
from headfields.device_paths import cuda_paths
from headfields.encoders import UVCodeDecoderConfig
from headfields.encoders.mesh_features import FEATURE_KINDS
from headfields.encoders.vertex_features import CodeBroadcastVertexFeatures, CodeMlpVertexFeatures
from headfields.heads import tracked_head
from headfields.models.monoavatar import MonoAvatar, MonoAvatarConfig, cpu_config, paper_config
from headfields.parametric import load_model
from headfields.renderers import RenderContext, SampleSlots, render_nerf
from headfields.renderers.hierarchical import merge_samples
from headfields.training import OptimizerConfig, TrainingConfig, ray_batch, train
from headfields.training.checkpoints import load_checkpoint

from helpers import eager_and_graphed, fit, raises_naming

TINY = TINY_MONOAVATAR


def _with_features(features: str):
    """TINY with vertex features ``features`` (the code CNN's variant with a code decoder of its sizes)."""
    decoder = {"code_decoder": TINY_CODE_DECODER} if features in ("code_cnn", "code") else {}
    return dataclasses.replace(TINY, features=features, **decoder)


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
    batch.context = RenderContext(torch.Generator().manual_seed(seed + 1))
    keep = batch.mask.nonzero()[:count, 0]
    return dataclasses.replace(batch.select(keep), depth=None, segmentation=None)


def test_loss_falls_and_every_piece_gets_gradients(video):
    train_frames, _ = video
    model = _model(train_frames)
    losses, optimizer, out = fit(model, _head_batch(model, train_frames, 96), 20)  # the correction is on from step 3
    assert losses[-1] < 0.5 * losses[0], losses
    assert {"coarse", "fine", "elastic", "magnitude"} <= set(out.logs)
    # The rest at the model's rate, the correction at a tenth of it (MonoAvatar: 1e-3 -> 1e-4 and 1e-4 -> 1e-5).
    assert optimizer.param_groups[0]["lr"] == pytest.approx(5e-3 * 0.1 ** (19 / 100))
    assert optimizer.param_groups[1]["lr"] == pytest.approx(5e-4 * 0.1 ** (19 / 100))
    encoder = model.field.encoder
    pieces = {
        "U-Net": encoder.vertex_features.unet,
        "fine mesh-anchored MLP": encoder.anchored,
        "fine decoder": model.field.decoder,
        "coarse mesh-anchored MLP": model.coarse_field.encoder.anchored,
        "coarse decoder": model.coarse_field.decoder,
        "correction trunk": model.correction.trunk,
        "correction heads": model.correction.rotation_head,
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
        for network in (model.field, model.coarse_field):
            network.decoder.density_net[-1].bias[0] = 300.0  # an opaque field, so a shifted sample shows
        model.eval()
        before = model.render_rays(rays, head)
        for out in (model.correction.translation_head, model.correction.center_head):
            torch.nn.init.constant_(out[-1].bias, 0.01)  # a 1 cm correction everywhere
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


@pytest.mark.parametrize("features", ["displacement", "code_cnn", "codes_mlp", "codes"])
def test_vertex_features_follow_the_expression_and_static_ones_do_not(video, features):
    train_frames, _ = video
    model = _model(train_frames, _with_features(features))
    head = tracked_head(model.parametric, train_frames)
    frame = torch.arange(head.num_frames)
    per_frame = model.field.encoder.frame_features(head, frame)
    width = 8 + head.expression.shape[1] + 3 * (head.pose.shape[1] - 1) if features == "codes" else 8  # codes appended
    assert per_frame.shape == (head.num_frames, head.vertices.shape[1], width)
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
    model = _model(train_frames)
    batch = _head_batch(model, train_frames, 24)
    coarse, _ = model.render_passes(batch.rays, batch.head)
    half = batch.select(slice(0, len(batch.rgb) // 2)).rays
    with raises_naming("sampler"):  # samples drawn for other rays
        render_nerf(model.field, half, batch.head, coarse.samples)
    with raises_naming("fine"):
        merge_samples(coarse.samples, dataclasses.replace(coarse.samples, num_rays=coarse.samples.num_rays + 1))


def test_its_graph_phase_is_the_error_correction_s_warm_up(video):
    """TrainingConfig.cuda_graph takes it (check_graph passes): its step decides by the step number only whether the
    correction is on; the window and elastic weight it reads are buffers, set before the step."""
    from headfields.training.step_graph import check_graph

    model = _model(video[0])
    check_graph(model, torch.device("cuda"), 1)
    start = model.correction.config.start_step
    assert [model.graph_phase(s) for s in (0, start - 1, start, start + 10)] == [False, False, True, True]
    model.correction.set_step(start + 7)  # (what before_step does)
    weight = model.correction.config.elastic_weight_at(start + 7)
    assert float(model.correction.elastic_weight_now) == pytest.approx(weight, rel=1e-6)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_its_step_is_captured_replayed_and_trains_as_the_eager_step_on_cuda(video, tmp_path, monkeypatch):
    train_frames, eval_frames = video

    def train_one(graphed: bool) -> dict:
        config = TrainingConfig(
            max_iterations=40, rays_per_batch=32, samples_per_batch=2048, fixed_shapes=True, cuda_graph=graphed,
            frames_per_batch=2, eval_every=0, checkpoint_every=0, eval_frames=1,
        )  # fmt: skip
        return train(_model(train_frames), train_frames, eval_frames, tmp_path / str(graphed), config, device="cuda")

    graph, runs = eager_and_graphed(monkeypatch, train_one)
    assert graph.captures >= 1 and not graph.failed and graph.graphs
    assert abs(runs[True]["psnr"] - runs[False]["psnr"]) < 0.5, (runs[True]["psnr"], runs[False]["psnr"])


# ---------------------------------------------------------------- recipes


def test_the_default_is_the_papers_recipe():
    """``MonoAvatarConfig()`` is ``paper_config()``, with the paper's numbers (PAPERS.md; NeRF's sample counts)."""
    paper = paper_config()
    assert paper == MonoAvatarConfig()
    assert paper_config(shell=0.05) == MonoAvatarConfig(shell=0.05)
    assert (paper.coarse_samples, paper.fine_samples, paper.shell) == (64, 128, None)  # NeRF's counts, every sample
    assert (paper.feature_dim, paper.uv_resolution, paper.anchored.k, paper.features) == (64, 256, 4, "displacement")
    assert paper.optimization == OptimizerConfig(1e-3, 1e-4, 400_000)  # Adam 1e-3 -> 1e-4 over 400k, no EMA
    assert paper.optimization.ema_decay is None
    ec = paper.error_correction
    assert (ec.hidden_dim, ec.hidden_layers, ec.head_dim, ec.head_layers) == (128, 5, 128, 2)
    assert (ec.start_step, ec.window_steps, ec.num_frequencies) == (5_000, 80_000, 6)
    assert (ec.learning_rate_scale, ec.elastic_weight, ec.final_elastic_weight) == (0.1, 1e-4, 1e-5)
    assert (ec.elastic_decay_steps, ec.magnitude_weight) == (400_000, 1e-2)


def test_cpu_recipe_takes_overrides():
    cpu = cpu_config()
    assert cpu != paper_config() and cpu.shell == 0.03 and cpu.optimization.decay_steps == 5_000
    assert cpu.error_correction.elastic_decay_steps == cpu.optimization.decay_steps  # both schedules end together
    assert cpu_config(error_correction=None).error_correction is None
    assert cpu_config(features="code").features == "code_cnn"  # the old name of variant C
    small = cpu_config(uv_resolution=32, code_decoder=UVCodeDecoderConfig(resolution=32))
    assert small.uv_resolution == small.code_decoder.resolution == 32


# ---------------------------------------------------------------- NeRF's two networks


def test_the_fine_pass_reads_the_coarse_and_the_importance_samples(video):
    """With every sample kept (no shell), a ray's fine pass cuts its Nc contiguous coarse intervals at the Nf + 1
    jittered importance edges, all strictly inside: Nc + Nf + 1 intervals covering the same span."""
    train_frames, _ = video
    model = _model(train_frames)
    batch = _head_batch(model, train_frames, 24)
    with torch.no_grad():
        coarse, fine = model.render_passes(batch.rays, batch.head, RenderContext(torch.Generator().manual_seed(4)))
    nc, nf = TINY.coarse_samples, TINY.fine_samples
    hit = coarse.samples.counts() > 0
    assert hit.all() and (coarse.samples.counts() == nc).all()
    assert (fine.samples.counts()[hit] == nc + nf + 1).all()
    for r in range(3):
        c, f = coarse.samples.ray == r, fine.samples.ray == r
        coarse_edges = np.append(coarse.samples.t_start[c].numpy(), coarse.samples.t_end[c][-1].item())
        fine_edges = np.append(fine.samples.t_start[f].numpy(), fine.samples.t_end[f][-1].item())
        assert np.isin(coarse_edges, fine_edges).all()  # every coarse edge is kept
        np.testing.assert_array_equal(fine.samples.t_start[f][1:].numpy(), fine.samples.t_end[f][:-1].numpy())


def test_in_fixed_slots_both_passes_render_as_packed_on_the_rays_that_fit(video, host_sync_spy):
    """Without a generator (the bins' centres, the quantiles i / n) the samples in slots are the packed ones: the
    coarse pass's, every ray's fine draws and the merge's pieces, their padding of no length; the colours agree, on
    rays that hit the head and rays that miss it, and nothing is read back on CUDA's paths. With too few coarse slots
    the last rays are out of both passes (fits) and the others still agree."""
    train_frames, _ = video
    model = _model(train_frames, dataclasses.replace(TINY, error_correction=None))
    head = tracked_head(model.parametric, train_frames)
    batch = ray_batch(train_frames, 40, torch.Generator().manual_seed(2), torch.device("cpu"), frames_per_batch=2, head=head)
    rays, frames = batch.rays, batch.frame_subset
    with torch.no_grad():
        want = model.render_passes(rays, head)
        hit = want[0].samples.counts() > 0
        assert 0 < int(hit.sum()) < len(hit)  # some rays miss the head's box
        room = SampleSlots(len(hit) * TINY.coarse_samples + 50, 1)
        with cuda_paths(), trusted_values(), host_sync_spy() as spy:
            got = model.render_passes(rays, head, RenderContext(slots=room), frames)
        assert spy.reads == {}, spy.report()
        for g, w in zip(got, want, strict=True):
            assert bool(g.fits.all()) and int(g.count.trained) == len(w.samples)
            torch.testing.assert_close(g.composite.rgb, w.composite.rgb, rtol=1e-5, atol=1e-6)
        few = model.render_passes(rays, head, RenderContext(slots=SampleSlots(len(want[0].samples) // 2, 1)), frames)
    fits = few[1].fits
    assert bool(fits.any()) and not bool(fits.all()) and torch.equal(few[0].fits, fits)
    on_head = fits[hit]  # (a ray without samples fits anywhere)
    assert not bool(on_head[int(on_head.long().argmin()) :].any())  # of the others, those that fit come first
    for g, w in zip(few, want, strict=True):
        torch.testing.assert_close(g.composite.rgb[fits], w.composite.rgb[fits], rtol=1e-5, atol=1e-6)


def _in_slots(batch, slots: SampleSlots):
    """``batch`` rendered in fixed ``slots`` (its generator kept)."""
    return dataclasses.replace(batch, context=dataclasses.replace(batch.context, slots=slots))


def test_a_step_in_fixed_slots_leaves_the_rays_that_do_not_fit_out_and_counts_the_coarse_march(video):
    train_frames, _ = video
    model = _model(train_frames)
    batch = _head_batch(model, train_frames, 24)
    model.before_step(TINY.error_correction.start_step, batch.head)  # the correction on: its draws among the slots
    with torch.no_grad():
        counts = model.render_passes(batch.rays, batch.head)[0].samples.counts()  # the coarse samples of each ray
    slots = int(counts.sum()) - 5 * TINY.coarse_samples
    dropped = int(((torch.cumsum(counts, 0) > slots) & (counts > 0)).sum())
    out = model.training_step(_in_slots(batch, SampleSlots(slots, 1)), TINY.error_correction.start_step)
    assert int(out.samples.marched) == int(counts.sum()) and int(out.samples.dropped) == dropped >= 5
    assert out.loss.isfinite() and {"elastic", "magnitude"} <= set(out.logs)
    out.loss.backward()
    assert sum(float(p.grad.abs().sum()) for p in model.correction.parameters() if p.grad is not None) > 0
    with raises_naming("frames_per_batch"):  # the frames found in the rays: a read-back
        model.training_step(dataclasses.replace(_in_slots(batch, SampleSlots(slots, 1)), frame_subset=None), 0)


def test_a_trained_model_copies_and_pickles_without_its_kept_meshes(video):
    """The meshes kept from step to step hold Warp's BVHs, which do not copy: a copy starts without them, its two
    encoders still sharing one cache, and trains the same step alike."""
    import copy
    import io

    train_frames, _ = video
    model = _model(train_frames)
    batch = _head_batch(model, train_frames, 16)
    first = model.training_step(dataclasses.replace(batch, context=RenderContext(torch.Generator().manual_seed(3))), 0)
    assert model.field.encoder._shared.meshes  # kept after the step
    twin = copy.deepcopy(model)
    shared = twin.field.encoder._shared
    assert not shared.meshes and shared is twin.coarse_field.encoder._shared
    again = twin.training_step(dataclasses.replace(batch, context=RenderContext(torch.Generator().manual_seed(3))), 0)
    torch.testing.assert_close(again.loss, first.loss, rtol=0, atol=0)
    buffer = io.BytesIO()
    torch.save(model, buffer)
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=False)
    assert not loaded.field.encoder._shared.meshes and loaded.field.encoder._shared is loaded.coarse_field.encoder._shared


def test_in_fixed_slots_the_rays_that_do_not_fit_have_no_gradient(video):
    """A dropped ray's colour and target may be anything: the loss and its gradient do not see them."""
    train_frames, _ = video
    model = _model(train_frames, dataclasses.replace(TINY, error_correction=None))
    batch = _head_batch(model, train_frames, 16)
    with torch.no_grad():
        counts = model.render_passes(batch.rays, batch.head)[0].samples.counts()
    slots = SampleSlots(int(counts[:10].sum()), 1)  # the first 10 rays fit (and the empty ones after them)
    fitted = _in_slots(batch, slots)
    other = batch.rgb.clone()
    dropped = (torch.cumsum(counts, 0) > slots.march) & (counts > 0)
    other[dropped] = 1 - other[dropped]  # other targets on the dropped rays alone
    grads = []
    for rgb in (batch.rgb, other):
        model.zero_grad(set_to_none=True)
        out = model.training_step(
            dataclasses.replace(fitted, rgb=rgb, context=RenderContext(torch.Generator().manual_seed(5), slots=slots)), 0
        )
        out.loss.backward()
        grads.append([out.loss.detach()] + [p.grad.clone() for p in model.parameters() if p.grad is not None])
    assert bool(dropped.any()) and int(out.samples.dropped) == int(dropped.sum())
    assert all(torch.equal(a, b) for a, b in zip(*grads, strict=True))


def test_each_pass_is_supervised_by_its_own_loss(video):
    """loss = MSE(coarse) + MSE(fine). The fine samples are drawn from detached coarse weights, so the coarse
    network's gradient is that of the coarse MSE alone, and the fine network's that of the fine MSE alone."""
    train_frames, _ = video
    model = _model(train_frames, dataclasses.replace(TINY, error_correction=None))
    batch = _head_batch(model, train_frames, 48)
    generator = lambda: torch.Generator().manual_seed(11)  # noqa: E731 - the same jitter each time
    coarse_net, fine_net = model.coarse_field.decoder.density_net[0].weight, model.field.decoder.density_net[0].weight

    def grads(loss):
        return torch.autograd.grad(loss, [coarse_net, fine_net], allow_unused=True)

    out = model.training_step(dataclasses.replace(batch, context=RenderContext(generator())), 0)
    total = grads(out.loss)
    coarse, fine = model.render_passes(batch.rays, batch.head, RenderContext(generator()))
    expected = [((r.composite.rgb - batch.rgb) ** 2).mean() for r in (coarse, fine)]
    values = [float(e.detach()) for e in expected]
    assert float(out.loss.detach()) == pytest.approx(values[0] + values[1], rel=1e-6)
    assert (out.logs["coarse"], out.logs["fine"]) == pytest.approx(values, rel=1e-6)
    only_coarse, only_fine = grads(expected[0]), grads(expected[1])
    assert only_coarse[1] is None and only_fine[0] is None  # no path from one pass's loss to the other network
    assert total[0].abs().sum() > 0 and total[1].abs().sum() > 0
    torch.testing.assert_close(total[0], only_coarse[0], rtol=1e-5, atol=1e-9)
    torch.testing.assert_close(total[1], only_fine[1], rtol=1e-5, atol=1e-9)


def test_the_shared_uv_cnn_runs_once_for_both_passes(video):
    train_frames, _ = video
    model = _model(train_frames)
    assert model.coarse_field.encoder.vertex_features is model.field.encoder.vertex_features  # one CNN, one set of weights
    assert model.coarse_field.encoder.anchored is not model.field.encoder.anchored  # each network its own MLP0
    calls = []
    model.field.encoder.vertex_features.unet.register_forward_hook(lambda *_: calls.append(1))
    batch = _head_batch(model, train_frames, 24)  # rays of two frames
    model.training_step(batch, 0)
    assert len(calls) == 1  # one U-Net call on the two frames, for the coarse and the fine pass
    with torch.no_grad():
        model.render_rays(batch.rays, batch.head)
    assert len(calls) == 2
    model.field.encoder(batch.rays.origins, batch.head, batch.rays.frame)  # outside a render: no reuse
    model.field.encoder(batch.rays.origins, batch.head, batch.rays.frame)
    assert len(calls) == 4


def test_rays_that_all_miss_the_head_render_the_background(video):
    # A chunk of a large image's top rows: no ray reaches the head, so no frame's vertex features are read.
    train_frames, _ = video
    model = _model(train_frames).eval()
    head = tracked_head(model.parametric, train_frames)
    box = head.bounds[0]
    origins = (box[1] + 1.0).expand(16, 3).clone()
    dirs = torch.nn.functional.normalize(torch.ones(16, 3), dim=-1)  # away from the head
    rays = Rays(origins, dirs, torch.zeros(16, dtype=torch.long))
    with torch.no_grad():
        rgb = model.render_rays(rays, head)
    assert rgb.shape == (16, 3) and bool(torch.isfinite(rgb).all())
    empty = model.field.encoder(torch.zeros(0, 3), head, torch.zeros(0, dtype=torch.long))
    assert empty.shape == (0, model.field.encoder.anchored.out_dim)


# ---------------------------------------------------------------- the vertex-feature ablations


@pytest.mark.parametrize("features", [*FEATURE_KINDS, "code"])
def test_each_feature_ablation_builds_and_trains_a_step(video, features):
    train_frames, _ = video
    model = _model(train_frames, dataclasses.replace(_with_features(features), error_correction=None))
    learnt = model.field.encoder.vertex_features
    before = [p.detach().clone() for p in learnt.parameters()]
    losses, _, out = fit(model, _head_batch(model, train_frames, 32), 2)
    assert np.isfinite(losses).all() and {"coarse", "fine"} <= set(out.logs)
    assert any(not torch.equal(p, q) for p, q in zip(learnt.parameters(), before, strict=True))  # the features learn


def test_ablation_vertex_features_match_their_definitions():
    """ "codes": [s_v, z] exactly; "codes_mlp": MLP([e_v, z]) evaluated in NumPy."""
    torch.manual_seed(0)
    codes = torch.randn(3, 5)
    broadcast = CodeBroadcastVertexFeatures(num_vertices=7, code_dim=5, feature_dim=4)
    out = broadcast(codes)
    assert out.shape == (3, 7, 9)
    static = broadcast.static.features.detach()
    for b in range(3):
        for v in range(7):
            torch.testing.assert_close(out[b, v], torch.cat([static[v], codes[b]]), rtol=0, atol=0)
    net = CodeMlpVertexFeatures(num_vertices=7, code_dim=5, feature_dim=4, hidden_dim=6, hidden_layers=2)
    p = {k: v.detach().double().numpy() for k, v in net.state_dict().items()}
    h = np.concatenate(
        [np.broadcast_to(p["embedding.features"], (3, 7, 4)), np.broadcast_to(codes.double().numpy()[:, None], (3, 7, 5))], -1
    )
    for i in (0, 2):
        h = np.maximum(h @ p[f"mlp.{i}.weight"].T + p[f"mlp.{i}.bias"], 0)
    h = h @ p["mlp.4.weight"].T + p["mlp.4.bias"]
    np.testing.assert_allclose(net(codes).detach().numpy(), h, atol=1e-5)
