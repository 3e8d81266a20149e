"""``python -m headfields train MODEL``: its flags (tyro over the config dataclasses) and the run they make: the
recipe each starts from, every recipe and training field as a flag, --config as the start, the short names, errors
that name the flag; the examples call it; one command trains end to end."""

from __future__ import annotations

import dataclasses
import json
import re
import subprocess
import sys
import typing
from pathlib import Path

import pytest

from headfields.apps.commands import main
from headfields.apps.commands.train import run_config
from headfields.apps.runs import RunConfig, SubjectSource, read_run_config
from headfields.configs import config_to_dict
from headfields.models import hyper_neus, insta, monoavatar, portrait360
from headfields.models.mixes import MIXES
from headfields.models.registry import MODELS
from headfields.synthetic import SyntheticVideoConfig
from headfields.training import TrainingConfig

EXAMPLES = Path(__file__).parents[2] / "examples"


@pytest.fixture(autouse=True)
def _elsewhere(tmp_path_factory, monkeypatch):
    """The default --out (outputs/MODEL) is relative: a run trained there (make demo) would be resumed from."""
    monkeypatch.chdir(tmp_path_factory.mktemp("cwd"))


MODULES = {"insta": insta, "monoavatar": monoavatar, "portrait360": portrait360, "hyper_neus": hyper_neus}


def test_defaults_and_flags_reach_the_run_config():
    run, out, device = run_config("insta", ["--device", "cpu"])
    assert run.training == MODELS["insta"].training_defaults("cpu") and (out, device) == (Path("outputs/insta"), "cpu")
    assert run.training.samples_per_batch == 1 << 14  # the CPU recipe's budget
    paper, _, _ = run_config("insta", ["--device", "cpu", "--recipe", "paper"])
    assert paper.training == MODELS["insta"].training_defaults("paper")
    assert (paper.training.samples_per_batch, paper.training.early_stop) == (1 << 18, 1e-4)  # instant-ngp's
    assert paper.training.render_chunk == 1 << 18  # a 512² frame a render call on the GPU
    assert (run.model, run.recipe, run.recipe_name) == ("insta", insta.cpu_config(), "cpu")
    assert run.subject == SubjectSource()  # the default synthetic video, tracked with its own model

    argv = ["--device", "cpu", "--rays", "64", "--max-minutes", "0.5", "--iterations=3", "--eval-split", "val"]
    run, _, _ = run_config("insta", argv + ["--out", "elsewhere"])
    training = run.training
    assert (training.rays_per_batch, training.max_minutes, training.max_iterations) == (64, 0.5, 3)
    assert run.subject.eval_split == "val"
    with pytest.raises(SystemExit):
        run_config("insta", ["--eval-split", "train"])  # training frames are not held out


def test_recipe_and_training_flags_change_their_fields():
    argv = ["--device", "cpu", "--insta.hash-grid.levels", "8", "--insta.background", "0", "0", "0"]
    argv += ["--eval-every", "250", "--log", "tensorboard", "--insta.optimization.ema-decay", "None"]
    argv += ["--balance-views", "True", "--eval-regions", "hair", "6", "face", "1", "2"]
    run, _, _ = run_config("insta", argv)
    cpu = insta.cpu_config()
    expected = dataclasses.replace(
        cpu,
        hash_grid=dataclasses.replace(cpu.hash_grid, levels=8),
        background=(0.0, 0.0, 0.0),
        optimization=dataclasses.replace(cpu.optimization, ema_decay=None),
    )
    assert run.recipe == expected
    assert (run.training.eval_every, run.training.log, run.training.balance_views) == (250, "tensorboard", True)
    assert run.training.eval_regions == (("hair", (6,)), ("face", (1, 2)))
    # The examples' spelling of booleans and None still reads.
    training = run_config("insta", ["--device", "cpu", "--balance-views", "true", "--max-minutes=none"])[0].training
    assert training.balance_views is True and training.max_minutes is None


def _leaf_flags(config, prefix: str, hints_of=typing.get_type_hints) -> set[str]:
    """The flag of every leaf field of ``config`` (a dataclass field that may be None is a subcommand instead)."""
    flags = set()
    hints = hints_of(type(config))
    for f in dataclasses.fields(config):
        value, name = getattr(config, f.name), f"{prefix}.{f.name.replace('_', '-')}" if prefix else f.name.replace("_", "-")
        if dataclasses.is_dataclass(value):
            if type(None) not in typing.get_args(hints[f.name]):
                flags |= _leaf_flags(value, name)
        else:
            flags.add(f"--{name}")
    return flags


@pytest.mark.parametrize("model", sorted(MODULES))
def test_every_leaf_field_of_the_recipe_and_of_training_has_a_flag(model, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "1000")  # one flag a line of the help
    with pytest.raises(SystemExit):
        run_config(model, ["--recipe", "paper", "--help"])
    flags = set(re.findall(r"(--[a-z0-9][a-z0-9.-]*)", capsys.readouterr().out))
    expected = _leaf_flags(MODULES[model].paper_config(), model.replace("_", "-")) | _leaf_flags(TrainingConfig(), "")
    assert expected <= flags, sorted(expected - flags)
    options = {"--out", "--data", "--model", "--regions", "--device", "--eval-split", "--recipe", "--config"}
    assert options <= flags and len(expected) > 20


def test_a_validation_error_names_the_flag(capsys):
    with pytest.raises(SystemExit) as raised:
        run_config("insta", ["--device", "cpu", "--insta.hash-grid.levels", "0"])
    assert raised.value.code == 2
    err = capsys.readouterr().err
    assert "insta.hash-grid" in err and "levels" in err


@pytest.mark.parametrize("name", sorted(MODULES))
def test_recipe_flag_picks_the_paper_on_cuda_and_the_cpu_recipe_on_a_cpu(name):
    module = MODULES[name]
    paper, cpu = module.paper_config(), module.cpu_config()
    assert paper != cpu  # two recipes, not one
    assert run_config(name, ["--device", "cpu"])[0].recipe == cpu
    assert run_config(name, ["--device", "cuda"])[0].recipe == paper  # builds no tensor: no GPU needed
    assert run_config(name, ["--device", "cpu", "--recipe", "paper"])[0].recipe == paper
    with pytest.raises(ValueError, match="recipe: expected one of"):
        run_config(name, ["--recipe", "gpu"])


def test_gaussian_avatars_paper_recipe_runs_its_schedule_to_the_end_and_says_so(tmp_path, capsys, monkeypatch):
    """Issue 79: --recipe paper is GaussianAvatars' 600,000 steps with no time limit; the CPU recipe 3DGS's 30,000
    stopped at 5 minutes; the command prints the schedule it runs before training (the training itself is
    test_gaussian_avatar's: here the run it would train is recorded instead)."""
    from headfields.apps import runs
    from headfields.apps.commands.train import train
    from headfields.models.gaussian_avatars.model import ORIGINAL_ITERATIONS

    paper = run_config("gaussian_avatar", ["--recipe", "paper"])[0]
    cpu = run_config("gaussian_avatar", ["--recipe", "cpu"])[0]
    assert (paper.training.max_iterations, paper.training.max_minutes) == (600_000, None)
    assert paper.recipe.position_lr_max_steps == paper.recipe.density.densify_until == 600_000  # the paper's own schedule
    assert (cpu.training.max_iterations, cpu.training.max_minutes) == (ORIGINAL_ITERATIONS, 5.0)
    assert cpu.recipe.position_lr_max_steps == ORIGINAL_ITERATIONS
    trained = []
    monkeypatch.setattr(runs, "train_run", lambda run, out, device, **options: trained.append(run) or {})
    train("gaussian_avatar", ["--recipe", "paper", "--out", str(tmp_path / "run"), "--max-iterations", "2"])
    said = capsys.readouterr().out
    assert "schedule: 2 steps, one frame each; density control every 2,000 steps after 10,000 until 600,000" in said
    assert "no time limit (--max-minutes sets one)" in said
    assert said.index("schedule:") < said.index("every figure:") and trained[0].training.max_iterations == 2  # before
    train("gaussian_avatar", ["--recipe", "cpu", "--out", str(tmp_path / "run")])
    assert "the position rate decayed over 30,000 steps; stopped at 5 minutes (--max-minutes)" in capsys.readouterr().out


def test_a_mix_has_its_one_recipe_and_the_portrait_its_video():
    assert run_config("mix_hyper_insta", ["--device", "cuda"])[0].recipe == MIXES["mix_hyper_insta"].config()
    run = run_config("portrait360", ["--device", "cpu"])[0]
    assert (run.subject.video, run.subject.model_type) == (SyntheticVideoConfig.portrait360(), "smplx")
    run = run_config("portrait360", ["--device", "cpu", "--data", "capture"])[0]
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
    run = run_config("insta", ["--device", "cpu", "--config", str(tmp_path / "config.json"), "--max-minutes", "9"])[0]
    assert run.recipe == saved.recipe and run.subject == saved.subject
    assert run.training == dataclasses.replace(saved.training, max_minutes=9.0)
    run = run_config("insta", ["--config", str(tmp_path), "--data", str(tmp_path / "b"), "--insta.sh-degree", "3"])[0]
    assert run.subject.data == str(tmp_path / "b")  # a run folder works too; --data replaces the saved capture
    assert run.recipe == insta.cpu_config(sh_degree=3)
    with pytest.raises(ValueError, match="^recipe: give --recipe or --config"):
        run_config("insta", ["--config", str(tmp_path), "--recipe", "cpu"])
    with pytest.raises(ValueError, match="is a insta run, not monoavatar"):
        run_config("monoavatar", ["--config", str(tmp_path)])


def test_the_command_names_an_unknown_model_and_lists_the_models(capsys):
    assert main(["train", "nerf"]) == 2
    assert "model: expected one of" in capsys.readouterr().err
    assert main(["train", "--help"]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in MODELS)


def test_the_command_trains_a_run_that_load_run_opens(tiny_video, tmp_path, capsys):
    from headfields.apps.runs import load_run

    out = tmp_path / "run"
    argv = ["train", "insta", "--device", "cpu", "--data", str(tiny_video[0].root), "--out", str(out)]
    argv += ["--iterations", "2", "--rays", "64", "--eval-every", "0", "--render-chunk", "4096"]
    argv += ["--insta.hash-grid.levels", "2", "--insta.hash-grid.log2-table-size", "10", "--insta.occupancy-resolution", "16"]
    assert main(argv) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["iterations"] == 2 and metrics["psnr"] > 0
    assert "iterations 2, train_seconds" in capsys.readouterr().out  # the end's short table
    run = read_run_config(out)
    assert run.recipe.hash_grid.levels == 2 and run.training.rays_per_batch == 64
    assert load_run(out, "cpu").step == 2


@pytest.mark.parametrize("name", ["insta", "hyper_neus"])
def test_an_example_is_the_train_command(name):
    run = subprocess.run([sys.executable, str(EXAMPLES / f"{name}.py"), "--help"], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    for flag in ("--data", "--model", "--out", "--max-minutes", "--device", "--eval-split", "--config", "--recipe"):
        assert flag in run.stdout, (name, flag)
    assert f"--{name.replace('_', '-')}." in run.stdout  # --hyper-neus.sdf.hidden-dim ...


def test_a_rerun_resumes_with_the_settings_it_was_trained_with(tiny_video, tmp_path, monkeypatch, capsys):
    """Issue 96: an old Gaussian run did not resume with its own command: the rerun built today's recipe, whose
    defaults had changed since (a field added), and the checkpoint refused it with two identical truncated texts.
    The run in --out is now the start (as --config), so a change of defaults leaves it resumable."""
    from headfields.models import registry

    out = tmp_path / "run"
    argv = ["gaussian_avatar", "--data", str(tiny_video[0].root), "--out", str(out), "--device", "cpu", "--eval-frames", "1"]
    assert main(["train", *argv, "--iterations", "1", "--gaussian-avatar.sh-degree", "0"]) == 0
    entry = MODELS["gaussian_avatar"]
    cpu = entry.recipes["cpu"]
    changed = {**entry.recipes, "cpu": dataclasses.replace(cpu, config=lambda: dataclasses.replace(cpu.config(), sh_interval=7))}
    monkeypatch.setitem(registry.MODELS._all(), "gaussian_avatar", dataclasses.replace(entry, recipes=changed))
    assert main(["train", *argv, "--iterations", "2"]) == 0  # today's defaults differ: the run's own are taken
    assert "the run in --out, resumed" in capsys.readouterr().out
    run = read_run_config(out)
    assert run.recipe.sh_degree == 0 and run.recipe.sh_interval != 7 and run.training.max_iterations == 2
