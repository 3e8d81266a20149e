"""The training step as one CUDA graph (``TrainingConfig.cuda_graph``, issue 78): what it refuses, on any machine; on
CUDA, that INSTA's step is captured and replayed, and trains as the eager step does. (That a step is the same from step
to step in every way a replay would miss is checked on the CPU by ``tools/step_anatomy.py``'s replay signatures:
tests/e2e/test_step_anatomy.py.)"""

import contextlib
import dataclasses

import pytest
import torch
from tiny_configs import TINY_INSTA

from headfields.models.insta import Insta
from headfields.parametric import load_model
from headfields.training import TrainingConfig, train

from helpers import eager_and_graphed, raises_naming

CUDA = torch.cuda.is_available()


def _config(**fields) -> TrainingConfig:
    base = dict(
        max_iterations=3, rays_per_batch=64, samples_per_batch=1024, early_stop=1e-4, fixed_shapes=True,
        cuda_graph=True, eval_every=0, checkpoint_every=0, log_every=1,
    )  # fmt: skip
    return TrainingConfig(**{**base, **fields})


def _insta(frames) -> Insta:  # (its grid past its warm-up soon: a graph from step 8)
    config = dataclasses.replace(TINY_INSTA, occupancy_warmup=8)
    return Insta(load_model(frames.model_path, frames.model_type), frames.segmentation_labels, config)


def test_cuda_graph_is_checked():
    with raises_naming("cuda_graph"):
        _config(fixed_shapes=False)  # a graph replays one shape
    with raises_naming("cuda_graph"):
        _config(cuda_graph=1)


def test_a_graph_is_refused_where_it_cannot_be_taken(tiny_video, tmp_path):
    train_frames, eval_frames = tiny_video
    model = _insta(train_frames)
    with raises_naming("cuda_graph"):
        train(model, train_frames, eval_frames, tmp_path / "cpu", _config(), device="cpu", log=None)
    assert not (tmp_path / "cpu").exists()  # refused before the run folder was made

    class Unphased(Insta):  # a model that does not say what its step decides by the step number
        graph_phase = None

    unphased = Unphased(
        load_model(train_frames.model_path, train_frames.model_type), train_frames.segmentation_labels, TINY_INSTA
    )
    with raises_naming("cuda_graph"):
        train(unphased, train_frames, eval_frames, tmp_path / "unphased", _config(), device="cpu", log=None)


def test_insta_s_graph_phase_changes_where_its_step_does():
    config = dataclasses.replace(TINY_INSTA, warmup_steps=5, occupancy_warmup=3)
    phase = Insta.graph_phase.__get__(type("M", (), {"config": config})())
    assert phase(2) is None  # the grid's warm-up: no graph yet
    assert phase(3) is False and phase(5) is True and phase(100) is True


@pytest.mark.skipif(not CUDA, reason="no CUDA device")
def test_insta_s_step_is_captured_replayed_and_trains_as_the_eager_step_on_cuda(tiny_video, tmp_path, monkeypatch):
    train_frames, eval_frames = tiny_video

    def train_one(graphed: bool) -> dict:
        torch.manual_seed(0)
        config = _config(max_iterations=60, cuda_graph=graphed)
        return train(_insta(train_frames), train_frames, eval_frames, tmp_path / str(graphed), config, device="cuda", log=None)

    graph, runs = eager_and_graphed(monkeypatch, train_one)
    assert graph.captures >= 1 and not graph.failed and graph.graphs
    # Replayed steps run the eager step's kernels (the hash grid's atomic gradient sums in any order on CUDA):
    # the two runs score alike.
    assert abs(runs[True]["psnr"] - runs[False]["psnr"]) < 0.5, (runs[True]["psnr"], runs[False]["psnr"])


def test_graphs_are_kept_by_key_and_the_least_recently_replayed_goes(monkeypatch):
    """A key that returns replays the graph captured for it (no warm-up, no capture again); past ``GRAPHS_KEPT`` keys
    the least recently replayed graph goes. CUDA's graph, streams and capture are faked here (the capture itself runs
    on a GPU: the test above); the keeping is the StepGraph's own."""
    from headfields.training import step_graph

    class Graph:  # a capture records the step's result; a replay hands it back
        def register_generator_state(self, generator):
            pass

        def replay(self):
            replays.append(self)

        def pool(self):
            return 0

    replays, steps = [], []
    monkeypatch.setattr(torch.cuda, "CUDAGraph", Graph)
    monkeypatch.setattr(torch.cuda, "stream", lambda stream: contextlib.nullcontext())
    monkeypatch.setattr(torch.cuda, "graph", lambda graph, stream=None: contextlib.nullcontext())
    graphs = step_graph.StepGraph.__new__(step_graph.StepGraph)
    optimizer = torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))])
    graphs.device, graphs.optimizer, graphs.generators, graphs.stream = torch.device("cpu"), optimizer, [], None
    graphs.graphs, graphs.warm, graphs.failed, graphs.captures = step_graph.OrderedDict(), step_graph.OrderedDict(), False, 0
    graphs.rates = [torch.zeros(())]
    monkeypatch.setattr(graphs, "_on_stream", lambda step: step())

    def run(key):
        return graphs(key, lambda: steps.append(key) or key)

    warm = step_graph.WARMUP_STEPS
    keys = ["a"] * (warm + 2) + ["b"] * (warm + 1) + ["a"] * 2
    assert [run(k) for k in keys] == keys  # each step's outputs, eager or replayed
    assert graphs.captures == 2 and steps == ["a"] * (warm + 1) + ["b"] * (warm + 1)  # "a" returned: replayed
    for key in "cde"[: step_graph.GRAPHS_KEPT - 1]:  # one key too many: "b" (replayed longest ago) goes, "a" stays
        for _ in range(warm + 1):
            run(key)
    kept = list(graphs.graphs)
    assert "b" not in kept and "a" in kept and len(kept) == step_graph.GRAPHS_KEPT, kept
    # Keys that alternate (a budget moving between two ray counts) each warm up in turn, then both replay.
    captured, ran = graphs.captures, len(steps)
    for key in "xy" * (warm + 3):
        run(key)
    assert graphs.captures == captured + 2 and len(steps) == ran + 2 * (warm + 1)
