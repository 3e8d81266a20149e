"""The NeuS avatar behind INSTA's triangle frames (``mixes.triangle_neus``) on a tiny synthetic video:
the SDF starts as its sphere through the deformer, the lips conditioning is exact, rays off the head render the
background, and training lowers the loss and reaches every piece."""

import dataclasses

import pytest
import torch
from torch import nn

from headfields.cameras import Rays
from headfields.checks import trusted_values
from headfields.decoders import AppearanceConfig, SdfMlpConfig
from headfields.device_paths import cuda_paths
from headfields.heads import present_regions, tracked_head
from headfields.models.mixes import triangle_neus
from headfields.models.neus_avatar import NeusAvatar, NeusAvatarConfig
from headfields.parametric import load_model
from headfields.renderers import NeusSampler, RenderContext
from headfields.training import OptimizerConfig, TrainingConfig, build_optimizer, ray_batch, set_learning_rate, train
from headfields.training.step_graph import check_graph

from helpers import eager_and_graphed, raises_naming

TINY = NeusAvatarConfig(
    sdf=SdfMlpConfig(hidden_dim=32, hidden_layers=2, position_frequencies=2),
    appearance=AppearanceConfig(hidden_dim=16, hidden_layers=2, feature_dim=8),
    sampler=NeusSampler(coarse=12, rounds=1, per_round=4, padding=0.03),
    eikonal_points=32,
    optimization=OptimizerConfig(5e-3, 5e-4, 100, max_grad_norm=1.0),
)


def _model(frames, config=TINY, seed=0):
    torch.manual_seed(seed)
    return triangle_neus(load_model(frames.model_path, frames.model_type), frames, config)


def test_at_init_the_sdf_is_the_configured_sphere(tiny_video):
    """``sdf(x) = ||x|| - r`` in normalised canonical units; and through the deformer, a posed vertex lands on its
    canonical vertex (a triangle's frame maps its corners exactly up to the triangle's stretch), so the posed SDF
    there is the sphere's too."""
    train_frames, _ = tiny_video
    model = _model(train_frames)
    field, radius = model.field, TINY.sdf.radius
    g = torch.Generator().manual_seed(0)
    points = model.box[0] + torch.rand(500, 3, generator=g) * (model.box[1] - model.box[0])
    with torch.no_grad():
        sdf = field.canonical_sdf(points, points.new_zeros(len(points), TINY.expression_dims)).sdf
    expected = points.norm(dim=-1) - radius
    assert (sdf - expected).abs().max() < 0.04 * points.norm(dim=-1).max(), float((sdf - expected).abs().max())

    head = tracked_head(model.parametric, train_frames)
    frame, vertices = 3, torch.arange(0, head.vertices.shape[1], 7)
    posed = head.vertices[frame, vertices]
    with torch.no_grad():
        geometry = field.geometry(posed, torch.full((len(vertices),), frame), head)
    target = field.mapping(head.canonical_vertices[vertices])
    torch.testing.assert_close(geometry.points, target, rtol=0, atol=5e-3)  # 0.75 mm
    assert (field.mapping(posed) - target).norm(dim=-1).max() > 0.1  # not the rest pose: the deformer does the work
    assert (geometry.sdf - (target.norm(dim=-1) - radius)).abs().max() < 0.04 * target.norm(dim=-1).max()


def test_lips_samples_see_the_expression_and_others_zeros(tiny_video):
    """A posed face's centroid lies on that face, so its nearest face is itself: the SDF's condition is the frame's
    first expression coefficients exactly where the face's three vertices are all in the lips regions; the
    albedo's is the expression at every sample."""
    train_frames, _ = tiny_video
    model = _model(train_frames)
    head = tracked_head(model.parametric, train_frames)
    frame = len(train_frames) - 1
    centroids = head.vertices[frame][head.faces].mean(dim=1)
    frames = torch.full((len(centroids),), frame)
    with torch.no_grad():
        canonical = model.field.deformer(centroids, head, frames)
        condition = model.field.sdf_condition(canonical, head, frames)
        colour = model.field.colour_condition(canonical, head, frames)
    lips = head.face_mask(*present_regions("lips_regions", TINY.lips_regions, head.regions))
    assert 0 < int(lips.sum()) < len(lips)
    expression = head.expression[frame, : TINY.expression_dims]
    assert float(expression.abs().max()) > 0  # the frame has an expression
    torch.testing.assert_close(condition, torch.where(lips[:, None], expression, torch.zeros(())), rtol=0, atol=0)
    torch.testing.assert_close(colour, expression.expand_as(colour), rtol=0, atol=0)

    plain = _model(train_frames, dataclasses.replace(TINY, expression_dims=0))
    assert plain.field.sdf_condition is None and plain.field.colour_condition is None


def test_rays_that_miss_the_box_render_the_background(tiny_video):
    """Rays starting beside each frame's posed-mesh box and pointing away see nothing; rays at the head do."""
    train_frames, _ = tiny_video
    model = _model(train_frames)
    head = tracked_head(model.parametric, train_frames)
    frame = torch.arange(8) % len(train_frames)
    high = head.bounds[frame, 1]
    away = torch.tensor([1.0, 0.0, 0.0]).expand(8, 3)
    missing = Rays(high + torch.tensor([0.5, 0.0, 0.0]), away, frame)
    centre = head.bounds[frame].mean(dim=1)
    hitting = Rays(centre + torch.tensor([0.0, 0.0, 1.0]), torch.tensor([0.0, 0.0, -1.0]).expand(8, 3), frame)
    with torch.no_grad():
        miss = model.render(missing, head).composite
        hit = model.render(hitting, head).composite
    assert torch.equal(miss.opacity, torch.zeros(8))
    torch.testing.assert_close(miss.rgb, torch.tensor(TINY.background).expand(8, 3), rtol=0, atol=0)
    assert hit.opacity.min() > 0.9  # the initial sphere (radius 0.5 about the box's centre) blocks them


def _head_batch(frames, head, count, seed=0):
    """Rays from all frames, half of them on the head."""
    batch = ray_batch(frames, 8 * count, torch.Generator().manual_seed(seed), torch.device("cpu"), head=head)
    keep = torch.cat([batch.mask.nonzero()[: count // 2, 0], (~batch.mask).nonzero()[: count // 2, 0]]).sort().values
    return dataclasses.replace(batch.select(keep), depth=None, segmentation=None)


def _has_gradient(module: nn.Module) -> bool:
    return any(p.grad is not None and float(p.grad.abs().sum()) > 0 for p in module.parameters())


def test_training_lowers_the_loss_and_reaches_every_piece(tiny_video):
    train_frames, _ = tiny_video
    model = _model(train_frames)
    batch = _head_batch(train_frames, tracked_head(model.parametric, train_frames), 48)
    optimizer = build_optimizer(model, TINY.optimization)
    losses = []
    for step in range(30):
        set_learning_rate(optimizer, TINY.optimization, step)
        out = model.training_step(batch, step)
        optimizer.zero_grad()
        out.loss.backward()
        if step == 0:
            for part in (model.field.sdf, model.field.appearance, model.inverse_variance, model.field.lighting):
                assert _has_gradient(part), type(part).__name__
        optimizer.step()
        losses.append(float(out.loss.detach()))
    assert sum(losses[-3:]) / 3 < 0.5 * losses[0], losses
    assert optimizer.param_groups[0]["lr"] < TINY.optimization.learning_rate  # the exponential decay runs


def _train(frames, eval_frames, out, fixed_shapes: bool, graphed: bool = False, device: str = "cpu") -> tuple[dict, NeusAvatar]:
    config = TrainingConfig(
        max_iterations=6, rays_per_batch=48, fixed_shapes=fixed_shapes, cuda_graph=graphed, eval_every=0,
        checkpoint_every=0, eval_frames=1,
    )  # fmt: skip
    model = _model(frames)
    render, model.kept_misses = model.render, []

    def recorded(rays, head, context=None):
        model.kept_misses.append(context is not None and context.fixed_shapes)
        return render(rays, head, context)

    model.render = recorded
    return train(model, frames, eval_frames, out, config, log=None, device=device), model


def test_in_fixed_shapes_it_trains_as_with_exact_shapes_without_a_sample_budget(tiny_video, tmp_path):
    """``fixed_shapes`` without ``samples_per_batch``: the rays that miss the box keep samples of no length, which
    weigh nothing and leave the eikonal term, so the run trains as with exact shapes (the same draws); what
    differs is the eikonal mean's rounding. No other model takes fixed shapes without a budget."""
    train_frames, eval_frames = tiny_video
    exact, exact_model = _train(train_frames, eval_frames, tmp_path / "exact", fixed_shapes=False)
    fixed, fixed_model = _train(train_frames, eval_frames, tmp_path / "fixed", fixed_shapes=True)
    for (name, a), b in zip(exact_model.state_dict().items(), fixed_model.state_dict().values(), strict=True):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-5, msg=name)
    assert fixed["psnr"] == pytest.approx(exact["psnr"], abs=1e-3)
    assert fixed_model.kept_misses[:6] == [True] * 6 and not any(exact_model.kept_misses)  # (the evaluation's: exact)
    assert fixed_model.renders_every_ray and fixed_model.graph_phase(0) == fixed_model.graph_phase(10**6)
    check_graph(fixed_model, torch.device("cuda"), 1)  # cuda_graph takes it


@pytest.mark.parametrize("fixed_box", [False, True], ids=["frame_boxes", "fixed_box"])
def test_a_fixed_shapes_step_renders_the_misses_as_nothing_and_reads_nothing_back(fixed_box, tiny_video, host_sync_spy):
    """A batch with rays on and off the head, on CUDA's paths: every ray has the sampler's samples, nothing is read
    back nor copied (a sampler's fixed box is the model's buffer), and the colours, opacities and loss are those of
    the exact shapes."""
    train_frames, _ = tiny_video
    config = TINY
    if fixed_box:  # the head's box over all frames, a little padded
        bounds = tracked_head(load_model(train_frames.model_path, train_frames.model_type), train_frames).bounds
        box = (tuple((bounds[:, 0].amin(0) - 0.02).tolist()), tuple((bounds[:, 1].amax(0) + 0.02).tolist()))
        config = dataclasses.replace(TINY, sampler=dataclasses.replace(TINY.sampler, box=box))
    model = _model(train_frames, config)
    batch = _head_batch(train_frames, tracked_head(model.parametric, train_frames), 48)
    batch.context = RenderContext(torch.Generator().manual_seed(3))
    want = model.training_step(batch, 0)
    exact = model.render(batch.rays, batch.head, RenderContext(torch.Generator().manual_seed(3)))
    batch.context = RenderContext(torch.Generator().manual_seed(3), fixed_shapes=True)
    with cuda_paths(), trusted_values(), host_sync_spy() as spy:
        got = model.training_step(batch, 0)
    assert spy.reads == {} and not spy.copies, spy.report()
    kept = model.render(batch.rays, batch.head, RenderContext(torch.Generator().manual_seed(3), fixed_shapes=True))
    per_ray = TINY.sampler.coarse + TINY.sampler.rounds * TINY.sampler.per_round
    assert len(kept.samples) == per_ray * len(batch.rgb) > len(exact.samples) > 0
    for name in ("rgb", "opacity", "depth"):
        torch.testing.assert_close(getattr(kept.composite, name), getattr(exact.composite, name), rtol=0, atol=1e-6)
    torch.testing.assert_close(got.rgb, want.rgb, rtol=0, atol=1e-6)
    torch.testing.assert_close(got.loss, want.loss, rtol=1e-5, atol=0)


def test_a_fixed_shapes_batch_that_misses_the_head_has_no_eikonal_term_and_a_finite_loss(tiny_video):
    """Without the eikonal term's box points, a batch whose rays all miss the box has no sample the term may count:
    it is 0, not a mean over nothing (NaN), as the exact shapes' mean over no samples is."""
    train_frames, _ = tiny_video
    model = _model(train_frames, dataclasses.replace(TINY, eikonal_points=0))
    head = tracked_head(model.parametric, train_frames)
    frame = torch.arange(8) % len(train_frames)
    origins = head.bounds[frame, 1] + torch.tensor([0.5, 0.0, 0.0])  # beside each frame's box, looking away
    rays = Rays(origins, torch.tensor([1.0, 0.0, 0.0]).expand(8, 3), frame)
    batch = ray_batch(train_frames, 8, torch.Generator().manual_seed(0), torch.device("cpu"), head=head)
    batch = dataclasses.replace(
        batch, rays=rays, mask=None, context=RenderContext(torch.Generator().manual_seed(1), fixed_shapes=True)
    )
    out = model.training_step(batch, 0)
    assert float(out.logs["eikonal"]) == 0.0 and bool(out.loss.isfinite())
    out.loss.backward()  # and a gradient that is finite too
    assert all(bool(p.grad.isfinite().all()) for p in model.parameters() if p.grad is not None)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_its_step_is_captured_replayed_and_trains_as_the_eager_step_on_cuda(tiny_video, tmp_path, monkeypatch):
    train_frames, eval_frames = tiny_video

    def train_one(graphed: bool) -> tuple[dict, NeusAvatar]:
        return _train(train_frames, eval_frames, tmp_path / str(graphed), True, graphed, "cuda")

    graph, runs = eager_and_graphed(monkeypatch, train_one)
    assert graph.captures >= 1 and not graph.failed and graph.graphs
    (eager, eager_model), (graphed, graphed_model) = runs[False], runs[True]
    assert abs(graphed["psnr"] - eager["psnr"]) < 0.5, (graphed["psnr"], eager["psnr"])
    for (name, a), b in zip(eager_model.state_dict().items(), graphed_model.state_dict().values(), strict=True):
        torch.testing.assert_close(b, a, rtol=1e-3, atol=1e-4, msg=name)  # the replays trained as the eager steps


@pytest.mark.parametrize(
    ("make", "name"),
    [
        (lambda: NeusSampler(coarse=1), "coarse"),
        (lambda: NeusSampler(per_round=0), "per_round"),
        (lambda: NeusSampler(padding=-0.1), "padding"),
        (lambda: NeusAvatarConfig(eikonal_weight=-1.0), "eikonal_weight"),
        (lambda: NeusAvatarConfig(expression_dims=-1), "expression_dims"),
        (lambda: OptimizerConfig(1e-3, decay_steps=0), "decay_steps"),
        (lambda: OptimizerConfig(1e-3, max_grad_norm=0.0), "max_grad_norm"),
    ],
)
def test_bad_configs_raise_naming_the_field(make, name):
    with raises_naming(name):
        make()


def test_more_expression_dims_than_the_model_has_raise(tiny_video):
    train_frames, _ = tiny_video
    with raises_naming("expression_dims"):
        _model(train_frames, dataclasses.replace(TINY, expression_dims=10_000))


def test_lips_regions_the_model_lacks_raise(tiny_video):
    train_frames, _ = tiny_video
    with raises_naming("lips_regions"):
        _model(train_frames, dataclasses.replace(TINY, lips_regions=("no_such_region",)))
