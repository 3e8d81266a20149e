"""benchmarks/render.py: which profiler events count as the device's busy time, the baseline's worker's answers, and
the copy of a run for an older checkout."""

import subprocess
import sys
from types import SimpleNamespace

import pytest
from torch.autograd import DeviceType


@pytest.fixture
def render_benchmark(benchmark_script):
    return benchmark_script("render")


def event(key, device, self_device=0.0, self_cpu=0.0, annotation=False, count=1):
    return SimpleNamespace(
        key=key, count=count, device_type=device, self_device_time_total=self_device, self_cpu_time_total=self_cpu,
        is_user_annotation=annotation,
    )  # fmt: skip


def test_on_cuda_the_kernels_count_once(render_benchmark):
    """A kernel counts; the operation that launched it (its device time is the kernel's again) and a record_function
    range's annotation on the GPU (the kernels inside it, again) do not."""
    events = [
        event("aten::mm", DeviceType.CPU, self_device=40.0, self_cpu=9.0),
        event("gemm_kernel", DeviceType.CUDA, self_device=40.0, count=3),
        event("frame_map_forward", DeviceType.CUDA, self_device=70.0),
        event("my range", DeviceType.CUDA, self_device=110.0, annotation=True),
        event("Memcpy DtoH", DeviceType.CUDA, self_device=2.0),
    ]
    rows = render_benchmark.profile_rows(events, cuda=True)
    assert rows == [("frame_map_forward", 1, 70.0), ("gemm_kernel", 3, 40.0), ("Memcpy DtoH", 1, 2.0)]


def test_on_the_cpu_the_operations_own_time_counts(render_benchmark):
    events = [
        event("aten::mm", DeviceType.CPU, self_cpu=9.0),
        event("aten::view", DeviceType.CPU, self_cpu=0.0),
        event("_FrameMap", DeviceType.CPU, self_cpu=30.0, count=2),
    ]
    assert render_benchmark.profile_rows(events, cuda=False) == [("_FrameMap", 2, 30.0), ("aten::mm", 1, 9.0)]


def test_the_baseline_workers_messages_pass_through_and_its_end_is_named(render_benchmark, capsys):
    """An answer is the line after frame_turns.py's prefix; the lines before it (its package's messages) are printed,
    and a worker that exits before answering ends the benchmark with its status, not a hang or a parse error."""
    lines = ["Warp initialized", 'frame_turns: {"seconds": 0.25}']
    script = f"print({chr(10).join(lines)!r}); raise SystemExit(3)"
    worker = subprocess.Popen([sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert render_benchmark._answer(worker) == {"seconds": 0.25}
    assert capsys.readouterr().out == "Warp initialized\n"
    with pytest.raises(SystemExit, match="frame_turns.py exited with status 3"):
        render_benchmark._answer(worker)


def test_a_run_is_copied_for_a_checkout_whose_fingerprint_and_config_differ(
    benchmark_script, tiny_insta_run, tmp_path, monkeypatch, capsys
):
    """run_for_checkout.py: a run that an older checkout refuses (the fingerprint's recipe in another format, a config
    field it lacks) comes out loadable, with the same weights, and the unknown field named; frames that differ from
    the run's are refused. Today's code stands in for the older checkout."""
    import json
    import shutil

    import torch

    from headfields.checkpoints import CheckpointError
    from headfields.runs import load_run

    rebase = benchmark_script("run_for_checkout")
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


def test_fields_a_checkout_lacks_are_dropped_and_named(benchmark_script):
    rebase = benchmark_script("run_for_checkout")
    data = {
        "__class__": "headfields.runs.RunConfig",
        "model": "insta",
        "invented": [1, 2],
        "training": {"__class__": "headfields.training.config.TrainingConfig", "max_iterations": 3, "gone": "x"},
        "subject": {"__class__": "headfields.runs.SubjectSource", "data": "somewhere"},
    }
    dropped = []
    kept = rebase.known_fields(data, dropped)
    assert kept == {
        "__class__": "headfields.runs.RunConfig",
        "model": "insta",
        "training": {"__class__": "headfields.training.config.TrainingConfig", "max_iterations": 3},
        "subject": {"__class__": "headfields.runs.SubjectSource", "data": "somewhere"},
    }
    assert dropped == ["config.invented=[1, 2]", 'config.training.gone="x"']
