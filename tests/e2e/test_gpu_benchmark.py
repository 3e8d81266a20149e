"""tools/gpu.py ("GPU in one command"): its CPU fallback end to end, so the script cannot rot on machines without
a GPU, and its step runner's failure reporting. The names here avoid "cuda": gpu.py selects the CUDA tests with
``-k cuda`` and must not select these."""

import json
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path
from unittest import mock

import filelock
import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "tools" / "gpu.py"


@pytest.fixture
def gpu(tool_script):
    """tools/gpu.py as a module."""
    return tool_script("gpu")


@pytest.fixture
def gpu_report(tool_script):
    """tools/gpu_report.py, the report gpu.py writes."""
    return tool_script("gpu_report")


def section(report: str, title: str) -> str:
    """The text of ``## title`` up to the next ``## ``."""
    match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", report, flags=re.S | re.M)
    assert match is not None, f"no section {title!r} in the report:\n{report}"
    return match.group(1)


@pytest.fixture(scope="module")
def fallback_run(tmp_path_factory, worker_id):
    """gpu.py --quick with CUDA hidden (the CPU fallback on any machine): its process and output folder. Made once a
    session: under pytest-xdist each worker that takes a test of this module would run it again (a minute each), so
    the first makes it in the session's shared folder, under a lock, and the others read what it left."""
    shared = tmp_path_factory.getbasetemp() if worker_id == "master" else tmp_path_factory.getbasetemp().parent
    out, record = shared / "gpu_fallback", shared / "gpu_fallback.json"
    with filelock.FileLock(str(shared / "gpu_fallback.lock")):
        if not record.exists():
            out.mkdir()
            env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
            # Step 1 left out: on the CPU it is 9 s of pytest starting for 0.1 s of tests the suite runs anyway (its
            # command and section: test_on_the_cpu_step_1_runs_a_fast_file_s_cpu_cases).
            command = [sys.executable, str(SCRIPT), "--out", str(out), "--quick", "--skip-tests", "--baseline", str(ROOT)]
            done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
            kept = dict(args=done.args, returncode=done.returncode, stdout=done.stdout, stderr=done.stderr)
            record.write_text(json.dumps(kept))
    return subprocess.CompletedProcess(**json.loads(record.read_text())), out


def test_fallback_exits_cleanly_and_writes_the_report(fallback_run):
    done, out = fallback_run
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = (out / "gpu_report.md").read_text()
    assert report in done.stdout  # printed as well as written
    assert "no CUDA device: CPU fallback at tiny sizes, not GPU figures" in report.split("\n## ")[0]  # at the top
    assert "- every step passed" in report
    for step in ("hashgrid", "mesh_queries", "insta", "frame", "variants"):
        assert "--- stdout" in (out / "logs" / f"{step}.log").read_text()
    assert "Left out (`--skip-tests`)." in section(report, "Tests")
    assert not (out / "logs" / "fused.log").exists()  # the CPU's variants in one call, the fused decoders too


def passing_steps(gpu, out, started, stdout=None):
    """A stand-in for ``gpu.run_step``: every step passes at once, recorded in ``started`` as (name, command), with
    ``stdout[name]`` as its output (default none); INSTA's step leaves a finished run under ``out`` for the frame's
    steps to follow."""

    def run_step(name, command, timeout, logs, deadline=None):
        started.append((name, command))
        if name == "insta":
            (out / "insta").mkdir(parents=True, exist_ok=True)
            (out / "insta" / "metrics.json").write_text("{}")
        return gpu.Step(name, command, 0, 0.0, (stdout or {}).get(name, ""), "")

    return run_step


def test_on_the_cpu_step_1_runs_a_fast_file_s_cpu_cases(gpu, tmp_path, monkeypatch):
    """Without CUDA, step 1 runs one fast file's CPU cases (the fallback checks the step, not the suite) and the report
    counts them from pytest's closing line; here every step pretends to pass at once, step 1 with pytest's line."""
    started, pytest_line = [], {"tests": "5 passed, 30 deselected in 0.08s"}
    monkeypatch.setattr(gpu, "run_step", passing_steps(gpu, tmp_path / "gpu", started, pytest_line))
    monkeypatch.setattr(gpu.torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(sys, "argv", ["gpu.py", "--out", str(tmp_path / "gpu"), "--skip-benchmarks"])
    gpu.main()
    (name, command), *_ = started
    assert name == "tests" and command[1:] == ["-m", "pytest", "tests/unit/core/test_kernels.py", "-q", "-k", "cpu"]
    text = section((tmp_path / "gpu" / "gpu_report.md").read_text(), "Tests")
    header, _, values = re.search(r"^\|(.*)\|\n\|(.*)\|\n\|(.*)\|$", text, flags=re.M).groups()
    counts = dict(zip([h.strip() for h in header.split("|")], [int(v) for v in values.split("|")], strict=True))
    assert counts == {"passed": 5, "deselected": 30} and "-k cpu" in text


def test_fallback_benchmark_tables(fallback_run):
    _, out = fallback_run
    report = (out / "gpu_report.md").read_text()
    hashgrid = section(report, "Hash grid")
    warp, reference = map(float, re.search(r"^16 x 2\s+forward\s+([\d.]+)\s+([\d.]+)\s+[\d.]+x$", hashgrid, flags=re.M).groups())
    assert warp > 0 and reference > 0
    assert "device cpu" in hashgrid
    mesh = section(report, "Mesh queries")
    row = r"^\| closest point \| headfields \(cpu, signed=False\) \| 2,000 \| [\d.]+ ms \| ([\d.]+) [kM]?/s"
    throughput = re.search(row, mesh, flags=re.M)
    assert throughput is not None and float(throughput.group(1)) > 0
    assert "| first ray hit | headfields (cpu) |" in mesh and "| k=4 nearest vertices | headfields (cpu) |" in mesh
    peers = section(report, "Optional CUDA peers")
    assert re.search(r"^- tinycudann: \S", peers, flags=re.M) and re.search(r"^- cubvh: \S", peers, flags=re.M)


def test_fallback_insta_figures_match_metrics(fallback_run):
    _, out = fallback_run
    text = section((out / "gpu_report.md").read_text(), "INSTA")
    psnr, iterations, seconds, rate = re.search(
        r"^\| ([\d.]+) dB \| [^|]+ \| [\d.]+ \| (\d+) \| ([\d.]+) \| ([\d.]+) it/s \| — \(no CUDA\) \|", text, flags=re.M
    ).groups()
    metrics = json.loads((out / "insta" / "metrics.json").read_text())
    assert int(iterations) == metrics["iterations"] == 3
    assert float(psnr) == pytest.approx(metrics["psnr"], abs=0.006) and 5.0 < float(psnr) < 60.0
    assert float(rate) == pytest.approx(metrics["iterations"] / metrics["train_seconds"], rel=0.01, abs=0.006)
    assert float(seconds) == pytest.approx(metrics["train_seconds"], abs=0.06)
    rays, marched, trained, per_second = re.search(
        r"^\| ([\d,]+) \| ([\d,]+) \| ([\d,]+) \| ([\d,]+) \| (?:— \| ){3}[\d,]+ s \|$", text, flags=re.M
    ).groups()  # the sample budget's row: no evaluation in 3 steps, so no PSNR by any minute
    number = lambda text: float(text.replace(",", ""))  # noqa: E731
    assert number(rays) == pytest.approx(metrics["rays_per_step"], abs=0.5)
    assert number(trained) == pytest.approx(metrics["samples_trained_per_step"], abs=0.5) and number(trained) > 0
    assert number(marched) >= number(trained)
    assert number(per_second) == pytest.approx(metrics["samples_trained_per_step"] * float(rate), rel=0.02, abs=1)
    memory = json.loads((out / "insta_memory.json").read_text())  # the wrapper ran, and saw no CUDA
    assert memory == {"max_memory_allocated": None, "max_memory_reserved": None}


def test_fallback_frame_figures_match_render_json(fallback_run):
    """Step 4, INSTA's frame: render.py on the run step 3 trained (reused, not trained again), its times as written."""
    done, out = fallback_run
    text = section((out / "gpu_report.md").read_text(), "INSTA's frame")
    assert "--only insta --sizes 32" in text and "ok (" in text
    insta = json.loads((out / "render.json").read_text())["models"]["insta"]
    timings = insta["sizes"]["32"]
    # With --baseline ours are timed in the turns alone: the figures are the turns' medians, our training renderer untimed.
    row = re.search(r"^\| 32² \| ([\d.,]+) ms \| ([\d.,]+) ms \| not timed \(--baseline\) \|$", text, flags=re.M)
    shown = [float(value.replace(",", "")) for value in row.groups()]
    written = [timings[f"{name}_ms"] for name in ("inference", "interactive")]
    assert shown == pytest.approx(written, abs=0.051) and min(shown) > 0 and "training_ms" not in timings
    turns = insta["baseline"]["turns"]["32"]
    assert written == [statistics.median(turns[name]) for name in ("inference", "interactive")]
    assert "goal" not in text  # the 33 ms goal is a GPU figure at 512²
    assert re.search(r"^\| insta \| [\d.]+ dB \| [+-]0\.0\d{3} dB \|", text, flags=re.M)  # render.py's agreement table
    profile = json.loads((out / "render.json").read_text())["models"]["insta"]["profile"]
    assert f"insta, 32² under the profiler: {profile['wall_ms']:,.1f} ms a frame" in text
    assert 0 < profile["busy_ms"] <= profile["wall_ms"]  # the operations' own time fits in the frame's
    times = [row["ms"] for row in profile["top"]]
    assert times == sorted(times, reverse=True) and sum(times) <= profile["busy_ms"] + 1e-6 and profile["device"] == "cpu"
    first = profile["top"][0]  # the operation of the most time, its row in the report
    assert f"| `{first['name']}` | {first['calls']:,} | {first['ms']:,.2f} |" in text and first["ms"] <= profile["busy_ms"]
    log = (out / "logs" / "frame.log").read_text()
    assert not re.search(r"^  32²: inference [\d,]+ ms, interactive [\d,]+ ms, training", log, flags=re.M)  # not timed twice
    assert f"insta: the run in {out / 'insta'} is reused" in log and "insta: training" not in log
    # --baseline: the checkout's renderers on the same run, ours and theirs taking turns, the ratios in the report
    base = json.loads((out / "render.json").read_text())["models"]["insta"]["baseline"]
    number, ratio = r"([\d,]+)", r"([\d.]+)x"
    pattern = rf"^\| insta \| 32² \| {number} \| {number} \| {number} \| {number} \| {ratio} \| {ratio} \| {ratio} \|$"
    row = re.search(pattern, text, flags=re.M)
    assert row is not None and f"taking turns with the baseline: {ROOT}" in log
    assert f"Ours and the baseline's renderers taking turns on the same run (baseline: {ROOT}):" in text
    shown = [float(value.replace(",", "")) for value in row.groups()]
    turns = base["turns"]["32"]
    assert all(len(times) == len(turns["inference"]) > 0 and min(times) > 0 for times in turns.values())
    ours = [statistics.median(turns[key]) for key in ("inference", "interactive")]
    theirs = [base["sizes"]["32"][key] for key in ("inference_ms", "training_ms")]
    assert theirs == [statistics.median(turns[key]) for key in ("baseline_inference", "baseline_training")]
    assert shown[:4] == pytest.approx(ours + theirs, abs=0.51)
    # each ratio the median over the turns of the two renders of one turn (the drift falls on both alike)
    pairs = (("baseline_training", "inference"), ("baseline_training", "interactive"), ("baseline_inference", "inference"))
    expected = [statistics.median(a / b for a, b in zip(turns[num], turns[den], strict=True)) for num, den in pairs]
    assert shown[4:] == pytest.approx(expected, abs=0.006)
    written = base["ratios"]["32"]
    names = ("training_over_inference", "training_over_interactive", "inference_over_inference")
    assert [written[name] for name in names] == pytest.approx(expected)


def test_fallback_frame_variants(fallback_run):
    """Step 4's variants (tools/frame_variants.py) on the same run: every variant timed, its row in the report as
    written. The larger rounds composite a few more samples past the stop, Warp's BVH leaves may pick another of tied
    faces (where Warp's search answers: the CPU's wide BVH is the same whatever Warp's leaves), the float16 table
    rounds the features, the fused decoder sums its products in another order: each within 1e-4 a pixel, after 3
    steps. On the CPU the fused decoders share the others' call (on CUDA a call of their own, after the others)."""
    _, out = fallback_run
    names = ["as is", "rounds twice as large", "float16 hash table", "BVH leaves of 2 triangles"]
    names += ["BVH leaves of 8 triangles", "fused decoder", "fused decoder, 32-sample tiles"]
    report = (out / "gpu_report.md").read_text()
    assert "## INSTA's frame with the fused decoder" not in report and not (out / "fused.json").exists()
    text = section(report, "INSTA's frame by variant")
    assert f"tools/frame_variants.py {out / 'insta'} --size 24 --group all" in text and "ok (" in text
    written = json.loads((out / "variants.json").read_text())
    result = written["variants"]
    assert written["failed"] == {}
    assert list(result) == names
    for name in names:
        scores, viewer = result[name]["scores"], result[name]["viewer"]
        assert scores["ms"] > 0 and viewer["ms"] > 0
        assert f"| {name} | {scores['ms']:,.1f} | {viewer['ms']:,.1f} | " in text
        assert scores["max_difference"] < 1e-4 and abs(scores["psnr"] - result["as is"]["scores"]["psnr"]) < 0.01
    assert result["as is"]["scores"]["max_difference"] == 0 and result["as is"]["viewer"]["max_difference"] == 0


def test_on_a_gpu_the_fused_decoders_have_a_call_of_their_own(gpu, tmp_path, monkeypatch):
    """On a GPU, step 4's variants in two calls, the fused decoders last (their cuBLASDx compilation apart); here every
    step pretends to pass at once."""
    started = []
    monkeypatch.setattr(gpu, "run_step", passing_steps(gpu, tmp_path / "gpu", started))
    monkeypatch.setattr(gpu, "device_name", lambda cuda: "a GPU")
    monkeypatch.setattr(gpu.torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(sys, "argv", ["gpu.py", "--out", str(tmp_path / "gpu"), "--skip-benchmarks", "--skip-tests"])
    (tmp_path / "gpu" / "video512").mkdir(parents=True)
    (tmp_path / "gpu" / "video512" / "transforms_train.json").write_text("{}")
    gpu.main()
    groups = {name: command[command.index("--group") + 1] for name, command in started if "--group" in command}
    assert groups == {"variants": "knobs", "fused": "fused"}
    assert [name for name, _ in started][-2:] == ["variants", "fused"]


def test_a_variant_that_fails_is_left_out_and_named(fallback_run, tool_script, capsys):
    """A variant that raises in its warm-up (a kernel that does not compile on the device) costs its own row only."""
    from headfields.apps.runs import load_run

    variants = tool_script("frame_variants")

    def broken(run):
        raise RuntimeError("no tiles here\nmore of the compiler's output")

    _, out = fallback_run
    run = load_run(out / "insta", "cpu")
    with mock.patch.dict(variants.VARIANTS, {"broken": broken}):
        failed = variants.warmed_up(run, ["as is", "broken", "rounds twice as large"], 8, torch.device("cpu"))
    assert failed == {"broken": "RuntimeError: no tiles here"}
    assert "broken: failed, left out (RuntimeError: no tiles here)" in capsys.readouterr().out


def test_larger_rounds_variant_takes_fewer_rounds(fallback_run, tool_script, monkeypatch):
    """frame_variants.py's "rounds twice as large": fewer, larger rounds than "as is". On the CPU a ray takes at most
    MAX_ROUND_STEPS steps a round, which the variant doubles with the budget; the budget here is the 24² frame's
    rays times the cap, so that the cap, not the least round, sets the rounds (the budget of 2^18 would let 576 rays
    take 57 steps each either way), and both settings are put back after."""
    import headfields.renderers.inference as inference
    from headfields.apps.runs import load_run
    from headfields.cameras import resized_cameras

    variants = tool_script("frame_variants")
    _, out = fallback_run
    run = load_run(out / "insta", torch.device("cpu"))
    cameras = resized_cameras(run.subject.eval.cameras, 24, 24)
    rounds = []
    composite = inference.composite_round

    def counted(*args, **kwargs):
        rounds.append(len(args[2]))  # the round's samples
        return composite(*args, **kwargs)

    monkeypatch.setattr(inference, "composite_round", counted)
    budget = 24 * 24 * inference.MAX_ROUND_STEPS
    monkeypatch.setattr(inference, "ROUND_SAMPLES", budget)
    variants.frame(run, run.eval_head, cameras)
    as_is, rounds[:] = list(rounds), []
    with variants.VARIANTS["rounds twice as large"](run) as head:
        variants.frame(run, head, cameras)
    assert sum(rounds) >= sum(as_is)  # the same samples and a few past the stops, in fewer and larger rounds
    assert len(rounds) < len(as_is) and max(rounds) > max(as_is)
    assert inference.MAX_ROUND_STEPS == 8 and inference.ROUND_SAMPLES == budget  # put back


def test_a_setting_that_is_not_a_public_knob_is_refused(tool_script):
    """The variants set the library's public settings only: never a private name or a function."""
    import headfields.renderers.inference as inference

    variants = tool_script("frame_variants")
    for name in ("_step_cap", "render_nerf_inference", "NO_SUCH_SETTING"):
        with pytest.raises(ValueError, match="not a public setting"), variants.module_settings(inference, **{name: 1}):
            pass
    with variants.module_settings(inference, ROUND_SAMPLES=5):
        assert inference.ROUND_SAMPLES == 5
    assert inference.ROUND_SAMPLES == 1 << 18


def test_frame_section_judges_both_stops_against_the_goal(gpu, gpu_report, tmp_path):
    """On CUDA the 512² frame as scored and as the viewer renders it (INSTA's own stop), each against 33 ms."""
    results = tmp_path / "render.json"
    times = {"inference_ms": 40.0, "interactive_ms": 30.0, "training_ms": 90.0}
    results.write_text(json.dumps({"models": {"insta": {"sizes": {"512": times}}}}))
    step = gpu.Step("frame", ["python", "benchmarks/render.py"], 0, 1.0, "", "")
    text = "\n".join(gpu_report.frame_section(step, results, cuda=True))
    assert "- The 512² frame as scored: 40.0 ms against the goal's 33.3 ms: **not met**." in text
    assert "- The 512² frame as the viewer renders it (INSTA's own stop): 30.0 ms against the goal's 33.3 ms: **met**." in text


def test_report_holds_the_steps_run_so_far(gpu, tmp_path):
    """The report is written after each step: with only the tests run, it has them, says it is incomplete and has no
    later section; a failed step is named at the top."""
    steps = dict.fromkeys(gpu.STEPS)
    steps["tests"] = gpu.run_step("tests", [sys.executable, "-c", "print('== 3 passed in 0.5s ==')"], 60, tmp_path)
    args = gpu.argparse.Namespace(example_minutes=0.0, skip_benchmarks=False)
    lines, failed = gpu.report_lines(args, False, True, tmp_path, steps, [], {}, "none", final=False)
    report = "\n".join(lines)
    assert failed == [] and "- every step so far passed" in report and "**incomplete**" in report
    assert "| passed |" in section(report, "Tests") and "## INSTA" not in report and "## Hash grid" not in report
    steps["mesh"] = gpu.run_step("mesh_queries", [sys.executable, "-c", "raise SystemExit(2)"], 60, tmp_path)
    lines, failed = gpu.report_lines(args, False, True, tmp_path, steps, [], {}, "none", final=True)
    assert failed == ["mesh_queries"] and "- steps failed: mesh_queries" in lines and "**incomplete**" not in "\n".join(lines)


def test_skip_benchmarks_leaves_out_the_hash_grid_and_mesh_queries(gpu, tmp_path, monkeypatch):
    """``--skip-benchmarks``: no benchmark is started, and the report says they were left out (the other steps as
    ever; here every step pretends to pass at once)."""
    started = []

    def run_step(name, command, timeout, logs, deadline=None):
        started.append(name)
        return gpu.Step(name, command, 0, 0.0, "", "")

    monkeypatch.setattr(gpu, "run_step", run_step)
    monkeypatch.setattr(gpu, "tiny_video", lambda folder: folder)
    monkeypatch.setattr(gpu.torch.cuda, "is_available", lambda: False)
    out = tmp_path / "gpu"
    monkeypatch.setattr(sys, "argv", ["gpu.py", "--out", str(out), "--skip-benchmarks", "--skip-tests"])
    gpu.main()
    assert started == ["insta"]  # no metrics.json: no frame to render
    report = (out / "gpu_report.md").read_text()
    assert "Left out (`--skip-benchmarks`)." in section(report, "Hash grid and mesh queries")
    assert "## Hash grid\n" not in report and "## Mesh queries" not in report


def test_a_deadline_ends_the_running_step_and_skips_the_rest(gpu, tmp_path):
    deadline = time.monotonic() + 2
    slow = gpu.run_step("slow", [sys.executable, "-c", "import time; time.sleep(60)"], 600, tmp_path, deadline)
    assert slow.returncode is None and not slow.skipped and slow.seconds < 30  # ended at the deadline, not at 600 s
    late = gpu.run_step("late", [sys.executable, "-c", "print('ran')"], 600, tmp_path, deadline)
    assert late.skipped and not late.ok and "SKIPPED" in late.status() and not (tmp_path / "late.log").exists()
    steps = dict.fromkeys(gpu.STEPS)
    steps["tests"], steps["mesh"] = slow, late
    args = gpu.argparse.Namespace(example_minutes=0.0, skip_benchmarks=False)
    _, failed = gpu.report_lines(args, False, True, tmp_path, steps, [], {}, "none")
    assert failed == ["slow", "late (skipped: --deadline)"]


def test_step_failure_is_reported_with_its_last_lines(gpu, gpu_report, tmp_path):
    code = "print('first'); print('last words'); raise SystemExit(3)"
    step = gpu.run_step("broken", [sys.executable, "-c", code], 60, tmp_path)
    assert step.returncode == 3 and not step.ok
    assert "FAILED" in step.status() and "exit status 3" in step.status()
    block = "\n".join(gpu_report.benchmark_section("Broken", step, fenced=True))
    assert "last words" in block and "FAILED" in block
    assert "last words" in (tmp_path / "broken.log").read_text()


def test_step_past_its_time_limit_is_ended_and_reported(gpu, tmp_path):
    started = time.perf_counter()
    step = gpu.run_step("slow", [sys.executable, "-c", "import time; print('started', flush=True); time.sleep(60)"], 2, tmp_path)
    assert time.perf_counter() - started < 30
    assert step.returncode is None and not step.ok and "time limit" in step.status()
    assert "started" in step.tail()


def test_pytest_counts_reads_the_closing_line(gpu_report):
    output = "....sF\nFAILED tests/test_x.py::test_y[cuda]\n1 failed, 4 passed, 1 skipped, 9 deselected, 2 warnings in 4.20s\n"
    assert gpu_report.pytest_counts(output) == {"failed": 1, "passed": 4, "skipped": 1, "deselected": 9, "warning": 2}
    assert gpu_report.pytest_counts("== 3 passed, 1 error in 0.5s ==") == {"passed": 3, "error": 1}
    assert gpu_report.pytest_counts("ImportError while loading conftest") == {}


def test_fallback_leaves_the_other_examples_to_a_gpu(fallback_run):
    _, out = fallback_run
    text = section((out / "gpu_report.md").read_text(), "Every other example")
    assert "Left out: CUDA only" in text
    assert not (out / "examples").exists()


def test_example_row_reads_the_runs_metrics_and_memory(gpu, gpu_report, tmp_path):
    """A row of the examples table from what a run leaves: the recipe line it printed, metrics.json, the wrapper's
    memory file; and dashes where a failed run left nothing."""
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.json").write_text(json.dumps({"psnr": 25.8249, "iterations": 600, "train_seconds": 50.0}))
    memory = tmp_path / "memory.json"
    memory.write_text(json.dumps({"max_memory_allocated": 2**30, "max_memory_reserved": 3 * 2**29}))
    step = gpu.Step("example monoavatar", ["python"], 0, 61.0, "recipe: paper (monoavatar)\ntrain: ...\n", "")
    row = gpu_report.example_row("monoavatar", step, run, memory)
    assert row == "| monoavatar | ok (61 s) | paper | 12.00 | 1.00 GiB (1.50 GiB reserved) | 25.82 dB |"
    broken = gpu.Step("example portrait360", ["python"], 1, 3.0, "", "Traceback ...")
    row = gpu_report.example_row("portrait360", broken, tmp_path / "missing", tmp_path / "missing.json")
    assert row == "| portrait360 | **FAILED**: exit status 1 (3 s) | — | — | — | — |"
