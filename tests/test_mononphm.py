"""MonoNPHM on a tiny synthetic video: at initialisation it renders and extracts the analytic sphere of its
SDF's geometric initialisation; training lowers the loss and reaches every piece; landmarks found by root
finding map back onto their canonical points; tracking a held-out frame from the neutral code lowers its
error; the shared training loop runs it and resumes exactly; bad configurations raise."""

import dataclasses
import math

import pytest
import torch

from headfields.decoders import AnchorSdfConfig, AppearanceConfig, SdfMlpConfig
from headfields.deformers import HyperDeformerConfig
from headfields.encoders import LatentCodesConfig
from headfields.heads import tracked_head
from headfields.models.mononphm import MonoNphm, MonoNphmConfig
from headfields.models.mononphm_tracking import TrackingConfig, frame_error, posed_landmarks, track_frame
from headfields.parametric import load_model
from headfields.renderers import Rays
from headfields.training import OptimizerConfig, TrainingConfig, build_optimizer, ray_batch, set_learning_rate, train

from helpers import raises_naming

TINY = MonoNphmConfig(
    deformer=HyperDeformerConfig(hidden_dim=16, hidden_layers=2, skip_layer=1),
    canonical="global",
    global_sdf=SdfMlpConfig(hidden_dim=32, hidden_layers=2, position_frequencies=2),
    appearance=AppearanceConfig(hidden_dim=16, hidden_layers=2, feature_dim=8),
    identity_code=LatentCodesConfig(dim=2, weight=1e-2),
    expression_code=LatentCodesConfig(dim=4, weight=1e-2),
    appearance_code=LatentCodesConfig(dim=2, weight=1e-2),
    coarse_samples=16,
    upsample_rounds=1,
    samples_per_round=8,
    eikonal_points=64,
    correspondence_vertices=64,
    optimization=OptimizerConfig(5e-3, 5e-4, 100, ema_decay=0.95),
)
SHARP = 8.0  # v of the inverse variance: inv_s = exp(80), a hard surface for the analytic checks


@pytest.fixture
def video(tiny_video):
    return tiny_video


def _model(frames, config=TINY, seed=0):
    torch.manual_seed(seed)
    return MonoNphm(load_model(frames.model_path, frames.model_type), len(frames), config)


def _head(model, frames):
    return tracked_head(model.parametric, frames)


def _head_batch(frames, count, head, seed=0):
    """Rays from two frames, half of them on the head."""
    generator = torch.Generator().manual_seed(seed)
    batch = ray_batch(frames, 8 * count, generator, torch.device("cpu"), frames_per_batch=2, head=head)
    keep = torch.cat([batch.mask.nonzero()[: count // 2, 0], (~batch.mask).nonzero()[: count // 2, 0]]).sort().values
    return dataclasses.replace(batch.select(keep), depth=None, segmentation=None)


def _sphere_rays(model, state, count=64, seed=0):
    """Rays from 1 m in front of the head frame's origin towards points around the init sphere's centre, in
    world coordinates of ``state``; and the sphere (centre, radius) in world metres."""
    g = torch.Generator().manual_seed(seed)
    centre_head = model.center
    radius = TINY.global_sdf.radius * float(model.scale)
    origin_head = centre_head + torch.tensor([0.0, 0.0, 1.0])
    aim = centre_head + 2.8 * radius * (torch.rand(count, 3, generator=g) - 0.5) * torch.tensor([1.0, 1.0, 0.0])
    dirs_head = torch.nn.functional.normalize(aim - origin_head, dim=-1)
    rotation, translation = state.rotation[0], state.translation[0]
    origins = (origin_head @ rotation.T + translation).expand(count, 3)
    rays = Rays(origins, dirs_head @ rotation.T, torch.zeros(count, dtype=torch.long))
    return rays, centre_head @ rotation.T + translation, radius


def test_at_init_it_renders_and_extracts_the_analytic_sphere(video):
    """The backward field is the identity and the SDF a sphere: depth, normals and opacity of a NeuS render
    match ray-sphere intersection in world space (through the frame's head pose), and so does the mesh."""
    train_frames, _ = video
    wide = dataclasses.replace(TINY.global_sdf, hidden_dim=200)  # its init is a sphere to 0.4% of r (3% at 32)
    model = _model(train_frames, dataclasses.replace(TINY, global_sdf=wide))
    with torch.no_grad():
        model.inverse_variance.v.fill_(SHARP)
    state = model.frame_state(_head(model, train_frames), torch.tensor([3]), learnt=True)
    rays, centre, radius = _sphere_rays(model, state)
    with torch.no_grad():
        out = model.render(rays, state, torch.zeros(len(rays.origins), dtype=torch.long))
    # Analytic first hit |o + t d - c| = r.
    oc = rays.origins - centre
    b = (oc * rays.directions).sum(-1)
    disc = b**2 - (oc.square().sum(-1) - radius**2)
    hit = disc > 0
    t = -b - disc.clamp(min=0).sqrt()
    assert hit.sum() > 10 and (~hit).sum() > 5
    near_edge = disc.clamp(min=0).sqrt() < 0.1 * radius  # grazing rays: NeuS's discrete intervals blur the edge
    sure = hit & ~near_edge
    torch.testing.assert_close(out.composite.opacity[sure], torch.ones(int(sure.sum())), atol=2e-3, rtol=0)
    torch.testing.assert_close(out.composite.opacity[~hit], torch.zeros(int((~hit).sum())), atol=2e-3, rtol=0)
    # A sharp NeuS surface puts the depth in the interval that holds the crossing (at its midpoint, for a hard
    # step): the error is within that interval's length, plus the init's 0.4% of r.
    samples, scale = out.samples, float(model.scale)
    crossing = t[samples.ray] / scale
    holds = (samples.t_start <= crossing) & (crossing <= samples.t_end) & sure[samples.ray]
    assert torch.equal(samples.ray[holds], sure.nonzero()[:, 0])  # one interval per ray that surely hits
    bound = samples.deltas[holds] * scale + 0.005 * radius
    error = (out.composite.depth[sure] - t[sure]).abs()
    assert (error <= bound).all(), (error, bound)
    assert bound.max() < 0.1 * radius  # the up-sampling made those intervals short
    normal = torch.nn.functional.normalize(rays.origins[sure] + t[sure, None] * rays.directions[sure] - centre, dim=-1)
    cosine = (torch.nn.functional.normalize(out.normals[sure], dim=-1) * normal).sum(-1)
    assert cosine.min() > 0.99, cosine.min()

    surface = model.extract_mesh(state, resolution=48)
    distance = (surface.vertices - centre).norm(dim=-1)
    assert (distance - radius).abs().max() < 0.015 * radius
    assert len(surface.faces) > 100


def test_frame_state_reads_learnt_codes_for_training_frames_and_zero_elsewhere(video):
    train_frames, eval_frames = video
    model = _model(train_frames)
    with torch.no_grad():
        model.expression_codes.codes.copy_(torch.randn_like(model.expression_codes.codes))
    index = torch.tensor([1, 3])
    head = _head(model, train_frames)
    state = model.frame_state(head, index, learnt=True)
    e = model.parametric.num_expression
    torch.testing.assert_close(state.condition[:, :e], head.expression[index])
    torch.testing.assert_close(state.condition[:, e : e + 3], head.pose[index, model.jaw_joint])
    torch.testing.assert_close(state.condition[:, e + 3 : e + 7], model.expression_codes.codes[index])
    # The same training frames rendered as held out (learnt=False): the tracked condition with zero codes.
    unlearnt = model.frame_state(head, index)
    torch.testing.assert_close(unlearnt.condition[:, : e + 3], state.condition[:, : e + 3])
    assert torch.equal(unlearnt.condition[:, e + 3 : e + 7], torch.zeros(2, 4))
    eval_head = _head(model, eval_frames)
    held_out = model.frame_state(eval_head, torch.tensor([0]))
    assert torch.equal(held_out.condition[0, e + 3 : e + 7], torch.zeros(4))
    torch.testing.assert_close(held_out.rotation[0], eval_head.joint_transforms[0, model.head_joint, :3, :3])


ANCHORS = dataclasses.replace(
    TINY,
    canonical="anchors",
    num_anchors=8,
    anchor_sdf=AnchorSdfConfig(local=SdfMlpConfig(hidden_dim=16, hidden_layers=2), neighbours=4, sigma_rank=4),
)


@pytest.mark.parametrize("config", [TINY, ANCHORS], ids=["global", "anchors"])
def test_loss_falls_and_every_piece_gets_gradients(video, config):
    train_frames, _ = video
    model = _model(train_frames, config)
    optimizer = build_optimizer(model, model.optimization)
    batch = _head_batch(train_frames, 64, _head(model, train_frames))
    hyper_head = model.deformer.output.weight[3:].detach().clone()
    losses, colour = [], []
    for step in range(40):
        set_learning_rate(optimizer, model.optimization, step)
        out = model.training_step(batch, step)
        optimizer.zero_grad()
        out.loss.backward()
        optimizer.step()
        losses.append(float(out.loss.detach()))
        colour.append(out.logs["rgb"])
    assert losses[-1] < 0.5 * losses[0], losses
    assert colour[-1] < 0.6 * colour[0], colour  # the image term itself, not only the regularisers
    # The hyper head starts near zero (HyperNeRF), where the SDF's hyper inputs start at zero weight: both train.
    assert (model.deformer.output.weight[3:] - hyper_head).abs().max() > 1e-3
    assert {"silhouette", "eikonal", "correspondence", "inv_s"} <= set(out.logs)
    assert optimizer.param_groups[0]["lr"] == pytest.approx(5e-3 * 0.1 ** (39 / 100))
    pieces = {
        "deformer trunk": model.deformer.layers,
        "deformer heads": model.deformer.output,
        "SDF": model.sdf,
        "appearance": model.appearance,
        "lighting": model.lighting,
        "inverse variance": model.inverse_variance,
        "expression codes": model.expression_codes,
        "identity codes": model.identity_codes,
        "appearance codes": model.appearance_codes,
    }
    for name, module in pieces.items():
        grads = [p.grad for p in module.parameters() if p.grad is not None]
        assert grads and sum(float(g.abs().sum()) for g in grads) > 0, name


def test_landmarks_by_root_finding_map_back_onto_their_canonical_points(video):
    train_frames, _ = video
    model = _model(train_frames)
    state = model.frame_state(_head(model, train_frames), torch.tensor([2]), learnt=True)
    canonical = model.parametric().canonical_vertices[:40]
    rotation, translation = state.rotation[0], state.translation[0]
    with torch.no_grad():  # identity field: the landmarks are the canonical points under the head pose
        torch.testing.assert_close(posed_landmarks(model, state, canonical).points, canonical @ rotation.T + translation)
        for p in model.deformer.output.parameters():
            p.copy_(0.05 * torch.randn_like(p))  # a non-trivial field
    landmarks = posed_landmarks(model, state, canonical)
    assert landmarks.converged.all()
    world = landmarks.points
    x = model.normalize((world - translation) @ rotation)  # back into the normalised head frame
    with torch.no_grad():
        back = x + model.deformer.deform(x, state.condition.expand(len(x), -1)).offset
    torch.testing.assert_close(back, model.normalize(canonical), atol=1e-4, rtol=0)
    assert (world - (canonical @ rotation.T + translation)).abs().max() > 1e-3  # the field moved them


def test_landmark_gradients_match_finite_differences(video):
    """Implicit differentiation through the root finder, as tracking uses it: d(world landmark)/d(condition)."""
    train_frames, _ = video
    model = _model(train_frames).double()
    with torch.no_grad():
        for p in model.deformer.output.parameters():
            p.copy_(0.05 * torch.randn_like(p))
    state = model.frame_state(_head(model, train_frames), torch.tensor([2]), learnt=True)
    state = dataclasses.replace(state, condition=state.condition.detach().requires_grad_(True))
    canonical = model.parametric().canonical_vertices[:6].double()
    direction = torch.randn(6, 3, dtype=torch.float64)
    (posed_landmarks(model, state, canonical).points * direction).sum().backward()
    analytic = state.condition.grad[0]

    def value(condition):
        points = posed_landmarks(model, dataclasses.replace(state, condition=condition), canonical).points
        return float((points * direction).sum())

    with torch.no_grad():
        for i in torch.randperm(state.condition.shape[1])[:4].tolist():
            step = torch.zeros_like(state.condition)
            step[0, i] = 1e-5
            numeric = (value(state.condition + step) - value(state.condition - step)) / 2e-5
            assert abs(numeric - float(analytic[i])) < 1e-6 + 1e-4 * abs(numeric), (i, numeric, float(analytic[i]))


def test_rendering_with_and_without_gradients_agrees(video):
    train_frames, _ = video
    model = _model(train_frames)
    head = _head(model, train_frames)
    rays = _head_batch(train_frames, 32, head).rays
    index, local = torch.unique(rays.frame, return_inverse=True)
    state = model.frame_state(head, index, learnt=True)
    with_grad = model.render(rays, state, local)
    with torch.no_grad():
        without = model.render(rays, state, local)
    for name in ("rgb", "depth", "opacity"):
        torch.testing.assert_close(getattr(without.composite, name), getattr(with_grad.composite, name).detach(), msg=name)
    torch.testing.assert_close(without.normals, with_grad.normals.detach())
    assert with_grad.composite.rgb.requires_grad and not without.composite.rgb.requires_grad


def test_tracking_from_the_neutral_code_lowers_the_image_error(video):
    train_frames, eval_frames = video
    model = _model(train_frames)
    optimizer = build_optimizer(model, model.optimization)
    head = _head(model, train_frames)
    for step in range(30):
        generator = torch.Generator().manual_seed(step)
        batch = ray_batch(train_frames, 256, generator, torch.device("cpu"), frames_per_batch=2, head=head)
        out = model.training_step(batch, step)
        optimizer.zero_grad()
        out.loss.backward()
        optimizer.step()
    frozen = {k: v.clone() for k, v in model.state_dict().items()}
    trainable = [p.requires_grad for p in model.parameters()]
    result = track_frame(model, eval_frames, 1, TrackingConfig(steps=15, rays_per_step=256, landmarks=8))
    before = frame_error(model, eval_frames, 1, result.start)
    after = frame_error(model, eval_frames, 1, result.state)
    assert after < before, (before, after)  # on the whole image (the per-step losses are on random rays)
    assert len(result.losses) == 15
    identity = model.identity_codes.dim
    start, learnt = result.start.condition[0], model.frame_state(_head(model, eval_frames), torch.tensor([1])).condition[0]
    assert torch.equal(start[:-identity], torch.zeros_like(start[:-identity]))  # the neutral expression...
    assert torch.equal(start[-identity:], learnt[-identity:]) and torch.equal(
        result.state.condition[0, -identity:], start[-identity:]
    )
    for name, value in model.state_dict().items():  # the networks stayed frozen
        assert torch.equal(value, frozen[name]), name
    assert [p.requires_grad for p in model.parameters()] == trainable  # and are trainable again


def test_the_training_loop_runs_it_and_resumes_exactly(video, tmp_path):
    train_frames, eval_frames = video
    config = TrainingConfig(
        max_iterations=4, rays_per_batch=64, frames_per_batch=2, eval_every=0, checkpoint_every=2, eval_frames=1
    )
    straight = _model(train_frames)
    metrics = train(straight, train_frames, eval_frames, tmp_path / "straight", config)
    assert metrics["iterations"] == 4 and math.isfinite(metrics["psnr"])
    train(_model(train_frames), train_frames, eval_frames, tmp_path / "halves", dataclasses.replace(config, max_iterations=2))
    resumed = _model(train_frames, seed=7)  # other initial weights: everything must come from the checkpoint
    train(resumed, train_frames, eval_frames, tmp_path / "halves", config)
    # The loop owns the optimiser and the average: their final states are in the checkpoints.
    ends = [torch.load(tmp_path / run / "checkpoint.pt", weights_only=False) for run in ("straight", "halves")]
    assert [end["step"] for end in ends] == [4, 4]
    assert ends[1]["optimizer"]["param_groups"][0]["lr"] == ends[0]["optimizer"]["param_groups"][0]["lr"]
    assert ends[0]["optimizer"]["param_groups"][0]["lr"] == pytest.approx(5e-3 * 0.1 ** (3 / 100))
    assert ends[0]["ema"] is not None  # MonoNphm's optimisation asks for the average (ema_decay 0.95)
    torch.testing.assert_close(ends[1]["ema"], ends[0]["ema"], rtol=0, atol=1e-6)
    for name, value in straight.state_dict().items():
        if isinstance(value, torch.Tensor):
            torch.testing.assert_close(resumed.state_dict()[name], value, rtol=0, atol=1e-6, msg=name)


def test_bad_configuration_raises(video):
    train_frames, eval_frames = video
    with raises_naming("head_joint"):
        _model(train_frames, dataclasses.replace(TINY, head_joint="tail"))
    with raises_naming("canonical"):
        _model(train_frames, dataclasses.replace(TINY, canonical="voxels"))
    with raises_naming("num_frames"):
        MonoNphm(load_model(train_frames.model_path), 0, TINY)
    model = _model(train_frames)
    eval_head = _head(model, eval_frames)
    with raises_naming("head"):  # learnt codes need the training frames' head, the one the codes were made for
        model.frame_state(eval_head, torch.tensor([0]), learnt=True)
    with raises_naming("state"):
        model.extract_mesh(model.frame_state(eval_head, torch.tensor([0, 1])))
    with raises_naming("steps"):
        TrackingConfig(steps=-1)
