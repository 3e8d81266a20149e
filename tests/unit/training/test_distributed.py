"""Data-parallel training: two CPU ranks (gloo) running the shared loop on INSTA hold the same weights as each
other and as one process trained on the whole batch, and only rank 0 writes; without a process group the loop
is the plain one."""

import dataclasses
import io
import json
import time
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from tiny_configs import TINY_INSTA

from headfields.data import load_insta_dataset
from headfields.heads import tracked_head
from headfields.models.insta import Insta
from headfields.parametric import load_model
from headfields.renderers import RenderContext
from headfields.training import TrainingConfig, build_optimizer, distributed, ray_batch, set_learning_rate, train
from headfields.training.checkpoints import load_checkpoint

RANKS = 2
STEPS = 5
TIMEOUT_S = 120  # the two ranks together take a few seconds; a hang fails instead of blocking the suite

# A tiny INSTA whose occupancy grid is refreshed every other step (steps 0, 2, 4). The depth prior is off: it is
# a mean over the rays that hit the mesh, which differ between the ranks' shares, so only the photometric mean
# makes a two-rank step exactly the one-process step.
TINY = dataclasses.replace(TINY_INSTA, occupancy_every=2, warmup_steps=STEPS + 1, depth_weight=0.0)
CONFIG = TrainingConfig(max_iterations=STEPS, rays_per_batch=128, eval_every=0, checkpoint_every=0, log_every=1, eval_frames=1)


class _Recording(Insta):
    """INSTA that keeps the loss of each of its training steps (on a rank: the loss of its share)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.losses: list[float] = []

    def before_step(self, step, head):
        super().before_step(step, head)
        if distributed.rank() == 1:  # a refresh that differs between ranks: every rank must march rank 0's grid
            self.sampler.grid.binary.fill_(True)

    def training_step(self, batch, step):
        result = super().training_step(batch, step)
        self.losses.append(float(result.loss.detach()))
        return result


@dataclasses.dataclass
class Runs:
    folder: Path  # out0, out1 (the ranks' out folders), single (the one-process run's)
    ranks: list[dict]  # per rank: state, losses (of its share), log, metrics, bad (the error for 129 rays)
    single: dict  # the one-process run: state, losses, log, metrics
    plain: _Recording  # the loop written out


def _model(frames, seed: int) -> _Recording:
    torch.manual_seed(seed)
    return _Recording(load_model(frames.model_path, frames.model_type), frames.segmentation_labels, TINY)


def _logged_losses(folder: Path) -> list[float]:
    return [json.loads(line)["loss"] for line in (folder / "log.jsonl").read_text().splitlines()]


def _rank(rank: int, root: Path, folder: Path) -> None:
    """One rank (a spawned process): train, then save what the test compares under ``folder``."""
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{folder}/rendezvous", rank=rank, world_size=RANKS)
    try:
        train_frames, eval_frames = load_insta_dataset(root, "train"), load_insta_dataset(root, "test")
        model = _model(train_frames, seed=rank)  # different weights per rank: training must start from rank 0's
        try:  # 129 rays cannot be shared equally by two ranks
            train(model, train_frames, eval_frames, folder / f"bad{rank}", dataclasses.replace(CONFIG, rays_per_batch=129))
            bad = "no error"
        except ValueError as error:
            bad = str(error)
        log = io.StringIO()
        metrics = train(model, train_frames, eval_frames, folder / f"out{rank}", CONFIG, log=log)
        state = {k: v.clone() for k, v in model.state_dict().items()}
        result = {"state": state, "losses": model.losses, "log": log.getvalue(), "metrics": metrics, "bad": bad}
        torch.save(result, folder / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def runs(tiny_video, tmp_path_factory):
    """The two-rank run (each rank's result), the one-process run on the same total batch, and the loop written out."""
    train_frames, eval_frames = tiny_video
    folder = tmp_path_factory.mktemp("ddp")
    processes = mp.spawn(_rank, args=(train_frames.root, folder), nprocs=RANKS, join=False)
    deadline = time.monotonic() + TIMEOUT_S
    while not processes.join(timeout=1):  # raises if a rank failed, with its traceback
        if time.monotonic() > deadline:
            for p in processes.processes:
                p.kill()
            pytest.fail(f"the {RANKS} ranks did not finish in {TIMEOUT_S} s")
    ranks = [torch.load(folder / f"rank{r}.pt", weights_only=True) for r in range(RANKS)]

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the ranks: the same summation order in every kernel
    try:
        model, log = _model(train_frames, seed=0), io.StringIO()
        metrics = train(model, train_frames, eval_frames, folder / "single", CONFIG, log=log)
        single = {"state": model.state_dict(), "losses": model.losses, "log": log.getvalue(), "metrics": metrics}
        plain = _plain_loop(train_frames)
    finally:
        torch.set_num_threads(threads)
    return Runs(folder, ranks, single, plain)


def _plain_loop(train_frames) -> _Recording:
    """The one-process loop written out: the model's own step on the whole batch, no wrapper."""
    model = _model(train_frames, seed=0)
    optimizer = build_optimizer(model, model.optimization)
    generator = torch.Generator().manual_seed(CONFIG.seed)
    head = tracked_head(model.parametric, train_frames)
    for step in range(CONFIG.max_iterations):
        set_learning_rate(optimizer, model.optimization, step)
        model.before_step(step, head)
        batch = ray_batch(train_frames, CONFIG.rays_per_batch, generator, torch.device("cpu"), head=head)
        batch.context = RenderContext(torch.Generator().manual_seed(CONFIG.seed + step))
        loss = model.training_step(batch, step).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return model


def test_both_ranks_hold_identical_weights_and_buffers(runs):
    (zero, one), single = runs.ranks, runs.single
    assert zero["state"].keys() == one["state"].keys()
    for name, value in zero["state"].items():  # parameters, the occupancy grid, FLAME's buffers
        torch.testing.assert_close(one["state"][name], value, rtol=0, atol=1e-6, msg=name)
    # The grid was refreshed from the trained field (it starts all-zero), so keeping it equal meant something.
    assert single["state"]["sampler.grid.occupancy"].abs().sum() > 0


def test_two_ranks_match_one_process_on_the_same_total_batch(runs):
    (zero, one), single = runs.ranks, runs.single
    assert len(zero["losses"]) == len(one["losses"]) == len(single["losses"]) == STEPS
    # Equal shares of a mean loss: the mean over ranks of each rank's loss is the whole batch's loss.
    mean = [(a + b) / 2 for a, b in zip(zero["losses"], one["losses"], strict=True)]
    assert mean == pytest.approx(single["losses"], rel=1e-4)
    assert zero["losses"] != pytest.approx(one["losses"], rel=1e-3)  # the ranks did render different rays
    # What rank 0 logs (log.jsonl, every step) is that mean; the other rank writes no log.
    assert _logged_losses(runs.folder / "out0") == pytest.approx(single["losses"], rel=1e-4)
    assert not (runs.folder / "out1" / "log.jsonl").exists()
    # Averaged gradients, the same Adam steps: the one-process weights, and the same moving average of them.
    for name, value in single["state"].items():
        torch.testing.assert_close(zero["state"][name], value, rtol=1e-4, atol=1e-5, msg=name)
    ema = [load_checkpoint(runs.folder / run / "checkpoint.pt")["ema"] for run in ("out0", "single")]
    for name, value in ema[1]["shadow"].items():
        torch.testing.assert_close(ema[0]["shadow"][name], value, rtol=1e-4, atol=1e-5, msg=f"ema: {name}")


def test_only_rank_zero_writes_and_every_rank_returns_its_metrics(runs):
    folder, (zero, one), single = runs.folder, runs.ranks, runs.single
    assert not (folder / "out1").exists() and one["log"] == ""
    written = sorted(p.relative_to(folder / "out0").as_posix() for p in (folder / "out0").rglob("*") if p.is_file())
    expected = sorted(p.relative_to(folder / "single").as_posix() for p in (folder / "single").rglob("*") if p.is_file())
    assert written == expected and "metrics.json" in written and "checkpoint.pt" in written
    assert one["metrics"] == zero["metrics"]
    assert zero["metrics"]["iterations"] == STEPS
    assert zero["metrics"]["psnr"] == pytest.approx(single["metrics"]["psnr"], abs=1e-3)


def test_rays_per_batch_must_split_evenly_across_ranks(runs):
    for result in runs.ranks:
        assert result["bad"].startswith("rays_per_batch:"), result["bad"]


def test_without_a_process_group_train_is_the_plain_loop(runs):
    single, plain = runs.single, runs.plain
    assert not dist.is_initialized() and distributed.world_size() == 1 and distributed.rank() == 0
    assert single["losses"] == plain.losses
    for name, value in plain.state_dict().items():
        torch.testing.assert_close(single["state"][name], value, rtol=0, atol=0, msg=name)
