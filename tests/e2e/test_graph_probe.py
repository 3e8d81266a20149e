"""tools/graph_probe.py: issue 78's CUDA graph of INSTA's step, probed. On a GPU it captures the loop's step or names
what stopped it; without one it runs the same staging (the training, the loop found after the warm-up, its step run)
uncaptured, which is what can be checked here."""

import pytest
from tiny_configs import TINY_PAPER_STEP


def test_the_probe_stops_after_the_warm_up_and_answers(tool_script):
    import torch

    probe = tool_script("graph_probe")
    report = probe.probe(warmup=3, samples=1024, resolution=16, repeats=2, overrides=TINY_PAPER_STEP)
    assert report["attempt"] == "plain" and report["step"] == 3  # the window's step ran, the warm-up's three before it
    if not torch.cuda.is_available():
        assert report == {**report, "captured": False, "device": "cpu"} and "no CUDA" in report["reason"]
    elif report["captured"]:
        assert report["replay_ms"] > 0 and report["eager_ms"] > 0
    else:  # the answer sought: the error and the library line it came from
        assert report["error"] and report["where"]


def test_the_probe_refuses_an_unknown_attempt(tool_script):
    with pytest.raises(ValueError, match="attempt"):
        tool_script("graph_probe").probe(attempt="eager")
