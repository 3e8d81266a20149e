"""``python -m headfields render | export`` on tiny trained runs: the videos decode to the frames asked for, a
replay of the held-out split scores the run's held-out PSNR, reenactment by another capture, meshes with vertex
colours, and a clear error for each bad argument."""

import dataclasses
import json
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
import trimesh
from PIL import Image

from headfields.apps.commands import main
from headfields.apps.commands import render as render_command
from headfields.apps.export import field_mesh
from headfields.apps.media import read_video, video_info
from headfields.apps.runs import load_run
from headfields.backends.cpu import freed_memory
from headfields.data import load_insta_dataset, save_insta_dataset
from headfields.metrics import psnr
from headfields.synthetic import SyntheticVideoConfig, make_synthetic_video


def _summary(capsys) -> dict:
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_replaying_the_held_out_split_scores_the_runs_psnr(tiny_insta_run, tmp_path, capsys):
    folder, _ = tiny_insta_run
    out = tmp_path / "replay.mp4"
    assert main(["render", str(folder), "--out", str(out), "--device", "cpu"]) == 0
    summary = _summary(capsys)
    run = load_run(folder, "cpu")
    truth = run.subject.eval.images
    assert summary["psnr"] == pytest.approx(run.metrics["psnr"], abs=1e-9)  # the renders, before compression
    video = read_video(out)
    assert video.shape == truth.shape
    decoded = float(np.mean([float(psnr(v.float() / 255, t.float() / 255)) for v, t in zip(video, truth, strict=True)]))
    assert abs(decoded - run.metrics["psnr"]) < 0.5  # the video itself, compressed
    assert summary["video_psnr"] == pytest.approx(decoded, abs=1e-5)


@pytest.mark.parametrize("keep", [True, False])
def test_frames_render_with_freed_memory_kept_and_the_process_is_put_back(tiny_insta_run, tmp_path, monkeypatch, keep):
    # The command owns its process: on the CPU its frames render with glibc keeping freed blocks (the allocator's
    # limit in force), and the limit in force before comes back after; --no-keep-freed-memory leaves it alone.
    folder, _ = tiny_insta_run
    seen, render_view = [], render_command.render_view
    monkeypatch.setattr(
        render_command, "render_view", lambda *a, **k: seen.append(freed_memory._in_force) or render_view(*a, **k)
    )
    monkeypatch.setattr(freed_memory, "_in_force", None)  # no limit of this process's own in force before
    before = None
    flag = "--keep-freed-memory" if keep else "--no-keep-freed-memory"
    argv = ["render", str(folder), "--camera", "orbit", "--frames", "2", "--resolution", "16", flag]
    assert main([*argv, "--out", str(tmp_path / "o.mp4"), "--device", "cpu"]) == 0
    applies = keep and freed_memory._glibc() is not None and not freed_memory._environment_tunes_malloc()
    assert seen == [freed_memory.RETAINED_BYTES if applies else before] * 2
    assert freed_memory._in_force == before


def _image_reads(monkeypatch) -> list:
    """The capture images (colour, depth) decoded from now on, as a list the readers append their paths to."""
    from headfields.data import _io

    reads = []
    for name in ("read_color_image", "read_uint16"):
        read = getattr(_io, name)
        monkeypatch.setattr(_io, name, lambda path, read=read: reads.append(path) or read(path))
    return reads


def test_orbit_writes_the_frames_and_size_asked_for(tiny_insta_run, tmp_path, capsys, monkeypatch):
    folder, _ = tiny_insta_run
    out = tmp_path / "orbit.mp4"
    argv = ["render", str(folder), "--camera", "orbit", "--frames", "6", "--resolution", "24", "--out", str(out), "--png"]
    reads = _image_reads(monkeypatch)
    assert main([*argv, "--device", "cpu", "--chunk", "256"]) == 0  # a field's run takes its rays' flags
    assert reads == []  # issue 78: the capture's images are neither scored nor shown, so none is decoded
    info = video_info(out)
    assert (info.frames, info.width, info.height) == (6, 24, 24)
    pngs = sorted((tmp_path / "orbit").glob("*.png"))
    assert len(pngs) == 6
    frames = read_video(out).float()
    assert not torch.equal(frames[0], frames[3])  # the far side is another view


def test_side_by_side_puts_the_truth_left_of_the_render(tiny_insta_run, tmp_path, capsys):
    folder, _ = tiny_insta_run
    out = tmp_path / "both.mp4"
    assert main(["render", str(folder), "--side-by-side", "--png", "--out", str(out), "--device", "cpu"]) == 0
    run = load_run(folder, "cpu")
    h, w = run.subject.eval.images.shape[1:3]
    assert (video_info(out).width, video_info(out).height) == (2 * w, h)
    first = torch.from_numpy(np.array(Image.open(tmp_path / "both" / "00000.png")))
    assert torch.equal(first[:, :w], run.subject.eval.images[0])  # lossless PNG: the capture's pixels


@pytest.fixture(scope="module")
def other_capture(tmp_path_factory):
    """Another person (another seed: another shape and expressions), tracked with the same model sizes."""
    config = SyntheticVideoConfig(num_frames=8, num_val=1, num_test=3, resolution=16, episode_frames=2, seed=5)
    return make_synthetic_video(tmp_path_factory.mktemp("other"), config)


def test_another_capture_drives_the_avatar_relatively(tiny_insta_run, other_capture, tmp_path, capsys):
    folder, _ = tiny_insta_run
    out = tmp_path / "drive.mp4"
    assert main(["render", str(folder), "--drive", str(other_capture), "--out", str(out), "--device", "cpu"]) == 0
    assert "another capture's test split (3 frames), relative" in capsys.readouterr().out
    assert video_info(out).frames == 3
    # Absolute transfer of the same capture moves the head elsewhere: other images.
    absolute = tmp_path / "absolute.mp4"
    argv = ["render", str(folder), "--drive", str(other_capture), "--absolute", "--out", str(absolute), "--device", "cpu"]
    assert main(argv) == 0
    assert not torch.equal(read_video(out), read_video(absolute))


def test_a_driver_with_another_expression_size_is_refused(tiny_insta_run, other_capture, tmp_path, capsys):
    folder, _ = tiny_insta_run
    splits = {s: load_insta_dataset(other_capture, s) for s in ("train", "test")}
    smaller = tmp_path / "smaller"
    shutil.copytree(splits["train"].model_path, smaller / "model")  # the capture's model files, inside it
    cut = {}
    for split, frames in splits.items():
        params = dataclasses.replace(frames.params, expression=frames.params.expression[:, :10])
        cut[split] = dataclasses.replace(
            frames, params=params, expression=frames.expression[:, :10], model_path=smaller / "model"
        )
    save_insta_dataset(smaller, cut)
    assert main(["render", str(folder), "--drive", str(smaller), "--out", str(tmp_path / "x.mp4"), "--device", "cpu"]) == 2
    error = capsys.readouterr().err
    assert "driver: expected expression coefficients of shape" in error and "[10]" in error


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--camera", "track", "--frames", "99"], "frames: expected 1 to the driver's 2 frames"),
        (["--camera", "orbit", "--side-by-side"], "side_by_side: needs the capture's images"),
        (["--out", "video.avi"], "out: expected a .mp4 file"),
        (["--fps", "0"], "fps: expected a positive frame rate"),
        (["--resolution", "1"], "resolution: expected at least 2 pixels"),
        (["--driver-neutral", "7", "--relative"], "driver_neutral"),
    ],
)
def test_bad_render_arguments_are_named(tiny_insta_run, tmp_path, capsys, argv, message):
    folder, _ = tiny_insta_run
    assert main(["render", str(folder), "--device", "cpu", *argv]) == 2
    assert message in capsys.readouterr().err


def test_unknown_camera_path_and_missing_run_exit_with_a_message(tmp_path, capsys):
    with pytest.raises(SystemExit) as stop:
        main(["render", str(tmp_path), "--camera", "dolly"])
    assert stop.value.code == 2 and "invalid choice: 'dolly'" in capsys.readouterr().err
    assert main(["render", str(tmp_path / "nowhere")]) == 2
    assert "run:" in capsys.readouterr().err and not (tmp_path / "nowhere").exists()  # no videos folder made
    assert main(["export", str(tmp_path / "nowhere"), "--out", str(tmp_path / "m")]) == 2
    assert "run:" in capsys.readouterr().err
    assert main(["render", str(tmp_path), "--drive", str(tmp_path / "nowhere")]) == 2  # tmp_path has no checkpoint
    assert "run: no checkpoint.pt" in capsys.readouterr().err


def test_export_writes_coloured_meshes_of_the_field(tiny_neus_run, tmp_path, capsys, monkeypatch):
    folder, _ = tiny_neus_run
    out = tmp_path / "meshes"
    argv = ["export", str(folder), "--out", str(out), "--frames", "all", "--resolution", "24", "--device", "cpu"]
    reads = _image_reads(monkeypatch)
    assert main(argv) == 0
    assert reads == []  # meshes of the model: no capture image is decoded
    written = _summary(capsys)
    run = load_run(folder, "cpu")
    names = ["canonical.ply"] + [f"test_{f:05d}.ply" for f in range(len(run.subject.eval))]
    assert sorted(p.name for p in out.iterdir()) == sorted(names)
    posed = field_mesh(run.model, run.eval_head, 1, 24)
    mesh = trimesh.load(out / "test_00001.ply", process=False)
    assert len(mesh.vertices) == len(posed.vertices) > 0 and written[str(out / "test_00001.ply")]["faces"] == len(mesh.faces)
    np.testing.assert_allclose(mesh.vertices, posed.vertices.numpy(), atol=1e-6)
    colours = mesh.visual.vertex_colors[:, :3]
    np.testing.assert_allclose(colours, (posed.colors.numpy() * 255).round(), atol=1)


def test_export_of_a_field_without_a_surface_says_which_level(tiny_insta_run, tmp_path, capsys):
    folder, _ = tiny_insta_run
    assert main(["export", str(folder), "--out", str(tmp_path / "m"), "--resolution", "16", "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    found = re.search(r"give --level a value in \(([-\d.e+]+), ([-\d.e+]+)\), e\.g\. --level ([-\d.e+]+)", err)
    assert found, err
    low, high, level = map(float, found.groups())
    assert low < level < high  # and that level has a surface: the same command with it writes the mesh
    argv = ["export", str(folder), "--out", str(tmp_path / "m"), "--resolution", "16", "--device", "cpu"]
    assert main([*argv, "--level", str(level), "--frames", "none"]) == 0
    assert (tmp_path / "m" / "canonical.ply").is_file()
    assert main(["export", str(folder), "--out", str(tmp_path / "m"), "--frames", "5", "--device", "cpu"]) == 2
    assert "frames: expected indices in [0, 1]" in capsys.readouterr().err


def test_the_module_runs_as_a_program():
    done = subprocess.run([sys.executable, "-m", "headfields", "render", "--help"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0
    for flag in ("--drive", "--camera", "--frames", "--fps", "--resolution", "--out", "--png", "--side-by-side", "--absolute"):
        assert flag in done.stdout


def test_a_run_folder_that_cannot_be_written_is_named(tiny_insta_run, tmp_path, capsys):
    """The default video goes into RUN/videos: a read-only run says so, and --out elsewhere works."""
    import os

    folder = shutil.copytree(tiny_insta_run[0], tmp_path / "run")
    if os.geteuid() == 0:  # root writes anywhere: the videos folder is a file instead
        shutil.rmtree(folder / "videos", ignore_errors=True)  # (another test may have rendered into the shared run)
        (folder / "videos").write_text("not a folder")
    else:
        folder.chmod(0o555)
    assert main(["render", str(folder), "--device", "cpu"]) == 2
    assert "videos" in capsys.readouterr().err
    assert main(["render", str(folder), "--device", "cpu", "--out", str(tmp_path / "ok.mp4")]) == 0


def test_export_and_view_need_no_pyav_and_render_says_which_it_needs(tmp_path):
    """PyAV is imported where a video is made: without it (or with one too old) export and view still run."""
    import subprocess
    import sys

    code = (
        "import sys; sys.modules['av'] = None\n"  # import av now raises ImportError
        "from headfields.apps.commands import main\n"
        f"assert main(['render', {str(tmp_path)!r}]) == 2\n"
        "for name in ('export', 'view'):\n"
        "    try:\n"
        "        main([name, '--help'])\n"
        "    except SystemExit as done:\n"
        "        assert done.code == 0, name\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "render needs PyAV 18 or newer" in result.stderr and "pip install 'av>=18'" in result.stderr


def test_exports_default_grid_follows_the_capture():
    from headfields.apps.commands.export import MAX_RESOLUTION, MIN_RESOLUTION, default_resolution

    assert default_resolution(96, 96) == 96 and default_resolution(512, 384) == 512
    assert default_resolution(16, 16) == MIN_RESOLUTION and default_resolution(4096, 2160) == MAX_RESOLUTION


# A program that runs the commands in one process over a list of command lines (imports once), as
# ``python -m headfields`` does; an exception main() lets through ends it with a traceback on stderr.
PROBE = """
import contextlib, io, json, sys
from headfields.apps.commands import main
results = []
for argv in json.loads(sys.argv[1]):
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            status = main(argv)
        except SystemExit as stop:  # tyro's and argparse's flag errors
            status = stop.code
    results.append([status, err.getvalue()])
print(json.dumps(results))
"""


def test_malformed_configs_devices_and_rates_are_one_error_line_not_a_traceback(tmp_path):
    """Each bad input is refused with exit status 2 and a message naming the flag or key and what was expected;
    none writes anything (the run folders named are never made)."""
    from headfields.apps.runs import RunConfig
    from headfields.configs import CLASS_KEY, config_to_dict
    from headfields.models import insta

    good = config_to_dict(RunConfig("insta", insta.cpu_config()))
    configs = {
        "ten": lambda d: d["training"].update(max_iterations="ten"),
        "no_class": lambda d: d["recipe"].pop(CLASS_KEY),
        "path": lambda d: d["subject"].update(data=5),
        "rate": lambda d: d["recipe"]["optimization"].update(learning_rate="inf"),
    }
    for name, spoil in configs.items():
        data = json.loads(json.dumps(good))
        spoil(data)
        (tmp_path / f"{name}.json").write_text(json.dumps(data))
    out, run = str(tmp_path / "out"), str(tmp_path / "run")
    cases = [
        (["train", "insta", "--config", str(tmp_path / "ten.json"), "--out", out], "max_iterations: expected an integer"),
        (["train", "insta", "--config", str(tmp_path / "no_class.json"), "--out", out], "recipe: expected insta's configuration"),
        (["train", "insta", "--config", str(tmp_path / "path.json"), "--out", out], "subject.data: expected str | None, got 5"),
        (["train", "insta", "--config", str(tmp_path / "rate.json"), "--out", out], "learning_rate: expected a positive number"),
        (["train", "insta", "--seed", str(10**20), "--out", out], "seed: expected an integer in [0, "),
        (["train", "nphm_prior", "--eval-split", "val", "--out", out], "eval_split: nphm_prior does not read --eval-split"),
        (["train", "mononphm", "--all-held-out", "True", "--out", out], "all_held_out: mononphm does not read --all-held-out"),
        (["train", "insta", "--device", "banana", "--out", out], "device: expected a device such as 'cpu', 'cuda'"),
        (["train", "insta", "--device", "cuda:99", "--out", out], "device: "),  # no GPU here, or not 100 of them
        (["train", "insta", "--device", "mps", "--out", out], "device: expected a cpu or cuda device, got 'mps'"),
        (["render", run, "--device", "banana"], "device: expected a device such as"),
        (["export", run, "--device", "cuda:99", "--out", str(tmp_path / "meshes")], "device: "),
        (["view", run, "--device", "vulkan"], "device: expected a cpu or cuda device"),
    ]
    flag_cases = [  # parsed by tyro, which prints its own box: no traceback, status 2, the field named
        (["train", "insta", "--insta.optimization.learning-rate", "inf", "--out", out], "learning_rate"),
        (["train", "insta", "--insta.optimization.learning-rate", "nan", "--out", out], "learning_rate"),
        (["train", "insta", "--insta.optimization.learning-rate", "1e39", "--out", out], "learning_rate"),  # past float32
        (["train", "gaussian_avatar", "--gaussian-avatar.adam-eps", "nan", "--out", out], "adam_eps"),  # was Adam's, unnamed
    ]
    done = subprocess.run(
        [sys.executable, "-c", PROBE, json.dumps([argv for argv, _ in cases + flag_cases])],
        capture_output=True, text=True, timeout=600, env={**os.environ, "COLUMNS": "200"},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    for (argv, message), (status, err) in zip(cases + flag_cases, json.loads(done.stdout), strict=True):
        assert status == 2 and "Traceback" not in err and message in err, (argv, status, err)
    for (argv, _), (_, err) in zip(cases, json.loads(done.stdout), strict=False):
        lines = [line for line in err.splitlines() if not line.startswith("Warp ")]  # Warp's note that it sees no GPU
        assert lines[-1].startswith(f"python -m headfields {argv[0]}: error: "), (argv, err)
    assert not (tmp_path / "out").exists() and not (tmp_path / "run").exists() and not (tmp_path / "meshes").exists()


def test_check_device_names_the_argument_and_what_was_expected():
    from headfields.checks import check_device

    assert check_device("device", "cpu") == torch.device("cpu") and check_device("device", torch.device("cpu")).type == "cpu"
    assert check_device("device", None).type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert check_device("device", "cuda:7", present=False) == torch.device("cuda", 7)  # a setting for another machine
    for bad, message in (("banana", "expected a device such as"), ("meta", "expected a cpu or cuda device"), ("cuda:99", "")):
        with pytest.raises(ValueError, match=f"^device: .*{message}"):
            check_device("device", bad)
    with pytest.raises(TypeError, match="^where: expected a device"):
        check_device("where", 0)
