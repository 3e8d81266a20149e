"""benchmarks/render.py, run as a user runs it, on a tiny trained run: its profile lists what kept the device busy, each
kernel once, and a baseline checkout whose worker ends before it answers is named, with the worker's own messages
passed through."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "render.py"


def render(out: Path, *flags: str, device: str = "cpu") -> subprocess.CompletedProcess:
    """render.py on the run in ``out/insta`` (reused: it has finished), its 16² frame rendered once."""
    command = [sys.executable, str(SCRIPT), "--only", "insta", "--sizes", "16", "--repeats", "1", "--device", device]
    return subprocess.run([*command, "--out", str(out), *flags], cwd=ROOT, capture_output=True, text=True, timeout=600)


def with_run(tmp_path: Path, tiny_insta_run) -> Path:
    out = tmp_path / "out"
    shutil.copytree(tiny_insta_run[0], out / "insta")
    return out


def test_the_profile_counts_each_kernel_once(device, tiny_insta_run, tmp_path):
    """On CUDA the kernels themselves (and copies), not the operations that launched them, whose device time is the
    kernels' again; on the CPU the operations with time of their own. Either way the busy time fits in the frame's."""
    out = with_run(tmp_path, tiny_insta_run)
    done = render(out, "--profile", device=device.type)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "insta: the run in" in done.stdout and "insta: training" not in done.stdout  # reused, not trained
    profile = json.loads((out / "render.json").read_text())["models"]["insta"]["profile"]
    assert profile["device"] == device.type and profile["size"] == 16
    times = [row["ms"] for row in profile["top"]]
    assert times and times == sorted(times, reverse=True) and min(times) > 0
    assert sum(times) <= profile["busy_ms"] + 1e-6 and 0 < profile["busy_ms"] <= profile["wall_ms"]
    names = [row["name"] for row in profile["top"]]
    if device.type == "cuda":
        assert not any(name.startswith("aten::") for name in names), names
    else:
        assert any(name.startswith("aten::") for name in names), names
    assert f"insta, 16² under the profiler: {profile['wall_ms']:,.1f} ms a frame" in done.stdout


def test_a_baseline_worker_that_ends_before_answering_is_named(tiny_insta_run, tmp_path):
    """The baseline's worker (tools/frame_turns.py, with the checkout's package) prints its package's messages, which
    pass through; one that exits before it answers ends the benchmark with its status, not a hang or a parse error.
    The run it could not copy for the checkout is named, and our own figures are written before the baseline's."""
    out = with_run(tmp_path, tiny_insta_run)
    package = tmp_path / "old" / "headfields"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text(
        "import sys\nprint(sys.argv[0].rsplit('/', 1)[-1] + ': a message of the old package', flush=True)\nraise SystemExit(3)\n"
    )
    done = render(out, "--baseline", str(tmp_path / "old"))
    assert done.returncode != 0
    assert "--baseline: its frame_turns.py exited with status 3" in done.stderr
    assert "frame_turns.py: a message of the old package" in done.stdout  # read from the worker's pipe, printed
    assert "insta could not be copied for" in done.stdout
    assert json.loads((out / "render.json").read_text())["models"]["insta"]["psnr"]["training"] > 0


def test_a_baseline_that_is_no_checkout_is_refused(tmp_path):
    done = render(tmp_path / "out", "--baseline", str(tmp_path))
    assert done.returncode != 0 and "--baseline: expected a headfields checkout" in done.stderr
