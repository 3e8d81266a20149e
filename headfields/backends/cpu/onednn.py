"""oneDNN's products on the CPU: the linear layers' float32 products, the ReLU MLPs' blocks of rows, and bfloat16
products inside :func:`~headfields.networks.reduced_precision`, for :mod:`headfields.networks` (whose ``linear`` and
``Mlp`` dispatch here on the CPU).

They run through a private torch op, ``torch.ops.mkldnn._linear_pointwise`` (the one torch.compile's CPU code calls
for linear layers), in this one module: 1.6-2.7x torch's MKL products for a linear layer's forward and input gradient
on this project's 2-core AMD CPU, on every MLP shape the models run (docs/results.md, "The CPU's tunings"). Before its
first use the op is checked against ``F.linear`` on a small product; where torch lacks it, it fails or it differs, a
``RuntimeWarning`` says so and every layer runs ``F.linear`` (``tests/unit/core/test_networks.py`` fails when a torch with oneDNN
lacks or changes the op). ``HEADFIELDS_ONEDNN=0`` in the environment, or :func:`use_onednn` (False), switches it off:
``F.linear`` everywhere, the same values to float32 rounding.

bfloat16 products (AMX or AVX512-BF16 where the CPU has them, 6x float32's on 128-wide layers here) are oneDNN's too
(:func:`bfloat16_products`).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable
from functools import cache

import torch
import torch.nn.functional as F
from torch import Tensor

from ...device_paths import takes_cuda_path

__all__ = [
    "ONEDNN_BLOCK_ROWS",
    "ONEDNN_SWITCH",
    "bfloat16_products",
    "fits",
    "linear",
    "mlp_in_blocks",
    "onednn_linear",
    "use_onednn",
]

ONEDNN_SWITCH = "HEADFIELDS_ONEDNN"  # "0" in the environment: F.linear everywhere
# oneDNN runs blocks of this many rows, the rest goes to torch's product. oneDNN keeps a buffer of the output's size
# for every row count it has seen (about 10 MB for 20,000 rows of 128, up to 1,024 of them): a fixed block keeps one.
ONEDNN_BLOCK_ROWS = 4096

_onednn_on: bool | None = None  # whether linear uses oneDNN; None: decided at its first use (onednn_linear)

# A linear layer of an MLP's plan: its weight, its bias and whether a ReLU follows it.
Layer = tuple[Tensor, Tensor | None, bool]


@cache
def bfloat16_products() -> bool:
    """Whether :func:`~headfields.networks.reduced_precision` runs bfloat16 products on this CPU: oneDNN has them
    (AVX-512 BF16 or AMX; checked once on a small product). An AVX2-only CPU has none (oneDNN refuses the product, and
    torch's own bfloat16 products there are slower than float32's), so the block keeps float32 there.

    ```python
    print(bfloat16_products())  # True on a CPU with AVX-512 BF16
    ```
    """
    if not onednn_linear():
        return False
    x, weight, bias = torch.ones(8, 16, dtype=torch.bfloat16), torch.ones(4, 16, dtype=torch.bfloat16), None
    try:
        with torch.no_grad():
            return bool((_onednn_op(x, weight, bias) == 16).all())
    except RuntimeError:  # "could not create a primitive descriptor": no bfloat16 products on this CPU
        return False


def _onednn_op(x: Tensor, weight: Tensor, bias: Tensor | None, relu: bool = False) -> Tensor:
    """``x weight^T + bias`` by torch's private oneDNN op (its only call site): 2-d CPU tensors of one dtype
    (float32, or bfloat16 in :func:`reduced_precision`); with ``relu``, the ReLU applied in the product (oneDNN's
    post-op), else no activation ("none")."""
    if relu:
        return torch.ops.mkldnn._linear_pointwise(x, weight, bias, "relu", [None], "")
    return torch.ops.mkldnn._linear_pointwise(x, weight, bias, "none", [], "")


@cache
def _onednn_works() -> bool:
    """Whether this torch has oneDNN and its private linear op gives ``F.linear``'s values on a small product (checked
    once); where it has oneDNN but the op is missing, fails or differs, a warning says so."""
    if not torch.backends.mkldnn.is_available():
        return False
    g = torch.Generator().manual_seed(0)
    x, weight, bias = torch.randn(8, 5, generator=g), torch.randn(3, 5, generator=g), torch.randn(3, generator=g)
    try:
        with torch.no_grad():
            works = torch.allclose(_onednn_op(x, weight, bias), F.linear(x, weight, bias), rtol=1e-5, atol=1e-5)
        why = "gives other values than F.linear"
    except Exception as error:  # missing (AttributeError, RuntimeError) or a changed signature (RuntimeError)
        works, why = False, f"failed: {type(error).__name__}: {error}"
    if not works:
        warnings.warn(
            f"headfields.backends.cpu.onednn: torch {torch.__version__}'s torch.ops.mkldnn._linear_pointwise {why}; "
            f"linear layers run F.linear instead (the same values, slower on the CPU). Set {ONEDNN_SWITCH}=0 to silence this.",
            RuntimeWarning,
            stacklevel=3,
        )
    return works


def onednn_linear() -> bool:
    """Whether :func:`linear` runs float32 CPU products on oneDNN: torch has the op and it passed its check (made at
    the first call), unless switched off (``HEADFIELDS_ONEDNN=0``, :func:`use_onednn`).

    ```python
    print(onednn_linear())  # True on torch's x86 Linux wheels
    ```
    """
    global _onednn_on
    if _onednn_on is None:
        _onednn_on = os.environ.get(ONEDNN_SWITCH, "1") != "0" and _onednn_works()
    return _onednn_on


def use_onednn(enabled: bool) -> bool:
    """Switch oneDNN for :func:`linear` on or off for this process (the environment's ``HEADFIELDS_ONEDNN=0`` switches
    it off from the start); returns :func:`onednn_linear`, False where torch's op is missing or failed its check.

    ```python
    use_onednn(False)  # every layer runs F.linear
    ```
    """
    global _onednn_on
    if not isinstance(enabled, bool):
        raise TypeError(f"enabled: expected True or False, got {enabled!r}")
    _onednn_on = enabled and _onednn_works()
    return _onednn_on


def _onednn_product(x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    """``x weight^T + bias`` for 2-d contiguous CPU tensors of one dtype: full blocks of rows by oneDNN, the rest by
    torch's ``addmm``."""
    rows = x.shape[0]
    if rows == ONEDNN_BLOCK_ROWS:  # one block (MonoAvatar's blocks of neighbours): oneDNN's output, not a copy of it
        return _onednn_op(x, weight, bias)
    full = rows - rows % ONEDNN_BLOCK_ROWS
    out = x.new_empty(rows, weight.shape[0])
    for start in range(0, full, ONEDNN_BLOCK_ROWS):
        block = slice(start, start + ONEDNN_BLOCK_ROWS)
        out[block] = _onednn_op(x[block], weight, bias)
    if full < rows:
        rest = out[full:]
        if bias is None:
            torch.mm(x[full:], weight.t(), out=rest)
        else:
            torch.addmm(bias, x[full:], weight.t(), out=rest)
    return out


class _OneDnnLinear(torch.autograd.Function):
    """``F.linear`` on 2-d contiguous float32 CPU input, forward and input gradient by oneDNN; the weight's
    gradient by torch's product (a reduction over the rows, no faster in oneDNN). A backward that is itself
    differentiated (an eikonal term) runs in differentiable torch ops."""

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        ctx.save_for_backward(x, weight)
        return _onednn_product(x, weight, bias)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor | None, Tensor | None, Tensor | None]:
        x, weight = ctx.saved_tensors
        want_x, want_weight, want_bias = ctx.needs_input_grad
        grad_bias = grad.sum(0) if want_bias else None
        grad_weight = grad.t() @ x if want_weight else None
        if not want_x:
            grad_x = None
        elif torch.is_grad_enabled():
            grad_x = grad @ weight
        else:
            grad_x = _onednn_product(grad.contiguous(), weight.t().contiguous(), None)
        return grad_x, grad_weight, grad_bias


def fits(x: Tensor, weight: Tensor, bias: Tensor | None) -> bool:
    """Whether :func:`linear` runs ``x weight^T + bias``: float32 CPU tensors, ``x`` and ``weight`` contiguous, and
    oneDNN on (:func:`onednn_linear`)."""
    return (
        not takes_cuda_path(x.device)
        and x.dtype == weight.dtype == torch.float32
        and (bias is None or bias.dtype == torch.float32)
        and x.numel() > 0
        and x.is_contiguous()
        and weight.is_contiguous()
        and onednn_linear()
    )


def linear(x: Tensor, weight: Tensor, bias: Tensor | None, reduced: torch.dtype | None) -> Tensor:
    """``F.linear(x, weight, bias)`` for input that :func:`fits`: values (to float32 rounding) and derivatives of any
    order; with ``reduced`` (bfloat16, no autograd), the products in that dtype and a float32 result."""
    flat = x.reshape(-1, x.shape[-1])
    if reduced is not None:
        out = _onednn_product(flat.to(reduced), weight.to(reduced), None if bias is None else bias.to(reduced)).to(x.dtype)
    else:
        out = _OneDnnLinear.apply(flat, weight, bias)
    return out.reshape(*x.shape[:-1], weight.shape[0])


def mlp_in_blocks(flat: Tensor, relu_first: bool, plan: list[Layer], rest: Callable[[Tensor], Tensor]) -> Tensor:
    """``flat`` (2-d, contiguous, no autograd) through an MLP's layers: a ReLU first if ``relu_first``, then each of
    ``plan``'s linear layers, in its weight's dtype, and the ReLU after it if it has one. Blocks of ONEDNN_BLOCK_ROWS
    rows run all the layers in turn, so each block's activations stay in the cache, each ReLU inside the product
    before it (oneDNN's post-op); the rows past the last full block go through ``rest``. Exactly one block (MonoAvatar's
    blocks of neighbours): its output, not a copy of it; else a tensor of ``flat``'s dtype."""
    rows = flat.shape[0]
    full = rows - rows % ONEDNN_BLOCK_ROWS
    out = None if rows == full == ONEDNN_BLOCK_ROWS else flat.new_empty(rows, plan[-1][0].shape[0])
    for start in range(0, full, ONEDNN_BLOCK_ROWS):
        h = flat[start : start + ONEDNN_BLOCK_ROWS]
        h = torch.relu(h) if relu_first else h
        for weight, bias, relu in plan:  # each product in its weights' dtype
            h = _onednn_op(h.to(weight.dtype), weight, bias, relu)
        if out is None:
            return h
        out[start : start + ONEDNN_BLOCK_ROWS] = h
    if full < rows:
        out[full:] = rest(flat[full:])
    return out
