"""Process tuning for a training run on the CPU, put back when the run ends: :func:`process_tuning`.

Two settings of the process speed some CPU work up, and both belong to the whole process, not to one call. So
nothing in headfields sets either unasked (importing it, :func:`~headfields.apps.runs.load_run`, rendering): a training
run on the CPU applies the ones its configuration asks for (``TrainingConfig.flush_denormals``,
``TrainingConfig.tune_malloc``) for its own duration through :func:`process_tuning`, and puts them back after. The
``render`` and ``view`` commands, which own their process, keep freed memory while they render on the CPU
(``--no-keep-freed-memory`` leaves glibc as it is).

- **Flushing denormal floats** (:mod:`headfields.backends.cpu.denormals`). Buys: a hyper NeuS avatar's CPU step late in training
  took 223-225 ms, 201-209 ms flushed (its sharp Softplus makes 1.5% of activations denormal); models without
  denormals neither gain nor lose. Costs: denormal values are read and written as zero within the run (a result
  loses less than 1.2e-38). Put back exactly: each thread of the calling thread's OpenMP team gets the mode it had.
  Hence on unless turned off.
- **Keeping freed memory in glibc's heap** (:mod:`headfields.backends.cpu.freed_memory`). Buys: renders on the CPU (the run's
  evaluations) stop page-faulting on their large tensors: an 8,192-ray chunk of a 96² MonoAvatar frame took 1.5-2.7 s
  instead of 3.4-4.2 s (875k page faults down to 0-334k); training steps gain nothing (INSTA 528 -> 529 ms,
  MonoAvatar 835 -> 829 ms a step), so a run gains only what its evaluations take. Costs: up to 1 GiB of freed
  memory stays with the process during the run (that chunk's resident peak: 1.4 -> 1.7-1.9 GB). Put back in part
  (glibc has no getter): the thresholds return to glibc's documented defaults (or to an earlier
  :func:`~headfields.backends.cpu.freed_memory.reuse_freed_memory`'s limit) and the memory kept goes back to the
  system, but glibc's sliding mmap threshold stays off for the rest of the process (see
  :func:`~headfields.backends.cpu.freed_memory.freed_memory_reused`).
  Hence off in a training run unless asked for; on in the ``render`` and ``view`` commands, whose renders gain.

On CUDA neither applies (the GPU's own allocator and arithmetic are unaffected) and nothing is changed. Thread
counts (``torch.set_num_threads``) are never changed.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import torch

from ...kernels import flushing_denormals
from .denormals import denormals_flushed
from .freed_memory import freed_memory_reused

__all__ = ["AppliedTuning", "process_tuning"]


@dataclass(frozen=True)
class AppliedTuning:
    """What :func:`process_tuning` put in force for its block (False for what was not asked, or not possible here)."""

    flush_denormals: bool  # the calling thread flushes denormals (its OpenMP team too, where the runtime was found)
    tune_malloc: bool  # glibc's malloc keeps freed blocks (False off glibc, or where the environment tunes malloc)


@contextlib.contextmanager
def process_tuning(device: torch.device | str, *, flush_denormals: bool, tune_malloc: bool) -> Iterator[AppliedTuning]:
    """Apply the CPU tunings asked for (see the module docstring) within the block when ``device`` is the CPU, and put
    back what they changed when it ends, by return or by exception. Yields what was applied.

    ```python
    with process_tuning(device, flush_denormals=config.flush_denormals, tune_malloc=config.tune_malloc) as applied:
        ...  # the run's steps and evaluations
    ```
    """
    if not isinstance(device, torch.device | str):
        raise TypeError(f"device: expected a torch.device or its name, got {type(device).__name__}")
    for name, value in (("flush_denormals", flush_denormals), ("tune_malloc", tune_malloc)):
        if not isinstance(value, bool):
            raise TypeError(f"{name}: expected True or False, got {value!r}")
    on_cpu = torch.device(device).type == "cpu"
    with contextlib.ExitStack() as stack:
        tuned = on_cpu and tune_malloc and stack.enter_context(freed_memory_reused())
        if on_cpu and flush_denormals:
            stack.enter_context(denormals_flushed())
        yield AppliedTuning(flush_denormals=on_cpu and flush_denormals and flushing_denormals(), tune_malloc=tuned)
