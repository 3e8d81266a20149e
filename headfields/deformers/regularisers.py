"""The deformation-field regularisers of Nerfies and MonoAvatar: the elastic loss on a field's Jacobian and the
magnitude of its displacement. The deformers that train with them (:mod:`~headfields.deformers.error_correction`,
:mod:`~headfields.deformers.blend_fields`) call them here; :mod:`headfields.losses` exports them with the other
losses.

As every loss of :mod:`headfields.losses`: a mean over the samples, a scalar tensor; per-sample ``weight``
multiplies each sample's term before the mean (not renormalised); an empty batch gives exactly 0, still connected
to the input's graph (gradient 0), never NaN.

    elastic = elastic_loss(field.jacobian(x, frame), scale=0.03)  # Nerfies' robust elastic loss
    magnitude = magnitude_loss(displacement)  # displacement = q - T(q), [N, 3]
"""

from __future__ import annotations

import torch
from jaxtyping import Float
from torch import Tensor

from ..checks import check_float, check_positive, check_weights

__all__ = ["ELASTIC_MIN_SINGULAR", "elastic_loss", "magnitude_loss"]

# Elastic loss: singular values are clamped here before the log (Nerfies clamps at float32 epsilon), so a
# Jacobian that collapses a direction costs (log 1.19e-7)^2 ~ 254 per sample instead of inf.
ELASTIC_MIN_SINGULAR = float(torch.finfo(torch.float32).eps)


def elastic_loss(
    jacobian: Float[Tensor, "N 3 3"], scale: float | None = None, weight: Float[Tensor, " N"] | None = None
) -> Float[Tensor, ""]:
    """Nerfies' elastic regulariser of a deformation field: mean over samples of ``e = ‖log σ(J)‖² = Σ_i (log σ_i)²``
    with ``σ`` the singular values of the field's Jacobian ``J`` at the sample (0 exactly when ``J`` is a rotation:
    it penalises local stretch and squash, not rigid motion). ``σ`` is clamped below at ``ELASTIC_MIN_SINGULAR``.

    ``scale = c`` applies the Geman-McClure robust loss to ``‖log σ‖`` as Nerfies does (c = 0.03 there):
    ``ρ = 2 (e / c²) / (e / c² + 4)``, which saturates at 2 so that real non-rigid motion is not flattened; None
    gives plain ``e``. ``weight [N]`` (e.g. the samples' rendering weights, as in Nerfies) multiplies each
    sample's term before the mean. An empty batch gives 0 (connected to ``jacobian``'s graph)."""
    check_float("jacobian", jacobian, [None, 3, 3])
    check_positive("scale", scale)
    if weight is not None:
        check_weights(weight, jacobian)
    if jacobian.shape[0] == 0:
        return jacobian.sum() * 0.0
    # svdvals: stable gradients even for repeated singular values (e.g. at the identity).
    log_sigma = torch.log(torch.linalg.svdvals(jacobian).clamp(min=ELASTIC_MIN_SINGULAR))
    squared = log_sigma.square().sum(dim=-1)
    if scale is not None:
        ratio = squared / scale**2
        squared = 2.0 * ratio / (ratio + 4.0)
    return _weighted_mean(squared, weight)


def magnitude_loss(displacement: Float[Tensor, "N 3"], weight: Float[Tensor, " N"] | None = None) -> Float[Tensor, ""]:
    """Mean over samples of ``‖q − T(q)‖²`` (``displacement = q − T(q)``, its squared norm summed over the 3
    coordinates): keeps a correction field such as MonoAvatar's error-correction warp small (weight 1e-2 there).
    ``weight [N]`` multiplies each sample's term before the mean. An empty batch gives 0."""
    check_float("displacement", displacement, [None, 3])
    if weight is not None:
        check_weights(weight, displacement)
    return _weighted_mean(displacement.square().sum(dim=-1), weight)


def _weighted_mean(per_sample: Tensor, weight: Tensor | None) -> Tensor:
    if per_sample.numel() == 0:
        return per_sample.sum() * 0.0  # keeps the graph (gradient 0)
    return (per_sample * weight if weight is not None else per_sample).mean()
