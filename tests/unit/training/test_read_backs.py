"""Host synchronisations in INSTA's training step (issue 39), found on the CPU by a spy on the torch calls that
read a value back from a CUDA device (tests/read_backs.py).

With fixed shapes (``TrainingConfig.fixed_shapes``), the step's drawing of rays, the march, early termination,
the field, compositing, the loss, the optimiser and the occupancy refresh read nothing back; the sample counts
and the finite-loss check read host copies two steps later (``HOST_READS``). A read-back anywhere fails the test."""

import torch
from read_backs import CPU_ONLY, ReadBackSpy
from tiny_configs import TINY_GRID

import headfields.training.loop as loop
from headfields import kernels
from headfields.checks import check_finite
from headfields.models.insta import Insta, paper_config
from headfields.parametric import load_model
from headfields.training import TrainingConfig, train

# (call, module:function) -> why it is not a read-back from the device
HOST_READS = {
    # The counts and the loss of the step two before, copied to pinned host memory without waiting: by the time
    # they are read the GPU has finished that step, so the read waits for nothing (on the CPU test the copy is the
    # tensor itself, which the spy cannot tell from a device tensor).
    ("tolist", "training/host_copy.py:read"): "a host copy made two steps earlier",
}


def test_the_spy_sees_a_read_back_in_the_library():
    with ReadBackSpy() as spy:
        check_finite("x", torch.ones(3))  # bool(bad.any())
        torch.ones(3).sum().item()  # the test's own: not the library's
    assert spy.sites == {("__bool__", "checks.py:check_finite"): 1}


def test_the_spy_leaves_out_the_cpu_s_own_reads():
    """CPU_ONLY names functions the library asks on the CPU only: each exists, and its reads are not counted."""
    import importlib

    for site in CPU_ONLY:
        path, function = site.split(":")
        module = importlib.import_module("headfields." + path.removesuffix(".py").replace("/", "."))
        assert callable(getattr(module, function)), site
    with ReadBackSpy() as spy:
        kernels.in_local_order(torch.rand(100, 3))
    assert not spy.sites


def test_insta_s_step_reads_nothing_back(tiny_video, tmp_path, monkeypatch):
    """With the sample budget, early termination and fixed shapes on."""
    train_frames, eval_frames = tiny_video
    parametric = load_model(train_frames.model_path, train_frames.model_type)
    # A 32^3 grid, not the paper's 128^3: its refreshes (every cell through the field) would take most of the test.
    recipe = paper_config(hash_grid=TINY_GRID, warmup_steps=2, occupancy_warmup=3, occupancy_resolution=32)
    model = Insta(parametric, train_frames.segmentation_labels, recipe)
    spy, step = ReadBackSpy(), loop._Loop.train_step

    def spied(self):  # after the first steps: the grid past its warm-up, refreshed from its occupied cells at step 16
        if self.step < 6:
            return step(self)
        with spy:
            return step(self)

    monkeypatch.setattr(loop._Loop, "train_step", spied)
    config = TrainingConfig(
        max_iterations=20, rays_per_batch=128, samples_per_batch=2048, early_stop=1e-4, fixed_shapes=True,
        eval_every=0, checkpoint_every=0, log_every=100,
    )  # fmt: skip
    train(model, train_frames, eval_frames, tmp_path / "run", config, log=None)
    assert spy.sites, "the spy saw no step"
    unexpected = {site: n for site, n in spy.sites.items() if site not in HOST_READS}
    assert not unexpected, f"read-backs:\n{spy.report()}"
    assert spy.sites[("tolist", "training/host_copy.py:read")] >= 2  # the counts and the loss, each step
