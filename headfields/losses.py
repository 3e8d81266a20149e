"""Training losses: photometric (L1, L2, Huber) with per-ray weights, region weights as data, depth prior, mask BCE,
the deformation-field regularisers of Nerfies / MonoAvatar (elastic, magnitude: defined beside the deformers that
train with them, :mod:`headfields.deformers.regularisers`) and the eikonal term of SDF fields.

Every loss is a mean over the elements it covers and returns a scalar tensor. Per-ray ``weight`` multiplies each
ray's terms before the mean (it is not renormalised: INSTA's lips/mouth rays x40 make the loss larger, as in its
code). An empty batch, or a ``mask`` with no True entry, gives a loss of exactly 0 that is still connected to the
graph of ``pred`` (its gradient is 0), never NaN, so a batch without e.g. face pixels does not break training.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from jaxtyping import Bool, Float, Int
from torch import Tensor

from .checks import check_finite, check_float, check_int, check_positive, check_shape, check_weights, checking_values
from .deformers.regularisers import ELASTIC_MIN_SINGULAR, elastic_loss, magnitude_loss  # the deformers train with them

__all__ = [
    "ELASTIC_MIN_SINGULAR",
    "HUBER_DELTA",
    "INSTA_DEPTH_WEIGHT",
    "INSTA_MOUTH_WARMUP_STEPS",
    "INSTA_MOUTH_WEIGHT",
    "NEUS_EIKONAL_WEIGHT",
    "NGP_HUBER_DIVISOR",
    "depth_loss",
    "eikonal_loss",
    "elastic_loss",
    "huber_loss",
    "l1_loss",
    "magnitude_loss",
    "mask_loss",
    "mse_loss",
    "ngp_huber_loss",
    "region_weights",
]

# INSTA (configs/nerf/main.json; instant-ngp's testbed_nerf.cu as INSTA ships it): Huber with delta 0.1 on RGB
# (ngp_huber_loss); lips and mouth pixels weighted x40 ("seg_weight") after 500 steps (src/core.cu); L1 depth
# against the tracked FLAME's depth with weight 1.25 ("depth_weight") on an allow-list of face-parsing labels.
HUBER_DELTA = 0.1
INSTA_MOUTH_WEIGHT = 40.0
INSTA_MOUTH_WARMUP_STEPS = 500
INSTA_DEPTH_WEIGHT = 1.25
# instant-ngp divides its NeRF Huber by 5 (testbed_nerf.cu, loss_and_gradient: `huber_loss(target, prediction,
# 0.1f) / 5.0f`, "such that its L2 region near zero matches with the L2 loss"), on tiny-cuda-nn's Huber
# r^2 / (2 delta) | |r| - delta / 2, which is torch's divided by delta.
NGP_HUBER_DIVISOR = 5.0
# Opacities may leave [0, 1] by float rounding in compositing; beyond this it is a bug, not rounding.
OPACITY_TOLERANCE = 1e-4
# NeuS (PAPERS.md, "MonoNPHM"): the eikonal term (||grad f|| - 1)^2 enters the training loss with weight 0.1.
NEUS_EIKONAL_WEIGHT = 0.1


def _zero(pred: Tensor) -> Tensor:
    """A scalar 0 that keeps the graph of ``pred`` (gradient 0) - the value of a loss over no elements."""
    return pred.sum() * 0.0


def _pair(pred: Tensor, target: Tensor, weight: Tensor | None, pred_name: str = "pred") -> None:
    check_float(pred_name, pred, [None] * pred.dim())
    check_float("target", target, list(pred.shape), device=pred.device)
    if weight is not None:
        check_weights(weight, pred, "per-ray")


def _weighted_mean(per_element: Tensor, weight: Tensor | None) -> Tensor:
    if per_element.numel() == 0:
        return _zero(per_element)
    if weight is not None:
        per_element = per_element * weight.reshape(-1, *[1] * (per_element.dim() - 1))
    return per_element.mean()


def l1_loss(
    pred: Float[Tensor, "N ..."], target: Float[Tensor, "N ..."], weight: Float[Tensor, " N"] | None = None
) -> Float[Tensor, ""]:
    """Mean of ``weight[n] * |pred - target|`` over all elements (``weight`` defaults to ones)."""
    _pair(pred, target, weight)
    return _weighted_mean((pred - target).abs(), weight)


def mse_loss(
    pred: Float[Tensor, "N ..."], target: Float[Tensor, "N ..."], weight: Float[Tensor, " N"] | None = None
) -> Float[Tensor, ""]:
    """Mean of ``weight[n] * (pred - target)^2`` over all elements (L2; MonoAvatar's photometric loss)."""
    _pair(pred, target, weight)
    return _weighted_mean((pred - target).square(), weight)


def huber_loss(
    pred: Float[Tensor, "N ..."],
    target: Float[Tensor, "N ..."],
    delta: float = HUBER_DELTA,
    weight: Float[Tensor, " N"] | None = None,
) -> Float[Tensor, ""]:
    """Mean of ``weight[n] * h(pred - target)`` with ``h(r) = r^2 / 2`` for ``|r| < delta`` and
    ``delta * (|r| - delta / 2)`` beyond (torch.nn.functional.huber_loss's definition; INSTA: delta 0.1)."""
    check_positive("delta", delta)
    _pair(pred, target, weight)
    return _weighted_mean(F.huber_loss(pred, target, reduction="none", delta=delta), weight)


def ngp_huber_loss(
    pred: Float[Tensor, "N C"],
    target: Float[Tensor, "N C"],
    delta: float = HUBER_DELTA,
    weight: Float[Tensor, " N"] | None = None,
) -> Float[Tensor, ""]:
    """instant-ngp's NeRF Huber, which INSTA trains with: the mean over rays of ``weight[n] * sum_c h(pred - target) / 5``
    with tiny-cuda-nn's ``h(r) = r^2 / (2 delta)`` for ``|r| <= delta`` and ``|r| - delta / 2`` beyond.

    Per element that is torch's Huber (:func:`huber_loss`) times ``1 / (5 delta)``: 2 at INSTA's delta 0.1, so the
    quadratic part is exactly ``r^2``. The channels are summed, not averaged: instant-ngp's
    ``compute_loss_kernel_train_nerf`` back-propagates every channel's gradient unaveraged and divides by the
    number of rays only (``loss_scale /= n_rays``). For RGB ``[N, 3]`` at delta 0.1 this is 6 times
    :func:`huber_loss`; its scale matters next to the depth term and the weight decay.

        loss = ngp_huber_loss(rgb, target, weight=mouth_weights)  # rgb, target [R, 3]
    """
    check_positive("delta", delta)
    _pair(pred, target, weight)
    check_shape("pred", pred, [None, None])
    if pred.shape[0] == 0:
        return _zero(pred)
    per_ray = F.huber_loss(pred, target, reduction="none", delta=delta).sum(dim=1) / (NGP_HUBER_DIVISOR * delta)
    return _weighted_mean(per_ray, weight)


def region_weights(
    labels: Int[Tensor, " N"], weights: Mapping[int, float] | Float[Tensor, " L"], default: float = 1.0
) -> Float[Tensor, " N"]:
    """Per-ray multipliers from per-ray region labels: ``weights[labels[n]]``.

    ``weights`` is a mapping ``{label: weight}`` (labels missing from it get ``default``; any integer label,
    negative too) or a lookup tensor ``[L]`` indexed by labels in ``[0, L)``. The result has the lookup
    tensor's dtype, or the default dtype for a mapping, on ``labels``' device. Weights must be non-negative."""
    check_shape("labels", labels, [None])
    if labels.dtype.is_floating_point or labels.dtype.is_complex or labels.dtype == torch.bool:
        raise TypeError(f"labels: expected an integer tensor, got {labels.dtype}")
    if isinstance(weights, Tensor):
        check_float("weights", weights, [None])
        if (weights < 0).any():
            raise ValueError("weights: expected non-negative region weights, got a negative value")
        check_int("labels", labels, [None], upper=weights.shape[0])
        return weights.to(labels.device)[labels.long()]
    if not isinstance(weights, Mapping):
        raise TypeError(f"weights: expected a mapping {{label: weight}} or a tensor [L], got {type(weights).__name__}")
    if not default >= 0:
        raise ValueError(f"default: expected a non-negative weight, got {default}")
    out = torch.full(labels.shape, float(default), device=labels.device)
    for label, value in weights.items():
        if not float(value) >= 0 or value == float("inf"):
            raise ValueError(f"weights: expected finite non-negative region weights, got {value!r} for label {label!r}")
        out[labels == int(label)] = float(value)
    return out


def depth_loss(pred: Float[Tensor, " N"], target: Float[Tensor, " N"], mask: Bool[Tensor, " N"]) -> Float[Tensor, ""]:
    """Mean ``|pred - target|`` over the rays where ``mask`` is True (INSTA's depth prior: ``target`` the tracked
    FLAME's depth along the ray, ``mask`` its allow-list of face-parsing labels and the rays that hit the mesh;
    weight 1.25 is the caller's, and INSTA divides by all rays, not the masked ones: the caller's too).
    ``target`` may hold inf/NaN where ``mask`` is False (e.g. rays that miss). An all-False mask gives 0."""
    check_float("pred", pred, [None])
    check_shape("target", target, [pred.shape[0]], device=pred.device)
    if not target.is_floating_point():
        raise TypeError(f"target: expected a floating-point tensor, got {target.dtype}")
    check_shape("mask", mask, [pred.shape[0]], device=pred.device)
    if mask.dtype != torch.bool:
        raise TypeError(f"mask: expected a bool tensor, got {mask.dtype}")
    if checking_values():
        check_finite("target", target[mask], "finite values where mask is True")
    # Masked by where, not by indexing (whose size is read back from the device). The masked-out targets may be
    # inf/NaN: the where drops their differences, and a difference's gradient (+-1) never meets their values, so they
    # need no replacing before it (a where fewer, forward and backward).
    error = torch.where(mask, pred - target, 0.0).abs()
    return error.sum() / mask.sum().clamp(min=1)


def mask_loss(
    opacity: Float[Tensor, " N"], target: Float[Tensor, " N"], weight: Float[Tensor, " N"] | None = None
) -> Float[Tensor, ""]:
    """Silhouette loss: mean binary cross-entropy between rendered ``opacity`` and the ``target`` mask, both in
    [0, 1] (opacity within 1e-4 of it is clamped; torch clamps the logs at -100, so opacity 0 or 1 stays finite)."""
    _pair(opacity, target, weight, "opacity")
    if checking_values() and opacity.numel() and (opacity.min() < -OPACITY_TOLERANCE or opacity.max() > 1 + OPACITY_TOLERANCE):
        raise ValueError(f"opacity: expected values in [0, 1], got values in [{float(opacity.min())}, {float(opacity.max())}]")
    if checking_values() and target.numel() and (target.min() < 0 or target.max() > 1):
        raise ValueError(f"target: expected values in [0, 1], got values in [{float(target.min())}, {float(target.max())}]")
    bce = F.binary_cross_entropy(opacity.clamp(0.0, 1.0), target.to(opacity.dtype), reduction="none")
    return _weighted_mean(bce, weight)


def eikonal_loss(gradients: Float[Tensor, "N 3"], weight: Float[Tensor, " N"] | None = None) -> Float[Tensor, ""]:
    """Mean over samples of ``(||g|| - 1)^2``: keeps an SDF's gradient ``g = grad f`` at unit length (IGR; NeuS adds it
    with weight ``NEUS_EIKONAL_WEIGHT``, the caller's). Pass gradients taken with ``create_graph=True`` so the loss
    reaches the field's parameters. ``weight [N]`` multiplies each sample's term before the mean. An empty batch
    gives 0."""
    check_float("gradients", gradients, [None, 3])
    if weight is not None:
        check_weights(weight, gradients, "per-sample")
    return _weighted_mean((torch.linalg.vector_norm(gradients, dim=-1) - 1.0).square(), weight)
