"""A parametric head (FLAME) fitted to a video's 2D landmarks: the landmark stages of a face tracker.

One fixed pinhole camera (OpenCV axes at the world's origin, looking down the world's -z, square pixels, principal
point at the image centre) sees the head move; each frame has its head pose (the neck's rotation and a
translation), its expression and jaw. The stages follow metrical-tracker and VHAP (``tracker.py``; VHAP's
``track.py``: rigid -> shape -> frames -> a global pass), each a batch of Levenberg-Marquardt (Gauss-Newton) steps over
every frame at once, which on a CPU is faster than their frame-by-frame Adam and reaches the same least-squares optimum:

1. **rigid**: per-frame rotation and translation from a closed-form start (the landmarks' centre and spread);
2. **keyframes**: the identity's shape and the focal length with the keyframes' pose and expression (a spread of
   frames: more views constrain shape and focal length better than the first five);
3. **frames**: every frame's pose, expression and jaw with the shape and focal length held;
4. **global**: everything at once with temporal smoothness (first and second differences,
   :mod:`.landmark_solvers`), which alone carries the frames with no landmarks (no face found), started from their
   neighbours' pose.

Landmarks are points on the mesh (:class:`SurfaceLandmarks`: a face and barycentric weights each) paired with the
columns of the observed track they match; residuals are in pixels, robust (a Cauchy loss of scale
``robust_scale``), priors are quadratic on the coefficients.

    fit = track_landmarks(model, points, found, SurfaceLandmarks.static(model), width=512, height=512)
    fit.params, fit.cameras, fit.residual  # TrackedParams, PinholeCameras, mean pixel error per frame
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from jaxtyping import Bool, Float, Int, UInt8
from torch import Tensor

from ..cameras import PinholeCameras
from ..checks import check_count
from ..data import TrackedParams
from ..data.ibug import CONTOUR_POINTS, IBUG_POINTS
from ..parametric.model import ParametricModel
from .landmark_config import LandmarkTrackingConfig
from .landmark_solvers import band_product, banded_solve, damped_step, difference_bands, fill_missing, per_parameter
from .landmark_surface import LandmarkSurface
from .photometric_term import PhotometricTerm

__all__ = ["OPENCV_FROM_WORLD", "LandmarkFit", "LandmarkTrackingConfig", "SurfaceLandmarks", "track_landmarks"]

# The tracker's camera: at the origin, +x right, +y down (the world's -y), +z forward (the world's -z): FLAME faces
# +z with y up, so a head at negative z faces the camera.
OPENCV_FROM_WORLD = torch.diag(torch.tensor([1.0, -1.0, -1.0, 1.0], dtype=torch.float64))

# A phone's main (and front) camera: about 26 mm in 35 mm terms, f = 26 / 36 of the longer side (69 degrees).
PHONE_FOCAL_35MM = 26.0


@dataclass
class SurfaceLandmarks:
    """Landmarks on the model's surface: point k lies on face ``faces[k]`` at barycentric ``bary[k]`` and is seen as
    column ``observed[k]`` of the landmark track (an iBUG-68 or MediaPipe index)."""

    faces: Int[Tensor, " K"]
    bary: Float[Tensor, "K 3"]
    observed: Int[Tensor, " K"]

    def __post_init__(self) -> None:
        k = self.faces.shape[0]
        if self.faces.dim() != 1 or self.bary.shape != (k, 3) or self.observed.shape != (k,):
            raise ValueError(
                f"landmarks: expected faces [K], bary [K, 3], observed [K], got {list(self.faces.shape)}, "
                f"{list(self.bary.shape)}, {list(self.observed.shape)}"
            )
        if k == 0:
            raise ValueError("landmarks: expected at least one landmark on the surface, got none")

    @classmethod
    def static(cls, model: ParametricModel) -> SurfaceLandmarks:
        """The model's own static landmark embedding (FLAME's ``flame_static_embedding.pkl``), paired with the iBUG-68
        points it holds (17..67; all 68 for a 68-point embedding)."""
        if model.lmk_faces_idx is None:
            raise ValueError("model: expected a landmark embedding (FLAME's flame_static_embedding.pkl beside the model)")
        count = model.lmk_faces_idx.shape[0]
        if count not in (IBUG_POINTS, IBUG_POINTS - CONTOUR_POINTS):
            raise ValueError(f"model: expected a static embedding of 51 or 68 iBUG points, got {count}")
        first = IBUG_POINTS - count
        observed = torch.arange(first, IBUG_POINTS)
        return cls(model.lmk_faces_idx.cpu(), model.lmk_bary_coords.detach().cpu().float(), observed)

    def held_by(self, points: Float[Tensor, "N P 2"], found: Bool[Tensor, " N"]) -> SurfaceLandmarks:
        """Those of these landmarks that the track ``points`` holds: their column finite in every ``found`` frame (a
        detector, or a correspondence table, that gives no such point leaves it NaN)."""
        columns = points[found][:, self.observed.to(points.device)]
        keep = torch.isfinite(columns).all(-1).all(0).cpu()
        return SurfaceLandmarks(self.faces[keep], self.bary[keep], self.observed[keep])

    def points(self, vertices: Float[Tensor, "B V 3"], faces: Int[Tensor, "F 3"]) -> Float[Tensor, "B K 3"]:
        corners = vertices[:, faces[self.faces.to(faces.device)]]  # [B, K, 3, 3]
        return (corners * self.bary.to(vertices)[None, :, :, None]).sum(2)


@dataclass
class LandmarkFit:
    params: TrackedParams  # the model's parameters per frame (world: the camera's, see OPENCV_FROM_WORLD)
    cameras: PinholeCameras  # one per frame, all the same fixed camera
    focal: float  # pixels
    residual: Float[Tensor, " N"]  # mean pixel distance of the landmarks per frame (NaN where none was found)


def phone_focal(width: int, height: int) -> float:
    """The focal length in pixels of a phone's main camera for a whole frame ``width`` x ``height`` (26 mm in 35 mm
    terms: 26 / 36 of the longer side)."""
    return PHONE_FOCAL_35MM / 36.0 * max(width, height)


def track_landmarks(
    model: ParametricModel,
    points: Float[Tensor, "N P 2"],
    found: Bool[Tensor, " N"],
    landmarks: SurfaceLandmarks,
    width: int,
    height: int,
    config: LandmarkTrackingConfig | None = None,
    *,
    focal: float | None = None,
    shape: Float[Tensor, " S"] | None = None,
    images: UInt8[Tensor, "N H W 3"] | None = None,
    masks: Bool[Tensor, "N H W"] | None = None,
    progress: Callable[[str, int], None] | None = None,
) -> LandmarkFit:
    """Fit ``model`` to ``points`` (pixels, the track's columns ``landmarks.observed``; rows of frames not ``found``
    are ignored). ``focal``: the start (or, with ``config.fit_focal`` False, the value) of the focal length in pixels,
    default :func:`phone_focal`; ``shape``: the identity (MICA's ``identity.npy``), held. ``images`` (``width`` x
    ``height``, with their foreground ``masks``): the frames themselves, for a last, photometric stage
    (:mod:`.photometric_term`). ``progress(stage, steps)`` is told each stage as it starts."""
    config = config or LandmarkTrackingConfig()
    check_count("width", width, 2)
    check_count("height", height, 2)
    n = points.shape[0]
    if points.dim() != 3 or points.shape[2] != 2 or n == 0:
        raise ValueError(f"points: expected pixel landmarks [N, P, 2] with N >= 1, got {list(points.shape)}")
    if found.shape != (n,) or found.dtype != torch.bool:
        raise ValueError(f"found: expected a bool tensor [{n}], got {found.dtype} {list(found.shape)}")
    if int(landmarks.observed.max()) >= points.shape[1]:
        needed = int(landmarks.observed.max()) + 1
        raise ValueError(f"points: expected at least {needed} landmarks a frame, got {points.shape[1]}")
    observed = points[:, landmarks.observed].double()
    if not bool(found.any()):
        raise ValueError("found: no frame has a face; expected landmarks in at least one frame")
    if not bool(torch.isfinite(observed[found]).all()):
        raise ValueError("points: expected finite landmarks in every found frame")
    observed = torch.where(found[:, None, None], observed, torch.zeros_like(observed))  # the rest are ignored (NaN)
    problem = _Problem(model, observed, found, landmarks, width, height, config, focal, shape)
    order = [("rigid", config.rigid_steps), ("keyframes", config.keyframe_steps)]
    order += [("frames", config.frame_steps), ("global", config.global_steps)]
    if images is not None:
        if images.shape != (n, height, width, 3) or images.dtype != torch.uint8:
            raise ValueError(
                f"images: expected uint8 frames [{n}, {height}, {width}, 3], got {images.dtype} {list(images.shape)}"
            )
        if masks is None or masks.shape != (n, height, width) or masks.dtype != torch.bool:
            got = None if masks is None else f"{masks.dtype} {list(masks.shape)}"
            raise ValueError(f"masks: expected the images' foreground, bool [{n}, {height}, {width}], got {got}")
        stride = max(1, round(max(width, height) / config.photometric_grid))
        expressions = min(config.expressions, model.num_expression)
        problem.photometric = PhotometricTerm(model, images.cpu(), masks.cpu() & found[:, None, None].cpu(), expressions, stride)
        order.append(("photometric", config.photometric_steps))
    for stage, steps in order:
        if progress is not None:
            progress(stage, steps)
        getattr(problem, f"{stage}_stage")(steps)
    return problem.result()


class _Problem:
    """The parameters and the Gauss-Newton (Levenberg-Marquardt) steps of the stages. Each frame's parameters are one
    vector ``[rotation 3, translation 3, jaw 3, expression E]``; the shared ones ``[shape S, log focal length]``.
    A frame's residuals are its landmarks' pixel errors, reweighted for the Cauchy loss at each step (IRLS); its
    Jacobian is written out (:meth:`_linearise`). Frames are independent but for the shared
    parameters (eliminated by their Schur complement) and the smoothness (a banded system, :func:`.banded_solve`)."""

    def __init__(self, model, observed, found, landmarks, width, height, config, focal, shape):
        self.model, self.config, self.found = model, config, found
        self.width, self.height = width, height
        self.observed = observed  # [N, K, 2] pixels
        self.pixel_scale = 512.0 / max(width, height)  # residuals in pixels of a 512 image
        self.surface = LandmarkSurface(model, landmarks, min(config.expressions, model.num_expression))
        self.count = landmarks.faces.shape[0]
        names = model.joint_names
        # The head turns on its neck (VHAP fits FLAME's neck pose): about the neck's pivot and with its pose
        # correctives, which the root's rotation lacks (at 0 px noise on the synthetic video, whose head turns on
        # its neck: vertex error 2.31 -> 1.98 mm, rotation 0.85 -> 0.67 deg).
        self.head_joint = names.index("neck") if "neck" in names else names.index("global")
        self.jaw = names.index("jaw") if "jaw" in names else None
        d = torch.float64
        self.start_focal = math.log(focal or phone_focal(width, height))
        self.shape_fixed = shape is not None
        shape = shape.double().cpu() if shape is not None else torch.zeros(model.num_shape, dtype=d)
        self.shared = torch.cat([shape, torch.tensor([self.start_focal], dtype=d)])
        # A frame's depth is its translation's z times f / the reference's: as the focal length changes the heads keep
        # their size in the image, so only perspective tells focal length, not focal length against depth (a curved
        # valley Levenberg-Marquardt crawled along: at 0 px noise 20 steps reached 588 of 955 px, 100 steps 856; now
        # 20 steps reach 856, vertex error 5.3 -> 2.8 mm).
        self.reference_focal = self.start_focal
        n, e = observed.shape[0], min(config.expressions, model.num_expression)
        self.padding = model.num_expression - e  # coefficients held at 0
        self.frames = torch.zeros(n, 9 + e, dtype=d)
        self.frames[:, 3:6] = self._initial_translation()
        k, c = self.count, config
        # Quadratic priors (per parameter, on one frame's K landmarks' scale) and smoothness weights.
        self.prior = per_parameter(0.0, 0.0, c.jaw_prior, c.expression_prior, e) * k
        smooth = per_parameter(1.0, c.translation_smoothness, c.jaw_smoothness, c.expression_smoothness, e)
        self.bands = difference_bands(smooth * c.smoothness * k, smooth * c.acceleration * k, n)  # [3, N, P]
        self.weight = found.double()[:, None]  # [N, 1]: frames without a face have no data term
        self.photometric: PhotometricTerm | None = None  # the frames' pixels, in the photometric stage alone
        self.with_photometric, self.photometric_scale = False, 0.0

    # -- the model and its projection --

    def _pose(self, rotation: Tensor, jaw: Tensor) -> Tensor:
        pose = [torch.zeros_like(rotation)] * self.model.num_joints
        pose[self.head_joint] = rotation
        if self.jaw is not None:
            pose[self.jaw] = jaw
        return torch.stack(pose, dim=1)

    def _world(self, frames: Tensor, shared: Tensor, surface: LandmarkSurface | None = None) -> Tensor:
        """The landmarks' (or ``surface``'s points') world positions ``[B, K, 3]`` of frame vectors ``frames [B, P]``."""
        pose = self._pose(frames[:, :3], frames[:, 6:9])
        depth = (shared[-1] - self.reference_focal).exp()
        translation = torch.cat([frames[:, 3:5], frames[:, 5:6] * depth], dim=1)
        return (surface or self.surface)(shared[:-1], frames[:, 9:], pose, translation)

    def _project(self, world: Tensor, log_focal: Tensor) -> Tensor:
        f = log_focal.exp()
        x, y, z = world.unbind(-1)  # the camera's axes: (x, -y, -z)
        depth = (-z).clamp(min=1e-3)
        return torch.stack([f * x / depth + self.width / 2, f * -y / depth + self.height / 2], dim=-1)

    def _residual(self, frames: Tensor, shared: Tensor, index: Tensor) -> Tensor:
        """Frames ``index``'s residuals ``[B, 2K]`` in pixels of a 512 image."""
        world = self._world(frames, shared)
        return ((self._project(world, shared[-1]) - self.observed[index]) * self.pixel_scale).flatten(1)

    def _initial_translation(self) -> Tensor:
        """Each frame's translation from its landmarks' centre and spread against the neutral model's (frames with no
        face take their found neighbours')."""
        f = math.exp(self.start_focal)
        neutral = self._world(torch.zeros(1, self.frames.shape[1], dtype=torch.float64), self.shared)[0]
        obs = self.observed
        centre2 = obs.mean(1)
        spread2 = (obs - centre2[:, None]).norm(dim=-1).mean(-1)
        centre3 = neutral.mean(0)
        spread3 = (neutral[:, :2] - centre3[:2]).norm(dim=-1).mean()
        depth = f * spread3 / spread2.clamp(min=1e-6)
        x = (centre2[:, 0] - self.width / 2) * depth / f - centre3[0]
        y = -(centre2[:, 1] - self.height / 2) * depth / f - centre3[1]
        return fill_missing(torch.stack([x, y, -depth - centre3[2]], dim=-1), self.found)

    # -- costs and linearisations --

    def _robust(self, index: Tensor, residual: Tensor) -> tuple[Tensor, Tensor]:
        """The Cauchy cost of frames ``index`` ``[B]`` and the IRLS weight of each residual ``[B, 2K]``."""
        c2 = self.config.robust_scale**2
        squared = residual.view(residual.shape[0], -1, 2).square().sum(-1)
        seen = self.weight[index]
        cost = (torch.log1p(squared / c2) * c2).sum(-1) * seen[:, 0]
        return cost, (1 / (1 + squared / c2)).repeat_interleave(2, dim=1) * seen

    def _cost(self, frames: Tensor, shared: Tensor, index: Tensor, smoothness: bool) -> Tensor:
        """The data term, the frames' priors and (``smoothness``) the first and second differences' of frames ``index``."""
        residual = self._residual(frames, shared, index)
        total = self._robust(index, residual)[0].sum() + (self.prior * frames.square()).sum()
        if self.with_photometric:
            total = total + self._photometric_cost(frames)
        if smoothness:
            total = total + (frames * band_product(self.bands, frames)).sum()
        return total

    def _shared_prior(self, frames: int) -> Tensor:
        s = self.model.num_shape
        k = self.count * frames
        prior = torch.full((s + 1,), self.config.shape_prior * k, dtype=torch.float64)
        prior[-1] = self.config.focal_prior * k
        return prior

    def _linearise(self, frames: Tensor, shared: Tensor, index: Tensor, with_shared: bool):
        """Residuals ``[B, 2K]``, IRLS weights, and the Jacobians in the frame's ``[B, 2K, P]`` (and the shared
        parameters' ``[B, 2K, S + 1]``): the projection's written out, the model's in its coefficients from
        :meth:`.LandmarkSurface.linear`, forward-mode autodiff for the head's (neck) and the jaw's rotations alone."""
        b, k = frames.shape[0], self.count
        world, d_world, d_shape = self._point_jacobian(frames, shared, self.surface, with_shared)
        focal, depth_scale = shared[-1].exp(), (shared[-1] - self.reference_focal).exp()
        x, y, z = world.unbind(-1)
        depth = (-z).clamp(min=1e-3)
        zero = torch.zeros_like(x)
        d_pixel = (
            torch.stack(  # d (u, v) / d world [B, K, 2, 3], u = f x / depth + cx, v = -f y / depth + cy, depth = -z
                [
                    torch.stack([focal / depth, zero, focal * x / depth**2], -1),
                    torch.stack([zero, -focal / depth, -focal * y / depth**2], -1),
                ],
                dim=-2,
            )
            * self.pixel_scale
        )
        jacobian = (d_pixel @ d_world).reshape(b, 2 * k, -1)
        residual = ((self._project(world, shared[-1]) - self.observed[index]) * self.pixel_scale).reshape(b, -1)
        _, weight = self._robust(index, residual)
        if not with_shared:
            return residual, weight, jacobian
        # The focal length scales the projection and, through the stored depths, the heads' depth.
        along_z = torch.stack([zero, zero, (frames[:, 5] * depth_scale)[:, None].expand_as(z)], -1)
        d_focal = (
            torch.stack([focal * x / depth, -focal * y / depth], -1) * self.pixel_scale + (d_pixel @ along_z[..., None])[..., 0]
        )
        shared_jacobian = torch.cat([(d_pixel @ d_shape).reshape(b, 2 * k, -1), d_focal.reshape(b, 2 * k, 1)], dim=-1)
        return residual, weight, (jacobian, shared_jacobian)

    def _point_jacobian(self, frames: Tensor, shared: Tensor, surface: LandmarkSurface, with_shared: bool):
        """``surface``'s points ``[B, K, 3]`` and their Jacobians in the frame's parameters ``[B, K, 3, P]`` (and in the
        shape, ``[B, K, 3, S]``, else None)."""

        def posed(rotations: Tensor, frame: Tensor) -> tuple[Tensor, Tensor]:  # a frame's points, its 2 rotations
            vector = torch.cat([rotations[:3], frame[3:6], rotations[3:], frame[9:]])
            world = self._world(vector[None], shared, surface)[0]
            return world, world  # the second: the points themselves, kept by jacfwd as its aux

        rotations = torch.cat([frames[:, :3], frames[:, 6:9]], dim=1)
        d_rotation, world = torch.func.vmap(torch.func.jacfwd(posed, has_aux=True))(rotations, frames)  # [B, K, 3, 6]
        d_shape, d_expression = surface.linear(self._pose(frames[:, :3], frames[:, 6:9]), shape=with_shared)
        depth_scale = (shared[-1] - self.reference_focal).exp()
        d_translation = torch.diag(torch.stack([torch.ones_like(depth_scale), torch.ones_like(depth_scale), depth_scale]))
        b, k = world.shape[:2]
        d_world = torch.cat(
            [d_rotation[..., :3], d_translation.expand(b, k, 3, 3), d_rotation[..., 3:], d_expression], dim=-1
        )  # [B, K, 3, P]
        return world, d_world, d_shape

    def _photometric_system(self, frames: Tensor) -> tuple[Tensor, Tensor]:
        """The photometric term's Gauss-Newton blocks ``[N, P, P]`` and gradients ``[N, P]`` at ``frames``."""
        term = self.photometric
        world = self._world(frames, self.shared, term.surface)

        def jacobian(index: Tensor) -> Tensor:
            return self._point_jacobian(frames[index], self.shared, term.surface, False)[1]

        return term.system(world, jacobian, float(self.shared[-1].exp()), self.photometric_scale)

    def _photometric_cost(self, frames: Tensor) -> Tensor:
        world = self._world(frames, self.shared, self.photometric.surface)
        return self.photometric.cost(world, float(self.shared[-1].exp())) * self.photometric_scale

    # -- the solvers --

    def _solve_frames(self, active: Tensor, iterations: int, smoothness: bool) -> None:
        """Levenberg-Marquardt on every frame's ``active`` parameters, the shared ones held."""
        index = torch.arange(len(self.found))
        frames, shared = self.frames.clone(), self.shared
        mask = active.double()
        damping = 1e-3
        cost = self._cost(frames, shared, index, smoothness)
        for _ in range(iterations):
            residual, weight, jac = self._linearise(frames, shared, index, False)
            jac = jac * mask
            h = torch.einsum("brp,br,brq->bpq", jac, weight, jac) + torch.diag_embed(self.prior * mask)
            g = torch.einsum("brp,br,br->bp", jac, weight, residual) + self.prior * frames * mask
            bands = self.bands * mask if smoothness else None
            if bands is not None:
                g = g + band_product(bands, frames)
            if self.with_photometric:
                h_photometric, g_photometric = self._photometric_system(frames)
                h, g = h + h_photometric, g + g_photometric

            def attempt(damping: float, h=h, g=g, bands=bands, frames=frames) -> tuple[Tensor, Tensor]:
                trial = frames - banded_solve(h, bands, g, damping, 1 - mask)
                return trial, self._cost(trial, shared, index, smoothness)

            accepted = damped_step(attempt, cost, damping)
            if accepted is None:
                break
            frames, new, damping = accepted
            cost, improvement = new, float(cost - new) / max(float(cost), 1e-12)
            if improvement < 1e-10:
                break
        self.frames = frames

    def _solve_keyframes(self, keys: Tensor, iterations: int) -> None:
        """Levenberg-Marquardt on the keyframes' parameters and the shared ones at once: the frames' blocks are
        eliminated (Schur complement), leaving a system the size of the shared parameters."""
        frames, shared = self.frames[keys].clone(), self.shared.clone()
        fit_shared = torch.ones_like(shared)
        if self.shape_fixed:
            fit_shared[:-1] = 0
        if not self.config.fit_focal:
            fit_shared[-1] = 0
        shared_prior = self._shared_prior(len(keys))
        start = self.shared.clone()
        start[:-1] = 0
        damping = 1e-3
        cost = self._cost(frames, shared, keys, False) + shared_prior @ (shared - start).square()
        for _ in range(iterations):
            residual, weight, (jf, js) = self._linearise(frames, shared, keys, True)
            js = js * fit_shared
            a = torch.einsum("brp,br,brq->bpq", jf, weight, jf) + torch.diag_embed(self.prior.expand_as(frames))
            b = torch.einsum("brp,br,brq->bpq", jf, weight, js)  # [B, P, S + 1]
            c = torch.einsum("brp,br,brq->pq", js, weight, js) + torch.diag(shared_prior * fit_shared)
            gf = torch.einsum("brp,br,br->bp", jf, weight, residual) + self.prior * frames
            gs = torch.einsum("brp,br,br->p", js, weight, residual) + shared_prior * (shared - start) * fit_shared

            def attempt(damping: float, a=a, b=b, c=c, gf=gf, gs=gs, frames=frames, shared=shared):
                ad = a + damping * torch.diag_embed(a.diagonal(dim1=1, dim2=2).clamp(min=1e-9))
                cd = c + damping * torch.diag(c.diagonal().clamp(min=1e-9)) + torch.diag(1 - fit_shared)
                a_inv_b = torch.linalg.solve(ad, b)
                a_inv_g = torch.linalg.solve(ad, gf)
                schur = cd - torch.einsum("bpq,bpr->qr", b, a_inv_b)
                step_s = torch.linalg.solve(schur, gs - torch.einsum("bpq,bp->q", b, a_inv_g))
                step_f = a_inv_g - torch.einsum("bpq,q->bp", a_inv_b, step_s)
                trial_f, trial_s = frames - step_f, shared - step_s
                return (trial_f, trial_s), self._cost(trial_f, trial_s, keys, False) + shared_prior @ (trial_s - start).square()

            accepted = damped_step(attempt, cost, damping)
            if accepted is None:
                break
            (frames, shared), new, damping = accepted
            cost, improvement = new, float(cost - new) / max(float(cost), 1e-12)
            if improvement < 1e-10:
                break
        self.frames[keys] = frames
        self.frames[:, 5] *= math.exp(float(shared[-1]) - self.reference_focal)  # depths in world units again
        self.shared, self.reference_focal = shared, float(shared[-1])

    # -- the stages --

    def rigid_stage(self, iterations: int) -> None:
        active = torch.zeros(self.frames.shape[1], dtype=torch.bool)
        active[:6] = True
        self._solve_frames(active, iterations, smoothness=False)

    def keyframes_stage(self, iterations: int) -> None:
        live = torch.nonzero(self.found)[:, 0]
        count = min(self.config.keyframes, len(live))
        keys = live[torch.linspace(0, len(live) - 1, count).round().long()]
        self._solve_keyframes(keys, iterations)

    def frames_stage(self, iterations: int) -> None:
        self._solve_frames(torch.ones(self.frames.shape[1], dtype=torch.bool), iterations, smoothness=False)

    def global_stage(self, iterations: int) -> None:
        self.frames = fill_missing(self.frames, self.found)
        self._solve_frames(torch.ones(self.frames.shape[1], dtype=torch.bool), iterations, smoothness=True)

    def photometric_stage(self, iterations: int) -> None:
        """Gauss-Newton steps with the frames' pixels, each after the face's colours are re-solved at the current
        tracking (so each step's costs compare like with like)."""
        term = self.photometric
        focal = float(self.shared[-1].exp())
        hits = len(term.hits(self._world(self.frames, self.shared, term.surface), focal)[0])
        # A frame's mean pixel cost weighs photometric_weight landmarks: the same at any resolution.
        self.photometric_scale = self.config.photometric_weight * self.count * int(self.found.sum()) / max(hits, 1)
        self.with_photometric = True
        try:
            for _ in range(iterations):
                term.solve_colours(self._world(self.frames, self.shared, term.surface), focal)
                self._solve_frames(torch.ones(self.frames.shape[1], dtype=torch.bool), 1, smoothness=True)
        finally:
            self.with_photometric = False

    def result(self) -> LandmarkFit:
        n = len(self.found)
        x = self.frames
        pose = self._pose(x[:, :3], x[:, 6:9])
        shape = self.shared[:-1]
        expression = torch.nn.functional.pad(x[:, 9:], (0, self.padding))  # the coefficients not fitted: 0
        params = TrackedParams(shape.float(), expression.float(), pose.float(), x[:, 3:6].float())
        world = self._world(x, self.shared)
        error = (self._project(world, self.shared[-1]) - self.observed).norm(dim=-1).mean(-1)
        error = torch.where(self.found, error, torch.full_like(error, float("nan"))).float()
        f = math.exp(float(self.shared[-1]))
        c2w = OPENCV_FROM_WORLD.float().expand(n, 4, 4).clone()
        cameras = PinholeCameras(f, f, self.width / 2, self.height / 2, self.width, self.height, c2w)
        return LandmarkFit(params, cameras, f, error)
