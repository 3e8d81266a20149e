"""headfields.configs: configs to JSON and back (every library recipe round-trips), and flags generated from them
(compared with hand-made ``dataclasses.replace`` results)."""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
import typing
from dataclasses import dataclass, field

import pytest
from hypothesis import given
from hypothesis import strategies as st

from headfields.configs import (
    CLASS_KEY,
    NOT_GIVEN,
    add_config_flags,
    config_from_dict,
    config_from_flags,
    config_to_dict,
    load_config,
    save_config,
)
from headfields.decoders.nerf import NerfDecoderConfig
from headfields.deformers.error_correction import ErrorCorrectionConfig
from headfields.encoders.hashgrid import HashGridConfig
from headfields.models import hyper_neus, hyper_neus_tracking, insta, mixes, monoavatar, mononphm, neus_avatar, nphm, portrait360
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
    "nphm.NphmConfig": nphm.NphmConfig,
    "nphm.cpu_prior_config": nphm.cpu_prior_config,
    "mononphm.TrackingConfig": mononphm.TrackingConfig,
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
    with pytest.raises(ValueError, match="names no dataclass"):
        config_from_dict({CLASS_KEY: "headfields.models.insta.Insta"})
    with pytest.raises(ValueError, match="expected a InstaConfig"):
        config_from_dict(config_to_dict(NeusConfig()), expected=InstaConfig)


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


def test_values_are_validated():
    data = config_to_dict(TrainingConfig())
    data["max_iterations"] = 0
    with pytest.raises(ValueError, match="max_iterations"):  # __post_init__'s check ran
        config_from_dict(data)
    data["max_iterations"] = "many"
    with pytest.raises(TypeError, match="max_iterations: expected an integer"):
        config_from_dict(data)


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


# ---------------------------------------------------------------------------------------------------------- flags


def parser_for(config, prefix, **kwargs):
    parser = argparse.ArgumentParser(prog="train")
    add_config_flags(parser, config, prefix, **kwargs)
    return parser


def parse(config, prefix, argv, **kwargs):
    args = parser_for(config, prefix, **kwargs).parse_args(argv)
    return config_from_flags(args, config, prefix)


def test_flags_match_a_hand_made_replace():
    base = insta.paper_config()
    argv = "--insta.hash-grid.levels 8 --insta.background 0 0 0.5 --insta.lips-regions lips teeth --insta.shell 0.02"
    argv += " --insta.optimization.betas 0.8 0.95 --insta.decoder.density-activation softplus --insta.depth-regions"
    expected = dataclasses.replace(
        base,
        hash_grid=dataclasses.replace(base.hash_grid, levels=8),
        background=(0.0, 0.0, 0.5),
        lips_regions=("lips", "teeth"),
        shell=0.02,
        optimization=dataclasses.replace(base.optimization, betas=(0.8, 0.95)),
        decoder=dataclasses.replace(base.decoder, density_activation="softplus"),
        depth_regions=(),
    )
    assert parse(base, "insta", argv.split()) == expected


@pytest.mark.parametrize("name", sorted(LIBRARY_CONFIGS))
def test_no_flags_keep_the_base(name):
    config = LIBRARY_CONFIGS[name]()
    assert parse(config, "cfg", []) == config


def test_none_for_an_optional():
    assert parse(insta.paper_config(), "insta", ["--insta.box-size", "none"]).box_size is None
    config = parse(TrainingConfig(max_minutes=3.0), "training", ["--training.max-minutes", "None"])
    assert config.max_minutes is None
    assert parse(TrainingConfig(), "training", ["--training.max-minutes", "inf"]).max_minutes == math.inf


def test_bool_both_ways(capsys):
    base = neus_avatar.NeusAvatarConfig()
    assert base.lighting
    assert parse(base, "neus", ["--neus.lighting", "false"]) == dataclasses.replace(base, lighting=False)
    off = dataclasses.replace(base, lighting=False)
    assert parse(off, "neus", ["--neus.lighting", "true"]) == base
    assert parse(off, "neus", ["--neus.lighting"]) == base  # the flag alone: true
    with pytest.raises(SystemExit):
        parse(base, "neus", ["--neus.lighting", "maybe"])
    assert "--neus.lighting: expected true or false, got 'maybe'" in capsys.readouterr().err


def test_literal_choice_refused(capsys):
    with pytest.raises(SystemExit):
        parse(insta.paper_config(), "insta", ["--insta.decoder.density-activation", "relu"])
    err = capsys.readouterr().err
    assert "--insta.decoder.density-activation" in err and "invalid choice: 'relu'" in err and "softplus" in err
    config = parse(hyper_neus.paper_config(), "hn", ["--hn.canonical", "global"])
    assert config == hyper_neus.paper_config(canonical="global")


def test_unparseable_values_name_the_flag(capsys):
    with pytest.raises(SystemExit):
        parse(insta.paper_config(), "insta", ["--insta.sh-degree", "2.5"])
    assert "--insta.sh-degree: expected an integer, got '2.5'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        parse(insta.paper_config(), "insta", ["--insta.background", "0", "0"])
    assert "--insta.background: expected 3 arguments" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        parse(TrainingConfig(), "training", ["--training.eval-regions", "[[hair]]"])
    assert "--training.eval-regions: expected a JSON value" in capsys.readouterr().err


def test_validation_failure_names_the_flag():
    with pytest.raises(ValueError, match="--training.max-iterations: max_iterations"):
        parse(TrainingConfig(), "training", ["--training.max-iterations", "0"])
    # a check of the parent on its children: the flag that broke it is named
    with pytest.raises(ValueError, match="--mono.uv-resolution"):
        parse(monoavatar.paper_config(), "mono", ["--mono.uv-resolution", "128"])
    base = monoavatar.paper_config()
    both = parse(base, "mono", ["--mono.uv-resolution", "128", "--mono.code-decoder.resolution", "128"])
    code_decoder = dataclasses.replace(base.code_decoder, resolution=128)
    assert both == dataclasses.replace(base, uv_resolution=128, code_decoder=code_decoder)


def test_help_has_the_source_comments():
    text = " ".join(parser_for(insta.paper_config(), "insta").format_help().split())  # argparse wraps lines
    # insta.py: ``occupancy_decay: float = 0.95  # instant-ngp's density_grid_decay``
    assert "--insta.occupancy-decay FLOAT instant-ngp's density_grid_decay (default: 0.95)" in text
    assert "(default: 1.0 1.0 1.0)" in text
    text = " ".join(parser_for(TrainingConfig(), "training").format_help().split())
    # training.py: eval_regions has its explanation in the comment lines above it
    assert "Regions whose PSNR the final evaluation reports" in text
    assert "metres" not in text.split("--training.seed")[1].split("--")[0]  # a field with no comment: its type
    assert "--training.seed INT int (default: 0)" in text


def test_aliases_and_exclude():
    aliases = {"max_iterations": "--iterations", "rays_per_batch": ["--rays", "-r"], "max_minutes": "--max-minutes"}
    parser = parser_for(TrainingConfig(), "training", aliases=aliases, exclude={"seed"})
    parser.add_argument("--seed", type=int, default=0)  # the script's own: no clash
    args = parser.parse_args("--iterations 5 -r 64 --max-minutes 2 --seed 4".split())
    assert config_from_flags(args, TrainingConfig(), "training") == TrainingConfig(
        max_iterations=5, rays_per_batch=64, max_minutes=2.0
    )
    assert args.seed == 4
    args = parser.parse_args(["--training.max-iterations", "6"])  # the generated name still works
    assert config_from_flags(args, TrainingConfig(), "training").max_iterations == 6
    parser = parser_for(insta.paper_config(), "", exclude={"optimization.eps", "hash_grid"})
    flags = {s for a in parser._actions for s in a.option_strings}  # argparse keeps no public list of its flags
    assert "--optimization.learning-rate" in flags and "--optimization.eps" not in flags
    assert not any(f.startswith("--hash-grid") for f in flags)
    parser = argparse.ArgumentParser()
    with pytest.raises(ValueError, match="'sede'"):
        add_config_flags(parser, TrainingConfig(), "training", exclude={"sede"})
    assert [a.dest for a in parser._actions] == ["help"]  # a typo leaves the parser as it was
    with pytest.raises(ValueError, match="'hash_grid'"):
        parser_for(insta.paper_config(), "insta", aliases={"hash_grid": "--grid"})


def test_no_prefix_and_a_given_group():
    assert parse(TrainingConfig(), "", ["--eval-every", "250"]) == TrainingConfig(eval_every=250)
    parser = argparse.ArgumentParser()
    group = parser.add_argument_group("model")
    add_config_flags(group, insta.cpu_config(), "insta")  # every flag, nested ones too, in the script's group
    assert {a.dest for a in group._group_actions} == {a.dest for a in parser._actions} - {"help"}
    args = parser.parse_args(["--insta.hash-grid.levels", "4"])
    assert args.__dict__["insta:sh_degree"] is NOT_GIVEN
    assert config_from_flags(args, insta.cpu_config(), "insta").hash_grid == HashGridConfig(levels=4)
    with pytest.raises(ValueError, match="prefix='other'"):
        config_from_flags(args, insta.cpu_config(), "other")


def test_json_and_optional_config_fields():
    regions = '[["hair", [6]], ["face", [1, 2]]]'
    config = parse(TrainingConfig(), "training", ["--training.eval-regions", regions])
    assert config == TrainingConfig(eval_regions=(("hair", (6,)), ("face", (1, 2))))
    base = monoavatar.paper_config()
    assert parse(base, "mono", ["--mono.error-correction", "none"]) == dataclasses.replace(base, error_correction=None)
    correction = parse(base, "mono", ["--mono.error-correction", '{"start_step": 3}']).error_correction
    assert correction == ErrorCorrectionConfig(start_step=3)
    # the config holds None: a field's flag starts from the class's defaults
    off = monoavatar.cpu_config(error_correction=None)
    corrected = parse(off, "mono", ["--mono.error-correction.start-step", "10"])
    assert corrected == dataclasses.replace(off, error_correction=ErrorCorrectionConfig(start_step=10))
    with pytest.raises(ValueError, match="none contradicts --mono.error-correction.start-step"):
        parse(base, "mono", ["--mono.error-correction", "none", "--mono.error-correction.start-step", "10"])
    box = parse(hyper_neus.cpu_config(), "hn", ["--hn.sampler.box", "[[-1, -1, -1], [1, 1, 1]]"]).sampler.box
    assert box == ((-1.0, -1.0, -1.0), (1.0, 1.0, 1.0))


def expected_flags(config, prefix: str, path: tuple[str, ...] = ()) -> set[str]:
    """The flags every leaf field should have, walking the config's fields (a ``Config | None`` field also has
    its own flag)."""
    flags = set()
    hints = typing.get_type_hints(type(config))
    for f in dataclasses.fields(config):
        value, sub = getattr(config, f.name), (*path, f.name)
        name = "--" + ".".join(p.replace("_", "-") for p in (prefix, *sub))
        if dataclasses.is_dataclass(value):
            flags |= expected_flags(value, prefix, sub)
            if type(None) in typing.get_args(hints[f.name]):
                flags.add(name)
        else:
            flags.add(name)
    return flags


@pytest.mark.parametrize("module", PAPER_MODULES, ids=lambda m: m.__name__.rsplit(".", 1)[1])
def test_every_leaf_field_has_a_flag(module):
    config = module.paper_config()
    parser = parser_for(config, "model")
    flags = {s for a in parser._actions for s in a.option_strings} - {"-h", "--help"}
    assert flags == expected_flags(config, "model")
    assert len(flags) > 10


OUTER_PARSER = parser_for(Outer(), "o")  # built once: argparse parses any number of command lines


@given(st.integers(-(10**6), 10**6), floats, st.none() | floats, st.lists(st.integers(-99, 99), max_size=4), st.booleans())
def test_flags_property(count, scale, limit, sizes, flag):
    """Any values written as a user would (Python's repr of the numbers) come back as a replace would set them."""
    # "--flag=-1e-05": argparse takes a lone "-1e-05" or "-inf" for an option
    argv = ["--o.inner.count", str(count), f"--o.inner.scale={scale!r}", f"--o.limit={limit!r}".lower()]
    argv += ["--o.sizes", *map(str, sizes), "--o.flag", str(flag).lower(), "--o.pair", repr(abs(scale)), "-2"]
    expected = Outer(inner=Inner(count, scale), sizes=tuple(sizes), pair=(abs(scale), -2.0), limit=limit, flag=flag)
    assert config_from_flags(OUTER_PARSER.parse_args(argv), Outer(), "o") == expected
