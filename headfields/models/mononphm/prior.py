"""MonoNPHM's neural parametric head model (NPHM): a prior over heads learnt from 3D scans of many identities and
expressions, then frozen and fitted to a monocular video of someone new (:mod:`headfields.models.mononphm`).

A posed point ``x`` of a scan (metres, the head's canonical frame; normalised by :class:`~headfields.fields.Normalize`
into the units the networks use) under expression code ``e`` and identity code ``z = [z_glob | z_loc_1..K]``:

    backward deformation    (x, [e, W z_glob]) -> (x + dx, h)           HyperDeformer, W: the identity's compression
    anchors                 a(z) = template anchors + MLP(z_glob)       one set per identity
    canonical SDF           AnchorSdf(x + dx | h, z_glob, z_loc, a(z)) mirror pairs share a local MLP
    appearance              AppearanceField([x + dx, h], SDF features, appearance code)

Its training (:mod:`~headfields.models.mononphm.prior_training`) auto-decodes one identity code and one appearance code per
identity and one expression code per scan with the official code's losses.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import torch
from jaxtyping import Float, Int
from torch import Tensor, nn

from ...checks import check_count, check_float, check_int
from ...configs import register_config
from ...decoders import AnchorSdf, AnchorSdfConfig, AppearanceConfig, AppearanceField, SdfMlpConfig, SdfOutput
from ...deformers import HyperDeformation, HyperDeformer, HyperDeformerConfig
from ...encoders import LatentCodes, LatentCodesConfig
from ...fields import Normalize
from ...networks import mlp
from ...training.checkpoints import load_checkpoint, save_checkpoint

__all__ = [
    "NphmConfig",
    "NphmGeometry",
    "Nphm",
    "cpu_prior_config",
    "load_prior",
    "save_prior",
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
    """Sizes a 2-core CPU trains in minutes (benchmarks/ablations/nphm.py), then ``overrides`` (paper: ``NphmConfig()``)."""
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
