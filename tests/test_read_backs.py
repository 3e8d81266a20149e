"""Host synchronisations in INSTA's training step (issue 39), found on the CPU by a spy on the torch calls that
read a value back from a CUDA device (tests/read_backs.py).

The step's drawing of rays, the field, compositing, the loss, the optimiser and the occupancy refresh read
nothing back. What still does is listed in ``REMAINING``, each with the work that removes it; a read-back
anywhere else fails the test, so none comes back unnoticed."""

import torch
from read_backs import ReadBackSpy
from tiny_configs import TINY_GRID

import headfields.training.loop as loop
from headfields.checks import check_finite
from headfields.models.insta import Insta, paper_config
from headfields.parametric import load_model
from headfields.training import TrainingConfig, train

# (call, module:function) -> why it is still there
REMAINING = {
    # The march's sample count sizes its packed output (nerfacc's too); a march into a buffer of the sample
    # budget's size with a device-side count (instant-ngp's) removes it.
    ("__int__", "renderers/occupancy.py:march"): "the packed samples' count",
    # Early termination compacts the samples in front of the threshold: their number sizes the field's batch.
    ("__getitem__[mask]", "renderers/samples.py:select"): "early termination's compaction",
    ("__getitem__[mask]", "renderers/volume.py:render_nerf"): "early termination's compaction",
    # A non-finite loss stops the run before the optimiser spoils the weights.
    ("__bool__", "training/loop.py:train_step"): "the finite-loss check",
}


def test_the_spy_sees_a_read_back_in_the_library():
    with ReadBackSpy() as spy:
        check_finite("x", torch.ones(3))  # bool(bad.any())
        torch.ones(3).sum().item()  # the test's own: not the library's
    assert spy.sites == {("__bool__", "checks.py:check_finite"): 1}


def test_insta_s_step_reads_back_only_where_listed(tiny_video, tmp_path, monkeypatch):
    """With the sample budget and early termination on: every part of the step without them runs too."""
    train_frames, eval_frames = tiny_video
    parametric = load_model(train_frames.model_path, train_frames.model_type)
    recipe = paper_config(hash_grid=TINY_GRID, warmup_steps=2, occupancy_warmup=3)
    model = Insta(parametric, train_frames.segmentation_labels, recipe)
    spy, step = ReadBackSpy(), loop._Loop.train_step

    def spied(self):  # after the first steps: the grid past its warm-up, refreshed from its occupied cells at step 16
        if self.step < 6:
            return step(self)
        with spy:
            return step(self)

    monkeypatch.setattr(loop._Loop, "train_step", spied)
    config = TrainingConfig(
        max_iterations=20, rays_per_batch=128, samples_per_batch=2048, early_stop=1e-4, eval_every=0,
        checkpoint_every=0, log_every=100,
    )  # fmt: skip
    train(model, train_frames, eval_frames, tmp_path / "run", config, log=None)
    assert spy.sites, "the spy saw no step"
    unexpected = {site: n for site, n in spy.sites.items() if site not in REMAINING}
    assert not unexpected, f"read-backs outside the listed ones:\n{spy.report()}"
