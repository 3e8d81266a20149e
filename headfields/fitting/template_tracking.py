"""A dynamic video tracked against the subject's personal template: the 360-degree portrait's second step. The subject
turns and talks before one fixed camera; the template (:func:`.track_turn`'s shape and offsets, with the turn's
:func:`.vertex_colours`) is posed by each frame's body rotation and translation, head and jaw rotations and leading
expressions, so the frames seen from behind, with no landmark, are held by their silhouette and their colours.

1. **rigid**: the frames with landmarks get their rotation and translation from them (the template's points).
2. **the turn**: interpolated through the frames without a face (:func:`.through_the_turn`).
3. **search**: each frame's yaw among ``yaw_bins`` turns of the template, rigid about its centre, scored by its
   silhouette (:class:`.MaskDistances`) and its seen points' colours against the frame; the frames with a face
   kept near their landmarks' yaw; the path through the frames that turns at most ``largest_turn`` a frame, by
   dynamic programming (Viterbi). A back is nearly symmetric, so its silhouette alone left 8.5 degrees of yaw behind;
   the hair's colours bring it to 6.5 (portrait_person's dynamic video, 128 px, 5-degree bins).
4. **poses**: every frame's parameters by Adam against its mask, its colours (which points are seen refreshed every
   ``visibility_every`` steps) and its landmarks where a face is seen, their second differences kept small. The
   subject sits on a turning chair: the body turns about one axis for the whole video, a yaw a frame, with a small
   lean of its own; the head turns on the neck, the jaw on its hinge.

    track = track_with_template(model, template, colours, images, masks, points, found, SurfaceLandmarks.static(model),
                                focal=phone_focal(w, h))
    track.params  # TrackedParams: SMPL-X's global rotation, head, jaw, expressions and translation per frame
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from jaxtyping import Bool, Float
from torch import Tensor

from ..cameras import PinholeCameras
from ..checks import check_count, check_non_negative, check_positive, check_shape
from ..data import TrackedParams
from ..geometry import TriangleMesh
from ..geometry.triangles import vertex_normals
from ..parametric.model import ParametricModel
from ..parametric.tracked_meshes import rotation_to_axis_angle
from .landmark_tracking import OPENCV_FROM_WORLD, SurfaceLandmarks
from .mask_template import PersonalTemplate
from .rigid_motion import (
    about_y,
    check_cues,
    landmark_poses,
    project,
    rotations,
    second_differences,
    through_the_turn,
    wrapped,
    yaw,
)
from .silhouette import MaskDistances
from .template_appearance import FACING, VertexColours, sample_pixels, seen_points, seen_vertices, unit_colours

__all__ = ["TemplateTrack", "TemplateTrackingConfig", "track_with_template"]

VISIBILITY_CHUNK = 64  # frames posed at once to find their seen vertices


@dataclass(frozen=True)
class TemplateTrackingConfig:
    """Stages, rates and weights of :func:`track_with_template` (the silhouette in pixels, colours in [0, 1] summed
    over the channels)."""

    rigid_steps: int = 400  # Adam on the frames with landmarks
    yaw_bins: int = 72  # the search's turns, evenly round
    largest_turn: float = 30.0  # degrees a frame the searched path may turn (the video's fastest: 12)
    search_points: int = 512  # template points scored at each turn of each frame, for silhouette and colour each
    landmark_yaw: float = 10.0  # the search's cost per radian off the landmarks' yaw, frames with a face
    # Adam on every parameter, ``frames_per_step`` frames a step: at 600 the head from behind was 3.5 degrees off, not
    # 2.9, in half the time (portrait_person's dynamic video, 128 px).
    steps: int = 1200
    frames_per_step: int = 32
    points_per_frame: int = 2048  # drawn a step, for the silhouette and for the colours each
    visibility_every: int = 50  # steps between refreshing which vertices each frame sees
    expressions: int = 10  # the leading expression coefficients fitted (the rest 0)
    rotation_rate: float = 5e-3  # Adam's, radians
    translation_rate: float = 2e-3  # Adam's, metres
    expression_rate: float = 0.05  # Adam's, per coefficient
    # The colours' mean error beside the silhouette's pixels, in the search and the fit. The template's surface is not
    # the hair's and its colours are the turn's seen through its tracking, so they pull off the truth: the head from
    # behind 4.8 degrees at 40, 3.3 at 20, 2.6 at 8, 1.8 at 4 (but 2.5 over all frames, 2.2 at 8); portrait_person's
    # dynamic video, 128 px, 300 frames.
    photometric_weight: float = 8.0
    landmark_weight: float = 0.2  # the landmarks' mean pixel error, frames with a face
    smoothness: float = 1e3  # second differences (radians^2; metres^2 times 100; expressions times 0.01)
    head_prior: float = 1.0  # on the head's rotation from the body (radians^2)
    # On the body's lean off the chair's turn (radians^2). A body turning freely leaned 6-7 degrees towards the camera
    # (a lean there barely changes a silhouette); on one axis the head from behind went from 5.9 to 2.0 degrees.
    lean_prior: float = 10.0
    # On the jaw's rotation off its hinge, about x (radians^2): free, it rolled 1.6 degrees (the jaw 3.2 off, 1.2 held).
    jaw_prior: float = 10.0
    expression_prior: float = 1e-2
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("rigid_steps", "yaw_bins", "search_points", "steps", "frames_per_step", "points_per_frame"):
            check_count(name, getattr(self, name), 1)
        check_count("visibility_every", self.visibility_every, 1)
        check_count("expressions", self.expressions, 0)
        check_positive("largest_turn", self.largest_turn, finite=True)
        for name in ("landmark_yaw", "rotation_rate", "translation_rate", "expression_rate", "photometric_weight"):
            check_positive(name, getattr(self, name), finite=True)
        for name in ("landmark_weight", "smoothness", "head_prior", "lean_prior", "jaw_prior", "expression_prior"):
            check_non_negative(name, getattr(self, name))


@dataclass
class TemplateTrack:
    """A video tracked against a template: ``params`` the model's parameters per frame (the template's shape; its
    offsets are the template's), in the tracker's world (the fixed camera ``cameras`` at the origin looking down
    -z), and the frames whose landmarks were fitted (``found``)."""

    params: TrackedParams
    cameras: PinholeCameras
    found: Bool[Tensor, " N"]


def track_with_template(
    model: ParametricModel,
    template: PersonalTemplate,
    colours: VertexColours,
    images: Tensor,
    masks: Bool[Tensor, "N H W"],
    points: Float[Tensor, "N M 2"],
    found: Bool[Tensor, " N"],
    landmarks: SurfaceLandmarks,
    focal: float,
    config: TemplateTrackingConfig | None = None,
    progress: Callable[[str, int, int], None] | None = None,
) -> TemplateTrack:
    """Track a video of the template's subject: ``images [N, H, W, 3]`` (uint8, or floats in [0, 1]) and ``masks``
    frame by frame in time order, ``points`` the landmark track (pixels; columns ``landmarks.observed``) read in the
    ``found`` frames, ``focal`` the camera's focal length in pixels (principal point at the image centre).
    ``progress(stage, step, steps)`` is told as each stage goes ("rigid", "search", "poses")."""
    config = config or TemplateTrackingConfig()
    n, h, w = check_cues(masks, points, found, focal, landmarks.observed)
    check_shape("images", images, [n, h, w, 3])
    if colours.colours.shape != (model.num_vertices, 3) or template.offsets.shape != (model.num_vertices, 3):
        raise ValueError(
            f"template: expected {model.num_vertices} vertices, the model's, got {len(template.offsets)} offsets and "
            f"{len(colours.colours)} colours"
        )
    tell = progress or (lambda stage, step, steps: None)
    cameras = PinholeCameras(focal, focal, w / 2, h / 2, w, h, OPENCV_FROM_WORLD.float().expand(n, 4, 4).clone())
    pixels = unit_colours(images)
    held = landmarks.held_by(points, found)
    observed = points[:, held.observed].float()
    canonical = template.canonical(model).detach()
    on_face = held.points(canonical[None], model.faces)[0]
    rates = (4 * config.rotation_rate, config.translation_rate, 0.0)
    none = torch.zeros(0, len(on_face), 3)
    rotation, translation, _ = landmark_poses(cameras, on_face, none, observed[found], config.rigid_steps, rates, 0.0, tell)
    rotation, translation = through_the_turn(rotation, translation, found, least=0.0)
    distances = MaskDistances(masks)
    generator = torch.Generator().manual_seed(config.seed)
    rotation = _searched(
        cameras, distances, pixels, canonical, model, colours, rotation, translation, found, config, generator, tell
    )
    return _refined(
        cameras, distances, pixels, model, template, colours, held, observed, found, rotation, translation, config,
        generator, tell,
    )  # fmt: skip


def _searched(
    cameras: PinholeCameras,
    distances: MaskDistances,
    pixels: Tensor,
    canonical: Tensor,
    model: ParametricModel,
    colours: VertexColours,
    rotation: Tensor,
    translation: Tensor,
    found: Tensor,
    config: TemplateTrackingConfig,
    generator: torch.Generator,
    tell,
) -> Tensor:
    """Every frame's rotation with its yaw searched: the template rigid about its centre, at each of the bins' turns."""
    n = len(rotation)
    centre = canonical.mean(0)
    middle = torch.einsum("nij,j->ni", rotation, centre) + translation
    start = yaw(rotation)
    tilt = rotation @ about_y(-start)
    outline = canonical[torch.randint(len(canonical), (config.search_points,), generator=generator)] - centre
    pool = torch.nonzero(colours.seen)[:, 0]
    drawn = pool[torch.randint(len(pool), (config.search_points,), generator=generator)]
    normals = vertex_normals(canonical, model.faces)[drawn]
    body, known = canonical[drawn] - centre, colours.colours[drawn]
    mesh = TriangleMesh(canonical[None], model.faces)
    bins = torch.arange(config.yaw_bins) * (2 * math.pi / config.yaw_bins)
    score = torch.empty(n, config.yaw_bins)
    with torch.no_grad():
        for k in range(config.yaw_bins):
            turned = tilt @ about_y(bins[k].expand(n))
            edge = project(cameras, torch.einsum("nij,pj->npi", turned, outline) + middle[:, None])
            silhouette = distances.outside(edge).mean(1) + distances.unreached(edge)
            # The camera in the template's canonical frame: one tree serves every frame and turn.
            eyes = centre - torch.einsum("nji,nj->ni", turned, middle)
            towards = F.normalize(eyes[:, None] - (body + centre), dim=-1)
            seen = ((normals * towards).sum(-1) > FACING) & seen_points(mesh, (body + centre).expand(n, -1, -1), eyes)
            at = project(cameras, torch.einsum("nij,pj->npi", turned, body) + middle[:, None])
            error = (sample_pixels(pixels, at) - known).abs().sum(-1)
            photometric = (error * seen).sum(1) / seen.sum(1).clamp(min=1)
            score[:, k] = silhouette + config.photometric_weight * photometric
            tell("search", k + 1, config.yaw_bins)
    score[found] += config.landmark_yaw * wrapped(bins[None] - start[found, None]).abs()
    path = _cheapest_path(score, bins, math.radians(config.largest_turn))
    return tilt @ about_y(bins[path])


def _cheapest_path(score: Tensor, bins: Tensor, largest: float) -> Tensor:
    """The bins ``[N]`` minimising the frames' ``score [N, K]`` plus each turn between frames squared, no turn over
    ``largest`` (Viterbi)."""
    step = wrapped(bins[None, :] - bins[:, None])  # [from, to]
    turn = torch.where(step.abs() <= largest, step.square(), torch.tensor(math.inf))
    total, back = score[0].clone(), torch.empty(score.shape, dtype=torch.long)
    for f in range(1, len(score)):
        total, back[f] = (total[:, None] + turn).min(0)
        total = total + score[f]
    path = torch.empty(len(score), dtype=torch.long)
    path[-1] = total.argmin()
    for f in range(len(score) - 1, 0, -1):
        path[f - 1] = back[f, path[f]]
    return path


def _refined(
    cameras: PinholeCameras,
    distances: MaskDistances,
    pixels: Tensor,
    model: ParametricModel,
    template: PersonalTemplate,
    colours: VertexColours,
    held: SurfaceLandmarks,
    observed: Tensor,
    found: Tensor,
    rotation: Tensor,
    translation: Tensor,
    config: TemplateTrackingConfig,
    generator: torch.Generator,
    tell,
) -> TemplateTrack:
    """Every frame's parameters fitted: the body's turn about the chair's axis and its lean (about the root joint, as
    the model turns), translation, head and jaw rotations, expressions; ``rotation`` gives the start."""
    n, e = len(rotation), config.expressions
    head_joint = model.joint_index("head" if "head" in model.joint_names else "neck", "model")
    jaw_joint = model.joint_index("jaw", "model")
    root = (model.J_regressor[0].to(template.shape) @ model(shape=template.shape).canonical_vertices).detach()
    # A canonical point x lies at R x + t; the model turns about its root: R (x - root) + root + T.
    shift = (translation + torch.einsum("nij,j->ni", rotation, root) - root).requires_grad_(True)
    # The subject sits on a turning chair: the body turns about one axis for the whole video (``axis`` tilts the
    # frames' mean tilt, ``rest`` sets the body on the chair), a yaw a frame and a small lean a frame. The head
    # starts with what the searched rotations have beyond that turn.
    start = yaw(rotation)
    start = torch.cat([start[:1], start[:1] + wrapped(start.diff()).cumsum(0)])  # unwrapped, for its differences
    upright = rotations(rotation_to_axis_angle(rotation @ about_y(-start)).mean(0))
    turning = start.clone().requires_grad_(True)
    axis, rest = (torch.zeros(3, requires_grad=True) for _ in range(2))
    head = rotation_to_axis_angle((upright @ about_y(start)).transpose(-1, -2) @ rotation).requires_grad_(True)
    lean, jaw = (torch.zeros(n, 3, requires_grad=True) for _ in range(2))
    expression = torch.zeros(n, e, requires_grad=True)

    def bodies(frames: Tensor) -> Tensor:
        chair = rotations(axis) @ upright @ about_y(turning[frames]) @ rotations(rest)
        return rotations(lean[frames]) @ chair

    optimiser = torch.optim.Adam([
        {"params": [turning, axis, rest, lean, head, jaw], "lr": config.rotation_rate},
        {"params": [shift], "lr": config.translation_rate},
        {"params": [expression], "lr": config.expression_rate},
    ])  # fmt: skip
    pool = torch.nonzero(colours.seen)[:, 0]

    def posed(frames: Tensor) -> Tensor:
        pose = torch.zeros(len(frames), model.num_joints, 3)
        pose = pose.index_put((torch.arange(len(frames)), torch.tensor(head_joint)), head[frames])
        pose = pose.index_put((torch.arange(len(frames)), torch.tensor(jaw_joint)), jaw[frames])
        full = F.pad(expression[frames], (0, model.num_expression - e))
        local = template.posed(model, pose, torch.zeros(len(frames), 3), full)
        body = bodies(frames)
        return torch.einsum("nij,nvj->nvi", body, local - root) + root + shift[frames, None]

    seen = torch.zeros(n, model.num_vertices, dtype=torch.bool)
    for step in range(config.steps):
        if step % config.visibility_every == 0:
            with torch.no_grad():
                for chunk in torch.arange(n).split(VISIBILITY_CHUNK):
                    seen[chunk] = seen_vertices(posed(chunk), model.faces) & colours.seen
        pick = torch.randperm(n, generator=generator)[: config.frames_per_step]
        vertices = posed(pick)
        drawn = torch.randint(model.num_vertices, (config.points_per_frame,), generator=generator)
        edge = project(cameras, vertices[:, drawn])
        silhouette = distances.outside(edge, pick).mean() + distances.unreached(edge, pick).mean()
        drawn = pool[torch.randint(len(pool), (config.points_per_frame,), generator=generator)]
        error = (sample_pixels(pixels[pick], project(cameras, vertices[:, drawn])) - colours.colours[drawn]).abs().sum(-1)
        weight = seen[pick][:, drawn].float()
        photometric = (error * weight).sum() / weight.sum().clamp(min=1.0)
        faced = found[pick]
        landmark = torch.zeros(())
        if bool(faced.any()):
            marks = project(cameras, held.points(vertices[faced], model.faces))
            landmark = (marks - observed[pick[faced]]).norm(dim=-1).mean()
        smooth = second_differences(turning).square().mean()
        smooth = smooth + sum(second_differences(x).square().sum(-1).mean() for x in (lean, head, jaw))
        smooth = smooth + 100.0 * second_differences(shift).square().sum(-1).mean()
        smooth = smooth + 0.01 * second_differences(expression).square().sum(-1).mean()
        prior = config.head_prior * head.square().sum(-1).mean() + config.lean_prior * lean.square().sum(-1).mean()
        prior = prior + config.expression_prior * expression.square().sum(-1).mean()
        prior = prior + config.jaw_prior * jaw[:, 1:].square().sum(-1).mean()
        loss = silhouette + config.photometric_weight * photometric + config.landmark_weight * landmark
        loss = loss + config.smoothness * smooth + prior
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        tell("poses", step + 1, config.steps)
    pose = torch.zeros(n, model.num_joints, 3)
    with torch.no_grad():
        pose[:, 0] = rotation_to_axis_angle(bodies(torch.arange(n)).double()).float()
    pose[:, head_joint], pose[:, jaw_joint] = head.detach(), jaw.detach()
    full = F.pad(expression.detach(), (0, model.num_expression - e))
    params = TrackedParams(template.shape.clone(), full, pose, shift.detach().clone())
    return TemplateTrack(params, cameras, found)
