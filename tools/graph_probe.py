"""Whether INSTA's training step, past the occupancy grid's warm-up, can be captured as one CUDA graph, and what
stops it: issue 78's graph, probed on a lent GPU before the library takes it (``tools/gpu_kit/session.sh``).

    python tools/graph_probe.py                         # INSTA's paper recipe, steps after 300, as the loop runs them
    python tools/graph_probe.py --attempt prepared      # the loop's generator registered with the graph, Adam capturable

The model and its small synthetic video are ``step_anatomy.py``'s (2^14 samples a step, early stop 1e-4, fixed
shapes: ``tools/step_anatomy.py --warmup 300`` counts one shape signature over 16 steps there). After ``--warmup``
steps (counted by torch's optimiser-step hook, the loop found on the call stack: the library is not touched) the loop's
own ``train_step`` is run three more times on a side stream (torch's warm-up before a capture), then captured whole
under ``torch.cuda.graph``: the batch, the march, the field, the loss, backward, Adam and the EMA. The
probe prints, as JSON, whether the capture held; if not, the error and the innermost library line it came from (the
next thing a graph needs changed); if so, a replay's milliseconds beside an eager step's (medians of ``--repeats``).
``plain`` captures the loop as it is; ``prepared`` first does what a graph mode would have to do outside the library's
step: the loop's generator registered with the graph (``CUDAGraph.register_generator_state``) and Adam's
``capturable`` set. One attempt a process: a failed capture can leave the device unusable for a second.

Without CUDA the window's step runs uncaptured and the probe says so (the staging is checked; nothing is learnt).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import tempfile
import traceback
from pathlib import Path

import torch
from torch.optim.optimizer import register_optimizer_step_post_hook

import headfields.training.loop as loop
from headfields.training import train

from frame_variants import timed
from step_anatomy import build

ATTEMPTS = ("plain", "prepared")
SIDE_STREAM_STEPS = 3  # eager steps on a side stream before a capture (torch's CUDA graph recipe)


class _Done(Exception):
    """The probe has its answer: the run stops there."""


def _where(error: BaseException) -> str:
    """The innermost headfields line in ``error``'s traceback (or its innermost line)."""
    frames = traceback.extract_tb(error.__traceback__)
    ours = [f for f in frames if "/headfields/" in f.filename] or frames
    if not ours:
        return ""
    f = ours[-1]
    return f"{f.filename.split('/headfields/')[-1]}:{f.lineno} ({f.name}): {f.line}"


def _median_ms(run, repeats: int) -> float:
    """The median of ``repeats`` timings of ``run()`` (frame_variants.timed: the GPU's queue drained around each)."""
    return statistics.median(1e3 * timed(run) for _ in range(repeats))


def _capture(state: loop._Loop, step, attempt: str, repeats: int) -> dict:
    """Capture one of ``state``'s training steps (``step``, the loop's own) as a CUDA graph."""
    if not torch.cuda.is_available():
        step(state)
        return {"captured": False, "reason": "no CUDA device: the step ran uncaptured (the staging checked, no graph)"}
    if attempt == "prepared":
        for group in state.optimizer.param_groups:
            group["capturable"] = True
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(SIDE_STREAM_STEPS):
            step(state)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    if attempt == "prepared":
        graph.register_generator_state(state.generator)
    try:
        with torch.cuda.graph(graph):
            step(state)
    except Exception as error:  # the answer sought: what stopped the capture
        return {"captured": False, "error": f"{type(error).__name__}: {error}"[:3000], "where": _where(error)}
    return {
        "captured": True,
        "replay_ms": _median_ms(graph.replay, repeats),
        "eager_ms": _median_ms(lambda: step(state), repeats),
    }


def probe(
    attempt: str = "plain",
    warmup: int = 300,
    samples: int = 1 << 14,
    resolution: int = 32,
    repeats: int = 20,
    overrides: dict | None = None,
) -> dict:
    """Train INSTA's paper recipe ``warmup`` steps, then try to capture the next as a CUDA graph (see the module).
    ``overrides``: recipe fields set (as ``step_anatomy.anatomy``'s)."""
    if attempt not in ATTEMPTS:
        raise ValueError(f"attempt: expected one of {ATTEMPTS}, got {attempt!r}")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    entry, model, subject = build("insta", "paper", 14, resolution, overrides)
    config = dataclasses.replace(
        entry.training_defaults("paper"), samples_per_batch=samples, early_stop=1e-4, fixed_shapes=True,
        max_iterations=warmup + SIDE_STREAM_STEPS + 2, max_minutes=None, eval_every=0, checkpoint_every=0, log_every=10**9,
    )  # fmt: skip
    found: dict = {}

    def after_step(optimizer, args_, kwargs_) -> None:  # torch's optimiser-step hook: the library is not touched
        if len(found) == 0 and (state := _running_loop()).step + 1 >= warmup:
            found["loop"] = state
            raise _Done

    hook = register_optimizer_step_post_hook(after_step)
    try:
        with tempfile.TemporaryDirectory() as out:
            train(model, subject.train, subject.eval, Path(out) / "run", config, device=device, log=None)
    except _Done:
        pass
    finally:
        hook.remove()
    if not found:
        raise RuntimeError(f"the run ended before step {warmup}")
    state = found["loop"]
    report = _capture(state, loop._Loop.train_step, attempt, repeats)
    return {**report, "step": state.step, "device": device, "attempt": attempt}


def _running_loop() -> loop._Loop:
    """The training loop whose step called the optimiser (read from the call stack: the probe changes nothing)."""
    frame = sys._getframe(1)
    while frame is not None:
        if isinstance(candidate := frame.f_locals.get("self"), loop._Loop):
            return candidate
        frame = frame.f_back
    raise RuntimeError("no training loop on the stack: the optimiser stepped outside headfields.training.train")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--attempt", choices=ATTEMPTS, default="plain")
    parser.add_argument("--warmup", type=int, default=300)
    parser.add_argument("--samples", type=int, default=1 << 14)
    parser.add_argument("--resolution", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args(argv)
    print(json.dumps(probe(args.attempt, args.warmup, args.samples, args.resolution, args.repeats), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
