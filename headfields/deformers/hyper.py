"""MonoNPHM's backward deformation with hyper-dimensions (Giebenhain et al., CVPR 2024; hyper-dimensions after
HyperNeRF, Park et al. 2021), and the root finding that carries canonical points forward to posed space.

An MLP reads a posed point ``x`` and a condition ``z`` (MonoNPHM: the expression code and a compressed identity
code) and returns an offset ``Δx`` and ``H`` hyper coordinates ``h``; the canonical field is queried at

    [x + Δx, h]    (3 + H dims).

The trunk is ``hidden_layers`` Linear + Softplus(β) layers (twice differentiable, so an SDF queried through the
deformation can have its gradient trained, as NeuS needs); hidden layer ``skip_layer`` reads the network input
again, concatenated to the previous layer's output. The output layer starts at zero, so the deformation starts
as the identity with ``h = 0`` exactly (the trunk gets gradients once the output layer has moved off zero, i.e.
from the second optimiser step).

The map is backward (posed → canonical). :func:`find_preimage` inverts ``x ↦ x + Δx(x)`` for given canonical
points (MonoNPHM: its anchors, for landmarks) by Newton's method, with gradients by implicit differentiation.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor, nn

from ..backends.cpu.row_blocks import row_blocks, runs_in_row_blocks
from ..checks import check_count, check_float, check_int, check_shape
from ..encoders.frequency import MAX_FREQUENCIES, FrequencyEncoding
from ..networks import Softplus, softplus_
from ..parametric import Head
from .base import Canonical, Deformer

# MonoNPHM's backward deformation network (PAPERS.md, "MonoNPHM"): 6 hidden layers of 400, Softplus(beta = 100),
# skip connection at layer 3, 2 hyper coordinates; regulariser weights: hyper magnitude 0.05, offsets^2 0.0025.
MONONPHM_DEFORMATION_HIDDEN = 400
MONONPHM_DEFORMATION_LAYERS = 6
MONONPHM_SKIP_LAYER = 3
MONONPHM_DEFORMATION_BETA = 100.0
MONONPHM_HYPER_DIM = 2
MONONPHM_OFFSET_WEIGHT = 0.0025
MONONPHM_HYPER_WEIGHT = 0.05
HYPERNERF_HYPER_INIT_STD = 1e-5  # HyperNeRF: the hyper head's weights are drawn with this deviation


def _check_weight(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < math.inf:
        raise ValueError(f"{name}: expected a finite non-negative number, got {value!r}")


@dataclass(frozen=True)
class HyperDeformerConfig:
    """Sizes and regulariser weights of :class:`HyperDeformer`; defaults from MonoNPHM (PAPERS.md)."""

    hidden_dim: int = MONONPHM_DEFORMATION_HIDDEN  # trunk width
    hidden_layers: int = MONONPHM_DEFORMATION_LAYERS  # Linear + Softplus layers
    skip_layer: int | None = MONONPHM_SKIP_LAYER  # this hidden layer (0-based, >= 1) also reads the input; None: no skip
    beta: float = MONONPHM_DEFORMATION_BETA  # Softplus sharpness
    hyper_dim: int = MONONPHM_HYPER_DIM  # H; 0 gives a plain backward offset field
    position_frequencies: int = 0  # NeRF PE bands of x (0: raw x, as MonoNPHM)
    offset_weight: float = MONONPHM_OFFSET_WEIGHT
    hyper_weight: float = MONONPHM_HYPER_WEIGHT
    # HyperNeRF draws its hyper head near zero, not at zero: a canonical field whose hyper inputs start with zero
    # weights (an SDF's sphere initialisation) would otherwise never get a gradient to them, nor give one back.
    hyper_init_std: float = HYPERNERF_HYPER_INIT_STD

    def __post_init__(self) -> None:
        check_count("hidden_dim", self.hidden_dim, 1)
        check_count("hidden_layers", self.hidden_layers, 0)
        if self.skip_layer is not None:
            if self.hidden_layers < 2:
                raise ValueError(f"skip_layer: expected None with fewer than 2 hidden layers, got {self.skip_layer!r}")
            check_count("skip_layer", self.skip_layer, 1, self.hidden_layers - 1)
        if isinstance(self.beta, bool) or not isinstance(self.beta, int | float) or not 0 < self.beta < math.inf:
            raise ValueError(f"beta: expected a finite positive number, got {self.beta!r}")
        check_count("hyper_dim", self.hyper_dim, 0)
        check_count("position_frequencies", self.position_frequencies, 0, MAX_FREQUENCIES)
        _check_weight("offset_weight", self.offset_weight)
        _check_weight("hyper_weight", self.hyper_weight)
        _check_weight("hyper_init_std", self.hyper_init_std)


@dataclass
class HyperDeformation:
    """The deformation at a set of posed points: ``points = [x + offset, hyper]`` is the canonical query."""

    offset: Float[Tensor, "N 3"]  # Δx
    hyper: Float[Tensor, "N H"]  # hyper coordinates (H may be 0)
    points: Float[Tensor, "N D"]  # [x + offset, hyper], D = 3 + H


@dataclass
class HyperRegularizers:
    """MonoNPHM's deformation regularisers on a set of samples, raw and with the config's weights (both can be
    logged); ``total`` is what a training loss adds."""

    offset: Float[Tensor, ""]  # mean ‖Δx‖², unweighted
    hyper: Float[Tensor, ""]  # mean ‖h‖², unweighted (0 when H = 0)
    offset_weight: float
    hyper_weight: float

    @property
    def weighted_offset(self) -> Tensor:
        return self.offset_weight * self.offset

    @property
    def weighted_hyper(self) -> Tensor:
        return self.hyper_weight * self.hyper

    @property
    def total(self) -> Tensor:
        return self.weighted_offset + self.weighted_hyper


class HyperDeformer(Deformer):
    """MonoNPHM's backward deformation MLP ``(x, z) -> (Δx, h)``; see the module docstring.

    ``condition_dim``: the width C of the condition ``z`` (MonoNPHM: expression + identity codes; 0 for an
    unconditioned field). :meth:`deform` is the core; :meth:`forward` is the :class:`Deformer` interface, whose
    condition is ``condition(samples, head, frame)`` (a :class:`headfields.fields.Condition` of width C, such as a
    :class:`~headfields.fields.FrameCondition` of per-frame codes), or by default the head's per-frame expression
    coefficients. The network runs in the parameters'
    dtype; results come in the promoted dtype of the inputs and the parameters.
    """

    def __init__(self, condition_dim: int, config: HyperDeformerConfig | None = None, condition: nn.Module | None = None):
        super().__init__()
        self.condition_dim = check_count("condition_dim", condition_dim, 0)
        if condition is not None and getattr(condition, "dim", None) != condition_dim:
            raise ValueError(f"condition: expected a condition of width {condition_dim}, got {getattr(condition, 'dim', None)}")
        self.condition = condition
        self.config = config = config if config is not None else HyperDeformerConfig()
        self.encoding = FrequencyEncoding(3, config.position_frequencies)
        self.in_dim = self.encoding.out_dim + self.condition_dim
        layers = []
        width = self.in_dim
        for i in range(config.hidden_layers):
            skip = self.in_dim if i == config.skip_layer else 0
            layers.append(nn.Linear(width + skip, config.hidden_dim))
            width = config.hidden_dim
        self.layers = nn.ModuleList(layers)
        self.activation = Softplus(config.beta)
        self.output = nn.Linear(width, 3 + config.hyper_dim)  # [Δx, h]
        # The offsets start at zero exactly (the identity); the hyper coordinates near zero (hyper_init_std).
        nn.init.zeros_(self.output.weight)
        nn.init.zeros_(self.output.bias)
        with torch.no_grad():
            self.output.weight[3:].normal_(0.0, config.hyper_init_std)

    @property
    def hyper_dim(self) -> int:
        return self.config.hyper_dim

    @property
    def out_dim(self) -> int:
        """Width of the canonical points, ``3 + H``."""
        return 3 + self.config.hyper_dim

    def _network(self, x: Tensor, condition: Tensor, index: Tensor | None) -> Tensor:
        """``[Δx, h]`` for checked inputs, in the parameters' dtype; point ``i`` reads ``condition[index[i]]``
        (``index`` None: ``condition[i]``). On the CPU without autograd, a block of points at a time through every
        layer, each Softplus in place (:func:`~headfields.backends.cpu.row_blocks.row_blocks`)."""
        if not runs_in_row_blocks(x):
            return self._layers(x, self._condition_shares(condition), index, self.activation)
        in_place = functools.partial(softplus_, beta=self.activation.beta)
        if index is None:  # a condition per point: its share a block at a time too
            return row_blocks(lambda x, rows: (self._layers(x, self._condition_shares(rows), None, in_place),), x, condition)[0]
        shares = self._condition_shares(condition)  # once per row, gathered by each block
        return row_blocks(lambda x, rows: (self._layers(x, shares, rows, in_place),), x, index)[0]

    def _condition_shares(self, condition: Tensor) -> list[Tensor]:
        """Each input layer's (the first's, the skip layer's; without hidden layers the output's) product by the
        condition's columns of its weight, plus its bias: once per row of ``condition``."""
        dtype, width = self.output.weight.dtype, self.encoding.out_dim
        condition, shares = condition.to(dtype), []
        for i, layer in enumerate(list(self.layers) or [self.output]):
            if i in (0, self.config.skip_layer):
                start = 0 if i == 0 else self.config.hidden_dim  # the skip layer reads the hidden layer first
                shares.append(torch.addmm(layer.bias, condition, layer.weight.t()[start + width :]))
        return shares

    def _layers(self, x: Tensor, shares: list[Tensor], index: Tensor | None, activation: Callable[[Tensor], Tensor]) -> Tensor:
        position = self.encoding(x.to(self.output.weight.dtype))
        shares = iter(shares)
        hidden = None
        for i, layer in enumerate(self.layers):
            if i == 0 or i == self.config.skip_layer:
                hidden = self._input_layer(layer, hidden, position, next(shares), index)
            else:
                hidden = layer(hidden)
            hidden = activation(hidden)
        if hidden is None:  # no hidden layers: the output layer reads the input
            return self._input_layer(self.output, None, position, next(shares), index)
        return self.output(hidden)

    @staticmethod
    def _input_layer(layer: nn.Linear, hidden: Tensor | None, position: Tensor, share: Tensor, index: Tensor | None) -> Tensor:
        """``layer([hidden, position, condition])`` (``hidden`` None: the first layer) as products by the blocks of
        its weight, from the condition's ``share`` (:meth:`_condition_shares`), gathered by ``index``: the rows
        are per frame, far fewer than the points, and no product or double backward carries their columns per
        point. No concatenation to differentiate twice either."""
        weight = layer.weight.t()  # [in, out] view
        start = 0 if hidden is None else hidden.shape[1]
        end = start + position.shape[1]
        # index_select: its backward adds rows, where share[index]'s sorts (14x slower on a CPU)
        out = share if index is None else share.index_select(0, index)
        out = torch.addmm(out, position, weight[start:end])
        return out if hidden is None else torch.addmm(out, hidden, weight[:start])

    def deform(
        self, x: Float[Tensor, "N 3"], condition: Float[Tensor, "U C"], index: Int[Tensor, " N"] | None = None
    ) -> HyperDeformation:
        """Offsets and hyper coordinates at posed points ``x`` under per-point conditions; differentiable (twice)
        in ``x``, ``condition`` and the weights. With ``index``, ``condition`` holds rows shared by many points
        (one per frame, say) and point ``i`` reads row ``index[i]``: the same as ``deform(x, condition[index])``,
        with the condition's share of the network computed once per row."""
        check_float("x", x, [None, 3], device=self.output.weight.device)
        if index is None:
            check_float("condition", condition, [x.shape[0], self.condition_dim], device=x.device)
        else:
            check_float("condition", condition, [None, self.condition_dim], device=x.device)
            check_int("index", index, [x.shape[0]], upper=condition.shape[0], device=x.device)
        return self._deform(x, condition, index)

    def _deform(self, x: Tensor, condition: Tensor, index: Tensor | None = None) -> HyperDeformation:
        out = self._network(x, condition, index)
        dtype = torch.promote_types(torch.promote_types(x.dtype, condition.dtype), out.dtype)
        out = out.to(dtype)
        offset, hyper = out[:, :3], out[:, 3:]
        points = torch.cat([x.to(dtype) + offset, hyper], dim=-1)
        return HyperDeformation(offset=offset, hyper=hyper, points=points)

    def canonicalize(
        self,
        x: Float[Tensor, "N 3"],
        head: Head,
        frame: Int[Tensor, " N"],
        dirs: Float[Tensor, "N 3"] | None,
        condition: Float[Tensor, "N C"] | None = None,
    ) -> Canonical:
        """Canonical points ``[x + Δx, h]`` (``3 + H`` dims). ``condition`` defaults to the deformer's condition
        module, else to ``head.expression[frame]`` (then ``condition_dim`` must equal the head's expression size).
        A condition module that reads each sample's frame alone (its ``per_frame(head)`` gives one row per frame,
        :class:`headfields.fields.Condition`) and the default are evaluated once per frame of the head, each sample
        reading its frame's row (:meth:`deform` with ``index``).

        ``dirs`` pass through unchanged: a backward field maps points, and the direction map would be the inverse
        of its Jacobian (whose hyper rows have no direction at all), so the canonical field should read the posed
        view direction. ``valid`` is all True, ``face`` None; ``extras`` holds ``offset`` and ``hyper``.
        """
        valid = torch.ones(x.shape[0], dtype=torch.bool, device=x.device)
        index = None
        if condition is None and self.condition is not None:
            # A condition of the frame alone gives one row per frame of the head, each sample reading its frame's.
            per_frame = getattr(self.condition, "per_frame", None)
            condition = per_frame(head) if per_frame is not None else None
            if condition is not None:
                index = frame
            else:
                condition = self.condition(Canonical(points=x, dirs=dirs, valid=valid, face=None), head, frame)
        elif condition is None:
            expressions = head.expression.shape[1]
            if expressions != self.condition_dim:
                raise ValueError(
                    f"condition: expected one for a deformer with condition_dim={self.condition_dim}; the default "
                    f"(head.expression[frame]) has {expressions} coefficients"
                )
            condition, index = head.expression, frame
        else:
            check_float("condition", condition, [x.shape[0], self.condition_dim], device=x.device)
        d = self._deform(x, condition, index)
        # The offsets and hyper coordinates, for the regularisers (HyperDeformation(offset, hyper, points)).
        return Canonical(points=d.points, dirs=dirs, valid=valid, face=None, extras={"offset": d.offset, "hyper": d.hyper})

    def regularizers(
        self, deformation: HyperDeformation | Canonical, real: Bool[Tensor, " N"] | None = None
    ) -> HyperRegularizers:
        """MonoNPHM's regularisers: ``offset = mean ‖Δx‖²`` and ``hyper = mean ‖h‖²`` over the samples (of a
        :class:`Canonical` this deformer made: its ``extras``; ``real``: over those where it is True, a fixed shape's
        padding left out), raw and with the config's weights. The paper names
        a hyper "magnitude" without its norm; the squared norm is smooth at ``h = 0`` (where the hyper coordinates
        start), so its gradient vanishes there instead of flipping sign, and it matches the offsets' term. Both are
        0 on no samples."""
        if isinstance(deformation, Canonical) and {"offset", "hyper"} <= deformation.extras.keys():
            deformation = HyperDeformation(deformation.extras["offset"], deformation.extras["hyper"], deformation.points)
        if not isinstance(deformation, HyperDeformation):
            raise TypeError(f"deformation: expected a HyperDeformation, or a Canonical it made, got {type(deformation).__name__}")
        check_shape("deformation.offset", deformation.offset, [None, 3])
        check_shape("deformation.hyper", deformation.hyper, [deformation.offset.shape[0], None])
        offset, hyper = deformation.offset.square(), deformation.hyper.square()
        count = max(deformation.offset.shape[0], 1)  # sum / count: 0, not NaN, on no samples (with a graph)
        if real is not None:
            check_shape("real", real, [deformation.offset.shape[0]], device=offset.device)
            offset, hyper, count = offset * real[:, None], hyper * real[:, None], real.sum().clamp(min=1)
        return HyperRegularizers(
            offset=offset.sum() / count,
            hyper=hyper.sum() / count,
            offset_weight=self.config.offset_weight,
            hyper_weight=self.config.hyper_weight,
        )

    def extra_repr(self) -> str:
        return f"condition_dim={self.condition_dim}, hyper_dim={self.config.hyper_dim}"


# ---------------------------------------------------------------------------------------------- root finding


@dataclass
class Preimage:
    """Solutions of ``x + offset(x) = a``: ``points`` are finite everywhere; where ``converged`` is False they
    are the best iterate found, with ``residual`` ``‖x + offset(x) − a‖`` there."""

    points: Float[Tensor, "N 3"]
    residual: Float[Tensor, " N"]
    converged: Bool[Tensor, " N"]


@dataclass
class _Linearised:
    residual: Float[Tensor, "N 3"]  # x + offset(x) - a
    jacobian: Float[Tensor, "N 3 3"]  # I + d offset / dx


def _checked_offset(offset_fn: Callable[[Tensor], Tensor], x: Tensor) -> Tensor:
    """``offset_fn(x)`` checked to be a float ``[N,3]`` on the device of ``x`` (non-finite values are allowed: a
    trial point may leave the function's domain), in the dtype of ``x``."""
    offset = offset_fn(x)
    check_shape("offset_fn", offset, [x.shape[0], 3], device=x.device)
    if not offset.is_floating_point():
        raise TypeError(f"offset_fn: expected it to return a floating-point tensor, got {offset.dtype}")
    return offset.to(x.dtype)


def _linearise(offset_fn: Callable[[Tensor], Tensor], x: Tensor, targets: Tensor) -> _Linearised:
    """Residual and Jacobian at ``x`` (detached), by three backward passes (``offset_fn`` is pointwise)."""
    with torch.enable_grad():
        q = x.detach().requires_grad_(True)
        offset = _checked_offset(offset_fn, q)
        rows = []
        for i in range(3):
            # No graph to x (an offset that ignores x): that row of d offset / dx is zero.
            grad = (
                torch.autograd.grad(offset[:, i].sum(), q, retain_graph=True, allow_unused=True)
                if offset.requires_grad
                else (None,)
            )
            rows.append(torch.zeros_like(q) if grad[0] is None else grad[0])
    eye = torch.eye(3, dtype=x.dtype, device=x.device)
    return _Linearised(residual=(q + offset - targets).detach(), jacobian=eye + torch.stack(rows, dim=1).detach())


def _solve(jacobian: Tensor, rhs: Tensor) -> tuple[Tensor, Tensor]:
    """``J⁻¹ rhs`` per point and where that was possible; singular or non-finite Jacobians are replaced by the
    identity (so no NaN reaches values or gradients) and flagged False."""
    finite = torch.isfinite(jacobian).flatten(1).all(dim=1)
    eye = torch.eye(3, dtype=jacobian.dtype, device=jacobian.device).expand_as(jacobian)
    safe = torch.where(finite[:, None, None], jacobian, eye)
    _, info = torch.linalg.inv_ex(safe)
    ok = finite & (info == 0)
    safe = torch.where(ok[:, None, None], safe, eye)
    return torch.linalg.solve(safe, rhs.unsqueeze(-1)).squeeze(-1), ok


def find_preimage(
    offset_fn: Callable[[Tensor], Tensor],
    targets: Float[Tensor, "N 3"],
    init: Float[Tensor, "N 3"] | None = None,
    iterations: int = 20,
    tolerance: float = 1e-6,
) -> Preimage:
    """Solve ``x + offset_fn(x) = a`` for each target ``a`` (MonoNPHM: canonical anchors carried to posed space).

    ``offset_fn`` maps ``[N,3] -> [N,3]`` pointwise (row i depends only on row i), e.g.
    ``lambda x: deformer.deform(x, condition).offset``. Damped Newton with a 3×3 Jacobian per point, vectorised
    and without a graph: a step that does not lower a point's residual is rejected and that point's step length
    halved (doubled again, up to 1, after each accepted step). Starts at ``init`` (default: the targets, right
    for small offsets). ``converged``: ``‖x + offset(x) − a‖ <= tolerance``.

    Gradients by the implicit function theorem: with ``J = I + ∂offset/∂x`` at the solution, the returned points
    carry ``∂x/∂a = J⁻¹`` and ``∂x/∂θ = −J⁻¹ ∂offset/∂θ`` for every tensor ``θ`` that ``offset_fn`` reads
    (weights, condition codes). They come from one differentiable evaluation at the solution,
    ``x* − J⁻¹ (r − r̄)`` with ``J`` detached and ``r̄`` the value of ``r``: the value is exactly ``x*``. Exact at
    a root; where not converged they are those of the linearisation there.
    """
    check_float("targets", targets, [None, 3])
    if init is not None:
        check_float("init", init, [targets.shape[0], 3], device=targets.device)
    iterations = check_count("iterations", iterations, 0)
    if isinstance(tolerance, bool) or not isinstance(tolerance, int | float) or not 0 <= tolerance < math.inf:
        raise ValueError(f"tolerance: expected a finite non-negative number, got {tolerance!r}")
    if not callable(offset_fn):
        raise TypeError(f"offset_fn: expected a callable [N,3] -> [N,3], got {type(offset_fn).__name__}")
    a = targets.detach()
    x = (a if init is None else init.detach().to(a.dtype)).clone()
    with torch.no_grad():
        lin = _linearise(offset_fn, x, a)
        norm = _residual_norm(lin.residual)
        step = torch.ones_like(norm)
        for _ in range(iterations):
            if bool((norm <= tolerance).all()):
                break
            delta, _ = _solve(lin.jacobian, lin.residual)
            # offset_fn only ever sees finite points: no step from a non-finite residual or an overflowing solve.
            active = (norm > tolerance) & torch.isfinite(norm) & torch.isfinite(delta).all(dim=1)
            trial = torch.where(active[:, None], x - step[:, None] * delta, x)
            trial_lin = _linearise(offset_fn, trial, a)
            trial_norm = _residual_norm(trial_lin.residual)
            better = active & (trial_norm < norm)
            x = torch.where(better[:, None], trial, x)
            lin = _Linearised(
                residual=torch.where(better[:, None], trial_lin.residual, lin.residual),
                jacobian=torch.where(better[:, None, None], trial_lin.jacobian, lin.jacobian),
            )
            norm = torch.where(better, trial_norm, norm)
            step = torch.where(better, (2 * step).clamp(max=1), torch.where(active, step / 2, step))
    # The implicit-function step: value x (exactly), gradients J⁻¹ ∂r through targets and offset_fn's tensors.
    residual = x + _checked_offset(offset_fn, x) - targets
    residual = torch.where(torch.isfinite(norm)[:, None], residual, torch.zeros_like(residual))  # no NaN into points
    correction, _ = _solve(lin.jacobian, residual - residual.detach())
    points = x - correction
    return Preimage(points=points, residual=norm, converged=norm <= tolerance)


def _residual_norm(residual: Tensor) -> Tensor:
    """``‖r‖`` per point, +inf where ``r`` is not finite (so such a trial is never accepted)."""
    norm = torch.linalg.vector_norm(residual, dim=-1)
    return torch.where(torch.isfinite(norm), norm, torch.full_like(norm, math.inf))
