"""Flushing denormal floats on every thread torch computes on, and for a training run only."""

from __future__ import annotations

import gc
import platform
import sys
import threading

import pytest
import torch
from denormal_cases import MANY, kept, product_of_denormals

from headfields.backends.cpu.denormals import denormals_flushed, set_flush_denormal
from headfields.kernels import flushing_denormals

# Elements enough for torch to split a product over its OpenMP team (its grain is 32,768 elements).

pytestmark = pytest.mark.skipif(platform.machine().lower() not in ("x86_64", "amd64"), reason="the FTZ / DAZ modes are x86's")


@pytest.fixture(autouse=True)
def _keep_denormals():
    """Each test starts and ends with torch's default: denormals computed."""
    set_flush_denormal(False)
    yield
    set_flush_denormal(False)


def test_every_thread_of_torch_s_team_flushes():
    torch.set_num_threads(max(2, torch.get_num_threads()))
    before = product_of_denormals()  # the team is running before the mode is set: it does not inherit it
    assert kept(before) == MANY and not flushing_denormals()
    assert set_flush_denormal(True)
    assert flushing_denormals() and kept(product_of_denormals()) == 0  # no thread kept one
    assert set_flush_denormal(False)
    assert not flushing_denormals() and kept(product_of_denormals()) == MANY


def test_torch_s_own_switch_alone_leaves_the_team_computing_denormals():
    # The reason set_flush_denormal exists: torch.set_flush_denormal sets the calling thread only.
    torch.set_num_threads(max(2, torch.get_num_threads()))
    product_of_denormals()
    torch.set_flush_denormal(True)
    assert flushing_denormals() and 0 < kept(product_of_denormals()) < MANY  # the caller's share flushed, not the rest


def test_the_block_restores_the_mode_it_found():
    with denormals_flushed() as reached:
        assert reached and flushing_denormals() and kept(product_of_denormals()) == 0
    assert not flushing_denormals() and kept(product_of_denormals()) == MANY
    set_flush_denormal(True)  # a caller that flushes already keeps flushing after the block
    with denormals_flushed():
        pass
    assert flushing_denormals() and kept(product_of_denormals()) == 0


def test_the_block_puts_back_each_thread_s_own_mode_after_a_return_or_an_exception():
    # The caller flushes through torch's own switch and the rest of its team does not: each gets its mode back.
    torch.set_num_threads(max(2, torch.get_num_threads()))
    product_of_denormals()  # the team runs before the caller's mode is set
    torch.set_flush_denormal(True)
    mixed = kept(product_of_denormals())
    assert 0 < mixed < MANY
    with denormals_flushed():
        assert kept(product_of_denormals()) == 0
    assert flushing_denormals() and kept(product_of_denormals()) == mixed
    with pytest.raises(KeyError), denormals_flushed():
        raise KeyError("a failing training step")
    assert flushing_denormals() and kept(product_of_denormals()) == mixed


def test_values_change_by_less_than_the_smallest_normal():
    x = torch.randn(MANY, generator=torch.Generator().manual_seed(0)) * 1e-19
    exact = x * x  # about 1e-38: denormal results among them
    with denormals_flushed():
        flushed = x * x
    assert kept(exact) > kept(flushed)
    gap = (exact.double() - flushed.double()).abs().max()  # in float64, where these are normal numbers
    assert 0 < float(gap) < torch.finfo(torch.float32).tiny


def test_enabled_must_be_a_bool():
    with pytest.raises(TypeError, match="enabled"):
        set_flush_denormal(1)


def test_a_team_shrunk_by_set_num_threads_is_reached_whole():
    # Its idle threads come back when the count grows again, with the mode they had.
    threads = max(2, torch.get_num_threads())
    torch.set_num_threads(threads)
    product_of_denormals()
    torch.set_num_threads(1)
    try:
        assert set_flush_denormal(True)
    finally:
        torch.set_num_threads(threads)
    assert kept(product_of_denormals()) == 0


def test_an_interrupt_on_the_calling_thread_s_share_reaches_the_caller():
    """ctypes drops what a callback raises: a Ctrl-C landing while the calling thread runs its share of the team's
    task must still stop the program, raised once the team is done (every other thread ran its share)."""
    from headfields.backends.cpu import denormals

    caller, ran = threading.get_ident(), []

    def task() -> None:
        ran.append(threading.get_ident())
        if threading.get_ident() == caller:
            raise KeyboardInterrupt

    if denormals._openmp_runtime() is None:
        pytest.skip("no OpenMP runtime: the task runs on no team")
    with pytest.raises(KeyboardInterrupt):
        denormals._on_each_thread_of_team(task)
    assert caller in ran and len(set(ran)) == len(ran) >= 1


class InterruptedTeam:
    """The OpenMP runtime, with a KeyboardInterrupt raised on the calling thread as its share of team call ``call``
    starts, before any of the share's code: where CPython raises a Ctrl-C that landed while the runtime was starting
    the team (its check for signals as a Python function begins). A trace function raises it, at the first Python
    function this thread starts within the call: its share of the task (the garbage collector, whose callbacks would
    start first, is paused for the call)."""

    def __init__(self, runtime, call: int = 0):
        self.runtime, self.call, self.calls = runtime, call, 0

    def GOMP_parallel(self, *arguments) -> None:
        start, previous = self.runtime.GOMP_parallel, sys.gettrace()

        def interrupt(frame, event, arg):
            sys.settrace(previous)
            raise KeyboardInterrupt

        collecting = gc.isenabled()
        gc.disable()
        if self.calls == self.call:
            sys.settrace(interrupt)
        self.calls += 1
        try:
            start(*arguments)
        finally:
            sys.settrace(previous)
            if collecting:
                gc.enable()


@pytest.fixture
def runtime():
    from headfields.backends.cpu import denormals

    if denormals._openmp_runtime() is None:
        pytest.skip("no OpenMP runtime: the task runs on no team")
    return denormals._openmp_runtime()


def test_an_interrupt_at_the_start_of_the_calling_thread_s_share_reaches_the_caller(runtime, monkeypatch, capfd):
    """The interrupt raised before the share's own code (ctypes drops it and prints "Exception ignored") still stops
    the program, once the team is done; the caller's unraisable hook is its own again after."""
    from headfields.backends.cpu import denormals

    monkeypatch.setattr(denormals, "_openmp_runtime", lambda: InterruptedTeam(runtime))
    hook, caller, ran = sys.unraisablehook, threading.get_ident(), []
    with pytest.raises(KeyboardInterrupt):
        denormals._on_each_thread_of_team(lambda: ran.append(threading.get_ident()))
    assert caller not in ran and len(set(ran)) == len(ran)  # the other threads ran their shares
    assert sys.unraisablehook is hook and "Exception ignored" not in capfd.readouterr().err


def test_an_interrupt_while_a_block_starts_flushing_leaves_every_thread_s_mode_as_it_was(runtime, monkeypatch):
    from headfields.backends.cpu import denormals

    torch.set_num_threads(max(2, torch.get_num_threads()))
    product_of_denormals()
    interrupted = InterruptedTeam(runtime, call=1)  # call 0 reads the modes, 1 sets them
    monkeypatch.setattr(denormals, "_openmp_runtime", lambda: interrupted)
    with pytest.raises(KeyboardInterrupt), denormals_flushed():
        pytest.fail("the block ran")
    assert not flushing_denormals() and kept(product_of_denormals()) == MANY


def test_what_the_calling_thread_s_share_leaves_unraisable_goes_to_the_caller_s_hook(runtime, monkeypatch):
    # An exception in a finaliser is unraisable wherever it runs: printed by the caller's hook, not raised by the call.
    from headfields.backends.cpu import denormals

    class Finalised:
        def __del__(self):
            raise ValueError("in __del__")

    seen = []
    monkeypatch.setattr(sys, "unraisablehook", seen.append)
    caller = threading.get_ident()
    assert denormals._on_each_thread_of_team(lambda: threading.get_ident() == caller and Finalised())
    assert sys.unraisablehook == seen.append
    assert [type(u.exc_value) for u in seen] == [ValueError] and "in __del__" in str(seen[0].exc_value)
