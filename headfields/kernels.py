"""The one launcher of Warp kernels: geometry, encoders and renderers all launch through :func:`launch_rows`.

Torch tensors are viewed as Warp arrays without a copy (:func:`to_warp`), and Warp work runs where the tensors
are: the device follows the tensors, never a global setting.

- **CPU.** Warp runs a CPU launch on one thread (and releases the GIL), so a large launch is split into row
  chunks of at least ``MIN_ROWS_PER_THREAD`` rows, launched concurrently on a thread pool of
  :func:`num_cpu_threads` threads; the results are identical to one launch. A forked child (a DataLoader
  worker) starts a pool of its own.
- **CUDA.** Launches, BVH builds and refits run on torch's current stream (:func:`torch_stream`), so they are
  ordered with the torch operations around them.

Queries launched in :func:`morton_order` walk a BVH coherently, which keeps it in cache; queries that come in a
local order already (:func:`in_local_order`: samples packed along rays) walk it as coherently unsorted.
"""

from __future__ import annotations

import contextlib
import os
import struct
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import cache
from typing import Any, no_type_check

import torch
import warp as wp
from jaxtyping import Float, Int
from torch import Tensor

from .device_paths import takes_cuda_path

# Warp's config is process-wide. Unless the user has changed it, drop Warp's per-module "load took ... ms"
# messages; warnings still show.
if wp.config.log_level == wp.LOG_INFO:
    wp.config.log_level = wp.LOG_WARNING
wp.init()

__all__ = [
    "MIN_ROWS_PER_THREAD",
    "WARP_SCALARS",
    "chunk_bounds",
    "flushing_denormals",
    "in_local_order",
    "launch_bounds",
    "launch_grid",
    "launch_rows",
    "launch_slots",
    "tile_shared_bytes",
    "morton_order",
    "num_cpu_threads",
    "row_numbers",
    "to_warp",
    "torch_stream",
    "warp_device",
]

_CPU_TILES: dict[str, threading.Lock] = {}  # a module's, held by its tiled CPU launches (see launch_rows)
_CPU_TILES_GUARD = threading.Lock()

MIN_ROWS_PER_THREAD = 8192
"""Below this many rows per thread a CPU launch is not split: thread hand-off would cost more than it saves."""

WARP_SCALARS = {torch.float32: wp.float32, torch.float64: wp.float64}
"""The float dtypes whose kernels exist in both precisions (float32, and float64 for gradchecks), as Warp names them."""


def num_cpu_threads() -> int:
    """Threads used for CPU launches: the cores this process may run on, at most torch's own thread count
    (so a DataLoader worker, which torch sets to one thread, stays on one)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(cores, torch.get_num_threads()))


@cache
def _pool() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=num_cpu_threads(), thread_name_prefix="headfields-kernels")


# A forked child (a DataLoader worker, say) inherits the pool object but not its threads: start a new one.
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_pool.cache_clear)


def warp_device(device: torch.device) -> wp.context.Device:
    """The Warp device of a torch device (``cuda:1`` stays ``cuda:1``; ``cuda`` is torch's current CUDA device, as
    ``tensor.to("cuda")`` reads it, where Warp's own conversion fails on the missing index)."""
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    return wp.device_from_torch(device)


# One Warp wrapper a torch stream, by its device and CUDA handle: wrapping it anew at every launch costs host time
# each call, and inside a CUDA graph's capture each new wrapper is one more object made (and later freed) there.
_WARP_STREAMS: dict[tuple[int, int], wp.Stream] = {}


def _warp_stream(device: torch.device) -> wp.Stream:
    """The Warp stream of torch's current stream on CUDA ``device`` (the same object each time for one stream)."""
    stream = torch.cuda.current_stream(device)
    key = (stream.device_index, stream.cuda_stream)
    wrapped = _WARP_STREAMS.get(key)
    if wrapped is None:  # (a wrapper owns no stream: one left for a stream torch freed wraps what reuses its handle)
        wrapped = _WARP_STREAMS[key] = wp.stream_from_torch(stream)
    return wrapped


@contextlib.contextmanager
def torch_stream(device: torch.device) -> Iterator[None]:
    """Run the Warp work inside on torch's current stream of ``device`` (nothing to do on CPU)."""
    if device.type == "cuda":
        # No wait on Warp's own stream on entry: all our Warp work runs here, and under CUDA-graph capture such a
        # wait would tie the captured stream to uncaptured work (cudaErrorStreamCaptureInvalidated).
        with wp.ScopedStream(_warp_stream(device), sync_enter=False):
            yield
    else:
        yield


def to_warp(x: torch.Tensor, dtype: Any) -> wp.array:
    """Zero-copy view of a contiguous torch tensor as a Warp array of ``dtype`` (a copy would lose writes), without a
    gradient: our kernels' gradients are torch's (autograd functions), and Warp's own would allocate ``x.grad`` (a
    zeroed tensor on the caller's parameter every step, and an allocation inside a CUDA graph's capture)."""
    if not x.is_contiguous():
        raise RuntimeError("headfields internal error: Warp arrays must view contiguous tensors")
    if x.numel() == 0:  # torch calls any empty tensor contiguous, whatever its strides; Warp checks them
        x = torch.empty(x.shape, dtype=x.dtype, device=x.device)  # (nothing to write, so nothing is lost)
    return wp.from_torch(x, dtype=dtype, requires_grad=False)


MORTON_BITS = 21  # per axis at most: 63-bit codes in an int64, fine enough that a far outlier keeps the rest apart
_INT64_BITS = 63


@no_type_check  # Warp parameter types are not Python type hints; keep the jaxtyping checker off them.
@wp.func
def _spread_bits(v: wp.int64):
    """Two zero bits after each of the low 21 bits of ``v`` (Morton interleaving)."""
    x = (v | (v << wp.int64(32))) & wp.int64(0x1F00000000FFFF)
    x = (x | (x << wp.int64(16))) & wp.int64(0x1F0000FF0000FF)
    x = (x | (x << wp.int64(8))) & wp.int64(0x100F00F00F00F00F)
    x = (x | (x << wp.int64(4))) & wp.int64(0x10C30C30C30C30C3)
    return (x | (x << wp.int64(2))) & wp.int64(0x1249249249249249)


@no_type_check
@wp.kernel
def _morton_key_kernel(
    box: wp.array(dtype=wp.vec3),  # [low corner, cells per unit]
    bits: int,
    top: float,
    points: wp.array(dtype=wp.vec3),
    frame: wp.array(dtype=wp.int64),
    key: wp.array(dtype=wp.int64),
):
    i = wp.tid()
    c = wp.cw_mul(points[i] - box[0], box[1])
    x = _spread_bits(wp.int64(wp.clamp(c[0], 0.0, top)))
    y = _spread_bits(wp.int64(wp.clamp(c[1], 0.0, top)))
    z = _spread_bits(wp.int64(wp.clamp(c[2], 0.0, top)))
    key[i] = x | (y << wp.int64(1)) | (z << wp.int64(2)) | (frame[i] << wp.int64(3 * bits))  # frame by frame


def morton_order(
    points: Float[Tensor, "N 3"], frame: Int[Tensor, " N"] | None = None, num_frames: int | None = None
) -> Int[Tensor, " N"]:
    """A permutation (int64 ``[N]``) visiting ``points [N,3]`` along a Z-order curve over their box; with ``frame
    [N]`` (values below ``num_frames``; None: read off ``frame``, a host synchronisation on CUDA), frame by frame
    (each frame's points along the curve).

    Queries launched in this order walk the same BVH nodes one after another, which keeps them in cache:
    closest-point queries on CPU run about 15% faster, sort included (benchmarks/mesh_queries.py); and a
    query's predecessor is a near neighbour on the same frame's mesh, which the k-nearest search starts from.
    One Warp pass computes each point's key (the frame's number above the point's Morton code: 21 bits an axis,
    fewer where the frames need the room) and one sort orders them.
    """
    n = points.shape[0]
    if n == 0:
        return torch.zeros(0, dtype=torch.long, device=points.device)
    frame_bits = 0
    if frame is not None:
        count = int(frame.max()) + 1 if num_frames is None else num_frames
        frame_bits = max(count - 1, 0).bit_length()
    bits = min(MORTON_BITS, (_INT64_BITS - frame_bits) // 3)
    points32 = points.detach().float().contiguous()
    lo, hi = torch.aminmax(points32, dim=0)
    top = 2**bits - 1  # float32 resolves 2^24 steps, enough for 2^21 cells
    box = torch.stack([lo, top / (hi - lo).clamp(min=torch.finfo(torch.float32).tiny)]).contiguous()
    frame = torch.zeros(n, dtype=torch.long, device=points.device) if frame is None else frame.long().contiguous()
    key = torch.empty(n, dtype=torch.long, device=points.device)
    launch_rows(_morton_key_kernel, n, [box, bits, float(top)], [points32, frame, key], points.device)
    return torch.argsort(key, stable=True)


# in_local_order: the consecutive pairs it measures (spread evenly over the points); the share of them that must be
# short (so that rays of two or three samples in no order of rays are sorted); and how many times the spacing of points
# spread evenly over their box (its 5-95% quantiles on each axis: an outlier does not widen it) a short step may be.
# Measured, the ratio of that quantile: INSTA's samples in its 512² frame's mesh queries 1.1-2.5 and in a training
# step 0.3-0.75; random points near the head 15.5 (2^12 of them) and 62 (2^18). The bound lies between.
LOCAL_ORDER_PAIRS = 1024
LOCAL_ORDER_SHARE = 0.75
LOCAL_ORDER_STEPS = 6.0


def in_local_order(points: Float[Tensor, "N 3"]) -> bool:
    """Whether ``points [N,3]`` come in an order about as local as :func:`morton_order` would give them: three quarters
    of the steps between consecutive points (``LOCAL_ORDER_PAIRS`` of them, spread evenly) within ``LOCAL_ORDER_STEPS``
    times the spacing of ``N`` points spread evenly over their box (the 5-95% quantiles of the points measured on each
    axis, over the pairs' first points). Samples packed along rays and grid points in raster order are; points in no
    order are not, nor are points on a plane (their box has no volume). For points on the CPU only: it reads its answer
    back, which on a GPU would wait for the GPU."""
    if points.device.type != "cpu":
        raise ValueError(f"points: expected points on the CPU (the answer is read back), got {points.device}")
    n = points.shape[0]
    if n < 2:
        return True
    pairs = min(n - 1, LOCAL_ORDER_PAIRS)
    pick = torch.arange(pairs, device=points.device) * (n - 2) // max(pairs - 1, 1)
    first, second = points[pick].double(), points[pick + 1].double()
    step = torch.linalg.vector_norm(second - first, dim=1).quantile(LOCAL_ORDER_SHARE)
    low, high = first.quantile(torch.tensor([0.05, 0.95], dtype=torch.float64, device=points.device), dim=0)
    spacing = ((high - low).prod() / n) ** (1 / 3)
    return bool(step <= LOCAL_ORDER_STEPS * spacing)


def chunk_bounds(rows: int, chunks: int) -> list[int]:
    """``chunks + 1`` integer boundaries splitting ``range(rows)`` into near-equal consecutive chunks."""
    return [rows * i // chunks for i in range(chunks + 1)]


def launch_bounds(rows: int, device: torch.device, min_rows: int | None = None) -> list[int]:
    """How :func:`launch_rows` splits ``rows`` into concurrently launched chunks of at least ``min_rows`` rows
    (None: ``MIN_ROWS_PER_THREAD``):
    their boundaries (one chunk on CUDA or for a small launch). Kernels whose rows add into shared memory use it
    to give each chunk its own buffer, since Warp's CPU atomics are not safe across concurrent launches."""
    min_rows = MIN_ROWS_PER_THREAD if min_rows is None else min_rows
    threads = 1 if takes_cuda_path(device) else min(num_cpu_threads(), max(1, rows // min_rows))
    return chunk_bounds(rows, threads)


def launch_slots(rows: int, device: torch.device, min_rows: int | None = None) -> tuple[int, Tensor]:
    """For a kernel whose rows add into shared memory (scatter gradients): how many buffers it needs and each
    row's buffer (int32 ``[rows]``), one per chunk that :func:`launch_rows` runs concurrently.

    Warp's CPU atomics are plain read-modify-writes (one launch runs on one thread), so chunks launched
    concurrently must not add into the same buffer: measured, they lose updates. Each chunk gets its own, summed
    afterwards. On CUDA atomics are real and one buffer serves all rows (made on the device: no host copy).
    """
    bounds = launch_bounds(rows, device, min_rows)
    if len(bounds) == 2:
        return 1, torch.zeros(rows, dtype=torch.int32, device=device)
    counts = torch.diff(torch.tensor(bounds))
    return len(counts), torch.repeat_interleave(torch.arange(len(counts), dtype=torch.int32), counts).to(device)


# row_numbers' buffer a device: 0, 1, 2, ... (int64), grown to the next power of two of the largest size asked for.
_ROW_NUMBERS: dict[torch.device, Tensor] = {}
# The buffers grown out of, kept: a CUDA graph captured with one reads it at every replay, and holds no reference.
_OUTGROWN: list[Tensor] = []


def row_numbers(n: int, device: torch.device) -> Int[Tensor, " n"]:
    """``torch.arange(n, device=device)`` as a view of one buffer a device, to be read, never written (nor in place).

    Launches take the numbers of their rows as an input, and a step of fixed shapes asks for the same few sizes at
    every step: each ``arange`` would be a kernel on a GPU (6 a step of INSTA's). The buffer is made outside inference
    mode (autograd may save an index), and not while a CUDA graph is being captured: a buffer first written there
    would hold nothing until the graph replays, so a size it lacks is then made afresh."""
    device = torch.device(device)
    numbers = _ROW_NUMBERS.get(device)
    if numbers is None or numbers.shape[0] < n:
        if device.type == "cuda" and torch.cuda.is_current_stream_capturing():
            return torch.arange(n, device=device)
        with torch.inference_mode(False):
            numbers = torch.arange(1 << max(n - 1, 0).bit_length(), device=device)
        if device in _ROW_NUMBERS and device.type == "cuda":
            _OUTGROWN.append(_ROW_NUMBERS[device])  # (at most as large as the new one, all of them together)
        _ROW_NUMBERS[device] = numbers
    return numbers[:n]


def launch_rows(
    kernel: wp.Kernel,
    rows: int,
    shared: Sequence[Any],
    per_row: Sequence[torch.Tensor],
    device: torch.device,
    min_rows: int | None = None,
    tile: tuple[int, int] | None = None,
) -> None:
    """Launch ``kernel`` over ``rows`` threads on ``device`` (with ``tile``, ``(rows a block, threads a block)``: a
    tiled kernel over blocks of rows, ``wp.launch_tiled``, ``wp.tid()`` a block's index, one launch on the CPU too).

    The kernel's parameters are ``shared`` followed by ``per_row`` (torch tensors whose first dimension is
    ``rows``). Torch tensors become Warp arrays of the dtype the kernel declares (no copy: the kernel writes
    into them). On CPU the rows are split into chunks launched concurrently, each seeing its own slice of
    ``per_row`` with ``wp.tid()`` counted from the chunk's first row; results are identical to one launch. On
    CUDA the launch runs on torch's current stream. ``min_rows``: the fewest rows worth a thread of their own (a
    kernel whose rows are long loops splits sooner; :func:`launch_slots` must be told the same).

    Example, with ``scale`` a ``@wp.kernel`` of ``(k: float, x: wp.array(dtype=float), y: wp.array(dtype=float))``
    that sets ``y[i] = k * x[i]`` for ``i = wp.tid()``:

    ```python
    x = torch.rand(100_000)  # on CPU: up to 12 threads of at least 8192 rows each
    y = torch.empty_like(x)
    launch_rows(scale, x.shape[0], [2.0], [x, y], x.device)  # y == 2 * x
    ```
    """
    if rows == 0:
        return
    params = kernel.adj.args  # the kernel's declared parameters (Warp has no public accessor)
    if len(params) != len(shared) + len(per_row):
        raise RuntimeError(f"{kernel.key}: expected {len(params)} arguments, got {len(shared) + len(per_row)}")
    wp_device = warp_device(device)
    # Compile before fanning out, so that worker threads do not race to build the same module (a tiled kernel for
    # its block's threads: a module is built a block size).
    wp.load_module(kernel.module, device=wp_device, block_dim=None if tile is None else tile[1])
    shared = [to_warp(v, p.type.dtype) if isinstance(v, torch.Tensor) else v for v, p in zip(shared, params, strict=False)]

    def run(lo: int, hi: int) -> None:
        arrays = [to_warp(t[lo:hi], p.type.dtype) for t, p in zip(per_row, params[len(shared) :], strict=True)]
        if tile is None:
            wp.launch(kernel, dim=hi - lo, inputs=[*shared, *arrays], device=wp_device)
        else:
            blocks = -(-(hi - lo) // tile[0])
            wp.launch_tiled(kernel, dim=blocks, inputs=[*shared, *arrays], block_dim=tile[1], device=wp_device)

    if device.type == "cuda":
        with torch_stream(device):
            run(0, rows)
        return
    # Warp's CPU tiles take their "shared" memory from one static arena per module on x86-64 (not thread-local: its
    # LLVM JIT has no TLS), so two tiled launches of a module at once would overwrite each other's (and crashed): one
    # launch, and launches from several threads take turns (on CUDA's paths too: another thread may be on the CPU's).
    if tile is not None:
        with _CPU_TILES_GUARD:
            turns = _CPU_TILES.setdefault(kernel.module.name, threading.Lock())
        with turns:
            run(0, rows)
        return
    bounds = launch_bounds(rows, device, min_rows)  # one chunk on CUDA's paths
    if len(bounds) == 2:
        run(0, rows)
        return
    _on_pool(run, list(zip(bounds[:-1], bounds[1:], strict=True)))


def tile_shared_bytes(kernel: wp.Kernel, device: torch.device, block_dim: int) -> int | None:
    """The shared memory a block of the tiled ``kernel`` asks for on CUDA at ``block_dim`` threads (its module built
    on ``device`` first; a CPU build records the same figure), and None where Warp does not say. Warp sizes it from
    all the kernel's tiles, not from those alive at once, and a launch that asks for more than the device has fails
    (Warp only warns); the figure is read from Warp's build metadata, which has no public accessor."""
    wp_device = warp_device(device)
    wp.load_module(kernel.module, device=wp_device, block_dim=block_dim)
    # A module is built a (context, block size); the CPU builds one block size whatever is asked (Warp's CPU blocks).
    built = {size: e for (context, size), e in getattr(kernel.module, "execs", {}).items() if context == wp_device.context}
    found = built.get(block_dim, next(iter(built.values())) if len(built) == 1 else None)
    sizes = [v for k, v in (getattr(found, "meta", None) or {}).items() if k.endswith("_forward_smem_bytes")]
    return max(sizes) if sizes else None


def launch_grid(
    kernel: wp.Kernel, outer: int, rows: int, shared: Sequence[Any], device: torch.device, split: str = "rows"
) -> None:
    """Launch ``kernel`` over ``outer x rows`` threads (``wp.tid()`` gives ``(o, r)``, outer-major) on ``device``:
    one launch on CUDA. The kernel's parameters are ``shared`` (torch tensors become Warp arrays of the declared
    dtype; whole, not sliced) followed by ``outer0: int, row0: int``, the first thread's indices, which the kernel
    adds to its ``(o, r)``.

    On CPU, where a launch runs on one thread, the grid becomes tasks for the thread pool: with
    ``split="outer"`` one task an outer index (the pool balances them; a kernel whose rows add into memory of
    their outer index, such as a hash-grid level's table, then needs no per-thread buffers, since Warp's CPU
    atomics are not safe across concurrent launches, see :func:`launch_slots`); with ``split="rows"`` the outer
    indices in turn, each one's rows split over the pool (for a kernel whose outer indices add into the same row).
    Either way the threads work on one outer index at a time, which keeps what it reads (a hash-grid level's
    table) in cache.
    """
    if outer == 0 or rows == 0:
        return
    params = kernel.adj.args
    if len(params) != len(shared) + 2:
        raise RuntimeError(f"{kernel.key}: expected {len(params)} arguments, got {len(shared) + 2}")
    if split not in ("rows", "outer"):
        raise ValueError(f"split: expected 'rows' or 'outer', got {split!r}")
    wp_device = warp_device(device)
    wp.load_module(kernel.module, device=wp_device)  # compile before fanning out
    shared = [to_warp(v, p.type.dtype) if isinstance(v, torch.Tensor) else v for v, p in zip(shared, params, strict=False)]

    def run(o0: int, o1: int, r0: int, r1: int) -> None:
        wp.launch(kernel, dim=(o1 - o0, r1 - r0), inputs=[*shared, o0, r0], device=wp_device)

    if takes_cuda_path(device):  # one launch (on the CPU, CUDA's paths: counted as a GPU launches)
        with torch_stream(device):
            run(0, outer, 0, rows)
        return
    if split == "outer":
        tasks = [[(o, o + 1, 0, rows) for o in range(outer)]]
    else:
        # As many threads as the whole grid's work affords (outer x rows), each outer index's rows split among them.
        bounds = chunk_bounds(rows, min(rows, len(launch_bounds(outer * rows, device)) - 1))
        tasks = [[(o, o + 1, lo, hi) for lo, hi in zip(bounds[:-1], bounds[1:], strict=True)] for o in range(outer)]
    for batch in tasks:
        if len(batch) == 1 or num_cpu_threads() == 1:
            for task in batch:
                run(*task)
            continue
        _on_pool(run, batch)


# The smallest float64 denormal, made from its bits (a literal is parsed by arithmetic that a flushing thread, importing
# this module, would round to zero), and one: names, so that their product is computed at the call, in the calling
# thread's modes.
_DENORMAL, _ONE = struct.unpack("<d", (1).to_bytes(8, "little"))[0], 1.0


def flushing_denormals() -> bool:
    """Whether the calling thread flushes denormals (a denormal times one comes out zero), without a torch operation.
    Here, in the launcher, because the pool's launches follow the caller's mode (:func:`_on_pool`); flushing them is
    :mod:`headfields.backends.cpu.denormals`'s.

    ```python
    with denormals_flushed():
        assert flushing_denormals()  # on x86
    ```
    """
    return _DENORMAL * _ONE == 0.0  # Python's float arithmetic runs on the thread's own SSE modes, as torch's does


def _on_pool(run: Callable[..., None], tasks: Sequence[tuple]) -> None:
    """``run(*task)`` for every task on the thread pool, each under the calling thread's denormal mode, then wait.

    Warp's CPU code computes under the FTZ / DAZ mode of the thread it runs on, and a pool thread keeps the mode of the
    thread that started it: a launch inside :func:`~headfields.backends.cpu.denormals.denormals_flushed` would flush
    on the caller's thread and not on the pool's (or the other way round after it), so its results would depend on how
    it was split.
    The pool runs nothing but these tasks, and each sets the caller's mode first."""
    flush = flushing_denormals()

    def in_callers_mode(task: tuple) -> None:
        if flushing_denormals() != flush:
            torch.set_flush_denormal(flush)
        run(*task)

    for f in [_pool().submit(in_callers_mode, task) for task in tasks]:
        f.result()
