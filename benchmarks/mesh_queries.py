"""Benchmark headfields' mesh queries against open3d (Embree), trimesh and scipy on three head-like meshes.

Run it from the repository root::

    python benchmarks/mesh_queries.py                        # 1M queries, 5 repeats, CPU
    python benchmarks/mesh_queries.py --points 200000 --repeats 3 --threads 1
    python benchmarks/mesh_queries.py --device cuda          # headfields on the GPU, peers stay on the CPU
    python benchmarks/mesh_queries.py --meshes head_proxy    # one mesh only

(``make bench`` installs the optional peers with ``pip install -e ".[bench]"`` first.)

Three meshes, generated in code (no downloads), so a kernel's lead cannot hinge on one mesh's triangles:

* ``head_proxy`` -- ``head_proxy()``: the FLAME-size egg with a nose (5002 vertices, 10000 faces, a regular
  latitude-longitude grid);
* ``remeshed_head`` -- the same head re-meshed by marching cubes of its signed distance (``extract_isosurface`` on a
  56³ grid): about 11k vertices, irregular triangles of another size;
* ``lumpy_sphere`` -- a sphere of a finer grid displaced by seven smooth Gaussian bumps (a closed smooth surface of
  about 9.7k vertices with regions of high curvature), scaled to the head's size.

What it measures on each:

* closest point -- ``headfields.geometry.closest_point`` (float32, no autograd) vs open3d
  ``RaycastingScene.compute_closest_points`` vs ``trimesh.proximity.closest_point``. open3d and trimesh compute no
  inside/outside sign, so the compared row is ``closest_point(..., signed=False)``; the signed call (the default)
  is timed too, on a row of its own. Query points are
  ``sample_near_surface`` with ``thickness = 0.1 * d``, where ``d`` is the diagonal of the mesh's
  axis-aligned bounding box: a shell of +-10 % of the head's size around the surface.
* first ray hit -- ``ray_intersect`` vs open3d ``cast_rays`` vs trimesh's (rtree + numpy)
  ``RayMeshIntersector.intersects_first``. Ray origins are uniform on a sphere of radius 3 about the
  bounding-box centre (the head is about 2.2 tall); each ray aims at a point within +-1 % of ``d`` of the
  surface, so most rays hit.
* k = 4 nearest vertices -- ``knn_vertices`` vs ``scipy.spatial.cKDTree.query(workers=-1)``.

Each call gets one untimed warm-up (Warp compiles its kernels and builds its BVH on first use, open3d commits
its Embree scene, trimesh builds its r-tree, scipy builds its KD-tree outside the timing), then ``--repeats``
timed calls; the tables report the median. headfields and its Embree or scipy peer take their timed calls in turn
(:func:`measure_together`), so load from other work on the machine slows both alike. Each mesh gets its own
table, and a final summary gives the three ratios per mesh. Inputs are prepared in each library's native form
beforehand, so only the query call is timed. trimesh is pure Python/numpy and much slower, so it runs on the first
``--trimesh-points`` / ``--trimesh-rays`` queries; its throughput is still comparable. Every peer's answer is
compared with headfields' on the same queries (distances, hit masks, ray parameters) so the numbers can be
trusted.
"""

from __future__ import annotations

import argparse
import importlib
import os
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType
from typing import Any, TypeVar

import numpy as np
import torch

from headfields.geometry import (
    TriangleMesh,
    closest_point,
    extract_isosurface,
    head_proxy,
    knn_vertices,
    ray_intersect,
    sample_near_surface,
    uv_sphere,
)

T = TypeVar("T")

SHELL_FRACTION = 0.1  # query points lie within +-10 % of the bounding-box diagonal of the surface
RAY_TARGET_FRACTION = 0.01  # rays aim at points within +-1 % of the diagonal of the surface
RAY_ORIGIN_RADIUS = 3.0
KNN_K = 4
CLOSEST, RAY, KNN = "closest point", "first ray hit", f"k={KNN_K} nearest vertices"
O3D_NAME = "open3d RaycastingScene (Embree)"
REMESH_RESOLUTION = 56  # marching-cubes grid points per axis for the re-meshed head: about 11k vertices
LUMPS = 7  # Gaussian bumps on the lumpy sphere


# ----------------------------------------------------------------------------------------------- inputs


def remeshed_head() -> tuple[torch.Tensor, torch.Tensor]:
    """``head_proxy`` re-meshed: marching cubes of its signed distance (irregular triangles, another vertex count)."""
    vertices, faces = head_proxy(dtype=torch.float64)
    head = TriangleMesh(vertices, faces)
    bounds = torch.stack([vertices.amin(dim=0) - 0.1, vertices.amax(dim=0) + 0.1])
    surface = extract_isosurface(lambda p: closest_point(head, p).signed_distance, bounds, REMESH_RESOLUTION)
    return surface.vertices.float(), surface.faces


def lumpy_sphere() -> tuple[torch.Tensor, torch.Tensor]:
    """A sphere displaced radially by ``LUMPS`` smooth Gaussian bumps of random place, height and width (seeded),
    scaled to about the head's size."""
    vertices, faces = uv_sphere(70, 140, dtype=torch.float64)
    generator = torch.Generator().manual_seed(0)
    centres = torch.nn.functional.normalize(torch.randn(LUMPS, 3, generator=generator, dtype=torch.float64), dim=-1)
    height = 0.1 + 0.25 * torch.rand(LUMPS, generator=generator, dtype=torch.float64)
    width = 0.15 + 0.25 * torch.rand(LUMPS, generator=generator, dtype=torch.float64)
    squared = ((vertices[:, None] - centres) ** 2).sum(dim=-1)
    radius = 1 + (height * torch.exp(-squared / width**2)).sum(dim=-1)
    return (0.85 * radius[:, None] * vertices).float(), faces


MESHES: dict[str, Callable[[], tuple[torch.Tensor, torch.Tensor]]] = {
    "head_proxy": head_proxy,
    "remeshed_head": remeshed_head,
    "lumpy_sphere": lumpy_sphere,
}


@dataclass
class Workload:
    name: str
    vertices: torch.Tensor  # [V, 3] float32, CPU
    faces: torch.Tensor  # [F, 3] int64, CPU
    diagonal: float  # bounding-box diagonal of the mesh
    points: torch.Tensor  # [N, 3] float32, CPU: closest-point and knn queries
    origins: torch.Tensor  # [N, 3] float32, CPU
    dirs: torch.Tensor  # [N, 3] float32, CPU, unit length


def bounding_box(vertices: torch.Tensor) -> tuple[torch.Tensor, float]:
    """Centre and diagonal length of the axis-aligned bounding box."""
    lo, hi = vertices.amin(dim=0), vertices.amax(dim=0)
    return (lo + hi) / 2, float(torch.linalg.vector_norm(hi - lo))


def random_unit_vectors(n: int, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.nn.functional.normalize(torch.randn(n, 3, generator=generator), dim=-1)


def make_workload(name: str, n: int) -> Workload:
    """Mesh ``name`` of MESHES, ``n`` query points in the shell and ``n`` rays from a sphere around the mesh."""
    vertices, faces = MESHES[name]()
    mesh = TriangleMesh(vertices, faces)
    centre, diagonal = bounding_box(vertices)
    points = sample_near_surface(mesh, n, thickness=SHELL_FRACTION * diagonal, seed=0)
    targets = sample_near_surface(mesh, n, thickness=RAY_TARGET_FRACTION * diagonal, seed=2)
    origins = centre + RAY_ORIGIN_RADIUS * random_unit_vectors(n, seed=4)
    dirs = torch.nn.functional.normalize(targets - origins, dim=-1)
    return Workload(name, vertices, faces, diagonal, points.contiguous(), origins.contiguous(), dirs.contiguous())


# ----------------------------------------------------------------------------------------------- timing


@dataclass
class Timing:
    median_s: float
    queries: int

    @property
    def throughput(self) -> float:
        return self.queries / self.median_s


def measure(call: Callable[[], T], queries: int, repeats: int, warmup: Callable[[], object] | None = None) -> tuple[Timing, T]:
    """One untimed warm-up (``warmup`` or ``call`` itself), then the median of ``repeats`` timed calls."""
    (warmup or call)()
    times: list[float] = []
    result: T | None = None
    for _ in range(repeats):
        start = time.perf_counter()
        result = call()
        times.append(time.perf_counter() - start)
    assert result is not None
    return Timing(statistics.median(times), queries), result


def measure_together(calls: dict[str, Callable[[], Any]], queries: int, repeats: int) -> dict[str, tuple[Timing, Any]]:
    """Like :func:`measure` for several calls at once, their timed calls taken in turn (round-robin): on a machine
    shared with other work, a burst of load then slows each of them, not whichever happened to run during it."""
    for call in calls.values():
        call()
    times: dict[str, list[float]] = {name: [] for name in calls}
    results: dict[str, Any] = {}
    for _ in range(repeats):
        for name, call in calls.items():
            start = time.perf_counter()
            results[name] = call()
            times[name].append(time.perf_counter() - start)
    return {name: (Timing(statistics.median(times[name]), queries), results[name]) for name in calls}


def synchronized(device: torch.device, call: Callable[[], T]) -> Callable[[], T]:
    """``call`` followed by a CUDA synchronize, so that asynchronous GPU work is inside the timing."""

    def run() -> T:
        out = call()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return out

    return run


# ----------------------------------------------------------------------------------------------- peers


@dataclass
class Peer:
    """An optional library: the module, or why it could not be imported and how to install it."""

    name: str
    module: ModuleType | None
    problem: str = ""


def import_peer(name: str, pip_hint: str, also: tuple[str, ...] = ()) -> Peer:
    """Import module ``name`` and the modules in ``also`` it needs, or say why that failed."""
    try:
        module = importlib.import_module(name)
        for extra in also:
            importlib.import_module(extra)
        return Peer(name, module)
    except ImportError as error:  # includes a missing shared library behind a Python extension
        message = f"not installed (`{pip_hint}`)"
        if "libusb" in str(error):
            message = f"import failed: {error} (on Debian/Ubuntu: `apt-get install libusb-1.0-0`)"
        return Peer(name, None, message)
    except OSError as error:
        hint = " (on Debian/Ubuntu: `apt-get install libusb-1.0-0`)" if "libusb" in str(error) else ""
        return Peer(name, None, f"import failed: {error}{hint}")


def version_of(module: ModuleType | None) -> str:
    return str(getattr(module, "__version__", "?")) if module is not None else "not installed"


# ----------------------------------------------------------------------------------------------- rows


@dataclass
class Row:
    query: str
    library: str
    timing: Timing | None
    agreement: str  # how this library's answer compares with headfields'; or why the row is empty
    reference: bool = False  # the headfields row the rows below it are compared with


def max_abs(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.max(np.abs(a - b))) if a.size else 0.0


def hit_agreement(hf_hit: np.ndarray, peer_hit: np.ndarray) -> str:
    differ = int(np.count_nonzero(hf_hit != peer_hit))
    return f"hit masks differ on {differ} of {hf_hit.size} rays ({100 * differ / hf_hit.size:.4f} %)"


def trimesh_mesh(trimesh: ModuleType, w: Workload) -> Any:
    return trimesh.Trimesh(w.vertices.double().numpy(), w.faces.numpy(), process=False)


def closest_point_rows(w: Workload, device: torch.device, args: argparse.Namespace, peers: dict[str, Peer]) -> list[Row]:
    n = w.points.shape[0]
    mesh = TriangleMesh(w.vertices.to(device), w.faces.to(device))
    points = w.points.to(device)
    # The peers compute no sign: the compared call skips it too; the default (signed) call is timed beside it.
    calls = {
        "unsigned": synchronized(device, lambda: closest_point(mesh, points, signed=False)),
        "signed": synchronized(device, lambda: closest_point(mesh, points)),
    }
    o3d = peers["open3d"].module
    if o3d is not None:
        scene = open3d_scene(o3d, w, args.threads)
        query = o3d.core.Tensor.from_numpy(w.points.numpy())
        nthreads = args.threads or 0
        calls["open3d"] = lambda: scene.compute_closest_points(query, nthreads=nthreads)
    with torch.no_grad():
        measured = measure_together(calls, n, args.repeats)
    (timing, hf), (signed_timing, signed) = measured["unsigned"], measured["signed"]
    hf_distance = hf.distance.cpu().numpy()
    # Where a shared edge or vertex is closest, either call may report either face; the distance is the same.
    same_face = 100 * float((signed.face == hf.face).float().mean())
    signed_agreement = f"max abs Δdistance {max_abs(signed.distance.cpu().numpy(), hf_distance):.2e}; same face {same_face:.3f} %"
    rows = [
        Row(CLOSEST, f"headfields ({device.type}, signed=False)", timing, f"all hit: {bool(hf.hit.all())}", reference=True),
        Row(CLOSEST, f"headfields ({device.type}, signed: default)", signed_timing, signed_agreement),
    ]

    if o3d is None:
        rows.append(Row(CLOSEST, O3D_NAME, None, peers["open3d"].problem))
    else:
        timing, out = measured["open3d"]
        distance = np.linalg.norm(w.points.numpy() - out["points"].numpy(), axis=-1)
        rows.append(Row(CLOSEST, O3D_NAME, timing, f"max abs Δdistance {max_abs(hf_distance, distance):.2e}"))

    trimesh = peers["trimesh"].module
    if trimesh is None:
        rows.append(Row(CLOSEST, "trimesh.proximity", None, peers["trimesh"].problem))
    else:
        m = min(n, args.trimesh_points)
        tm = trimesh_mesh(trimesh, w)
        query64 = w.points[:m].double().numpy()
        timing, (_, distance, _) = measure(
            lambda: trimesh.proximity.closest_point(tm, query64),
            m,
            args.repeats,
            warmup=lambda: trimesh.proximity.closest_point(tm, query64[:256]),
        )
        agreement = f"max abs Δdistance {max_abs(hf_distance[:m], distance):.2e}"
        rows.append(Row(CLOSEST, f"trimesh.proximity (first {m:,})", timing, agreement))
    return rows


def ray_rows(w: Workload, device: torch.device, args: argparse.Namespace, peers: dict[str, Peer]) -> list[Row]:
    n = w.origins.shape[0]
    mesh = TriangleMesh(w.vertices.to(device), w.faces.to(device))
    origins, dirs = w.origins.to(device), w.dirs.to(device)
    calls = {"headfields": synchronized(device, lambda: ray_intersect(mesh, origins, dirs))}
    o3d = peers["open3d"].module
    if o3d is not None:
        scene = open3d_scene(o3d, w, args.threads)
        rays = o3d.core.Tensor.from_numpy(torch.cat([w.origins, w.dirs], dim=-1).numpy())
        nthreads = args.threads or 0
        calls["open3d"] = lambda: scene.cast_rays(rays, nthreads=nthreads)
    with torch.no_grad():
        measured = measure_together(calls, n, args.repeats)
    timing, hf = measured["headfields"]
    hf_hit, hf_t, hf_face = hf.hit.cpu().numpy(), hf.t.cpu().numpy(), hf.face.cpu().numpy()
    rows = [Row(RAY, f"headfields ({device.type})", timing, f"{100 * hf_hit.mean():.2f} % of rays hit", reference=True)]

    if o3d is None:
        rows.append(Row(RAY, O3D_NAME, None, peers["open3d"].problem))
    else:
        timing, out = measured["open3d"]
        t = out["t_hit"].numpy()
        hit = np.isfinite(t)
        both = hit & hf_hit
        same_face = np.mean(out["primitive_ids"].numpy()[both].astype(np.int64) == hf_face[both])
        agreement = (
            f"{hit_agreement(hf_hit, hit)}; max abs Δt {max_abs(hf_t[both], t[both]):.2e}; same face {100 * same_face:.3f} %"
        )
        rows.append(Row(RAY, O3D_NAME, timing, agreement))

    trimesh = peers["trimesh"].module
    if trimesh is None:
        rows.append(Row(RAY, "trimesh RayMeshIntersector", None, peers["trimesh"].problem))
    else:
        m = min(n, args.trimesh_rays)
        # The rtree + numpy intersector, not trimesh's optional Embree one.
        intersector = trimesh.ray.ray_triangle.RayMeshIntersector(trimesh_mesh(trimesh, w))
        o64, d64 = w.origins[:m].double().numpy(), w.dirs[:m].double().numpy()
        timing, face = measure(
            lambda: intersector.intersects_first(o64, d64),
            m,
            args.repeats,
            warmup=lambda: intersector.intersects_first(o64[:64], d64[:64]),
        )
        rows.append(Row(RAY, f"trimesh RayMeshIntersector (first {m:,})", timing, hit_agreement(hf_hit[:m], face >= 0)))
    return rows


def knn_rows(w: Workload, device: torch.device, args: argparse.Namespace, peers: dict[str, Peer]) -> list[Row]:
    n = w.points.shape[0]
    mesh = TriangleMesh(w.vertices.to(device), w.faces.to(device))
    points = w.points.to(device)
    calls = {"headfields": synchronized(device, lambda: knn_vertices(mesh, points, KNN_K))}
    scipy = peers["scipy"].module
    workers = args.threads or -1
    if scipy is not None:
        tree = scipy.spatial.cKDTree(w.vertices.double().numpy())
        query = w.points.double().numpy()
        calls["scipy"] = lambda: tree.query(query, k=KNN_K, workers=workers)
    with torch.no_grad():
        measured = measure_together(calls, n, args.repeats)
    timing, hf = measured["headfields"]
    rows = [Row(KNN, f"headfields ({device.type})", timing, "—", reference=True)]

    if scipy is None:
        rows.append(Row(KNN, "scipy cKDTree", None, peers["scipy"].problem))
        return rows
    timing, (distance, index) = measured["scipy"]
    hf_index = hf.index.cpu().numpy()
    same = np.mean(np.all(hf_index == index, axis=1))
    agreement = f"max abs Δdistance {max_abs(hf.distance.cpu().numpy(), distance):.2e}; same {KNN_K} indices {100 * same:.3f} %"
    rows.append(Row(KNN, f"scipy cKDTree (workers={workers})", timing, agreement))
    return rows


def open3d_scene(o3d: ModuleType, w: Workload, threads: int | None) -> Any:
    scene = o3d.t.geometry.RaycastingScene(nthreads=threads or 0)
    vertices = o3d.core.Tensor.from_numpy(w.vertices.numpy())
    faces = o3d.core.Tensor.from_numpy(w.faces.to(torch.int32).numpy().astype(np.uint32))
    scene.add_triangles(vertices, faces)
    return scene


# ----------------------------------------------------------------------------------------------- report

NOTES = """\
Notes on agreement: headfields and open3d both answer in float32, so their distances and ray parameters differ
by float32 rounding (ray t grows with the distance travelled). trimesh answers in float64 but, when the two
best faces' squared distances are within `trimesh.tol.merge` (1e-8), returns the one whose normal faces the
query, which can be up to about 1e-8 / (2 * distance) farther than the true closest point."""


def format_rate(per_second: float) -> str:
    for scale, unit in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if per_second >= scale:
            return f"{per_second / scale:.2f} {unit}/s"
    return f"{per_second:.1f} /s"


def markdown_table(rows: list[Row]) -> str:
    """One block per query; the speed-up is headfields' throughput over the row's (above 1: headfields faster)."""
    lines = [
        "| query | library | queries | median time | throughput | headfields speed-up | agreement with headfields |",
        "|---|---|---:|---:|---:|---:|---|",
    ]
    reference: Timing | None = None
    for row in rows:
        if row.reference:
            reference = row.timing
        if row.timing is None:
            lines.append(f"| {row.query} | {row.library} | — | — | — | — | {row.agreement} |")
            continue
        speedup = "1.00×" if reference is None else f"{reference.throughput / row.timing.throughput:.2f}×"
        lines.append(
            f"| {row.query} | {row.library} | {row.timing.queries:,} | {1e3 * row.timing.median_s:.1f} ms "
            f"| {format_rate(row.timing.throughput)} | {speedup} | {row.agreement} |"
        )
    return "\n".join(lines)


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def load_average() -> str:
    """The 1-minute load average: other work on the machine makes every timing here slower."""
    return f"{os.getloadavg()[0]:.2f}" if hasattr(os, "getloadavg") else "unknown"


def machine_info(device: torch.device, peers: dict[str, Peer], args: argparse.Namespace, load: str) -> str:
    import warp as wp

    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    gpu = f", GPU {torch.cuda.get_device_name(device)}" if device.type == "cuda" else ""
    return "\n".join(
        [
            f"- machine: {cpu_model()}, {os.cpu_count()} logical CPUs ({usable} usable by this process){gpu}; "
            f"{platform.platform()}; "
            f"1-minute load average before the run {load}",
            f"- python {platform.python_version()}, torch {torch.__version__}, warp {wp.__version__}, numpy {np.__version__}, "
            + ", ".join(f"{name} {version_of(peer.module)}" for name, peer in peers.items()),
            f"- headfields on {device}; threads: {args.threads or 'all usable'}; median of {args.repeats} runs after one warm-up",
            f"- points: sample_near_surface(thickness = {SHELL_FRACTION} d); rays: origins on a sphere of radius "
            f"{RAY_ORIGIN_RADIUS} about the box centre, aimed at points within ±{RAY_TARGET_FRACTION} d of the surface",
            "- headfields speed-up = headfields throughput / that library's throughput (above 1: headfields is faster)",
        ]
    )


def mesh_heading(w: Workload) -> str:
    return f"### {w.name}: {w.vertices.shape[0]} vertices, {w.faces.shape[0]} faces, bounding-box diagonal d = {w.diagonal:.3f}"


def speedup(rows: list[Row], query: str, peer: str) -> str:
    """headfields' throughput over ``peer``'s for ``query`` (the reference row's), or — where either is missing."""
    mine = next((r.timing for r in rows if r.query == query and r.reference), None)
    theirs = next((r.timing for r in rows if r.query == query and r.library.startswith(peer)), None)
    return "—" if mine is None or theirs is None else f"{mine.throughput / theirs.throughput:.2f}×"


def summary_table(results: list[tuple[Workload, list[Row]]]) -> str:
    """One line per mesh: the headfields speed-ups the issue's targets are about."""
    lines = [
        "| mesh | vertices | faces | closest point × open3d (signed=False) | knn × scipy | first hit × Embree |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for w, rows in results:
        ratios = [speedup(rows, CLOSEST, O3D_NAME), speedup(rows, KNN, "scipy"), speedup(rows, RAY, O3D_NAME)]
        lines.append(f"| {w.name} | {w.vertices.shape[0]:,} | {w.faces.shape[0]:,} | " + " | ".join(ratios) + " |")
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------- main


def limit_threads(threads: int | None) -> None:
    """Confine this process (Warp's launch pool, Embree, torch, scipy) to ``threads`` cores."""
    if threads is None:
        return
    if threads < 1:
        raise SystemExit(f"--threads: expected a positive integer, got {threads}")
    if hasattr(os, "sched_setaffinity"):
        cores = sorted(os.sched_getaffinity(0))[:threads]
        os.sched_setaffinity(0, set(cores))
    else:
        print("note: cannot set CPU affinity on this platform; headfields will use every core")
    torch.set_num_threads(threads)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--points", type=int, default=1_000_000, help="queries (points and rays) per call")
    parser.add_argument("--repeats", type=int, default=5, help="timed calls per measurement (the median is reported)")
    parser.add_argument("--device", default="cpu", help="device for headfields: cpu, or cuda if available (peers run on the CPU)")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads for every library (default: all usable cores)")
    parser.add_argument("--trimesh-points", type=int, default=20_000, help="closest-point queries given to trimesh")
    parser.add_argument(
        "--meshes",
        nargs="+",
        default=list(MESHES),
        choices=list(MESHES),
        metavar="MESH",
        help=f"meshes to run: {', '.join(MESHES)}",
    )
    parser.add_argument("--trimesh-rays", type=int, default=2_000, help="rays given to trimesh (its ray query is slowest)")
    args = parser.parse_args()
    if args.points < 1 or args.repeats < 1:
        parser.error("--points and --repeats must be positive")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        parser.error("--device cuda: torch sees no CUDA device on this machine")
    return args


def main() -> None:
    args = parse_args()
    limit_threads(args.threads)
    device = torch.device(args.device)
    peers = {
        "open3d": import_peer("open3d", 'pip install open3d-cpu  # or: pip install -e ".[bench]"'),
        "trimesh": import_peer("trimesh", "pip install trimesh rtree", also=("rtree", "trimesh.ray.ray_triangle")),
        "scipy": import_peer("scipy", "pip install scipy", also=("scipy.spatial",)),
    }
    load = load_average()
    started = time.perf_counter()
    print(machine_info(device, peers, args, load), flush=True)
    results = []
    for name in args.meshes:
        workload = make_workload(name, args.points)
        rows = [row for bench in (closest_point_rows, ray_rows, knn_rows) for row in bench(workload, device, args, peers)]
        results.append((workload, rows))
        print(f"\n{mesh_heading(workload)}\n\n{markdown_table(rows)}", flush=True)
    print("\n### Summary: headfields speed-up per mesh (above 1: headfields is faster)\n")
    print(summary_table(results))
    print()
    print(NOTES)
    print(f"\n(benchmark took {time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    main()
