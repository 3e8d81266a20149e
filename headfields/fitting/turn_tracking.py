"""A static turn tracked and its personal template built: the 360-degree portrait's first step. The subject turns once
on a chair with a neutral face on a still neck, so each frame is one rigid motion of one body (SMPL-X's global
rotation and translation), and the frames with a face in view are few: the front third of the turn.

1. **rigid**: the frames with landmarks get their rotation and translation, and the body its leading shape
   coefficients, from them (a start from their centre and spread, then Adam on the pixel error). With the model's
   mean shape instead the face's pitch came out 8 degrees off (a different face places its points elsewhere).
2. **the turn**: the landmarks' yaw, unwrapped through the frames without a face (where the subject's back faces the
   camera) by the turn's own speed, and interpolated there, tilt and translation with it: the turn as a smooth
   rotation.
3. **rounds**: the template's shape and offsets fitted to the masks under the poses (:func:`.fit_mask_template`);
   then, each further round, every frame's rotation and translation refined against its mask
   (:class:`.MaskDistances`) and the landmarks where a face is seen, their second differences kept small, the
   template held, and the template fitted again. On portrait_person's turn (128 px) the second round took the
   median rotation error from 2.4 to 2.2 degrees and the head's position from 12 to 8 mm
   (``benchmarks/portrait_template.py``).

    fit = track_turn(model, masks, points, found, SurfaceLandmarks.static(model), focal=phone_focal(w, h))
    fit.params(model)  # TrackedParams: SMPL-X's global rotation and translation per frame, the fitted shape
    fit.template.canonical(model)  # [V, 3]
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from jaxtyping import Bool, Float
from torch import Tensor

from ..cameras import PinholeCameras
from ..checks import check_count, check_positive
from ..data import TrackedParams
from ..parametric.model import ParametricModel
from ..parametric.tracked_meshes import rotation_to_axis_angle
from .landmark_tracking import OPENCV_FROM_WORLD, SurfaceLandmarks
from .mask_template import MaskTemplateConfig, PersonalTemplate, fit_mask_template
from .rigid_motion import check_cues, landmark_poses, project, rotations, second_differences, through_the_turn
from .silhouette import MaskDistances

__all__ = ["TurnFit", "TurnTrackingConfig", "track_turn"]


@dataclass(frozen=True)
class TurnTrackingConfig:
    """Steps, rates and weights of :func:`track_turn` (losses in pixels)."""

    rigid_steps: int = 400  # Adam on the frames with landmarks (a tiny problem: 51 points a frame)
    rounds: int = 2  # templates fitted; before each after the first, the poses refined against the masks
    pose_steps: int = 100  # every frame's pose against its mask, a refinement
    points_per_frame: int = 2048  # the template's vertices drawn a frame each pose step
    rotation_rate: float = 5e-3  # Adam's, radians
    translation_rate: float = 2e-3  # Adam's, metres
    # The landmarks' pixel error beside the masks' (means over points and frames): the landmarks hold the face's
    # rotation, the masks every side's.
    landmark_weight: float = 0.2
    # On the landmarks' shape coefficients (the template's leading ``template.shapes``), beside their mean pixel
    # error: a shape fitted with the rotations keeps the face's pitch (8 degrees off on the mean shape).
    shape_prior: float = 3e-3
    # Second differences of the pose corrections (radians^2 and, times 100, metres^2, mean over frames): a turn is
    # smooth, and the frames seen from behind have only their silhouette.
    smoothness: float = 1e4
    template: MaskTemplateConfig = field(default_factory=MaskTemplateConfig)
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("rigid_steps", "rounds", "pose_steps", "points_per_frame"):
            check_count(name, getattr(self, name), 1)
        for name in ("rotation_rate", "translation_rate", "landmark_weight", "shape_prior", "smoothness"):
            check_positive(name, getattr(self, name), finite=True)


@dataclass
class TurnFit:
    """A tracked turn: each frame's body ``rotation [N, 3, 3]`` and ``translation [N, 3]`` (a canonical point ``x`` of
    the template lies at ``rotation @ x + translation`` in the tracker's world: the fixed camera at the origin looking
    down -z, :data:`~headfields.fitting.landmark_tracking.OPENCV_FROM_WORLD`), its ``cameras`` and the ``template``."""

    rotation: Float[Tensor, "N 3 3"]
    translation: Float[Tensor, "N 3"]
    template: PersonalTemplate
    cameras: PinholeCameras
    found: Bool[Tensor, " N"]  # the frames whose landmarks were fitted

    def params(self, model: ParametricModel) -> TrackedParams:
        """The tracking as ``model``'s parameters: its global rotation and a translation (SMPL-X turns about its root
        joint, which the template's shape places), every other joint and the expression at zero."""
        n = len(self.rotation)
        root = model.J_regressor[0].to(self.template.shape) @ model(shape=self.template.shape).canonical_vertices
        pose = torch.zeros(n, model.num_joints, 3)
        pose[:, 0] = rotation_to_axis_angle(self.rotation.double()).float()
        translation = self.translation - root + torch.einsum("nij,j->ni", self.rotation, root)
        expression = torch.zeros(n, model.num_expression)
        return TrackedParams(self.template.shape.clone(), expression, pose, translation.detach())


def track_turn(
    model: ParametricModel,
    masks: Bool[Tensor, "N H W"],
    points: Float[Tensor, "N M 2"],
    found: Bool[Tensor, " N"],
    landmarks: SurfaceLandmarks,
    focal: float,
    config: TurnTrackingConfig | None = None,
    progress: Callable[[str, int, int], None] | None = None,
) -> TurnFit:
    """Track a static turn and build its template: ``masks`` the subject's, frame by frame in time order; ``points``
    the landmark track (pixels; columns ``landmarks.observed``), read in the ``found`` frames; ``focal`` the camera's
    focal length in pixels (principal point at the image centre). ``progress(stage, step, steps)`` is told as each
    stage goes ("rigid", "poses", "template"). A ``ValueError`` names the argument where no frame has a face or the
    subject does not turn all the way round."""
    config = config or TurnTrackingConfig()
    n, h, w = check_cues(masks, points, found, focal, landmarks.observed, "turn")
    tell = progress or (lambda stage, step, steps: None)
    cameras = PinholeCameras(focal, focal, w / 2, h / 2, w, h, OPENCV_FROM_WORLD.float().expand(n, 4, 4).clone())
    held = landmarks.held_by(points, found)
    observed = points[:, held.observed].float()
    # The canonical points are linear in the shape: their rest positions and shape directions, reduced once.
    on_face = held.points(model().canonical_vertices.detach()[None], model.faces)[0]
    directions = model.shapedirs.detach()[:, :, : config.template.shapes].float()  # [V, 3, S]
    directions = held.points(directions.permute(2, 0, 1), model.faces)  # [S, K, 3]
    rates = (4 * config.rotation_rate, config.translation_rate, config.template.shape_rate)
    rotation, translation, shape = landmark_poses(
        cameras, on_face, directions, observed[found], config.rigid_steps, rates, config.shape_prior, tell
    )
    shape = torch.cat([shape, torch.zeros(model.num_shape - len(shape))])
    rotation, translation = through_the_turn(rotation, translation, found)
    distances = MaskDistances(masks)  # built once: every round's poses and template read it
    template = PersonalTemplate(shape, torch.zeros(model.num_vertices, 3))
    marks = torch.where(found[:, None, None], observed, torch.nan)  # the template keeps the landmarks' face
    for r in range(config.rounds):
        if r:  # the poses against the masks, under the template the last round fitted
            canonical = template.canonical(model).detach()
            on_face = held.points(canonical[None], model.faces)[0]
            rotation, translation = _refine(
                cameras, distances, canonical, on_face, observed, found, rotation, translation, config, r, tell
            )
        params = TurnFit(rotation, translation, template, cameras, found).params(model)
        template = fit_mask_template(
            model, distances, cameras, params.pose, params.translation, config.template,
            lambda step, loss: tell("template", step + 1, config.template.steps), landmarks=held, points=marks,
        )  # fmt: skip
    return TurnFit(rotation, translation, template, cameras, found)


def _refine(
    cameras: PinholeCameras,
    distances: MaskDistances,
    canonical: Tensor,
    on_face: Tensor,
    observed: Tensor,
    found: Tensor,
    rotation: Tensor,
    translation: Tensor,
    config: TurnTrackingConfig,
    round_: int,
    tell,
) -> tuple[Tensor, Tensor]:
    """Every frame's pose corrected against its mask and its landmarks (where found), the template ``canonical``
    held: a rotation about the template's centre and a shift, their second differences kept small."""
    n = len(rotation)
    centre = canonical.mean(0)
    body, face = canonical - centre, on_face - centre
    middle = torch.einsum("nij,j->ni", rotation, centre) + translation  # the centre, posed
    turn = torch.zeros(n, 3, requires_grad=True)
    tilt = torch.zeros(3, requires_grad=True)  # shared, in the body's frame: the landmarks' error is the face's
    shift = torch.zeros(n, 3, requires_grad=True)
    rates = [{"params": [turn, tilt], "lr": config.rotation_rate}, {"params": [shift], "lr": config.translation_rate}]
    optimiser = torch.optim.Adam(rates)
    generator = torch.Generator().manual_seed(config.seed + round_)
    seen = torch.nonzero(found)[:, 0]
    for step in range(config.pose_steps):
        posed = rotations(turn) @ rotation @ rotations(tilt)
        at = middle + shift
        drawn = torch.randint(len(body), (config.points_per_frame,), generator=generator)
        pixels = project(cameras, torch.einsum("nij,pj->npi", posed, body[drawn]) + at[:, None])
        silhouette = distances.outside(pixels).mean() + distances.unreached(pixels).mean()
        marks = project(cameras, torch.einsum("nij,kj->nki", posed[seen], face) + at[seen, None])
        landmark = (marks - observed[seen]).norm(dim=-1).mean()
        smooth = second_differences(turn).square().sum(-1).mean() + 100.0 * second_differences(shift).square().sum(-1).mean()
        loss = silhouette + config.landmark_weight * landmark + config.smoothness * smooth
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        tell("poses", step + 1, config.pose_steps)
    posed = (rotations(turn) @ rotation @ rotations(tilt)).detach()
    return posed, (middle + shift - torch.einsum("nij,j->ni", posed, centre)).detach()
