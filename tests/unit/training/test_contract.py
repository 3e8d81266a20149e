"""The model contract (training.contract.AvatarModel), declared: every model of the library subclasses it, says
what it is (a ray model or a rasteriser, which modes it takes) in class attributes that match the callbacks it
overrides, and the engine refuses anything else by name before a run writes a file."""

import pytest
import torch
from tiny_configs import TINY_INSTA, TINY_MONOAVATAR, TINY_PORTRAIT

from headfields.cameras import Rays
from headfields.heads import tracked_head
from headfields.models.gaussian_avatars import GaussianAvatar, cpu_config
from headfields.models.insta import Insta
from headfields.models.mixes import MIXES
from headfields.models.monoavatar import MonoAvatar
from headfields.models.portrait360 import Portrait360
from headfields.parametric import load_model
from headfields.training import AvatarModel, RayBatch, TrainingConfig, train

from helpers import raises_naming, shapes_unchecked

# Each declaration and the callback it promises: a model that sets one overrides the other.
DECLARED = {"draws_images": "render_camera", "captures_graph": "graph_phase", "balances_views": "view_bins"}


@pytest.fixture(scope="module")
def models(tiny_video, tiny_orbit_video):
    train_frames = tiny_video[0]
    flame = load_model(train_frames.model_path, train_frames.model_type)
    orbit = tiny_orbit_video[0]
    return {
        "insta": Insta(flame, train_frames.segmentation_labels, TINY_INSTA),
        "monoavatar": MonoAvatar(flame, len(train_frames), TINY_MONOAVATAR),
        "portrait360": Portrait360(load_model(orbit.model_path, orbit.model_type), TINY_PORTRAIT),
        "mix_triangle_neus": MIXES["mix_triangle_neus"].build(flame, train_frames),
        "gaussian_avatar": GaussianAvatar(flame, cpu_config()),
    }


def overrides(model, name: str) -> bool:
    return getattr(type(model), name) is not getattr(AvatarModel, name)


@pytest.mark.parametrize("name", ["insta", "monoavatar", "portrait360", "mix_triangle_neus", "gaussian_avatar"])
def test_every_model_declares_what_it_overrides(models, name):
    model = models[name]
    assert isinstance(model, AvatarModel)
    for flag, callback in DECLARED.items():
        assert getattr(model, flag) == overrides(model, callback), (flag, callback)
    # A ray model trains and renders rays; a rasteriser brings its own steps and draws whole images.
    rays = not model.draws_images
    assert overrides(model, "training_step") == rays and overrides(model, "render_rays") == rays
    assert (model.step_strategy() is None) == rays
    # A ray model's field is the one a mesh is extracted from; the submodule is not hidden by the base class.
    assert (model.radiance_field() is model.field) if rays else model.radiance_field() is None
    assert model.parametric is not None and model.config is not None


def test_the_defaults_do_nothing_and_refuse_what_a_model_did_not_declare(models, tiny_video):
    model = AvatarModel()
    weight = torch.nn.Parameter(torch.zeros(2))
    model.weight = weight
    assert model.param_groups() == [{"params": [weight]}]
    frames = tiny_video[0]
    head = tracked_head(models["insta"].parametric, frames)
    assert model.before_step(0, head) is None and model.step_strategy() is None and model.graph_phase(5) is None
    rays = Rays(torch.zeros(1, 3), torch.ones(1, 3), torch.zeros(1, dtype=torch.long))
    assert model.fitted_head(head) is head and model.render(rays, head) is None and model.radiance_field() is None
    for call in (
        lambda: model.render_rays(rays, head),
        lambda: model.training_step(RayBatch(rays, frames, torch.zeros(1, 3), head=head), 0),
        lambda: model.render_camera(frames.cameras, 0, head, 0),
        lambda: model.view_bins(frames, head),
    ):
        with pytest.raises(NotImplementedError, match="AvatarModel"):
            call()
    # A rasteriser says what it draws instead: whole images.
    with pytest.raises(NotImplementedError, match="GaussianAvatar renders whole images"):
        models["gaussian_avatar"].render_rays(rays, head)


def test_the_engine_refuses_a_module_that_is_no_avatar_model_before_writing(tiny_video, tmp_path):
    train_frames, eval_frames = tiny_video[0], tiny_video[1]
    out = tmp_path / "run"
    with shapes_unchecked(), pytest.raises(TypeError, match="^model: expected a headfields.training.AvatarModel"):
        train(torch.nn.Linear(1, 1), train_frames, eval_frames, out, TrainingConfig(max_iterations=1), device="cpu")
    assert not out.exists()


def test_a_mode_a_model_did_not_declare_is_refused_by_name(models, tiny_video, tmp_path):
    train_frames, eval_frames = tiny_video[0], tiny_video[1]
    out = tmp_path / "run"
    insta = models["insta"]
    with raises_naming("balance_views"):
        train(insta, train_frames, eval_frames, out, TrainingConfig(max_iterations=1, balance_views=True), device="cpu")
    assert not out.exists()
