"""Benchmark headfields' mesh queries against open3d (Embree), trimesh and scipy on a FLAME-size head.

Run it from the repository root::

    python benchmarks/mesh_queries.py                        # 1M queries, 5 repeats, CPU
    python benchmarks/mesh_queries.py --points 200000 --repeats 3 --threads 1
    python benchmarks/mesh_queries.py --device cuda          # headfields on the GPU, peers stay on the CPU

(``make bench`` installs the optional peers with ``pip install -e ".[bench]"`` first.)

What it measures, all on ``head_proxy()`` (5002 vertices, 10000 faces):

* closest point -- ``headfields.geometry.closest_point`` (float32, no autograd) vs open3d
  ``RaycastingScene.compute_closest_points`` vs ``trimesh.proximity.closest_point``. Query points are
  ``sample_near_surface`` with ``thickness = 0.1 * d``, where ``d`` is the diagonal of the mesh's
  axis-aligned bounding box: a shell of +-10 % of the head's size around the surface.
* first ray hit -- ``ray_intersect`` vs open3d ``cast_rays`` vs trimesh's (rtree + numpy)
  ``RayMeshIntersector.intersects_first``. Ray origins are uniform on a sphere of radius 3 about the
  bounding-box centre (the head is about 2.2 tall); each ray aims at a point within +-1 % of ``d`` of the
  surface, so most rays hit.
* k = 4 nearest vertices -- ``knn_vertices`` vs ``scipy.spatial.cKDTree.query(workers=-1)``.

Each call gets one untimed warm-up (Warp compiles its kernels and builds its BVH on first use, open3d commits
its Embree scene, trimesh builds its r-tree, scipy builds its KD-tree outside the timing), then ``--repeats``
timed calls; the table reports the median. Inputs are prepared in each library's native form beforehand, so
only the query call is timed. trimesh is pure Python/numpy and much slower, so it runs on the first
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

from headfields.geometry import TriangleMesh, closest_point, head_proxy, knn_vertices, ray_intersect, sample_near_surface

T = TypeVar("T")

SHELL_FRACTION = 0.1  # query points lie within +-10 % of the bounding-box diagonal of the surface
RAY_TARGET_FRACTION = 0.01  # rays aim at points within +-1 % of the diagonal of the surface
RAY_ORIGIN_RADIUS = 3.0
KNN_K = 4
CLOSEST, RAY, KNN = "closest point", "first ray hit", f"k={KNN_K} nearest vertices"
O3D_NAME = "open3d RaycastingScene (Embree)"


# ----------------------------------------------------------------------------------------------- inputs


@dataclass
class Workload:
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


def make_workload(n: int) -> Workload:
    """The head mesh, ``n`` query points in the shell and ``n`` rays from a sphere around the head."""
    vertices, faces = head_proxy()
    mesh = TriangleMesh(vertices, faces)
    centre, diagonal = bounding_box(vertices)
    points = sample_near_surface(mesh, n, thickness=SHELL_FRACTION * diagonal, seed=0)
    targets = sample_near_surface(mesh, n, thickness=RAY_TARGET_FRACTION * diagonal, seed=2)
    origins = centre + RAY_ORIGIN_RADIUS * random_unit_vectors(n, seed=4)
    dirs = torch.nn.functional.normalize(targets - origins, dim=-1)
    return Workload(vertices, faces, diagonal, points.contiguous(), origins.contiguous(), dirs.contiguous())


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
    with torch.no_grad():
        timing, hf = measure(synchronized(device, lambda: closest_point(mesh, points)), n, args.repeats)
    hf_distance = hf.distance.cpu().numpy()
    rows = [Row(CLOSEST, f"headfields ({device.type})", timing, f"all hit: {bool(hf.hit.all())}")]

    o3d = peers["open3d"].module
    if o3d is None:
        rows.append(Row(CLOSEST, O3D_NAME, None, peers["open3d"].problem))
    else:
        scene = open3d_scene(o3d, w, args.threads)
        query = o3d.core.Tensor.from_numpy(w.points.numpy())
        nthreads = args.threads or 0
        timing, out = measure(lambda: scene.compute_closest_points(query, nthreads=nthreads), n, args.repeats)
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
    with torch.no_grad():
        timing, hf = measure(synchronized(device, lambda: ray_intersect(mesh, origins, dirs)), n, args.repeats)
    hf_hit, hf_t, hf_face = hf.hit.cpu().numpy(), hf.t.cpu().numpy(), hf.face.cpu().numpy()
    rows = [Row(RAY, f"headfields ({device.type})", timing, f"{100 * hf_hit.mean():.2f} % of rays hit")]

    o3d = peers["open3d"].module
    if o3d is None:
        rows.append(Row(RAY, O3D_NAME, None, peers["open3d"].problem))
    else:
        scene = open3d_scene(o3d, w, args.threads)
        rays = o3d.core.Tensor.from_numpy(torch.cat([w.origins, w.dirs], dim=-1).numpy())
        nthreads = args.threads or 0
        timing, out = measure(lambda: scene.cast_rays(rays, nthreads=nthreads), n, args.repeats)
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
    with torch.no_grad():
        timing, hf = measure(synchronized(device, lambda: knn_vertices(mesh, points, KNN_K)), n, args.repeats)
    rows = [Row(KNN, f"headfields ({device.type})", timing, "—")]

    scipy = peers["scipy"].module
    if scipy is None:
        rows.append(Row(KNN, "scipy cKDTree", None, peers["scipy"].problem))
        return rows
    tree = scipy.spatial.cKDTree(w.vertices.double().numpy())
    query = w.points.double().numpy()
    workers = args.threads or -1
    timing, (distance, index) = measure(lambda: tree.query(query, k=KNN_K, workers=workers), n, args.repeats)
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
        if row.library.startswith("headfields"):
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


def machine_info(device: torch.device, peers: dict[str, Peer], args: argparse.Namespace, w: Workload, load: str) -> str:
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
            f"- mesh: head_proxy(), {w.vertices.shape[0]} vertices, {w.faces.shape[0]} faces, "
            f"bounding-box diagonal d = {w.diagonal:.3f}",
            f"- points: sample_near_surface(thickness = {SHELL_FRACTION} d); rays: origins on a sphere of radius "
            f"{RAY_ORIGIN_RADIUS} about the box centre, aimed at points within ±{RAY_TARGET_FRACTION} d of the surface",
            "- headfields speed-up = headfields throughput / that library's throughput (above 1: headfields is faster)",
        ]
    )


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
    workload = make_workload(args.points)

    load = load_average()
    started = time.perf_counter()
    rows = [row for bench in (closest_point_rows, ray_rows, knn_rows) for row in bench(workload, device, args, peers)]
    print(machine_info(device, peers, args, workload, load))
    print()
    print(markdown_table(rows))
    print()
    print(NOTES)
    print(f"\n(benchmark took {time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    main()
