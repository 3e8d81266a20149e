"""Shared fixtures. The jaxtyping runtime checker is on for every test (see pyproject's pytest addopts)."""

import os

import pytest
import torch
from hypothesis import HealthCheck, settings

# Warp compiles a module on first use (seconds), so no per-example deadline; CI runs fewer examples.
settings.register_profile("dev", deadline=None, max_examples=60, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("ci", deadline=None, max_examples=30, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("ci" if os.environ.get("CI") else "dev")

# CUDA cases are collected only where a GPU exists; on CPU-only machines they are absent, not skipped.
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.fixture(params=DEVICES)
def device(request) -> torch.device:
    return torch.device(request.param)


@pytest.fixture
def box_mesh(device):
    from headfields.geometry import TriangleMesh, box

    return TriangleMesh(*box(device=device))
