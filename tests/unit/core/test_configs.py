"""headfields.configs: configs to JSON and back (every library recipe round-trips); the flags made from the same
dataclasses are tested with the train command (tests/e2e/test_train_command.py)."""

from __future__ import annotations

import dataclasses
import json
import math
import sys
from dataclasses import dataclass, field

import pytest
from hypothesis import given
from hypothesis import strategies as st

from headfields.configs import (
    CLASS_KEY,
    added_field,
    config_from_dict,
    config_to_dict,
    load_config,
    same_library_class,
    save_config,
)
from headfields.decoders.nerf import NerfDecoderConfig
from headfields.encoders.hashgrid import HashGridConfig
from headfields.models import hyper_neus, hyper_neus_tracking, insta, mixes, monoavatar, mononphm, neus_avatar, portrait360
from headfields.models.hyper_neus import HyperNeusConfig
from headfields.models.insta import InstaConfig
from headfields.models.neus_model import NeusConfig
from headfields.training import OptimizerConfig, TrainingConfig

PAPER_MODULES = [insta, monoavatar, portrait360, hyper_neus, mononphm]

LIBRARY_CONFIGS = {
    **{f"{m.__name__.rsplit('.', 1)[1]}.{r}": getattr(m, f"{r}_config") for m in PAPER_MODULES for r in ("paper", "cpu")},
    **{f"mixes.{name}": mix.config for name, mix in mixes.MIXES.items()},
    "mixes.HYPER": lambda: mixes.HYPER,
    "mixes.ANCHORED_GRID": lambda: mixes.ANCHORED_GRID,
    "neus_avatar.NeusAvatarConfig": neus_avatar.NeusAvatarConfig,
    "training.TrainingConfig": lambda: TrainingConfig(eval_regions=(("hair", (6,)), ("face", (1, 2, 5))), max_minutes=3.5),
    "training.OptimizerConfig(inf)": lambda: OptimizerConfig(1e-3, max_grad_norm=math.inf, betas=(0.5, 0.9)),
    "nphm.NphmConfig": mononphm.NphmConfig,
    "nphm.cpu_prior_config": mononphm.cpu_prior_config,
    "mononphm.MonoNphmTracking": mononphm.MonoNphmTracking,
    "mononphm.cpu_tracking": mononphm.cpu_tracking,
    "hyper_neus_tracking.TrackingConfig": hyper_neus_tracking.TrackingConfig,
}


def through_json(config):
    return json.loads(json.dumps(config_to_dict(config), allow_nan=False))


# ----------------------------------------------------------------------------------------------------------- JSON


@pytest.mark.parametrize("name", sorted(LIBRARY_CONFIGS))
def test_library_configs_round_trip(name):
    config = LIBRARY_CONFIGS[name]()
    back = config_from_dict(through_json(config))
    assert back == config and type(back) is type(config)
    assert hash(back) == hash(config)  # lists came back as tuples: still hashable


def test_dict_layout():
    """Each nested dataclass names its class; tuples are lists; infinity is the string "inf"."""
    data = through_json(insta.cpu_config())
    assert data[CLASS_KEY] == "headfields.models.insta.InstaConfig"
    assert data["hash_grid"][CLASS_KEY] == "headfields.encoders.hashgrid.HashGridConfig"
    assert data["optimization"]["betas"] == list(insta.cpu_config().optimization.betas)
    assert data["background"] == [1.0, 1.0, 1.0]
    assert data["box_size"] is None
    assert config_to_dict(OptimizerConfig(1.0, max_grad_norm=math.inf))["max_grad_norm"] == "inf"


def test_round_trip_through_a_file(tmp_path):
    config = monoavatar.cpu_config(error_correction=None, features="codes")
    path = save_config(tmp_path / "config.json", config)
    assert json.loads(path.read_text())[CLASS_KEY] == "headfields.models.monoavatar.MonoAvatarConfig"
    assert load_config(path, expected=monoavatar.MonoAvatarConfig) == config
    other = tmp_path / "plain.json"
    with open(other, "w") as file:
        json.dump(config_to_dict(TrainingConfig(eval_regions=(("hair", (6,)),))), file)
    with open(other) as file:
        assert config_from_dict(json.load(file)) == TrainingConfig(eval_regions=(("hair", (6,)),))


def test_non_headfields_class_is_refused(capsys):
    already = "this" in sys.modules
    with pytest.raises(ValueError, match=r"this\.s"):
        config_from_dict({CLASS_KEY: "this.s"})  # importing ``this`` would print the Zen of Python
    assert capsys.readouterr().out == ""
    assert ("this" in sys.modules) == already
    data = config_to_dict(InstaConfig())
    data["hash_grid"][CLASS_KEY] = "collections.OrderedDict"
    with pytest.raises(ValueError, match="collections.OrderedDict"):
        config_from_dict(data)


def test_headfields_class_that_does_not_fit_is_refused():
    data = config_to_dict(InstaConfig())
    data["hash_grid"] = config_to_dict(NerfDecoderConfig())
    with pytest.raises(ValueError, match="HashGridConfig"):
        config_from_dict(data)
    with pytest.raises(ValueError, match="not a configuration class"):
        config_from_dict({CLASS_KEY: "headfields.models.insta.Insta"})
    with pytest.raises(ValueError, match="expected a InstaConfig"):
        config_from_dict(config_to_dict(NeusConfig()), expected=InstaConfig)


def test_a_moved_library_class_is_found_by_its_name():
    # A run folder written before the packages were reorganised names the class by its old module.
    data = config_to_dict(insta.cpu_config())
    data[CLASS_KEY] = "headfields.models.old_place.InstaConfig"
    data["hash_grid"][CLASS_KEY] = "headfields.hashgrid.HashGridConfig"
    assert config_from_dict(data) == insta.cpu_config()
    assert same_library_class("headfields.models.gaussian_avatar.GaussianAvatar", "headfields.models.gaussians.GaussianAvatar")
    assert not same_library_class("headfields.models.insta.Insta", "headfields.models.insta.InstaConfig")
    assert not same_library_class("mylab.Insta", "headfields.models.insta.Insta")  # only the library's own move
    data[CLASS_KEY] = "mylab.models.InstaConfig"  # outside the library: refused as before
    with pytest.raises(ValueError, match="mylab.models.InstaConfig"):
        config_from_dict(data)


def test_unknown_key_is_refused_naming_it():
    data = config_to_dict(InstaConfig())
    data["hash_grid"]["levles"] = 3
    with pytest.raises(ValueError, match=r"HashGridConfig has no field 'levles'"):
        config_from_dict(data)


def test_missing_key_takes_the_default():
    data = config_to_dict(TrainingConfig(eval_every=7, seed=3))
    del data["eval_every"]
    config = config_from_dict(data)
    default = next(f.default for f in dataclasses.fields(TrainingConfig) if f.name == "eval_every")
    assert config.eval_every == default and config.seed == 3
    data = config_to_dict(insta.cpu_config())
    del data["hash_grid"]["levels"], data["sh_degree"]
    assert config_from_dict(data) == insta.cpu_config(hash_grid=HashGridConfig(), sh_degree=InstaConfig.sh_degree)
    with pytest.raises(ValueError, match="'learning_rate'"):  # no default to take
        config_from_dict({"decay_steps": 3}, expected=OptimizerConfig)


@dataclass(frozen=True)
class _Switched:
    """A config whose switch came later, with a new default: files without it were trained with the old value."""

    rate: float = 1.0
    switch: bool | None = added_field(None, before=False)


def test_a_field_added_later_takes_its_old_value_where_a_file_lacks_it():
    assert _Switched().switch is None and config_to_dict(_Switched())["switch"] is None
    for value in (None, True, False):
        assert config_from_dict({"rate": 2.0, "switch": value}, expected=_Switched) == _Switched(2.0, value)
    assert config_from_dict({"rate": 2.0}, expected=_Switched) == _Switched(2.0, False)  # written before the field
    assert config_from_dict({"switch": True}, expected=_Switched) == _Switched(1.0, True)  # the other: its default


def test_values_are_validated():
    data = config_to_dict(TrainingConfig())
    data["max_iterations"] = 0
    with pytest.raises(ValueError, match="max_iterations"):  # __post_init__'s check ran
        config_from_dict(data)
    data["max_iterations"] = "many"
    with pytest.raises(ValueError, match="max_iterations: expected an integer"):
        config_from_dict(data)


@pytest.mark.parametrize(
    "field_name, value, message",
    [
        ("max_iterations", "ten", r"TrainingConfig\.max_iterations: expected an integer, got 'ten'"),
        ("max_minutes", [3], r"TrainingConfig\.max_minutes: expected float \| None, got \[3\]"),
        ("fixed_shapes", 1, r"TrainingConfig\.fixed_shapes: expected true or false, got 1"),
        ("eval_regions", "hair", r"TrainingConfig\.eval_regions: expected a list"),
    ],
)
def test_a_value_of_the_wrong_type_is_a_value_error_naming_the_field(field_name, value, message):
    """A config file is input: a wrong type in it is bad input (ValueError, which a command prints as one line), not
    a bug in the caller's code (TypeError, a traceback)."""
    data = config_to_dict(TrainingConfig())
    data[field_name] = value
    with pytest.raises(ValueError, match=message):
        config_from_dict(data, TrainingConfig)


def test_a_recipe_without_its_class_is_named():
    from headfields.apps.runs import RunConfig

    data = config_to_dict(RunConfig("insta", insta.cpu_config()))
    del data["recipe"][CLASS_KEY]
    with pytest.raises(ValueError, match=r"recipe: expected insta's configuration .*'__class__'.*got dict"):
        config_from_dict(data, RunConfig)
    data["recipe"] = 3
    with pytest.raises(ValueError, match="recipe: expected insta's configuration .* got int"):
        config_from_dict(data, RunConfig)


@dataclass(frozen=True)
class Holder:
    model: NeusConfig = field(default_factory=NeusConfig)
    name: str = "x"


def test_subclass_in_a_field_round_trips():
    config = Holder(model=hyper_neus.cpu_config(num_anchors=7))
    back = config_from_dict(through_json(config), expected=Holder)
    assert type(back.model) is HyperNeusConfig and back == config
    top = config_from_dict(through_json(hyper_neus.cpu_config()), expected=NeusConfig)
    assert type(top) is HyperNeusConfig
    plain = through_json(config)
    del plain[CLASS_KEY]  # the expected class stands in for a missing one at the top
    assert config_from_dict(plain, expected=Holder) == config


@dataclass(frozen=True)
class Inner:
    count: int = 1
    scale: float = 1.0
    label: str | None = None


@dataclass(frozen=True)
class Outer:
    inner: Inner = field(default_factory=Inner)
    sizes: tuple[int, ...] = ()
    pair: tuple[float, float] = (0.0, 1.0)
    limit: float | None = None
    named: tuple[tuple[str, tuple[int, ...]], ...] = ()
    flag: bool = False
    maybe_inner: Inner | None = None


floats = st.floats(allow_nan=False, width=64)
inners = st.builds(Inner, st.integers(), floats, st.none() | st.text(max_size=5))
outers = st.builds(
    Outer,
    inners,
    st.lists(st.integers(), max_size=4).map(tuple),
    st.tuples(floats, floats),
    st.none() | floats,
    st.lists(st.tuples(st.text(max_size=4), st.lists(st.integers(0, 9), max_size=3).map(tuple)), max_size=3).map(tuple),
    st.booleans(),
    st.none() | inners,
)


@given(outers)
def test_round_trip_property(config):
    back = config_from_dict(through_json(config), expected=Outer)
    assert back == config
    assert all(isinstance(v, tuple) for v in (back.sizes, back.pair, back.named))
