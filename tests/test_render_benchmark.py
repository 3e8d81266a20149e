"""benchmarks/render.py's profile of a frame: which profiler events count as the device's busy time."""

from types import SimpleNamespace

import pytest
from torch.autograd import DeviceType


@pytest.fixture
def render_benchmark(benchmark_script):
    return benchmark_script("render")


def event(key, device, self_device=0.0, self_cpu=0.0, annotation=False, count=1):
    return SimpleNamespace(
        key=key, count=count, device_type=device, self_device_time_total=self_device, self_cpu_time_total=self_cpu,
        is_user_annotation=annotation,
    )  # fmt: skip


def test_on_cuda_the_kernels_count_once(render_benchmark):
    """A kernel counts; the operation that launched it (its device time is the kernel's again) and a record_function
    range's annotation on the GPU (the kernels inside it, again) do not."""
    events = [
        event("aten::mm", DeviceType.CPU, self_device=40.0, self_cpu=9.0),
        event("gemm_kernel", DeviceType.CUDA, self_device=40.0, count=3),
        event("frame_map_forward", DeviceType.CUDA, self_device=70.0),
        event("my range", DeviceType.CUDA, self_device=110.0, annotation=True),
        event("Memcpy DtoH", DeviceType.CUDA, self_device=2.0),
    ]
    rows = render_benchmark.profile_rows(events, cuda=True)
    assert rows == [("frame_map_forward", 1, 70.0), ("gemm_kernel", 3, 40.0), ("Memcpy DtoH", 1, 2.0)]


def test_on_the_cpu_the_operations_own_time_counts(render_benchmark):
    events = [
        event("aten::mm", DeviceType.CPU, self_cpu=9.0),
        event("aten::view", DeviceType.CPU, self_cpu=0.0),
        event("_FrameMap", DeviceType.CPU, self_cpu=30.0, count=2),
    ]
    assert render_benchmark.profile_rows(events, cuda=False) == [("_FrameMap", 2, 30.0), ("aten::mm", 1, 9.0)]
