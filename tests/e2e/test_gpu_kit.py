"""tools/gpu_kit/: the lease's plan fits its call, writes at most 8 files, and its summary names every figure issue 97
asks of a GPU; the INSTA pair's rate and the summary's parsing hold on made-up step outputs (no GPU runs here)."""

import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
KIT = ROOT / "tools" / "gpu_kit"


@pytest.fixture
def kit(monkeypatch):
    monkeypatch.syspath_prepend(str(KIT))
    import insta_pair
    import summary

    yield insta_pair, summary
    for name in ("insta_pair", "summary"):
        sys.modules.pop(name, None)


def test_the_dry_run_plans_within_a_call_and_names_every_figure(tmp_path, kit):
    _, summary = kit
    env = {**os.environ, "OUT": str(tmp_path / "out"), "WORK": str(tmp_path / "work"), "PYTHON": sys.executable}
    done = subprocess.run(
        ["bash", "tools/gpu_kit/session.sh", "--dry-run"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    files = [p for p in (tmp_path / "out").rglob("*") if p.is_file()]
    assert len(files) <= 8 and {p.name for p in files} == {"summary.json", "logs.tar.gz"}
    said = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert said["dry_run"] and said["plan_fits"] and said["plan_s"] <= summary.PLAN_LIMIT_S
    assert list(said["steps"]) == ["video", "insta", "gaussians", "cuda_tests"]  # by value
    assert set(summary.TARGETS) <= set(said["figures"]) and set(said["met"]) == set(summary.TARGETS)
    named = set(kit[0].FIGURES) | set(summary.GAUSSIAN_FIGURES) | set(summary.TEST_FIGURES)
    assert set(said["figures"]) == named and all(v is None for v in said["figures"].values())


def test_a_run_s_steady_rate_is_the_slope_over_its_window(tmp_path, kit):
    insta_pair, _ = kit
    log = tmp_path / "log.jsonl"
    rows = [{"step": s, "time": 5.0 + (s / 20 if s < 400 else 20 + (s - 400) / 80), "loss": 0.1} for s in range(50, 1001, 50)]
    rows.insert(3, {"step": 200, "time": 9.0, "eval": 1})  # a row that is not a step's: ignored
    log.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert insta_pair.steady_rate(log) == pytest.approx(80.0)  # the warm-up's 20 it/s before step 400 left out
    assert insta_pair.steady_rate(log, (2000, 3000)) is None


def test_the_summary_reads_the_steps_outputs_and_says_which_targets_were_met(tmp_path, kit):
    _, summary = kit
    work = tmp_path / "work"
    work.mkdir()
    insta = {"insta_graph_it_per_s": 120.0, "insta_eager_it_per_s": 60.0, "insta_psnr_after_minutes": 35.0}
    (work / "insta.json").write_text(json.dumps(insta))
    row = {"forward_s": 0.002, "forward_backward_s": 0.006, "frames_per_s": 500.0, "gsplat_forward_s": 0.001}
    row |= {"gsplat_forward_backward_s": 0.003, "forward_backward_over_gsplat": 2.0}
    (work / "gaussians.json").write_text(json.dumps({"gaussians": 99730, "sizes": {"512": row}}))
    tail = (
        "FAILED tests/unit/x.py::test_a - boom\nERROR tests/unit/y.py::test_b\n1 failed, 40 passed, 3 skipped, 1 error in 9.20s\n"
    )
    (work / "cuda_tests.log").write_text("40 passed so far (a line that is not pytest's last)\n" + tail)
    (work / "steps.txt").write_text("video 60 skipped 0\ninsta 240 0 231\ngaussians 90 0 80\ncuda_tests 150 1 140\n")
    (work / "video512").mkdir()
    (work / "video512" / "frame.png").write_bytes(b"not archived")
    assert summary.main(["--work", str(work), "--out", str(tmp_path / "out"), "--plan", "330"]) == 0
    said = json.loads((tmp_path / "out" / "summary.json").read_text())
    figures = said["figures"]
    assert figures["gaussian_512_forward_backward_ms"] == pytest.approx(6.0) and figures["gaussians"] == 99730
    counts = [figures[f"cuda_tests_{n}"] for n in ("passed", "failed", "errors", "skipped")]
    assert counts == [40, 1, 1, 3] and figures["cuda_tests_failures"] == ["tests/unit/x.py::test_a", "tests/unit/y.py::test_b"]
    assert said["met"] == {
        "insta_graph_it_per_s": True,
        "insta_psnr_after_minutes": False,
        "gaussian_512_frames_per_s": True,
        "gaussian_512_forward_backward_over_gsplat": False,
    }
    assert said["steps"]["insta"] == {"expected_s": 240, "rc": "0", "seconds": 231}
    with tarfile.open(tmp_path / "out" / "logs.tar.gz") as archive:
        assert sorted(archive.getnames()) == ["cuda_tests.log", "gaussians.json", "insta.json", "steps.txt"]
    # A test run cut at its limit (no last line): no counts; outputs of a step this call skipped: not its figures.
    (work / "cuda_tests.log").write_text("40 passed so far\n")
    (work / "steps.txt").write_text("insta 240 0 231\ngaussians 90 skipped 0\ncuda_tests 150 124 300\n")
    figures = summary.summary(work, 330, False)["figures"]
    assert figures["cuda_tests_passed"] is None and figures["gaussian_512_frames_per_s"] is None
    assert figures["insta_graph_it_per_s"] == 120.0


def test_warp_kernels_compile_for_the_gpu_without_one(tmp_path):
    """tools/gpu_kit/aot.py fills a kernel cache with sm_90 binaries on a machine without a GPU (Warp's NVRTC): here one
    small module of ours, which the GPU machine then loads from the cache instead of compiling it."""
    only = "headfields.encoders.spherical_harmonics"
    command = [sys.executable, "tools/gpu_kit/aot.py", "--cache", str(tmp_path / "kernels"), "--only", only]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "1 modules for sm_90" in done.stdout and "not compiled" not in done.stdout, done.stdout
    binaries = list((tmp_path / "kernels").rglob("*encode*.sm90.cubin"))  # (its factory's kernel: encode)
    assert len(binaries) == 1 and binaries[0].stat().st_size > 0, list((tmp_path / "kernels").rglob("*"))
