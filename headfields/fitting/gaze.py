"""The eyes' gaze fitted to detected iris centres with the head held: the eye term of metrical-tracker and VHAP
(both fit FLAME's eye joints to MediaPipe's iris points), here a small least-squares problem of its own.

Each eyeball turns about its joint (FLAME's ``left_eye`` and ``right_eye``, at the balls' centres), and its pupil
is the ball's point straight ahead (+z in the canonical frame, where the head looks), at the ball's radius: the mean
distance of the vertices skinned to that joint. Both eyes share each frame's gaze (they look at one point) and turn
inward by one vergence for the whole video (a subject looking near the camera converges by a few degrees at half a
metre), so the four coordinates the two irises give a frame average the detector's noise over two unknowns.

Residuals are the pupils' projections against the irises in pixels (robust: a Cauchy loss), beside a weak pull
towards looking straight and a first-difference smoothness along the video, both measured in the pixels that the
pupil moves by a radian, so the weights hold at any image size. Frames without irises (no face, or a blink) follow
their neighbours. The steps are the landmark stages' (:mod:`.landmark_solvers`): Levenberg-Marquardt over every
frame at once, the smoothness a banded system, the Cauchy loss reweighted at each step. ::

    pose = fit_gaze(model, params, cameras, irises, seen)  # pose [N, J, 3] with the eye joints' axis-angles set
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from jaxtyping import Bool, Float
from smplx.lbs import batch_rodrigues
from torch import Tensor

from ..cameras import PinholeCameras, project_points
from ..checks import check_count, check_positive
from ..data import TrackedParams
from ..parametric.model import EYE_JOINTS, ParametricModel
from ..parametric.skinning import skinned_to
from .landmark_solvers import band_product, banded_solve, damped_step, difference_bands

__all__ = ["GazeConfig", "fit_gaze"]

# One vergence for the video, fitted as a frame's value whose change between frames weighs this many times the gaze's.
VERGENCE_STIFFNESS = 1e4


@dataclass(frozen=True)
class GazeConfig:
    """The gaze fit's settings; ``iterations`` 0 leaves the eyes looking straight ahead, as the landmark fit does."""

    iterations: int = 20  # Levenberg-Marquardt steps over every frame's gaze at once (each stops once the cost holds)
    robust_scale: float = 1.0  # pixels of a 512-pixel image: the Cauchy loss's scale (a detector's misses)
    prior: float = 0.01  # squared pupil pixels a radian of gaze counts as: a weak pull to straight ahead
    smoothness: float = 1.0  # the same for the gaze's change between neighbouring frames

    def __post_init__(self) -> None:
        check_count("iterations", self.iterations, 0)
        for name in ("robust_scale", "prior", "smoothness"):
            check_positive(name, getattr(self, name), finite=True)


def fit_gaze(
    model: ParametricModel,
    params: TrackedParams,
    cameras: PinholeCameras,
    irises: Float[Tensor, "N 2 2"],
    seen: Bool[Tensor, "N 2"],
    config: GazeConfig | None = None,
) -> Float[Tensor, "N J 3"]:
    """``params.pose`` with the eye joints turned so that the pupils land on ``irises`` (pixels of ``cameras``, in
    :data:`~headfields.parametric.EYE_JOINTS` order) where ``seen``; the other joints, the head and the cameras are held."""
    config = config or GazeConfig()
    n = params.num_frames
    if irises.shape != (n, 2, 2) or seen.shape != (n, 2) or seen.dtype != torch.bool:
        raise ValueError(
            f"irises, seen: expected [{n}, 2, 2] pixels and [{n}, 2] bool (one iris an eye a frame), "
            f"got {list(irises.shape)} and {seen.dtype} {list(seen.shape)}"
        )
    joints = [model.joint_index(name) for name in EYE_JOINTS]
    pose = params.pose.detach().clone()
    seen = seen & torch.isfinite(irises).all(-1)
    if config.iterations == 0 or not bool(seen.any()):
        return pose
    centre, turn, radius = _eyes(model, params, joints)
    pupils = _Pupils(centre, turn, radius, cameras)
    x = torch.zeros(n, 3, dtype=torch.float64)  # gaze (axis-angle x, y) and vergence, a frame each
    straight, depth = pupils(x)
    # Pixels a radian of gaze moves the pupil by: the scale of the angular terms.
    per_radian = float((radius * cameras.fx / depth.clamp(min=1e-6)).median())
    scale = config.robust_scale * cameras.width / 512
    target = torch.where(seen[..., None], irises.to(x.dtype), straight)
    prior = config.prior * per_radian**2
    first = config.smoothness * per_radian**2 * torch.tensor([1.0, 1.0, VERGENCE_STIFFNESS], dtype=x.dtype)
    bands = difference_bands(first, torch.zeros(3, dtype=x.dtype), n)

    def residual(x: Tensor) -> Tensor:
        return (pupils(x)[0] - target).reshape(n, 4)

    def cost(x: Tensor, r: Tensor) -> Tensor:
        squared = r.view(n, 2, 2).square().sum(-1)
        robust = (seen * scale**2 * torch.log1p(squared / scale**2)).sum()
        return robust + prior * x.square().sum() + (x * band_product(bands, x)).sum()

    r, damping = residual(x), 1e-3
    value = cost(x, r)
    for _ in range(config.iterations):
        jacobian = _jacobian(residual, x, r)  # [N, 4, 3]
        # Iteratively reweighted: the Cauchy loss's weight on each eye's squared error.
        weight = (seen / (1 + r.view(n, 2, 2).square().sum(-1) / scale**2)).repeat_interleave(2, dim=1)
        h = jacobian.transpose(1, 2) @ (weight[..., None] * jacobian) + prior * torch.eye(3, dtype=x.dtype)
        g = -((jacobian.transpose(1, 2) @ (weight * r)[..., None])[..., 0] + prior * x + band_product(bands, x))

        def attempt(damping: float, x=x, h=h, g=g) -> tuple[tuple[Tensor, Tensor], Tensor]:
            trial = x + banded_solve(h, bands, g, damping, torch.zeros(3, dtype=x.dtype))
            r = residual(trial)
            return (trial, r), cost(trial, r)

        step = damped_step(attempt, value, damping)
        if step is None:
            break
        (x, r), new, damping = step
        converged = bool(value - new <= 1e-9 * value)
        value = new
        if converged:
            break
    pose[:, joints] = _axis_angles(x).to(pose.dtype)
    return pose


def _jacobian(residual, x: Tensor, r: Tensor, step: float = 1e-6) -> Tensor:
    """Forward differences of ``residual`` at ``x [N, P]``, a parameter at a time for every frame at once (each
    frame's residuals depend on its own parameters alone): ``[N, R, P]``."""
    columns = []
    for k in range(x.shape[1]):
        moved = x.clone()
        moved[:, k] += step
        columns.append((residual(moved) - r) / step)
    return torch.stack(columns, dim=-1)


def _eyes(model: ParametricModel, params: TrackedParams, joints: list[int]) -> tuple[Tensor, Tensor, Tensor]:
    """Each frame's eyeball centres ``[N, 2, 3]`` and the rotation the head gives them ``[N, 2, 3, 3]`` (world), and
    the balls' radii ``[2]``."""
    pose = params.pose.detach().clone()
    pose[:, joints] = 0.0
    with torch.no_grad():
        head = model(shape=params.shape, expression=params.expression, pose=pose, translation=params.translation)
        rest = model(shape=params.shape)
    radii = []
    for j in joints:
        ball = skinned_to(model, [model.joint_names[j]])
        if not bool(ball.any()):
            raise ValueError(f"model: no vertex is skinned to its {model.joint_names[j]!r} joint (an eyeball)")
        radii.append((rest.rest_vertices[0, ball] - rest.joints[0, j]).norm(dim=-1).mean())
    double = torch.float64
    return head.joints[:, joints].to(double), head.joint_transforms[:, joints, :3, :3].to(double), torch.stack(radii).to(double)


class _Pupils:
    """The pupils' pixels and camera depths ``[N, 2, ...]`` for each frame's gaze (axis-angle x, y) and vergence."""

    def __init__(self, centre: Tensor, turn: Tensor, radius: Tensor, cameras: PinholeCameras):
        self.centre, self.turn, self.radius = centre, turn, radius
        # In float64 throughout: the Jacobian's differences are of a millionth of a radian.
        self.cameras = replace(cameras, camera_to_world=cameras.camera_to_world.double())
        self.frame = torch.arange(centre.shape[0]).repeat_interleave(2)

    def __call__(self, x: Tensor) -> tuple[Tensor, Tensor]:
        n = x.shape[0]
        rotation = batch_rodrigues(_axis_angles(x).reshape(-1, 3)).view(n, 2, 3, 3)
        ahead = self.radius[None, :, None] * rotation[..., 2]  # the ball's +z, turned
        world = self.centre + (self.turn @ ahead[..., None])[..., 0]
        pixels, depth = project_points(self.cameras, world.reshape(-1, 3), self.frame)
        return pixels.view(n, 2, 2), depth.view(n, 2)


def _axis_angles(x: Tensor) -> Tensor:
    """The two eyes' axis-angles ``[N, 2, 3]`` from each frame's gaze and vergence ``[N, 3]``: the shared gaze, each
    eye turned inward by the vergence (the left eye, at +x, inward about -y; the right one about +y)."""
    ahead = torch.cat([x[:, :2], torch.zeros_like(x[:, :1])], dim=-1)
    inward = torch.zeros_like(ahead)
    inward[:, 1] = -x[:, 2]
    return torch.stack([ahead + inward, ahead - inward], dim=1)
