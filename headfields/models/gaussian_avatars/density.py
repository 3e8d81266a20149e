"""GaussianAvatars' adaptive density control of bound Gaussians (Qian et al., CVPR 2024), 3DGS's rule
(Kerbl et al. 2023) with the binding added: clone small and split large Gaussians whose view-space positional gradient is
high, prune transparent (and, late, huge) ones, reset opacities now and then; every child keeps its parent's face.
The paper's own rule, so it lives beside its model; its steps call it after each backward
(:mod:`headfields.models.gaussian_avatars.steps`).

Facts from ``ShenhanQian/GaussianAvatars`` (its ``scene/gaussian_model.py`` is 3DGS's with the binding added):
``densify_and_prune``, ``densify_and_clone``, ``densify_and_split``, ``prune_points`` (a face never loses its last
Gaussian: ``binding_counter``), ``reset_opacity``, ``add_densification_stats``; the schedule and the literal 0.005 and
20 in ``train.py``; defaults in ``arguments/__init__.py`` ``OptimizationParams``. Pixel gradients are turned into the
NDC gradients 3DGS thresholds as gsplat does (``gsplat/strategy/default.py``, ``_update_state``).

The optimiser holds each :class:`~headfields.deformers.gaussian_binding.GaussianSet` parameter alone in a param group
whose ``"name"`` is the attribute's name (:func:`gaussian_param_groups`); densifying and pruning replace those
parameters and carry their Adam rows (``exp_avg``, ``exp_avg_sq``; new rows start at zero), as the code's
``cat_tensors_to_optimizer`` and ``_prune_optimizer`` do.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from jaxtyping import Float, Int
from torch import Tensor, nn

from ...checks import check_count, check_float, check_int, check_positive
from ...deformers.gaussian_binding import GaussianSet, quaternion_to_matrix

PARAMETER_NAMES = ("local_means", "local_quats", "local_log_scales", "opacity_logits", "sh_dc", "sh_rest")


def gaussian_param_groups(gaussians: GaussianSet, lrs: dict[str, float]) -> list[dict]:
    """One Adam param group a parameter, named after it, with its learning rate from ``lrs`` (a rate for each of
    :data:`PARAMETER_NAMES`).

    >>> lrs = learning_rates(GaussianAvatarConfig(), extent)  # headfields.models.gaussian_avatars.rates
    >>> optimizer = torch.optim.Adam(gaussian_param_groups(gaussians, lrs), lr=0.0, eps=1e-15)
    >>> control.step(step, gaussians, optimizer, extent, posed.face_scale)
    """
    missing = [name for name in PARAMETER_NAMES if name not in lrs]
    if missing:
        raise ValueError(f"lrs: expected a learning rate for each of {PARAMETER_NAMES}, missing {missing}")
    return [{"params": [getattr(gaussians, name)], "lr": float(lrs[name]), "name": name} for name in PARAMETER_NAMES]


@dataclass(frozen=True)
class DensityConfig:
    """When and how to densify, prune and reset (GaussianAvatars' defaults; 3DGS's in brackets). Steps count from 1
    as ``train.py``'s iterations do."""

    grad_threshold: float = 2e-4  # densify_grad_threshold (same): mean NDC gradient norm, compared with >=
    percent_dense: float = 0.01  # percent_dense (same): clone if max world scale <= this × extent, else split
    densification_interval: int = 2_000  # densification_interval [100]
    densify_from: int = 10_000  # densify_from_iter [500]: densify at steps > this
    densify_until: int = 600_000  # densify_until_iter [15_000]: nothing (no reset either) at steps >= this
    opacity_reset_interval: int = 60_000  # opacity_reset_interval [3_000]; the size rules apply after the first
    min_opacity: float = 0.005  # train.py, densify_and_prune(..., 0.005, ...)
    reset_opacity: float = 0.01  # reset_opacity: opacities become min(opacity, 0.01)
    split_children: int = 2  # densify_and_split(N=2)
    split_scale_factor: float = 0.8  # densify_and_split: children's scale = parent's / (0.8 N)
    max_world_scale: float = 0.1  # densify_and_prune: prune if max world scale > 0.1 × extent
    max_screen_radius: float = 20.0  # train.py size_threshold (pixels)
    # densify_and_prune also prunes max_radii2D > 20, but densification_postfix has just zeroed max_radii2D, so the
    # rule never fires (graphdeco-inria/gaussian-splatting issue #123; gsplat leaves it off by default). Off: as run.
    prune_by_screen_size: bool = False
    # densify_and_split samples the offsets with the world scale k·s' as standard deviation but adds them to the
    # local mean μ' (in units of k): False does exactly that; True samples N(0, s') in local units.
    split_std_in_local_units: bool = False
    reset_opacity_at_densify_from: bool = False  # train.py: also reset at densify_from_iter with a white background

    def __post_init__(self) -> None:
        for name in ("densification_interval", "opacity_reset_interval", "split_children"):
            check_count(name, getattr(self, name), 1)
        for name in ("densify_from", "densify_until"):
            check_count(name, getattr(self, name), 0)
        for name in ("grad_threshold", "percent_dense", "split_scale_factor", "max_world_scale", "max_screen_radius"):
            check_positive(name, getattr(self, name))
        if not 0 < self.min_opacity < 1 or not 0 < self.reset_opacity < 1:
            raise ValueError(
                f"min_opacity, reset_opacity: expected values in (0, 1), got {self.min_opacity}, {self.reset_opacity}"
            )


def _groups(optimizer: torch.optim.Optimizer, gaussians: GaussianSet) -> dict[str, dict]:
    """The param group of each GaussianSet parameter, checked: alone, and named after it."""
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise TypeError(f"optimizer: expected a torch.optim.Optimizer, got {type(optimizer).__name__}")
    ids = {id(getattr(gaussians, name)): name for name in PARAMETER_NAMES}
    found: dict[str, dict] = {}
    for i, group in enumerate(optimizer.param_groups):
        for param in group["params"]:
            name = ids.get(id(param))
            if name is not None and (group.get("name") != name or len(group["params"]) != 1):
                raise ValueError(f"optimizer: group {i} holds gaussians.{name}; expected it alone in a group named {name!r}")
            if name is not None:
                found[name] = group
        if group.get("name") in PARAMETER_NAMES and group["name"] not in found:
            raise ValueError(f"optimizer: group {i} is named {group['name']!r} but does not hold gaussians.{group['name']}")
    if not found:
        raise ValueError("optimizer: holds none of the GaussianSet's parameters; build it with gaussian_param_groups")
    return found


def _replace(
    gaussians: GaussianSet, optimizer: torch.optim.Optimizer, groups: dict, name: str, value: Tensor, rows: Callable
) -> None:
    """Set ``gaussians.<name>`` to a new Parameter holding ``value``; its Adam state tensors become ``rows(state)``."""
    old = getattr(gaussians, name)
    new = nn.Parameter(value, requires_grad=old.requires_grad)
    if name in groups:
        state = optimizer.state.pop(old, None)
        if state is not None:
            for key, moment in state.items():
                if isinstance(moment, Tensor) and moment.shape == old.shape:  # exp_avg, exp_avg_sq (max_exp_avg_sq)
                    state[key] = rows(moment)
            optimizer.state[new] = state
        groups[name]["params"][0] = new
    setattr(gaussians, name, new)


def _rebuild(gaussians: GaussianSet, optimizer, groups, keep: Tensor, new: dict[str, Tensor], new_parent: Tensor) -> None:
    """Keep rows ``keep`` of every parameter (and its Adam rows), then append ``new`` (Adam rows of zeros)."""
    for name in PARAMETER_NAMES:
        added = new.get(name)
        count = 0 if added is None else added.shape[0]

        def rows(x: Tensor, count=count) -> Tensor:
            return torch.cat([x[keep], x.new_zeros(count, *x.shape[1:])])

        old = getattr(gaussians, name).detach()
        _replace(gaussians, optimizer, groups, name, old[keep] if added is None else torch.cat([old[keep], added]), rows)
    gaussians.parent = torch.cat([gaussians.parent[keep], new_parent])


class DensityControl:
    """The statistics and the schedule of density control for one :class:`GaussianSet`.

    >>> control = DensityControl(DensityConfig())
    >>> control.accumulate(means2d.grad, radii, width, height)  # after backward, before optimizer.step()
    >>> control.step(step, gaussians, optimizer, extent, posed.face_scale)
    """

    def __init__(self, config: DensityConfig | None = None, generator: torch.Generator | None = None):
        self.config = config or DensityConfig()
        self.generator = generator  # for the split's samples
        self.grad_sum: Tensor | None = None  # [N]: Σ ‖NDC gradient‖ over the views that drew each Gaussian
        self.count: Tensor | None = None  # [N]: how many views drew it
        self.max_radii: Tensor | None = None  # [N]: its largest radius (pixels)

    def _reset_stats(self, n: int, like: Tensor) -> None:
        self.grad_sum, self.count, self.max_radii = (like.new_zeros(n, dtype=torch.float32) for _ in range(3))

    @torch.no_grad()
    def accumulate(self, means2d_grad: Float[Tensor, "N 2"], radii: Int[Tensor, " N"], width: int, height: int) -> None:
        """Add this view's gradient norms of the Gaussians it drew (``radii > 0``; ``add_densification_stats``).
        ``means2d_grad`` is in pixel units; 3DGS's rasteriser reports it w.r.t. NDC (its backward multiplies by
        ``0.5 W``, ``0.5 H``), so it is scaled by ``width / 2`` and ``height / 2`` as gsplat's default strategy does.

        >>> posed_means2d.retain_grad(); loss.backward()
        >>> control.accumulate(posed_means2d.grad, radii, 512, 512)
        >>> control.grad_sum.shape  # [N]
        """
        check_float("means2d_grad", means2d_grad, [None, 2])
        n = means2d_grad.shape[0]
        check_int("radii", radii, [n], device=means2d_grad.device)
        width, height = check_count("width", width, 1), check_count("height", height, 1)
        if self.grad_sum is None:
            self._reset_stats(n, means2d_grad)
        elif self.grad_sum.shape[0] != n:
            raise ValueError(f"means2d_grad: expected {self.grad_sum.shape[0]} rows (the Gaussians tracked), got {n}")
        drawn = radii > 0
        grad = means2d_grad.float()  # to NDC units: each axis by half the image's size (no tensor from the host)
        ndc = torch.stack((grad[:, 0] * (width / 2), grad[:, 1] * (height / 2)), dim=-1)
        self.grad_sum += torch.where(drawn, ndc.norm(dim=-1), 0.0)
        self.count += drawn
        self.max_radii = torch.where(drawn, torch.maximum(self.max_radii, radii.float()), self.max_radii)

    @torch.no_grad()
    def step(
        self, step: int, gaussians: GaussianSet, optimizer: torch.optim.Optimizer, extent: float, face_scale: Float[Tensor, " F"]
    ) -> dict[str, int]:
        """Densify and prune, then reset opacities, where the schedule says (``train.py``): densify at
        ``densify_from < step < densify_until`` on multiples of the interval; reset at ``step < densify_until`` on
        multiples of the reset interval. ``extent``: 3DGS's ``cameras_extent`` (1.1 × the largest distance of a
        training camera from their mean); ``face_scale``: ``k`` of this step's frame (``PosedGaussians.face_scale``),
        which sets the world scales compared with ``extent``. Call before ``optimizer.step()``, as ``train.py`` does.

        >>> counts = control.step(12_000, gaussians, optimizer, extent, posed.face_scale)
        >>> counts  # {'cloned': ..., 'split': ..., 'pruned': ..., 'reset': 0 or 1}
        >>> optimizer.step()
        """
        c = self.config
        step = check_count("step", step, 0)
        check_positive("extent", extent)
        if not math.isfinite(extent):
            raise ValueError(f"extent: expected a finite positive number, got {extent}")
        if not isinstance(gaussians, GaussianSet):
            raise TypeError(f"gaussians: expected a GaussianSet, got {type(gaussians).__name__}")
        check_float("face_scale", face_scale, [gaussians.num_faces], gaussians.parent.device)
        groups = _groups(optimizer, gaussians)
        counts = {"cloned": 0, "split": 0, "pruned": 0, "reset": 0}
        if step >= c.densify_until:
            return counts
        if step > c.densify_from and step % c.densification_interval == 0:
            counts.update(self._densify_and_prune(step, gaussians, optimizer, groups, extent, face_scale))
        if (step > 0 and step % c.opacity_reset_interval == 0) or (c.reset_opacity_at_densify_from and step == c.densify_from):
            ceiling = math.log(c.reset_opacity / (1 - c.reset_opacity))  # min on logits = min on opacities
            new = gaussians.opacity_logits.detach().clamp(max=ceiling)
            _replace(gaussians, optimizer, groups, "opacity_logits", new, torch.zeros_like)  # replace_tensor_to_optimizer
            counts["reset"] = 1
        return counts

    def _densify_and_prune(self, step, gaussians: GaussianSet, optimizer, groups, extent: float, face_scale: Tensor) -> dict:
        c, n, device = self.config, gaussians.num_gaussians, gaussians.parent.device
        if self.grad_sum is None:
            self._reset_stats(n, face_scale)
        elif self.grad_sum.shape[0] != n:
            raise ValueError(f"gaussians: has {n} Gaussians, the statistics {self.grad_sum.shape[0]} (another set?)")
        grads = self.grad_sum / self.count.clamp_min(1)  # densify_and_prune: NaN (never drawn) -> 0
        world = gaussians.local_log_scales.exp() * face_scale[gaussians.parent, None]  # get_scaling
        high, big = grads >= c.grad_threshold, world.amax(dim=-1) > c.percent_dense * extent
        clone, split = high & ~big, high & big
        max_radii = self.max_radii

        # densify_and_clone: exact copies, same face.
        params = {name: getattr(gaussians, name).detach() for name in PARAMETER_NAMES}
        copies = {name: value[clone] for name, value in params.items()}
        _rebuild(gaussians, optimizer, groups, torch.arange(n, device=device), copies, gaussians.parent[clone])
        n_clone = int(clone.sum())
        max_radii = torch.cat([max_radii, max_radii.new_zeros(n_clone)])

        # densify_and_split: N children sampled around the parent in its local frame, scale / (0.8 N); the parent goes.
        k, rows = c.split_children, split.nonzero()[:, 0]
        p = {name: params[name][rows].repeat_interleave(k, dim=0) for name in PARAMETER_NAMES}
        face_k = face_scale[gaussians.parent[rows]].repeat_interleave(k)[:, None]
        std = p["local_log_scales"].exp() * (1 if c.split_std_in_local_units else face_k)  # see the config
        gen_device = self.generator.device if self.generator is not None else device
        noise = torch.randn(std.shape, generator=self.generator, device=gen_device, dtype=std.dtype).to(device)
        p["local_means"] = p["local_means"] + torch.einsum("nij,nj->ni", quaternion_to_matrix(p["local_quats"]), noise * std)
        p["local_log_scales"] = p["local_log_scales"] - math.log(c.split_scale_factor * k)
        keep = (~torch.cat([split, split.new_zeros(n_clone)])).nonzero()[:, 0]  # clones are not split
        _rebuild(gaussians, optimizer, groups, keep, p, gaussians.parent[rows].repeat_interleave(k))
        max_radii = torch.cat([max_radii[keep], max_radii.new_zeros(rows.shape[0] * k)])

        # prune_points: transparent, and after the first opacity reset too big in the world; never a face's last.
        prune = torch.sigmoid(gaussians.opacity_logits.detach()) < c.min_opacity
        if step > c.opacity_reset_interval:
            world = gaussians.local_log_scales.detach().exp() * face_scale[gaussians.parent, None]
            prune |= world.amax(dim=-1) > c.max_world_scale * extent
            if c.prune_by_screen_size:
                prune |= max_radii > c.max_screen_radius
        total = torch.bincount(gaussians.parent, minlength=gaussians.num_faces)
        removed = torch.bincount(gaussians.parent[prune], minlength=gaussians.num_faces)
        prune &= (total - removed > 0)[gaussians.parent]  # a face that would lose all keeps all its candidates
        _rebuild(gaussians, optimizer, groups, (~prune).nonzero()[:, 0], {}, gaussians.parent[:0])
        self._reset_stats(gaussians.num_gaussians, face_scale)  # densification_postfix zeroes the statistics
        return {"cloned": n_clone, "split": int(rows.shape[0]), "pruned": int(prune.sum())}
