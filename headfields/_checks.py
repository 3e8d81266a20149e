"""Input checks shared by every public function: each error names the argument and what was expected."""

from __future__ import annotations

from collections.abc import Sequence

import torch


def _shape_str(shape: Sequence[int | str | None]) -> str:
    return "[" + ", ".join("*" if s is None else str(s) for s in shape) + "]"


def check_shape(name: str, x: torch.Tensor, shape: Sequence[int | str | None]) -> None:
    """Check ``x`` has ``len(shape)`` dims; int entries must match, None/str entries are free."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor of shape {_shape_str(shape)}, got {type(x).__name__}")
    ok = x.dim() == len(shape) and all(not isinstance(s, int) or x.shape[i] == s for i, s in enumerate(shape))
    if not ok:
        raise ValueError(f"{name}: expected shape {_shape_str(shape)}, got {list(x.shape)}")


def check_float(name: str, x: torch.Tensor, shape: Sequence[int | str | None]) -> None:
    """A floating tensor of the given shape with only finite values."""
    check_shape(name, x, shape)
    if not x.is_floating_point():
        raise TypeError(f"{name}: expected a floating-point tensor, got {x.dtype}")
    bad = ~torch.isfinite(x)
    if bad.any():
        row = int(bad.reshape(x.shape[0], -1).any(dim=1).nonzero()[0, 0]) if x.dim() else 0
        raise ValueError(f"{name}: expected finite values, found NaN or Inf (first at index {row})")


def check_int(name: str, x: torch.Tensor, shape: Sequence[int | str | None], upper: int | None = None) -> None:
    """An integer tensor of the given shape with values in ``[0, upper)``."""
    check_shape(name, x, shape)
    if x.dtype.is_floating_point or x.dtype.is_complex or x.dtype == torch.bool:
        raise TypeError(f"{name}: expected an integer tensor, got {x.dtype}")
    if upper is not None and x.numel() > 0:
        lo, hi = int(x.min()), int(x.max())
        if lo < 0 or hi >= upper:
            raise ValueError(f"{name}: expected indices in [0, {upper}), got values in [{lo}, {hi}]")


def check_device(name: str, x: torch.Tensor, device: torch.device) -> None:
    if x.device != device:
        raise ValueError(f"{name}: expected a tensor on {device} (the mesh's device), got one on {x.device}")


def check_positive(name: str, value: float | int | None) -> None:
    if value is not None and not value > 0:
        raise ValueError(f"{name}: expected a positive number, got {value}")
