"""Issue 96: a finished run survives every rerun, and a run never writes into a folder it does not own. A rerun's
checks all come before anything is written; config.json is replaced only with the checkpoint that carries it; a
checkpoint that would not load is never written; values past what their dtype holds are refused by name."""

import dataclasses
import io
import json
import sys
import warnings
from pathlib import Path

import pytest
import torch

from headfields.apps.runs import RunConfig, SubjectSource, load_run, train_run
from headfields.models.gaussian_avatars import cpu_config
from headfields.training import TrainingConfig, seed_everything
from headfields.training import loop as training_loop
from headfields.training.checkpoints import CheckpointError, _difference, load_checkpoint, save_checkpoint

TWO_STEPS = TrainingConfig(max_iterations=2, log_every=1, eval_every=0, eval_frames=1, checkpoint_minutes=None)


def _files(folder):
    return {p.relative_to(folder): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def finished(tiny_video, tmp_path):
    """A finished two-step Gaussian avatar run (the cheapest model a run folder holds), its config and folder."""
    run = RunConfig("gaussian_avatar", cpu_config(sh_degree=0), TWO_STEPS, SubjectSource(data=str(tiny_video[0].root)))
    out = tmp_path / "run"
    train_run(run, out, "cpu", log=io.StringIO())
    return run, out


def test_a_rerun_that_fails_or_is_stopped_before_its_checkpoint_leaves_the_run_loading(finished, monkeypatch):
    """A rerun that extends the run and fails on a missing LPIPS file, or is stopped by Ctrl-C before its next
    checkpoint, had replaced config.json: render, export, view and load_run then refused the run."""
    run, out = finished
    before = _files(out)
    longer = dataclasses.replace(run.training, max_iterations=4)
    missing = dataclasses.replace(longer, lpips_vgg_weights=str(out / "no_such_vgg16.pth"))
    with pytest.raises(FileNotFoundError, match="^lpips_vgg_weights:"):
        train_run(dataclasses.replace(run, training=missing), out, "cpu", log=io.StringIO())
    assert _files(out) == before

    def interrupted(self):
        raise KeyboardInterrupt

    monkeypatch.setattr(training_loop._Loop, "train_step", interrupted)
    with pytest.raises(KeyboardInterrupt):
        train_run(dataclasses.replace(run, training=longer), out, "cpu", log=io.StringIO())
    for name in ("config.json", "checkpoint.pt", "metrics.json"):
        assert (out / name).read_bytes() == before[Path(name)]
    assert load_run(out, "cpu", pixels=False).step == 2
    monkeypatch.undo()
    train_run(dataclasses.replace(run, training=dataclasses.replace(longer, max_iterations=3)), out, "cpu", log=io.StringIO())
    assert json.loads((out / "config.json").read_text())["training"]["max_iterations"] == 3  # with its checkpoint
    assert load_run(out, "cpu", pixels=False).step == 3


def test_load_run_takes_the_checkpoints_settings_where_only_resumable_ones_differ(finished):
    """A config.json ahead of its checkpoint in a resumable setting (a budget) loads with the checkpoint's, said in a
    warning naming it; any other difference is refused, naming the setting."""
    run, out = finished
    config = json.loads((out / "config.json").read_text())
    config["training"]["max_iterations"] = 9
    (out / "config.json").write_text(json.dumps(config))
    with pytest.warns(UserWarning, match=r"checkpoint\.pt is intact; its training settings max_iterations 2 \(config"):
        loaded = load_run(out, "cpu", pixels=False)
    assert loaded.config.training.max_iterations == 2
    config["training"]["seed"] = 3
    (out / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=r"differs from the configuration inside .*checkpoint\.pt \(seed\)"):
        load_run(out, "cpu", pixels=False)


def test_a_folder_that_is_not_a_run_is_refused_before_anything_is_written(tiny_video, tmp_path, monkeypatch):
    """``train --out ""`` (an unset $OUT) trained into the current folder and replaced the user's own config.json and
    log.jsonl there, as into any folder that held no run."""
    run = RunConfig("gaussian_avatar", cpu_config(sh_degree=0), TWO_STEPS, SubjectSource(data=str(tiny_video[0].root)))
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "config.json").write_text('{"my": "settings"}')
    (mine / "log.jsonl").write_text("my log\n")
    before = _files(mine)
    with pytest.raises(ValueError, match=r"^out: .*mine holds files but no run .*or --force"):
        train_run(run, mine, "cpu", log=io.StringIO())
    monkeypatch.chdir(mine)
    with pytest.raises(ValueError, match=r"^out: \. \(the current folder\) holds files but no run"):
        train_run(run, "", "cpu", log=io.StringIO())  # what --out "" parses to
    assert _files(mine) == before and sorted(p.name for p in mine.iterdir()) == ["config.json", "log.jsonl"]
    train_run(
        dataclasses.replace(run, training=dataclasses.replace(TWO_STEPS, max_iterations=1)),
        mine,
        "cpu",
        log=io.StringIO(),
        force=True,
    )
    assert (mine / "checkpoint.pt").is_file()


def test_a_checkpoint_that_would_not_load_is_not_written(tmp_path):
    """A learning rate of 1e39 (finite in float64) turned the weights inf, and the checkpoint saved then could not be
    opened by any command: the previous checkpoint is kept instead, and the error names the tensor."""
    path = tmp_path / "checkpoint.pt"
    save_checkpoint({"step": 1, "model": {"w": torch.ones(3)}}, path)
    with pytest.raises(CheckpointError, match=r"not written: model\.w holds non-finite values"):
        save_checkpoint({"step": 2, "model": {"w": torch.tensor([1.0, float("inf"), 0.0])}}, path)
    assert load_checkpoint(path)["step"] == 1 and sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.pt"]


def test_values_past_their_dtype_are_refused_by_name():
    from headfields.models.gaussian_avatars import GaussianAvatarConfig

    with pytest.raises(ValueError, match=r"^seed: expected an integer in \[0, 9223372036854775807\]"):
        seed_everything(10**20)
    with pytest.raises(ValueError, match=r"^seed: expected an integer in \[0, 9223372036854755807\], got 10{20}"):
        TrainingConfig(seed=10**20)  # each step seeds seed + step: room for max_iterations
    with pytest.raises(ValueError, match=r"^adam_eps: expected a non-negative number float32 holds .*got nan"):
        GaussianAvatarConfig(adam_eps=float("nan"))  # Adam's own: "Invalid epsilon value: nan"
    with pytest.raises(ValueError, match=r"^position_lr_init: expected a positive number float32 holds"):
        GaussianAvatarConfig(position_lr_init=1e39)
    with pytest.raises(ValueError, match=r"^budget: 'training' bounds max_minutes, which is None"):
        TrainingConfig(budget="training")  # accepted, and it bounded nothing


def test_gsplat_asked_for_without_gsplat_is_refused_before_the_folder_exists(tiny_video, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "gsplat", None)  # import gsplat raises ImportError, installed or not
    recipe = cpu_config(sh_degree=0, rasterizer="gsplat")
    run = RunConfig("gaussian_avatar", recipe, TWO_STEPS, SubjectSource(data=str(tiny_video[0].root)))
    with pytest.raises(ImportError, match=r"^rasterizer: 'gsplat' needs the gsplat package.*rasterizer='warp'"):
        train_run(run, tmp_path / "run", "cpu", log=io.StringIO())
    assert not (tmp_path / "run").exists()


def test_teeth_on_a_model_that_has_them(tiny_video):
    """``teeth True`` on a model made with teeth was "region: expected new region names"; it has them: it trains
    with them. ``teeth False`` there would bind Gaussians to them all the same: refused, naming the flag."""
    from headfields.data import load_subject
    from headfields.models.registry import MODELS

    subject = load_subject(tiny_video[0].root, device="cpu")
    assert "teeth" in subject.parametric.region_names  # the synthetic FLAME is made with VHAP's teeth
    build = MODELS["gaussian_avatar"].build
    assert build(subject, cpu_config(sh_degree=0, teeth=True)).parametric is subject.parametric
    with pytest.raises(ValueError, match=r"^teeth: False, but the subject's model has teeth already.*teeth True"):
        build(subject, cpu_config(sh_degree=0, teeth=False))


def test_a_refusal_shows_where_two_long_texts_differ():
    """An old run's refusal showed two identical texts, both cut before their difference."""
    old, new = "a" * 300 + "OLD" + "z" * 40, "a" * 300 + "NEW" + "z" * 40
    message = _difference("model files", old, new)
    assert "OLD" in message and "NEW" in message and len(message) < 400
    # A setting written before it existed is said to be absent, not null (null was no difference: the texts were shown).
    stored = 'm.GaussianAvatar: {"sh_degree": 3}'
    assert _difference("model", stored, 'm.GaussianAvatar: {"sh_degree": 3, "teeth": null}') == "model: teeth (absent) -> null"


def test_the_end_of_train_is_a_short_table(finished):
    from headfields.apps.commands.train import summary

    _, out = finished
    metrics = json.loads((out / "metrics.json").read_text())
    text = summary(metrics, out / "metrics.json")
    lines = text.splitlines()
    assert lines[0].split()[:3] == ["split", "psnr", "psnr_head"] and lines[1].startswith("test ")
    assert f"{metrics['psnr']:.2f}" in lines[1] and lines[-1] == f"every figure: {out / 'metrics.json'}"
    assert len(text) < 600 and "lpips_note" not in text  # metrics.json printed whole was about 3 kB


def test_a_model_that_fitted_two_splits_names_them_for_another(finished):
    """MonoNPHM fits its codes to the training frames and to one held-out split: asked for another, the model said
    "expected one of ['train', 'held_out']", and held_out was then refused by the run as no split it has."""
    _, out = finished
    run = load_run(out, "cpu", pixels=False)

    def fitted_head(head, split):
        if split not in ("train", "held_out"):
            raise ValueError(f"split: expected one of ['train', 'held_out'], got {split!r}")
        return head

    run.model.fitted_head = fitted_head
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(
            ValueError,
            match=r"^split: this gaussian_avatar run fitted .* 'train' and 'test' alone, not 'val': give --split train or",
        ):
            run.head("val")
