"""The kernels launcher: the docstring's example on CPU and CUDA, split CPU launches equal to one launch, chunk
bounds, Morton order, and the one private Warp attribute it reads (``kernel.adj.args``)."""

import contextlib
import platform
from typing import no_type_check

import pytest
import torch
import warp as wp

from headfields import kernels


@no_type_check  # Warp parameter types are not Python type hints; keep the jaxtyping checker off them.
@wp.kernel
def scale(k: float, x: wp.array(dtype=float), y: wp.array(dtype=float)):
    i = wp.tid()
    y[i] = k * x[i]


def test_the_docstring_example(device):
    x = torch.rand(100_000, device=device)
    y = torch.empty_like(x)
    kernels.launch_rows(scale, x.shape[0], [2.0], [x, y], x.device)
    assert torch.equal(y, 2 * x)


def test_a_split_cpu_launch_equals_one_launch(monkeypatch):
    x = torch.rand(1000)
    whole = torch.empty_like(x)
    kernels.launch_rows(scale, 1000, [3.0], [x, whole], x.device)
    monkeypatch.setattr(kernels, "MIN_ROWS_PER_THREAD", 100)
    monkeypatch.setattr(kernels, "num_cpu_threads", lambda: 3)
    assert kernels.launch_bounds(1000, x.device) == [0, 333, 666, 1000]
    split = torch.empty_like(x)
    kernels.launch_rows(scale, 1000, [3.0], [x, split], x.device)
    assert torch.equal(whole, split)


@pytest.mark.skipif(platform.machine().lower() not in ("x86_64", "amd64"), reason="the FTZ / DAZ modes are x86's")
def test_a_split_cpu_launch_computes_in_the_callers_denormal_mode(monkeypatch):
    """Inside denormals_flushed() a denormal times one is zero on every thread of a split launch (the pool's threads
    take the caller's mode), and after it the pool computes denormals again (their own mode is put back)."""
    from headfields.backends.cpu.denormals import denormals_flushed

    monkeypatch.setattr(kernels, "MIN_ROWS_PER_THREAD", 100)
    monkeypatch.setattr(kernels, "num_cpu_threads", lambda: 3)
    x = torch.full((1000,), 1e-39)  # a float32 denormal
    y = torch.empty_like(x)
    kernels.launch_rows(scale, 1000, [1.0], [x, y], x.device)  # the pool's threads start outside the block
    assert torch.equal(y, x)
    with denormals_flushed():
        kernels.launch_rows(scale, 1000, [1.0], [x, y], x.device)
        bits = y.view(torch.int32).clone()  # read as integers: inside the block a float compare reads denormals as 0
    assert bits.eq(0).all()
    kernels.launch_rows(scale, 1000, [1.0], [x, y], x.device)
    assert torch.equal(y, x)


def test_the_kernel_parameters_warp_keeps_privately():
    # launch_rows reads kernel.adj.args (Warp has no public accessor): fail loudly if Warp changes it.
    params = scale.adj.args
    assert [p.label for p in params] == ["k", "x", "y"]
    assert params[1].type.dtype == wp.float32
    with pytest.raises(RuntimeError, match="expected 3 arguments, got 2"):
        kernels.launch_rows(scale, 4, [2.0], [torch.zeros(4)], torch.device("cpu"))


@pytest.mark.parametrize("rows", [7, 16_777_217, 33_554_435, 2**40 + 3])
@pytest.mark.parametrize("chunks", [1, 2, 3, 16])
def test_chunk_bounds_cover_every_row_exactly_once(rows, chunks):
    bounds = kernels.chunk_bounds(rows, chunks)
    assert bounds[0] == 0 and bounds[-1] == rows and len(bounds) == chunks + 1
    sizes = [hi - lo for lo, hi in zip(bounds[:-1], bounds[1:], strict=True)]
    assert min(sizes) >= 0 and max(sizes) - min(sizes) <= 1


def test_morton_order_is_a_permutation_grouped_by_frame():
    g = torch.Generator().manual_seed(0)
    points = torch.rand(500, 3, generator=g)
    frame = torch.randint(0, 3, (500,), generator=g)
    order = kernels.morton_order(points, frame)
    assert torch.equal(order.sort().values, torch.arange(500))
    assert bool((frame[order].diff() >= 0).all())
    # Along the curve, consecutive points are much closer than random pairs.
    alone = kernels.morton_order(points)
    step = (points[alone].diff(dim=0)).norm(dim=1).mean()
    assert step < 0.5 * (points - points[torch.randperm(500, generator=g)]).norm(dim=1).mean()


@pytest.mark.parametrize("num_frames", [1, 2, 240, 5000])
def test_morton_order_groups_frames_and_follows_the_curve_within_each(num_frames):
    g = torch.Generator().manual_seed(1)
    points = torch.rand(4000, 3, generator=g) * 100.0 - 50.0
    frame = torch.randint(0, num_frames, (4000,), generator=g)
    order = kernels.morton_order(points, frame, num_frames)
    assert torch.equal(order, kernels.morton_order(points, frame))  # the count read off the frames agrees
    assert torch.equal(order.sort().values, torch.arange(4000))
    assert bool((frame[order].diff() >= 0).all())
    # Brute force: within a frame, the order sorts the points by their Morton code (interleaved cell bits).
    bits = min(kernels.MORTON_BITS, (63 - max(num_frames - 1, 0).bit_length()) // 3)
    lo, hi = points.amin(dim=0), points.amax(dim=0)
    cell = ((points - lo) * ((2**bits - 1) / (hi - lo))).long().clamp(0, 2**bits - 1)
    code = torch.zeros(4000, dtype=torch.long)
    for b in range(bits):
        for axis in range(3):
            code |= ((cell[:, axis] >> b) & 1) << (3 * b + axis)
    key = code + frame * 2 ** (3 * bits)
    assert bool((key[order].diff() >= 0).all())


def test_row_numbers_are_views_of_one_buffer_that_grows(device):
    for n in (0, 5, 3, 9, 1000):
        assert torch.equal(kernels.row_numbers(n, device), torch.arange(n, device=device))
    a, b = kernels.row_numbers(700, device), kernels.row_numbers(20, device)
    assert a.data_ptr() == b.data_ptr()  # the same buffer: no kernel for a size it holds
    with torch.inference_mode():
        inside = kernels.row_numbers(5000, device)  # made outside inference mode: autograd may save it later
    x = torch.rand(5000, device=device, requires_grad=True)
    x[inside].sum().backward()
    assert not inside.is_inference() and torch.equal(x.grad, torch.ones_like(x))


def test_morton_order_of_no_points_is_empty():
    assert kernels.morton_order(torch.zeros(0, 3), torch.zeros(0, dtype=torch.long)).shape == (0,)


def test_an_empty_tensor_of_any_strides_becomes_a_warp_array(device):
    """torch calls every empty tensor contiguous whatever its strides (an op's output can carry odd ones, as a
    512² render's chunk of rays that all missed the head did); Warp refuses a non-unit inner stride."""
    odd = torch.empty(0, 3, device=device).as_strided((0, 3), (1, 2))
    assert odd.is_contiguous() and odd.stride(-1) != 1
    array = kernels.to_warp(odd, wp.vec3)
    assert array.shape == (0,)


def test_a_warp_view_leaves_the_gradient_of_its_tensor_alone():
    """A parameter viewed by Warp gets no ``.grad`` (Warp's own views allocate one, zeroed, on the caller's tensor)
    and the view carries none: our kernels' gradients are torch's."""
    table = torch.nn.Parameter(torch.randn(8, 3))
    array = kernels.to_warp(table, wp.vec3)
    assert table.grad is None and not array.requires_grad and array.grad is None
    table.grad = torch.ones_like(table)  # one the caller holds stays theirs, unread and unchanged
    kernels.to_warp(table, wp.vec3)
    assert torch.equal(table.grad, torch.ones(8, 3))


def test_a_torch_stream_is_wrapped_for_warp_once(monkeypatch):
    """Every launch on torch's current stream reuses one Warp wrapper of it (CUDA's handles faked here: the wrapping
    itself runs on a GPU), one for each stream and device."""
    current = {"stream": None}
    wrapped = []

    class Stream:
        def __init__(self, device_index, handle):
            self.device_index, self.cuda_stream = device_index, handle

    class Wrapper(wp.Stream):  # of no CUDA stream: none exists here
        def __init__(self):
            self.cuda_stream = None

    def wrap(stream):
        wrapped.append(stream)
        return Wrapper()

    monkeypatch.setattr(kernels, "_WARP_STREAMS", {})
    monkeypatch.setattr(torch.cuda, "current_stream", lambda device=None: current["stream"])
    monkeypatch.setattr(wp, "stream_from_torch", wrap)
    monkeypatch.setattr(wp, "ScopedStream", lambda stream, sync_enter=True: contextlib.nullcontext())
    streams = [Stream(0, 7), Stream(0, 7), Stream(0, 9), Stream(1, 7), Stream(0, 7)]
    used = []
    for stream in streams:
        current["stream"] = stream
        with kernels.torch_stream(torch.device("cuda", stream.device_index)):
            used.append(kernels._warp_stream(torch.device("cuda", stream.device_index)))
    assert [(s.device_index, s.cuda_stream) for s in wrapped] == [(0, 7), (0, 9), (1, 7)]
    assert used[0] is used[1] is used[4] and len({id(u) for u in used}) == 3


def _packed_ray_samples(rays: int, steps: int, generator: torch.Generator) -> torch.Tensor:
    """Samples packed along rays, as renderers make them: ``steps`` samples 2 mm apart on each of ``rays`` rays
    from a 3 m sphere towards a 30 cm head."""
    origins = torch.nn.functional.normalize(torch.randn(rays, 3, generator=generator), dim=1) * 3.0
    targets = (torch.rand(rays, 3, generator=generator) - 0.5) * 0.3
    directions = torch.nn.functional.normalize(targets - origins, dim=1)
    t = 2.9 + 0.002 * torch.arange(steps) + 0.3 * torch.rand(rays, 1, generator=generator)
    return (origins[:, None] + t[..., None] * directions[:, None]).reshape(-1, 3)


@pytest.mark.parametrize("rays, steps", [(64, 40), (2048, 8), (4096, 100)])
def test_in_local_order_tells_ray_samples_from_the_same_points_in_no_order(rays, steps):
    g = torch.Generator().manual_seed(rays)
    samples = _packed_ray_samples(rays, steps, g)
    assert kernels.in_local_order(samples)
    assert not kernels.in_local_order(samples[torch.randperm(len(samples), generator=g)])
    assert kernels.in_local_order(samples[kernels.morton_order(samples)])  # the order it stands for
    shuffled = samples[torch.randperm(len(samples), generator=g)]
    assert not kernels.in_local_order(torch.cat([torch.tensor([[100.0, 0.0, 0.0]]), shuffled]))  # an outlier's box
    if rays >= 2048:  # two samples a ray, thousands of rays in no order: sorted (a hundred points: no matter)
        pairs = samples.reshape(rays, steps, 3)[:, :2]
        assert not kernels.in_local_order(pairs[torch.randperm(rays, generator=g)].reshape(-1, 3))


def test_in_local_order_is_asked_on_the_cpu_only():
    """It reads its answer back: on a GPU that would wait for the GPU, so it refuses other devices."""
    with pytest.raises(ValueError, match="points: expected points on the CPU"):
        kernels.in_local_order(torch.zeros(4, 3, device="meta"))


def test_in_local_order_of_grids_planes_and_few_points():
    axis = torch.linspace(-0.2, 0.2, 40)
    grid = torch.stack(torch.meshgrid(axis, axis, axis, indexing="ij"), dim=-1).reshape(-1, 3)
    assert kernels.in_local_order(grid)  # raster order: a step between neighbours
    g = torch.Generator().manual_seed(0)
    assert not kernels.in_local_order(grid[torch.randperm(len(grid), generator=g)])
    plane = torch.stack([*torch.meshgrid(axis, axis, indexing="ij"), torch.zeros(40, 40)], dim=-1).reshape(-1, 3)
    assert not kernels.in_local_order(plane)  # no volume: left to the Morton order, as before
    assert kernels.in_local_order(torch.zeros(1, 3)) and kernels.in_local_order(torch.zeros(0, 3))
    assert kernels.in_local_order(torch.ones(100, 3))  # one point many times: nothing to sort


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_without_an_index_is_torchs_current_device():
    """``torch.device("cuda")``, as a caller writes it, where Warp's own conversion fails on the missing index."""
    current = torch.device("cuda", torch.cuda.current_device())
    assert kernels.warp_device(torch.device("cuda")) == kernels.warp_device(current)
