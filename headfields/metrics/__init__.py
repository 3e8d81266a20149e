"""Image and geometry metrics, the numbers the papers' tables report.

Images: PSNR, L1 and SSIM (Wang et al. 2004) of channels-last floats ``[H, W, C]`` or ``[B, H, W, C]`` with
values in ``[0, max_value]``, each over the whole frame or over a mask's pixels (the head: the avatar papers
report both). Identical images give PSNR ``inf`` (zero error), L1 0 and SSIM exactly 1. A mask with no pixel
to compare is an error, never a NaN. LPIPS, which needs a network and its weights, is in
:mod:`headfields.metrics.perceptual`.

Geometry (MonoNPHM, Giebenhain et al. 2024, as NPHM evaluates): Chamfer L1 and L2, normal consistency and
F-scores between two meshes (:func:`chamfer_distance`: exact point-to-surface distances of area-uniform
samples) or two point sets (:func:`point_chamfer_distance`: nearest neighbours), in one
:class:`ChamferDistance` result.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from jaxtyping import Bool, Float, Int
from torch import Tensor

from ..checks import (
    IntLike,
    check_count,
    check_float,
    check_int,
    check_nonzero_rows,
    check_positive,
    check_shape,
)

__all__ = ["ChamferDistance", "FScore", "chamfer_distance", "l1", "point_chamfer_distance", "psnr", "ssim", "visible_faces"]

# SSIM as defined by Wang et al. (2004) and used by the papers' tables (and skimage with gaussian_weights=True,
# use_sample_covariance=False): an 11x11 Gaussian window of sigma 1.5, K1 = 0.01, K2 = 0.03, averaged over the
# positions where the window fits inside the image ("valid"), then over channels and images.
SSIM_WINDOW = 11
SSIM_PADDINGS = ("valid", "zero")  # the windows inside the image (Wang et al., skimage), or on every pixel (3DGS)
SSIM_SIGMA = 1.5
SSIM_K1 = 0.01
SSIM_K2 = 0.03
# PSNR's MSE over every channel at once (the usual), or each channel's PSNR averaged (GaussianAvatars' train.py).
PSNR_CHANNELS = ("pooled", "mean")


def _check_mask(mask: Tensor, shape: Sequence[int], device: torch.device) -> None:
    check_shape("mask", mask, list(shape), device=device)
    if mask.dtype != torch.bool:
        raise TypeError(f"mask: expected a bool tensor, got {mask.dtype}")


def _pixels(pred: Tensor, target: Tensor, mask: Tensor | None) -> tuple[Tensor, Tensor]:
    """The checked images' values, only the mask's pixels (rows of the last dim) with a mask; never empty."""
    check_float("pred", pred, [None] * pred.dim())
    check_float("target", target, list(pred.shape), device=pred.device)
    if mask is not None:
        _check_mask(mask, pred.shape[:-1], pred.device)
        pred, target = pred[mask], target[mask]
    if pred.numel() == 0:
        raise ValueError(f"{'mask' if mask is not None else 'pred'}: expected at least one pixel to compare, got none")
    return pred, target


def psnr(
    pred: Float[Tensor, "*B C"],
    target: Float[Tensor, "*B C"],
    max_value: float = 1.0,
    mask: Bool[Tensor, "*B"] | None = None,
    channels: str = "pooled",
) -> Float[Tensor, ""]:
    """``10 log10(max_value^2 / MSE)`` over all elements, or over the pixels (rows of the last dim) where ``mask``
    is True, pooled over the images of a batch. ``inf`` when the images are identical; a mask with no True entry
    is an error (no pixels to compare).

    ``channels="mean"``: each channel's PSNR (its MSE over the pixels), then their mean, as GaussianAvatars'
    ``train.py`` scores a ``[3, H, W]`` image with its ``utils/image_utils.py`` ``psnr`` (the numbers of its
    paper's tables). A mean of logarithms: at least the pooled PSNR, above it when the channels' errors differ.

    Example: ``psnr(render, truth, mask=segmentation != BACKGROUND_LABEL)`` is the head's PSNR of an image."""
    check_positive("max_value", max_value)
    if channels not in PSNR_CHANNELS:
        raise ValueError(f"channels: expected one of {PSNR_CHANNELS}, got {channels!r}")
    pred, target = _pixels(pred, target, mask)
    if channels == "mean":
        mse = (pred - target).square().reshape(-1, pred.shape[-1]).mean(dim=0)
        return (10 * torch.log10(max_value**2 / mse)).mean()
    mse = (pred - target).square().mean()
    return 10 * torch.log10(max_value**2 / mse)


def l1(pred: Float[Tensor, "*B C"], target: Float[Tensor, "*B C"], mask: Bool[Tensor, "*B"] | None = None) -> Float[Tensor, ""]:
    """Mean absolute difference over all elements, or over the pixels (rows of the last dim) where ``mask`` is
    True, pooled over the images of a batch; in the images' units. A mask with no True entry is an error.

    Example: ``l1(render, truth)`` is 0.1 for images that differ by 0.1 everywhere."""
    pred, target = _pixels(pred, target, mask)
    return (pred - target).abs().mean()


def _gaussian_window(dtype: torch.dtype, device: torch.device) -> Tensor:
    x = torch.arange(SSIM_WINDOW, dtype=dtype, device=device) - (SSIM_WINDOW - 1) / 2
    w = torch.exp(-(x**2) / (2 * SSIM_SIGMA**2))
    return w / w.sum()


def _blur(x: Tensor, window: Tensor, pad: int = 0) -> Tensor:
    """Separable Gaussian filter of ``[N, 1, H, W]``: 'valid', or with ``pad`` zeros around (the same as one 2-D
    convolution of the zero-padded image)."""
    x = F.conv2d(x, window.view(1, 1, -1, 1), padding=(pad, 0))
    return F.conv2d(x, window.view(1, 1, 1, -1), padding=(0, pad))


def ssim(
    pred: Float[Tensor, "*B H W C"],
    target: Float[Tensor, "*B H W C"],
    max_value: float = 1.0,
    mask: Bool[Tensor, "*B H W"] | None = None,
    padding: str = "valid",
) -> Float[Tensor, ""]:
    """Mean structural similarity over the valid window positions, channels and images (Wang et al. 2004:
    Gaussian window 11, sigma 1.5, K1 0.01, K2 0.03, ``L = max_value``). Images must be at least 11 x 11.

    ``padding="zero"``: SSIM as 3DGS computes it (``utils/loss_utils.py``, which GaussianAvatars' loss and scores use):
    the windows centred on every pixel, the image zero-padded by half a window, any image size; the windows at the
    border see the zeros, so an image scores lower than with the valid windows.

    With ``mask``, the SSIM map (the mean over channels at each window centre) is averaged over the window
    centres where ``mask`` is True, pooled over the images: the windows still see the pixels around the mask's
    edge, as they see the image's. Centres lie at least 5 pixels (half a window) inside the image, so a mask
    with no True entry there is an error.

    Example: ``ssim(render, truth, mask=segmentation != BACKGROUND_LABEL)`` is the head's SSIM of an image."""
    check_positive("max_value", max_value)
    if padding not in SSIM_PADDINGS:
        raise ValueError(f"padding: expected one of {list(SSIM_PADDINGS)}, got {padding!r}")
    if pred.dim() not in (3, 4):
        raise ValueError(f"pred: expected shape [H, W, C] or [B, H, W, C], got {list(pred.shape)}")
    check_float("pred", pred, [None] * pred.dim())
    check_float("target", target, list(pred.shape), device=pred.device)
    h, w, c = pred.shape[-3:]
    half = SSIM_WINDOW // 2 if padding == "valid" else 0  # how far inside the image the window centres lie
    if padding == "valid" and (h < SSIM_WINDOW or w < SSIM_WINDOW):
        size = f"{SSIM_WINDOW} x {SSIM_WINDOW}"
        raise ValueError(f"pred: expected images of at least {size} pixels (the SSIM window), got {h} x {w}")
    if mask is not None:
        _check_mask(mask, pred.shape[:-1], pred.device)
        centres = mask[..., half : h - half, half : w - half]  # the window centres
        if not bool(centres.any()):
            raise ValueError(f"mask: expected a pixel at least {half} pixels inside the image (an SSIM window centre), got none")
    # [B, H, W, C] -> [B * C, 1, H, W]: every channel of every image filtered on its own.
    x, y = (t.reshape(-1, h, w, c).permute(0, 3, 1, 2).reshape(-1, 1, h, w) for t in (pred, target))
    window = _gaussian_window(x.dtype, x.device)
    pad = SSIM_WINDOW // 2 - half
    mu_x, mu_y = _blur(x, window, pad), _blur(y, window, pad)
    var_x = _blur(x * x, window, pad) - mu_x**2
    var_y = _blur(y * y, window, pad) - mu_y**2
    cov = _blur(x * y, window, pad) - mu_x * mu_y
    c1, c2 = (SSIM_K1 * max_value) ** 2, (SSIM_K2 * max_value) ** 2
    ssim_map = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
    if mask is None:
        return ssim_map.mean()
    per_centre = ssim_map.reshape(-1, c, *ssim_map.shape[-2:]).mean(dim=1)  # [B, H - 2 half, W - 2 half]
    return per_centre[centres.reshape(per_centre.shape)].mean()


@dataclass
class FScore:
    """F-scores at distance thresholds (Knapitsch et al. 2017, as NPHM and MonoNPHM report them): ``a`` is the
    reconstruction, ``b`` the reference."""

    threshold: Float[Tensor, " T"]
    precision: Float[Tensor, " T"]  # the share of a's samples within the threshold of b (distance <= threshold)
    recall: Float[Tensor, " T"]  # the share of b's samples within the threshold of a
    f: Float[Tensor, " T"]  # 2 precision recall / (precision + recall); 0 where both are 0


@dataclass
class ChamferDistance:
    """Distances between the samples of two surfaces and the other surface, in the surfaces' units, summarised
    as the geometry tables do (NPHM / MonoNPHM: each score the mean of its two directions)."""

    a_to_b: Float[Tensor, ""]  # mean over a's samples of the distance to b (NPHM's "accuracy" when a is the reconstruction)
    b_to_a: Float[Tensor, ""]  # ("completeness")
    symmetric: Float[Tensor, ""]  # Chamfer L1: (a_to_b + b_to_a) / 2
    squared: Float[Tensor, ""]  # Chamfer L2: the same with squared distances, (mean a_d^2 + mean b_d^2) / 2
    # Mean |cos| between each sample's normal and the normal where its nearest point lies on the other surface,
    # both directions averaged (unsigned: an inside-out surface scores as its twin); None without normals.
    normal_consistency: Float[Tensor, ""] | None
    a_samples: Float[Tensor, "N 3"]  # the points drawn on a (or a's points)
    a_distances: Float[Tensor, " N"]  # each one's distance to b (for percentiles, F-scores, error maps)
    b_samples: Float[Tensor, "M 3"]
    b_distances: Float[Tensor, " M"]  # each b sample's distance to a
    a_normal_agreement: Float[Tensor, " N"] | None = None  # each a sample's |cos| with b's normal there (None: no normals)
    b_normal_agreement: Float[Tensor, " M"] | None = None

    def f_score(self, thresholds: float | Sequence[float]) -> FScore:
        """Precision, recall and F-score at each threshold (in the surfaces' units), ``a`` the reconstruction.

        Example: ``chamfer_distance(*mesh, *truth).f_score([0.001, 0.0025]).f`` for 1 and 2.5 mm on metric heads."""
        values = [thresholds] if isinstance(thresholds, numbers.Real) else list(thresholds)
        if not values:
            raise ValueError("thresholds: expected at least one threshold, got none")
        for t in values:
            check_positive("thresholds", t)
        dtype, device = self.a_distances.dtype, self.a_distances.device
        threshold = torch.tensor([float(t) for t in values], dtype=dtype, device=device)
        with torch.no_grad():  # a step function: no useful gradient
            precision = (self.a_distances[None] <= threshold[:, None]).to(dtype).mean(dim=1)
            recall = (self.b_distances[None] <= threshold[:, None]).to(dtype).mean(dim=1)
            total = precision + recall
            f = torch.where(total > 0, 2 * precision * recall / total.clamp(min=torch.finfo(dtype).tiny), 0.0)
        return FScore(threshold=threshold, precision=precision, recall=recall, f=f)


def _summary(
    a_samples: Tensor, a_distances: Tensor, b_samples: Tensor, b_distances: Tensor, a_cos: Tensor | None, b_cos: Tensor | None
) -> ChamferDistance:
    """The one place the scores are computed from the per-sample distances (and normal agreements)."""
    a_to_b, b_to_a = a_distances.mean(), b_distances.mean()
    return ChamferDistance(
        a_to_b=a_to_b,
        b_to_a=b_to_a,
        symmetric=(a_to_b + b_to_a) / 2,
        squared=(a_distances.square().mean() + b_distances.square().mean()) / 2,
        normal_consistency=None if a_cos is None or b_cos is None else (a_cos.mean() + b_cos.mean()) / 2,
        a_samples=a_samples,
        a_distances=a_distances,
        b_samples=b_samples,
        b_distances=b_distances,
        a_normal_agreement=a_cos,
        b_normal_agreement=b_cos,
    )


def _check_mesh(name: str, vertices: Tensor, faces: Tensor, device: torch.device | None = None) -> None:
    check_float(f"{name}_vertices", vertices, [None, 3], device=device)
    if vertices.shape[0] == 0:
        raise ValueError(f"{name}_vertices: expected at least one vertex, got an empty [0, 3] tensor")
    check_int(f"{name}_faces", faces, [None, 3], upper=vertices.shape[0], device=vertices.device)
    if faces.shape[0] == 0:
        raise ValueError(f"{name}_faces: expected at least one triangle, got an empty [0, 3] tensor")


def chamfer_distance(
    a_vertices: Float[Tensor, "Va 3"],
    a_faces: Int[Tensor, "Fa 3"],
    b_vertices: Float[Tensor, "Vb 3"],
    b_faces: Int[Tensor, "Fb 3"],
    num_samples: IntLike = 10000,
    generator: torch.Generator | None = None,
) -> ChamferDistance:
    """Chamfer distance between meshes a and b: ``num_samples`` area-uniform points on each surface, each point's
    exact distance to the other surface (point to triangle, not to the other's samples or vertices), averaged
    per direction; ``symmetric`` (L1) and ``squared`` (L2) are the means of the two directions. Normal
    consistency compares each sample's face normal with the normal of the face its closest point lies on.

    Samples are drawn from ``generator`` (a CPU generator; seed 0 when None), so a fixed generator state gives the
    same score on every device. Differentiable with respect to both meshes' vertices; the result has the wider
    dtype of the two.

    Example: ``chamfer_distance(*uv_sphere(radius=1.0), *uv_sphere(radius=1.1)).symmetric`` is about 0.1.
    """
    # Imported here: image metrics should not pay for Warp's start-up.
    from ..geometry import TriangleMesh, closest_point, face_normals, sample_surface

    _check_mesh("a", a_vertices, a_faces)
    _check_mesh("b", b_vertices, b_faces, device=a_vertices.device)
    meshes = []
    for name, vertices, faces in (("a", a_vertices, a_faces), ("b", b_vertices, b_faces)):
        try:
            meshes.append(TriangleMesh(vertices, faces))
        except ValueError as error:  # what is left to fail is a degenerate triangle ("vertices: ..."): say which mesh
            raise ValueError(f"{name}_{error}") from None
    mesh_a, mesh_b = meshes
    num_samples = check_count("num_samples", num_samples, 1)
    if generator is None:
        generator = torch.Generator(device="cpu").manual_seed(0)
    elif not isinstance(generator, torch.Generator) or generator.device.type != "cpu":
        raise TypeError(f"generator: expected a CPU torch.Generator or None, got {generator!r}")
    # One seed per surface from the caller's generator: sample_surface draws its own random numbers on the CPU.
    seed_a, seed_b = torch.randint(0, 2**62, (2,), generator=generator).tolist()
    dtype = torch.promote_types(a_vertices.dtype, b_vertices.dtype)
    on_a, on_b = sample_surface(mesh_a, num_samples, seed=seed_a), sample_surface(mesh_b, num_samples, seed=seed_b)
    a_samples, b_samples = on_a.point.to(dtype), on_b.point.to(dtype)
    to_b, to_a = closest_point(mesh_b, a_samples), closest_point(mesh_a, b_samples)
    normals_a, normals_b = face_normals(a_vertices.to(dtype), a_faces), face_normals(b_vertices.to(dtype), b_faces)
    a_cos = (normals_a[on_a.face] * normals_b[to_b.face]).sum(dim=-1).abs()
    b_cos = (normals_b[on_b.face] * normals_a[to_a.face]).sum(dim=-1).abs()
    return _summary(a_samples, to_b.distance, b_samples, to_a.distance, a_cos, b_cos)


# Pairs per block of the nearest-neighbour search: 2^24 distances (64 MiB in float32) at a time.
NEAREST_BLOCK = 2**24


VISIBLE_TOLERANCE = 1e-4  # metres: a face is seen when the first hit toward its centroid is this close to it or farther


def visible_faces(vertices: Float[Tensor, "V 3"], faces: Int[Tensor, "F 3"], eye: Float[Tensor, " 3"]) -> Int[Tensor, "G 3"]:
    """The faces whose centroid is the first thing a ray from ``eye`` meets: the surface a camera there sees
    (monocular geometry is scored on it, as MonoNPHM scores only the face region its depth scans hold)."""
    from ..geometry import TriangleMesh, ray_intersect

    _check_mesh("mesh", vertices, faces)
    check_float("eye", eye, [3], device=vertices.device)
    centroids = vertices[faces].mean(dim=1)
    eye = eye.to(vertices.dtype)
    to_centroid = centroids - eye
    distance = to_centroid.norm(dim=-1)
    hit = ray_intersect(TriangleMesh(vertices, faces), eye.expand_as(centroids), to_centroid / distance[:, None])
    return faces[~hit.hit | (hit.t >= distance - VISIBLE_TOLERANCE)]


def _nearest(queries: Tensor, points: Tensor) -> Tensor:
    """Index of the nearest of ``points [M, 3]`` to each of ``queries [N, 3]``, by exact (not matrix-product)
    distances in blocks of rows: O(N M) work, for the point sets of an evaluation, not for millions of points."""
    rows = max(1, NEAREST_BLOCK // points.shape[0])
    with torch.no_grad():
        return torch.cat(
            [
                torch.cdist(block, points, compute_mode="donot_use_mm_for_euclid_dist").argmin(dim=1)
                for block in queries.split(rows)
            ]
        )


def _unit_normals(name: str, normals: Tensor | None, count: int, device: torch.device) -> Tensor | None:
    if normals is None:
        return None
    check_float(name, normals, [count, 3], device=device)
    check_nonzero_rows(name, normals, "non-zero normals")
    return normals / torch.linalg.vector_norm(normals, dim=-1, keepdim=True)


def point_chamfer_distance(
    a_points: Float[Tensor, "N 3"],
    b_points: Float[Tensor, "M 3"],
    a_normals: Float[Tensor, "N 3"] | None = None,
    b_normals: Float[Tensor, "M 3"] | None = None,
) -> ChamferDistance:
    """Chamfer distance between two point sets (scans, samples of surfaces drawn elsewhere): each point's
    distance to the nearest point of the other set, scored like :func:`chamfer_distance`. With normals for both
    sets (any length, normalised here), normal consistency compares each point's normal with its nearest
    neighbour's; without them it is None.

    Exact distances, O(N M) work: for meshes prefer :func:`chamfer_distance`, whose point-to-triangle distances
    do not depend on how densely the other surface was sampled. Differentiable with respect to the points and
    normals; the result has the wider dtype of the two sets.

    Example: ``point_chamfer_distance(scan, samples, scan_normals, sample_normals).f_score(0.001).f``."""
    check_float("a_points", a_points, [None, 3])
    check_float("b_points", b_points, [None, 3], device=a_points.device)
    for name, points in (("a_points", a_points), ("b_points", b_points)):
        if points.shape[0] == 0:
            raise ValueError(f"{name}: expected at least one point, got an empty [0, 3] tensor")
    if (a_normals is None) != (b_normals is None):
        missing = "b_normals" if b_normals is None else "a_normals"
        raise ValueError(f"{missing}: expected normals for both point sets or for neither, got them for one")
    device = a_points.device
    a_unit = _unit_normals("a_normals", a_normals, a_points.shape[0], device)
    b_unit = _unit_normals("b_normals", b_normals, b_points.shape[0], device)
    dtype = torch.promote_types(a_points.dtype, b_points.dtype)
    a, b = a_points.to(dtype), b_points.to(dtype)
    # The search picks the neighbours; torch recomputes their distances, so gradients reach both sets.
    near_b, near_a = _nearest(a, b), _nearest(b, a)
    a_distances = torch.linalg.vector_norm(a - b[near_b], dim=-1)
    b_distances = torch.linalg.vector_norm(b - a[near_a], dim=-1)
    a_cos = b_cos = None
    if a_unit is not None and b_unit is not None:
        a_unit, b_unit = a_unit.to(dtype), b_unit.to(dtype)
        a_cos = (a_unit * b_unit[near_b]).sum(dim=-1).abs()
        b_cos = (b_unit * a_unit[near_a]).sum(dim=-1).abs()
    return _summary(a, a_distances, b, b_distances, a_cos, b_cos)
