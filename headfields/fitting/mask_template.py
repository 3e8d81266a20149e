"""A personal template from masks: a parametric model's shape and per-vertex offsets fitted so that, posed by each
frame's pose, its points fill every frame's mask (:class:`.MaskDistances`) -- the first fit of the 360-degree
portrait's template, whose turning subject shows every side's silhouette. Offsets reach what the model's shapes
cannot (hair, clothing); a uniform Laplacian keeps them smooth. The offsets are canonical and turn with each
vertex's skinning rotation, so the template poses as the model does (the joints are the model's own).

On portrait_person's turn (64 px, 24 frames, the true poses; ``tests/unit/fitting/test_mask_template.py``) the
bare model lies 40.5 mm inside the hair's surface (median); the fit reaches 2.0 mm there, 1.4 mm on the rest of the
head (1.5 before) and 0.7 mm on the torso, in 150 steps (16 s on two cores).

    template = fit_mask_template(model, frames.masks, frames.cameras, params.pose, params.translation)
    vertices = template.canonical(model)  # [V, 3]
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from jaxtyping import Bool, Float
from torch import Tensor

from ..cameras import PinholeCameras, project_points
from ..checks import check_count, check_float, check_positive, check_shape
from ..parametric.model import ParametricModel
from .landmark_tracking import SurfaceLandmarks
from .silhouette import MaskDistances

__all__ = ["MaskTemplateConfig", "PersonalTemplate", "fit_mask_template"]


@dataclass(frozen=True)
class MaskTemplateConfig:
    """Steps, rates and weights of :func:`fit_mask_template` (the loss in pixels: each point's distance outside its
    mask plus each outline point's distance to the nearest point, both means)."""

    steps: int = 150
    frames_per_step: int = 8  # frames drawn a step (each step sees a few sides; the Laplacian carries the rest)
    shapes: int = 10  # the leading shape coefficients fitted (the rest 0)
    shape_rate: float = 0.05  # Adam's, per coefficient
    offset_rate: float = 2e-3  # Adam's, metres
    # The offsets' uniform Laplacian, squared and averaged over the vertices (metres^2): at 1e4 the head's surface
    # moved off the truth (1.54 -> 2.60 mm), at 1e6 the hair fell short (3.1 mm); 64 px, 150 steps.
    smoothness: float = 1e5
    shape_prior: float = 1e-2  # on the fitted shape coefficients (unit variance in the model's PCA)
    # The landmarks' mean pixel error, frames with a face, when given: without them the hair's offsets, spread by the
    # Laplacian, grew the face 9% against the torso (portrait_person's turn, 128 px, its tracked poses).
    landmark_weight: float = 0.2
    seed: int = 0  # the frames each step draws

    def __post_init__(self) -> None:
        for name in ("steps", "frames_per_step"):
            check_count(name, getattr(self, name), 1)
        check_count("shapes", self.shapes, 0)
        for name in ("shape_rate", "offset_rate", "smoothness", "shape_prior", "landmark_weight"):
            check_positive(name, getattr(self, name), finite=True)


@dataclass
class PersonalTemplate:
    """A subject's template: ``shape`` coefficients ``[S]`` and canonical per-vertex ``offsets`` ``[V, 3]``."""

    shape: Float[Tensor, " S"]
    offsets: Float[Tensor, "V 3"]

    def canonical(self, model: ParametricModel) -> Float[Tensor, "V 3"]:
        """The template's vertices at zero pose and a neutral face."""
        return model(shape=self.shape).canonical_vertices + self.offsets

    def posed(self, model: ParametricModel, pose: Float[Tensor, "B J 3"], translation: Float[Tensor, "B 3"],
              expression: Float[Tensor, "B E"] | None = None) -> Float[Tensor, "B V 3"]:  # fmt: skip
        """The template posed: the model's posed vertices, each offset turned by its vertex's skinning rotation."""
        if expression is None:
            expression = torch.zeros(len(pose), model.num_expression, dtype=pose.dtype, device=pose.device)
        head = model(shape=self.shape, expression=expression, pose=pose, translation=translation)
        rotation = torch.einsum("vj,bjrc->bvrc", model.lbs_weights, head.joint_transforms[..., :3, :3])
        return head.vertices + torch.einsum("bvrc,vc->bvr", rotation, self.offsets)


def fit_mask_template(
    model: ParametricModel,
    masks: Bool[Tensor, "N H W"] | MaskDistances,
    cameras: PinholeCameras,
    pose: Float[Tensor, "N J 3"],
    translation: Float[Tensor, "N 3"],
    config: MaskTemplateConfig | None = None,
    progress: Callable[[int, float], None] | None = None,
    landmarks: SurfaceLandmarks | None = None,
    points: Float[Tensor, "N K 2"] | None = None,
) -> PersonalTemplate:
    """Fit ``model``'s first ``config.shapes`` shape coefficients and per-vertex offsets to the frames' ``masks`` (or
    their :class:`.MaskDistances`, from a caller that fits more than once), seen by ``cameras`` (one a frame) with the
    subject posed by ``pose`` and ``translation`` (a neutral face); and, given ``landmarks`` and their ``points``
    (pixels, column k of landmark k, NaN rows where no face was found), to them. ``progress(step, loss)`` is told
    after each step."""
    config = config or MaskTemplateConfig()
    distances = masks if isinstance(masks, MaskDistances) else MaskDistances(masks)
    n = len(distances.outlines)
    check_float("pose", pose, [n, model.num_joints, 3])
    check_float("translation", translation, [n, 3])
    if cameras.num_frames != n:
        raise ValueError(f"cameras: expected one camera a frame of the {n} masks, got {cameras.num_frames}")
    if (landmarks is None) != (points is None):
        raise ValueError("points: expected the landmarks' points with landmarks, and neither without")
    seen = torch.zeros(n, dtype=torch.bool)
    if points is not None:
        check_shape("points", points, [n, len(landmarks.observed), 2])
        seen = torch.isfinite(points).all(-1).all(-1)
    v = model.num_vertices
    edges, degree = _edges(model.faces.cpu(), v)
    shape = torch.zeros(model.num_shape, requires_grad=True)
    offsets = torch.zeros(v, 3, requires_grad=True)
    fitted = torch.zeros(model.num_shape)
    fitted[: config.shapes] = 1.0
    optimiser = torch.optim.Adam([{"params": [shape], "lr": config.shape_rate}, {"params": [offsets], "lr": config.offset_rate}])
    generator = torch.Generator().manual_seed(config.seed)
    template = PersonalTemplate(shape, offsets)
    for step in range(config.steps):
        pick = torch.randperm(n, generator=generator)[: config.frames_per_step]
        posed = template.posed(model, pose[pick], translation[pick])
        frame = pick.repeat_interleave(v)
        pixels = project_points(cameras, posed.reshape(-1, 3), frame).pixels.reshape(len(pick), v, 2)
        loss = distances.outside(pixels, pick).mean() + distances.unreached(pixels, pick).mean()
        faced = pick[seen[pick]]
        if len(faced):
            marks = landmarks.points(posed[seen[pick]], model.faces)
            at = project_points(cameras, marks.reshape(-1, 3), faced.repeat_interleave(marks.shape[1])).pixels
            loss = loss + config.landmark_weight * (at.view_as(points[faced]) - points[faced]).norm(dim=-1).mean()
        smooth = _laplacian(offsets, edges, degree).square().sum(-1).mean()
        total = loss + config.smoothness * smooth + config.shape_prior * (shape * fitted).square().sum()
        optimiser.zero_grad()
        total.backward()
        shape.grad *= fitted
        optimiser.step()
        if progress is not None:
            progress(step, float(loss.detach()))
    return PersonalTemplate(shape.detach(), offsets.detach())


def _edges(faces: Tensor, count: int) -> tuple[Tensor, Tensor]:
    """Each directed edge ``[E, 2]`` (both ways, once) and each vertex's degree ``[V]``."""
    edges = torch.cat([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])
    edges = torch.unique(torch.cat([edges, edges.flip(1)]), dim=0)
    return edges, torch.bincount(edges[:, 0], minlength=count).clamp(min=1)


def _laplacian(x: Tensor, edges: Tensor, degree: Tensor) -> Tensor:
    """The uniform Laplacian of per-vertex ``x [V, 3]``: its neighbours' mean less itself."""
    total = torch.zeros_like(x).index_add(0, edges[:, 0], x[edges[:, 1]])
    return total / degree[:, None].to(x) - x
