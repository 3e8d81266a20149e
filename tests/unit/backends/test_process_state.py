"""Nothing in headfields changes the caller's process unasked (issue 37): importing it, ``load_run`` and rendering leave
glibc's malloc, the denormal mode of every thread torch computes on, thread counts and the environment as they were;
a CPU training run puts back what it tuned; ``process_tuning`` puts back what it can, and this file says what not.

The process is observed from outside the library, in a fresh child process: malloc by the page faults of blocks
written, freed and written again (``ctypes``), the denormal modes by a product of denormals computed by torch's whole
OpenMP team (read from the bits), thread counts from torch."""

from __future__ import annotations

import contextlib
import json
import os
import platform
import subprocess
import sys

import pytest
import torch
from denormal_cases import DENORMAL_BITS, MANY

from headfields.backends.cpu.denormals import set_flush_denormal
from headfields.backends.cpu.freed_memory import GLIBC_MALLOC_VARIABLES, _glibc
from headfields.backends.cpu.process_tuning import AppliedTuning, process_tuning
from headfields.kernels import flushing_denormals

X86 = platform.machine().lower() in ("x86_64", "amd64")
GLIBC = _glibc() is not None
# Probe blocks, in bytes: above the largest mmap threshold glibc slides to by itself (32 MiB), so mapped afresh each
# time unless glibc's malloc is tuned; HUGE also above any free stretch the steps leave in the heap, which a block
# fitting in it would reuse whatever the thresholds. BIG is probed within process_tuning's block, HUGE elsewhere.
BIG, HUGE = 64 << 20, 256 << 20
PAGE_BYTES = 4096

# The child records the process's state, then does each step named on its command line and records it again. With
# MIXED set, its caller first flushes denormals by torch's own switch while the rest of its team does not: a mixed
# state that a blanket change either way (or a reset to the default) would disturb. (Not before load_run: a run's
# checkpoint is refused in a process that flushes, its model files' digest differs.) An audit hook sees every name
# looked up through ctypes: glibc's malloc is tuned by ctypes' mallopt alone.
CHILD = f"""
import ctypes, ctypes.util, json, os, resource, sys
import torch

looked_up = []
sys.addaudithook(lambda event, args: looked_up.append(args[1]) if event == "ctypes.dlsym" else None)
libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]

def faults(size):
    # A block of size bytes written, freed and written again: the page faults of its last writing (a block mapped
    # afresh faults every page; one reused from the heap, none).
    for _ in range(3):
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        block = libc.malloc(size)
        ctypes.memset(block, 1, size)
        count = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
        libc.free(block)
    return count

def kept():
    # Denormals times one, computed by every thread of the team: how many stay denormal (non-flushing threads' share).
    x = torch.full(({MANY},), {DENORMAL_BITS}, dtype=torch.int32).view(torch.float32) * 1.0
    return int(torch.count_nonzero(x.view(torch.int32) & 0x7FFFFFFF))

def state(size={HUGE}):
    return dict(
        faults=faults(size), kept=kept(), caller_flushes=float(torch.tensor(1e-39, dtype=torch.float32) * 1.0) == 0.0,
        threads=torch.get_num_threads(), interop_threads=torch.get_num_interop_threads(), environment=dict(os.environ),
        mallopt=sorted(set(looked_up) & {{"mallopt", "malloc_trim"}}),
    )

kept()  # the team is running before the caller's mode is set: it does not inherit it
torch.optim.Adam([torch.zeros(1, requires_grad=True)])  # torch's own first optimiser imports dynamo: TORCHINDUCTOR_CACHE_DIR
if os.environ.get("MIXED"):
    torch.set_flush_denormal(True)
states = {{"start": state()}}
for step in sys.argv[1:]:
    if step == "import":
        import headfields, headfields.apps.runs, headfields.training  # noqa: E401
    elif step == "load_run":
        from headfields.training import render_image
        run = headfields.load_run(os.environ["TEST_RUN"], "cpu")
        render_image(run.model, run.subject.eval, 0, 4096, run.device, head=run.eval_head)
    elif step == "train":
        from headfields.apps.runs import read_run_config, train_run
        train_run(read_run_config(os.environ["TEST_RUN"]), os.environ["TEST_OUT"], "cpu", log=open(os.devnull, "w"))
    elif step == "tuned":
        from headfields.backends.cpu.process_tuning import process_tuning
        with process_tuning("cpu", flush_denormals=True, tune_malloc=True) as applied:
            assert applied.flush_denormals and applied.tune_malloc, applied
            inside = state({BIG})  # not HUGE: it would leave a free stretch that large in the heap
        states["inside"] = inside
    states[step] = state()
print(json.dumps(states))
"""


def child_states(*steps: str, mixed: bool = False, run=None, out=None) -> dict[str, dict]:
    """The child's state at its start and after each step (glibc's malloc tuning stripped from its environment)."""
    # Without the test workers' OMP_NUM_THREADS (conftest): the denormal checks need a team of two threads or more.
    env = {
        k: v for k, v in os.environ.items() if k not in (*GLIBC_MALLOC_VARIABLES, "GLIBC_TUNABLES", "MIXED", "OMP_NUM_THREADS")
    }
    env |= {"TEST_RUN": str(run or ""), "TEST_OUT": str(out or "")} | ({"MIXED": "1"} if mixed else {})
    done = subprocess.run([sys.executable, "-c", CHILD, *steps], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def assert_untouched(start: dict, now: dict, step: str) -> None:
    """The state after ``step`` is the start's: every thread's denormal mode, thread counts, environment, malloc."""
    assert now["caller_flushes"] == start["caller_flushes"], f"{step} changed the calling thread's denormal mode"
    assert now["kept"] == start["kept"], f"{step} changed the denormal mode of torch's OpenMP threads"
    assert (now["threads"], now["interop_threads"]) == (start["threads"], start["interop_threads"]), f"{step}: threads"
    assert now["environment"] == start["environment"], f"{step} changed the environment"
    assert now["mallopt"] == [], f"{step} looked up glibc's {now['mallopt']} (headfields.backends.cpu.freed_memory)"
    if GLIBC:  # blocks above 32 MiB are mapped afresh until someone raises glibc's mmap threshold
        assert now["faults"] >= start["faults"] // 2 > 0, f"{step} tuned malloc ({start['faults']} -> {now['faults']} faults)"


@pytest.fixture(scope="module")
def tuned_child() -> dict[str, dict]:
    """A child started in a mixed denormal state: its state at its start (the probes' test) and inside and after
    ``process_tuning`` (the tuning's test). One child for both: its start is the same either way, read before any step."""
    return child_states("tuned", mixed=True)


def test_the_child_sees_a_mixed_denormal_state_and_malloc_s_defaults(tuned_child):
    """The probes themselves: the caller flushes and its team does not; a 256 MiB block faults every page."""
    start = tuned_child["start"]
    assert start["caller_flushes"] == X86 and start["mallopt"] == []
    if X86 and start["threads"] > 1:
        assert 0 < start["kept"] < MANY
    if GLIBC:
        assert start["faults"] > HUGE // PAGE_BYTES // 2


def test_importing_headfields_loading_a_run_rendering_and_training_leave_the_process_as_it_was(tiny_insta_run, tmp_path):
    """Issue 37's acceptance. The training run has TrainingConfig's defaults: it flushes denormals while it runs and
    puts each thread's mode back (process_tuning), and leaves malloc alone (tune_malloc off)."""
    folder, _ = tiny_insta_run
    states = child_states("import", "load_run", "train", run=folder, out=tmp_path / "again")
    for step in ("import", "load_run", "train"):
        assert_untouched(states["start"], states[step], step)


def test_process_tuning_applies_both_and_puts_back_what_glibc_lets_it(tuned_child):
    states = tuned_child
    start, inside, after = states["start"], states["inside"], states["tuned"]
    if X86:
        assert inside["caller_flushes"] and inside["kept"] == 0  # every thread flushed within the block
        assert after["caller_flushes"] and after["kept"] == start["kept"]  # each thread's own mode put back
    assert (after["threads"], after["environment"]) == (start["threads"], start["environment"])
    if GLIBC:
        assert inside["mallopt"] == ["mallopt"]  # the hook sees the call
        assert inside["faults"] < BIG // PAGE_BYTES // 8  # freed 64 MiB blocks reused within the block
        # glibc's default thresholds after it: mapped afresh again. (What cannot be put back, glibc's sliding
        # threshold, shows only in some heap layouts: freed_memory.freed_memory_reused says it.)
        assert after["faults"] >= start["faults"] // 2


@pytest.mark.skipif(not X86, reason="the FTZ / DAZ modes are x86's")
@pytest.mark.parametrize("fails", [False, True], ids=["returns", "raises"])
def test_process_tuning_puts_each_thread_s_denormal_mode_back(fails):
    def kept() -> int:
        x = torch.full((MANY,), DENORMAL_BITS, dtype=torch.int32).view(torch.float32) * 1.0
        return int(torch.count_nonzero(x.view(torch.int32) & 0x7FFFFFFF))

    threads = torch.get_num_threads()
    set_flush_denormal(False)
    try:
        kept()
        torch.set_flush_denormal(True)  # the caller alone: a mixed team
        before = kept()
        with pytest.raises(KeyError) if fails else contextlib.nullcontext():
            with process_tuning(torch.device("cpu"), flush_denormals=True, tune_malloc=False) as applied:
                assert applied == AppliedTuning(flush_denormals=True, tune_malloc=False) and kept() == 0
                if fails:
                    raise KeyError("a failing step")
        assert flushing_denormals() and kept() == before and torch.get_num_threads() == threads
    finally:
        set_flush_denormal(False)


def test_process_tuning_changes_nothing_off_the_cpu_or_when_not_asked(monkeypatch):
    monkeypatch.setattr("headfields.backends.cpu.freed_memory.reuse_freed_memory", lambda limit=0: pytest.fail("malloc tuned"))
    monkeypatch.setattr("headfields.backends.cpu.denormals.set_flush_denormal", lambda enabled: pytest.fail("denormals flushed"))
    for device, flush, tune in [("cuda", True, True), (torch.device("cuda", 0), True, True), ("cpu", False, False)]:
        with process_tuning(device, flush_denormals=flush, tune_malloc=tune) as applied:
            assert applied == AppliedTuning(flush_denormals=False, tune_malloc=False)


@pytest.mark.parametrize(
    ("arguments", "name"),
    [((1, True, False), "device"), (("cpu", 1, False), "flush_denormals"), (("cpu", True, "yes"), "tune_malloc")],
)
def test_bad_arguments_are_named(arguments, name):
    device, flush, tune = arguments
    with pytest.raises(TypeError, match=name), process_tuning(device, flush_denormals=flush, tune_malloc=tune):
        pass
