"""Shared fixtures. The jaxtyping runtime checker is on for every test (see pyproject's pytest addopts)."""

import os

import pytest
import torch
from hypothesis import HealthCheck, settings

# Warp compiles a module on first use (seconds), so no per-example deadline; CI runs fewer examples.
settings.register_profile("dev", deadline=None, max_examples=60, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("ci", deadline=None, max_examples=30, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("ci" if os.environ.get("CI") else "dev")

# Every device test also runs on CUDA; on a machine without a GPU those cases show as skipped (see -ra).
DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device"))]


@pytest.fixture(params=DEVICES)
def device(request) -> torch.device:
    return torch.device(request.param)


@pytest.fixture
def box_mesh(device):
    from headfields.geometry import TriangleMesh, box

    return TriangleMesh(*box(device=device))
