"""Runs that never lose work, never load the wrong thing and never run a stranger's code: the run folder is
probed and locked before training, checkpoints are atomic (and timed), a resume refuses another run's checkpoint
and verifies what it reads, two runs with one seed agree bit for bit, and a run killed with SIGKILL resumes."""

import dataclasses
import errno
import io
import json
import os
import pickle
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
from tiny_configs import TINY_INSTA

import headfields.training.checkpoints as checkpoints
from headfields.models.insta import Insta
from headfields.parametric import load_model
from headfields.training import TrainingConfig, seed_everything, train
from headfields.training.checkpoints import CheckpointError, RunFolder, load_checkpoint, save_checkpoint

from helpers import raises_naming

STEPS = TrainingConfig(max_iterations=2, rays_per_batch=64, eval_every=0, checkpoint_every=1, eval_frames=1)


@pytest.fixture
def video(tiny_video):
    return tiny_video


def _model(frames, seed=0, config=TINY_INSTA):
    seed_everything(seed)
    return Insta(load_model(frames.model_path, frames.model_type), frames.segmentation_labels, config)


def _weights(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


# --- the folder: probed and locked before training ------------------------------------------------------------


def test_an_unwritable_folder_fails_before_training(video, tmp_path):
    train_frames, eval_frames = video
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    model = _model(train_frames)
    before = _weights(model)
    with pytest.raises(OSError, match="out: cannot write in .*a_file"):
        train(model, train_frames, eval_frames, blocker / "run", STEPS)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())  # not one step was taken


def test_a_full_disk_fails_before_training(video, tmp_path, monkeypatch):
    train_frames, eval_frames = video

    def full(*args):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(checkpoints.os, "fsync", full)
    with pytest.raises(OSError, match="No space left"):
        train(_model(train_frames), train_frames, eval_frames, tmp_path / "run", STEPS)
    assert not list((tmp_path / "run").glob(".probe*"))


def test_a_failed_checkpoint_leaves_the_old_one_and_no_temporary_file(tmp_path, monkeypatch):
    path = tmp_path / "checkpoint.pt"
    save_checkpoint({"step": 1, "w": torch.ones(3)}, path)

    def full(*args):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(checkpoints.os, "fsync", full)
    with pytest.raises(OSError, match=f"checkpoint: could not write {tmp_path / 'checkpoint.pt'}"):
        save_checkpoint({"step": 2, "w": torch.zeros(3)}, path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.pt"]
    assert load_checkpoint(path)["step"] == 1


def test_a_second_run_into_a_held_folder_fails_at_once_naming_the_holder(video, tmp_path):
    train_frames, eval_frames = video
    with RunFolder(tmp_path / "run"):
        start = time.perf_counter()
        with pytest.raises(RuntimeError, match=rf"in use by another run \(process {os.getpid()}\)"):
            train(_model(train_frames), train_frames, eval_frames, tmp_path / "run", STEPS)
        assert time.perf_counter() - start < 5
    # Released: the folder trains now.
    assert train(_model(train_frames), train_frames, eval_frames, tmp_path / "run", STEPS)["iterations"] == 2


def test_the_lock_holds_across_processes(tmp_path):
    holder = subprocess.Popen(
        [sys.executable, "-c", f"from headfields.training.checkpoints import RunFolder; f = RunFolder({str(tmp_path)!r}).open(); "
         "print('held', flush=True); import time; time.sleep(60)"],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(RuntimeError, match=rf"process {holder.pid}"):
            RunFolder(tmp_path).open()
    finally:
        holder.kill()
        holder.wait()
    RunFolder(tmp_path).open().close()  # a killed holder's lock is gone with it


# --- checkpoints: timed, verified, only ours ------------------------------------------------------------------


def test_a_timed_checkpoint_is_written_between_step_checkpoints(video, tmp_path, monkeypatch):
    train_frames, eval_frames = video
    config = dataclasses.replace(STEPS, max_iterations=4, checkpoint_every=0, checkpoint_minutes=1e-9)
    seen = []
    original = checkpoints.save_checkpoint

    def spy(state, path):
        seen.append(state["step"])
        original(state, path)

    monkeypatch.setattr("headfields.training.engine.save_checkpoint", spy)  # the run's engine writes every checkpoint
    train(_model(train_frames), train_frames, eval_frames, tmp_path / "run", config)
    assert seen == [1, 2, 3, 4, 4]  # after every step (the time is always up), and the final one


def test_resume_refuses_another_runs_checkpoint_and_says_what_differs(video, tmp_path):
    train_frames, eval_frames = video
    train(_model(train_frames), train_frames, eval_frames, tmp_path / "run", STEPS)
    longer = dataclasses.replace(STEPS, max_iterations=3)  # a longer budget is a resume, not another run
    assert train(_model(train_frames), train_frames, eval_frames, tmp_path / "run", longer)["iterations"] == 3
    other_frames = train_frames.select([0, 1, 2])
    with pytest.raises(CheckpointError, match=r"\(frames differ"):
        train(_model(other_frames), other_frames, eval_frames, tmp_path / "run", longer)
    other_recipe = dataclasses.replace(TINY_INSTA, sh_degree=2)
    with pytest.raises(CheckpointError, match=r"\(model differ"):
        train(_model(train_frames, config=other_recipe), train_frames, eval_frames, tmp_path / "run", longer)
    with pytest.raises(CheckpointError, match=r"\(training differ"):
        train(_model(train_frames), train_frames, eval_frames, tmp_path / "run", dataclasses.replace(longer, seed=1))


def test_the_subjects_model_files_are_not_state(video, tmp_path):
    """The parametric model's buffers are the subject's files: not stored, and never restored over the model's."""
    train_frames, eval_frames = video
    model = _model(train_frames)
    train(model, train_frames, eval_frames, tmp_path / "run", STEPS)
    state = load_checkpoint(tmp_path / "run" / "checkpoint.pt")
    assert state["model"] and not [k for k in state["model"] if k.startswith("parametric.")]
    assert "model files" in state["fingerprint"]


@pytest.mark.parametrize(
    "damage",
    ["empty", "random", "flipped", "truncated", "a list", "non-finite"],
)
def test_a_damaged_checkpoint_is_refused_by_name(tmp_path, damage):
    path = tmp_path / "checkpoint.pt"
    save_checkpoint({"model": {"w": torch.arange(4096.0)}, "step": 3}, path)
    data = bytearray(path.read_bytes())
    if damage == "empty":
        path.write_bytes(b"")
    elif damage == "random":
        path.write_bytes(os.urandom(5000))
    elif damage == "flipped":
        data[len(data) // 2] ^= 0xFF  # inside the tensor's bytes: only the CRC can tell
        path.write_bytes(bytes(data))
    elif damage == "truncated":
        path.write_bytes(bytes(data[: len(data) // 2]))
    elif damage == "a list":
        torch.save([1, 2, 3], path)
    else:  # written by torch.save: save_checkpoint refuses to write one (tests/e2e/test_rerun_safety.py)
        torch.save({"model": {"w": torch.tensor([1.0, float("nan")])}}, path)
    with pytest.raises(CheckpointError, match=str(path)):
        load_checkpoint(path)


class _Payload:
    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_crafted_checkpoint_runs_no_code(tmp_path):
    marker = tmp_path / "pwned"
    payload = _Payload()
    payload.marker = marker
    path = tmp_path / "checkpoint.pt"
    torch.save({"model": {}, "x": payload}, path)
    with pytest.raises(CheckpointError, match="cannot be loaded safely"):
        load_checkpoint(path)
    assert not marker.exists()
    with open(tmp_path / "plain.pkl", "wb") as f:  # the same payload outside torch's zip: not an archive at all
        pickle.dump(payload, f)
    with pytest.raises(CheckpointError, match="not a readable torch checkpoint"):
        load_checkpoint(tmp_path / "plain.pkl")
    assert not marker.exists()


# --- seeds, splits ---------------------------------------------------------------------------------------------


def test_two_runs_with_one_seed_give_bit_identical_weights(video, tmp_path):
    train_frames, eval_frames = video
    finals = []
    for run in ("a", "b"):
        model = _model(train_frames, seed=5)
        train(model, train_frames, eval_frames, tmp_path / run, dataclasses.replace(STEPS, max_iterations=3))
        finals.append(_weights(model))
    for name, value in finals[0].items():
        assert torch.equal(value, finals[1][name]), name
    other = _model(train_frames, seed=6)  # and the seed matters: another one starts elsewhere
    assert any(not torch.equal(v, _model(train_frames, seed=5).state_dict()[k]) for k, v in other.state_dict().items())


def test_a_non_finite_loss_stops_the_run_before_the_step(video, tmp_path):
    train_frames, eval_frames = video
    model = _model(train_frames)
    train(model, train_frames, eval_frames, tmp_path / "run", STEPS)
    good = load_checkpoint(tmp_path / "run" / "checkpoint.pt")
    step = model.training_step

    def poisoned(batch, index):
        out = step(batch, index)
        return dataclasses.replace(out, loss=out.loss * float("nan"))

    model.training_step = poisoned
    with pytest.raises(FloatingPointError, match="training_step: the loss is nan at step 2"):
        train(model, train_frames, eval_frames, tmp_path / "run", dataclasses.replace(STEPS, max_iterations=4))
    assert all(torch.isfinite(p).all() for p in model.parameters())  # no step was taken with it
    assert load_checkpoint(tmp_path / "run" / "checkpoint.pt")["step"] == good["step"]


def test_empty_splits_fail_before_training(video, tmp_path):
    train_frames, eval_frames = video
    empty = eval_frames.select([])
    with raises_naming("eval_frames"):
        train(_model(train_frames), train_frames, empty, tmp_path / "a", STEPS)
    with raises_naming("train_frames"):
        train(_model(train_frames), train_frames.select([]), eval_frames, tmp_path / "b", STEPS)
    assert not (tmp_path / "a" / "checkpoint.pt").exists()


# --- SIGKILL, then resume --------------------------------------------------------------------------------------

KILLED_RUN = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    sys.path.insert(0, {tests!r})
    from tiny_configs import TINY_INSTA
    from headfields.data import load_insta_dataset
    from headfields.models.insta import Insta
    from headfields.parametric import load_model
    from headfields.training import TrainingConfig, seed_everything, train
    train_frames, eval_frames = load_insta_dataset({root!r}, "train"), load_insta_dataset({root!r}, "test")
    seed_everything(0)
    model = Insta(load_model(train_frames.model_path, train_frames.model_type), train_frames.segmentation_labels, TINY_INSTA)
    config = TrainingConfig(max_iterations={steps}, rays_per_batch=64, eval_every=0, checkpoint_every=0,
                            checkpoint_minutes=1e-9, eval_frames=1, log_every=1)
    train(model, train_frames, eval_frames, {out!r}, config)
    """
)


def test_a_run_killed_mid_checkpoint_resumes_from_its_last_checkpoint(video, tmp_path):
    train_frames, eval_frames = video
    root = str(train_frames.root)
    out = tmp_path / "run"
    script = KILLED_RUN.format(tests=str(Path(__file__).parents[1]), root=root, out=str(out), steps=10_000)
    run = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.time() + 120
        while time.time() < deadline and not ((out / "checkpoint.pt").exists() and list(out.glob(".checkpoint.*.tmp.pt"))):
            time.sleep(0.001)  # until a checkpoint is being written over an earlier one: kill it there
        run.send_signal(signal.SIGKILL)
        run.wait(timeout=30)
    finally:
        run.kill()
    assert run.returncode == -signal.SIGKILL
    reached = load_checkpoint(out / "checkpoint.pt")["step"]  # the last whole checkpoint, never a part of one
    assert reached >= 1
    resumed = KILLED_RUN.format(tests=str(Path(__file__).parents[1]), root=root, out=str(out), steps=reached + 2)
    done = subprocess.run([sys.executable, "-c", resumed], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert load_checkpoint(out / "checkpoint.pt")["step"] == reached + 2  # went on from there, losing nothing
    assert not [p for p in out.iterdir() if ".tmp" in p.name]  # the killed run's temporary file is gone
    assert _logged_steps(out) == list(range(1, reached + 3))  # the lines past the checkpoint dropped: none twice


# A Gaussian avatar through train_run, as `python -m headfields train gaussian_avatar` trains it: a checkpoint every
# CHECKPOINT_EVERY steps (no timed ones), a line of log.jsonl every step, an evaluation every EVAL_EVERY steps.
CHECKPOINT_EVERY, EVAL_EVERY = 2, 3
GAUSSIAN_KILLED_RUN = textwrap.dedent(
    """
    import os
    from headfields.models.gaussian_avatars import cpu_config
    from headfields.apps.runs import RunConfig, SubjectSource, train_run
    from headfields.training import TrainingConfig
    config = TrainingConfig(max_iterations={steps}, log_every=1, checkpoint_every={every}, checkpoint_minutes=None,
                            eval_every={eval_every}, eval_frames=1)
    run = RunConfig("gaussian_avatar", cpu_config(), config, SubjectSource(data={root!r}))
    train_run(run, {out!r}, "cpu", log=open(os.devnull, "w"))
    """
)


def _log_records(out: Path) -> list[dict]:
    records = []
    for line in (out / "log.jsonl").read_text().splitlines() if (out / "log.jsonl").exists() else []:
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:  # a line being written
            pass
    return records


def _logged_steps(out: Path, kind: str = "loss") -> list[int]:
    """The steps of ``out``'s log.jsonl lines holding ``kind`` ("loss": the training steps; "eval": evaluations)."""
    return [record["step"] for record in _log_records(out) if kind in record]


def test_a_gaussian_avatar_killed_between_checkpoints_loses_at_most_checkpoint_every_steps(video, tmp_path):
    root, out = str(video[0].root), tmp_path / "run"

    def script(steps: int) -> str:
        return GAUSSIAN_KILLED_RUN.format(root=root, out=str(out), steps=steps, every=CHECKPOINT_EVERY, eval_every=EVAL_EVERY)

    errors = tmp_path / "stderr.txt"  # a file, not a pipe: a full pipe would stop the run
    with open(errors, "w") as stderr:
        run = subprocess.Popen([sys.executable, "-c", script(10_000)], stdout=subprocess.DEVNULL, stderr=stderr)
    try:
        deadline = time.time() + 300  # a cold Warp cache builds the kernels first
        past = 2 * CHECKPOINT_EVERY + 1  # a step past a checkpoint (and an evaluation)
        while run.poll() is None and time.time() < deadline and max(_logged_steps(out), default=0) < past:
            time.sleep(0.01)  # until it is logged: kill the run there, between checkpoints
        run.send_signal(signal.SIGKILL)
        run.wait(timeout=30)
    finally:
        run.kill()
    assert run.returncode == -signal.SIGKILL, errors.read_text()[-2000:]
    done_steps = max(_logged_steps(out))  # a line a step: the steps the killed run finished
    reached = load_checkpoint(out / "checkpoint.pt")["step"]
    assert reached >= CHECKPOINT_EVERY and done_steps - reached <= CHECKPOINT_EVERY
    done = subprocess.run([sys.executable, "-c", script(reached + 3)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert load_checkpoint(out / "checkpoint.pt")["step"] == reached + 3
    # The log is the history of the weights: every step once, each evaluation once, none the interruption lost.
    assert _logged_steps(out) == list(range(1, reached + 4))
    evaluations = _logged_steps(out, "eval")  # one a step it ran at (one the kill cut short is not run again)
    assert evaluations == sorted(set(evaluations)) and set(evaluations) <= set(range(EVAL_EVERY, reached + 3, EVAL_EVERY))
    assert EVAL_EVERY in evaluations


# --- inputs: the silently wrong and the obscure crashes, now right or named -------------------------------------


def test_half_precision_model_files_are_refused(video):
    train_frames, _ = video
    with raises_naming("dtype"):
        load_model(train_frames.model_path, train_frames.model_type, dtype=torch.float16)
    with raises_naming("path"):
        load_model(None)


def test_a_float64_mesh_far_from_the_origin_answers_as_at_the_origin():
    """The BVH is built relative to each frame's centre: a head-sized sphere 1000 km away gets the faces,
    distances and signs it gets at the origin (at absolute float32 coordinates 67 of 200 signs flipped)."""
    from headfields.geometry import TriangleMesh, closest_point, ray_intersect, uv_sphere

    vertices, faces = uv_sphere(12, 24, radius=0.1, dtype=torch.float64)
    g = torch.Generator().manual_seed(0)
    points = 0.15 * (torch.rand(200, 3, generator=g, dtype=torch.float64) * 2 - 1)
    far = torch.tensor([1e6, -2e6, 5e5], dtype=torch.float64)
    near_q = closest_point(TriangleMesh(vertices, faces), points)
    far_q = closest_point(TriangleMesh(vertices + far, faces), points + far)
    assert torch.equal(far_q.sign, near_q.sign)
    torch.testing.assert_close(far_q.distance, near_q.distance, atol=1e-6, rtol=0)
    torch.testing.assert_close(far_q.point - far, near_q.point, atol=1e-6, rtol=0)
    dirs = -points / points.norm(dim=-1, keepdim=True)
    near_hit = ray_intersect(TriangleMesh(vertices, faces), points, dirs)
    far_hit = ray_intersect(TriangleMesh(vertices + far, faces), points + far, dirs)
    assert torch.equal(far_hit.hit, near_hit.hit) and torch.equal(far_hit.face, near_hit.face)
    # The float32 path too: its point comes back in world coordinates.
    mesh32 = TriangleMesh((vertices + 10.0).float(), faces)
    q32 = closest_point(mesh32, (points + 10.0).float())
    torch.testing.assert_close(q32.point.double() - 10.0, near_q.point, atol=1e-5, rtol=0)


def test_queries_beyond_float32s_reach_are_named_not_missed():
    from headfields.geometry import TriangleMesh, closest_point, uv_sphere

    mesh = TriangleMesh(*uv_sphere(6, 12))
    with raises_naming("points"):
        closest_point(mesh, torch.tensor([[2e19, 0.0, 0.0]]))
    with raises_naming("max_distance"):
        closest_point(mesh, torch.zeros(1, 3), max_distance="1")
    with raises_naming("mesh"):
        closest_point(None, torch.zeros(1, 3))


def test_unposing_where_no_skinning_weight_reaches_is_named(video):
    from headfields.heads import tracked_head

    train_frames, _ = video
    head = tracked_head(load_model(train_frames.model_path, train_frames.model_type), train_frames)
    with raises_naming("points"):
        head.unpose_points(torch.full((2, 3), 1e20), 0)


def test_compositing_an_overflowing_density_hides_only_its_own_ray():
    from headfields.renderers import PackedSamples, composite

    # Ray 0: one sample whose density x step overflows float32; ray 1: two ordinary samples after it.
    samples = PackedSamples(torch.tensor([0, 1, 1]), torch.tensor([0.0, 0.0, 1.0]), torch.tensor([10.0, 1.0, 2.0]), num_rays=2)
    density, rgb = torch.tensor([3e38, 0.5, 0.25]), torch.rand(3, 3, generator=torch.Generator().manual_seed(0))
    out = composite(samples, density, rgb)
    assert torch.isfinite(out.rgb).all() and torch.isfinite(out.opacity).all()
    assert float(out.opacity[0]) == 1.0
    alone = composite(
        PackedSamples(torch.tensor([0, 0]), torch.tensor([0.0, 1.0]), torch.tensor([1.0, 2.0]), 1), density[1:], rgb[1:]
    )
    torch.testing.assert_close(out.opacity[1:], alone.opacity)  # ray 1 as if ray 0 were not there
    torch.testing.assert_close(out.rgb[1:], alone.rgb)


def test_zero_direction_rays_are_refused_and_the_camera_centre_projects_finitely():
    from headfields.cameras import PinholeCameras, project_points
    from headfields.renderers import OccupancyGrid, stratified_samples

    origins, dirs = torch.zeros(2, 3), torch.tensor([[0.0, 0.0, 1.0], [0.0, 0.0, 0.0]])
    with raises_naming("dirs"):
        stratified_samples((origins, dirs), 0.1, 1.0, 4)
    with raises_naming("dirs"):
        OccupancyGrid(torch.tensor([[-1.0, -1, -1], [1, 1, 1]]), 8).march(origins, dirs)
    cameras = PinholeCameras(fx=10.0, fy=10.0, cx=8.0, cy=8.0, width=16, height=16, camera_to_world=torch.eye(4)[None])
    projection = project_points(cameras, torch.zeros(1, 3), 0)  # the camera's own centre
    assert torch.isfinite(projection.pixels).all() and float(projection.depth[0]) == 0.0


def test_shared_segmentation_labels_are_refused(video):
    train_frames, _ = video
    labels = dict(train_frames.segmentation_labels)
    first, second = list(labels)[:2]
    labels[second] = labels[first]
    with raises_naming("segmentation_labels"):
        dataclasses.replace(train_frames, segmentation_labels=labels)


def test_type_errors_on_arguments_are_named(video):
    with raises_naming("seed"):
        TrainingConfig(seed=None)
    with raises_naming("seed"):
        seed_everything(-1)
    from headfields.data import load_insta_dataset

    with raises_naming("root"):
        load_insta_dataset(None)


def _garbled_pickles():
    yield "huge length", b"\x80\x04\x8e" + (2**62).to_bytes(8, "little")  # BINBYTES8 of 4 EiB: MemoryError or truncated
    yield "reduce on a non-callable", b"\x80\x02K\x01)R."  # calls the int 1: TypeError
    yield "truncated", pickle.dumps({"v_template": [1.0, 2.0]})[:-3]
    yield "empty", b""


@pytest.mark.parametrize("name, data", list(_garbled_pickles()), ids=[n for n, _ in _garbled_pickles()])
def test_a_garbled_model_pickle_is_named(tmp_path, name, data):
    from headfields.parametric import read_model_file

    path = tmp_path / "FLAME_NEUTRAL.pkl"
    path.write_bytes(data)
    with pytest.raises(ValueError, match=f"path: {path}"):
        read_model_file(path)


def _png_header(width: int, height: int) -> bytes:
    import struct
    import zlib

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    return b"\x89PNG\r\n\x1a\n" + struct.pack(">I", len(ihdr)) + chunk + struct.pack(">I", zlib.crc32(chunk))


def _copy_capture(video, tmp_path):
    import shutil

    train_frames, _ = video
    root = tmp_path / "capture"
    shutil.copytree(train_frames.root, root)
    return root


def _edit_transforms(root, edit):
    import json

    for path in root.glob("transforms*.json"):
        data = json.loads(path.read_text())
        edit(data)
        path.write_text(json.dumps(data))


def test_a_decompression_bomb_is_named(video, tmp_path):
    from headfields.data import load_insta_dataset

    root = _copy_capture(video, tmp_path)
    _edit_transforms(root, lambda d: d["frames"][0].update(file_path="images/bomb.png"))
    (root / "images" / "bomb.png").write_bytes(_png_header(30_000, 30_000))  # 900 Mpx declared
    with pytest.raises(ValueError, match="bomb.png: cannot read the image"):
        load_insta_dataset(root, "train")


@pytest.mark.parametrize("key, outside", [("file_path", "../../outside.png"), ("exp_path", "/etc/passwd")])
def test_the_loader_stays_inside_the_capture(video, tmp_path, key, outside):
    from headfields.data import load_insta_dataset

    root = _copy_capture(video, tmp_path)
    (tmp_path / "secret.txt").write_text("the secret is xyzzy\n" * 3)
    _edit_transforms(root, lambda d: d["frames"][0].update({key: outside}))
    with pytest.raises(ValueError, match=rf"frames\[0\]\.{key}: expected a path inside the dataset folder"):
        load_insta_dataset(root, "train")
    # Allowed outside, a file that is not what it claims to be is named, and its content never echoed.
    root = _copy_capture(video, tmp_path / "again")
    _edit_transforms(root, lambda d: d["frames"][0].update(exp_path=str(tmp_path / "secret.txt")))
    with pytest.raises(ValueError) as error:
        load_insta_dataset(root, "train", allow_outside_root=True)
    assert "secret.txt" in str(error.value) and "xyzzy" not in str(error.value)  # (not a number: pytest-42 paths)


@pytest.mark.parametrize("model", ["insta", "gaussian_avatar"])
def test_a_refused_rerun_leaves_the_finished_run_byte_for_byte(tiny_video, tmp_path, model):
    """Issue 77's lost data: a rerun into a finished --out with another seed is refused by the checkpoint's
    fingerprint, and every file of the run is as it was (config.json was replaced before the check), so the run
    still loads."""
    from headfields.apps.runs import RunConfig, SubjectSource, load_run, train_run
    from headfields.models.gaussian_avatars import cpu_config

    recipe = TINY_INSTA if model == "insta" else cpu_config(sh_degree=0)
    training = TrainingConfig(max_iterations=2, log_every=1, eval_every=0, eval_frames=1)
    if model == "insta":  # the Gaussians draw a whole frame a step: they refuse a ray count
        training = dataclasses.replace(training, rays_per_batch=128)
    source = SubjectSource(data=str(tiny_video[0].root))
    out = tmp_path / "run"
    train_run(RunConfig(model, recipe, training, source), out, "cpu", log=io.StringIO())
    before = {p.relative_to(out): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}
    again = RunConfig(model, recipe, dataclasses.replace(training, seed=1), source)
    with pytest.raises(CheckpointError, match=r"training: seed 0 -> 1\); give another --out"):
        train_run(again, out, "cpu", log=io.StringIO())
    after = {p.relative_to(out): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}
    assert after.keys() == before.keys() and all(after[k] == before[k] for k in before)
    load_run(out, "cpu")


def test_the_gaussian_steps_refuse_training_fields_they_would_ignore(tiny_video, tmp_path):
    """Issues 76, 77: every model honours a training field or refuses it by name. The Gaussian avatar's steps draw a
    whole frame each and change the number of Gaussians: a ray count or a weights' average is refused before anything
    is written (its evaluation and checkpoint schedules are the shared loop's, honoured)."""
    from headfields.apps.runs import RunConfig, SubjectSource, train_run
    from headfields.models.gaussian_avatars import cpu_config

    training = TrainingConfig(max_iterations=2, eval_every=5, rays_per_batch=128, ema_decay=0.9)
    run = RunConfig("gaussian_avatar", cpu_config(sh_degree=0), training, SubjectSource(data=str(tiny_video[0].root)))
    with pytest.raises(ValueError, match=r"does not use rays_per_batch=128, ema_decay=0\.9: leave them at their defaults"):
        train_run(run, tmp_path / "run", "cpu", log=io.StringIO())
    assert not (tmp_path / "run").exists()
