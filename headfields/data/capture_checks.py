"""What every capture reader checks before it returns a split (``insta_reader``, ``vhap_reader``,
``imavatar_reader``), so that loading refuses, and ``python -m headfields inspect`` reports, a capture that
would train wrong without an error: cameras out of the bounds that follow from the image size and the tracked
head, a grey image among colour ones, a frame that two splits list, tracked coefficients no tracker writes, a
tracked-mesh vertex far from the rest of its mesh or pulled off its neighbours (a spike).
Each error names the file and the key (and the frame)."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import _io
from ._transforms_json import TransformsJson
from .frames import SPLITS

# The field of view a pinhole camera may have across the image. 0.5 deg is half that of a 2000 mm lens on a
# full-frame sensor (1.0 deg); 175 deg is past any rectilinear lens (a pinhole reaches 180 deg only at focal
# length 0). Outside, the number is not a focal length in pixels: millimetres, a fraction of the size, a typo.
MIN_FIELD_OF_VIEW_DEG = 0.5
MAX_FIELD_OF_VIEW_DEG = 175.0
# How far the principal point may lie past each edge, in image sizes: cx in [-W, 2W], cy in [-H, 2H]. That holds
# for the image as a crop anywhere in a frame up to 4 times its size with the optical axis at the frame's centre;
# further out the axis would miss a view that small by more than the view is wide.
PRINCIPAL_POINT_MARGIN = 1.0
# The size of a head where a capture has no tracked mesh to measure (only the tracked translation, or nothing):
# a head's length, glabella to the back of the head, averages about 0.19 m (women) to 0.20 m (men) in the US
# Army's ANSUR II anthropometric survey, a little less than its height, chin to crown.
HEAD_SIZE = 0.2  # metres
# A camera farther from the head than focal length (px) x the head's size (m) / this images it below this many
# pixels: nothing left to train on, so a camera that far is a unit or a key mistake.
MIN_HEAD_PIXELS = 1.0
# Tracked shape and expression coefficients: FLAME's (and SMPL-X's) directions carry their standard deviations,
# so a tracked face stays within a few units of 0; 1000 leaves room for other trackers' blendshape weights
# (NeRFace's expression vectors) while refusing numbers that only a mistake writes (1e30 overflows float32 once
# multiplied by a direction).
MAX_COEFFICIENT = 1000.0
# How far a tracked mesh's vertex may lie from the mesh's median vertex, in multiples of the median of those
# distances: a FLAME head with its neck reaches 1.9 of it, a posed SMPL-X body about 3. A vertex beyond is a spike
# (a tracker's diverged vertex, a unit slip in one coordinate), which would make the head as big as the spike is
# far, so its cameras' distance checks pass anything and every real triangle looks degenerate beside it.
MAX_VERTEX_SPREAD = 8.0
# How far a tracked mesh's vertex may lie from its nearest neighbour along an edge, in multiples of the edge length
# about it: the longer of the mesh's median edge and its neighbours' shortest edges (so that a coarse patch, or a
# pole's fan of long edges, is its own scale). FLAME's template (5023 vertices, with its neck and eyeballs) reaches
# 1.7 of it, the synthetic FLAME head with its SMPL-X bust 1.05, a UV sphere 1.0; one of FLAME's vertices moved 5 mm
# (an expression) leaves 1.7, moved 5 cm measures 10 to 15, moved 0.3 m (within MAX_VERTEX_SPREAD of a head) 65 to 94.
MAX_EDGE_GAP = 8.0
_FRAMES_AT_ONCE = 64  # frames measured at once: for SMPL-X (10k vertices, 31k edges), arrays of 15 MB at most


def focal_bounds(size: int) -> tuple[float, float]:
    """The focal lengths (pixels) that give ``size`` pixels a field of view within the named range."""
    half = math.radians(MAX_FIELD_OF_VIEW_DEG) / 2, math.radians(MIN_FIELD_OF_VIEW_DEG) / 2
    return size / (2 * math.tan(half[0])), size / (2 * math.tan(half[1]))


def check_intrinsics(
    meta: TransformsJson, keys: Sequence[str], fx: float, fy: float, cx: float, cy: float, w: int, h: int
) -> None:
    """fx, fy, cx, cy (pixels, OpenCV) of a ``w`` x ``h`` image within bounds, else an error naming the key of
    ``keys`` (those of fx, fy, cx, cy in ``meta``'s file) the value came from."""
    for key, focal, size, axis in ((keys[0], fx, w, "width"), (keys[1], fy, h, "height")):
        low, high = focal_bounds(size)
        if not (math.isfinite(focal) and low <= focal <= high):
            fov = f", a field of view of {math.degrees(2 * math.atan(size / (2 * focal))):.4g} deg" if focal > 0 else ""
            raise meta.error(
                key,
                f"expected a focal length in [{low:.4g}, {high:.4g}] px (a field of view of the image's {size} px "
                f"{axis} between {MIN_FIELD_OF_VIEW_DEG} and {MAX_FIELD_OF_VIEW_DEG} deg), got {focal!r} px{fov}",
            )
    for key, centre, size, name in ((keys[2], cx, w, "cx"), (keys[3], cy, h, "cy")):
        low, high = -PRINCIPAL_POINT_MARGIN * size, (1 + PRINCIPAL_POINT_MARGIN) * size
        if not (low <= centre <= high):
            raise meta.error(
                key,
                f"expected the principal point's {name} within the image widened by its size on each side, "
                f"[{low:g}, {high:g}] px, got {centre!r} px",
            )


@dataclass(frozen=True)
class TrackedHead:
    """Where the head is in each of N frames and how big, for :func:`check_camera_distances`."""

    centres: np.ndarray  # [N,3] metres, world
    sizes: np.ndarray  # [N] metres
    source: str  # what they were measured from, for the error

    @classmethod
    def from_meshes(cls, vertices: np.ndarray, source: str) -> TrackedHead:
        """Each frame's tracked mesh ``[N,V,3]``: its bounding box's centre and longest side."""
        low, high = vertices.min(axis=1), vertices.max(axis=1)
        return cls((low + high) / 2, (high - low).max(axis=1), source)

    @classmethod
    def at(cls, centres: np.ndarray, source: str) -> TrackedHead:
        """A head of :data:`HEAD_SIZE` at ``centres [N,3]`` (the tracked translation, or the origin)."""
        return cls(np.asarray(centres, dtype=np.float64), np.full(len(centres), HEAD_SIZE), source)


def check_camera_distances(
    meta: TransformsJson, keys: Sequence[str], camera_to_world: np.ndarray, focal: float, head: TrackedHead
) -> None:
    """Each camera (``camera_to_world [N,4,4]``, the matrix of ``meta``'s key ``keys[k]``) near enough to the head
    to image it at :data:`MIN_HEAD_PIXELS` or more: distance <= ``focal`` (px) x the head's size (m)."""
    distance = np.linalg.norm(camera_to_world[:, :3, 3] - head.centres, axis=-1)
    bound = focal * head.sizes / MIN_HEAD_PIXELS
    far = np.flatnonzero(~(distance <= bound))  # NaN too
    if far.size:
        k = int(far[0])
        raise meta.error(
            keys[k],
            f"the camera is {distance[k]:.4g} m from the head ({head.source}); expected at most {bound[k]:.4g} m, the "
            f"focal length {focal:.4g} px x the head's size {head.sizes[k]:.3g} m, beyond which the head covers "
            f"less than {MIN_HEAD_PIXELS:g} pixel",
        )


def check_mesh_spread(paths: Sequence[Path], vertices: np.ndarray, faces: np.ndarray | None = None) -> None:
    """Every vertex of each frame's tracked mesh (``vertices [N,V,3]``, read from ``paths[k]``) near the rest of it:
    within :data:`MAX_VERTEX_SPREAD` times the median distance of the frame's vertices from their median and, given
    the meshes' ``faces [F,3]``, within :data:`MAX_EDGE_GAP` times the edge length about it of its nearest neighbour
    along an edge. Else an error naming the file, the vertex and how far it lies from the rest."""
    if not vertices.size:
        return
    graph = _EdgeGraph.of(faces) if faces is not None and len(faces) else None
    for start in range(0, len(vertices), _FRAMES_AT_ONCE):
        block = vertices[start : start + _FRAMES_AT_ONCE]
        _check_spread(paths[start : start + len(block)], np.asarray(block, dtype=np.float64))
        if graph is not None:  # in single precision, as the meshes are read: twice as fast
            _check_edge_gaps(paths[start : start + len(block)], np.asarray(block, dtype=np.float32), graph)


def _check_spread(paths: Sequence[Path], vertices: np.ndarray) -> None:
    centre = np.median(vertices, axis=1, keepdims=True)
    distance = np.linalg.norm(vertices - centre, axis=-1)  # [N, V]
    typical = np.median(distance, axis=1, keepdims=True)
    far = np.argwhere(distance > MAX_VERTEX_SPREAD * typical)
    if far.size:
        k, v = (int(i) for i in far[0])
        times = distance[k, v] / typical[k, 0]
        raise ValueError(
            f"{paths[k]}: vertex {v} lies {distance[k, v]:.4g} m from the mesh's median vertex, {times:.3g} times the "
            f"median distance of its vertices ({typical[k, 0]:.3g} m); expected at most {MAX_VERTEX_SPREAD:g} times: a "
            "vertex far from the rest of the tracked mesh (a spike), not a head"
        )


@dataclass(frozen=True)
class _EdgeGraph:
    """A mesh's edges, once each, and its vertices on an edge (``used``, ascending), each with its ends' ``start`` in
    ``edge`` (each end's edge, grouped by vertex), its ``valence`` and its ``neighbours`` (positions in ``used``,
    padded with ``len(used)``). Made once for the frames' one set of faces."""

    edges: np.ndarray  # [E, 2] vertex ids
    ends: np.ndarray  # [E, 2] positions in used
    used: np.ndarray  # [U]
    start: np.ndarray  # [U]
    valence: np.ndarray  # [U]
    edge: np.ndarray  # [2E]
    neighbours: np.ndarray  # [U, the largest valence]

    @classmethod
    def of(cls, faces: np.ndarray) -> _EdgeGraph:
        corners = np.asarray(faces, dtype=np.int64)
        pairs = np.stack([corners, np.roll(corners, -1, axis=1)], axis=-1).reshape(-1, 2)
        pairs = np.sort(pairs[pairs[:, 0] != pairs[:, 1]], axis=1)  # a repeated corner is no edge
        n = int(corners.max(initial=0)) + 1
        keys = np.unique(pairs[:, 0] * n + pairs[:, 1])  # one number an edge: np.unique on rows is 5x slower
        edges = np.stack([keys // n, keys % n], axis=1)
        both = np.concatenate([edges, edges[:, ::-1]])
        order = np.argsort(both[:, 0], kind="stable")
        used, start, valence = np.unique(both[order, 0], return_index=True, return_counts=True)
        neighbours = np.full((len(used), valence.max(initial=0)), len(used))
        slot = np.arange(len(order)) - np.repeat(start, valence)
        neighbours[np.repeat(np.arange(len(used)), valence), slot] = np.searchsorted(used, both[order, 1])
        edge = np.tile(np.arange(len(edges)), 2)[order]
        return cls(edges, np.searchsorted(used, edges), used, start, valence, edge, neighbours)


def _squared_lengths(vertices: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Each frame's squared edge lengths ``[N, E]`` (``vertices [N,V,3]``): a coordinate at a time, over rows of
    frames (gathering [N,V,3] along V, or summing its last axis, is 5x slower)."""
    rows = np.ascontiguousarray(vertices.transpose(2, 1, 0))  # [3, V, N]
    squared = np.zeros((len(edges), len(vertices)), dtype=vertices.dtype)
    for coordinate in rows:
        difference = np.take(coordinate, edges[:, 0], axis=0) - np.take(coordinate, edges[:, 1], axis=0)
        squared += difference * difference
    return squared.T.copy()


def _check_edge_gaps(paths: Sequence[Path], vertices: np.ndarray, graph: _EdgeGraph) -> None:
    """:func:`check_mesh_spread`'s rule of :data:`MAX_EDGE_GAP`, on squared lengths (the same order, no roots)."""
    if not len(graph.edges):
        return
    squared = _squared_lengths(vertices, graph.edges)
    middle = squared.shape[1] // 2
    median = np.partition(squared, middle, axis=1)[:, middle]
    bound, u = MAX_EDGE_GAP**2, len(graph.used)
    # A vertex over the bound has every edge over MAX_EDGE_GAP median edges: counting each vertex's long edges finds
    # those (a head has none), and only their frames' shortest edges are reduced, their neighbours' gathered.
    k, e = np.nonzero(squared > bound * median[:, None])
    key, count = np.unique(np.concatenate([k * u + graph.ends[e, 0], k * u + graph.ends[e, 1]]), return_counts=True)
    k, i = np.divmod(key[count == graph.valence[key % u]], u)
    if not k.size:
        return
    frames, row = np.unique(k, return_inverse=True)
    nearest = np.minimum.reduceat(squared[frames][:, graph.edge], graph.start, axis=1)  # [F, U]: shortest edges
    padded = np.concatenate([nearest, np.zeros((len(frames), 1), nearest.dtype)], axis=1)
    about = np.maximum(padded[row[:, None], graph.neighbours[i]].max(axis=1), median[k])
    far = np.flatnonzero(nearest[row, i] > bound * about)
    if far.size:
        f = far[0]  # the first frame's, its first vertex
        ends = graph.edge[graph.start[i[f]] : graph.start[i[f]] + graph.valence[i[f]]]
        v, edge = int(graph.used[i[f]]), graph.edges[ends[np.argmin(squared[k[f], ends])]]
        distance, scale = math.sqrt(nearest[row[f], i[f]]), math.sqrt(about[f])
        raise ValueError(
            f"{paths[k[f]]}: vertex {v} lies {distance:.4g} m from its nearest neighbour along an edge (vertex "
            f"{int(edge[edge != v][0])}), {distance / scale:.3g} times the edge length about it ({scale:.3g} m, the "
            f"longer of the mesh's median edge and its neighbours' shortest edges); expected at most {MAX_EDGE_GAP:g} "
            "times: a vertex pulled off the tracked mesh (a spike), not a head"
        )


def check_one_color_family(split: str, paths: Sequence[Path], images: Sequence[_io.ColorImage | _io.ImageKind]) -> None:
    """Every image of split ``split`` colour, or every one grey: the odd one (of the fewer; on a tie, not the first
    image's kind) is an error naming it, its mode and the others'. A grey image among colour ones would otherwise
    be spread to RGB and train the model towards grey."""
    counts = Counter(image.family for image in images)
    if len(counts) < 2:
        return
    common = max(counts, key=lambda family: (counts[family], family == images[0].family))
    odd = next(k for k, image in enumerate(images) if image.family != common)
    modes = sorted({image.mode for image in images if image.family == common})
    example = next(p for p, image in zip(paths, images, strict=True) if image.family == common)
    raise ValueError(
        f"{paths[odd]}: a {images[odd].family} image (mode {images[odd].mode}) among {counts[common]} {common} images "
        f"(mode {', '.join(modes)}, as {example}) of split {split!r}; a split's images must be all colour or all grey"
    )


def splits_to_compare(split: str) -> tuple[str, ...]:
    """The splits whose frames split ``split`` must not share: the training split against each held-out one. The
    held-out splits may share frames with each other: INSTA's ``scripts/transforms.py`` writes the validation
    frames as the last 20 of its test frames, and no training view leaks into either score that way."""
    return tuple(s for s in SPLITS if s != split and "train" in (s, split))


@dataclass(frozen=True)
class SplitListing:
    """The image files another split of the same capture lists, and the file that lists them."""

    split: str
    source: Path
    images: list[Path]


def check_disjoint_splits(split: str, source: Path, paths: Sequence[Path], others: Sequence[SplitListing]) -> None:
    """No image of split ``split`` (``paths``, listed by ``source``) among those of ``others`` (the splits of
    :func:`splits_to_compare`): the same file, links followed. A held-out score over a frame trained on would
    flatter the model."""
    mine = {_io.resolve(p): p for p in paths}
    for other in others:
        for path in other.images:
            try:
                resolved = _io.resolve(path)
            except ValueError:  # a loop: loading that split names it
                continue
            if resolved in mine:
                raise ValueError(
                    f"{mine[resolved]}: listed by split {split!r} ({source}) and by split {other.split!r} "
                    f"({other.source}); a training frame held out too puts a training view in the held-out score"
                )


def check_coefficients(path: Path, key: str, values: np.ndarray) -> None:
    """Tracked shape or expression coefficients ``values`` (of ``key`` in ``path``) within +-MAX_COEFFICIENT."""
    if values.size and not np.abs(values).max() <= MAX_COEFFICIENT:
        raise ValueError(
            f"{path}: {key}: expected coefficients within +-{MAX_COEFFICIENT:g} (standard deviations of the model's "
            f"directions), got {float(np.abs(values).max()):.4g}"
        )
