"""The stratified sampler in fixed slots (``TrainingConfig.fixed_shapes``): the samples it gives without slots, in
order, then padding, with nothing read back on CUDA's paths; and the 360° portrait's step rendered in slots against
the same step without them (its colours, loss and every gradient), on rays of which some miss the head."""

from __future__ import annotations

import pytest
import torch
from tiny_configs import TINY_PORTRAIT

from headfields.checks import trusted_values
from headfields.device_paths import cuda_paths
from headfields.heads import tracked_head
from headfields.models.registry import MODELS
from headfields.renderers import EARLY_STOP_TRANSMITTANCE, RenderContext, SampleSlots
from headfields.synthetic import SyntheticVideoConfig, synthetic_subject
from headfields.training.batches import ray_batch


@pytest.fixture(scope="module")
def portrait():
    subject = synthetic_subject(SyntheticVideoConfig(num_frames=4, num_val=1, num_test=1, resolution=16, episode_frames=2))
    torch.manual_seed(0)
    model = MODELS["portrait360"].build(subject, TINY_PORTRAIT)
    head = tracked_head(model.parametric, subject.train)
    batch = ray_batch(subject.train, 96, torch.Generator().manual_seed(1), torch.device("cpu"), head=head)
    return model, head, batch.rays


@pytest.mark.parametrize("shell", [None, 0.03])
def test_the_sampler_s_slots_hold_its_samples_in_order_then_padding(portrait, shell, host_sync_spy):
    model, head, rays = portrait
    sampler = type(model.sampler)(model.sampler.num_samples, padding=model.sampler.padding, shell=shell)
    plain = sampler(rays, head, None, torch.Generator().manual_seed(2))
    slots = len(plain) + 100
    with cuda_paths(), trusted_values(), host_sync_spy() as spy:
        fixed = sampler(rays, head, None, torch.Generator().manual_seed(2), slots=slots)
    assert not spy.reads and not spy.copies, spy.report()
    n = len(plain)
    assert 0 < n < 96 * sampler.num_samples  # some rays miss the box (or leave the shell)
    assert fixed.slots == slots and int(fixed.count) == int(fixed.wanted) == n and bool(fixed.fits.all())
    s = fixed.samples
    assert (
        torch.equal(s.ray[:n], plain.ray) and torch.equal(s.t_start[:n], plain.t_start) and torch.equal(s.t_end[:n], plain.t_end)
    )
    assert bool((s.t_end[n:] == s.t_start[n:]).all()) and bool((s.ray[n:] == 95).all())  # zero-length, on the last ray
    few = sampler(rays, head, None, torch.Generator().manual_seed(2), slots=n // 2)  # too few: the last rays drop out
    kept = int(few.count)
    assert kept <= n // 2 and not bool(few.fits.all()) and bool(few.fits[: int(plain.ray[kept - 1]) + 1].all())
    assert torch.equal(few.samples.t_start[:kept], plain.t_start[:kept])


def test_the_portrait_s_step_in_slots_is_the_step_without_them(portrait):
    model, head, rays = portrait
    target = torch.rand(len(rays), 3, generator=torch.Generator().manual_seed(3))

    def step(slots):
        model.zero_grad(set_to_none=True)
        with cuda_paths(), trusted_values():
            out = model.render(rays, head, RenderContext(torch.Generator().manual_seed(2), EARLY_STOP_TRANSMITTANCE, slots))
            loss = (out.composite.rgb - target).square().mean()
            loss.backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        return out, loss.detach(), grads

    plain, loss, grads = step(None)
    marched = plain.count.marched
    fixed, fixed_loss, fixed_grads = step(SampleSlots(marched + 64, plain.count.trained + 64))
    assert bool(fixed.fits.all()) and int(fixed.count.trained) == plain.count.trained
    torch.testing.assert_close(fixed.composite.rgb, plain.composite.rgb, rtol=0, atol=1e-6)
    torch.testing.assert_close(fixed_loss, loss, rtol=1e-6, atol=0)
    assert fixed_grads.keys() == grads.keys() and len(grads) > 4
    for name, grad in grads.items():
        torch.testing.assert_close(fixed_grads[name], grad, rtol=1e-5, atol=1e-8, msg=name)
