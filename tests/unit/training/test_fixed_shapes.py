"""Fixed shapes (``TrainingConfig.fixed_shapes``, issue 39): the march and early termination fill slots whose number
does not depend on the data, rays that do not fit are left out of the loss, and the counts and the finite-loss
check are read from host copies two steps later. Checked against per-ray loops and against the exact-shape path."""

import dataclasses
import json
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from tiny_configs import TINY_INSTA, TINY_MONOAVATAR

from headfields.cameras import image_rays
from headfields.heads import tracked_head
from headfields.models.insta import Insta
from headfields.models.monoavatar import MonoAvatar
from headfields.parametric import load_model
from headfields.renderers import EARLY_STOP_TRANSMITTANCE, PackedSamples, RenderContext, SampleCount, SampleSlots, composite
from headfields.training import AvatarModel, OptimizerConfig, StepOutput, TrainingConfig, sample_budget, train
from headfields.training.host_copy import READ_LAG, HostCopy
from headfields.training.sample_budget import MAX_MARCH_SLOTS, RAYS_KEPT_OVER, RAYS_KEPT_UNDER, SampleBudget

from helpers import raises_naming, slot_samples

# --- SlotSamples.compact against a loop over the rays ----------------------------------------------------------


def _compact_by_loop(per_ray, fits, keep, slots):
    """Rays in order: a ray keeps its kept samples if the kept samples of it and every ray before it fit the slots
    (a ray without kept samples always fits), else none; a ray that did not fit the march keeps none either."""
    kept_rays, out, total, s = [], [], 0, 0
    for r, n in enumerate(per_ray):
        mine = [s + k for k in range(n) if keep[s + k]] if fits[r] else []
        total += len(mine)
        ok = fits[r] and (not mine or total <= slots)
        kept_rays.append(ok)
        out += mine if ok else []
        s += n
    return out, kept_rays


@settings(max_examples=60, deadline=None)
@given(
    per_ray=st.lists(st.integers(0, 6), min_size=1, max_size=8),
    extra=st.integers(0, 5),
    slots=st.integers(1, 30),
    data=st.data(),
)
def test_compact_keeps_what_a_loop_over_the_rays_keeps(per_ray, extra, slots, data):
    total = sum(per_ray)
    # The rays that fit the march are the first ones (march_fixed's cut).
    first_out = data.draw(st.integers(0, len(per_ray)))
    fits = [r < first_out for r in range(len(per_ray))]
    source = slot_samples(per_ray, total + extra if total + extra else 1, fits)
    keep = data.draw(st.lists(st.booleans(), min_size=source.slots, max_size=source.slots))
    out = source.compact(torch.tensor(keep), slots)
    want, want_fits = _compact_by_loop(per_ray, fits, keep, slots)
    n = len(want)
    assert out.slots == slots and int(out.count) == n
    assert out.fits.tolist() == want_fits
    s = source.samples
    assert torch.equal(out.samples.ray[:n], s.ray[want]) and torch.equal(out.samples.t_start[:n], s.t_start[want])
    assert torch.equal(out.samples.t_end[:n], s.t_end[want])
    # Padding: zero-length intervals on the last ray, behind its samples: valid packed samples.
    assert bool((out.samples.deltas[n:] == 0).all()) and bool((out.samples.ray[n:] == len(per_ray) - 1).all())
    PackedSamples(out.samples.ray, out.samples.t_start, out.samples.t_end, len(per_ray))
    # wanted: every kept sample of the rays that fitted the march, whether it fits the slots or not.
    assert int(out.wanted) == sum(keep[i] for i in range(sum(per_ray)) if fits[int(s.ray[i])])


def test_compact_bad_input():
    source = slot_samples([2, 3], 6, [True, True])
    with raises_naming("slots"):
        source.compact(torch.ones(6, dtype=torch.bool), 0)
    with raises_naming("keep"):
        source.compact(torch.ones(5, dtype=torch.bool), 4)
    with raises_naming("keep"):
        source.compact(torch.ones(6), 4)


# --- render_nerf in slots against the exact shapes --------------------------------------------------------------


@pytest.fixture(scope="module")
def insta(tiny_video):
    frames = tiny_video[0]
    parametric = load_model(frames.model_path, frames.model_type)
    torch.manual_seed(0)
    model = Insta(parametric, frames.segmentation_labels, TINY_INSTA)
    head = tracked_head(parametric, frames)
    model.sampler.refresh(model.field, head, 0)  # some cells empty: the march skips them
    rays = image_rays(frames.cameras, 0)
    pick = torch.randperm(len(rays.origins), generator=torch.Generator().manual_seed(1))[:200]
    return model, head, type(rays)(rays.origins[pick], rays.directions[pick], rays.frame[pick])


@pytest.mark.parametrize("early_stop", [None, EARLY_STOP_TRANSMITTANCE])
def test_slots_render_what_the_exact_shapes_render(insta, early_stop):
    model, head, rays = insta
    exact = model.render(rays, head, RenderContext(early_stop=early_stop))
    wide = len(exact.samples) + 333
    marched = len(model.sampler.grid.march(rays.origins, rays.directions, step_size=model.sampler.step_size))  # shell's
    fixed = model.render(rays, head, RenderContext(early_stop=early_stop, slots=SampleSlots(march=marched + 555, train=wide)))
    assert len(fixed.samples) == wide and bool(fixed.fits.all())
    assert int(fixed.count.marched) == exact.count.marched and int(fixed.count.trained) == exact.count.trained
    assert int(fixed.count.dropped) == 0
    torch.testing.assert_close(fixed.composite.rgb, exact.composite.rgb, rtol=0, atol=1e-6)
    torch.testing.assert_close(fixed.composite.depth, exact.composite.depth, rtol=0, atol=1e-6)


@pytest.mark.parametrize("fixed", [False, True])
def test_kept_samples_train_from_the_early_stop_pass_s_encoding(insta, fixed):
    """Each sample deformed and encoded once a step (issue 78): the samples early termination keeps are trained from
    the encoding its pass made, which gives the image and every parameter's gradient that deforming and encoding
    them again gives (the field at the same samples, composited), with the deformer and grid run once."""
    model, head, rays = insta
    calls = []
    parts = (model.field.deformer, model.field.encoder)
    hooks = [m.register_forward_hook(lambda m, i, o: calls.append(len(i[0]))) for m in parts]
    try:
        slots = SampleSlots(march=4096, train=2048) if fixed else None
        out = model.render(rays, head, RenderContext(early_stop=0.9, slots=slots))  # (the young field is thin: a stop it reaches)
    finally:
        for hook in hooks:
            hook.remove()
    marched = calls[0]
    assert calls == [marched, marched] and marched > len(out.samples) > 0  # one pass each, over every marched sample
    params = [p for p in model.parameters() if p.requires_grad]
    reused = torch.autograd.grad(out.composite.rgb.square().sum(), params, allow_unused=True)
    samples = out.samples
    again = model.field(out.points, rays.directions[samples.ray], rays.frame[samples.ray], head)
    image = composite(samples, again.density, again.rgb, model.background)
    torch.testing.assert_close(out.composite.rgb, image.rgb, rtol=0, atol=0)
    expected = torch.autograd.grad(image.rgb.square().sum(), params, allow_unused=True)
    assert sum(g is not None and bool(g.abs().sum() > 0) for g in reused) >= 3  # the table, the MLPs
    for got, want in zip(reused, expected, strict=True):
        assert (got is None) == (want is None)
        if got is not None:
            torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-7)


def test_rays_past_the_slots_are_dropped_and_counted(insta):
    model, head, rays = insta
    exact = model.render(rays, head, RenderContext(early_stop=EARLY_STOP_TRANSMITTANCE))
    train_slots = exact.count.trained // 2
    marched = len(model.sampler.grid.march(rays.origins, rays.directions, step_size=model.sampler.step_size))
    fixed = model.render(rays, head, RenderContext(early_stop=EARLY_STOP_TRANSMITTANCE, slots=SampleSlots(marched, train_slots)))
    fits = fixed.fits
    dropped = int((~fits).sum())
    assert 0 < dropped < len(fits) and int(fixed.count.dropped) == dropped
    trains = exact.samples.counts() > 0
    assert not bool((fits & trains)[fits.long().argmin() :].any())  # the rays with samples that fit come first
    # The rays that fit render as with exact shapes; the others have no samples (opacity 0).
    torch.testing.assert_close(fixed.composite.rgb[fits], exact.composite.rgb[fits], rtol=0, atol=1e-6)
    assert bool((fixed.composite.opacity[~fits] == 0).all())
    assert int(fixed.count.trained) <= train_slots


def test_slots_need_a_sampler_that_marches_into_them(tiny_video):
    frames = tiny_video[0]
    parametric = load_model(frames.model_path, frames.model_type)
    model = MonoAvatar(parametric, len(frames), TINY_MONOAVATAR)
    head = tracked_head(parametric, frames)
    rays = image_rays(frames.cameras, 0)
    from headfields.renderers import render_nerf

    drawn = model.sampler(rays, head)  # samples drawn already (NeRF's fine pass) cannot march into slots
    with raises_naming("slots"):
        render_nerf(model.field, rays, head, drawn, context=RenderContext(slots=SampleSlots(64, 64)))
    with raises_naming("slots"):
        render_nerf(model.field, rays, head, model.sampler, context=RenderContext(slots=(64, 64)))


# --- the budget's lagged counts and the slots it sizes ----------------------------------------------------------


def test_counts_are_read_two_steps_later_and_size_the_slots():
    budget = SampleBudget(rays=100, budget=1000, fixed=True)
    assert budget.slots() == SampleSlots(MAX_MARCH_SLOTS * 1000, 1000)  # nothing counted yet: the most
    steps = [(400, 500, 0), (800, 1000, 10), (300, 250, 0)]
    for marched, trained, dropped in steps:
        budget.after_step(SampleCount(torch.tensor(marched), torch.tensor(trained), torch.tensor(dropped)), "m")
    assert len(budget.pending) == READ_LAG and budget.last == SampleCount(400, 500, 0)
    # The first step's 100 rays trained 500: 200 rays fill the budget; the march's slots follow 4 samples a ray.
    assert budget.rays == 200
    assert budget.slots() == SampleSlots(max(4096, math.ceil(1.25 * 4 * 200 / 4096) * 4096), 1000)
    means = budget.means(3)  # every step's counts, the pending ones read
    assert means["samples_trained_per_step"] == (500 + 1000 + 250) / 3 and means["rays_dropped_per_step"] == 10 / 3
    # A checkpoint keeps the pending steps: the resumed budget counts them when this one would.
    resumed = SampleBudget(rays=1, budget=1000, fixed=True)
    resumed.load_state(json.loads(json.dumps(budget.state())), 3)
    for b in (budget, resumed):
        b.after_step(SampleCount(torch.tensor(10), torch.tensor(10), torch.tensor(0)), "m")
    assert budget.rays == resumed.rays and budget.counted == resumed.counted and budget.means(4) == resumed.means(4)
    # The second step's 100 rays: 90 fitted and trained 1000, 11.1 a ray, over RATE_JUMP off the first step's 5 a
    # ray: the average starts afresh from it, and 90 rays fill the budget.
    assert 1000 / 90 > (1 + sample_budget.RATE_JUMP) * 5 and budget.rays == 90


def _step(budget: SampleBudget, per_ray: float, march_per_trained: float = 3.0) -> SampleSlots:
    """A step of ``budget``'s rays, each training ``per_ray`` samples: those past the train slots dropped, as the
    renderer drops them (it counts the samples of every ray marched, those in the slots trained)."""
    slots = budget.slots()
    fit = min(budget.rays, int(slots.train // per_ray))
    trained = round(fit * per_ray)
    marched = round(march_per_trained * budget.rays * per_ray)
    budget.after_step(SampleCount(torch.tensor(marched), torch.tensor(trained), torch.tensor(budget.rays - fit)), "m")
    return slots


def test_fixed_shapes_keep_the_rays_and_slots_while_the_budget_allows():
    """One shape from step to step (a CUDA graph replays one): while the samples a ray trains wander by 2%, the rays
    and the march's slots stay, where instant-ngp's rule alone changes the rays at every count; a lasting change
    moves the rays within a few counted steps (their rates are averaged) and the march's slots at once."""
    fixed, exact = SampleBudget(rays=1000, budget=100_000, fixed=True), SampleBudget(rays=1000, budget=100_000)
    g = torch.Generator().manual_seed(0)
    shapes, exact_rays = [], []
    for _ in range(40):
        per_ray = 100 * (1 + 0.02 * (2 * float(torch.rand((), generator=g)) - 1))
        slots = _step(fixed, per_ray)
        shapes.append((fixed.rays, slots.march))
        exact.after_step(SampleCount(3 * round(exact.rays * per_ray), round(exact.rays * per_ray)), "m")
        exact_rays.append(exact.rays)
    assert len(set(shapes[10:])) == 1, shapes  # settled: one shape
    assert len(set(exact_rays[10:])) > 10  # (the budget's rule alone: a new ray count at nearly every step)
    rays, march = shapes[-1]
    assert 100_000 * (1 - RAYS_KEPT_OVER) <= rays * 100 <= 100_000 * (1 + RAYS_KEPT_UNDER)
    for _ in range(READ_LAG + 4):  # each ray now trains half as many again: too many rays, dropped from the slots
        _step(fixed, 150)
    assert fixed.rays < rays * (1 - RAYS_KEPT_OVER) and fixed.last.dropped > 0
    for _ in range(READ_LAG + 2):  # the march now needs far more slots: they grow at once
        slots = _step(fixed, 150, march_per_trained=9.0)
    assert slots.march > march and slots.march >= 9.0 * 150 * fixed.rays  # all the rays' samples


@pytest.mark.parametrize("smoothing", [sample_budget.RATE_SMOOTHING, 1.0])
def test_a_few_rays_a_step_keep_one_shape_on_their_average_rates(monkeypatch, smoothing):
    """With a few hundred rays a step (a small budget), the samples a ray marches and trains wander by a third from
    step to step, past the bands: on rates averaged over the steps the rays and slots settle into one shape over
    16 steps (steps 61-76, as tools/step_anatomy.py --warmup 60 counts them), where one step's rates (a weight of 1)
    change them at most steps: 12 shapes in those 16 (5 seeds: 1 shape each, against 10-14)."""
    monkeypatch.setattr(sample_budget, "RATE_SMOOTHING", smoothing)
    budget = SampleBudget(rays=100, budget=16_384, fixed=True)
    g = torch.Generator().manual_seed(0)
    shapes = []
    for _ in range(76):
        per_ray = 100 * (1 + 0.3 * (2 * float(torch.rand((), generator=g)) - 1))
        slots = _step(budget, per_ray)
        shapes.append((budget.rays, slots.march))
    distinct = len(set(shapes[60:]))
    if smoothing == 1.0:
        assert distinct > 8, shapes[60:]
        return
    assert distinct == 1, shapes[60:]
    rays, _ = shapes[-1]  # near the budget at the mean rate, 100 a ray
    assert abs(rays * 100 / 16_384 - 1) < 0.1


def test_host_copy_reads_numbers():
    copy = HostCopy([torch.tensor(3), torch.tensor(2.5, dtype=torch.float32)])
    assert copy.read() == [3, 2.5] and isinstance(copy.read()[0], int)
    with pytest.raises(TypeError, match="values"):
        HostCopy([torch.ones(2)])


# --- the loop -----------------------------------------------------------------------------------------------------


class _Grey(AvatarModel):
    """One grey level for every pixel; its step counts one sample a ray as device tensors, and its loss turns NaN
    at ``nan_at``."""

    def __init__(self, parametric, nan_at: int):
        super().__init__()
        self.parametric, self.nan_at = parametric, nan_at
        self.optimization = OptimizerConfig(learning_rate=1e-2)
        self.grey = torch.nn.Parameter(torch.tensor(0.0))

    def render_rays(self, rays, head, early_stop=None):
        return torch.sigmoid(self.grey).expand(len(rays.origins), 3)

    def training_step(self, batch, step):
        rgb = self.render_rays(batch.rays, batch.head)
        loss = (rgb - batch.rgb).square().mean() * (math.nan if step == self.nan_at else 1.0)
        n = torch.tensor(len(rgb))
        return StepOutput(loss=loss, rgb=rgb, logs={"x": loss.detach()}, samples=SampleCount(n, n, n * 0))


def test_a_non_finite_loss_stops_the_run_with_the_weights_finite(tiny_video, tmp_path):
    train_frames, eval_frames = tiny_video
    parametric = load_model(train_frames.model_path, train_frames.model_type)
    model = _Grey(parametric, nan_at=3)
    config = TrainingConfig(
        max_iterations=10, rays_per_batch=16, samples_per_batch=32, fixed_shapes=True, eval_every=0,
        checkpoint_every=0, log_every=100,
    )  # fmt: skip
    with pytest.raises(FloatingPointError, match="at step 3"):
        train(model, train_frames, eval_frames, tmp_path / "run", config, log=None)
    assert bool(torch.isfinite(model.grey))  # the NaN step's gradient was zeroed on the device
    assert not (tmp_path / "run" / "checkpoint.pt").exists()  # and no checkpoint was written after it


def test_a_run_with_fixed_shapes_reports_its_dropped_rays(tiny_video, tmp_path):
    train_frames, eval_frames = tiny_video
    parametric = load_model(train_frames.model_path, train_frames.model_type)
    config = TrainingConfig(
        max_iterations=5, rays_per_batch=16, samples_per_batch=32, fixed_shapes=True, eval_every=0,
        checkpoint_every=0, log_every=1,
    )  # fmt: skip
    metrics = train(_Grey(parametric, nan_at=-1), train_frames, eval_frames, tmp_path / "run", config, log=None)
    assert metrics["rays_dropped_per_step"] == 0 and metrics["samples_trained_per_step"] > 0
    # The rays follow the budget two steps late: 16 for three steps, then 32 (one sample a ray); a line has the
    # rays and samples from the step whose counts were read (the third).
    lines = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert [r["rays"] for r in lines if "rays" in r] == [16, 32, 32]
    assert [r["step"] for r in lines if "rays" in r] == [3, 4, 5]


def test_fixed_shapes_settings_are_checked(tiny_video, tmp_path):
    with raises_naming("fixed_shapes"):
        TrainingConfig(fixed_shapes=1, samples_per_batch=64)
    train_frames, eval_frames = tiny_video
    parametric = load_model(train_frames.model_path, train_frames.model_type)
    # Without a sample budget to size the slots from: refused before anything is written, unless the model's shapes
    # follow from its rays alone (renders_every_ray: the triangle-frame NeuS avatar's test trains so)
    unbudgeted = TrainingConfig(max_iterations=1, rays_per_batch=8, fixed_shapes=True, eval_every=0)
    with raises_naming("fixed_shapes"):
        train(_Grey(parametric, nan_at=-1), train_frames, eval_frames, tmp_path / "refused", unbudgeted, log=None)
    assert not (tmp_path / "refused").exists()
    # A model whose step reads the batch's drawn frames (MonoAvatar, the hyper NeuS avatar) needs frames_per_batch
    needs_frames = type("NeedsFrames", (_Grey,), {"steps_on_frames": True})(parametric, nan_at=-1)
    budgeted = dataclasses.replace(unbudgeted, samples_per_batch=64)
    with raises_naming("frames_per_batch"):
        train(needs_frames, train_frames, eval_frames, tmp_path / "refused", budgeted, log=None)
    assert not (tmp_path / "refused").exists()

    class NoSlots(MonoAvatar):  # a step that leaves the slots alone: its samples counted on the host
        def training_step(self, batch, step):
            return super().training_step(dataclasses.replace(batch, context=dataclasses.replace(batch.context, slots=None)), step)

    model = NoSlots(parametric, len(train_frames), TINY_MONOAVATAR)
    config = TrainingConfig(
        max_iterations=1, rays_per_batch=8, samples_per_batch=64, fixed_shapes=True, frames_per_batch=2, eval_every=0
    )
    with raises_naming("fixed_shapes"):
        train(model, train_frames, eval_frames, tmp_path / "run", config, log=None)
