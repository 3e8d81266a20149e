"""Input checks shared by every public function: each error names the argument and what was expected.

The checks that read a tensor's values (finite values, index ranges: each a host synchronisation on CUDA) run
once, at the public entry point a user calls: a renderer checks its rays, then renders inside
:func:`trusted_values`, so the samples it derives are not re-checked at every layer of the field (deformer,
encoder, decoder) nor in every round of a sampler. Shape, dtype and device checks always run.
"""

from __future__ import annotations

import contextlib
import contextvars
import numbers
import os
from collections.abc import Iterator, Sequence

import numpy as np
import torch

# A Python or numpy integer: what arguments such as counts and frame numbers accept.
IntLike = int | np.integer

_TRUSTED = contextvars.ContextVar("headfields_trusted_values", default=False)


@contextlib.contextmanager
def trusted_values() -> Iterator[None]:
    """Within it, the checks of tensor values are skipped (see the module's docstring): for a caller that has
    checked its own input and passes on only what it computed from it."""
    token = _TRUSTED.set(True)
    try:
        yield
    finally:
        _TRUSTED.reset(token)


def validation(validate: bool) -> contextlib.AbstractContextManager[None]:
    """The ``validate`` switch of a public function: ``validate=False`` (the caller guarantees its input) runs the
    call inside :func:`trusted_values`; True checks as usual."""
    if not isinstance(validate, bool):
        raise TypeError(f"validate: expected True or False, got {validate!r}")
    return contextlib.nullcontext() if validate else trusted_values()


def checking_values() -> bool:
    """False inside :func:`trusted_values`: for a check of values written out by hand (e.g. non-zero vectors)."""
    return not _TRUSTED.get()


def _shape_str(shape: Sequence[int | str | None]) -> str:
    return "[" + ", ".join("*" if s is None else str(s) for s in shape) + "]"


def check_shape(name: str, x: torch.Tensor, shape: Sequence[int | str | None], device: torch.device | None = None) -> None:
    """Check ``x`` is a tensor with ``len(shape)`` dims (int entries must match; None/str are free) on ``device``."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor of shape {_shape_str(shape)}, got {type(x).__name__}")
    ok = x.dim() == len(shape) and all(not isinstance(s, int) or x.shape[i] == s for i, s in enumerate(shape))
    if not ok:
        raise ValueError(f"{name}: expected shape {_shape_str(shape)}, got {list(x.shape)}")
    if device is not None and x.device != device:
        raise ValueError(f"{name}: expected a tensor on {device} (the device of the other inputs), got one on {x.device}")


def check_float(name: str, x: torch.Tensor, shape: Sequence[int | str | None], device: torch.device | None = None) -> None:
    """A floating tensor of the given shape (and device) with only finite values."""
    check_shape(name, x, shape, device)
    if not x.is_floating_point():
        raise TypeError(f"{name}: expected a floating-point tensor, got {x.dtype}")
    check_finite(name, x)


def check_finite(name: str, x: torch.Tensor, what: str = "finite values") -> None:
    if _TRUSTED.get():
        return
    bad = ~torch.isfinite(x)
    if bad.any():
        row = int(bad.reshape(x.shape[0], -1).any(dim=1).nonzero()[0, 0]) if x.dim() else 0
        raise ValueError(f"{name}: expected {what}, found NaN or Inf (first in row {row})")


def check_nonzero_rows(name: str, x: torch.Tensor, what: str = "non-zero directions") -> None:
    """No all-zero row in ``x [N, D]`` (a direction that defines no ray); skipped inside :func:`trusted_values`."""
    if _TRUSTED.get() or not x.numel():
        return
    zero = torch.linalg.vector_norm(x, dim=-1) == 0
    if bool(zero.any()):
        raise ValueError(f"{name}: expected {what}, found a zero vector (row {int(zero.nonzero()[0, 0])})")


def check_int(
    name: str, x: torch.Tensor, shape: Sequence[int | str | None], upper: int | None = None, device: torch.device | None = None
) -> None:
    """An integer index tensor of the given shape (and device) with values in ``[0, upper)``."""
    check_shape(name, x, shape, device)
    if x.dtype.is_floating_point or x.dtype.is_complex or x.dtype == torch.bool:
        raise TypeError(f"{name}: expected an integer tensor, got {x.dtype}")
    if x.numel() > 0 and not _TRUSTED.get():
        lo, hi = int(x.min()), int(x.max())
        if lo < 0 or (upper is not None and hi >= upper):
            expected = f"[0, {upper})" if upper is not None else "non-negative values"
            raise ValueError(f"{name}: expected indices in {expected}, got values in [{lo}, {hi}]")


def check_frame(name: str, frame: torch.Tensor | IntLike, count: int, num_frames: int, device: torch.device) -> torch.Tensor:
    """A per-sample frame argument, one integer for all ``count`` samples or an integer tensor ``[count]`` on
    ``device``, with frames in ``[0, num_frames)``; returned as contiguous int64 ``[count]`` on ``device``."""
    if isinstance(frame, bool):
        raise TypeError(f"{name}: expected a frame number or an integer tensor [{count}], got {frame!r}")
    if isinstance(frame, numbers.Integral):
        if not 0 <= frame < num_frames:
            raise ValueError(f"{name}: expected a frame in [0, {num_frames}), got {frame}")
        return torch.full((count,), int(frame), dtype=torch.long, device=device)
    check_int(name, frame, [count], upper=num_frames, device=device)
    return frame.long().contiguous()


def frame_rows(
    name: str, frame: torch.Tensor | IntLike | None, count: int, num_frames: int, device: torch.device
) -> torch.Tensor:
    """:func:`check_frame`, where None stands for frame 0 of a one-frame head or mesh (and is an error otherwise)."""
    if frame is None:
        if num_frames != 1:
            raise ValueError(f"{name}: required when there are {num_frames} frames, got None")
        return torch.zeros(count, dtype=torch.long, device=device)
    return check_frame(name, frame, count, num_frames, device)


def check_count(name: str, value: object, lo: int, hi: int | None = None) -> int:
    """A Python or numpy integer (not a bool) in ``[lo, hi]``; returned as an int."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name}: expected an integer, got {value!r}")
    if value < lo or (hi is not None and value > hi):
        raise ValueError(f"{name}: expected an integer in [{lo}, {hi if hi is not None else 'inf'}], got {value}")
    return int(value)


def check_generator(name: str, generator: object, optional: bool = False) -> None:
    """A torch.Generator (or None where ``optional``): random draws come from it, on its device."""
    if not (isinstance(generator, torch.Generator) or (optional and generator is None)):
        expected = "a torch.Generator or None" if optional else "a torch.Generator"
        raise TypeError(f"{name}: expected {expected}, got {type(generator).__name__}")


def check_weights(weight: torch.Tensor, like: torch.Tensor, per: str = "per-sample") -> None:
    """A loss's ``weight``: non-negative floats, one a row of ``like`` (the value check is a read-back: skipped for
    trusted values). ``per`` names the rows in the message ("per-ray", "per-sample")."""
    check_float("weight", weight, [like.shape[0]], device=like.device)
    if checking_values() and (weight < 0).any():
        raise ValueError(f"weight: expected non-negative {per} weights, got a negative value")


# The largest finite float32: a rate or weight the float32 parameters meet must be below it (1e39 is finite in
# Python's float64, and Adam took it: the weights turned inf and the checkpoint could not be opened again).
FLOAT32_MAX = float(torch.finfo(torch.float32).max)


def check_positive(name: str, value: float | int | None, finite: bool = False) -> None:
    """None, or a number (not a bool) greater than 0; with ``finite``, one that float32 holds too (at most
    :data:`FLOAT32_MAX`; a learning rate: an infinite one is accepted by Adam and turns the weights to NaN at the
    first step)."""
    if value is not None and (isinstance(value, bool) or not isinstance(value, numbers.Real)):
        raise TypeError(f"{name}: expected a number or None, got {value!r}")
    if value is not None and not (0 < value <= FLOAT32_MAX if finite else value > 0):
        bound = f"a positive number float32 holds (at most {FLOAT32_MAX:.4g})" if finite else "a positive number"
        raise ValueError(f"{name}: expected {bound}, got {value}")


def check_non_negative(name: str, value: object) -> None:
    """A number (not a bool) in [0, :data:`FLOAT32_MAX`]: an Adam epsilon, a weight decay (NaN fails every
    comparison, so it is refused too)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 <= value <= FLOAT32_MAX:
        raise ValueError(f"{name}: expected a non-negative number float32 holds (at most {FLOAT32_MAX:.4g}), got {value!r}")


DEVICE_TYPES = ("cpu", "cuda")  # what the library's kernels run on (torch's and Warp's)


def check_device(name: str, device: object, present: bool = True) -> torch.device:
    """``device`` (a torch.device or its name: "cpu", "cuda", "cuda:1"; None: CUDA when torch sees a GPU, else the
    CPU) as a torch.device this machine has: an unknown name, a kind the library does not run on, or a GPU that
    torch does not see is refused here, naming ``name``, rather than by torch's traceback at the first tensor.
    ``present=False`` checks the name alone (settings made for a machine other than this one)."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if not isinstance(device, str | torch.device):
        raise TypeError(f"{name}: expected a device such as 'cpu', 'cuda' or 'cuda:1', got {device!r}")
    try:
        resolved = torch.device(device)
    except RuntimeError:
        raise ValueError(f"{name}: expected a device such as 'cpu', 'cuda' or 'cuda:1', got {str(device)!r}") from None
    if resolved.type not in DEVICE_TYPES:
        raise ValueError(f"{name}: expected a cpu or cuda device, got {str(resolved)!r}")
    if resolved.type == "cuda" and present:
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise ValueError(f"{name}: {str(resolved)!r} asked for, but torch sees no CUDA GPU here; give 'cpu'")
        if resolved.index is not None and resolved.index >= count:
            raise ValueError(f"{name}: expected one of this machine's {count} GPUs (cuda:0 to cuda:{count - 1}), got {resolved}")
    return resolved


def available_memory(device: torch.device | str) -> int | None:
    """Bytes that ``device`` can still give: on CUDA the driver's free memory plus what torch's cache holds
    unused; on the CPU the kernel's MemAvailable (Linux), else the free physical pages; None where unknown."""
    device = torch.device(device)
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
    if device.type != "cpu":
        return None
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def format_bytes(count: float) -> str:
    """``count`` bytes in decimal units: "512 B", "4.19 MB", "120 GB"."""
    units, k = ("B", "KB", "MB", "GB", "TB", "PB"), 0
    while abs(count) >= 1000 and k < len(units) - 1:
        count, k = count / 1000, k + 1
    return f"{int(count)} B" if k == 0 else f"{count:.3g} {units[k]}"


def check_memory(name: str, value: object, need: float, device: torch.device | str, what: str, advice: str | None = None) -> None:
    """Refuse ``value`` of argument ``name`` when ``what`` (its buffers: ``need`` bytes) would not fit in the memory
    ``device`` has available: a clear error before the allocation, rather than the allocator's traceback after
    minutes of work. ``advice`` ends the message (default: give a smaller ``name``). Does nothing where the
    available memory is unknown."""
    available = available_memory(device)
    if available is not None and need > available:
        raise ValueError(
            f"{name}: {value} needs {format_bytes(need)} for {what} on {torch.device(device)}, more than the "
            f"{format_bytes(available)} available; {advice or f'give a smaller {name}'}"
        )
