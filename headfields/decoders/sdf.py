"""Signed-distance decoders: one Softplus MLP (:class:`SdfMlp`) and MonoNPHM's anchor ensemble (:class:`AnchorSdf`).

Both start as a sphere, ``sdf(x) ~ ||x - center|| - radius``, whatever their extra inputs (hyper coordinates, latent
codes) and positional-encoding bands, so NeuS rendering begins from a closed surface with ``||grad sdf|| ~ 1``. This
is the aim of SAL's geometric initialisation (Atzmon & Lipman 2020), but SAL's random construction gives the sphere
only in expectation: measured at width 200 and depth 4 its error is ~20% of the radius. Here the initialisation is
deterministic instead (:func:`_unit_sphere_init`): the first layer holds ``+-v_j / radius`` for directions ``v_j``
spread over a hemisphere (so each pair of units sums to ``|v_j . (x - center)| / radius``: a zonotope close to the
ball), the hidden layers start as the identity (the Softplus units are non-negative, so they pass through), and the
output layer is fitted by least squares to ``||x|| - 1`` on points of a ball of radius 2. The error is ~0.4% of
``||x - center||`` at width 200 (1.7% at width 64), and the eikonal residual ``(||grad|| - 1)^2`` ~1e-5 on average.
Weights on extra inputs and on the encoding bands start at zero and learn from the first step.

The layout of every MLP: ``enc = [PE(x), extra]`` -> ``hidden_layers`` Softplus(beta) layers of ``hidden_dim`` (the
layer ``skip_layer`` reads ``[h, enc] / sqrt(2)``, IGR's skip) -> a linear sdf. ``features`` is the last hidden
layer (MonoNPHM's appearance field reads a projection of it).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from jaxtyping import Float, Int
from torch import Tensor, nn

from ..backends.cpu.row_blocks import row_blocks, runs_in_row_blocks
from ..checks import check_count, check_float, check_int, check_positive
from ..device_paths import takes_cuda_path
from ..encoders.frequency import MAX_FREQUENCIES, FrequencyEncoding
from ..group_tiles import group_tiles, tile_rows
from ..networks import softplus, softplus_

# MonoNPHM's canonical SDF (PAPERS.md, "MonoNPHM"): local MLPs 4 x 200, Softplus(beta = 100); 12 nearest anchors,
# Gaussian weights with sigma = d_8 / 3.75.
MONONPHM_SDF_HIDDEN = 200
MONONPHM_SDF_LAYERS = 4
MONONPHM_SDF_BETA = 100.0
MONONPHM_NEIGHBOURS = 12
MONONPHM_SIGMA_RANK = 8
MONONPHM_SIGMA_DIVISOR = 3.75
# The global member's unnormalised weight (PAPERS.md gives none; our choice): a tenth of a Gaussian weight at its
# anchor, so the global MLP takes ~5% near the anchors and, far from them, where every Gaussian falls towards
# exp(-3.75^2 / 2) ~ 9e-4, ~90%: the far field is the global MLP's.
GLOBAL_WEIGHT = 0.1
# The rows of a tile of the ensemble's members on CUDA's paths (group_tiles; None: tile_rows', from the rows).
MEMBER_TILE: int | None = None
# IGR's skip connection reads [h, enc] / sqrt(2), so the layer's input keeps its scale.
SKIP_SCALE = 1.0 / math.sqrt(2.0)
# Radius of the initial sphere, in input units (a head normalised to about unit size fits inside).
INIT_RADIUS = 0.5
# The output layer's least-squares fit: this many points in the ball of this radius (in units of the sphere's radius).
FIT_POINTS = 4096
FIT_BALL = 2.0


@dataclass(frozen=True)
class SdfMlpConfig:
    """One SDF MLP. Defaults: MonoNPHM's local MLPs (PAPERS.md)."""

    hidden_dim: int = MONONPHM_SDF_HIDDEN
    hidden_layers: int = MONONPHM_SDF_LAYERS
    beta: float = MONONPHM_SDF_BETA  # Softplus sharpness
    skip_layer: int | None = None  # hidden layer (1 .. hidden_layers - 1) that re-reads the input; None: no skip
    position_frequencies: int = 0  # NeRF encoding bands of x (0: x alone)
    radius: float = INIT_RADIUS  # the initial sphere's radius, in input units

    def __post_init__(self) -> None:
        check_count("hidden_dim", self.hidden_dim, 2)
        check_count("hidden_layers", self.hidden_layers, 1)
        check_positive("beta", self.beta)
        if self.skip_layer is not None:
            check_count("skip_layer", self.skip_layer, 1, self.hidden_layers - 1)
        check_count("position_frequencies", self.position_frequencies, 0, MAX_FREQUENCIES)
        check_positive("radius", self.radius)


@dataclass
class SdfOutput:
    """What an SDF decoder returns for N points."""

    sdf: Float[Tensor, " N"]
    features: Float[Tensor, "N F"]  # last hidden layer (blended, for the ensemble)
    extras: dict[str, Tensor] = field(default_factory=dict)  # decoder-specific (AnchorSdf: blend weights, members)


def _hemisphere(count: int) -> Tensor:
    """``count`` unit directions spread over the upper hemisphere (a Fibonacci spiral), float64 ``[count, 3]``."""
    i = torch.arange(count, dtype=torch.float64) + 0.5
    z = i / count
    azimuth = i * math.pi * (3.0 - math.sqrt(5.0))
    ring = torch.sqrt(1.0 - z * z)
    return torch.stack([ring * torch.cos(azimuth), ring * torch.sin(azimuth), z], dim=1)


def _run(
    enc: Tensor, weights: Sequence[Tensor], biases: Sequence[Tensor], skip: int | None, beta: float
) -> tuple[Tensor, Tensor]:
    """The MLP on ``enc [P, D]`` with ``weights[i] [in, out]``: (sdf ``[P]``, last hidden layer ``[P, H]``). On the
    CPU without autograd, ROW_BLOCK rows at a time through every layer, each Softplus in place
    (:func:`~headfields.backends.cpu.row_blocks.row_blocks`): on a 2-core CPU, 4 layers of 200 (MonoNPHM's members) 1.3x on 20,000
    rows and 1.6x on 200,000, of 96 (the hyper NeuS avatar's global SDF) 1.6x on 200,000."""
    if runs_in_row_blocks(enc):
        return row_blocks(lambda block: _layers(block, weights, biases, skip, beta, softplus_), enc)
    return _layers(enc, weights, biases, skip, beta, softplus)


def _layers(
    enc: Tensor, weights: Sequence[Tensor], biases: Sequence[Tensor], skip: int | None, beta: float, activation: Callable
) -> tuple[Tensor, Tensor]:
    """The layers on rows ``enc [P, D]`` with ``weights[i] [in, out]``, or on tiles ``enc [J, T, D]`` with a tile's
    own ``weights[i] [J, in, out]`` and ``biases[i] [J, 1, out]`` (an ensemble's members, :mod:`~headfields.group_tiles`)."""
    affine = torch.addmm if enc.dim() == 2 else torch.baddbmm
    h = enc
    for i in range(len(weights) - 1):
        if i == skip:  # [h, enc] / sqrt(2) @ weights[i], as two products: no concatenation to differentiate twice
            width = h.shape[-1]
            z = affine(biases[i], h, weights[i][..., :width, :], alpha=SKIP_SCALE)
            h = activation(affine(z, enc, weights[i][..., width:, :], alpha=SKIP_SCALE), beta)
        else:
            h = activation(affine(biases[i], h, weights[i]), beta)
    return affine(biases[-1], h, weights[-1])[..., 0], h


@functools.lru_cache(maxsize=16)
def _unit_sphere_init(hidden_dim: int, hidden_layers: int, beta: float) -> tuple[Tensor, Tensor, Tensor]:
    """Float64 (first-layer x weights ``[3, H]``, output weights ``[H, 1]``, output bias ``[1]``) of an MLP whose
    hidden layers are the identity and whose sdf is ``||x|| - 1`` (see the module docstring). Cached: an ensemble
    builds it once."""
    directions = _hemisphere(hidden_dim // 2)
    first = torch.zeros(3, hidden_dim, dtype=torch.float64)
    first[:, : len(directions)] = directions.T
    first[:, len(directions) : 2 * len(directions)] = -directions.T  # an odd last unit keeps zero weights
    generator = torch.Generator().manual_seed(0)
    points = torch.randn(FIT_POINTS, 3, generator=generator, dtype=torch.float64)
    radii = FIT_BALL * torch.rand(FIT_POINTS, 1, generator=generator, dtype=torch.float64) ** (1.0 / 3.0)
    points = points / torch.linalg.vector_norm(points, dim=1, keepdim=True) * radii  # uniform in the ball
    h = softplus(points @ first, beta)
    for _ in range(hidden_layers - 1):
        h = softplus(h, beta)  # identity weights, zero bias
    design = torch.cat([h, torch.ones(FIT_POINTS, 1, dtype=torch.float64)], dim=1)
    target = torch.linalg.vector_norm(points, dim=1, keepdim=True) - 1.0
    solution = torch.linalg.lstsq(design, target).solution[:, 0]
    return first, solution[:-1, None].clone(), solution[-1:].clone()


def _center(center: Sequence[float] | Tensor | None) -> Tensor:
    if center is None:
        return torch.zeros(3, dtype=torch.float64)
    value = torch.as_tensor(center).detach().to("cpu", torch.float64)
    check_float("center", value, [3])
    return value


def _sphere_layers(in_dim: int, config: SdfMlpConfig, center: Tensor, dtype: torch.dtype) -> tuple[list[Tensor], list[Tensor]]:
    """Weights ``[in, out]`` and biases of an MLP on ``enc [*, in_dim]`` (``x`` in the first 3 columns) whose sdf at
    initialisation is ``||x - center|| - config.radius``."""
    first_x, out_w, out_b = _unit_sphere_init(config.hidden_dim, config.hidden_layers, float(config.beta))
    h, r = config.hidden_dim, float(config.radius)
    first = torch.zeros(in_dim, h, dtype=torch.float64)
    first[:3] = first_x / r  # x in units of the radius: the same fit at every scale
    weights, biases = [first], [-(center @ first[:3])]  # softplus((x - center) . v / r)
    for i in range(1, config.hidden_layers):
        skip = i == config.skip_layer
        w = torch.zeros(h + (in_dim if skip else 0), h, dtype=torch.float64)
        w[:h] = torch.eye(h, dtype=torch.float64) * (math.sqrt(2.0) if skip else 1.0)  # undo the skip's 1/sqrt(2)
        weights.append(w)
        biases.append(torch.zeros(h, dtype=torch.float64))
    weights.append(out_w * r)
    biases.append(out_b * r)
    return [w.to(dtype) for w in weights], [b.to(dtype) for b in biases]


def _check_input(name: str, value: Tensor | None, width: int, n: int | None, like: Tensor) -> None:
    """``value`` is None when ``width`` is 0, else a float tensor ``[n, width]`` with ``like``'s dtype and device."""
    if width == 0:
        if value is not None:
            raise ValueError(f"{name}: expected None (its width is 0), got a tensor of shape {list(value.shape)}")
        return
    if value is None:
        raise ValueError(f"{name}: expected a tensor of shape [{n}, {width}], got None")
    check_float(name, value, [n, width], device=like.device)
    if value.dtype != like.dtype:
        raise TypeError(f"{name}: expected {like.dtype} (the decoder's parameters), got {value.dtype}")


class SdfMlp(nn.Module):
    """``sdf(x, extra)``: a Softplus MLP on ``[PE(x), extra]`` initialised to the sphere ``||x - center|| - radius``.

    ``extra_dim``: width of the extra inputs (hyper coordinates, latent codes; 0: forward takes ``extra=None``).
    ``center``: the initial sphere's centre (default the origin); it only sets the first-layer bias, so training
    moves it freely and no buffer holds it.
    """

    def __init__(
        self, extra_dim: int = 0, config: SdfMlpConfig | None = None, center: Sequence[float] | Tensor | None = None
    ) -> None:
        super().__init__()
        self.extra_dim = check_count("extra_dim", extra_dim, 0)
        self.config = config = config if config is not None else SdfMlpConfig()
        self.encoding = FrequencyEncoding(3, config.position_frequencies) if config.position_frequencies else None
        self.in_dim = 3 * (1 + 2 * config.position_frequencies) + extra_dim
        self.feature_dim = config.hidden_dim
        weights, biases = _sphere_layers(self.in_dim, config, _center(center), torch.get_default_dtype())
        self.weights = nn.ParameterList([nn.Parameter(w) for w in weights])  # [in, out]
        self.biases = nn.ParameterList([nn.Parameter(b) for b in biases])

    def forward(self, x: Float[Tensor, "N 3"], extra: Float[Tensor, "N E"] | None = None) -> SdfOutput:
        like = self.weights[0]
        _check_input("x", x, 3, None, like)
        _check_input("extra", extra, self.extra_dim, x.shape[0], like)
        enc = [self.encoding(x) if self.encoding is not None else x] + ([extra] if extra is not None else [])
        sdf, features = _run(
            torch.cat(enc, dim=-1), list(self.weights), list(self.biases), self.config.skip_layer, self.config.beta
        )
        return SdfOutput(sdf=sdf, features=features)


@dataclass(frozen=True)
class AnchorSdfConfig:
    """MonoNPHM's anchor ensemble (PAPERS.md): ``local`` sizes every member (the global MLP too)."""

    local: SdfMlpConfig = field(default_factory=SdfMlpConfig)
    neighbours: int = MONONPHM_NEIGHBOURS  # nearest anchors blended per point
    sigma_rank: int = MONONPHM_SIGMA_RANK  # sigma = (distance to the sigma_rank-th nearest anchor) / sigma_divisor
    sigma_divisor: float = MONONPHM_SIGMA_DIVISOR
    global_weight: float = GLOBAL_WEIGHT  # the global MLP's unnormalised weight (see GLOBAL_WEIGHT)
    # Or, as MonoNPHM's code does, the global member's weight is a Gaussian weight at this fixed distance (input
    # units), so it varies with sigma as the local ones do; None: the constant ``global_weight``.
    global_distance: float | None = None
    radius: float | None = None  # the initial sphere's radius for every member; None: local.radius
    learn_anchors: bool = False  # anchors a trainable parameter (True) or a fixed buffer

    def __post_init__(self) -> None:
        if not isinstance(self.local, SdfMlpConfig):
            raise TypeError(f"local: expected an SdfMlpConfig, got {type(self.local).__name__}")
        check_count("neighbours", self.neighbours, 1)
        check_count("sigma_rank", self.sigma_rank, 1)
        check_positive("sigma_divisor", self.sigma_divisor)
        if not self.global_weight >= 0:
            raise ValueError(f"global_weight: expected a non-negative number, got {self.global_weight}")
        check_positive("radius", self.radius)
        check_positive("global_distance", self.global_distance)


@dataclass
class AnchorBlend:
    """The blend of N points: their nearest anchors and normalised weights (the local ones and the global one sum to 1)."""

    index: Int[Tensor, "N M"]  # nearest anchors, nearest first
    weight: Float[Tensor, "N M"]
    global_weight: Float[Tensor, " N"]


class AnchorSdf(nn.Module):
    """MonoNPHM's canonical SDF: an ensemble of local MLPs, one per anchor, blended around each point, plus a global MLP.

    Member ``k`` reads ``[PE(x - a_k), extra, local[k]]``; the global member ``[PE(x), extra]``. Each point blends
    its ``neighbours`` nearest anchors with weights ``exp(-1/2 (d_k / sigma)^2)``, ``sigma = d_r / sigma_divisor``
    (``d_r`` its distance to the ``sigma_rank``-th nearest anchor), and the global member with ``global_weight``,
    all divided by their sum. Only the (point, neighbour) pairs are evaluated, grouped by anchor (measured ~3x faster
    than padding the groups to one batched matmul on the CPU at N = 16k, K = 65, 12 neighbours, width 64).

    ``extra_dim``: per-point inputs (hyper coordinates, global code); ``local_dim``: width of the per-anchor codes
    ``local [K, local_dim]`` passed to forward (0: none). Every member starts as the same sphere, centred at
    ``center`` (default: the anchors' mean), so the blend is that sphere whatever the weights.

    ``mirror [K]`` (MonoNPHM's symmetry): anchor ``k``'s mirror partner across the plane x = 0 (itself for an
    anchor on it). A pair shares one MLP: the partner listed second reads ``x - a_k`` with its x coordinate negated,
    so the pair's local shapes are mirror images of each other. ``anchors`` given to forward (``[K, 3]``, or
    ``[G, K, 3]`` with a ``group [N]`` per point: one set per identity, as a prior predicts them) replace the
    ``anchors`` given here, which then only place the initial spheres.
    """

    def __init__(
        self,
        anchors: Float[Tensor, "K 3"],
        extra_dim: int = 0,
        config: AnchorSdfConfig | None = None,
        local_dim: int = 0,
        center: Sequence[float] | Tensor | None = None,
        mirror: Int[Tensor, " K"] | None = None,
    ) -> None:
        super().__init__()
        check_float("anchors", anchors, [None, 3])
        self.config = config = config if config is not None else AnchorSdfConfig()
        self.num_anchors = k = anchors.shape[0]
        if config.neighbours > k or config.sigma_rank > k:
            raise ValueError(
                f"anchors: expected at least max(neighbours, sigma_rank) = {max(config.neighbours, config.sigma_rank)}"
                f" anchors, got {k}"
            )
        self.extra_dim = check_count("extra_dim", extra_dim, 0)
        self.local_dim = check_count("local_dim", local_dim, 0)
        radius = config.radius if config.radius is not None else config.local.radius
        self.member_config = member = dataclasses.replace(config.local, radius=radius)
        dtype = torch.get_default_dtype()
        anchors64 = anchors.detach().to("cpu", torch.float64)
        centre = anchors64.mean(dim=0) if center is None else _center(center)
        if config.learn_anchors:
            self.anchors = nn.Parameter(anchors64.to(dtype))
        else:
            self.register_buffer("anchors", anchors64.to(dtype))
        owner, flip = _mirror_members(mirror, k)
        self.register_buffer("owner", owner)  # anchor -> the member MLP it reads
        self.register_buffer("flip", flip)  # anchor reads its relative x coordinate negated
        # x -> -x, a buffer: a step copies nothing from the host (not saved: old checkpoints load as they are)
        self.register_buffer("mirror_x", torch.tensor([-1.0, 1.0, 1.0], dtype=dtype), persistent=False)
        self.num_members = int(owner.max()) + 1
        self.encoding = FrequencyEncoding(3, member.position_frequencies) if member.position_frequencies else None
        self.in_dim = 3 * (1 + 2 * member.position_frequencies) + extra_dim + local_dim
        self.feature_dim = member.hidden_dim
        # Member k reads x - a_k: its sphere sits at center - a_k in its own coordinates (the first-layer bias).
        firsts = torch.nonzero(~flip)[:, 0]  # the anchor that owns each member, in member order
        stacks = [_sphere_layers(self.in_dim, member, centre - anchors64[a], dtype) for a in firsts.tolist()]
        self.weights = nn.ParameterList([nn.Parameter(torch.stack([s[0][i] for s in stacks])) for i in range(len(stacks[0][0]))])
        self.biases = nn.ParameterList([nn.Parameter(torch.stack([s[1][i] for s in stacks])) for i in range(len(stacks[0][1]))])
        self.global_mlp = SdfMlp(extra_dim, member, centre)

    def _point_anchors(self, x: Tensor, anchors: Tensor | None, group: Tensor | None) -> tuple[Tensor, Tensor | None]:
        """The anchors to blend (``[K, 3]`` or ``[G, K, 3]``) and each point's set (None: one set), checked."""
        if anchors is None:
            if group is not None:
                raise ValueError("group: expected None without per-call anchors [G, K, 3], got a tensor")
            return self.anchors, None
        k = self.num_anchors
        if anchors.dim() == 2:
            check_float("anchors", anchors, [k, 3], device=x.device)
            if group is not None:
                raise ValueError("group: expected None with one anchor set [K, 3], got a tensor")
            return anchors.to(x.dtype), None
        check_float("anchors", anchors, [None, k, 3], device=x.device)
        if group is None:
            raise ValueError(f"group: expected the set of each point (a tensor [{x.shape[0]}]) with anchors [G, K, 3]")
        check_int("group", group, [x.shape[0]], upper=anchors.shape[0], device=x.device)
        return anchors.to(x.dtype), group

    def blend(
        self, x: Float[Tensor, "N 3"], anchors: Float[Tensor, "*G K 3"] | None = None, group: Int[Tensor, " N"] | None = None
    ) -> AnchorBlend:
        """Nearest anchors of each point and the normalised blend weights (differentiable in ``x`` and the anchors).
        ``anchors``, ``group``: per-call anchors (see the class docstring)."""
        _check_input("x", x, 3, None, self.anchors)
        return self._blend(x, *self._point_anchors(x, anchors, group))

    def _blend(self, x: Tensor, anchors: Tensor, group: Tensor | None) -> AnchorBlend:
        """:meth:`blend` of checked inputs."""
        cfg = self.config
        count = max(cfg.neighbours, cfg.sigma_rank)
        with torch.no_grad():  # which anchors: no gradient; the distances are recomputed below
            if group is None:
                distance = torch.cdist(x, anchors, compute_mode="donot_use_mm_for_euclid_dist")
            else:
                distance = (x[:, None, :] - anchors[group]).norm(dim=-1)
            index = distance.topk(count, dim=1, largest=False).indices
        near = anchors[index] if group is None else anchors[group[:, None], index]
        d2 = (x[:, None, :] - near).square().sum(dim=-1)  # [N, count], nearest first
        sigma2 = (d2[:, cfg.sigma_rank - 1 : cfg.sigma_rank] / cfg.sigma_divisor**2).clamp(min=torch.finfo(d2.dtype).tiny)
        gauss = torch.exp(-0.5 * d2[:, : cfg.neighbours] / sigma2)
        if cfg.global_distance is None:
            glob = torch.full_like(gauss[:, 0], cfg.global_weight)
        else:
            glob = torch.exp(-0.5 * cfg.global_distance**2 / sigma2[:, 0])
        total = gauss.sum(dim=1) + glob
        return AnchorBlend(index=index[:, : cfg.neighbours], weight=gauss / total[:, None], global_weight=glob / total)

    def members(
        self, enc: Float[Tensor, "P D"], anchor: Int[Tensor, " P"], weight: Float[Tensor, " P"] | None = None
    ) -> tuple[Float[Tensor, " P"], Float[Tensor, "P H"]]:
        """The member MLP of anchor ``anchor[p]`` on input row ``enc[p] = [PE(x - a), extra, local]`` (x already
        mirrored for a mirrored anchor): (sdf, last hidden layer, times ``weight[p]`` where given). The weight is
        applied member by member: autograd then keeps each member's last layer, which its output product keeps anyway,
        instead of a reordered copy of them all (the anchor ensemble's blend: a twentieth of its bytes under double
        backward). On CUDA's paths the rows go in tiles of one member each, a batched product a layer, whose shapes
        follow from the row count (:mod:`~headfields.group_tiles`): no group size is read back, and a CUDA graph holds
        it; the CPU splits the rows by member, which reads the sizes."""
        _check_input("enc", enc, self.in_dim, None, self.weights[0])
        check_int("anchor", anchor, [enc.shape[0]], upper=self.num_anchors, device=enc.device)
        member = self.owner[anchor]
        if takes_cuda_path(enc.device) and enc.shape[0] > 0:  # no read-back: tiles of one member, a product a layer
            tile = MEMBER_TILE or tile_rows(enc.shape[0], self.num_members, self.feature_dim)
            tiles = group_tiles(member, self.num_members, tile)
            weights, biases = [w[tiles.group] for w in self.weights], [b[tiles.group][:, None] for b in self.biases]
            s, h = _layers(tiles.gather(enc), weights, biases, self.member_config.skip_layer, self.member_config.beta, softplus)
            if weight is not None:  # in the tiles, as the split applies it member by member: no reordered copy kept
                h = tiles.gather(weight)[..., None] * h
            return tiles.scatter(s), tiles.scatter(h)
        order = torch.argsort(member, stable=True)
        counts = torch.bincount(member, minlength=self.num_members).tolist()  # one host sync for the group sizes
        rows = enc[order].split(counts)
        scales = [None] * len(rows) if weight is None else weight[order].split(counts)
        sdf, features = [], []
        skip, beta = self.member_config.skip_layer, self.member_config.beta
        for k, (group, scale) in enumerate(zip(rows, scales, strict=True)):
            if group.shape[0] == 0:
                continue
            s, h = _run(group, [w[k] for w in self.weights], [b[k] for b in self.biases], skip, beta)
            sdf.append(s)
            features.append(h if scale is None else scale[:, None] * h)
        if not sdf:  # no points
            return enc.new_zeros(0), enc.new_zeros(0, self.feature_dim)
        inverse = torch.empty_like(order).index_copy_(0, order, torch.arange(order.shape[0], device=order.device))
        return torch.cat(sdf)[inverse], torch.cat(features)[inverse]

    def forward(
        self,
        x: Float[Tensor, "N 3"],
        extra: Float[Tensor, "N E"] | None = None,
        local: Float[Tensor, "*G K A"] | None = None,
        anchors: Float[Tensor, "*G K 3"] | None = None,
        group: Int[Tensor, " N"] | None = None,
    ) -> SdfOutput:
        """The blended sdf and features. ``extras``: ``index``, ``weight`` [N, M] and ``global_weight`` [N] of the
        blend, ``member_sdf`` [N, M] (each local member's sdf) and ``global_sdf`` [N]. ``local`` is ``[K, A]``, or
        ``[G, K, A]`` (one set per group) with per-call ``anchors [G, K, 3]`` and ``group``."""
        like = self.weights[0]
        _check_input("x", x, 3, None, like)
        n, m = x.shape[0], self.config.neighbours
        _check_input("extra", extra, self.extra_dim, n, like)
        anchors, group = self._point_anchors(x, anchors, group)
        if local is not None and local.dim() == 3:
            check_float("local", local, [anchors.shape[0] if group is not None else 1, self.num_anchors, self.local_dim])
            if group is None:
                local = local[0]
        else:
            _check_input("local", local, self.local_dim, self.num_anchors, like)
        blend = self._blend(x, anchors, group)
        near = anchors[blend.index] if group is None else anchors[group[:, None], blend.index]
        relative = x[:, None, :] - near
        # A mirrored anchor reads its partner's MLP in mirrored coordinates (x -> -x).
        relative = torch.where(self.flip[blend.index][..., None], relative * self.mirror_x.to(relative.dtype), relative)
        relative = relative.reshape(n * m, 3)
        enc = [self.encoding(relative) if self.encoding is not None else relative]
        if extra is not None:
            enc.append(extra[:, None, :].expand(n, m, self.extra_dim).reshape(n * m, self.extra_dim))
        if local is not None:
            rows = local[blend.index] if local.dim() == 2 else local[group[:, None], blend.index]
            enc.append(rows.reshape(n * m, self.local_dim))
        member_sdf, weighted = self.members(torch.cat(enc, dim=-1), blend.index.reshape(-1), blend.weight.reshape(-1))
        member_sdf, weighted = member_sdf.reshape(n, m), weighted.reshape(n, m, self.feature_dim)
        glob = self.global_mlp(x, extra)
        sdf = (blend.weight * member_sdf).sum(dim=1) + blend.global_weight * glob.sdf
        features = weighted.sum(dim=1) + blend.global_weight[:, None] * glob.features
        extras = {
            "index": blend.index,
            "weight": blend.weight,
            "global_weight": blend.global_weight,
            "member_sdf": member_sdf,
            "global_sdf": glob.sdf,
        }
        return SdfOutput(sdf=sdf, features=features, extras=extras)


def _mirror_members(mirror: Tensor | None, count: int) -> tuple[Tensor, Tensor]:
    """(member index per anchor ``[K]``, whether the anchor reads mirrored coordinates ``[K]``): the first anchor
    of a mirror pair owns the member, the second reads it mirrored; an anchor without a partner owns its own."""
    if mirror is None:
        return torch.arange(count), torch.zeros(count, dtype=torch.bool)
    check_int("mirror", mirror, [count], upper=count)
    partner = mirror.detach().to("cpu", torch.long)
    k = torch.arange(count)
    if not torch.equal(partner[partner], k):
        raise ValueError("mirror: expected an involution (mirror[mirror[k]] == k for every anchor k)")
    flip = partner < k  # the second of each pair
    owners = torch.nonzero(~flip)[:, 0]
    member_of_owner = torch.empty(count, dtype=torch.long)
    member_of_owner[owners] = torch.arange(len(owners))
    owner = torch.where(flip, member_of_owner[partner], member_of_owner[k])
    return owner, flip
