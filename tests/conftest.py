"""Shared fixtures. The tests mirror the package's tiers: ``unit/<package>/`` checks one part of headfields against
independent truth, ``e2e/`` runs what a user runs (the commands, a killed and resumed run, the notebook, the
benchmarks and tools), marked ``e2e`` (``pytest -m "not e2e"`` leaves them out), and ``project/`` checks the house
(the layer contract, module sizes, the README). The jaxtyping runtime checker is on for every test (see pyproject's
pytest addopts) but those marked ``unchecked``: end-to-end runs of functions the unit tests check
(helpers.shapes_unchecked)."""

import contextlib
import importlib
import os
import sys
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, settings

from helpers import shapes_unchecked

# Warp compiles a module on first use (seconds), so no per-example deadline; CI runs fewer examples.
settings.register_profile("dev", deadline=None, max_examples=60, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("ci", deadline=None, max_examples=30, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("ci" if os.environ.get("CI") else "dev")

# pytest-xdist's workers share the cores: each runs torch, and the Warp launches that follow torch's thread count
# (headfields.kernels.num_cpu_threads), on its share. Two workers each spinning an OpenMP team as wide as the machine
# ran the heaviest tests up to 20x slower (tests/unit/models/test_nphm.py's prior training: 7 s alone, 151 s under -n 2).
_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
if _WORKERS > 1:
    _CORES = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    _THREADS = max(1, _CORES // _WORKERS)
    torch.set_num_threads(_THREADS)
    # ... and so do the processes the tests start (the CLI, examples, the notebook's kernel, gpu.py's steps): with a
    # team each as wide as the machine, the notebook took 50-58 s beside the other worker against 18 s alone.
    os.environ["OMP_NUM_THREADS"] = str(_THREADS)

# Every device test also runs on CUDA; on a machine without a GPU those cases show as skipped (see -ra).
DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device"))]


E2E = Path(__file__).resolve().parent / "e2e"


def pytest_configure(config):
    config.addinivalue_line("markers", "unchecked: run without the jaxtyping runtime checker (an end-to-end run)")
    config.addinivalue_line("markers", "e2e: a test under tests/e2e/, running what a user runs (minutes, not seconds)")


def pytest_collection_modifyitems(config, items):
    for item in items:
        if E2E in Path(str(item.path)).resolve().parents:
            item.add_marker(pytest.mark.e2e)


@pytest.fixture(autouse=True)
def _unchecked_when_marked(request):
    with shapes_unchecked() if request.node.get_closest_marker("unchecked") else contextlib.nullcontext():
        yield


@pytest.fixture
def tool_script(monkeypatch):
    """``tool_script(name)``: tools/NAME.py, one of the project's instruments, imported as a module (its own imports
    live beside it), forgotten after the test. The benchmarks under benchmarks/ are never imported by a test: a test
    of one runs it."""
    imported = []

    def load(name: str):
        monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1] / "tools"))
        imported.append(name)
        return importlib.import_module(name)

    yield load
    for name in imported:
        sys.modules.pop(name, None)


@pytest.fixture
def host_sync_spy(tool_script):
    """tools/host_syncs.py's ``HostSyncSpy``: the read-backs from a CUDA device and the copies to it that library calls
    would make, seen on the CPU (inside ``headfields.device_paths.cuda_paths()``, on CUDA's paths)."""
    return tool_script("host_syncs").HostSyncSpy


@pytest.fixture(params=DEVICES)
def device(request) -> torch.device:
    # "cuda" with its index, as tensors report it, so that `x.device == device` holds.
    return torch.device("cuda", torch.cuda.current_device()) if request.param == "cuda" else torch.device(request.param)


@pytest.fixture
def box_mesh(device):
    from headfields.geometry import TriangleMesh, box

    return TriangleMesh(*box(device=device))


@pytest.fixture(scope="session")
def tiny_video(tmp_path_factory):
    """A tiny synthetic video for model tests: (train, test) FrameSets of 5 and 2 frames at 16 px."""
    from headfields.data import load_insta_dataset
    from headfields.synthetic import SyntheticVideoConfig, make_synthetic_video

    config = SyntheticVideoConfig(num_frames=8, num_val=1, num_test=2, resolution=16, episode_frames=2)
    root = make_synthetic_video(tmp_path_factory.mktemp("video"), config)
    return load_insta_dataset(root, "train"), load_insta_dataset(root, "test")


@pytest.fixture(scope="session")
def tiny_orbit_video(tmp_path_factory):
    """A tiny 360-degree video (the SMPL-X bust turning once): (train, test) FrameSets of 13 and 4 frames at 16 px."""
    from headfields.data import load_insta_dataset
    from headfields.synthetic import SyntheticVideoConfig, make_synthetic_video

    config = SyntheticVideoConfig(
        num_frames=18, num_val=1, num_test=4, resolution=16, episode_frames=3, orbit=True, orbit_turns=1.0
    )
    root = make_synthetic_video(tmp_path_factory.mktemp("orbit"), config)
    return load_insta_dataset(root, "train"), load_insta_dataset(root, "test")


def _tiny_run(folder, model: str, recipe, video_root, **training):
    """A run of ``model`` trained a few steps on the tiny video at ``video_root``, written to ``folder`` (config.json,
    checkpoint, log.jsonl, metrics.json), and its RunConfig."""
    from headfields.apps.runs import RunConfig, SubjectSource, train_run
    from headfields.training import TrainingConfig

    fields = dict(max_iterations=6, rays_per_batch=128, eval_every=3, log_every=2, eval_frames=1, render_chunk=4096)
    run = RunConfig(model, recipe, TrainingConfig(**{**fields, **training}), SubjectSource(data=str(video_root)))
    train_run(run, folder, "cpu", log=open(os.devnull, "w"))
    return folder, run


@pytest.fixture(scope="session")
def tiny_insta_run(tmp_path_factory, tiny_video):
    """(folder, RunConfig) of INSTA (tests/tiny_configs.TINY_INSTA) trained 6 steps on the tiny video."""
    from tiny_configs import TINY_INSTA

    return _tiny_run(tmp_path_factory.mktemp("insta_run"), "insta", TINY_INSTA, tiny_video[0].root)


@pytest.fixture(scope="session")
def tiny_neus_run(tmp_path_factory, tiny_video):
    """(folder, RunConfig) of the triangle-frame NeuS mix (an SDF model) trained 6 steps on the tiny video."""
    from headfields.models.neus_avatar import NeusAvatarConfig
    from headfields.renderers import NeusSampler

    recipe = NeusAvatarConfig(sampler=NeusSampler(coarse=16, rounds=1, per_round=8, padding=0.03), eikonal_points=64)
    return _tiny_run(tmp_path_factory.mktemp("neus_run"), "mix_triangle_neus", recipe, tiny_video[0].root)


@pytest.fixture(scope="session")
def tiny_gaussian_run(tmp_path_factory, tiny_video):
    """(folder, RunConfig) of GaussianAvatars (its CPU recipe) trained 6 steps on the tiny video."""
    from headfields.models.gaussian_avatars import cpu_config
    from headfields.training import TrainingConfig

    # Its own steps take a whole frame each: the ray batch and chunk stay at their defaults (the loop refuses others).
    rays = dict(rays_per_batch=TrainingConfig.rays_per_batch, render_chunk=TrainingConfig.render_chunk)
    return _tiny_run(tmp_path_factory.mktemp("gaussian_run"), "gaussian_avatar", cpu_config(), tiny_video[0].root, **rays)


@pytest.fixture
def availability(monkeypatch):
    """``backends.cpu.wide_bvh.available()`` decided afresh in the test (it is decided once a process, from the
    HEADFIELDS_WIDE_BVH switch, unset here), and again after it."""
    from headfields.backends.cpu import wide_bvh

    monkeypatch.delenv(wide_bvh.WIDE_BVH_SWITCH, raising=False)
    wide_bvh.available.cache_clear()
    yield
    wide_bvh.available.cache_clear()
