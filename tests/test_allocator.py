"""headfields.allocator: freed CPU tensors are reused instead of page-faulting again, measured in fresh processes
by the kernel's own count of minor page faults."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from headfields.allocator import GLIBC_MALLOC_VARIABLES, _glibc, reuse_freed_memory

SAMPLES, FEATURES = 135_000, 64  # an INSTA render's samples x its MLP width: 35 MB, above glibc's mmap threshold
PAGE_BYTES = 4096
ROUNDS, STEADY = 16, 8  # the last STEADY rounds are counted: the heap has grown to what a round needs by then

# A fresh process runs a layer of an MLP over a render's samples ROUNDS times and counts each round's page faults.
CHILD = f"""
import json, resource, sys, torch
from headfields.allocator import reuse_freed_memory
applied = reuse_freed_memory() if sys.argv[1] == "reuse" else None
x, w1, w2 = torch.randn({SAMPLES}, 32), torch.randn(32, {FEATURES}), torch.randn({FEATURES}, 16)
faults = []
for _ in range({ROUNDS}):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    ((x @ w1).relu() @ w2).sum()
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(json.dumps({{"applied": applied, "faults": faults}}))
"""


def steady_faults(mode: str, **environment: str) -> tuple[bool | None, int]:
    """Whether the child's call applied, and its page faults over the last STEADY rounds."""
    env = {k: v for k, v in os.environ.items() if k not in (*GLIBC_MALLOC_VARIABLES, "GLIBC_TUNABLES")} | environment
    out = subprocess.run([sys.executable, "-c", CHILD, mode], capture_output=True, text=True, check=True, env=env).stdout
    result = json.loads(out.strip().splitlines()[-1])
    return result["applied"], sum(result["faults"][-STEADY:])


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
def test_the_environments_own_malloc_tuning_stands():
    """MALLOC_TRIM_THRESHOLD_ at glibc's default: the call changes nothing, and freed tensors page-fault again."""
    hidden_pages = SAMPLES * FEATURES * 4 // PAGE_BYTES
    applied, faults = steady_faults("reuse", MALLOC_TRIM_THRESHOLD_="131072")
    assert applied is False
    assert faults > STEADY * hidden_pages


@pytest.mark.parametrize("variable", ["MALLOC_MMAP_THRESHOLD_", "GLIBC_TUNABLES"])
def test_any_malloc_tuning_in_the_environment_is_left_alone(monkeypatch, variable):
    monkeypatch.setenv(variable, "glibc.malloc.trim_threshold=131072" if variable == "GLIBC_TUNABLES" else "131072")
    reuse_freed_memory.cache_clear()
    try:
        assert reuse_freed_memory(1 << 20) is False
    finally:
        reuse_freed_memory.cache_clear()


def test_without_glibc_it_does_nothing_and_says_so(monkeypatch):
    monkeypatch.setattr("headfields.allocator._glibc", lambda: None)
    reuse_freed_memory.cache_clear()
    try:
        assert reuse_freed_memory(1 << 20) is False
    finally:
        reuse_freed_memory.cache_clear()


@pytest.mark.parametrize("limit", [0, -1, 2**31, True])
def test_a_bad_limit_is_refused_by_name(limit):
    with pytest.raises(ValueError, match="limit: expected a number of bytes"):
        reuse_freed_memory(limit)


@pytest.mark.parametrize("limit", [1.5, "1GiB"])
def test_a_limit_that_is_not_an_int_is_refused(limit):
    with pytest.raises(TypeError, match="limit"):  # ours, or the jaxtyping hook's where the tests run under it
        reuse_freed_memory(limit)
