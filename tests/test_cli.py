"""The command line the training examples share: its flags and defaults, the run configuration it makes (recipe,
every generated recipe and training flag, --config), and every example's ``--help`` (which imports the example and
builds its whole parser)."""

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest

from headfields.cli import example_training, recipe_config, rounded, run_config, training_parser
from headfields.configs import config_to_dict
from headfields.models import hyper_neus, insta, monoavatar, portrait360
from headfields.models.mixes import MIXES
from headfields.runs import RunConfig, SubjectSource
from headfields.synthetic import SyntheticVideoConfig
from headfields.training import TrainingConfig

EXAMPLES = Path(__file__).parents[1] / "examples"
# The examples with two recipes (--recipe): the paper models and the hyper NeuS avatar (MonoNPHM's network sizes).
RECIPE_EXAMPLES = ["insta", "monoavatar", "portrait360", "hyper_neus"]
TRAINING_EXAMPLES = RECIPE_EXAMPLES + ["mix_triangle_neus", "mix_anchored_hashgrid", "mix_hyper_insta"]
MODULES = {"insta": insta, "monoavatar": monoavatar, "portrait360": portrait360, "hyper_neus": hyper_neus}


def _parser(model: str = "insta", **training):
    return training_parser("demo", model, "outputs/demo", example_training(**training))


def test_defaults_and_flags_reach_the_run_config():
    run = run_config(_parser(max_minutes=5.0, rays_per_batch=512, eval_every=7).parse_args(["--device", "cpu"]))
    assert run.training == TrainingConfig(max_minutes=5.0, rays_per_batch=512, eval_every=7)
    assert (run.model, run.recipe, run.recipe_name) == ("insta", insta.cpu_config(), "cpu")
    assert run.subject == SubjectSource()  # the default synthetic video, tracked with its own model

    argv = ["--device", "cpu", "--rays", "64", "--max-minutes", "0.5", "--iterations", "3", "--eval-split", "val"]
    run = run_config(_parser(max_minutes=5.0).parse_args(argv))
    training = run.training
    assert (training.rays_per_batch, training.max_minutes, training.max_iterations) == (64, 0.5, 3)
    assert run.subject.eval_split == "val"
    with pytest.raises(SystemExit):
        _parser().parse_args(["--eval-split", "train"])  # training frames are not held out


def test_every_recipe_and_training_field_has_a_flag():
    argv = ["--device", "cpu", "--insta.hash-grid.levels", "8", "--insta.background", "0", "0", "0"]
    argv += ["--eval-every", "250", "--log", "tensorboard", "--insta.optimization.ema-decay", "none"]
    run = run_config(_parser().parse_args(argv))
    cpu = insta.cpu_config()
    expected = dataclasses.replace(
        cpu,
        hash_grid=dataclasses.replace(cpu.hash_grid, levels=8),
        background=(0.0, 0.0, 0.0),
        optimization=dataclasses.replace(cpu.optimization, ema_decay=None),
    )
    assert run.recipe == expected
    assert (run.training.eval_every, run.training.log) == (250, "tensorboard")


def test_a_recipe_flags_validation_error_names_the_flag():
    with pytest.raises(ValueError, match="--insta.hash-grid.levels"):
        run_config(_parser().parse_args(["--device", "cpu", "--insta.hash-grid.levels", "0"]))


@pytest.mark.parametrize("name", RECIPE_EXAMPLES)
def test_recipe_flag_picks_the_paper_on_cuda_and_the_cpu_recipe_on_a_cpu(name):
    module, parser = MODULES[name], _parser(name)
    paper, cpu = module.paper_config(), module.cpu_config()
    assert paper != cpu  # two recipes, not one
    assert run_config(parser.parse_args(["--device", "cpu"])).recipe == cpu
    assert run_config(parser.parse_args(["--device", "cuda"])).recipe == paper  # builds no tensor: no GPU needed
    assert run_config(parser.parse_args(["--device", "cpu", "--recipe", "paper"])).recipe == paper
    with pytest.raises(SystemExit):
        parser.parse_args(["--recipe", "gpu"])


def test_a_mix_has_its_one_recipe_and_the_portrait_its_video():
    run = run_config(_parser("mix_hyper_insta").parse_args(["--device", "cuda"]))
    assert run.recipe == MIXES["mix_hyper_insta"].config()
    run = run_config(_parser("portrait360").parse_args(["--device", "cpu"]))
    assert (run.subject.video, run.subject.model_type) == (SyntheticVideoConfig.portrait360(), "smplx")
    run = run_config(_parser("portrait360").parse_args(["--device", "cpu", "--data", "capture"]))
    assert run.subject.video is None and run.subject.data == str(Path("capture").absolute())


def test_config_file_is_the_start_and_flags_change_it(tmp_path):
    saved = RunConfig(
        "insta",
        insta.cpu_config(sh_degree=2),
        TrainingConfig(max_minutes=3.0, eval_every=11),
        SubjectSource(data=str(tmp_path / "capture")),
        "cpu",
    )
    (tmp_path / "config.json").write_text(json.dumps(config_to_dict(saved)))
    run = run_config(_parser().parse_args(["--device", "cpu", "--config", str(tmp_path / "config.json"), "--max-minutes", "9"]))
    assert run.recipe == saved.recipe and run.subject == saved.subject
    assert run.training == dataclasses.replace(saved.training, max_minutes=9.0)
    run = run_config(_parser().parse_args(["--device", "cpu", "--config", str(tmp_path), "--data", str(tmp_path / "b")]))
    assert run.subject.data == str(tmp_path / "b")  # a run folder works too; --data replaces the saved capture
    with pytest.raises(ValueError, match="^recipe: give --recipe or --config"):
        run_config(_parser().parse_args(["--config", str(tmp_path), "--recipe", "cpu"]))
    with pytest.raises(ValueError, match="is a insta run, not monoavatar"):
        run_config(_parser("monoavatar").parse_args(["--config", str(tmp_path)]))


def test_rounded_rounds_floats_only():
    assert rounded({"psnr": 27.123456, "iterations": 501, "name": "x"}) == {"psnr": 27.1235, "iterations": 501, "name": "x"}


def test_recipe_config_of_a_script_outside_the_registry():
    """MonoNPHM's tracking script picks its module's recipe by name."""
    import argparse

    from headfields.models import mononphm

    args = argparse.Namespace(recipe=None, device="cpu")
    assert recipe_config(args, mononphm) == mononphm.cpu_config()


@pytest.mark.parametrize("name", TRAINING_EXAMPLES)
def test_every_training_example_prints_its_help(name):
    run = subprocess.run([sys.executable, str(EXAMPLES / f"{name}.py"), "--help"], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    for flag in ("--data", "--model", "--out", "--max-minutes", "--iterations", "--rays", "--device", "--eval-split"):
        assert flag in run.stdout, (name, flag)
    assert "--config" in run.stdout and f"--{name.replace('_', '-')}." in run.stdout  # --hyper-neus.sdf.hidden-dim ...
    if name in RECIPE_EXAMPLES:
        assert "--recipe {cpu,paper}" in run.stdout
