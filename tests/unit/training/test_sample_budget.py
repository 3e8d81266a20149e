"""Early termination and the sample budget (issue 39): render_nerf trains only the samples in front of the point
where a ray's transmittance falls below ``early_stop`` (checked against a per-ray float64 loop), and the loop
draws as many rays as fill a budget of trained samples (instant-ngp's rule), logged in log.jsonl and metrics.json."""

import json
import math

import pytest
import torch
from tiny_configs import TINY_INSTA

from headfields.cameras import Rays
from headfields.deformers import Canonical
from headfields.fields import FieldOutput
from headfields.heads import tracked_head
from headfields.models.insta import Insta
from headfields.parametric import load_model
from headfields.renderers import EARLY_STOP_TRANSMITTANCE, PackedSamples, RenderContext, render_nerf
from headfields.training import AvatarModel, OptimizerConfig, SampleCount, StepOutput, TrainingConfig, train

from helpers import raises_naming


@pytest.fixture(scope="module")
def head(tiny_video):
    """A tracked head for render_nerf's checks of the rays (the slab below ignores it)."""
    frames = tiny_video[0]
    return tracked_head(load_model(frames.model_path, frames.model_type), frames)


class _Slab(torch.nn.Module):
    """Density ``softplus(a)`` per metre beyond z = 1, nothing before; colour ``sigmoid(b)`` everywhere."""

    def __init__(self):
        super().__init__()
        self.a = torch.nn.Parameter(torch.tensor(5.0, dtype=torch.float64))
        self.b = torch.nn.Parameter(torch.tensor([0.3, -0.2, 0.8], dtype=torch.float64))

    def forward(self, x, dirs, frame, head):
        density = torch.nn.functional.softplus(self.a) * (x[:, 2] > 1).double()
        rgb = None if dirs is None else torch.sigmoid(self.b).expand(len(x), 3)
        canonical = Canonical(x, dirs, torch.ones(len(x), dtype=torch.bool), None)
        return FieldOutput(canonical=canonical, rgb=rgb, density=density)


def _rays_and_samples(count: int, per_ray: int, depth: float):
    """``count`` rays along +z (tilted a little each), each cut into ``per_ray`` equal intervals of [0, depth]."""
    tilt = torch.linspace(0, 0.3, count, dtype=torch.float64)
    directions = torch.nn.functional.normalize(torch.stack([tilt, 0 * tilt, 1 + 0 * tilt], 1), dim=1)
    rays = Rays(torch.zeros(count, 3, dtype=torch.float64), directions, torch.zeros(count, dtype=torch.long))
    edges = torch.linspace(0, depth, per_ray + 1, dtype=torch.float64)
    ray = torch.arange(count).repeat_interleave(per_ray)
    samples = PackedSamples(ray, edges[:-1].repeat(count), edges[1:].repeat(count), count)
    return rays, samples


def _kept_by_loop(field, rays, samples, eps, head):
    """Per ray, in float64: the samples whose exclusive transmittance is at least ``eps``."""
    keep = []
    with torch.no_grad():
        for r in range(samples.num_rays):
            index = (samples.ray == r).nonzero()[:, 0]
            t = 1.0
            for s in index.tolist():
                keep.append(t >= eps)
                mid = (samples.t_start[s] + samples.t_end[s]) / 2
                x = rays.origins[r] + mid * rays.directions[r]
                tau = float(field(x[None], None, None, head).density[0] * (samples.t_end[s] - samples.t_start[s]))
                t *= math.exp(-tau)
    return torch.tensor(keep)


@pytest.mark.parametrize("eps", [EARLY_STOP_TRANSMITTANCE, 1e-2])
def test_early_termination_trains_what_is_in_front_of_the_threshold(eps, head):
    field = _Slab()
    rays, samples = _rays_and_samples(24, 64, 4.0)
    background = torch.ones(3, dtype=torch.float64)
    full = render_nerf(field, rays, head, samples, background)
    cut = render_nerf(field, rays, head, samples, background, RenderContext(early_stop=eps))
    expected = _kept_by_loop(field, rays, samples, eps, head)
    assert 0 < int(expected.sum()) < len(samples)  # the slab hides some samples and not all
    assert cut.count.marched == full.count.marched == len(samples) and cut.count.trained == len(cut.samples)
    torch.testing.assert_close(cut.samples.t_start, samples.t_start[expected], rtol=0, atol=0)
    torch.testing.assert_close(cut.samples.ray, samples.ray[expected], rtol=0, atol=0)
    # The samples left out weigh less than eps together: each ray's colour and opacity move by less.
    assert (cut.composite.rgb - full.composite.rgb).abs().max() <= eps
    assert (cut.composite.opacity - full.composite.opacity).abs().max() <= eps
    # The gradient is that of the full render within the same bound (the colour's exactly scaled by the weights).
    grads = []
    for render in (full, cut):
        field.zero_grad()
        render.composite.rgb.sum().backward()
        grads.append(torch.cat([field.a.grad[None], field.b.grad]))
    torch.testing.assert_close(grads[1], grads[0], rtol=0, atol=10 * eps * len(rays.origins))


def test_without_gradients_every_sample_is_rendered(head):
    field = _Slab()
    rays, samples = _rays_and_samples(4, 32, 4.0)
    with torch.no_grad():
        out = render_nerf(field, rays, head, samples, context=RenderContext(early_stop=EARLY_STOP_TRANSMITTANCE))
    assert len(out.samples) == out.count.marched == out.count.trained == len(samples)


@pytest.mark.parametrize("eps", [0, 1, -1e-4, math.nan, "1e-4"])
def test_early_stop_must_be_a_transmittance(eps, head):
    rays, samples = _rays_and_samples(2, 4, 4.0)
    with raises_naming("early_stop"):
        render_nerf(_Slab(), rays, head, samples, context=RenderContext(early_stop=eps))


class _Counted(AvatarModel):
    """A model whose step trains ``per_ray`` samples a ray (and marches twice that): the budget's arithmetic."""

    def __init__(self, parametric, per_ray: int, counts: bool = True):
        super().__init__()
        self.parametric, self.per_ray, self.counts = parametric, per_ray, counts
        self.optimization = OptimizerConfig(learning_rate=1e-2)
        self.grey = torch.nn.Parameter(torch.tensor(0.0))

    def render_rays(self, rays, head, early_stop=None):
        return torch.sigmoid(self.grey).expand(len(rays.origins), 3)

    def training_step(self, batch, step):
        rgb = self.render_rays(batch.rays, batch.head)
        rays = len(rgb)
        samples = SampleCount(2 * self.per_ray * rays, self.per_ray * rays) if self.counts else None
        return StepOutput(loss=(rgb - batch.rgb).square().mean(), rgb=rgb, logs={}, samples=samples)


def _log(folder):
    return [json.loads(line) for line in (folder / "log.jsonl").read_text().splitlines()]


def test_the_rays_a_step_draws_fill_the_sample_budget(tiny_video, tmp_path):
    train_frames, eval_frames = tiny_video
    parametric = load_model(train_frames.model_path, train_frames.model_type)
    config = TrainingConfig(
        max_iterations=4, rays_per_batch=64, samples_per_batch=600, eval_every=0, checkpoint_every=0, log_every=1
    )
    metrics = train(_Counted(parametric, per_ray=3), train_frames, eval_frames, tmp_path / "run", config, log=None)
    steps = [r for r in _log(tmp_path / "run") if "loss" in r]
    # The first step draws rays_per_batch; then 600 / 3 samples a ray = 200 rays, which trains 600 samples a step.
    assert [r["rays"] for r in steps] == [64, 200, 200, 200]
    assert [r["samples"] for r in steps] == [{"marched": 384, "trained": 192}] + [{"marched": 1200, "trained": 600}] * 3
    assert metrics["rays_per_step"] == (64 + 3 * 200) / 4
    assert metrics["samples_trained_per_step"] == (192 + 3 * 600) / 4
    assert metrics["samples_marched_per_step"] == 2 * metrics["samples_trained_per_step"]


def test_the_budget_stays_within_max_rays_per_batch(tiny_video, tmp_path):
    train_frames, eval_frames = tiny_video
    parametric = load_model(train_frames.model_path, train_frames.model_type)
    config = TrainingConfig(
        max_iterations=2, rays_per_batch=8, samples_per_batch=10**6, max_rays_per_batch=100, eval_every=0,
        checkpoint_every=0, log_every=1,
    )  # fmt: skip
    train(_Counted(parametric, per_ray=1), train_frames, eval_frames, tmp_path / "run", config, log=None)
    assert [r["rays"] for r in _log(tmp_path / "run") if "loss" in r] == [8, 100]


def test_a_budget_needs_a_model_that_counts_its_samples(tiny_video, tmp_path):
    train_frames, eval_frames = tiny_video
    parametric = load_model(train_frames.model_path, train_frames.model_type)
    config = TrainingConfig(max_iterations=2, rays_per_batch=8, samples_per_batch=100, eval_every=0, checkpoint_every=0)
    with raises_naming("samples_per_batch"):
        train(_Counted(parametric, 1, counts=False), train_frames, eval_frames, tmp_path / "run", config, log=None)


def test_budget_settings_are_checked():
    with raises_naming("max_rays_per_batch"):
        TrainingConfig(rays_per_batch=4096, samples_per_batch=1 << 18, max_rays_per_batch=1024)
    with raises_naming("samples_per_batch"):
        TrainingConfig(samples_per_batch=0)
    for bad in (0.0, 1.0, 1):
        with raises_naming("early_stop"):
            TrainingConfig(early_stop=bad)


@pytest.mark.parametrize("fixed_shapes", [False, True])
def test_insta_under_a_budget_logs_its_samples_and_resumes_exactly(tiny_video, tmp_path, fixed_shapes):
    """INSTA's step counts what it marched and trained; a run stopped and resumed draws the rays it would have
    (with fixed shapes, the counts still pending at the checkpoint are in it)."""
    train_frames, eval_frames = tiny_video
    parametric = load_model(train_frames.model_path, train_frames.model_type)

    def run(folder, steps):
        torch.manual_seed(0)
        model = Insta(parametric, train_frames.segmentation_labels, TINY_INSTA)
        config = TrainingConfig(
            max_iterations=steps, rays_per_batch=64, samples_per_batch=2000, early_stop=EARLY_STOP_TRANSMITTANCE,
            fixed_shapes=fixed_shapes, eval_every=0, checkpoint_every=2, log_every=1,
        )  # fmt: skip
        return train(model, train_frames, eval_frames, folder, config, log=None), model

    steps = 6 if fixed_shapes else 4  # fixed shapes: the counts of step k set the rays of step k + 3
    whole, model = run(tmp_path / "whole", steps)
    run(tmp_path / "parts", steps // 2)
    parts, resumed = run(tmp_path / "parts", steps)
    logged = [r for r in _log(tmp_path / "whole") if "rays" in r]
    assert all(0 < r["samples"]["trained"] <= r["samples"]["marched"] for r in logged)
    assert [r["rays"] for r in logged] == [r["rays"] for r in _log(tmp_path / "parts") if "rays" in r]
    assert logged[0]["rays"] == 64 and logged[-1]["rays"] != 64  # the budget set the later steps' rays
    assert whole["samples_trained_per_step"] == parts["samples_trained_per_step"] > 0
    for a, b in zip(model.state_dict().values(), resumed.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
