"""The Gaussian rasteriser's frame time at 128², 256² and 512², forward alone and with the backward pass, against a
peer in the same run: gsplat's ``rasterization`` on CUDA (``rasterize_gaussians(..., backend="gsplat")``, where gsplat
is installed: forward and forward + backward, the images compared too, and the speed ratio;
tests/unit/renderers/test_gaussian_rasterizer.py compares the gradients), elsewhere a dense torch rasteriser (every
Gaussian at every pixel, the same blending) at 128², which shows what the tiles save. Forward + backward also
with the other blend kernels (``renderers.gaussian_blend.KERNEL``): on CUDA the per-pixel pair beside the default
block-cooperative one; on the CPU, with ``--cpu-blocks`` (Warp's experimental ``enable_cpu_blocks``, set by this
script), the cooperative pair beside the CPU's per-pixel one.

    python benchmarks/gaussians.py                       # the device torch sees (CUDA when there is one)
    python benchmarks/gaussians.py --run outputs/gaussians   # a trained gaussian_avatar run's Gaussians
    python benchmarks/gaussians.py --device cpu --per-face 2
    python benchmarks/gaussians.py --sizes 512 --per-face 10 --json outputs/gaussians.json   # the figures, by size
    python benchmarks/gaussians.py --device cpu --cpu-blocks --per-face 1 --count 5000 --sizes 128  # fibers

The scene: a trained run's Gaussians on its first held-out frame, or (no ``--run``) ``--per-face`` Gaussians on each
face of the synthetic FLAME head, spread over the face, a third of its size, opacities in [0.3, 1], SH of degree 3:
a trained avatar's count and coverage. Times are medians of ``--repeats`` after a warm-up.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
from collections.abc import Iterator
from pathlib import Path

import torch
import warp as wp
from torch import Tensor

from headfields.cameras import PinholeCameras, resized_cameras
from headfields.heads import tracked_head
from headfields.renderers import gaussian_blend, rasterize_gaussians
from headfields.renderers.gaussians import project_gaussians, sh_colors

from avatars import median_seconds

SIZES = (128, 256, 512)
DENSE_SIZE = 128  # the dense peer's image: every Gaussian at every pixel grows as pixels x Gaussians


def synthetic_scene(per_face: int, device: torch.device):
    """Gaussians on the synthetic head's first held-out frame, and that frame's camera."""
    from headfields.deformers.gaussian_binding import face_frames, matrix_to_quaternion
    from headfields.synthetic import synthetic_subject

    subject = synthetic_subject(device=device)
    head = tracked_head(subject.parametric, subject.eval)
    frames = face_frames(head.vertices[0], head.faces)
    g = torch.Generator().manual_seed(0)
    f = head.faces.shape[0]
    parent = torch.arange(f).repeat_interleave(per_face)
    n = len(parent)
    local = (torch.rand(n, 3, generator=g) - 0.5) * torch.tensor([1.0, 1.0, 0.1])
    k = frames.scale[parent].cpu()
    means = frames.origin[parent].cpu() + k[:, None] * torch.einsum("nij,nj->ni", frames.rotation[parent].cpu(), local)
    quats = matrix_to_quaternion(frames.rotation[parent].cpu())
    scales = k[:, None] * torch.tensor([0.35, 0.35, 0.05]) * (0.5 + torch.rand(n, 1, generator=g))
    opacities = 0.3 + 0.7 * torch.rand(n, generator=g)
    sh = torch.randn(n, 16, 3, generator=g) * torch.tensor([1.0] + [0.1] * 15)[None, :, None]
    scene = [t.to(device).contiguous() for t in (means, quats, scales, opacities, sh)]
    return scene, subject.eval.cameras.select(torch.tensor([0])).to(device)


def run_scene(path: str, device: torch.device):
    from headfields.apps.runs import load_run

    run = load_run(path, device)
    head = run.eval_head
    posed = run.model.posed(head, 0)
    scene = [t.detach().contiguous() for t in (posed.means, posed.quats, posed.scales, posed.opacities, posed.sh)]
    return scene, run.subject.eval.cameras.select(torch.tensor([0])).to(device)


def dense_rasterize(scene: list[Tensor], cameras: PinholeCameras) -> Tensor:
    """Every Gaussian at every pixel, sorted by depth globally, composited with cumulative products: what plain torch
    without tiles does (3DGS's thresholds, no early stop: it changes nothing visible at this size)."""
    means, quats, scales, opacities, sh = scene
    proj = project_gaussians(means, quats, scales, cameras, 0)
    colors = sh_colors(sh, means, cameras.camera_to_world[0, :3, 3])
    order = torch.argsort(proj.depths)
    keep = order[proj.radii[order] > 0]
    rows, cols = torch.meshgrid(torch.arange(cameras.height), torch.arange(cameras.width), indexing="ij")
    pixels = torch.stack([cols, rows], -1).reshape(-1, 2).to(means) + 0.5
    image = []
    for chunk in pixels.split(1024):
        d = proj.means2d[keep][None] - chunk[:, None]
        a, b, c = proj.conics[keep].unbind(-1)
        power = -0.5 * (a * d[..., 0] ** 2 + c * d[..., 1] ** 2) - b * d[..., 0] * d[..., 1]
        alpha = torch.clamp(opacities[keep] * torch.exp(power), max=0.99)
        alpha = torch.where((alpha >= 1 / 255) & (power <= 0), alpha, 0.0)
        before = torch.cumprod(torch.cat([torch.ones_like(alpha[:, :1]), 1 - alpha[:, :-1]], 1), 1)
        image.append((alpha * before) @ colors[keep])
    return torch.cat(image).reshape(cameras.height, cameras.width, 3)


def gsplat_render(scene: list[Tensor], cameras: PinholeCameras) -> Tensor:
    """The same frame through gsplat's ``rasterization``: our rasteriser's ``backend="gsplat"``."""
    return rasterize_gaussians(*scene, cameras, validate=False, backend="gsplat").image


@contextlib.contextmanager
def blend_kernels(kernel: str) -> Iterator[None]:
    """``gaussian_blend.KERNEL`` (the library's public module setting) set to ``kernel`` within the block."""
    before, gaussian_blend.KERNEL = gaussian_blend.KERNEL, kernel
    try:
        yield
    finally:
        gaussian_blend.KERNEL = before


def other_kernels(device: torch.device) -> str | None:
    """The blend kernels the default does not take on ``device``, where they can run there (None: none)."""
    if gaussian_blend.cooperative(device):
        return "per-pixel"
    return "cooperative" if device.type == "cpu" and wp.config.enable_cpu_blocks else None


def measure(scene: list[Tensor], cameras: PinholeCameras, repeats: int, gsplat: bool, figures: dict | None = None) -> str:
    """One table row: our forward and forward + backward at the cameras' size (and with the other blend kernels), and
    the peer's forward (gsplat's also with its backward). ``figures``: filled with the row's seconds by name."""
    device = scene[0].device
    leaves = [t.clone().requires_grad_() for t in scene]

    def forward() -> None:
        with torch.no_grad():
            rasterize_gaussians(*scene, cameras, validate=False)

    def both(backend: str = "warp") -> None:
        rasterize_gaussians(*leaves, cameras, validate=False, backend=backend).image.sum().backward()

    ours, trained = median_seconds(forward, repeats, device), median_seconds(both, repeats, device)
    other, other_cell = other_kernels(device), "—"
    if other is not None:
        with blend_kernels(other):
            other_cell = f"{1e3 * median_seconds(both, repeats, device):.1f} ms ({other})"
    size = cameras.width
    peer, peer_seconds, peer_trained, peer_both = "—", None, "", None
    if gsplat:
        peer_both = median_seconds(lambda: both("gsplat"), repeats, device)
        peer_trained = f" ({1e3 * peer_both:.1f} ms with backward)"
    with torch.no_grad():
        mine = rasterize_gaussians(*scene, cameras).image
        if gsplat:
            peer_seconds = median_seconds(lambda: gsplat_render(scene, cameras), repeats, device)
            peer = f"gsplat (max |Δ| {float((gsplat_render(scene, cameras) - mine).abs().max()):.2e})"
        elif size == DENSE_SIZE:
            peer_seconds = median_seconds(lambda: dense_rasterize(scene, cameras), 1, device)
            peer = f"dense torch (max |Δ| {float((dense_rasterize(scene, cameras) - mine).abs().max()):.2e})"
    if peer_seconds is None:
        ratio = "—"
    else:  # said the way it reads: 0.2x "faster" is 5x slower
        ratio = f"{peer_seconds / ours:.1f}× faster" if peer_seconds >= ours else f"{ours / peer_seconds:.1f}× slower"
    peer_cell = "—" if peer_seconds is None else f"{1e3 * peer_seconds:.1f} ms{peer_trained}"
    if figures is not None:
        figures.update(forward_s=ours, forward_backward_s=trained, frames_per_s=1 / ours)
        if gsplat:
            figures.update(gsplat_forward_s=peer_seconds, gsplat_forward_backward_s=peer_both)
            figures.update(forward_backward_over_gsplat=trained / peer_both)
    timing = f"| {size}² | {1e3 * ours:.1f} ms | {1 / ours:.0f} | {1e3 * trained:.1f} ms | {other_cell} |"
    return f"{timing} {peer} | {peer_cell} | {ratio} |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--run", default=None, help="a trained gaussian_avatar run (default: a synthetic scene)")
    parser.add_argument("--per-face", type=int, default=3, help="Gaussians a face of the synthetic scene")
    parser.add_argument("--count", type=int, default=None, help="a random subset of this many of the scene's Gaussians")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--sizes", type=int, nargs="+", default=list(SIZES), help="image sides, pixels")
    parser.add_argument("--cpu-blocks", action="store_true", help="Warp's CPU blocks on: time the cooperative kernels")
    parser.add_argument("--json", default=None, help="also write the figures, by image size, to this file")
    args = parser.parse_args()
    wp.config.enable_cpu_blocks = args.cpu_blocks or wp.config.enable_cpu_blocks  # a script's choice for its process
    device = torch.device(args.device)
    scene, camera = run_scene(args.run, device) if args.run else synthetic_scene(args.per_face, device)
    if args.count is not None:
        keep = torch.randperm(len(scene[0]), generator=torch.Generator().manual_seed(0))[: args.count].to(device)
        scene = [t[keep] for t in scene]
    has_gsplat = device.type == "cuda" and importlib.util.find_spec("gsplat") is not None
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"{len(scene[0]):,} Gaussians, {name}, median of {args.repeats}; gsplat: {'yes' if has_gsplat else 'not run'}\n")
    print("| size | forward | frames/s | forward + backward | other kernels' | peer | peer forward | ours vs peer |")
    print("|---|---:|---:|---:|---:|---|---:|---:|")
    figures = {"gaussians": len(scene[0]), "device": name, "gsplat": has_gsplat, "sizes": {}}
    for size in args.sizes:
        row = figures["sizes"][size] = {}
        print(measure(scene, resized_cameras(camera, size, size), args.repeats, has_gsplat, row), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=1) + "\n")


if __name__ == "__main__":
    main()
