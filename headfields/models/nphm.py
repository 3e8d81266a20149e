"""MonoNPHM's neural parametric head model (NPHM): a prior over heads learnt from 3D scans of many identities and
expressions, then frozen and fitted to a monocular video of someone new (:mod:`headfields.models.mononphm`).

A posed point ``x`` of a scan (metres, the head's canonical frame; normalised by :class:`~headfields.fields.Normalize`
into the units the networks use) under expression code ``e`` and identity code ``z = [z_glob | z_loc_1..K]``:

    backward deformation    (x, [e, W z_glob]) -> (x + dx, h)           HyperDeformer, W: the identity's compression
    anchors                 a(z) = template anchors + MLP(z_glob)       one set per identity
    canonical SDF           AnchorSdf(x + dx | h, z_glob, z_loc, a(z)) mirror pairs share a local MLP
    appearance              AppearanceField([x + dx, h], SDF features, appearance code)

Training (:func:`prior_losses`, :func:`train_prior`) auto-decodes one identity code and one appearance code per
identity and one expression code per scan, with the official code's losses: surface SDF, normals, eikonal, free
space, anchors, symmetry, colour, expression correspondences and the codes' and the deformation's regularisers.
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from torch import Tensor, nn

from ..checkpoints import load_checkpoint, save_checkpoint
from ..checks import check_count, check_float, check_int, check_positive
from ..configs import register_config
from ..data.scans import ScanSamples, ScanSet, sample_scans
from ..decoders import AnchorSdf, AnchorSdfConfig, AppearanceConfig, AppearanceField, SdfMlpConfig, SdfOutput
from ..deformers import HyperDeformation, HyperDeformer, HyperDeformerConfig
from ..encoders import LatentCodes, LatentCodesConfig
from ..fields import Normalize, padded_box
from ..networks import mlp

__all__ = [
    "NphmConfig",
    "NphmGeometry",
    "Nphm",
    "PriorLossWeights",
    "PriorTrainingConfig",
    "cpu_prior_config",
    "load_prior",
    "prior_losses",
    "save_prior",
    "train_prior",
]

# MonoNPHM's code (scripts/configs/mononphm.yaml, src/models/canonical_space.py, deformations.py): identity 64
# global + 32 per anchor; expression 100; the identity (codes and anchors) compressed to 16 numbers for the
# deformation; the anchor predictor 64 wide; the global member weighted as an anchor 0.75 away.
NPHM_GLOBAL_DIM = 64
NPHM_LOCAL_DIM = 32
NPHM_EXPRESSION_DIM = 100
NPHM_COMPRESSED_IDENTITY_DIM = 16
NPHM_APPEARANCE_DIM = 64  # MonoNPHM: 64 global + 32 per anchor for its appearance ensemble (one MLP here)
NPHM_ANCHOR_HIDDEN = 64
NPHM_GLOBAL_DISTANCE = 0.75
# MonoNPHM's head space is FLAME's scaled by 4 (DataManager.transform_nphm_2_flame): one unit is 0.25 m. The
# networks read (x - center) / NPHM_UNIT, so the code's constants (the global distance, the free-space sharpness,
# the loss weights) keep their meaning.
NPHM_UNIT = 0.25


@register_config  # saved and read on its own, not inside a model's recipe
@dataclass(frozen=True)
class NphmConfig:
    """The prior's sizes. Defaults: MonoNPHM's (PAPERS.md); :func:`cpu_prior_config` for a CPU's budget."""

    global_dim: int = NPHM_GLOBAL_DIM
    local_dim: int = NPHM_LOCAL_DIM
    expression_dim: int = NPHM_EXPRESSION_DIM
    compressed_identity_dim: int = NPHM_COMPRESSED_IDENTITY_DIM
    appearance_dim: int = NPHM_APPEARANCE_DIM
    sdf: AnchorSdfConfig = field(default_factory=lambda: AnchorSdfConfig(global_distance=NPHM_GLOBAL_DISTANCE))
    deformer: HyperDeformerConfig = field(default_factory=HyperDeformerConfig)  # 6 x 400, skip at 3, H = 2
    appearance: AppearanceConfig = field(default_factory=AppearanceConfig)  # 4 x 200 ReLU on 16 SDF features
    anchor_hidden: int = NPHM_ANCHOR_HIDDEN  # the anchor predictor MLP(z_glob) -> K x 3 offsets
    anchor_layers: int = 2
    identity_init_std: float = 0.0  # MonoNPHM: codes start at zero

    def __post_init__(self) -> None:
        for name in ("global_dim", "expression_dim", "compressed_identity_dim", "appearance_dim", "anchor_hidden"):
            check_count(name, getattr(self, name), 1)
        check_count("local_dim", self.local_dim, 0)
        check_count("anchor_layers", self.anchor_layers, 0)
        if not self.identity_init_std >= 0:
            raise ValueError(f"identity_init_std: expected a non-negative deviation, got {self.identity_init_std}")


def cpu_prior_config(**overrides) -> NphmConfig:
    """Sizes a 2-core CPU trains in minutes (benchmarks/nphm.py), then ``overrides`` (paper: ``NphmConfig()``)."""
    sizes = dict(
        global_dim=32,
        local_dim=8,
        expression_dim=16,
        compressed_identity_dim=8,
        appearance_dim=16,
        sdf=AnchorSdfConfig(
            local=SdfMlpConfig(hidden_dim=48, hidden_layers=3), neighbours=6, sigma_rank=4, global_distance=NPHM_GLOBAL_DISTANCE
        ),
        deformer=HyperDeformerConfig(hidden_dim=96, hidden_layers=4, skip_layer=2),
        appearance=AppearanceConfig(hidden_dim=64, hidden_layers=3, position_frequencies=4),  # one MLP: PE for lips, eyes
    )
    return NphmConfig(**{**sizes, **overrides})


@dataclass
class NphmGeometry:
    """The prior at N posed points (normalised units): their SDF and what the appearance and losses read."""

    sdf: Float[Tensor, " N"]
    canonical: Float[Tensor, "N 3"]  # x + dx: the SDF's point (the eikonal term's variable)
    deformation: HyperDeformation
    features: Float[Tensor, "N F"]
    anchors: Float[Tensor, "G K 3"]  # each group's anchors, as the SDF read them


class Nphm(nn.Module):
    """The prior. ``anchors [K, 3]``: the template's anchor positions (metres, the neutral head's canonical frame;
    the mean over the training identities), ``mirror [K]`` their mirror partners across x = 0 (itself on the plane);
    ``center [3]`` (metres): the head space's origin; ``num_identities``, ``num_scans``: the auto-decoded codes (one
    identity and appearance code per identity, one expression code per scan). The codes are inputs of every method,
    so a frozen prior fits new ones. Every method works in the networks' units (:attr:`normalize`)."""

    def __init__(
        self,
        anchors: Float[Tensor, "K 3"],
        mirror: Int[Tensor, " K"],
        center: Float[Tensor, " 3"],
        num_identities: int,
        num_scans: int,
        config: NphmConfig | None = None,
    ):
        super().__init__()
        self.config = c = config or NphmConfig()
        check_float("anchors", anchors, [None, 3])
        self.num_anchors = k = anchors.shape[0]
        check_int("mirror", mirror, [k], upper=k, device=anchors.device)
        check_float("center", center, [3], device=anchors.device)
        self.normalize = normalize = Normalize(center.detach().to(anchors.dtype), NPHM_UNIT)
        template = normalize(anchors.detach().to(normalize.center))
        self.register_buffer("template_anchors", template)
        self.register_buffer("mirror", mirror.detach().clone().long())
        init = c.identity_init_std
        self.identity_codes = LatentCodes(num_identities, LatentCodesConfig(self.identity_dim, init_std=init))
        self.appearance_codes = LatentCodes(num_identities, LatentCodesConfig(c.appearance_dim, init_std=init))
        self.expression_codes = LatentCodes(num_scans, LatentCodesConfig(c.expression_dim, init_std=init))
        self.anchor_offsets = mlp(c.global_dim, c.anchor_hidden, c.anchor_layers, 3 * k)
        self.compress = nn.Linear(self.identity_dim + 3 * k, c.compressed_identity_dim)  # [code, anchors] -> 16
        self.deformer = HyperDeformer(c.expression_dim + c.compressed_identity_dim, c.deformer)
        hyper = c.deformer.hyper_dim
        self.sdf = AnchorSdf(template, hyper + c.global_dim, c.sdf, local_dim=c.local_dim, center=torch.zeros(3), mirror=mirror)
        self.appearance = AppearanceField(3 + hyper, self.sdf.feature_dim, c.appearance_dim, c.appearance)

    @property
    def identity_dim(self) -> int:
        """Width of an identity code: global, then one local code per anchor."""
        return self.config.global_dim + self.num_anchors * self.config.local_dim

    @property
    def hyper_dim(self) -> int:
        return self.config.deformer.hyper_dim

    def _split(self, identity: Tensor) -> tuple[Tensor, Tensor | None]:
        """(global codes ``[G, D]``, local codes ``[G, K, L]`` or None)."""
        c = self.config
        check_float("identity", identity, [None, self.identity_dim], device=self.template_anchors.device)
        local = identity[:, c.global_dim :].reshape(-1, self.num_anchors, c.local_dim) if c.local_dim else None
        return identity[:, : c.global_dim], local

    def mirror_distance(self, identity: Float[Tensor, "G I"]) -> Float[Tensor, ""] | None:
        """The mean distance between the local codes of mirrored anchors (MonoNPHM's ``symm_dist``), over the pairs
        and identities; None without local codes or mirror pairs."""
        _, local = self._split(identity)
        pairs = self.mirror > torch.arange(self.num_anchors, device=self.mirror.device)  # the first of each pair
        if local is None or not bool(pairs.any()):
            return None
        return (local[:, pairs] - local[:, self.mirror[pairs]]).norm(dim=-1).mean()

    def anchors(self, identity: Float[Tensor, "G I"]) -> Float[Tensor, "G K 3"]:
        """Each identity's anchors (normalised units): the template's moved by the predictor of its global code."""
        glob, _ = self._split(identity)
        return self.template_anchors + self.anchor_offsets(glob).reshape(-1, self.num_anchors, 3)

    def deform(
        self,
        x: Float[Tensor, "N 3"],
        group: Int[Tensor, " N"],
        identity: Float[Tensor, "G I"],
        expression: Float[Tensor, "G E"],
        anchors: Float[Tensor, "G K 3"] | None = None,
    ) -> HyperDeformation:
        """The backward deformation of posed points ``x`` (normalised units) of group ``group`` (a scan, a frame);
        ``anchors``: the groups' (default: predicted from ``identity``)."""
        check_float("expression", expression, [identity.shape[0], self.config.expression_dim], device=x.device)
        anchors = self.anchors(identity) if anchors is None else anchors
        compressed = self.compress(torch.cat([identity, anchors.flatten(1)], dim=1))
        condition = torch.cat([expression, compressed], dim=1)
        return self.deformer.deform(x, condition, group)  # the condition's share once per group

    def canonical_sdf(
        self,
        points: Float[Tensor, "N 3"],
        hyper: Float[Tensor, "N H"],
        group: Int[Tensor, " N"],
        identity: Float[Tensor, "G I"],
        anchors: Float[Tensor, "G K 3"] | None = None,
    ) -> SdfOutput:
        """The canonical SDF at ``[points, hyper]`` (normalised units) of each group's identity; ``anchors``: the
        groups' (default: predicted from ``identity``)."""
        glob, local = self._split(identity)
        anchors = self.anchors(identity) if anchors is None else anchors
        extra = torch.cat([hyper, glob[group]], dim=1)
        return self.sdf(points, extra, local, anchors, group)

    def geometry(
        self, x: Float[Tensor, "N 3"], group: Int[Tensor, " N"], identity: Float[Tensor, "G I"], expression: Float[Tensor, "G E"]
    ) -> NphmGeometry:
        """SDF (normalised units) at posed points ``x`` (normalised units) under each group's codes."""
        anchors = self.anchors(identity)  # once: the deformation's condition and the SDF both read them
        deformation = self.deform(x, group, identity, expression, anchors)
        canonical = deformation.points[:, :3]
        out = self.canonical_sdf(canonical, deformation.hyper, group, identity, anchors)
        return NphmGeometry(out.sdf, canonical, deformation, out.features, anchors)

    def albedo(
        self,
        points: Float[Tensor, "N D"],
        features: Float[Tensor, "N F"],
        group: Int[Tensor, " N"],
        appearance: Float[Tensor, "G A"],
    ) -> Float[Tensor, "N 3"]:
        """Albedo in (0, 1) at canonical points ``[x + dx, h]`` with their SDF ``features`` (of a
        :class:`NphmGeometry`) under each group's appearance code."""
        check_float("appearance", appearance, [None, self.config.appearance_dim], device=points.device)
        return self.appearance(points, features, appearance[group])


# ----------------------------------------------------------------------------------------------------- training


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
            check_positive(name, getattr(self, name))
        if not self.weight_decay >= 0:
            raise ValueError(f"weight_decay: expected a non-negative number, got {self.weight_decay}")
        check_positive("max_minutes", self.max_minutes)


@dataclass
class PriorHistory:
    """What :func:`train_prior` did: steps, seconds and the logged losses."""

    steps: int = 0
    seconds: float = 0.0
    logs: list[dict[str, float]] = field(default_factory=list)


def train_prior(model: Nphm, scans: ScanSet, config: PriorTrainingConfig | None = None) -> PriorHistory:
    """Fit the prior's networks and codes to ``scans`` (on the model's device)."""
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
    initial = [[group["lr"] for group in o.param_groups] for o in optimizers]
    box = padded_box(torch.cat(scans.vertices), c.space_padding)
    generator = torch.Generator().manual_seed(c.seed)
    history, start = PriorHistory(), time.perf_counter()
    model.train()
    for step in range(c.steps):
        if c.max_minutes is not None and time.perf_counter() - start > 60 * c.max_minutes:
            break
        fraction = c.decay ** (step / max(c.steps - 1, 1))
        for optimizer, rates in zip(optimizers, initial, strict=True):
            for group, lr in zip(optimizer.param_groups, rates, strict=True):
                group["lr"] = lr * fraction
        index = torch.randperm(scans.num_scans, generator=generator)[: c.scans_per_step]
        samples = sample_scans(scans, index, c.surface_points, c.near_points, c.space_points, c.near_std, box, generator)
        loss, logs = prior_losses(model, scans, samples.to(device), c.weights, generator)
        for optimizer in optimizers:
            optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(networks, c.gradient_clip)
        for optimizer in optimizers:
            optimizer.step()
        with torch.no_grad():  # MonoNPHM's embeddings: max_norm 1
            for codes_ in (model.identity_codes.codes, model.appearance_codes.codes, expressions):
                norm = codes_.norm(dim=1, keepdim=True).clamp(min=c.max_code_norm)
                codes_.mul_(c.max_code_norm / norm)
        history.steps = step + 1
        if step % c.log_every == 0 or step == c.steps - 1:
            history.logs.append({"step": step, "loss": float(loss.detach()), **logs})
    history.seconds = time.perf_counter() - start
    model.eval()
    return history


# ------------------------------------------------------------------------------------------------- saving


PRIOR_FORMAT = 1  # bump when the saved layout changes


def save_prior(model: Nphm, path: str | Path) -> None:
    """The prior (configuration, template anchors, mirror pairs, head-space origin and weights) to ``path``, for
    :func:`load_prior` (atomically, as every checkpoint here)."""
    state = {
        "format": PRIOR_FORMAT,
        "config": dataclasses.asdict(model.config),
        "num_identities": model.identity_codes.count,
        "num_scans": model.expression_codes.count,
        "weights": {k: v.detach().cpu() for k, v in model.state_dict().items()},
    }
    save_checkpoint(state, path)


def _config(data: dict) -> NphmConfig:
    sdf = dict(data["sdf"], local=SdfMlpConfig(**data["sdf"]["local"]))
    return NphmConfig(
        **{
            **data,
            "sdf": AnchorSdfConfig(**sdf),
            "deformer": HyperDeformerConfig(**data["deformer"]),
            "appearance": AppearanceConfig(**data["appearance"]),
        }
    )


def load_prior(path: str | Path, device: torch.device | str | None = None) -> Nphm:
    """The prior :func:`save_prior` wrote, on ``device`` (default the CPU), frozen and in evaluation mode."""
    state = load_checkpoint(path, "cpu")
    if state.get("format") != PRIOR_FORMAT:
        raise ValueError(f"path: expected a prior saved by save_prior (format {PRIOR_FORMAT}), got {path}")
    weights = state["weights"]
    template = weights["template_anchors"]
    center = weights["normalize.center"]
    anchors = template * weights["normalize.scale"] + center
    model = Nphm(anchors, weights["mirror"], center, state["num_identities"], state["num_scans"], _config(state["config"]))
    model.load_state_dict(weights)
    return model.to(device or "cpu").requires_grad_(False).eval()
