"""Both held-out splits of a capture scored in one run (issue 79), as GaussianAvatars scores novel views ("val": held-out
cameras of the training timesteps) and self-reenactment ("test": held-out timesteps): the capture states its splits,
the subject loads them, ``metrics.json`` holds each split's scores under its name (the top level the primary's), and
each equals its frames scored by hand: the val frames posed with the fine-tuned values of the training timestep they
see again, the test frames with the tracker's. ``load_run`` and ``render`` open either split; an old run loads as it
was."""

from __future__ import annotations

import json
import os

import pytest
import torch

from headfields.apps.commands import main
from headfields.apps.runs import RunConfig, SubjectSource, load_run, train_run
from headfields.configs import config_from_dict, config_to_dict
from headfields.data import held_out_splits, load_subject
from headfields.heads import tracked_head
from headfields.models.gaussian_avatars import cpu_config
from headfields.synthetic import SyntheticVideoConfig, make_synthetic_video
from headfields.training import TrainingConfig

# Ten frames: six training timesteps, two novel views of training timesteps 0 and 5 (the writer spreads them evenly),
# two unseen timesteps; the tracking noisy, so that fine-tuning moves the training timesteps' values.
VIDEO = SyntheticVideoConfig(
    num_frames=10, num_val=2, num_test=2, resolution=16, episode_frames=3, val_view_yaw=0.5, expression_noise=0.2
)
SEEN = [0, 5]
# Rates far above GaussianAvatars', so that a few steps move every fitted value.
FAST = dict(flame_expression_lr=0.05, flame_pose_lr=0.01, flame_translation_lr=0.002, sh_degree=1, fine_tune_flame=True)


@pytest.fixture(scope="module")
def capture(tmp_path_factory):
    return make_synthetic_video(tmp_path_factory.mktemp("both_splits"), VIDEO)


@pytest.fixture(scope="module")
def both_run(tmp_path_factory, capture):
    folder = tmp_path_factory.mktemp("both_run")
    training = TrainingConfig(max_iterations=6, eval_every=0, log_every=5)
    run = RunConfig("gaussian_avatar", cpu_config(**FAST), training, SubjectSource(data=str(capture)))
    metrics = train_run(run, folder, "cpu", log=open(os.devnull, "w"))
    return folder, metrics


def _psnr_by_hand(image: torch.Tensor, truth: torch.Tensor) -> float:
    return float(-10 * torch.log10(((image.double() - truth.double()) ** 2).mean()))


def test_the_capture_states_its_splits_and_the_subject_loads_them(capture, tmp_path):
    assert held_out_splits(capture) == ["val", "test"]
    subject = load_subject(capture, all_held_out=True)
    assert subject.eval.split == "test" and list(subject.held_out) == ["test", "val"]
    assert [len(f) for f in subject.held_out.values()] == [2, 2] and subject.more_held_out["val"].split == "val"
    assert load_subject(capture).more_held_out == {}  # one split unless asked
    assert list(load_subject(capture, eval_split="val", all_held_out=True).held_out) == ["val", "test"]
    # VHAP writes an empty val split for a single camera: no split then.
    (tmp_path / "transforms_train.json").write_text(json.dumps({"frames": [{"file_path": "a.png"}]}))
    (tmp_path / "transforms_val.json").write_text(json.dumps({"frames": []}))
    (tmp_path / "transforms_test.json").write_text(json.dumps({"frames": [{"file_path": "b.png"}]}))
    assert held_out_splits(tmp_path) == ["test"]


def test_metrics_hold_each_split_under_its_name_the_primary_at_the_top(both_run):
    folder, metrics = both_run
    assert json.loads((folder / "metrics.json").read_text()) == metrics
    assert metrics["eval_split"] == "test" and sorted(metrics["splits"]) == ["test", "val"]
    for key in ("psnr", "ssim", "ssim_3dgs", "l1", "psnr_head", "eval_frames", "eval_frames_total", "eval_note"):
        assert metrics[key] == metrics["splits"]["test"][key], key
    assert metrics["splits"]["val"]["eval_frames"] == metrics["splits"]["val"]["eval_frames_total"] == 2
    assert metrics["splits"]["val"]["psnr"] != metrics["psnr"]
    assert len(list((folder / "renders" / "final_val").glob("*_compare.png"))) == 2


def test_each_splits_scores_are_its_frames_scored_by_hand(both_run):
    """val: the training timestep each frame sees again, posed by FLAME with its fine-tuned values; test: the
    tracker's values (unseen timesteps have none fitted)."""
    folder, metrics = both_run
    run = load_run(folder, "cpu")
    model, fitted, train = run.model, run.model.tracking, run.subject.train
    val, test = run.frames("val"), run.frames("test")
    for name in ("expression", "pose", "translation"):  # the writer's novel views: training timesteps' tracking
        assert torch.equal(getattr(val.params, name), getattr(train.params, name)[SEEN])
    tracked_train = tracked_head(model.parametric, train)
    assert not torch.equal(fitted.expression[SEEN], tracked_train.expression[SEEN])  # fine-tuning moved them
    assert fitted.timesteps(tracked_head(model.parametric, test)) == [None, None]
    faces = tracked_train.faces
    scores = {"val": [], "test": []}
    with torch.no_grad():
        for k, t in enumerate(SEEN):
            posed = model.parametric(
                shape=tracked_train.shape,
                expression=fitted.expression[t : t + 1],
                pose=fitted.pose[t : t + 1],
                translation=fitted.translation[t : t + 1],
            ).vertices[0]
            torch.testing.assert_close(run.head("val").vertices[k], posed, rtol=0, atol=1e-6)
            image = model.rasterize(model.gaussians.bound(posed, faces), val.cameras, k).image.clamp(0, 1)
            scores["val"].append(_psnr_by_hand(image, val.images[k].float() / 255))
        tracked_test = tracked_head(model.parametric, test)
        for k in range(len(test)):
            torch.testing.assert_close(run.head("test").vertices[k], tracked_test.vertices[k], rtol=0, atol=0)
            image = model.rasterize(model.gaussians.bound(tracked_test.vertices[k], faces), test.cameras, k).image.clamp(0, 1)
            scores["test"].append(_psnr_by_hand(image, test.images[k].float() / 255))
    for split, values in scores.items():
        assert metrics["splits"][split]["psnr"] == pytest.approx(sum(values) / len(values), abs=1e-4), split
        assert run.split_metrics(split)["psnr"] == metrics["splits"][split]["psnr"]
    assert metrics["psnr"] == pytest.approx(sum(scores["test"]) / 2, abs=1e-4)


def test_render_scores_either_split_beside_the_runs_own_score(both_run, tmp_path, capsys):
    folder, metrics = both_run
    for split in ("val", "test"):
        out = tmp_path / f"{split}.mp4"
        assert main(["render", str(folder), "--split", split, "--frames", "2", "--out", str(out), "--device", "cpu"]) == 0
        summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
        assert summary["run_psnr"] == metrics["splits"][split]["psnr"]
        assert summary["psnr"] == pytest.approx(metrics["splits"][split]["psnr"], abs=1e-4)
    with pytest.raises(ValueError, match="split: expected one of 'train', 'test', 'val'"):
        load_run(folder, "cpu").frames("other")


def test_a_run_written_before_loads_with_one_split(capture, both_run):
    saved = config_to_dict(SubjectSource(data=str(capture)))
    assert saved["all_held_out"] is True
    del saved["all_held_out"]  # a config.json from before: its run scored eval_split alone
    assert config_from_dict(saved, SubjectSource).all_held_out is False
    folder, metrics = both_run
    run = load_run(folder, "cpu", pixels=False)
    run.metrics = {key: value for key, value in metrics.items() if key not in ("splits", "eval_split")}  # an old file
    assert run.split_metrics("test")["psnr"] == metrics["psnr"] and run.split_metrics("val") is None


def test_the_train_command_scores_both_unless_told(capture, tmp_path, monkeypatch):
    from headfields.apps.commands.train import run_config

    monkeypatch.chdir(tmp_path)  # the default --out is relative: a run trained there would be the start

    assert run_config("gaussian_avatar", ["--data", str(capture)])[0].subject.all_held_out is True
    run = run_config("gaussian_avatar", ["--data", str(capture), "--all-held-out", "False"])[0]
    assert run.subject.all_held_out is False and run.subject.load("cpu", pixels=False).more_held_out == {}
