"""Network blocks shared by deformers, encoders and decoders: plain fully connected stacks, and the Softplus
that SDF networks differentiate twice.

They live here, below all three, so that an encoder or a deformer need not import a decoder for its MLP.
"""

from __future__ import annotations

import math
import numbers

import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor, nn

__all__ = ["Linear", "Softplus", "linear", "mlp", "mlp_trunk", "softplus"]

# torch's softplus returns x itself where beta x exceeds this (its default); the derivatives below are the exact
# function's, sigmoid(beta x), which differs from 1 there by at most 2.1e-9.
SOFTPLUS_THRESHOLD = 20.0


# oneDNN's float32 matrix products (torch's mkldnn ops, which torch.compile's CPU code also calls for linear layers),
# where the torch build has them: 1.6-2.7x torch's MKL products for a linear layer's forward and input gradient on
# this project's 2-core AMD CPU, on every MLP shape the models run (docs/benchmarks.md).
ONEDNN_LINEAR = torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")
# oneDNN runs blocks of this many rows, the rest goes to torch's product. oneDNN keeps a buffer of the output's size
# for every row count it has seen (about 10 MB for 20,000 rows of 128, up to 1,024 of them): a fixed block keeps one.
ONEDNN_BLOCK_ROWS = 4096


def _onednn_product(x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    """``x weight^T + bias`` for 2-d contiguous float32 CPU tensors: full blocks of rows by oneDNN, the rest by
    torch's ``addmm``."""
    rows = x.shape[0]
    full = rows - rows % ONEDNN_BLOCK_ROWS
    out = x.new_empty(rows, weight.shape[0])
    for start in range(0, full, ONEDNN_BLOCK_ROWS):
        block = slice(start, start + ONEDNN_BLOCK_ROWS)
        out[block] = torch.ops.mkldnn._linear_pointwise(x[block], weight, bias, "none", [], "")
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
    x: Float[Tensor, "*B I"], weight: Float[Tensor, "O I"], bias: Float[Tensor, " O"] | None = None
) -> Float[Tensor, "*B O"]:
    """``F.linear(x, weight, bias)``: values (to float32 rounding) and derivatives of any order; float32 products
    on the CPU by oneDNN where torch has it (:data:`ONEDNN_LINEAR`), everything else by ``F.linear``."""
    fits = (
        ONEDNN_LINEAR
        and x.device.type == "cpu"
        and x.dtype == weight.dtype == torch.float32
        and (bias is None or bias.dtype == torch.float32)
        and x.numel() > 0
        and x.is_contiguous()
        and weight.is_contiguous()
    )
    if not fits:
        return F.linear(x, weight, bias)
    out = _OneDnnLinear.apply(x.reshape(-1, x.shape[-1]), weight, bias)
    return out.reshape(*x.shape[:-1], weight.shape[0])


class Linear(nn.Linear):
    """``nn.Linear`` (the same parameters and state dict) whose product is :func:`linear`'s."""

    def forward(self, x: Tensor) -> Tensor:
        return linear(x, self.weight, self.bias)


def mlp_trunk(in_dim: int, hidden_dim: int, hidden_layers: int) -> nn.Sequential:
    """``hidden_layers`` ReLU layers of width ``hidden_dim`` (none: the identity); its output width is
    ``hidden_dim``, or ``in_dim`` without layers. For networks with several output heads on one trunk."""
    layers: list[nn.Module] = []
    width = in_dim
    for _ in range(hidden_layers):
        layers += [Linear(width, hidden_dim), nn.ReLU()]
        width = hidden_dim
    return nn.Sequential(*layers)


def mlp(in_dim: int, hidden_dim: int, hidden_layers: int, out_dim: int) -> nn.Sequential:
    """``hidden_layers`` ReLU layers of width ``hidden_dim`` and a linear output layer (tiny-cuda-nn's layout):
    :func:`mlp_trunk` and a ``nn.Linear`` to ``out_dim``, in one ``nn.Sequential`` (``net[-1]`` is the output).

    ```python
    net = mlp(32, hidden_dim=64, hidden_layers=2, out_dim=16)  # INSTA's density MLP
    nn.init.zeros_(net[-1].weight)  # an output that starts at zero
    out = net(torch.randn(1024, 32))  # [1024, 16]
    ```
    """
    trunk = mlp_trunk(in_dim, hidden_dim, hidden_layers)
    return nn.Sequential(*trunk, Linear(hidden_dim if hidden_layers else in_dim, out_dim))


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


class Softplus(nn.Module):
    """:func:`softplus` as a module (``nn.Softplus(beta)``'s values, a cheaper second derivative)."""

    def __init__(self, beta: numbers.Real = 1.0):
        super().__init__()
        self.beta = _checked_beta(beta)  # checked once here, not at every forward

    def forward(self, x: Tensor) -> Tensor:
        return _Softplus.apply(x, self.beta)

    def extra_repr(self) -> str:
        return f"beta={self.beta}"
