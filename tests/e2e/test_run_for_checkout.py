"""tools/run_for_checkout.py, the copy of a run that another checkout's ``load_run`` reads (benchmarks/render.py
--baseline makes one for each model)."""

import pytest


def test_a_run_is_copied_for_a_checkout_whose_fingerprint_and_config_differ(
    tool_script, tiny_insta_run, tmp_path, monkeypatch, capsys
):
    """A run that an older checkout refuses (the fingerprint's recipe in another format, a config field it lacks)
    comes out loadable, with the same weights, and the unknown field named; frames that differ from the run's are
    refused. Today's code stands in for the older checkout."""
    import json
    import shutil

    import torch

    from headfields.apps.runs import load_run
    from headfields.training.checkpoints import CheckpointError

    rebase = tool_script("run_for_checkout")
    folder, _ = tiny_insta_run

    def variant(name, fingerprint=None, field=False):
        run = tmp_path / name
        shutil.copytree(folder, run)
        state = torch.load(run / "checkpoint.pt", weights_only=True)
        state["fingerprint"] = {**state["fingerprint"], **(fingerprint or {})}
        torch.save(state, run / "checkpoint.pt")
        if field:
            config = json.loads((run / "config.json").read_text())
            config["recipe"]["field_of_the_future"] = 7
            (run / "config.json").write_text(json.dumps(config))
        return run

    def copy(run, out):
        monkeypatch.setattr("sys.argv", ["run_for_checkout.py", str(run), str(out)])
        rebase.main()

    other_format = variant("other_format", {"model": "the recipe's repr in another format"})
    with pytest.raises(CheckpointError, match="made for another run"):
        load_run(other_format, "cpu")
    unknown_field = variant("unknown_field", field=True)
    with pytest.raises(ValueError, match="field_of_the_future"):
        load_run(unknown_field, "cpu")

    original = load_run(folder, "cpu").model.state_dict()
    for run in (other_format, unknown_field):
        copy(run, tmp_path / f"{run.name}_copy")
        loaded = load_run(tmp_path / f"{run.name}_copy", "cpu").model.state_dict()
        assert list(loaded) == list(original)
        for name in original:
            assert torch.equal(loaded[name], original[name]), name
    assert "left out: config.recipe.field_of_the_future=7" in capsys.readouterr().out

    other_frames = variant("other_frames", {"frames": "5 frames, another digest"})
    with pytest.raises(SystemExit, match="frames differ"):
        copy(other_frames, tmp_path / "other_frames_copy")
    assert not (tmp_path / "other_frames_copy").exists()
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "keep.txt").write_text("mine")
    for out in (tmp_path / "notes", tmp_path, other_format / "inside"):  # not a run; holds the run; inside it
        with pytest.raises(SystemExit, match="out: "):
            copy(other_format, out)
    assert (tmp_path / "notes" / "keep.txt").read_text() == "mine"


def test_fields_a_checkout_lacks_are_dropped_and_named(tool_script):
    rebase = tool_script("run_for_checkout")
    data = {
        "__class__": "headfields.apps.runs.RunConfig",
        "model": "insta",
        "invented": [1, 2],
        "training": {"__class__": "headfields.training.config.TrainingConfig", "max_iterations": 3, "gone": "x"},
        "subject": {"__class__": "headfields.apps.runs.SubjectSource", "data": "somewhere"},
    }
    dropped = []
    kept = rebase.known_fields(data, dropped)
    assert kept == {
        "__class__": "headfields.apps.runs.RunConfig",
        "model": "insta",
        "training": {"__class__": "headfields.training.config.TrainingConfig", "max_iterations": 3},
        "subject": {"__class__": "headfields.apps.runs.SubjectSource", "data": "somewhere"},
    }
    assert dropped == ["config.invented=[1, 2]", 'config.training.gone="x"']
