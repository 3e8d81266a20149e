"""MonoNPHM's geometry evaluation (``scripts/evaluation/eval.py``): the points of a depth scan's face region, each
to its closest point on the reconstructed mesh, after a similarity ICP (scale, rotation, translation).

The scan is what a depth camera sees of the true head (:func:`depth_scan`: a point, its normal and its label a
pixel, the steep views dropped), restricted to the face region (:func:`face_region`: skin, nose, brows and lips,
away from the neck, the mouth's inside and the eyes). :func:`scan_score` aligns the mesh to it
(:func:`similarity_icp`) and reports what ``eval.py`` reports, one-sided from the scan to the mesh: the mean L1
(``chamfer_l1``: the sum of the coordinates' absolute differences) and L2 (``chamfer_l2``: Euclidean) distances,
the mean unsigned cosine between the scan's normal and the normal of the face its closest point lies on, and the
share of scan points within 1, 2.5, 5 and 10 mm (``eval.py`` calls them F-scores; with one direction they are
recall). :func:`face_scan` makes that scan of a frame of a capture with true meshes.

Beside it, over the whole head the camera sees (:func:`geometry_score`): the symmetric Chamfer distance, normal
consistency and F-scores at 5 to 20 mm, with no alignment, inside the true head's box.

    scan = depth_scan(cameras, frame, true_vertices, true_faces, label_image)
    keep = face_region(scan, label_image, segmentation_labels)
    score = scan_score(mesh_vertices, mesh_faces, scan.points[keep], scan.normals[keep])
    score.chamfer_l1, score.f_score["2.5mm"], score.similarity.scale
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from jaxtyping import Bool, Float, Int
from torch import Tensor

from ...cameras import PinholeCameras, image_rays
from ...checks import check_count, check_float, check_int, check_nonzero_rows, check_positive
from ...data import FrameSet
from ...geometry import TriangleMesh, closest_point, face_normals, ray_intersect
from ...metrics import chamfer_distance, visible_faces

__all__ = [
    "FACE_REGIONS",
    "F_SCORE_THRESHOLDS",
    "PAPER_THRESHOLDS",
    "DepthScan",
    "GeometryScore",
    "ScanScore",
    "Similarity",
    "depth_scan",
    "face_region",
    "face_scan",
    "geometry_score",
    "scan_score",
    "similarity_icp",
]

PAPER_THRESHOLDS = (0.001, 0.0025, 0.005, 0.01)  # metres: eval.py's thresholds
# eval.py's face mask: face skin, brows, nose and lips (its classes 2, 6, 7, 10, 12, 13), in headfields' label names.
FACE_REGIONS = ("skin", "nose", "left_brow", "right_brow", "brows", "lips", "upper_lip", "lower_lip")
# ... less the neck, the mouth's inside and the eyes, each grown by a square of 21, 21 and 13 pixels at eval.py's
# 1080-pixel images (binary_dilation): half-widths of 10, 10 and 6 pixels at 1080, scaled to the image's height.
EXCLUDED_REGIONS = (
    (("neck",), 10),
    (("mouth_interior", "mouth", "teeth"), 10),
    (("eyes", "left_eye", "right_eye"), 6),
)
EVAL_HEIGHT = 1080
VIEW_COSINE = 0.2  # eval.py drops scan points whose normal is within acos(0.2) of perpendicular to the view
# icp.py: a pair counts when its points are within 1 cm and their normals' cosine is at least 0.2.
ICP_MAX_DISTANCE = 0.01
ICP_MIN_COSINE = 0.2
ICP_ITERATIONS = 30  # Gauss-Newton steps at most (a few suffice; it stops when a step no longer moves the mesh)
# The point-to-point residual's weight beside point-to-plane's 1: enough to pin the slide along a flat scan. icp.py
# weighs them 0.1 and 0.9 under Adam; with Gauss-Newton a point-to-point share that large drags every step toward the
# current pairs (tens of steps where point-to-plane takes a few).
POINT_TO_POINT = 1e-3


@dataclass
class Similarity:
    """``x -> scale * x @ rotation.T + translation``."""

    scale: Float[Tensor, ""]
    rotation: Float[Tensor, "3 3"]
    translation: Float[Tensor, " 3"]

    def apply(self, points: Float[Tensor, "N 3"]) -> Float[Tensor, "N 3"]:
        return self.scale * points @ self.rotation.T + self.translation

    def then(self, other: Similarity) -> Similarity:
        """This transform followed by ``other``."""
        return Similarity(other.scale * self.scale, other.rotation @ self.rotation, other.apply(self.translation[None])[0])


@dataclass
class DepthScan:
    """What a depth camera sees of a mesh, a pixel a row (only the pixels whose ray hits it, at a view steeper
    than :data:`VIEW_COSINE`)."""

    points: Float[Tensor, "P 3"]
    normals: Float[Tensor, "P 3"]  # unit, facing the camera
    labels: Int[Tensor, " P"] | None  # the segmentation's code at each point's pixel
    pixels: Int[Tensor, "P 2"]  # (row, column)


@dataclass
class ScanScore:
    """A mesh against a scan, one-sided from the scan (eval.py's measures; metres)."""

    chamfer_l1: float  # mean over the scan of |dx| + |dy| + |dz| to the closest point on the mesh
    chamfer_l2: float  # mean Euclidean distance
    normal_consistency: float  # mean |cos| between the scan's normal and the closest face's
    f_score: dict[str, float]  # the share of scan points within each threshold, keyed by millimetres ("2.5mm")
    distances: Float[Tensor, " P"]
    similarity: Similarity  # what aligned the mesh to the scan (the identity when not aligned)


def depth_scan(
    cameras: PinholeCameras,
    frame: int,
    vertices: Float[Tensor, "V 3"],
    faces: Int[Tensor, "F 3"],
    segmentation: Int[Tensor, "H W"] | None = None,
) -> DepthScan:
    """The scan camera ``frame`` of ``cameras`` takes of the mesh: a ray a pixel, its first hit, the hit face's
    normal turned to the camera, and the pixel's code in ``segmentation`` (an ``[H, W]`` image of labels); pixels
    seen at a view more grazing than :data:`VIEW_COSINE` are dropped (eval.py)."""
    h, w = cameras.height, cameras.width
    if segmentation is not None:
        check_int("segmentation", segmentation, [h, w])
    rays = image_rays(cameras, frame)
    hit = ray_intersect(TriangleMesh(vertices, faces), rays.origins.to(vertices.dtype), rays.directions.to(vertices.dtype))
    dirs = rays.directions.to(vertices.dtype)
    normals = face_normals(vertices, faces)[hit.face.clamp(min=0)]
    cosine = (normals * dirs).sum(-1)
    keep = hit.hit & (cosine.abs() > VIEW_COSINE)
    normals = torch.where(cosine[:, None] > 0, -normals, normals)[keep]  # facing the camera
    points = (rays.origins.to(vertices.dtype) + hit.t[:, None] * dirs)[keep]
    index = torch.nonzero(keep).squeeze(1)
    pixels = torch.stack([index // w, index % w], dim=1)
    labels = None if segmentation is None else segmentation.reshape(-1)[index.to(segmentation.device)].long()
    return DepthScan(points=points, normals=normals, labels=labels, pixels=pixels)


def face_region(scan: DepthScan, segmentation: Int[Tensor, "H W"], codes: dict[str, int]) -> Bool[Tensor, " P"]:
    """Which of ``scan``'s points eval.py scores: those labelled with one of :data:`FACE_REGIONS` (the names
    ``codes`` has), away from the neck, the mouth's inside and the eyes by :data:`EXCLUDED_REGIONS`' margins,
    scaled to the height of ``segmentation`` (the label image the scan's labels came from)."""
    if scan.labels is None:
        raise ValueError("scan: expected a scan with labels (depth_scan with its segmentation), got labels None")
    check_int("segmentation", segmentation, [None, None])
    present = [codes[n] for n in FACE_REGIONS if n in codes]
    if not present:
        raise ValueError(f"codes: expected at least one of {list(FACE_REGIONS)} (the face region), got {sorted(codes)}")
    keep = torch.isin(scan.labels, torch.tensor(present, device=scan.labels.device))
    rows, cols = scan.pixels[:, 0].to(segmentation.device), scan.pixels[:, 1].to(segmentation.device)
    for names, half in EXCLUDED_REGIONS:
        region = [codes[n] for n in names if n in codes]
        if not region:
            continue
        r = max(1, round(half * segmentation.shape[0] / EVAL_HEIGHT))
        inside = torch.isin(segmentation, torch.tensor(region, device=segmentation.device)).float()[None, None]
        grown = F.max_pool2d(inside, 2 * r + 1, stride=1, padding=r)[0, 0] > 0  # binary dilation by a square
        keep &= ~grown[rows, cols].to(keep.device)
    return keep


def _identity(like: Tensor) -> Similarity:
    options = {"dtype": like.dtype, "device": like.device}
    return Similarity(torch.ones((), **options), torch.eye(3, **options), torch.zeros(3, **options))


def _cross_matrix(x: Tensor) -> Tensor:
    """``[N, 3, 3]`` matrices ``[x]x`` with ``[x]x w = x cross w``."""
    zero = torch.zeros_like(x[:, 0])
    rows = [[zero, -x[:, 2], x[:, 1]], [x[:, 2], zero, -x[:, 0]], [-x[:, 1], x[:, 0], zero]]
    return torch.stack([torch.stack(row, -1) for row in rows], 1)


def _step(mesh: Tensor, scan: Tensor, normals: Tensor) -> Similarity:
    """One Gauss-Newton step of the similarity that takes the ``mesh`` points onto their ``scan`` partners: the
    point-to-plane residuals (along the scan's ``normals``) and :data:`POINT_TO_POINT` of the point-to-point ones,
    squared, linearised in a small rotation, a scale change and a translation about the scan's centroid."""
    centre = scan.mean(0)
    c, q = mesh - centre, scan - centre
    # A residual (1 + sigma) c + w x c + t - q: its derivative in (sigma, w, t) is [c, -[c]x, I].
    jacobian = torch.cat([c[:, :, None], -_cross_matrix(c), torch.eye(3, dtype=c.dtype, device=c.device).expand(len(c), 3, 3)], 2)
    plane = (normals[:, None, :] @ jacobian)[:, 0]  # [N, 7]
    rows = torch.cat([plane, POINT_TO_POINT**0.5 * jacobian.reshape(-1, 7)])
    target = torch.cat([((q - c) * normals).sum(-1), POINT_TO_POINT**0.5 * (q - c).reshape(-1)])
    x = torch.linalg.lstsq(rows, target[:, None]).solution[:, 0]
    angle = x[1:4].norm()
    axis = x[1:4] / angle.clamp(min=1e-300)
    k = _cross_matrix(axis[None])[0]
    rotation = torch.eye(3, dtype=c.dtype, device=c.device) + torch.sin(angle) * k + (1 - torch.cos(angle)) * k @ k
    scale = 1 + x[0]
    return Similarity(scale, rotation, centre + x[4:] - scale * rotation @ centre)


def similarity_icp(
    vertices: Float[Tensor, "V 3"],
    faces: Int[Tensor, "F 3"],
    points: Float[Tensor, "P 3"],
    normals: Float[Tensor, "P 3"],
    iterations: int = ICP_ITERATIONS,
    max_distance: float = ICP_MAX_DISTANCE,
    min_cosine: float = ICP_MIN_COSINE,
) -> Similarity:
    """The similarity that aligns the mesh to the scan ``points`` (outward ``normals``), as eval.py aligns its
    reconstruction before scoring. Each iteration pairs every scan point with its closest point on the moved mesh,
    keeps the pairs within ``max_distance`` whose normals agree (cosine ``min_cosine`` or more: icp.py's gates) and
    takes a Gauss-Newton step of their point-to-plane residuals (:func:`_step`). icp.py minimises a blend of
    point-to-plane and point-to-point L1 residuals with Adam, from mesh vertices to their nearest scan point; the
    squared residuals from the scan's points solve in a few steps with no learning rate. A step with fewer than 3
    pairs ends the iterations with the transform so far (the identity when the mesh lies farther than
    ``max_distance`` from the whole scan: the score then shows how far). Float64 inside; no gradient."""
    check_count("iterations", iterations, 1)
    check_positive("max_distance", max_distance)
    with torch.no_grad():
        v, p = vertices.detach().double(), points.detach().double()
        n = F.normalize(normals.detach().double(), dim=-1)
        total = _identity(v)
        eye = total.rotation
        for _ in range(iterations):
            moved = total.apply(v)
            near = closest_point(TriangleMesh(moved, faces), p, max_distance=max_distance, signed=False)
            cosine = (face_normals(moved, faces)[near.face.clamp(min=0)] * n).sum(-1)
            pair = near.hit & (cosine >= min_cosine)
            if int(pair.sum()) < 3:
                break
            step = _step(near.point[pair], p[pair], n[pair])
            total = total.then(step)
            if (step.rotation - eye).abs().max() < 1e-9 and (step.scale - 1).abs() < 1e-9 and step.translation.norm() < 1e-9:
                break
    dtype = vertices.dtype
    return Similarity(total.scale.to(dtype), total.rotation.to(dtype), total.translation.to(dtype))


def scan_score(
    vertices: Float[Tensor, "V 3"],
    faces: Int[Tensor, "F 3"],
    points: Float[Tensor, "P 3"],
    normals: Float[Tensor, "P 3"],
    thresholds: Sequence[float] = PAPER_THRESHOLDS,
    align: bool = True,
) -> ScanScore:
    """eval.py's measures of the mesh against the scan ``points`` and their ``normals`` (the face region of a
    :class:`DepthScan`), after :func:`similarity_icp` when ``align`` (see the module docstring)."""
    check_float("vertices", vertices, [None, 3])
    check_int("faces", faces, [None, 3], upper=vertices.shape[0], device=vertices.device)
    check_float("points", points, [None, 3], device=vertices.device)
    check_float("normals", normals, [points.shape[0], 3], device=vertices.device)
    if points.shape[0] == 0:
        raise ValueError("points: expected at least one scan point, got an empty [0, 3] tensor")
    check_nonzero_rows("normals", normals, "non-zero normals")
    for t in thresholds:
        check_positive("thresholds", t)
    similarity = similarity_icp(vertices, faces, points, normals) if align else _identity(vertices)
    with torch.no_grad():
        moved = similarity.apply(vertices.detach())
        p = points.detach().to(moved.dtype)
        near = closest_point(TriangleMesh(moved, faces), p, signed=False)
        difference = p - near.point
        distances = difference.norm(dim=-1)
        cosine = (face_normals(moved, faces)[near.face] * F.normalize(normals.to(moved.dtype), dim=-1)).sum(-1).abs()
    return ScanScore(
        chamfer_l1=float(difference.abs().sum(-1).mean()),
        chamfer_l2=float(distances.mean()),
        normal_consistency=float(cosine.mean()),
        f_score={f"{1000 * t:g}mm": float((distances <= t).to(moved.dtype).mean()) for t in thresholds},
        distances=distances,
        similarity=similarity,
    )


def face_scan(frames: FrameSet, f: int, vertices: Tensor, faces: Tensor) -> tuple[Tensor, Tensor]:
    """MonoNPHM's evaluation scan of frame ``f``: what its camera sees of the true mesh, on the face region where the
    frames have a segmentation (:func:`depth_scan`, :func:`face_region`)."""
    labels = None if frames.segmentation is None else frames.segmentation[f].to(vertices.device).long()
    scan = depth_scan(frames.cameras.to(vertices.device), f, vertices, faces, labels)
    if labels is None:
        return scan.points, scan.normals
    keep = face_region(scan, labels, frames.segmentation_labels)
    return scan.points[keep], scan.normals[keep]


# ------------------------------------------------------------------ the whole head the camera sees


@dataclass
class GeometryScore:
    """A surface against the truth over what the frame's camera sees, in metres and as a fraction of the truth's
    size (its box diagonal)."""

    chamfer: float  # symmetric Chamfer L1 (metres)
    chamfer_l2: float  # squared (m^2)
    normal_consistency: float
    f_score: dict[str, float]  # at MonoNPHM's thresholds, keyed by millimetres
    size: float  # the truth's box diagonal (metres)

    @property
    def relative(self) -> float:
        return self.chamfer / self.size


F_SCORE_THRESHOLDS = (0.005, 0.01, 0.015, 0.02)  # metres: MonoNPHM's utils/metrics.py eval_pointcloud
# Metres: the reconstruction is scored inside the true head's box grown by this much. The prior continues the neck
# past the capture's cut (its scans are open there), as MonoNPHM scores only the face region of its scans.
SCORE_MARGIN = 0.01


def geometry_score(
    vertices: Float[Tensor, "V 3"],
    faces: Int[Tensor, "F 3"],
    truth_vertices: Float[Tensor, "W 3"],
    truth_faces: Int[Tensor, "G 3"],
    eye: Float[Tensor, " 3"],
) -> GeometryScore:
    """Score ``vertices, faces`` against the truth over the faces a camera at ``eye`` sees of each, the former
    inside the truth's box grown by ``SCORE_MARGIN``."""
    low, high = truth_vertices.amin(0) - SCORE_MARGIN, truth_vertices.amax(0) + SCORE_MARGIN
    centroids = vertices[faces].mean(dim=1)
    faces = faces[((centroids >= low) & (centroids <= high)).all(dim=1)]
    if len(faces) == 0:
        raise ValueError("vertices: expected a surface inside the true head's box, got none there")
    seen, truth_seen = visible_faces(vertices, faces, eye), visible_faces(truth_vertices, truth_faces, eye)
    score = chamfer_distance(vertices, seen, truth_vertices, truth_seen)
    f = {f"{1000 * t:g}mm": float(v) for t, v in zip(F_SCORE_THRESHOLDS, score.f_score(F_SCORE_THRESHOLDS).f, strict=True)}
    size = float((truth_vertices.amax(0) - truth_vertices.amin(0)).norm())
    return GeometryScore(float(score.symmetric), float(score.squared), float(score.normal_consistency), f, size)
