"""Exponential moving average of a module's parameters, swapped in for evaluation (INSTA: decay 0.95).

``shadow <- decay * shadow + (1 - decay) * param`` after each optimiser step. The shadow starts as a copy of the
parameters at construction (not at zero), so it needs no bias correction. Buffers (e.g. an occupancy grid) are
not averaged: they are state, not weights.
"""

from __future__ import annotations

import contextlib
import numbers
from collections.abc import Iterator
from typing import Any

import torch
from torch import Tensor, nn

__all__ = ["ExponentialMovingAverage"]

# INSTA (PAPERS.md, "Optimiser"): evaluation uses an EMA of the weights with decay 0.95.
INSTA_EMA_DECAY = 0.95


class ExponentialMovingAverage:
    """Averaged copies of ``module``'s parameters; ``update()`` after each step, ``average_parameters()`` to evaluate."""

    def __init__(self, module: nn.Module, decay: float = INSTA_EMA_DECAY) -> None:
        if not isinstance(module, nn.Module):
            raise TypeError(f"module: expected a torch.nn.Module, got {type(module).__name__}")
        if isinstance(decay, bool) or not isinstance(decay, numbers.Real) or not 0.0 <= decay <= 1.0:
            raise ValueError(f"decay: expected a number in [0, 1], got {decay!r}")
        self.module = module
        self.decay = float(decay)
        self.num_updates = 0
        self.shadow: dict[str, Tensor] = {name: p.detach().clone() for name, p in self._parameters()}

    def _parameters(self) -> list[tuple[str, nn.Parameter]]:
        return [(name, p) for name, p in self.module.named_parameters() if p.is_floating_point()]

    def _check_matches(self) -> None:
        names = [name for name, _ in self._parameters()]
        if names != list(self.shadow):
            expected = list(self.shadow)
            raise RuntimeError(f"module: its parameters changed since the EMA was made: expected {expected}, got {names}")

    @torch.no_grad()
    def update(self) -> None:
        """Blend the current parameters into the average (call after ``optimizer.step()``)."""
        self._check_matches()
        params = self._parameters()
        for name, p in params:
            s = self.shadow[name]
            if s.device != p.device or s.dtype != p.dtype:  # the module was moved or cast: follow it
                self.shadow[name] = s.to(device=p.device, dtype=p.dtype)
        if params:  # one multi-tensor kernel for every parameter on a GPU, where a lerp each was a launch each
            torch._foreach_lerp_([self.shadow[name] for name, _ in params], [p.detach() for _, p in params], 1.0 - self.decay)
        self.num_updates += 1

    @contextlib.contextmanager
    def average_parameters(self) -> Iterator[None]:
        """Within the block the module holds the averaged weights; the training weights come back afterwards,
        also when the block raises."""
        self._check_matches()
        params = dict(self._parameters())
        backup = {name: p.detach().clone() for name, p in params.items()}
        with torch.no_grad():
            for name, p in params.items():
                p.copy_(self.shadow[name])
        try:
            yield
        finally:
            with torch.no_grad():
                for name, p in params.items():
                    p.copy_(backup[name])

    @torch.no_grad()
    def copy_to(self) -> None:
        """Put the averaged weights into the module for good (a trained model loaded for use, not for training)."""
        self._check_matches()
        for name, p in self._parameters():
            p.copy_(self.shadow[name])

    def state_dict(self) -> dict[str, Any]:
        return {"decay": self.decay, "num_updates": self.num_updates, "shadow": {k: v.clone() for k, v in self.shadow.items()}}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore exactly what ``state_dict()`` returned (parameter names and shapes must match the module)."""
        if not isinstance(state_dict, dict) or set(state_dict) != {"decay", "num_updates", "shadow"}:
            raise ValueError("state_dict: expected a dict with keys 'decay', 'num_updates', 'shadow' (from state_dict())")
        shadow = state_dict["shadow"]
        params = dict(self._parameters())
        if set(shadow) != set(params):
            raise ValueError(f"state_dict: expected averages of the parameters {sorted(params)}, got {sorted(shadow)}")
        for name, p in params.items():
            if shadow[name].shape != p.shape:
                raise ValueError(f"state_dict: expected shape {list(p.shape)} for {name!r}, got {list(shadow[name].shape)}")
        decay = state_dict["decay"]
        if not 0.0 <= decay <= 1.0:
            raise ValueError(f"state_dict: expected a decay in [0, 1], got {decay!r}")
        self.decay = float(decay)
        self.num_updates = int(state_dict["num_updates"])
        self.shadow = {name: shadow[name].detach().to(device=p.device, dtype=p.dtype).clone() for name, p in params.items()}
