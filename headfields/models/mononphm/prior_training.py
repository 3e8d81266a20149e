"""Training MonoNPHM's prior (:class:`~headfields.models.mononphm.Nphm`) on scans: :func:`prior_losses`, the official
code's losses on one batch (surface SDF, normals, eikonal, free space, anchors, symmetry, colour, expression
correspondences and the codes' and the deformation's regularisers), and :func:`train_prior`, which auto-decodes one
identity code and one appearance code per identity and one expression code per scan.

    prior = Nphm(scans.anchors.mean(0), mirror, center, scans.num_identities, scans.num_scans, cpu_prior_config())
    history = train_prior(prior, scans, cpu_prior_training(max_minutes=30))
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor

from ...checks import check_count, check_positive
from ...data.scans import ScanSamples, ScanSet, sample_scans
from ...fields import padded_box
from ...fitting import StepHistory, decayed_steps
from .prior import NPHM_UNIT, Nphm

__all__ = [
    "CPU_ANCHOR_WEIGHT",
    "PriorLossWeights",
    "PriorTrainingConfig",
    "cpu_prior_training",
    "prior_losses",
    "train_prior",
]


@dataclass(frozen=True)
class PriorLossWeights:
    """The prior's loss weights: MonoNPHM's (scripts/configs/mononphm.yaml; src/models/loss_functions.py), in its
    head space (:data:`NPHM_UNIT`). ``near`` is ours (0 there: the code's off-surface points have no SDF target)."""

    surface: float = 1.0  # |sdf| on surface points
    normals: float = 0.3  # |grad sdf - n| on surface points (the gradient not normalised)
    eikonal: float = 0.15  # | |grad sdf| - 1 | on surface, near-surface and free-space points
    space: float = 0.01  # exp(-SPACE_SHARPNESS |sdf|) on free-space points
    near: float = 0.0  # |sdf - signed distance| on near-surface points (ours)
    colour: float = 1.0  # L1 albedo vs scan colour on surface points
    anchors: float = 7.5  # mean squared error of the predicted anchors against the scan's
    symmetry: float = 0.01  # mean |z_loc(k) - z_loc(mirror k)| over the mirror pairs' local codes
    correspondence: float = 1000.0  # mean squared error of x + dx against the same point on the neutral scan
    identity_code: float = 0.01  # mean |z_id|^2 (the whole code)
    expression_code: float = 0.05
    appearance_code: float = 0.005
    zero_offset: float = 0.0025  # offsets^2 at points uniform in the head space's box
    neutral_offset: float = 0.001  # offsets^2 on neutral scans
    hyper: float = 0.05  # mean |h|, plus NEUTRAL_HYPER x that on neutral scans

    def __post_init__(self) -> None:
        for name, value in vars(self).items():
            if isinstance(value, bool) or not (isinstance(value, int | float) and 0 <= value < math.inf):
                raise ValueError(f"{name}: expected a finite non-negative weight, got {value!r}")


SPACE_SHARPNESS = 10.0  # exp(-10 |sdf|), head-space units (MonoNPHM's space_sdf)
NEUTRAL_HYPER = 10.0  # the hyper coordinates of neutral scans weigh 10x (MonoNPHM)
ZERO_OFFSET_POINTS = 50  # MonoNPHM: 50 points uniform in (rand - 0.5) * 2.5
ZERO_OFFSET_BOX = 2.5


def _gradient(output: Tensor, inputs: Tensor) -> Tensor:
    (grad,) = torch.autograd.grad(output.sum(), inputs, create_graph=True)
    return grad


def prior_losses(
    model: Nphm,
    scans: ScanSet,
    samples: ScanSamples,
    weights: PriorLossWeights | None = None,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, dict[str, float]]:
    """The prior's training loss on one batch of scan samples (:func:`~headfields.data.sample_scans`, on the
    model's device), and each term's unweighted value. The expression correspondences are the scans' own: the
    neutral scan is the canonical space, so ``x + dx`` of a posed point should be the same point on the neutral
    scan. ``generator`` draws the points of the zero-offset term."""
    w = weights or PriorLossWeights()
    scan = samples.scan
    device = model.template_anchors.device
    b = scan.shape[0]
    identity_index = scans.identity.to(device)[scan]
    neutral = scans.expression.to(device)[scan] == 0
    identity = model.identity_codes(identity_index)
    expression = model.expression_codes(scan)
    appearance = model.appearance_codes(identity_index)
    n, m, p = samples.surface.shape[1], samples.near.shape[1], samples.space.shape[1]
    surface = model.normalize(samples.surface.reshape(-1, 3)).requires_grad_(True)
    near = model.normalize(samples.near.reshape(-1, 3)).requires_grad_(True)
    space = model.normalize(samples.space.reshape(-1, 3)).requires_grad_(True)
    box = torch.rand(ZERO_OFFSET_POINTS, 3, generator=generator).to(device) - 0.5
    groups = torch.arange(b, device=device)
    points = torch.cat([surface, near, space])
    group = torch.cat([groups.repeat_interleave(n), groups.repeat_interleave(m), groups.repeat_interleave(p)])
    geometry = model.geometry(points, group, identity, expression)
    sdf_surface, sdf_near, sdf_space = geometry.sdf.split([b * n, b * m, b * p])
    grads = [_gradient(sdf, x) for sdf, x in ((sdf_surface, surface), (sdf_near, near), (sdf_space, space))]

    terms: dict[str, Tensor] = {}
    terms["surface"] = sdf_surface.abs().mean()
    terms["normals"] = (grads[0] - samples.normals.reshape(-1, 3)).norm(dim=-1).mean()
    terms["eikonal"] = (torch.cat(grads).norm(dim=-1) - 1).abs().mean()
    terms["space"] = torch.exp(-SPACE_SHARPNESS * sdf_space.abs()).mean()
    if w.near > 0:
        terms["near"] = (sdf_near - samples.near_sdf.reshape(-1) / model.normalize.scale).abs().mean()
    on_surface = slice(0, b * n)
    albedo = model.albedo(geometry.deformation.points[on_surface], geometry.features[on_surface], group[on_surface], appearance)
    terms["colour"] = (albedo - samples.colours.reshape(-1, 3)).abs().mean()
    anchors = geometry.anchors
    if scans.anchors is not None:
        truth = model.normalize(scans.anchors.to(device)[identity_index].reshape(-1, 3)).reshape(anchors.shape)
        terms["anchors"] = F.mse_loss(anchors, truth)
    symmetry = model.mirror_distance(identity)
    if symmetry is not None:
        terms["symmetry"] = symmetry
    offset = geometry.deformation.offset.reshape(-1, 3)
    if samples.neutral_surface is not None:
        target = model.normalize(samples.neutral_surface.reshape(-1, 3))
        terms["correspondence"] = F.mse_loss(geometry.canonical[: b * n], target)
    terms["identity_code"] = identity.square().sum(-1).mean()
    terms["expression_code"] = expression.square().sum(-1).mean()
    terms["appearance_code"] = appearance.square().sum(-1).mean()
    zero = model.deform(
        box * ZERO_OFFSET_BOX, torch.zeros(len(box), dtype=torch.long, device=device), identity[:1], expression[:1]
    )
    terms["zero_offset"] = zero.offset.square().sum(-1).mean()
    on_neutral = neutral[group]
    hyper = geometry.deformation.hyper.abs().sum(-1)
    terms["hyper"] = hyper.mean() + NEUTRAL_HYPER * (hyper * on_neutral).sum() / on_neutral.sum().clamp(min=1)
    terms["neutral_offset"] = (offset.square().sum(-1) * on_neutral).sum() / on_neutral.sum().clamp(min=1)
    loss = sum(getattr(w, name) * value for name, value in terms.items())
    return loss, {name: float(value.detach()) for name, value in terms.items()}


@dataclass(frozen=True)
class PriorTrainingConfig:
    """How the prior trains: steps (or a time budget), scans and points per step, the optimisers. Defaults:
    MonoNPHM's (16 scans; 1000 + 250 surface, 250 off-surface points at sigma 0.05 in NPHM units = 1.25 cm, 125
    far points; AdamW 5e-4 with weight decay 5e-4 and gradient clipping at 1 for the networks, 2e-3 for the
    identity and appearance codes, 1e-2 for the expression codes, every code's norm at most 1). The learning
    rates fall exponentially to ``decay`` (MonoNPHM halves them at fixed epochs)."""

    steps: int = 30_000
    max_minutes: float | None = None  # stop earlier when this budget is spent
    scans_per_step: int = 16
    surface_points: int = 1250
    near_points: int = 250
    space_points: int = 125
    near_std: float = 0.05 * NPHM_UNIT  # metres
    space_padding: float = 0.1  # metres: the free-space box around the scans
    network_learning_rate: float = 5e-4
    weight_decay: float = 5e-4
    gradient_clip: float = 1.0
    identity_learning_rate: float = 2e-3
    expression_learning_rate: float = 1e-2
    max_code_norm: float = 1.0
    decay: float = 0.1  # learning rates fall exponentially to this fraction at the last step
    weights: PriorLossWeights = field(default_factory=PriorLossWeights)
    log_every: int = 100
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("steps", "scans_per_step", "surface_points", "log_every"):
            check_count(name, getattr(self, name), 1)
        for name in ("near_points", "space_points"):
            check_count(name, getattr(self, name), 0)
        positive = ("near_std", "space_padding", "network_learning_rate", "identity_learning_rate")
        for name in (*positive, "expression_learning_rate", "decay", "gradient_clip", "max_code_norm"):
            check_positive(name, getattr(self, name), finite=name.endswith("learning_rate"))
        if not self.weight_decay >= 0:
            raise ValueError(f"weight_decay: expected a non-negative number, got {self.weight_decay}")
        check_positive("max_minutes", self.max_minutes)


# A prior of minutes (cpu_prior_config, about 2,000 steps) under MonoNPHM's 7.5 on the anchors: the SDF terms, which
# move each local MLP with its anchor, carry the anchors 6-11 mm off the scans' anchor vertices, farther than the
# template's mean anchors lie (5.9 mm), and the landmark term projects those anchors. x 100 holds them within
# 1-1.8 mm at no cost to the surface terms (benchmarks/ablations/nphm_anchors.py; docs/mononphm.md).
CPU_ANCHOR_WEIGHT = 750.0


def cpu_prior_training(**overrides) -> PriorTrainingConfig:
    """A CPU's prior training: 8 scans of 500 surface, 150 off-surface and 60 free-space points a step (MonoNPHM: 16
    of 1250, 250 and 125), the anchors weighed :data:`CPU_ANCHOR_WEIGHT`, then ``overrides``."""
    sizes = dict(scans_per_step=8, surface_points=500, near_points=150, space_points=60)
    return PriorTrainingConfig(**{**sizes, "weights": PriorLossWeights(anchors=CPU_ANCHOR_WEIGHT), **overrides})


def train_prior(model: Nphm, scans: ScanSet, config: PriorTrainingConfig | None = None) -> StepHistory:
    """Fit the prior's networks and codes to ``scans`` (on the model's device): AdamW on the networks, Adam on the
    codes, their rates decaying, every code's norm held at most ``max_code_norm`` (:func:`~headfields.fitting.decayed_steps`)."""
    c = config or PriorTrainingConfig()
    if model.identity_codes.count != scans.num_identities or model.expression_codes.count != scans.num_scans:
        raise ValueError(
            f"scans: expected {model.identity_codes.count} identities and {model.expression_codes.count} scans (the "
            f"model's codes), got {scans.num_identities} and {scans.num_scans}"
        )
    device = model.template_anchors.device
    codes = {model.identity_codes.codes, model.appearance_codes.codes}
    expressions = model.expression_codes.codes
    networks = [p for p in model.parameters() if p.requires_grad and p is not expressions and p not in codes]
    optimizers = [
        torch.optim.AdamW(networks, lr=c.network_learning_rate, weight_decay=c.weight_decay),
        torch.optim.Adam(
            [{"params": list(codes), "lr": c.identity_learning_rate}, {"params": [expressions], "lr": c.expression_learning_rate}]
        ),
    ]
    box = padded_box(torch.cat(scans.vertices), c.space_padding)
    generator = torch.Generator().manual_seed(c.seed)

    def loss(step: int) -> tuple[Tensor, dict[str, float]]:
        index = torch.randperm(scans.num_scans, generator=generator)[: c.scans_per_step]
        samples = sample_scans(scans, index, c.surface_points, c.near_points, c.space_points, c.near_std, box, generator)
        return prior_losses(model, scans, samples.to(device), c.weights, generator)

    @torch.no_grad()
    def project_codes() -> None:  # MonoNPHM's embeddings: max_norm 1
        for codes_ in (model.identity_codes.codes, model.appearance_codes.codes, expressions):
            norm = codes_.norm(dim=1, keepdim=True).clamp(min=c.max_code_norm)
            codes_.mul_(c.max_code_norm / norm)

    model.train()
    history = decayed_steps(
        optimizers, c.steps, loss, decay=c.decay, clip=(networks, c.gradient_clip), after_step=project_codes,
        max_minutes=c.max_minutes, log_every=c.log_every,
    )  # fmt: skip
    model.eval()
    return history
