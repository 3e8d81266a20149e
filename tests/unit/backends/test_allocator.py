"""headfields.backends.cpu.freed_memory: freed CPU tensors are reused instead of page-faulting again, for the process
or for a block and not after it, measured in fresh processes by the kernel's own count of minor page faults."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from headfields.backends.cpu import freed_memory
from headfields.backends.cpu.freed_memory import GLIBC_MALLOC_VARIABLES, _glibc, freed_memory_reused, reuse_freed_memory

SAMPLES, FEATURES = 135_000, 64  # an INSTA render's samples x its MLP width: 35 MB, above glibc's mmap threshold
PAGE_BYTES = 4096
ROUNDS, STEADY = 16, 8  # the last STEADY rounds are counted: the heap has grown to what a round needs by then
# After a block, a block larger than any free stretch the block's rounds left in the heap (a block fitting in one would
# reuse it whatever the thresholds): mapped afresh each time under glibc's defaults, reused while tuned.
HUGE = 256 << 20

# A fresh process runs a layer of an MLP over a render's samples ROUNDS times and counts each round's page faults:
# "default" as the process starts, "reuse" after reuse_freed_memory(), "block" within a freed_memory_reused() block
# and a HUGE block's after it, "earlier" after a block that followed a reuse_freed_memory() of the whole process.
CHILD = f"""
import ctypes, ctypes.util, json, resource, sys, torch
from headfields.backends.cpu.freed_memory import freed_memory_reused, reuse_freed_memory
libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
def huge_faults():  # written, freed, written again: the last writing's page faults
    for _ in range(3):
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        block = libc.malloc({HUGE})
        ctypes.memset(block, 1, {HUGE})
        count = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
        libc.free(block)
    return count
x, w1, w2 = torch.randn({SAMPLES}, 32), torch.randn(32, {FEATURES}), torch.randn({FEATURES}, 16)
def steady():
    faults = []
    for _ in range({ROUNDS}):
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        ((x @ w1).relu() @ w2).sum()
        faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    return sum(faults[-{STEADY}:])
out = {{}}
if sys.argv[1] == "reuse":
    out["applied"] = reuse_freed_memory()
elif sys.argv[1] == "block":
    with freed_memory_reused() as applied:
        out["applied"], out["within"] = applied, steady()
    out["huge_after"] = huge_faults()
elif sys.argv[1] == "earlier":
    out["applied"] = reuse_freed_memory()
    with freed_memory_reused(1 << 29):
        steady()
out["faults"] = steady()
print(json.dumps(out))
"""


def child(mode: str, **environment: str) -> dict:
    """The child's answers: what its call applied (not in "default"), and its page faults over the last STEADY rounds
    (``faults``; ``within`` the block too)."""
    env = {k: v for k, v in os.environ.items() if k not in (*GLIBC_MALLOC_VARIABLES, "GLIBC_TUNABLES")} | environment
    out = subprocess.run([sys.executable, "-c", CHILD, mode], capture_output=True, text=True, check=True, env=env).stdout
    return json.loads(out.strip().splitlines()[-1])


def steady_faults(mode: str, **environment: str) -> tuple[bool | None, int]:
    """Whether the child's call applied, and its page faults over the last STEADY rounds."""
    result = child(mode, **environment)
    return result.get("applied"), result["faults"]


@pytest.mark.skipif(_glibc() is None, reason="glibc's malloc only: elsewhere reuse_freed_memory does nothing (tested below)")
def test_freed_tensors_are_reused_without_page_faults():
    hidden_pages = SAMPLES * FEATURES * 4 // PAGE_BYTES  # the hidden layer's pages, written once a round
    _, default = steady_faults("default")
    applied, reused = steady_faults("reuse")
    assert default > STEADY * hidden_pages  # glibc maps the hidden layer afresh every round: a fault per page
    assert applied is True
    # In steady state a round reuses what the last one freed; now and then one round still grows the heap (the
    # interpreter's own blocks sit between the freed ones): at most one round's faults in STEADY, measured 0 or one.
    assert reused <= 2 * hidden_pages


@pytest.mark.skipif(_glibc() is None, reason="glibc's malloc only")
def test_a_block_reuses_freed_tensors_within_it_and_puts_glibc_s_thresholds_back_after():
    hidden_pages = SAMPLES * FEATURES * 4 // PAGE_BYTES
    result = child("block")
    assert result["applied"] is True and result["within"] <= 2 * hidden_pages
    assert result["huge_after"] > HUGE // PAGE_BYTES // 2  # after it: mapped afresh every time, as by default


@pytest.mark.skipif(_glibc() is None, reason="glibc's malloc only")
def test_a_block_after_reuse_freed_memory_leaves_the_process_reusing():
    hidden_pages = SAMPLES * FEATURES * 4 // PAGE_BYTES
    applied, faults = steady_faults("earlier")
    assert applied is True and faults <= 2 * hidden_pages


def test_a_block_that_applied_nothing_puts_nothing_back(monkeypatch):
    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", "131072")
    monkeypatch.setattr(freed_memory, "_put_back", lambda previous: pytest.fail("nothing was applied"))
    with freed_memory_reused() as applied:
        assert applied is False


@pytest.mark.skipif(_glibc() is None, reason="glibc's malloc only")
def test_the_environments_own_malloc_tuning_stands():
    """MALLOC_TRIM_THRESHOLD_ at glibc's default: the call changes nothing, and freed tensors page-fault again."""
    hidden_pages = SAMPLES * FEATURES * 4 // PAGE_BYTES
    applied, faults = steady_faults("reuse", MALLOC_TRIM_THRESHOLD_="131072")
    assert applied is False
    assert faults > STEADY * hidden_pages


@pytest.mark.parametrize("variable", ["MALLOC_MMAP_THRESHOLD_", "GLIBC_TUNABLES"])
def test_any_malloc_tuning_in_the_environment_is_left_alone(monkeypatch, variable):
    monkeypatch.setenv(variable, "glibc.malloc.trim_threshold=131072" if variable == "GLIBC_TUNABLES" else "131072")
    assert reuse_freed_memory(1 << 20) is False


def test_without_glibc_it_does_nothing_and_says_so(monkeypatch):
    monkeypatch.setattr("headfields.backends.cpu.freed_memory._glibc", lambda: None)
    assert reuse_freed_memory(1 << 20) is False
    with freed_memory_reused() as applied:
        assert applied is False


@pytest.mark.parametrize("limit", [0, -1, 2**31, True])
def test_a_bad_limit_is_refused_by_name(limit):
    with pytest.raises(ValueError, match="limit: expected a number of bytes"):
        reuse_freed_memory(limit)


@pytest.mark.parametrize("limit", [1.5, "1GiB"])
def test_a_limit_that_is_not_an_int_is_refused(limit):
    with pytest.raises(TypeError, match="limit"):  # ours, or the jaxtyping hook's where the tests run under it
        reuse_freed_memory(limit)
