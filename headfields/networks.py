"""Network blocks shared by deformers, encoders and decoders: plain fully connected stacks, and the Softplus
that SDF networks differentiate twice.

They live here, below all three, so that an encoder or a deformer need not import a decoder for its MLP.

:func:`linear` runs float32 CPU products on oneDNN through a private torch op,
``torch.ops.mkldnn._linear_pointwise`` (the one torch.compile's CPU code calls for linear layers), in this one module.
Before its first use the op is checked against ``F.linear`` on a small product; where torch lacks it, it fails or it
differs, a ``RuntimeWarning`` says so and every layer runs ``F.linear`` (``tests/test_networks.py`` fails when a torch
with oneDNN lacks or changes the op). ``HEADFIELDS_ONEDNN=0`` in the environment, or :func:`use_onednn` (False),
switches it off: ``F.linear`` everywhere, the same values to float32 rounding.

Inside :func:`reduced_precision`, the products of the MLPs built ``reducible`` (``mlp(..., reducible=True)``: what
maps features to density and colour, never a deformation or an SDF, whose positions bfloat16 would move) evaluated
without autograd take their inputs and weights in bfloat16 and sum in float32: on the CPU by oneDNN's bfloat16 products
(AMX or AVX512-BF16 where the CPU has them, 6x float32's on 128-wide layers here), on a CUDA GPU with bfloat16 tensor
cores by cuBLAS's, as tiny-cuda-nn runs INSTA's MLPs in half precision. Activations between the products stay in
bfloat16 (on the CPU within a block of rows); a linear output layer (one no ReLU follows) runs in float32 (its bias
and weights rounded to bfloat16 would shift every output alike: -0.1 dB on the portrait's held-out frame, -0.045 dB
with it in float32), a slice that ends on a ReLU (a hidden layer, such as MonoAvatar's ``mlp0[1:-1]``) runs every
product in bfloat16; what an MLP returns is float32.
"""

from __future__ import annotations

import contextlib
import math
import numbers
import os
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache

import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor, nn

__all__ = [
    "ONEDNN_SWITCH",
    "PRECISIONS",
    "Linear",
    "Mlp",
    "Softplus",
    "bfloat16_products",
    "check_precision",
    "linear",
    "mlp",
    "mlp_trunk",
    "onednn_linear",
    "products_in",
    "reduced_precision",
    "softplus",
    "softplus_",
    "use_onednn",
]

# torch's softplus returns x itself where beta x exceeds this (its default); the derivatives below are the exact
# function's, sigmoid(beta x), which differs from 1 there by at most 2.1e-9.
SOFTPLUS_THRESHOLD = 20.0


# oneDNN's float32 matrix products (torch's mkldnn ops, which torch.compile's CPU code also calls for linear layers),
# where the torch build has them: 1.6-2.7x torch's MKL products for a linear layer's forward and input gradient on
# this project's 2-core AMD CPU, on every MLP shape the models run (docs/results.md, "The CPU's tunings").
ONEDNN_SWITCH = "HEADFIELDS_ONEDNN"  # "0" in the environment: F.linear everywhere
# oneDNN runs blocks of this many rows, the rest goes to torch's product. oneDNN keeps a buffer of the output's size
# for every row count it has seen (about 10 MB for 20,000 rows of 128, up to 1,024 of them): a fixed block keeps one.
ONEDNN_BLOCK_ROWS = 4096

_onednn_on: bool | None = None  # whether linear uses oneDNN; None: decided at its first use (onednn_linear)
_products = threading.local()  # .dtype: the products' dtype inside reduced_precision() on this thread


@contextmanager
def reduced_precision(dtype: torch.dtype = torch.bfloat16) -> Iterator[None]:
    """Inside the block (this thread only), the ``reducible`` MLPs (and ``linear(..., reducible=True)``) evaluated
    without autograd run their products with inputs and weights in ``dtype`` (bfloat16, summed in float32): on the CPU
    where oneDNN has them (:func:`onednn_linear`, :func:`bfloat16_products`), on a CUDA GPU that has them
    (compute capability 8 on); autograd, other devices, torch without oneDNN and CPUs or GPUs without
    bfloat16 products keep float32. The inference renderer's
    callers measure what it changes in their images (docs/results.md, "INSTA's 512² frame").

    ```python
    with torch.no_grad(), reduced_precision():
        rgb = field(x, dirs, frame, head).rgb  # the MLPs' products in bfloat16, their outputs float32
    ```
    """
    if dtype != torch.bfloat16:
        raise ValueError(f"dtype: expected torch.bfloat16 (oneDNN's reduced-precision products), got {dtype}")
    outer = getattr(_products, "dtype", None)
    _products.dtype = dtype
    try:
        yield
    finally:
        _products.dtype = outer


PRECISIONS = ("float32", "bfloat16")  # what products_in takes: the commands' --precision


def products_in(precision: str) -> contextlib.AbstractContextManager:
    """The block in which the reducible MLPs' products run in ``precision``: ``"float32"`` (nothing changes) or
    ``"bfloat16"`` (:func:`reduced_precision`); the viewer's and ``render``'s ``--precision``."""
    return contextlib.nullcontext() if check_precision(precision) == "float32" else reduced_precision(torch.bfloat16)


def check_precision(precision: str) -> str:
    """``precision`` if it is one of :data:`PRECISIONS`, else a ValueError naming it."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision: expected one of {list(PRECISIONS)}, got {precision!r}")
    return precision


def _product_dtype(x: Tensor, reducible: bool) -> torch.dtype | None:
    """The reduced dtype the products of a ``reducible`` layer take on ``x`` here (None: ``x``'s own)."""
    dtype = getattr(_products, "dtype", None)
    if not reducible or dtype is None or torch.is_grad_enabled() or x.dtype != torch.float32:
        return None
    if x.device.type == "cpu":
        return dtype if bfloat16_products() else None
    return dtype if x.device.type == "cuda" and _cuda_bfloat16_products(x.device.index) else None


@cache
def _cuda_bfloat16_products(index: int | None) -> bool:
    """Whether CUDA device ``index`` multiplies bfloat16 on its tensor cores (compute capability 8 on: Ampere, Hopper;
    older GPUs only emulate it, slower than float32), by cuBLAS, which sums in float32."""
    index = torch.cuda.current_device() if index is None else index
    return torch.version.hip is not None or torch.cuda.get_device_properties(index).major >= 8


@cache
def bfloat16_products() -> bool:
    """Whether :func:`reduced_precision` runs bfloat16 products on this CPU: oneDNN has them (AVX-512 BF16 or AMX;
    checked once on a small product). An AVX2-only CPU has none (oneDNN refuses the product, and torch's own
    bfloat16 products there are slower than float32's), so the block keeps float32 there.

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
            f"headfields.networks: torch {torch.__version__}'s torch.ops.mkldnn._linear_pointwise {why}; linear layers "
            f"run F.linear instead (the same values, slower on the CPU). Set {ONEDNN_SWITCH}=0 to silence this.",
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


def linear(
    x: Float[Tensor, "*B I"],
    weight: Float[Tensor, "O I"],
    bias: Float[Tensor, " O"] | None = None,
    reducible: bool = False,
) -> Float[Tensor, "*B O"]:
    """``F.linear(x, weight, bias)``: values (to float32 rounding) and derivatives of any order; float32 products
    on the CPU by oneDNN where torch has it (:func:`onednn_linear`), everything else by ``F.linear``; with
    ``reducible``, bfloat16 products inside :func:`reduced_precision`.

    ```python
    y = linear(torch.randn(4096, 64), torch.randn(32, 64), torch.zeros(32))  # [4096, 32], on oneDNN
    ```
    """
    fits = (
        x.device.type == "cpu"
        and x.dtype == weight.dtype == torch.float32
        and (bias is None or bias.dtype == torch.float32)
        and x.numel() > 0
        and x.is_contiguous()
        and weight.is_contiguous()
        and onednn_linear()
    )
    reduced = _product_dtype(x, reducible)
    if not fits and reduced is not None:  # a GPU's bfloat16 products, a float32 result
        return F.linear(x.to(reduced), weight.to(reduced), None if bias is None else bias.to(reduced)).to(x.dtype)
    if not fits:
        return F.linear(x, weight, bias)
    if reduced is not None:  # reduced_precision(): bfloat16 products, a float32 result
        flat = x.reshape(-1, x.shape[-1])
        out = _onednn_product(flat.to(reduced), weight.to(reduced), None if bias is None else bias.to(reduced))
        return out.to(x.dtype).reshape(*x.shape[:-1], weight.shape[0])
    out = _OneDnnLinear.apply(x.reshape(-1, x.shape[-1]), weight, bias)
    return out.reshape(*x.shape[:-1], weight.shape[0])


class Linear(nn.Linear):
    """``nn.Linear`` (the same parameters and state dict) whose product is :func:`linear`'s."""

    def forward(self, x: Tensor) -> Tensor:
        return linear(x, self.weight, self.bias)


class Mlp(nn.Sequential):
    """An ``nn.Sequential`` (the same indexing and state dict) that, without autograd, runs float32 CPU input one
    block of rows at a time through all its layers where they are linear layers and ReLUs: each block's
    activations stay in the cache, and each ReLU is applied inside the product before it (oneDNN's post-op), instead
    of a pass over memory per layer and per ReLU (3-4x on INSTA's 64-wide MLPs, measured when it landed, 3def6f0). The
    values are the layer-by-layer ones (the same products, block for block); with autograd, or with any other layer
    or input, it is ``nn.Sequential``'s forward. ``reducible`` (slices keep it): bfloat16 products inside
    :func:`reduced_precision`."""

    reducible = False

    def __getitem__(self, index):
        part = super().__getitem__(index)
        if isinstance(part, Mlp):
            part.reducible = self.reducible
        return part

    def forward(self, x: Tensor) -> Tensor:
        if torch.is_grad_enabled():
            return super().forward(x)
        reduced = _product_dtype(x, self.reducible)
        cpu = x.device.type == "cpu"
        fused = self._fused_plan(x) if cpu or reduced is not None else None  # a GPU's plan: its bfloat16 products
        if fused is None:
            return super().forward(x)
        relu_first, plan = fused
        flat = x.reshape(-1, x.shape[-1])
        rows = flat.shape[0]
        if reduced is not None:  # the weights cast once a call; a linear output layer's stay float32 (module docstring)
            cast = len(plan) - (not plan[-1][2])
            plan = [(w.to(reduced), None if b is None else b.to(reduced), relu) for w, b, relu in plan[:cast]] + plan[cast:]
        full = rows - rows % ONEDNN_BLOCK_ROWS if cpu else 0  # oneDNN's blocks: the CPU's
        out = None if rows == full == ONEDNN_BLOCK_ROWS else flat.new_empty(rows, plan[-1][0].shape[0])
        for start in range(0, full, ONEDNN_BLOCK_ROWS):
            h = flat[start : start + ONEDNN_BLOCK_ROWS]
            h = torch.relu(h) if relu_first else h
            for weight, bias, relu in plan:  # each product in its weights' dtype
                h = _onednn_op(h.to(weight.dtype), weight, bias, relu)
            if out is None:  # exactly one block (MonoAvatar's blocks of neighbours): its output, not a copy of it
                return h.to(x.dtype).reshape(*x.shape[:-1], h.shape[-1])
            out[start : start + ONEDNN_BLOCK_ROWS] = h
        if full < rows and reduced is None:  # the last rows as the layers run them one by one (torch's product)
            out[full:] = super().forward(flat[full:])
        elif full < rows:  # ... in the reduced dtype
            h = torch.relu(flat[full:]) if relu_first else flat[full:]
            for weight, bias, relu in plan:
                h = F.linear(h.to(weight.dtype), weight, bias)
                h = torch.relu(h) if relu else h
            out[full:] = h
        return out.reshape(*x.shape[:-1], out.shape[-1])

    def _fused_plan(self, x: Tensor) -> tuple[bool, list[tuple[Tensor, Tensor | None, bool]]] | None:
        """Whether a ReLU comes first (a slice such as ``net[1:]``), then each linear layer's weight, bias and whether
        a ReLU follows it; None where the layers or the input do not fit the fused product (oneDNN's on the CPU)."""
        if not (x.dtype == torch.float32 and x.is_contiguous() and x.numel() > 0):
            return None
        layers = list(self)
        relu_first = bool(layers) and isinstance(layers[0], nn.ReLU)
        plan: list[tuple[Tensor, Tensor | None, bool]] = []
        for layer in layers[relu_first:]:
            if isinstance(layer, nn.ReLU) and plan and not plan[-1][2]:
                plan[-1] = (*plan[-1][:2], True)
            elif isinstance(layer, nn.Linear) and layer.weight.dtype == torch.float32 and layer.weight.is_contiguous():
                plan.append((layer.weight, layer.bias, False))
            else:
                return None
        return (relu_first, plan) if plan and (onednn_linear() or x.device.type != "cpu") else None


def mlp_trunk(in_dim: int, hidden_dim: int, hidden_layers: int) -> nn.Sequential:
    """``hidden_layers`` ReLU layers of width ``hidden_dim`` (none: the identity); its output width is
    ``hidden_dim``, or ``in_dim`` without layers. For networks with several output heads on one trunk."""
    layers: list[nn.Module] = []
    width = in_dim
    for _ in range(hidden_layers):
        layers += [Linear(width, hidden_dim), nn.ReLU()]
        width = hidden_dim
    return Mlp(*layers)


def mlp(in_dim: int, hidden_dim: int, hidden_layers: int, out_dim: int, reducible: bool = False) -> nn.Sequential:
    """``hidden_layers`` ReLU layers of width ``hidden_dim`` and a linear output layer (tiny-cuda-nn's layout):
    :func:`mlp_trunk` and a ``nn.Linear`` to ``out_dim``, in one :class:`Mlp` (``net[-1]`` is the output);
    ``reducible``: its products in bfloat16 inside :func:`reduced_precision`.

    ```python
    net = mlp(32, hidden_dim=64, hidden_layers=2, out_dim=16)  # INSTA's density MLP
    nn.init.zeros_(net[-1].weight)  # an output that starts at zero
    out = net(torch.randn(1024, 32))  # [1024, 16]
    ```
    """
    net = Mlp(*mlp_trunk(in_dim, hidden_dim, hidden_layers), Linear(hidden_dim if hidden_layers else in_dim, out_dim))
    net.reducible = reducible
    return net


class _Softplus(torch.autograd.Function):
    """``F.softplus`` whose derivative, when it is itself differentiated (an eikonal term, NeuS's slopes), is
    :class:`_SoftplusSlope`: torch's own second derivative of softplus recomputes the sigmoid in several passes and
    was a quarter of the hyper NeuS avatar's training step."""

    @staticmethod
    def forward(ctx, x: Tensor, beta: float) -> Tensor:
        ctx.save_for_backward(x)
        ctx.beta = beta
        return F.softplus(x, beta=beta, threshold=SOFTPLUS_THRESHOLD)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None]:
        (x,) = ctx.saved_tensors
        if not torch.is_grad_enabled():  # a first-order backward: torch's one fused pass
            return torch.ops.aten.softplus_backward(grad, x, ctx.beta, SOFTPLUS_THRESHOLD), None
        with torch.no_grad():
            slope = torch.sigmoid(x * ctx.beta)
        return _SoftplusSlope.apply(grad, x, slope, ctx.beta), None


class _SoftplusSlope(torch.autograd.Function):
    """``grad * s`` with ``s = sigmoid(beta x)`` (softplus's derivative), differentiable in ``grad`` and ``x``:
    ``d/dgrad = s``, ``d/dx = grad beta s (1 - s)``, from the saved ``s`` in a few fused passes."""

    @staticmethod
    def forward(ctx, grad: Tensor, x: Tensor, slope: Tensor, beta: float) -> Tensor:
        ctx.save_for_backward(grad, x, slope)
        ctx.beta = beta
        return grad * slope

    @staticmethod
    def backward(ctx, outer: Tensor) -> tuple[Tensor, Tensor, None, None]:
        grad, x, slope = ctx.saved_tensors
        if torch.is_grad_enabled():  # a third derivative is asked for: the same formulas in differentiable ops
            slope = torch.sigmoid(x * ctx.beta)
            scaled = outer * slope
            return scaled, scaled * (1 - slope) * grad * ctx.beta, None, None
        scaled = outer * slope
        curvature = torch.addcmul(scaled, scaled, slope, value=-1)  # outer s (1 - s)
        return scaled, curvature.mul_(grad).mul_(ctx.beta), None, None


def _checked_beta(beta: numbers.Real) -> float:
    if isinstance(beta, bool) or not isinstance(beta, numbers.Real):
        raise TypeError(f"beta: expected a finite number > 0, got {beta!r}")
    if not (math.isfinite(beta) and beta > 0):
        raise ValueError(f"beta: expected a finite number > 0, got {beta!r}")
    return float(beta)


def softplus(x: Tensor, beta: numbers.Real = 1.0) -> Tensor:
    """``F.softplus(x, beta)`` (torch's threshold of 20 included), differentiable any number of times; its
    second derivative, ``beta sigmoid(beta x) (1 - sigmoid(beta x))``, costs a few elementwise passes instead
    of torch's eight. For the SDF and deformation MLPs that an eikonal term or NeuS's slopes differentiate twice."""
    return _Softplus.apply(x, _checked_beta(beta))


def softplus_(x: Tensor, beta: numbers.Real) -> Tensor:
    """:func:`softplus` written over ``x`` (no autograd): for a product that nothing else reads."""
    return torch.ops.aten.softplus.out(x, _checked_beta(beta), SOFTPLUS_THRESHOLD, out=x)


class Softplus(nn.Module):
    """:func:`softplus` as a module (``nn.Softplus(beta)``'s values, a cheaper second derivative)."""

    def __init__(self, beta: numbers.Real = 1.0):
        super().__init__()
        self.beta = _checked_beta(beta)  # checked once here, not at every forward

    def forward(self, x: Tensor) -> Tensor:
        return _Softplus.apply(x, self.beta)

    def extra_repr(self) -> str:
        return f"beta={self.beta}"
