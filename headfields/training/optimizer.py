"""The optimiser a paper trains with: Adam over the model's parameter groups, its learning-rate schedule, gradient
clipping, and the moving average of the weights that evaluation uses."""

from __future__ import annotations

import contextlib
import numbers
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ..checks import check_count, check_non_negative, check_positive
from .contract import AvatarModel
from .ema import ExponentialMovingAverage

__all__ = [
    "DecayingAdam",
    "OptimizerConfig",
    "averaged",
    "build_optimizer",
    "descend",
    "exponential_learning_rate",
    "set_learning_rate",
    "step_if",
]


@dataclass(frozen=True)
class OptimizerConfig:
    """Adam as a paper trains: its learning rate decayed exponentially to ``final_learning_rate`` over
    ``decay_steps`` (None: constant), the gradients' total norm clipped to ``max_grad_norm`` (None: no
    clipping), and evaluation with an exponential moving average of the weights of decay ``ema_decay`` (None:
    the weights as they are)."""

    learning_rate: float
    final_learning_rate: float | None = None
    decay_steps: int = 1
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    weight_decay: float = 0.0  # Adam's L2 penalty
    max_grad_norm: float | None = None
    ema_decay: float | None = None

    def __post_init__(self) -> None:
        # Each rate finite: Adam takes lr=inf and the weights turn NaN at the first step, then a loss names a tensor.
        check_positive("learning_rate", self.learning_rate, finite=True)
        check_positive("final_learning_rate", self.final_learning_rate, finite=True)
        check_count("decay_steps", self.decay_steps, 1)
        check_positive("max_grad_norm", self.max_grad_norm)
        if len(self.betas) != 2 or not all(isinstance(b, numbers.Real) and 0 <= b < 1 for b in self.betas):
            raise ValueError(f"betas: expected two numbers in [0, 1), got {self.betas}")
        for name in ("eps", "weight_decay"):
            check_non_negative(name, getattr(self, name))
        if self.ema_decay is not None and not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"ema_decay: expected a decay in [0, 1) or None, got {self.ema_decay}")


def exponential_learning_rate(optimizer: torch.optim.Optimizer, step: int, initial: float, final: float, steps: int) -> None:
    """Set every group's learning rate to ``initial`` decayed exponentially to ``final`` at ``steps`` (then kept),
    times the group's ``lr_scale``: a function of the step alone, so a resumed run gets the same rates."""
    progress = min(step / steps, 1.0)
    for group in optimizer.param_groups:
        group["lr"] = initial * (final / initial) ** progress * group.get("lr_scale", 1.0)


FUSED_ADAM_DEVICES = ("cpu", "cuda")


def build_optimizer(model: nn.Module, config: OptimizerConfig) -> torch.optim.Adam:
    """Adam over an :class:`~.contract.AvatarModel`'s ``param_groups()`` (each group's ``lr_scale`` multiplies the
    rate), or over any other module's trainable parameters; with ``max_grad_norm``, each step first clips the
    gradients' total norm (a step pre-hook: under DDP the gradients are already averaged, so every rank clips alike)."""
    c = config
    groups = model.param_groups() if isinstance(model, AvatarModel) else [{"params": list(model.parameters())}]
    groups = [{**g, "params": [p for p in g["params"] if p.requires_grad]} for g in groups]
    for g in groups:
        g.setdefault("lr_scale", 1.0)
        g["lr"] = c.learning_rate * g["lr_scale"]
    params = [p for g in groups for p in g["params"]]
    # torch's fused Adam: one kernel over all parameters, 7x faster than the per-tensor loop on a hash grid's table
    # on CPU (tools/profile_step.py). It takes floating parameters on CPU or CUDA alone.
    fused = bool(params) and all(p.is_floating_point() and p.device.type in FUSED_ADAM_DEVICES for p in params)
    optimizer = torch.optim.Adam(
        groups, lr=c.learning_rate, betas=c.betas, eps=c.eps, weight_decay=c.weight_decay, fused=fused or None
    )
    if c.max_grad_norm is not None:
        limit = c.max_grad_norm

        def clip(*_) -> None:  # a step pre-hook returns None: the step's arguments stay as they are
            nn.utils.clip_grad_norm_(params, limit)

        optimizer.register_step_pre_hook(clip)
    return optimizer


def step_if(optimizer: torch.optim.Optimizer, finite: Tensor) -> None:
    """``optimizer.step()``, which changes nothing (weights, moments, step count) where the 0-d bool ``finite``
    is False, without reading it back: a step of fixed shapes whose loss is checked two steps late.

    torch's fused Adam takes the flag itself, as GradScaler hands it over: the ``found_inf`` attribute, read by
    ``Adam.step`` (a private protocol of torch's; tests/unit/training/test_optimizer.py fails if it goes): one kernel for every
    parameter. Any other optimiser gets its gradients zeroed first, a kernel a parameter (its moments still move)."""
    if not getattr(optimizer, "defaults", {}).get("fused"):
        for group in optimizer.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    p.grad.masked_fill_(~finite, 0.0)
        optimizer.step()
        return
    optimizer.found_inf = (~finite).to(torch.float32).reshape(())
    try:
        optimizer.step()
    finally:
        del optimizer.found_inf


def descend(
    optimizers: Sequence[torch.optim.Optimizer],
    loss: Tensor,
    finite: Tensor | None = None,
    after_backward: Callable[[], None] | None = None,
    clip: tuple[Sequence[Tensor], float] | None = None,
) -> None:
    """One gradient step, the library's only one: the gradients of ``loss``, then each optimiser's step, which a
    non-finite loss's ``finite`` flag (a 0-d bool, not read back: :func:`step_if`) turns into no change.
    ``after_backward`` runs between (a strategy's density statistics, a fit's gradient masks); ``clip``: (parameters,
    max norm), their gradients' norm clipped before the step."""
    for optimizer in optimizers:
        optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if after_backward is not None:
        after_backward()
    if clip is not None:
        torch.nn.utils.clip_grad_norm_(clip[0], clip[1])
    for optimizer in optimizers:
        if finite is None:
            optimizer.step()
        else:
            step_if(optimizer, finite)


def set_learning_rate(optimizer: torch.optim.Optimizer, config: OptimizerConfig, step: int) -> None:
    """The learning rates of ``step`` (constant without ``final_learning_rate``)."""
    final = config.final_learning_rate if config.final_learning_rate is not None else config.learning_rate
    exponential_learning_rate(optimizer, step, config.learning_rate, final, config.decay_steps)


class DecayingAdam:
    """Deprecated (goes in the next release): give the model an :class:`OptimizerConfig` and let :func:`train`
    build it. Adam over a module's trainable parameters with the rate decayed from ``initial`` to ``final``
    over ``steps`` steps and optional clipping: :func:`build_optimizer` and :func:`set_learning_rate`."""

    def __init__(self, initial: float, final: float, steps: int, max_grad_norm: float | None = None):
        warnings.warn(
            "DecayingAdam is deprecated: give the model an OptimizerConfig (train builds it); it goes in the next release",
            DeprecationWarning,
            stacklevel=2,
        )
        check_positive("initial", initial, finite=True)
        check_positive("final", final, finite=True)
        self.config = OptimizerConfig(initial, final, check_count("steps", steps, 1), max_grad_norm=max_grad_norm)
        self.optimizer: torch.optim.Adam | None = None

    def build(self, module: nn.Module) -> torch.optim.Adam:
        self.optimizer = build_optimizer(module, self.config)
        return self.optimizer

    def set_step(self, step: int) -> None:
        if self.optimizer is not None:  # before build there is nothing to set
            set_learning_rate(self.optimizer, self.config, step)


def averaged(ema: ExponentialMovingAverage | None):
    """The averaged weights in place for a ``with`` block (the weights as they are without an average)."""
    return contextlib.nullcontext() if ema is None else ema.average_parameters()
