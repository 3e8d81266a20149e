"""Issue 96: no recipe setting is accepted to be ignored. Generated over every registered model x every field of its
recipe (nested configurations included, for each mode its recipe switches between) x a changed value: each field is
read by a real run (its value reaches the run's code: construction, training steps with every schedule reached,
evaluation; traced by ``setting_reads``), or changing it is refused by name before the run folder exists (by the
configuration itself, or by the registry's ``unread_recipe``: the fields a mode leaves unread, declared by the model).
The training settings' walk is ``test_every_setting_is_read``."""

import dataclasses
import io
import types
import typing
from pathlib import Path

import pytest
from setting_reads import leaves, reads
from tiny_configs import (
    TINY_ANCHORED_HASHGRID,
    TINY_CODE_DECODER,
    TINY_INSTA,
    TINY_MONOAVATAR,
    TINY_MONONPHM,
    TINY_PAPER_STEP,
    TINY_PORTRAIT,
)

from headfields.apps.runs import RunConfig, SubjectSource, train_run
from headfields.decoders import AnchorSdfConfig, SdfMlpConfig
from headfields.encoders import UVUNetConfig
from headfields.models.gaussian_avatars import DensityConfig
from headfields.models.gaussian_avatars import cpu_config as gaussian_cpu_config
from headfields.models.hyper_neus import cpu_config as hyper_neus_cpu_config
from headfields.models.insta import paper_config as insta_paper_config
from headfields.models.monoavatar import MonoAvatarConfig
from headfields.models.mononphm import save_prior
from headfields.models.mononphm.prior_method import cpu_config as prior_cpu_config
from headfields.models.portrait360 import Portrait360Config
from headfields.models.registry import MODELS
from headfields.parametric import load_model
from headfields.synthetic import ScanSetConfig, SyntheticVideoConfig, make_synthetic_video
from headfields.training.checkpoints import RunFolder

from helpers import shapes_unchecked, tiny_flame_prior

R = dataclasses.replace
# Density control from the second step, every second step, the opacities reset at the fourth: all within a walk's run.
DENSITY = DensityConfig(
    densification_interval=2, densify_from=2, densify_until=100, opacity_reset_interval=4, reset_opacity_at_densify_from=True
)
GAUSSIAN = gaussian_cpu_config(sh_degree=0, density=DENSITY)
# The hyper NeuS's anchor ensemble (its paper recipe's canonical SDF) of a few small members.
ANCHORS = AnchorSdfConfig(local=SdfMlpConfig(hidden_dim=16, hidden_layers=2), neighbours=3, sigma_rank=3)
BLEND = TINY_PORTRAIT.blend_fields
# The recipes walked: each model's tiny recipe, and the modes that change which settings it reads.
WALKS = {
    "insta": [TINY_INSTA, insta_paper_config(**TINY_PAPER_STEP)],  # the mesh's box; INSTA's cube
    "monoavatar": [
        TINY_MONOAVATAR,
        # (the other variants' UV networks and resolution at the recipes' values: a mode refuses what it leaves unread)
        R(
            TINY_MONOAVATAR,
            features="code_cnn",
            unet=UVUNetConfig(),
            code_decoder=TINY_CODE_DECODER,
            error_correction=None,
            correction_samples=MonoAvatarConfig.correction_samples,
        ),
        R(TINY_MONOAVATAR, features="codes_mlp", unet=UVUNetConfig(), uv_resolution=MonoAvatarConfig.uv_resolution),
    ],
    "portrait360": [
        TINY_PORTRAIT,
        R(TINY_PORTRAIT, blend="colour", blend_fields=R(Portrait360Config().blend_fields, num_fields=4, mapping_hidden_dim=16)),
        R(TINY_PORTRAIT, blend_fields=R(BLEND, field="mlp", outside="clamp")),
    ],
    "hyper_neus": [hyper_neus_cpu_config(), hyper_neus_cpu_config(canonical="anchors", num_anchors=6, anchor_sdf=ANCHORS)],
    "gaussian_avatar": [
        GAUSSIAN,
        R(GAUSSIAN, fine_tune_flame=True, position_lr_delay_steps=3, density=R(DENSITY, prune_by_screen_size=True)),
    ],
    "mix_triangle_neus": [MODELS["mix_triangle_neus"].recipe("cpu")],
    "mix_anchored_hashgrid": [TINY_ANCHORED_HASHGRID],
    "mix_hyper_insta": [TINY_INSTA],
}
# A run of six steps: past every tiny recipe's warm-up, occupancy refresh, correction start and density steps.
STEPS = dict(max_iterations=6, eval_every=3, log_every=2, eval_frames=1, max_minutes=None)
RAYS = dict(rays_per_batch=128, render_chunk=4096, samples_per_batch=None)


# The two pipelines of their own: MonoNPHM tracking a saved tiny prior (its path filled in by the fixture), and the
# prior trained on a few synthetic scans (test_nphm's sizes, set as its command sets them).
PIPELINES = {
    "mononphm": TINY_MONONPHM,
    "nphm_prior": prior_cpu_config(
        scans=ScanSetConfig(num_identities=2, expressions=2),
        training=R(prior_cpu_config().training, scans_per_step=2, surface_points=64, near_points=32, space_points=16),
    ),
}


def test_the_walk_covers_every_model():
    assert set(WALKS) | set(PIPELINES) == set(MODELS)


@pytest.fixture(scope="module")
def subjects(tiny_video, tiny_orbit_video):
    return {"flame": Path(tiny_video[0].root), "smplx": Path(tiny_orbit_video[0].root)}


@pytest.fixture(scope="module")
def person(tmp_path_factory):
    """A held-out synthetic person's tiny video (MonoNPHM's test video) and a tiny prior saved for it."""
    root = tmp_path_factory.mktemp("person")
    identity = ScanSetConfig(num_identities=2).held_out_identity(300)
    video = SyntheticVideoConfig(num_frames=10, num_val=2, num_test=3, resolution=24, supersampling=1, identity=identity)
    flame = load_model(make_synthetic_video(root, video) / "model", "flame")
    save_prior(tiny_flame_prior(flame), root / "prior.pt")
    return root


@pytest.mark.parametrize("name", list(PIPELINES))
def test_every_recipe_setting_of_a_pipeline_is_read_or_refused(name, person, tmp_path, monkeypatch):
    """MonoNPHM's and its prior's pipelines, walked as the loop's models are (their runs: a few tracking steps a
    stage; two prior steps)."""
    entry = MODELS[name]
    if name == "mononphm":
        recipe = R(PIPELINES[name], prior=str(person / "prior.pt"))
        training = R(entry.training_defaults(), eval_frames=2, render_chunk=512)
        source = SubjectSource(data=str(person), all_held_out=False)
    else:
        recipe, training, source = PIPELINES[name], R(entry.training_defaults(), max_iterations=2, log_every=1), SubjectSource()
    run = RunConfig(name, recipe, training, source)
    with shapes_unchecked():  # an end-to-end run (what the unit tests check, called thousands of times)
        read = reads(recipe, lambda: train_run(run, tmp_path / "run", "cpu", log=io.StringIO()))
    unread = {field: value for field, value in leaves(recipe).items() if field not in read}
    assert unread, f"{name}: every field read: the walk refuses nothing (its declared unread fields are read?)"
    with monkeypatch.context() as patch:
        patch.setattr(RunFolder, "open", _reached)
        for field, value in unread.items():
            changed = _changed(recipe, field, value)
            _assert_refused(name, recipe, field, changed, training, source, tmp_path / f"refused_{field}")


@pytest.mark.parametrize("name", list(WALKS))
def test_every_recipe_setting_is_read_or_refused_before_the_folder_exists(name, subjects, tmp_path, monkeypatch):
    entry = MODELS[name]
    training = R(entry.training_defaults(sorted(entry.recipes)[0]), **STEPS, **({} if entry.rasterised else RAYS))
    source = SubjectSource(data=str(subjects[entry.model_type]), model_type=entry.model_type)
    for i, recipe in enumerate(WALKS[name]):
        run = RunConfig(name, recipe, training, source)
        read = reads(recipe, lambda run=run, i=i: train_run(run, tmp_path / f"run{i}", "cpu", log=io.StringIO()))
        unread = {field: value for field, value in leaves(recipe).items() if field not in read}
        with monkeypatch.context() as patch:
            patch.setattr(RunFolder, "open", _reached)
            for field, value in unread.items():
                out = tmp_path / f"refused{i}_{field}"
                _assert_refused(name, recipe, field, _changed(recipe, field, value), training, source, out)


class _Reached(Exception):
    """The run got past every check to its folder: the setting was accepted."""


def _reached(*args, **kwargs):
    raise _Reached


def _assert_refused(name, recipe, field, value, training, source, out):
    where = f"{name}: {field} = {value!r} (unread by the run)"
    try:
        changed = _replaced(recipe, field.split("."), value)
        train_run(RunConfig(name, changed, training, source), out, "cpu", log=io.StringIO())
    except _Reached:
        pytest.fail(f"{where} was accepted")
    except (ValueError, TypeError) as error:  # by its configuration, or by the model's declared unread settings
        assert field.split(".")[-1] in str(error), f"{where} refused without naming it: {error}"
    else:
        pytest.fail(f"{where}: the run neither refused it nor reached its folder")
    assert not out.exists(), f"{where} left {out}"


def _replaced(config, path: list[str], value):
    if len(path) == 1:
        return R(config, **{path[0]: value})
    return R(config, **{path[0]: _replaced(getattr(config, path[0]), path[1:], value)})


def _changed(recipe, field: str, value):
    """A value of ``field``'s type other than ``value`` (the type from its class's annotation where ``value`` is None)."""
    if value is None:
        owner = recipe
        for part in field.split(".")[:-1]:
            owner = getattr(owner, part)
        hint = typing.get_type_hints(type(owner))[field.split(".")[-1]]
        value = _example(next(arg for arg in typing.get_args(hint) if arg is not type(None)))
        return value
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return value + 1
    if isinstance(value, float):
        return value * 1.5 if value else 0.5
    if isinstance(value, str):
        return value + "_changed"
    if isinstance(value, tuple) and value:
        return (_changed(recipe, field, value[0]) if value[0] is not None else value[0], *value[1:])
    raise AssertionError(f"{field}: the walk has no changed value for {value!r}: add one")


def _example(tp):
    origin = typing.get_origin(tp) or tp
    if origin in (typing.Union, types.UnionType):
        return _example(typing.get_args(tp)[0])
    return {int: 1, float: 0.5, str: "changed", bool: True}.get(origin) or _literal(tp)


def _literal(tp):
    if typing.get_origin(tp) is typing.Literal:
        return typing.get_args(tp)[0]
    raise AssertionError(f"the walk has no example value of {tp}: add one")
