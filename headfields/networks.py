"""Network blocks shared by deformers, encoders and decoders: plain fully connected stacks, and the Softplus
that SDF networks differentiate twice.

They live here, below all three, so that an encoder or a deformer need not import a decoder for its MLP. On the CPU,
:func:`linear` and :class:`Mlp` run their float32 products on oneDNN (:mod:`headfields.backends.cpu.onednn`, which
says what it buys, what it checks and how to switch it off).

Inside :func:`reduced_precision`, the products of the MLPs built ``reducible`` (``mlp(..., reducible=True)``: what
maps features to density and colour, never a deformation or an SDF, whose positions bfloat16 would move) evaluated
without autograd take their inputs and weights in bfloat16 and sum in float32: on the CPU by oneDNN's bfloat16 products
(:func:`~headfields.backends.cpu.onednn.bfloat16_products`), on a CUDA GPU with bfloat16 tensor cores by cuBLAS's, as
tiny-cuda-nn runs INSTA's MLPs in half precision. Activations between the products stay in
bfloat16 (on the CPU within a block of rows); a linear output layer (one no ReLU follows) runs in float32 (its bias
and weights rounded to bfloat16 would shift every output alike: -0.1 dB on the portrait's held-out frame, -0.045 dB
with it in float32), a slice that ends on a ReLU (a hidden layer, such as MonoAvatar's ``mlp0[1:-1]``) runs every
product in bfloat16; what an MLP returns is float32.
"""

from __future__ import annotations

import contextlib
import math
import numbers
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache

import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor, nn

from .backends.cpu import onednn
from .device_paths import takes_cuda_path

__all__ = [
    "PRECISIONS",
    "Linear",
    "Mlp",
    "Softplus",
    "check_precision",
    "linear",
    "mlp",
    "mlp_trunk",
    "products_in",
    "reduced_precision",
    "softplus",
    "softplus_",
]

# torch's softplus returns x itself where beta x exceeds this (its default); the derivatives below are the exact
# function's, sigmoid(beta x), which differs from 1 there by at most 2.1e-9.
SOFTPLUS_THRESHOLD = 20.0


_products = threading.local()  # .dtype, .autograd: reduced_precision()'s on this thread


@contextmanager
def reduced_precision(dtype: torch.dtype = torch.bfloat16, autograd: bool = False) -> Iterator[None]:
    """Inside the block (this thread only), the ``reducible`` MLPs (and ``linear(..., reducible=True)``) evaluated
    without autograd run their products with inputs and weights in ``dtype`` (bfloat16, summed in float32): on the CPU
    where oneDNN has them (:func:`~headfields.backends.cpu.onednn.bfloat16_products`), on a CUDA GPU that has them
    (compute capability 8 on); other devices, torch without oneDNN and CPUs or GPUs without
    bfloat16 products keep float32. The inference renderer's
    callers measure what it changes in their images (docs/results.md, "INSTA's 512² frame"). With ``autograd``
    (training: ``TrainingConfig.precision``), also those autograd records, by torch's products: the gradients pass the
    casts back to the float32 weights, which the optimiser updates (tiny-cuda-nn trains its half-precision MLPs from
    float32 master weights the same way).

    ```python
    with torch.no_grad(), reduced_precision():
        rgb = field(x, dirs, frame, head).rgb  # the MLPs' products in bfloat16, their outputs float32
    ```
    """
    if dtype != torch.bfloat16:
        raise ValueError(f"dtype: expected torch.bfloat16 (oneDNN's reduced-precision products), got {dtype}")
    if not isinstance(autograd, bool):
        raise TypeError(f"autograd: expected True or False, got {autograd!r}")
    outer = getattr(_products, "dtype", None), getattr(_products, "autograd", False)
    _products.dtype, _products.autograd = dtype, autograd
    try:
        yield
    finally:
        _products.dtype, _products.autograd = outer


PRECISIONS = ("float32", "bfloat16")  # what products_in takes: the commands' --precision


def products_in(precision: str, autograd: bool = False) -> contextlib.AbstractContextManager:
    """The block in which the reducible MLPs' products run in ``precision``: ``"float32"`` (nothing changes) or
    ``"bfloat16"`` (:func:`reduced_precision`, with ``autograd`` those autograd records too); the viewer's and
    ``render``'s ``--precision``, and training's (``TrainingConfig.precision``)."""
    if check_precision(precision) == "float32":
        return contextlib.nullcontext()
    return reduced_precision(torch.bfloat16, autograd)


def check_precision(precision: str) -> str:
    """``precision`` if it is one of :data:`PRECISIONS`, else a ValueError naming it."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision: expected one of {list(PRECISIONS)}, got {precision!r}")
    return precision


def _product_dtype(x: Tensor, reducible: bool) -> torch.dtype | None:
    """The reduced dtype the products of a ``reducible`` layer take on ``x`` here (None: ``x``'s own)."""
    dtype = getattr(_products, "dtype", None)
    if not reducible or dtype is None or x.dtype != torch.float32:
        return None
    if torch.is_grad_enabled() and not _products.autograd:
        return None
    if not takes_cuda_path(x.device):
        return dtype if onednn.bfloat16_products() else None
    # A CPU taking CUDA's paths (device_paths.cuda_paths) stands for a GPU with bfloat16 tensor cores.
    return dtype if x.device.type != "cuda" or _cuda_bfloat16_products(x.device.index) else None


@cache
def _cuda_bfloat16_products(index: int | None) -> bool:
    """Whether CUDA device ``index`` multiplies bfloat16 on its tensor cores (compute capability 8 on: Ampere, Hopper;
    older GPUs only emulate it, slower than float32), by cuBLAS, which sums in float32."""
    index = torch.cuda.current_device() if index is None else index
    return torch.version.hip is not None or torch.cuda.get_device_properties(index).major >= 8


def linear(
    x: Float[Tensor, "*B I"],
    weight: Float[Tensor, "O I"],
    bias: Float[Tensor, " O"] | None = None,
    reducible: bool = False,
) -> Float[Tensor, "*B O"]:
    """``F.linear(x, weight, bias)``: values (to float32 rounding) and derivatives of any order; float32 products
    on the CPU by oneDNN where torch has it (:func:`~headfields.backends.cpu.onednn.onednn_linear`), everything else by
    ``F.linear``; with ``reducible``, bfloat16 products inside :func:`reduced_precision`.

    ```python
    y = linear(torch.randn(4096, 64), torch.randn(32, 64), torch.zeros(32))  # [4096, 32], on oneDNN
    ```
    """
    reduced = _product_dtype(x, reducible)
    training = reduced is not None and torch.is_grad_enabled()  # bfloat16 with autograd: torch's, through the casts
    if not training and onednn.fits(x, weight, bias):  # the CPU's float32 products (and its bfloat16 ones): oneDNN's
        return onednn.linear(x, weight, bias, reduced)
    if reduced is not None:  # a GPU's bfloat16 products (or training's), a float32 result
        return F.linear(x.to(reduced), weight.to(reduced), None if bias is None else bias.to(reduced)).to(x.dtype)
    return F.linear(x, weight, bias)


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
    :func:`reduced_precision` (with autograd, inside ``reduced_precision(autograd=True)``, layer by layer)."""

    reducible = False

    def __getitem__(self, index):
        part = super().__getitem__(index)
        if isinstance(part, Mlp):
            part.reducible = self.reducible
        return part

    def forward(self, x: Tensor) -> Tensor:
        reduced = _product_dtype(x, self.reducible)
        if torch.is_grad_enabled() and reduced is None:
            return super().forward(x)
        cpu = not takes_cuda_path(x.device) and not torch.is_grad_enabled()  # oneDNN's blocks: no autograd
        fused = self._fused_plan(x) if cpu or reduced is not None else None  # a GPU's plan: its bfloat16 products
        if fused is None:
            return super().forward(x)
        relu_first, plan = fused
        flat = x.reshape(-1, x.shape[-1])
        if reduced is not None:  # the weights cast once a call; a linear output layer's stay float32 (module docstring)
            cast = len(plan) - (not plan[-1][2])
            plan = [(w.to(reduced), None if b is None else b.to(reduced), relu) for w, b, relu in plan[:cast]] + plan[cast:]
        if cpu:  # oneDNN's blocks of rows through every layer; the last rows as below
            out = onednn.mlp_in_blocks(flat, relu_first, plan, rest=lambda h: self._layer_by_layer(h, relu_first, plan, reduced))
        else:
            out = self._layer_by_layer(flat, relu_first, plan, reduced)
        return out.to(x.dtype).reshape(*x.shape[:-1], out.shape[-1])

    def _layer_by_layer(self, h: Tensor, relu_first: bool, plan: list[onednn.Layer], reduced: torch.dtype | None) -> Tensor:
        """``h`` through the layers one by one: as they run (torch's products), or with ``reduced``, the plan's
        products in its weights' dtypes."""
        if reduced is None:
            return super().forward(h)
        h = torch.relu(h) if relu_first else h
        for weight, bias, relu in plan:
            h = F.linear(h.to(weight.dtype), weight, bias)
            h = torch.relu(h) if relu else h
        return h

    def _fused_plan(self, x: Tensor) -> tuple[bool, list[onednn.Layer]] | None:
        """Whether a ReLU comes first (a slice such as ``net[1:]``), then each linear layer's weight, bias and whether
        a ReLU follows it; None where the layers or the input do not fit the fused product (oneDNN's on the CPU)."""
        if not (x.dtype == torch.float32 and x.is_contiguous() and x.numel() > 0):
            return None
        layers = list(self)
        relu_first = bool(layers) and isinstance(layers[0], nn.ReLU)
        plan: list[onednn.Layer] = []
        for layer in layers[relu_first:]:
            if isinstance(layer, nn.ReLU) and plan and not plan[-1][2]:
                plan[-1] = (*plan[-1][:2], True)
            elif isinstance(layer, nn.Linear) and layer.weight.dtype == torch.float32 and layer.weight.is_contiguous():
                plan.append((layer.weight, layer.bias, False))
            else:
                return None
        return (relu_first, plan) if plan and (onednn.onednn_linear() or takes_cuda_path(x.device)) else None


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
    ``d/dgrad = s``, ``d/dx = grad beta s (1 - s) = (grad s) beta (1 - s)``, from the saved ``s`` in a few fused
    passes. It saves its output ``grad s``, not ``grad``: the product that reads the output saves it anyway, and
    ``grad`` (a row block of the layer's width) is then freed, a fifth of an SDF MLP's bytes under double backward."""

    @staticmethod
    def forward(ctx, grad: Tensor, x: Tensor, slope: Tensor, beta: float) -> Tensor:
        out = grad * slope
        ctx.save_for_backward(out, x, slope)
        ctx.beta = beta
        return out

    @staticmethod
    def backward(ctx, outer: Tensor) -> tuple[Tensor, Tensor, None, None]:
        out, x, slope = ctx.saved_tensors
        if torch.is_grad_enabled():  # a third derivative is asked for: the same formulas in differentiable ops
            slope = torch.sigmoid(x * ctx.beta)
            scaled = outer * slope
            return scaled, (outer - scaled) * out * ctx.beta, None, None
        scaled = outer * slope
        return scaled, (outer - scaled).mul_(out).mul_(ctx.beta), None, None


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
