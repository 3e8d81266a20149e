"""MonoAvatar's error-correction field (Bai et al., CVPR 2023): a Nerfies-style SE(3) deformation (Park et al. 2021)
that absorbs tracking errors during training.

For a sample ``q`` of frame ``f`` a trunk MLP reads ``[PE(q) windowed, latent[f]]`` (a learnable per-frame
latent) and three heads, each a small MLP of its own (MonoAvatar: 2 layers, 128 wide), give a log-quaternion
``ω`` (the rotation), a centre ``c`` (the pivot) and a translation ``t``:

    q' = R(q + c) − c + t,    d' = R d,    R = rotation of the unit quaternion exp((0, ω)),

i.e. a rotation by the angle ``2|ω|`` about ``ω / |ω|`` around the point ``−c``, then a shift. The heads' output
layers start at zero, so the field starts as the identity exactly (the rest of the heads, the trunk and the
latents then get gradients once the output layers have moved off zero, i.e. from the second optimiser step).
The positional encoding of ``q`` fades its bands in with Nerfies' coarse-to-fine window (MonoAvatar: 0 → 6
bands over 80k iterations).

The field is on for training after a warm-up and off at test: with ``not self.training`` or
``step < config.start_step`` (``set_step`` each iteration) it returns its input unchanged. Its regularisers
(:meth:`ErrorCorrectionField.regularizers`) are Nerfies' elastic loss on the Jacobian ``∂q'/∂q``, its weight
decayed log-linearly over training (MonoAvatar: 1e-4, then 1e-5), and the magnitude ``‖q − q'‖²``. The field
trains at a tenth of the model's learning rate (MonoAvatar: 1e-4 → 1e-5 against 1e-3 → 1e-4): a model puts its
parameters in an optimiser group of their own with ``lr_scale = config.learning_rate_scale``.

    field = ErrorCorrectionField(num_frames, ErrorCorrectionConfig())
    field.set_step(step)  # each training step: the window, the warm-up, the elastic weight
    out = field(x, head, frame, dirs)  # out.points = R(x + c) − c + t (training, past the warm-up)
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from jaxtyping import Float, Int
from torch import Tensor, nn

from ..checks import IntLike, check_count, check_float, check_frame, check_int, check_positive
from ..encoders.frequency import FrequencyEncoding, frequency_window, window_bands
from ..networks import mlp, mlp_trunk
from ..parametric import Head
from .base import Canonical, Deformer
from .regularisers import elastic_loss, magnitude_loss

# MonoAvatar (PAPERS.md, "MonoAvatar"; the error-correction field and its training): trunk 5 x 128 on PE(q) with
# bands 0 -> 6 over 80k iterations; three heads (rotation, pivot, translation), each 2 layers of 128; learning rate
# 1e-4 -> 1e-5, a tenth of the rest's; off for the first 5k iterations; elastic loss weight 1e-4, 1e-5 late in
# training (the 400k iterations), magnitude 1e-2.
MONOAVATAR_HIDDEN = 128
MONOAVATAR_HIDDEN_LAYERS = 5
MONOAVATAR_HEAD_DIM = 128
MONOAVATAR_HEAD_LAYERS = 2
MONOAVATAR_CORRECTION_FREQUENCIES = 6
MONOAVATAR_WINDOW_STEPS = 80_000
MONOAVATAR_CORRECTION_START = 5_000
MONOAVATAR_CORRECTION_LR_SCALE = 0.1
MONOAVATAR_ELASTIC_WEIGHT = 1e-4
MONOAVATAR_FINAL_ELASTIC_WEIGHT = 1e-5
MONOAVATAR_ELASTIC_DECAY_STEPS = 400_000
MONOAVATAR_MAGNITUDE_WEIGHT = 1e-2
# Not in PAPERS.md: the per-frame latent's width and its initial spread (small, so frames start alike).
LATENT_DIM = 32
LATENT_INIT_STD = 1e-2
# exp map: below this |ω|^2 the Taylor series replaces sin|ω|/|ω| and cos|ω| (no 0/0, no NaN gradient at 0,
# and no cancellation in the float32 gradient of sin(θ)/θ for small θ); series to θ^6: error < 1e-13 here.
SMALL_ANGLE_SQ = 1e-2


@dataclass(frozen=True)
class ErrorCorrectionConfig:
    """Sizes, schedule and regulariser weights of :class:`ErrorCorrectionField`; defaults from MonoAvatar
    (PAPERS.md) except ``latent_dim``, which the paper does not give, and the shape of the elastic weight's
    decay (log-linear over ``elastic_decay_steps``: the paper gives its two ends only)."""

    latent_dim: int = LATENT_DIM  # per-frame latent width (our choice; not in PAPERS.md)
    hidden_dim: int = MONOAVATAR_HIDDEN  # trunk width
    hidden_layers: int = MONOAVATAR_HIDDEN_LAYERS  # trunk ReLU layers
    head_dim: int = MONOAVATAR_HEAD_DIM  # width of each head's hidden layers
    head_layers: int = MONOAVATAR_HEAD_LAYERS  # linear layers per head, its output included (1: a linear head)
    num_frequencies: int = MONOAVATAR_CORRECTION_FREQUENCIES  # PE bands of q (windowed in 0 -> num_frequencies)
    window_steps: int = MONOAVATAR_WINDOW_STEPS  # steps over which the window opens, counted from step 0
    start_step: int = MONOAVATAR_CORRECTION_START  # the field is the identity before this step
    learning_rate_scale: float = MONOAVATAR_CORRECTION_LR_SCALE  # its optimiser group's lr_scale
    elastic_weight: float = MONOAVATAR_ELASTIC_WEIGHT  # at step 0
    final_elastic_weight: float | None = MONOAVATAR_FINAL_ELASTIC_WEIGHT  # at elastic_decay_steps (None: constant)
    elastic_decay_steps: int = MONOAVATAR_ELASTIC_DECAY_STEPS
    magnitude_weight: float = MONOAVATAR_MAGNITUDE_WEIGHT
    elastic_scale: float | None = None  # Geman-McClure scale of the elastic loss (None: plain; Nerfies: 0.03)
    length_scale: float = 0.1  # the encoding reads q / length_scale: a FLAME head (metres) spans about [-1, 1]

    def __post_init__(self) -> None:
        check_count("latent_dim", self.latent_dim, 1)
        check_count("hidden_dim", self.hidden_dim, 1)
        check_count("hidden_layers", self.hidden_layers, 0)
        check_count("head_dim", self.head_dim, 1)
        check_count("head_layers", self.head_layers, 1)
        check_count("num_frequencies", self.num_frequencies, 0)
        check_count("window_steps", self.window_steps, 0)
        check_count("start_step", self.start_step, 0)
        check_count("elastic_decay_steps", self.elastic_decay_steps, 1)
        check_positive("learning_rate_scale", self.learning_rate_scale, finite=True)
        for name in ("elastic_weight", "magnitude_weight"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < float("inf"):
                raise ValueError(f"{name}: expected a finite non-negative number, got {value!r}")
        final = self.final_elastic_weight
        if final is not None and (isinstance(final, bool) or not isinstance(final, int | float) or not 0 < final < float("inf")):
            raise ValueError(f"final_elastic_weight: expected a finite positive number or None, got {final!r}")
        check_positive("length_scale", self.length_scale)
        scale = self.elastic_scale
        if scale is not None and (isinstance(scale, bool) or not isinstance(scale, int | float) or not scale > 0):
            raise ValueError(f"elastic_scale: expected a positive number or None, got {scale!r}")

    def elastic_weight_at(self, step: int) -> float:
        """The elastic loss weight at ``step``: ``elastic_weight`` decayed log-linearly to ``final_elastic_weight`` at
        ``elastic_decay_steps``, then kept (like the learning rate: a function of the step alone)."""
        step = check_count("step", step, 0)
        if self.final_elastic_weight is None or self.elastic_weight == 0:
            return float(self.elastic_weight)
        progress = min(step / self.elastic_decay_steps, 1.0)
        return float(self.elastic_weight * (self.final_elastic_weight / self.elastic_weight) ** progress)


@dataclass
class CorrectionRegularizers:
    """The field's regularisers on a set of samples: raw values and the config's weights, so both can be logged.
    ``total`` is what a training loss adds."""

    elastic: Float[Tensor, ""]  # mean ‖log σ(∂q'/∂q)‖² (Geman-McClure if config.elastic_scale), unweighted
    magnitude: Float[Tensor, ""]  # mean ‖(q − q') / length_scale‖², unweighted (scene units, as the weights assume)
    elastic_weight: Float[Tensor, ""]  # the scheduled weight at the field's step (the field's buffer, set by set_step)
    magnitude_weight: float

    @property
    def weighted_elastic(self) -> Tensor:
        return self.elastic_weight * self.elastic

    @property
    def weighted_magnitude(self) -> Tensor:
        return self.magnitude_weight * self.magnitude

    @property
    def total(self) -> Tensor:
        return self.weighted_elastic + self.weighted_magnitude


def log_quaternion_to_rotation(omega: Float[Tensor, "N 3"]) -> Float[Tensor, "N 3 3"]:
    """Rotation matrices of the unit quaternions ``exp((0, ω)) = (cos|ω|, sin|ω| ω/|ω|)``: a rotation by ``2|ω|``
    about ``ω/|ω|`` (the identity at ``ω = 0``, exactly). Small ``|ω|`` use Taylor series, so values and gradients
    stay finite and accurate at and near 0."""
    check_float("omega", omega, [None, 3])
    theta_sq = omega.square().sum(dim=-1, keepdim=True)  # [N, 1]
    small = theta_sq < SMALL_ANGLE_SQ
    # Double-where: the sqrt never sees 0, so no NaN gradient leaks through the unused branch.
    theta = torch.sqrt(torch.where(small, torch.ones_like(theta_sq), theta_sq))
    t2, t4, t6 = theta_sq, theta_sq.square(), theta_sq**3
    sinc = torch.where(small, 1 - t2 / 6 + t4 / 120 - t6 / 5040, torch.sin(theta) / theta)
    w = torch.where(small, 1 - t2 / 2 + t4 / 24 - t6 / 720, torch.cos(theta))  # [N, 1]
    v = sinc * omega  # [N, 3]: the quaternion's vector part
    x, y, z = v.unbind(-1)
    zero = torch.zeros_like(x)
    skew = torch.stack([zero, -z, y, z, zero, -x, -y, x, zero], dim=-1).reshape(-1, 3, 3)
    eye = torch.eye(3, dtype=omega.dtype, device=omega.device)
    # R = I + 2 w [v]x + 2 [v]x^2 for a unit quaternion (w, v).
    return eye + 2 * w[..., None] * skew + 2 * skew @ skew


def _apply(rotation: Tensor, v: Tensor) -> Tensor:
    """``R v`` per row (broadcast multiply-add)."""
    return (rotation * v[:, None, :]).sum(-1)


@dataclass
class _Corrected:
    points: Float[Tensor, "N 3"]
    rotation: Float[Tensor, "N 3 3"]


def _head(in_dim: int, config: ErrorCorrectionConfig) -> nn.Sequential:
    """``head_layers - 1`` ReLU layers of ``head_dim``, then a linear output of 3 that starts at zero (so the map
    starts as the identity); ``head[-1]`` is the output layer."""
    head = mlp(in_dim, config.head_dim, config.head_layers - 1, 3)
    nn.init.zeros_(head[-1].weight)
    nn.init.zeros_(head[-1].bias)
    return head


class ErrorCorrectionField(Deformer):
    """MonoAvatar's SE(3) error-correction field with a per-frame latent; see the module docstring.

    ``num_frames``: frames of the training video; ``frame`` indices (the same as the head's frames) pick the
    latent and must lie in ``[0, num_frames)`` while the field is active. The head itself is not read (it is
    only checked), so the field can follow any deformer in a :class:`DeformerChain`. The step (``set_step``)
    is saved with ``state_dict``.
    """

    def __init__(self, num_frames: int, config: ErrorCorrectionConfig | None = None):
        super().__init__()
        self.num_frames = check_count("num_frames", num_frames, 1)
        self.config = config = config if config is not None else ErrorCorrectionConfig()
        self.step = 0
        self.encoding = FrequencyEncoding(3, config.num_frequencies)
        # The coarse-to-fine window's band weights at the step (set_step), kept on the device in the parameters' dtype
        # (a module's dtype moves it with them): each pass reads it as it is.
        self.register_buffer("bands", window_bands(self.window, config.num_frequencies).float(), persistent=False)
        # The elastic weight at the step, kept as the bands are: a step captured as a CUDA graph reads it as it decays.
        self.register_buffer("elastic_weight_now", torch.tensor(self.elastic_weight), persistent=False)
        self.latent = nn.Embedding(self.num_frames, config.latent_dim)
        nn.init.normal_(self.latent.weight, std=LATENT_INIT_STD)
        width = self.encoding.out_dim + config.latent_dim
        self.trunk = mlp_trunk(width, config.hidden_dim, config.hidden_layers)
        width = config.hidden_dim if config.hidden_layers else width
        self.rotation_head = _head(width, config)  # log-quaternion ω
        self.center_head = _head(width, config)  # c, the pivot
        self.translation_head = _head(width, config)  # t

    # ------------------------------------------------------------------ schedule

    def set_step(self, step: int) -> None:
        """The training step: sets the coarse-to-fine window and whether the field is on (``step >= start_step``)."""
        self.step = check_count("step", step, 0)
        with torch.no_grad():  # once a step, on the device: the passes read the buffer (no copy from the host each)
            self.bands.copy_(window_bands(self.window, self.config.num_frequencies, self.bands.device))
            self.elastic_weight_now.fill_(self.elastic_weight)

    @property
    def window(self) -> float:
        """The positional encoding's window α at the current step: 0 → ``num_frequencies`` over ``window_steps``."""
        return frequency_window(self.step, self.config.num_frequencies, self.config.window_steps)

    @property
    def elastic_weight(self) -> float:
        """The elastic loss weight at the current step (:meth:`ErrorCorrectionConfig.elastic_weight_at`)."""
        return self.config.elastic_weight_at(self.step)

    @property
    def active(self) -> bool:
        """True when training and past the warm-up; otherwise the field is the identity."""
        return self.training and self.step >= self.config.start_step

    def get_extra_state(self) -> dict:
        return {"step": self.step}

    def set_extra_state(self, state: dict) -> None:
        self.set_step(state["step"])

    # ------------------------------------------------------------------ the map

    def _correct(self, x: Tensor, frame: Tensor) -> _Corrected:
        """``q' = R(q + c) − c + t`` and ``R`` for checked inputs; the network runs in the parameters' dtype, the
        transform in the promoted dtype of ``x`` and the parameters."""
        param_dtype = self.latent.weight.dtype
        dtype = torch.promote_types(x.dtype, param_dtype)
        features = torch.cat(
            [self.encoding(x.to(param_dtype) / self.config.length_scale, bands=self.bands), self.latent(frame)], dim=-1
        )
        hidden = self.trunk(features)
        omega = self.rotation_head(hidden).to(dtype)
        center = self.center_head(hidden).to(dtype)
        translation = self.translation_head(hidden).to(dtype)
        rotation = log_quaternion_to_rotation(omega)
        points = _apply(rotation, x.to(dtype) + center) - center + translation
        return _Corrected(points=points, rotation=rotation)

    def _check_x(self, x: Tensor) -> None:
        check_float("x", x, [None, 3], device=self.latent.weight.device)

    def canonicalize(
        self,
        x: Float[Tensor, "N 3"],
        head: Head,
        frame: Int[Tensor, " N"],
        dirs: Float[Tensor, "N 3"] | None,
    ) -> Canonical:
        valid = torch.ones(x.shape[0], dtype=torch.bool, device=x.device)
        if not self.active:
            return Canonical(points=x, dirs=dirs, valid=valid, face=None)
        self._check_x(x)
        check_int("frame", frame, [x.shape[0]], upper=self.num_frames)
        corrected = self._correct(x, frame)
        # R is a rotation: directions keep their length (no renormalisation, so the identity stays exact).
        out_dirs = None if dirs is None else _apply(corrected.rotation, dirs.to(corrected.rotation.dtype))
        return Canonical(points=corrected.points, dirs=out_dirs, valid=valid, face=None)

    def jacobian(self, x: Float[Tensor, "N 3"], frame: Int[Tensor, " N"] | IntLike) -> Float[Tensor, "N 3 3"]:
        """``J[n, i, j] = ∂q'_i / ∂q_j`` of the active map at the samples, by three backward passes (each sample's
        output depends only on its own input), with ``create_graph`` so it can be trained through. Gradients
        reach the parameters, not ``x``. Computed whatever the step and mode (for inspection and tests)."""
        self._check_x(x)
        frame = check_frame("frame", frame, x.shape[0], self.num_frames, x.device)
        return self._jacobian(x, frame)[0]

    def _jacobian(self, x: Tensor, frame: Tensor) -> tuple[Tensor, Tensor]:
        with torch.enable_grad():
            q = x.detach().requires_grad_(True)
            points = self._correct(q, frame).points
            rows = [torch.autograd.grad(points[:, i].sum(), q, create_graph=True)[0] for i in range(3)]
        return torch.stack(rows, dim=1).to(points.dtype), points - q.to(points.dtype)

    def regularizers(self, x: Float[Tensor, "N 3"], frame: Int[Tensor, " N"] | IntLike) -> CorrectionRegularizers:
        """Nerfies' elastic loss on ``∂q'/∂q`` and the magnitude ``‖(q − q') / length_scale‖²`` (means over the
        samples), raw and with their weights (the elastic one scheduled: :attr:`elastic_weight`). The magnitude is
        measured in the encoding's unit: the paper's weight (1e-2) assumes a head of about unit size; in metres it
        let the field drift by centimetres within a few dozen steps. The Jacobian costs three extra backward
        passes through the trunk with a graph kept for the second-order gradient: pass a subset of the batch's
        samples (e.g. a few thousand), not all. Gradients reach the field's parameters, not ``x``. While the field
        is inactive both are 0 (it is the identity there)."""
        self._check_x(x)
        frame = check_frame("frame", frame, x.shape[0], self.num_frames, x.device)
        weights = {"elastic_weight": self.elastic_weight_now, "magnitude_weight": float(self.config.magnitude_weight)}
        if not self.active or x.shape[0] == 0:
            # A zero on the parameters' graph, so ``total.backward()`` always works.
            zero = (self.latent.weight.sum() * 0.0).to(torch.promote_types(x.dtype, self.latent.weight.dtype))
            return CorrectionRegularizers(elastic=zero, magnitude=zero, **weights)
        jacobian, displacement = self._jacobian(x, frame)
        return CorrectionRegularizers(
            elastic=elastic_loss(jacobian, scale=self.config.elastic_scale),
            magnitude=magnitude_loss(displacement / self.config.length_scale),
            **weights,
        )

    def extra_repr(self) -> str:
        return f"num_frames={self.num_frames}, step={self.step}"
