"""The engine every run goes through: its folder, config.json, the finished-run check, the checkpoint and metrics."""

import io
import json

import pytest

from headfields.training import CHECKPOINT_NAME, CONFIG_NAME, METRICS_NAME
from headfields.training.checkpoints import CheckpointError, load_checkpoint
from headfields.training.engine import Engine

DESCRIBED = json.dumps({"model": "a", "seed": 0}, indent=2)


def _run(out, described=DESCRIBED, fingerprint=None, **options) -> tuple[dict, bool]:
    """A fit's lifecycle in ``out``: its metrics and whether it ran (False: a finished run's were returned)."""
    with Engine(out, described, **options) as engine:
        engine.open()
        done = engine.finished(fingerprint)
        if done is not None:
            return done, False
        engine.write_config()
        engine.save({"step": 3, "fingerprint": fingerprint})
        return engine.finish({"psnr": 30.0, "steps": 3}), True


def test_a_run_writes_its_record_and_a_rerun_returns_it(tmp_path):
    out = tmp_path / "run"
    metrics, ran = _run(out)
    assert ran and metrics == {"psnr": 30.0, "steps": 3}
    assert (out / CONFIG_NAME).read_text() == DESCRIBED + "\n"
    assert json.loads((out / METRICS_NAME).read_text()) == metrics
    assert load_checkpoint(out / CHECKPOINT_NAME, "cpu")["run"] == DESCRIBED  # what load_run reads without config.json
    assert _run(out) == (metrics, False)
    assert _run(out, resume=False)[1]  # without resume it runs again


def test_a_folder_of_another_run_is_refused(tmp_path):
    out = tmp_path / "run"
    _run(out)
    other = json.dumps({"model": "a", "seed": 1}, indent=2)
    with pytest.raises(ValueError, match="out: .* holds another run's config.json"):
        _run(out, other)
    assert (out / CONFIG_NAME).read_text() == DESCRIBED + "\n"  # left as it was
    fingerprinted = tmp_path / "fingerprinted"
    _run(fingerprinted, fingerprint={"model": "m", "training": "t"})
    with pytest.raises(CheckpointError, match="was made for another run"):
        _run(fingerprinted, fingerprint={"model": "m", "training": "u"})


def test_nothing_is_written_before_the_run_opens_its_folder(tmp_path):
    out = tmp_path / "refused"
    with pytest.raises(ValueError, match="bad input"), Engine(out, DESCRIBED):
        raise ValueError("bad input")  # a run's check, before engine.open()
    assert not out.exists()
    users = tmp_path / "mine"
    users.mkdir()
    (users / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="holds files but no run"):
        _run(users)
    assert sorted(p.name for p in users.iterdir()) == ["notes.txt"]


def test_the_blocks_lines_go_to_its_log_and_a_follower_writes_nothing(tmp_path):
    sink = io.StringIO()
    with Engine(tmp_path / "run", DESCRIBED, log=sink):
        print("a line of the run")
    assert sink.getvalue() == "a line of the run\n"
    follower = tmp_path / "follower"
    with Engine(follower, DESCRIBED, lead=False) as engine:
        engine.open()
        engine.write_config()
        engine.save({"step": 1})
        assert engine.finish({"psnr": 1.0}) == {"psnr": 1.0}
    assert not follower.exists()
