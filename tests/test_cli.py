"""The command line the training examples share: its flags and defaults, the loop configuration it makes, and
every example's ``--help`` (which imports the example and builds its whole parser)."""

import subprocess
import sys
from pathlib import Path

import pytest

from headfields.cli import add_recipe_flag, recipe_config, rounded, training_config, training_parser
from headfields.models import hyper_neus, insta, monoavatar, portrait360
from headfields.training import TrainingConfig

EXAMPLES = Path(__file__).parents[1] / "examples"
# The examples with two recipes (--recipe): the paper models and the hyper NeuS avatar (MonoNPHM's network sizes).
RECIPE_EXAMPLES = ["insta", "monoavatar", "portrait360", "hyper_neus"]
TRAINING_EXAMPLES = RECIPE_EXAMPLES + ["mix_triangle_neus", "mix_anchored_hashgrid", "mix_hyper_insta"]


def test_defaults_and_flags_reach_the_training_config():
    parser = training_parser("demo", "outputs/demo", minutes=5.0, rays=512)
    args = parser.parse_args([])
    assert (args.data, args.model, args.out, args.eval_split) == (None, None, Path("outputs/demo"), "test")
    config = training_config(args, eval_every=7)
    assert (config.max_minutes, config.rays_per_batch, config.eval_every) == (5.0, 512, 7)
    assert config.max_iterations == TrainingConfig.max_iterations

    args = parser.parse_args(["--rays", "64", "--max-minutes", "0.5", "--iterations", "3", "--eval-split", "val"])
    config = training_config(args)
    assert (config.rays_per_batch, config.max_minutes, config.max_iterations, args.eval_split) == (64, 0.5, 3, "val")
    with pytest.raises(SystemExit):
        parser.parse_args(["--eval-split", "train"])  # training frames are not held out


def test_bad_defaults_raise_naming_the_argument():
    with pytest.raises(ValueError, match="^minutes:"):
        training_parser("demo", "out", minutes=0.0, rays=512)
    with pytest.raises(ValueError, match="^rays:"):
        training_parser("demo", "out", minutes=1.0, rays=0)


def test_rounded_rounds_floats_only():
    assert rounded({"psnr": 27.123456, "iterations": 501, "name": "x"}) == {"psnr": 27.1235, "iterations": 501, "name": "x"}


@pytest.mark.parametrize("name", TRAINING_EXAMPLES)
def test_every_training_example_prints_its_help(name):
    run = subprocess.run([sys.executable, str(EXAMPLES / f"{name}.py"), "--help"], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    for flag in ("--data", "--model", "--out", "--max-minutes", "--iterations", "--rays", "--device", "--eval-split"):
        assert flag in run.stdout, (name, flag)


@pytest.mark.parametrize("module", [insta, monoavatar, portrait360, hyper_neus], ids=lambda m: m.__name__)
def test_recipe_flag_picks_the_paper_on_cuda_and_the_cpu_recipe_on_a_cpu(module):
    parser = training_parser("demo", "out", minutes=1.0, rays=8)
    add_recipe_flag(parser)
    paper, cpu = module.paper_config(), module.cpu_config()
    assert paper != cpu  # two recipes, not one
    assert recipe_config(parser.parse_args(["--device", "cpu"]), module) == cpu
    assert recipe_config(parser.parse_args(["--device", "cuda"]), module) == paper  # builds no tensor: no GPU needed
    assert recipe_config(parser.parse_args(["--device", "cpu", "--recipe", "paper"]), module) == paper
    with pytest.raises(SystemExit):
        parser.parse_args(["--recipe", "gpu"])


@pytest.mark.parametrize("name", RECIPE_EXAMPLES)
def test_recipe_examples_offer_the_recipe_flag(name):
    run = subprocess.run([sys.executable, str(EXAMPLES / f"{name}.py"), "--help"], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert "--recipe {paper,cpu}" in run.stdout
