"""The step's render context (``RenderContext``): what it accepts, what it refuses by name, and the two-pass renderer's
own refusals. What a context changes in a render (early stop, slots, the rays that miss a NeuS box) is held by
tests/unit/training/test_fixed_shapes.py, test_sample_budget.py, tests/unit/models/test_monoavatar.py and
test_neus_avatar.py against the exact shapes."""

import pytest
import torch
from tiny_configs import TINY_MONOAVATAR

from headfields.cameras import image_rays
from headfields.heads import tracked_head
from headfields.models.monoavatar import MonoAvatar
from headfields.parametric import load_model
from headfields.renderers import RenderContext, SampleSlots, render_nerf_passes
from headfields.renderers.volume import render_context

from helpers import raises_naming


def test_a_context_holds_the_step_s_choices_and_slots_are_fixed_shapes():
    generator = torch.Generator().manual_seed(0)
    plain = RenderContext(generator, 1e-4)
    assert plain.generator is generator and plain.early_stop == 1e-4 and plain.slots is None and not plain.fixed_shapes
    slotted = RenderContext(slots=SampleSlots(64, 32))
    assert slotted.fixed_shapes  # slots are sizes that do not depend on the data
    assert render_context(None) == RenderContext() and render_context(slotted) is slotted


@pytest.mark.parametrize(
    ("name", "kwargs"),
    [
        ("generator", {"generator": 0}),
        ("early_stop", {"early_stop": 0.0}),
        ("early_stop", {"early_stop": 1.0}),
        ("early_stop", {"early_stop": True}),
        ("early_stop", {"early_stop": "1e-4"}),
        ("slots", {"slots": (64, 32)}),
        ("fixed_shapes", {"fixed_shapes": 1}),
    ],
)
def test_a_bad_context_is_refused_by_name(name, kwargs):
    with raises_naming(name):
        RenderContext(**kwargs)


def test_a_renderer_refuses_what_is_not_a_context():
    with raises_naming("context"):
        render_context({"early_stop": 1e-4})


def test_the_two_passes_need_a_fixed_number_of_coarse_samples_and_some_fine_ones(tiny_video):
    frames = tiny_video[0]
    parametric = load_model(frames.model_path, frames.model_type)
    model = MonoAvatar(parametric, len(frames), TINY_MONOAVATAR)
    head, rays = tracked_head(parametric, frames), image_rays(frames.cameras, 0)
    fields = (model.coarse_field, model.field, rays, head)
    passes = render_nerf_passes(*fields, model.sampler, 4)
    assert passes.count == passes.coarse.count + passes.fine.count and passes.loss_weight is None
    with raises_naming("sampler"):  # samples drawn already: the fine pass's slots are sized from a ray's count
        render_nerf_passes(*fields, model.sampler(rays, head), 4)
    with raises_naming("fine_samples"):
        render_nerf_passes(*fields, model.sampler, 0)
