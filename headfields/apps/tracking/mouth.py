"""Mouth labels from 2D lip landmarks, for INSTA's mouth weighting where no face parser ran.

INSTA weights its losses by a face parser's ``mouth_interior`` and lip labels (:data:`headfields.data.labels.
INSTA_FACE_PARSING`: upper_lip 130, lower_lip 120, mouth_interior 140). :func:`mouth_regions` draws the same three
regions from the lip contours: the inner lip ring bounds the interior, each lip lies between its half of the outer
ring and its half of the inner ring. Pixels are filled by the even-odd rule at their centres (headfields' convention:
pixel (col, row) at (col + 0.5, row + 0.5))::

    from headfields.apps.tracking.mouth import mouth_regions

    regions = mouth_regions(track.points, track.layout, height=512, width=512)
    regions.mouth_interior  # bool [N, 512, 512]; all False in frames without a face (NaN points)
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass

import torch
from jaxtyping import Bool, Float
from torch import Tensor

from ...checks import check_shape

__all__ = ["MEDIAPIPE_LIP_RINGS", "MOUTH_POLYGONS", "MouthRegions", "fill_polygon", "mouth_regions"]

# MediaPipe's lip edges, FACEMESH_LIPS (google-ai-edge/mediapipe mediapipe/python/solutions/face_mesh_connections.py):
# the outer and inner lip lines, each as an upper and a lower path from the subject's right corner to the left one.
FACEMESH_LIPS: tuple[tuple[int, int], ...] = (
    (61, 146), (146, 91), (91, 181), (181, 84), (84, 17), (17, 314), (314, 405), (405, 321), (321, 375), (375, 291),
    (61, 185), (185, 40), (40, 39), (39, 37), (37, 0), (0, 267), (267, 269), (269, 270), (270, 409), (409, 291),
    (78, 95), (95, 88), (88, 178), (178, 87), (87, 14), (14, 317), (317, 402), (402, 318), (318, 324), (324, 308),
    (78, 191), (191, 80), (80, 81), (81, 82), (82, 13), (13, 312), (312, 311), (311, 310), (310, 415), (415, 308),
)  # fmt: skip


def _paths(edges: tuple[tuple[int, int], ...], start: int, end: int) -> list[tuple[int, ...]]:
    """The paths from ``start`` to ``end`` along ``edges`` (each vertex visited once)."""
    neighbours: dict[int, list[int]] = {}
    for a, b in edges:
        neighbours.setdefault(a, []).append(b)
        neighbours.setdefault(b, []).append(a)
    found = []
    for first in neighbours[start]:
        path = [start, first]
        while path[-1] != end:
            step = [v for v in neighbours[path[-1]] if v not in path]
            if len(step) != 1:
                break
            path.append(step[0])
        if path[-1] == end:
            found.append(tuple(path))
    return found


def _lip_rings() -> dict[str, tuple[int, ...]]:
    """FACEMESH_LIPS chained into its four paths, named by the midline point each passes: 0 (the top of the upper
    lip), 17 (the bottom of the lower lip), 13 and 14 (the inner edges of the upper and lower lip)."""
    outer, inner = _paths(FACEMESH_LIPS, 61, 291), _paths(FACEMESH_LIPS, 78, 308)
    return {
        "upper_outer": next(p for p in outer if 0 in p),
        "lower_outer": next(p for p in outer if 17 in p),
        "upper_inner": next(p for p in inner if 13 in p),
        "lower_inner": next(p for p in inner if 14 in p),
    }


MEDIAPIPE_LIP_RINGS: dict[str, tuple[int, ...]] = _lip_rings()


def _polygons(upper_outer, lower_outer, upper_inner, lower_inner) -> dict[str, tuple[int, ...]]:
    """Each region as a closed polygon of landmark ids, from the four lip paths (corner to corner, same way)."""
    return {
        "mouth_interior": tuple(upper_inner) + tuple(reversed(lower_inner[1:-1])),
        "upper_lip": tuple(upper_outer) + tuple(reversed(upper_inner)),
        "lower_lip": tuple(lower_outer) + tuple(reversed(lower_inner)),
    }


# iBUG-68: outer lip 48..59 (48 and 54 the corners, 51 the top, 57 the bottom), inner lip 60..67 (corners 60, 64).
MOUTH_POLYGONS: dict[str, dict[str, tuple[int, ...]]] = {
    "ibug68": _polygons(
        upper_outer=tuple(range(48, 55)),
        lower_outer=(48, 59, 58, 57, 56, 55, 54),
        upper_inner=(60, 61, 62, 63, 64),
        lower_inner=(60, 67, 66, 65, 64),
    ),
    "mediapipe": _polygons(**MEDIAPIPE_LIP_RINGS),
}
_POINTS = {"ibug68": (68,), "mediapipe": (468, 478)}


@dataclass(frozen=True)
class MouthRegions:
    mouth_interior: Bool[Tensor, "N H W"]  # between the lips: the face parser's "mouth" (teeth, tongue, cavity)
    upper_lip: Bool[Tensor, "N H W"]
    lower_lip: Bool[Tensor, "N H W"]


def fill_polygon(polygon: Float[Tensor, "P 2"], height: int, width: int) -> Bool[Tensor, "H W"]:
    """The pixels of a ``height`` x ``width`` image whose centres lie inside ``polygon`` (x, y vertices in pixels,
    closed implicitly) by the even-odd rule: a centre is inside when a ray from it to +x crosses the outline an odd
    number of times. Only the polygon's bounding box is tested.

    >>> fill_polygon(torch.tensor([[2.0, 2.0], [10.0, 2.0], [10.0, 10.0], [2.0, 10.0]]), 16, 16).sum()  # 64
    """
    mask = torch.zeros(height, width, dtype=torch.bool, device=polygon.device)
    if polygon.shape[0] < 3:
        return mask
    poly = polygon.double()
    low, high = poly.amin(dim=0), poly.amax(dim=0)
    # Centres (c + 0.5) inside [low, high]: columns ceil(low - 0.5) .. floor(high - 0.5).
    c0, r0 = (max(0, int(torch.ceil(v - 0.5))) for v in low)
    c1, r1 = (int(torch.floor(v - 0.5)) + 1 for v in high)
    c1, r1 = min(c1, width), min(r1, height)
    if c1 <= c0 or r1 <= r0:
        return mask
    px = torch.arange(c0, c1, dtype=torch.float64, device=poly.device) + 0.5
    py = torch.arange(r0, r1, dtype=torch.float64, device=poly.device) + 0.5
    a, b = poly, poly.roll(-1, dims=0)  # edges a -> b
    ay, by = a[:, 1, None], b[:, 1, None]  # [E, 1]
    straddles = (ay > py) != (by > py)  # [E, rows]: the edge spans the row's centre line (half-open: no double count)
    # Where the edge meets the row's line; a horizontal edge never straddles, so its division is never used.
    x_cross = a[:, 0, None] + (py - ay) * (b[:, 0, None] - a[:, 0, None]) / torch.where(by == ay, 1.0, by - ay)
    crossings = straddles[:, :, None] & (px[None, None, :] < x_cross[:, :, None])  # [E, rows, cols]
    mask[r0:r1, c0:c1] = (crossings.sum(dim=0) % 2).bool()
    return mask


def mouth_regions(points: Float[Tensor, "N K 2"], layout: str, height: int, width: int) -> MouthRegions:
    """The mouth interior and the two lips of each frame, filled from the lip landmarks of ``layout`` ("ibug68":
    K = 68; "mediapipe": K = 468 or 478); a frame whose lip points hold NaN (no face) is all False.

    >>> regions = mouth_regions(track.points, "ibug68", 512, 512)
    >>> regions.upper_lip.shape  # (N, 512, 512)
    """
    check_shape("points", points, [None, None, 2])
    if not points.is_floating_point():
        raise TypeError(f"points: expected floating-point pixel coordinates, got {points.dtype}")
    if layout not in MOUTH_POLYGONS:
        raise ValueError(f"layout: expected one of {', '.join(MOUTH_POLYGONS)}, got {layout!r}")
    if points.shape[1] not in _POINTS[layout]:
        raise ValueError(
            f"points: expected {' or '.join(map(str, _POINTS[layout]))} landmarks for {layout}, got {points.shape[1]}"
        )
    for name, value in (("height", height), ("width", width)):
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
            raise ValueError(f"{name}: expected the image's {name} in pixels, an integer >= 1, got {value!r}")
    polygons = MOUTH_POLYGONS[layout]
    used = sorted({i for ring in polygons.values() for i in ring})
    lips = points[:, used]
    if bool(torch.isinf(lips).any()):
        raise ValueError("points: expected finite lip points (NaN for a frame without a face), found Inf")
    found = ~torch.isnan(lips).any(dim=(1, 2))
    n = points.shape[0]
    out = {name: torch.zeros(n, height, width, dtype=torch.bool, device=points.device) for name in polygons}
    for frame in torch.nonzero(found).flatten().tolist():
        for name, ring in polygons.items():
            out[name][frame] = fill_polygon(points[frame, list(ring)], height, width)
    return MouthRegions(**out)
