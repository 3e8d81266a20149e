"""INSTA's triangle-frame deformer with MonoNPHM's NeuS SDF decoder (examples/mix_triangle_neus.py) on a tiny
synthetic video: at initialisation the SDF is the configured sphere, in canonical space and through the deformer;
rays that miss every posed-mesh box render the background; training lowers the loss and reaches every piece; bad
configurations raise naming the field."""

import dataclasses
import importlib.util
from pathlib import Path

import pytest
import torch
from torch import nn

from headfields.decoders import AppearanceConfig, SdfMlpConfig
from headfields.parametric import load_model
from headfields.renderers import Rays
from headfields.training import ray_batch

from helpers import raises_naming

_spec = importlib.util.spec_from_file_location(
    "mix_triangle_neus", Path(__file__).parents[1] / "examples" / "mix_triangle_neus.py"
)
mix = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(mix)

TINY = mix.TriangleNeusConfig(
    sdf=SdfMlpConfig(hidden_dim=32, hidden_layers=2, position_frequencies=2),
    appearance=AppearanceConfig(hidden_dim=16, hidden_layers=2, feature_dim=8),
    coarse_samples=12,
    upsample_rounds=1,
    samples_per_round=4,
    eikonal_points=32,
    surface_weight=0.1,  # the optional mesh-surface term runs too
    surface_points=64,
    learning_rate=5e-3,
    final_learning_rate=5e-4,
    decay_steps=100,
)


def _model(frames, config=TINY, seed=0):
    torch.manual_seed(seed)
    return mix.build(load_model(frames.model_path, frames.model_type), frames, config)


def test_at_init_the_sdf_is_the_configured_sphere(tiny_video):
    """``sdf(x) = ||x|| - r`` in normalised canonical units; and through the deformer, a posed vertex lands on its
    canonical vertex (a triangle's frame maps its corners exactly up to the triangle's stretch), so the posed SDF
    there is the sphere's too."""
    train_frames, _ = tiny_video
    model = _model(train_frames)
    radius = TINY.sdf.radius
    g = torch.Generator().manual_seed(0)
    points = model.box[0] + torch.rand(500, 3, generator=g) * (model.box[1] - model.box[0])
    with torch.no_grad():
        sdf = model.canonical_sdf(points, model.neutral_condition(len(points), points)).sdf
    expected = points.norm(dim=-1) - radius
    assert (sdf - expected).abs().max() < 0.04 * points.norm(dim=-1).max(), float((sdf - expected).abs().max())

    head = model.head(train_frames)
    frame, vertices = 3, torch.arange(0, head.vertices.shape[1], 7)
    posed = model.normalize(head.vertices[frame, vertices])
    with torch.no_grad():
        canonical, condition = model.canonical(posed, head, torch.full((len(vertices),), frame))
        sdf = model.canonical_sdf(canonical, condition).sdf
    target = model.normalize(head.canonical_vertices[vertices])
    torch.testing.assert_close(canonical, target, rtol=0, atol=5e-3)  # 0.75 mm
    assert (posed - target).norm(dim=-1).max() > 0.1  # the frame is not the rest pose: the deformer does the work
    assert (sdf - (target.norm(dim=-1) - radius)).abs().max() < 0.04 * target.norm(dim=-1).max()


def test_lips_samples_see_the_expression_and_others_zeros(tiny_video):
    """A posed face's centroid lies on that face, so its nearest face is itself: the condition is the frame's first
    expression coefficients exactly where the face's three vertices are all in the lips regions."""
    train_frames, _ = tiny_video
    model = _model(train_frames)
    head = model.head(train_frames)
    frame = len(train_frames) - 1
    centroids = model.normalize(head.vertices[frame][head.faces].mean(dim=1))
    with torch.no_grad():
        _, condition = model.canonical(centroids, head, torch.full((len(centroids),), frame))
    lips = head.face_mask(*TINY.lips_regions)
    assert 0 < int(lips.sum()) < len(lips)
    expected = torch.where(lips[:, None], head.expression[frame, : TINY.expression_dims], torch.zeros(()))
    assert float(head.expression[frame, : TINY.expression_dims].abs().max()) > 0  # the frame has an expression
    torch.testing.assert_close(condition, expected, rtol=0, atol=0)

    plain = _model(train_frames, dataclasses.replace(TINY, expression_dims=0))
    with torch.no_grad():
        _, none = plain.canonical(centroids, head, torch.full((len(centroids),), frame))
    assert none is None


def test_rays_that_miss_the_box_render_the_background(tiny_video):
    """Rays starting beside each frame's posed-mesh box and pointing away see nothing; rays at the head do."""
    train_frames, _ = tiny_video
    model = _model(train_frames)
    head = model.head(train_frames)
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


def _head_batch(frames, count, seed=0):
    """Rays from all frames, half of them on the head."""
    batch = ray_batch(frames, 8 * count, torch.Generator().manual_seed(seed), torch.device("cpu"))
    keep = torch.cat([batch.mask.nonzero()[: count // 2, 0], (~batch.mask).nonzero()[: count // 2, 0]]).sort().values
    rays = dataclasses.replace(
        batch.rays, origins=batch.rays.origins[keep], directions=batch.rays.directions[keep], frame=batch.rays.frame[keep]
    )
    return dataclasses.replace(batch, rays=rays, rgb=batch.rgb[keep], mask=batch.mask[keep], depth=None, segmentation=None)


def _has_gradient(module: nn.Module) -> bool:
    return any(p.grad is not None and float(p.grad.abs().sum()) > 0 for p in module.parameters())


def test_training_lowers_the_loss_and_reaches_every_piece(tiny_video):
    train_frames, _ = tiny_video
    model = _model(train_frames)
    batch = _head_batch(train_frames, 48)
    optimizer = model.configure_optimizer()
    losses = []
    for step in range(30):
        model.before_step(step, train_frames)
        out = model.training_step(batch, step)
        optimizer.zero_grad()
        out.loss.backward()
        if step == 0:
            for name in ("sdf", "appearance", "inverse_variance", "lighting"):
                assert _has_gradient(getattr(model, name)), name
        optimizer.step()
        losses.append(float(out.loss.detach()))
    assert sum(losses[-3:]) / 3 < 0.5 * losses[0], losses
    assert optimizer.param_groups[0]["lr"] < TINY.learning_rate  # the exponential decay runs


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("coarse_samples", 1),
        ("samples_per_round", 0),
        ("box_padding", 0.0),
        ("eikonal_weight", -1.0),
        ("decay_steps", 0),
        ("expression_dims", -1),
        ("max_grad_norm", 0.0),
    ],
)
def test_bad_configs_raise_naming_the_field(name, value):
    with raises_naming(name):
        mix.TriangleNeusConfig(**{name: value})


def test_more_expression_dims_than_the_model_has_raise(tiny_video):
    train_frames, _ = tiny_video
    with raises_naming("expression_dims"):
        _model(train_frames, dataclasses.replace(TINY, expression_dims=10_000))


def test_lips_regions_the_model_lacks_raise(tiny_video):
    train_frames, _ = tiny_video
    with raises_naming("lips_regions"):
        _model(train_frames, dataclasses.replace(TINY, lips_regions=("no_such_region",)))


def test_the_example_names_its_batch():
    assert mix.RAYS_PER_BATCH > 0 and (mix.FRAMES_PER_BATCH is None or mix.FRAMES_PER_BATCH > 0)
