"""Every paper model and every mix of primitives trained on the same synthetic video for the same time, in one
table; and the cost per sample of each deformer and encoder.

    python benchmarks/compare.py                     # 5 minutes per model
    python benchmarks/compare.py --quick             # 0.5 min per model, 3 held-out frames, fewer samples
    python benchmarks/compare.py --only INSTA mix    # INSTA (a key: that model alone) and the mixes
    python benchmarks/compare.py --only anchored     # the models whose key holds it
    python benchmarks/compare.py --only paper        # the paper models alone (or: mix)
    python benchmarks/compare.py --skip-models       # the primitive tables alone
    python benchmarks/compare.py --only paper --baseline ../old   # each model also from another checkout, ratios

Models: the paper models, GaussianAvatars (its own steps: one whole frame a step) and the library's mixes
(``headfields.models.mixes``), each in a child process of its own
(this script with ``--only-exact``; the parent loads the default FLAME video once and hands the frames over in a
file), with the batch sizes of its own benchmark or mix, so
its peak memory is its own: on the CPU the growth of the resident set over training, the final evaluation and
the rays/s renders (the child's peak ``ru_maxrss`` less its resident set before training), on
CUDA the growth of ``torch.cuda.max_memory_allocated`` over the same span (torch's allocations:
not the BVHs Warp allocates itself). The evaluation renders 8192-ray chunks, more than any training batch here,
so the figure can be set by rendering rather than training.
Printed: held-out PSNR / SSIM / L1 / LPIPS over whole images and over the head's pixels (LPIPS where the AlexNet
weights are in torch's hub cache, else "—" and the reason; evaluation weights; all test frames,
``--quick`` an even spread of QUICK_EVAL_FRAMES of them: a FrameSet sliced here, the loop's final evaluation
renders every frame it is given), iterations, training seconds, it/s, rendering rays/s, the seconds a 512 x 512
frame takes to render (not with ``--quick``), peak memory, and for
each mix its ΔPSNR and it/s ratio against its closest paper model (its peer) in the same run.

Primitives: forward (no gradients) and forward + backward (gradients for the weights, points and directions) of each
deformer and encoder, on N points near the video's posed heads (mesh vertices plus noise, spread over
FRAMES_PER_HEAD frames), each case warmed up once, then the median of ``repeats`` runs; in ns per sample and as
a ratio to a reference measured in the same run (RigidDeformer, FrequencyEncoding). The UV-CNN vertex features
are computed once per frame, not per sample: their cost is reported per frame, in a table of its own. Chains:
Portrait360's and those of the mixes (INSTA's, MonoAvatar's and the hyper NeuS avatar's HyperDeformer are single
deformers listed above).

Writes ``out/results.json``; renders and metrics of each model under ``out/<model>/``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import warp
from torch import Tensor, nn

from headfields.data import FrameSet, Subject, load_insta_dataset
from headfields.deformers import Deformer, DeformerChain, RigidDeformer, SkinningDeformer, TriangleFrameDeformer
from headfields.encoders import (
    DisplacementVertexFeatures,
    FrequencyEncoding,
    HashGrid,
    MeshAnchoredConfig,
    MeshAnchoredEncoder,
    SphericalHarmonics,
    UVUNetConfig,
)
from headfields.encoders.mesh_anchored import MONOAVATAR_POSITION_FREQUENCIES
from headfields.heads import tracked_head
from headfields.kernels import num_cpu_threads
from headfields.models import hyper_neus, insta, monoavatar
from headfields.models.gaussian_avatars import GaussianAvatar
from headfields.models.hyper_neus import HyperNeusAvatar, HyperNeusConfig
from headfields.models.insta import INSTA_HASH_GRID, InstaConfig
from headfields.models.mixes import MIXES
from headfields.models.monoavatar import MonoAvatar, MonoAvatarConfig
from headfields.models.portrait360 import Portrait360, Portrait360Config
from headfields.models.registry import MODELS
from headfields.parametric import Head, ParametricModel, load_model
from headfields.synthetic import cached_synthetic_video
from headfields.training import TrainingConfig, evenly_spread

from avatars import FRAME_SIZE, median_seconds, train_variant

DEFAULT_MINUTES, QUICK_MINUTES = 5.0, 0.5
QUICK_EVAL_FRAMES = 3  # held-out frames evaluated by --quick, spread evenly over the test split
POINTS, QUICK_POINTS = 2**16, 2**12  # samples per primitive call
REPEATS, QUICK_REPEATS = 5, 3
RENDER_REPEATS, QUICK_RENDER_REPEATS = 3, 1
FRAMES_PER_HEAD = 4  # training frames the primitives' samples spread over (a batch of the per-frame models)
NOISE = 0.01  # metres: standard deviation of the samples around the mesh vertices
ANCHORED_FEATURES = 64  # MonoAvatar's per-vertex feature width
MIB = 2**20

ModelBuilder = Callable[[ParametricModel, FrameSet], nn.Module]


@dataclass(frozen=True)
class Entry:
    """A model of the comparison."""

    key: str  # the table's label, what --only matches and --only-exact names; also the folder under --out
    name: str  # a mix's description (its docstring's first line)
    kind: str  # "paper" | "mix"
    build: ModelBuilder
    rays_per_batch: int
    frames_per_batch: int | None
    peer: str | None = None  # a mix's closest paper model (its key)
    samples_per_batch: int | None = None  # a budget of trained samples a step (the rays then adapt to it)
    images: bool = False  # draws whole images (GaussianAvatar): its 512² frame's speed-up on its peer is printed


# The comparison's entries are the registry's methods trained by the loop (MonoNPHM and its prior have pipelines of
# their own: benchmarks/ablations/nphm.py), each with its CPU recipe and its training defaults' batch sizes, on the
# FLAME video (the portrait without its torso: static_regions skips it; no side or back views to balance). What
# this comparison adds to the list: the paper models' labels, the descriptions, GaussianAvatars' peer, and which
# method runs as a mix.
LABELS = {"insta": "INSTA", "monoavatar": "MonoAvatar", "portrait360": "Portrait360", "gaussian_avatar": "GaussianAvatars"}
DESCRIPTIONS = {
    "gaussian_avatar": "GaussianAvatars (Gaussians bound to the mesh)",
    "hyper_neus": "HyperNeus (MonoNPHM nets, no prior)",
}
# MonoNPHM's networks fitted per subject with its CPU recipe, without the paper's prior (which is learnt from scans):
# a mix, and the model the library's NeuS mixes are compared with (their peer "MonoNPHM").
AS_MIX = {"hyper_neus": "MonoNPHM"}
# A mix's peer paper (headfields.models.mixes) -> the entry run for it here.
PEER_ENTRIES = {paper: key for key, paper in AS_MIX.items()}
# Rasterised, measured against INSTA (ΔPSNR, it/s and 512² frame ratios).
PEERS = {"gaussian_avatar": "INSTA"}
# The synthetic video's tracking is exact: MonoAvatar's error correction would have nothing to correct.
RECIPE_CHANGES = {"monoavatar": {"error_correction": None}}


def _builder(method, changes: dict) -> ModelBuilder:
    """``method``'s model for a subject of the frames and parametric model given, with its CPU recipe changed."""
    recipe = dataclasses.replace(method.recipe("cpu"), **changes)
    return lambda parametric, frames: method.build(Subject(frames, frames, parametric, frames.root), recipe)


def registry() -> list[Entry]:
    entries = []
    for key, method in MODELS.items():
        if method.fit is not None:
            continue
        training = method.training_defaults("cpu")
        kind = "mix" if key in MIXES or key in AS_MIX else "paper"
        peer = PEERS.get(key)
        if key in MIXES:  # its peer paper, or the entry run for it here
            peer = PEER_ENTRIES.get(MIXES[key].peer, MIXES[key].peer)
        name = DESCRIPTIONS.get(key, MIXES[key].name if key in MIXES else LABELS.get(key, key))
        build = _builder(method, RECIPE_CHANGES.get(key, {}))
        batches = (training.rays_per_batch, training.frames_per_batch)
        label = LABELS.get(key, key)
        entries.append(Entry(label, name, kind, build, *batches, peer, training.samples_per_batch, method.rasterised))
    # The paper models first, the rasterised one after them, then the mixes (MonoNPHM's networks first), as the
    # tables read.
    return sorted(entries, key=lambda e: (e.key in MIXES, e.kind == "mix", e.images))


def select(entries: list[Entry], only: list[str] | None) -> list[Entry]:
    """The entries named by ``only``, case-insensitive: a key itself (``INSTA`` is INSTA alone), else the keys
    that hold it, or a kind ("paper", "mix"); all without ``only``."""
    if only is None:
        return entries
    keys = {e.key.lower() for e in entries}

    def named(e: Entry, w: str) -> bool:
        return e.key.lower() == w if w in keys else (w in e.key.lower() or w == e.kind)

    wanted = [w.lower() for w in only]
    picked = [e for e in entries if any(named(e, w) for w in wanted)]
    if not picked:
        raise SystemExit(f"--only: expected parts of the keys {[e.key for e in entries]}, got {only}")
    return picked


# ---------------------------------------------------------------------------------------------------- data


def load_video(quick: bool) -> tuple[FrameSet, FrameSet]:
    """The default FLAME video's training and held-out frames (with ``quick``, QUICK_EVAL_FRAMES of the latter)."""
    root = cached_synthetic_video()
    train_frames, eval_frames = load_insta_dataset(root, "train"), load_insta_dataset(root, "test")
    if quick:
        eval_frames = eval_frames.select(evenly_spread(QUICK_EVAL_FRAMES, len(eval_frames)))
    return train_frames, eval_frames


# -------------------------------------------------------------------------------------------------- models


def resident_bytes() -> int:
    """This process's resident set now (Linux), else its peak so far."""
    try:
        return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return peak_resident_bytes()


def peak_resident_bytes() -> int:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # macOS reports bytes, Linux KiB


def train_one(entry: Entry, args: argparse.Namespace) -> dict:
    """Train and measure one model in this process (the child's work), on the frames the parent saved."""
    device = torch.device(args.device)
    train_frames, eval_frames = load_video(args.quick)  # the cached video, read from its files (no pickles)
    parametric = load_model(train_frames.model_path, train_frames.model_type, device=device)
    torch.manual_seed(0)  # the same initial weights in every run
    model = entry.build(parametric, train_frames).to(device)
    config = TrainingConfig(
        # The clock alone stops every model (a fast one on a GPU would hit the default count), or --iterations.
        max_iterations=args.iterations or 10**9,
        max_minutes=None if args.iterations else args.minutes,
        budget="run" if args.iterations else "training",  # equal training time: the evaluation follows, every held-out frame
        log_every=100,
        eval_every=0,
        checkpoint_every=0,
    )
    if not isinstance(model, GaussianAvatar):  # the Gaussians: a whole frame a step, no ray settings
        batches = dict(rays_per_batch=entry.rays_per_batch, frames_per_batch=entry.frames_per_batch)
        config = dataclasses.replace(config, **batches, samples_per_batch=entry.samples_per_batch)
    repeats = QUICK_RENDER_REPEATS if args.quick else RENDER_REPEATS
    before = resident_bytes()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)  # the model's weights and the frames' tensors
    frame_size = None if args.quick else FRAME_SIZE
    metrics = train_variant(model, train_frames, eval_frames, args.out / entry.key, config, repeats, frame_size)
    if device.type == "cuda":  # torch's allocations only (Warp allocates its BVHs itself)
        metrics["peak_memory_bytes"] = torch.cuda.max_memory_allocated(device) - before
    else:
        metrics["peak_memory_bytes"] = max(peak_resident_bytes() - before, 0)
        metrics["peak_resident_bytes"] = peak_resident_bytes()  # the whole child: data, imports and all
    return metrics


def run_models(entries: list[Entry], args: argparse.Namespace) -> dict[str, dict]:
    """Each available entry trained in a child process; its metrics, or why there are none. With ``--baseline``,
    each also from that checkout right after (its own compare.py and package), under ``baseline`` in the result."""
    results = {}
    for entry in entries:
        results[entry.key] = {"name": entry.name, "kind": entry.kind, "peer": entry.peer}
        runs = [("", Path(__file__).resolve().parents[1], args.out)]
        if args.baseline is not None:
            runs.append(("baseline", args.baseline, args.out / "baseline"))
        for label, checkout, out in runs:
            path = out / entry.key / "result.json"
            path.unlink(missing_ok=True)
            script = checkout / "benchmarks" / "compare.py"
            command = [sys.executable, str(script), "--only-exact", entry.key, "--json", str(path)]
            command += ["--minutes", str(args.minutes), "--device", str(args.device), "--out", str(out)]
            command += ["--iterations", str(args.iterations)] if args.iterations else []
            command += ["--quick"] if args.quick else []
            budget = f"{args.iterations} iterations" if args.iterations else f"{args.minutes:g} min"
            print(f"\n== {entry.key}{f' ({label}: {checkout})' if label else ''}: {budget} ==", flush=True)
            env = {**os.environ, "PYTHONPATH": str(checkout)}
            code = subprocess.run(command, cwd=checkout, env=env).returncode
            metrics = json.loads(path.read_text()) if code == 0 else {"error": f"child exited with status {code}"}
            if label:
                results[entry.key][label] = metrics
            else:
                results[entry.key].update(metrics)
    return results


def print_baseline(entries: list[Entry], results: dict[str, dict]) -> None:
    """Each model against the same model from the ``--baseline`` checkout, trained right after it: steps a second,
    PSNR and, where both rendered one, the 512² frame's time."""
    print("\n| model | it/s | baseline it/s | ratio | PSNR | base PSNR | ΔPSNR | head ΔPSNR | 512² frame | baseline | ratio |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for e in entries:
        m, b = results[e.key], results[e.key].get("baseline", {})
        if "error" in m or "error" in b or not b:
            print(f"| {e.key} | {m.get('error', '')} | {b.get('error', '')} | | | | | | | | |")
            continue
        ratio = m["iterations_per_second"] / b["iterations_per_second"]
        head = "—" if m.get("psnr_head") is None else f"{m['psnr_head'] - b['psnr_head']:+.2f} dB"
        frame, base_frame = m.get("render_frame_seconds"), b.get("render_frame_seconds")
        frames = "| — | — | —"
        if frame and base_frame:
            frames = f"| {seconds_cell(frame)} | {seconds_cell(base_frame)} | {base_frame / frame:.2f}×"
        print(
            f"| {e.key} | {m['iterations_per_second']:.2f} | {b['iterations_per_second']:.2f} | {ratio:.2f}× | "
            f"{m['psnr']:.2f} dB | {b['psnr']:.2f} dB | {m['psnr'] - b['psnr']:+.2f} dB | {head} {frames} |"
        )


def seconds_cell(seconds: float) -> str:
    """A frame's time: milliseconds under a second (a rasteriser's), else seconds."""
    return f"{1e3 * seconds:.0f} ms" if seconds < 1 else f"{seconds:.1f} s"


def lpips_cell(m: dict, key: str) -> str:
    return "—" if m.get(key) is None else f"{m[key]:.4f}"


def print_models(entries: list[Entry], results: dict[str, dict]) -> None:
    """Two tables: image metrics over the full frame and over the head (the segmentation's non-background
    pixels), as paper tables report them; then speed, memory and each mix against its peer."""
    print("| model | kind | PSNR | SSIM | L1 | LPIPS | head PSNR | head SSIM | head L1 | head LPIPS |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for e in entries:
        m = results[e.key]
        if "error" in m:
            print(f"| {e.key} | {e.kind} | {m['error']} | | | | | | | |")
            continue
        head = (
            "| — | — | — "
            if m.get("psnr_head") is None
            else (f"| {m['psnr_head']:.2f} dB | {m['ssim_head']:.4f} | {m['l1_head']:.4f} ")
        )
        print(
            f"| {e.key} | {e.kind} | {m['psnr']:.2f} dB | {m['ssim']:.4f} | {m['l1']:.4f} | {lpips_cell(m, 'lpips')} "
            f"{head}| {lpips_cell(m, 'lpips_head')} |"
        )
    notes = {m.get("lpips_note") for m in results.values() if m.get("lpips_note")}
    for note in sorted(notes):
        print(f"\nLPIPS: {note}", end="")
    print("\n")
    frame = f"{FRAME_SIZE}² frame"
    print(f"| model | iterations | train s | it/s | render rays/s | {frame} | peak memory | ΔPSNR vs peer | it/s vs peer |")
    print("|---|---:|---:|---:|---:|---:|---:|---|---:|")
    for e in entries:
        m = results[e.key]
        if "error" in m:
            continue
        delta = ratio = "—"
        if e.peer is not None:
            peer = results.get(e.peer)
            if peer is None or "error" in peer:
                delta = f"{e.peer} not run"
            else:
                delta = f"{m['psnr'] - peer['psnr']:+.2f} dB vs {e.peer}"
                ratio = f"{m['iterations_per_second'] / peer['iterations_per_second']:.2f}×"
        frame = seconds_cell(m["render_frame_seconds"]) if "render_frame_seconds" in m else "—"
        print(
            f"| {e.key} | {m['iterations']} | {m['train_seconds']:.0f} | {m['iterations_per_second']:.2f} | "
            f"{m['render_rays_per_second']:,.0f} | {frame} | {m['peak_memory_bytes'] / MIB:,.0f} MiB | {delta} | {ratio} |"
        )
    for e in entries:
        peer = results.get(e.peer) if e.peer is not None else None
        m = results[e.key]
        if e.images and peer and "render_frame_seconds" in m and "render_frame_seconds" in peer:
            ratio = peer["render_frame_seconds"] / m["render_frame_seconds"]
            print(f"\n{e.key}: a {FRAME_SIZE}² frame {ratio:.1f}× faster than {e.peer}'s.", end="")
        if e.kind == "mix" and e.name != e.key:
            print(f"\n{e.key}: {e.name}.", end="")
    print()


# ---------------------------------------------------------------------------------------------- primitives


@dataclass
class Case:
    """One primitive call on the samples: ``call(points, dirs)`` returns the tensors a backward pass sums;
    ``per`` samples (or frames) share one call."""

    name: str
    call: Callable[[Tensor, Tensor], list[Tensor]]
    module: nn.Module
    per: int


def deformer_call(deformer: Deformer, head: Head, frame: Tensor, **extra: Tensor) -> Callable[[Tensor, Tensor], list[Tensor]]:
    def call(x: Tensor, dirs: Tensor) -> list[Tensor]:
        out = deformer(x, head, frame, dirs, **extra)
        return [out.points] + ([] if out.dirs is None else [out.dirs])

    return call


def chain_case(label: str, model: nn.Module, head: Head, frame: Tensor, n: int) -> Case:
    """The deformer chain of ``model``'s field, timed with the model's parameters."""
    chain = model.field.deformer
    name = f"{label} chain: {' → '.join(type(d).__name__ for d in chain.deformers)}"
    return Case(name, deformer_call(chain, head, frame), model, n)


def primitive_cases(
    parametric: ParametricModel, train_frames: FrameSet, head: Head, frame: Tensor, mixes: list[Entry], n: int
) -> tuple[list[Case], list[Case], list[Case]]:
    """Deformers (RigidDeformer first), encoders (FrequencyEncoding first) and per-frame primitives, each as the
    paper models configure them (taken from built models where a model holds one)."""
    device = head.vertices.device
    gen = torch.Generator().manual_seed(0)
    canonical = head.canonical_vertices[torch.randint(head.canonical_vertices.shape[0], (n,), generator=gen).to(device)]
    canonical = canonical + NOISE * torch.randn(n, 3, generator=gen).to(device)
    frames = len(train_frames)
    hyper_cpu = HyperNeusAvatar(parametric, frames, hyper_neus.cpu_config()).to(device)
    hyper_paper = HyperNeusAvatar(parametric, frames, HyperNeusConfig()).to(device)
    avatar = MonoAvatar(parametric, frames, monoavatar.cpu_config()).to(device)
    correction = avatar.correction.train()
    correction.set_step(correction.config.start_step + correction.config.window_steps)  # on, every band open
    portrait = Portrait360(parametric, Portrait360Config()).to(device)

    def condition(deformer: nn.Module) -> Tensor:
        return torch.randn(n, deformer.condition_dim, generator=gen).to(device)

    def on_canonical(call: Callable[[Tensor, Tensor], list[Tensor]]) -> Callable[[Tensor, Tensor], list[Tensor]]:
        # Fields that follow another deformer read canonical points (the blend fields skip those outside their box).
        return lambda x, dirs: call(canonical.detach().requires_grad_(x.requires_grad), dirs)

    blend = portrait.field.deformer.deformers[-1]
    masks = insta.insta_face_masks(tracked_head(parametric, train_frames), insta.cpu_config())
    triangles = insta.insta_deformer(masks).to(device)  # the fused Warp kernels (the default backend)
    reference = dataclasses.replace(triangles.config, backend="torch")
    triangles_torch = TriangleFrameDeformer(reference, triangles.scale_faces, triangles.blend_faces)
    deformers = [
        Case("RigidDeformer", deformer_call(RigidDeformer(), head, frame), RigidDeformer(), n),
        Case("TriangleFrameDeformer (INSTA's masks)", deformer_call(triangles, head, frame), triangles, n),
        Case(
            "TriangleFrameDeformer (INSTA's masks, torch reference)",
            deformer_call(triangles_torch, head, frame),
            triangles_torch,
            n,
        ),
        Case("SkinningDeformer (FLAME)", deformer_call(SkinningDeformer(), head, frame), SkinningDeformer(), n),
        Case("BlendFieldDeformer (Portrait360, canonical points)", on_canonical(deformer_call(blend, head, frame)), blend, n),
        Case(
            "HyperDeformer (hyper_neus cpu_config: 4 × 96)",
            deformer_call(hyper_cpu.hyper, head, frame, condition=condition(hyper_cpu.hyper)),
            hyper_cpu.hyper,
            n,
        ),
        Case(
            "HyperDeformer (MonoNPHM paper: 6 × 400)",
            deformer_call(hyper_paper.hyper, head, frame, condition=condition(hyper_paper.hyper)),
            hyper_paper.hyper,
            n,
        ),
        Case("ErrorCorrectionField (MonoAvatar)", deformer_call(correction, head, frame), correction, n),
        chain_case("Portrait360", portrait, head, frame, n),
    ]
    for entry in mixes:  # a mix's own chain, called as the Deformer interface allows (default conditions)
        if entry.key in AS_MIX:
            continue  # its HyperDeformer is timed above, at both sizes
        torch.manual_seed(0)
        model = entry.build(parametric, train_frames).to(device)
        if isinstance(model.field.deformer, DeformerChain) and len(model.field.deformer.deformers) > 1:
            deformers.append(chain_case(entry.key, model, head, frame, n))

    rows = frame
    frequency = FrequencyEncoding(3, MONOAVATAR_POSITION_FREQUENCIES).to(device)
    grid = HashGrid(INSTA_HASH_GRID).to(device)
    grid_cpu = HashGrid(insta.cpu_config().hash_grid).to(device)
    sh = SphericalHarmonics(InstaConfig().sh_degree).to(device)
    anchored = MeshAnchoredEncoder(ANCHORED_FEATURES, MeshAnchoredConfig()).to(device)
    # Learnt per-vertex features (a parameter, so the backward pass reaches them and zero_grad resets them).
    vertex_features = nn.Parameter(0.1 * torch.randn(head.num_frames, head.vertices.shape[1], ANCHORED_FEATURES, generator=gen))
    anchored_module = nn.ModuleList([anchored, nn.ParameterList([vertex_features])]).to(device)
    vertex_features = anchored_module[1][0]
    low, high = head.vertices.amin(dim=(0, 1)), head.vertices.amax(dim=(0, 1))
    encoders = [
        Case(f"FrequencyEncoding ({MONOAVATAR_POSITION_FREQUENCIES} bands)", lambda x, d: [frequency(x)], frequency, n),
        Case("HashGrid (INSTA: 16 levels × 8, 2^18)", lambda x, d: [grid(((x - low) / (high - low)).clamp(0, 1))], grid, n),
        Case(
            "HashGrid (INSTA cpu_config: 16 levels × 2, 2^18)",
            lambda x, d: [grid_cpu(((x - low) / (high - low)).clamp(0, 1))],
            grid_cpu,
            n,
        ),
        Case(f"SphericalHarmonics (degree {sh.degree})", lambda x, d: [sh(d)], sh, n),
        Case(
            f"MeshAnchoredEncoder (k = {anchored.config.k}, {ANCHORED_FEATURES}-d vertex features)",
            lambda x, d: [anchored(x, head.posed_mesh, vertex_features, rows).features],
            anchored_module,
            n,
        ),
    ]

    displacements = head.vertices - head.canonical_vertices
    per_frame = []
    for label, resolution in (("cpu_config", monoavatar.cpu_config().uv_resolution), ("paper", MonoAvatarConfig().uv_resolution)):
        uv = DisplacementVertexFeatures(
            head.faces, head.uvs, head.uv_faces, head.vertices.shape[1], resolution, UVUNetConfig()
        ).to(device)
        per_frame.append(
            Case(
                f"UV-CNN vertex features, D ({label}: {resolution}² UV map)",
                lambda x, d, uv=uv: [uv(displacements)],  # the weights get gradients, not the tracked mesh
                uv,
                head.num_frames,
            )
        )
    return deformers, encoders, per_frame


def time_case(case: Case, x: Tensor, dirs: Tensor, repeats: int) -> tuple[float, float]:
    """Median seconds of a forward pass (no gradients) and of a forward + backward pass (gradients for the
    weights, the points and the directions)."""

    def forward() -> None:
        with torch.no_grad():
            case.call(x, dirs)

    def backward() -> None:
        case.module.zero_grad(set_to_none=True)
        points, directions = x.detach().requires_grad_(), dirs.detach().requires_grad_()
        sum(out.sum() for out in case.call(points, directions)).backward()

    return median_seconds(forward, repeats, x.device), median_seconds(backward, repeats, x.device)


def run_primitives(parametric: ParametricModel, train_frames: FrameSet, mixes: list[Entry], args: argparse.Namespace) -> dict:
    device = torch.device(args.device)
    n = QUICK_POINTS if args.quick else POINTS
    repeats = QUICK_REPEATS if args.quick else REPEATS
    with torch.no_grad():  # the tracked head is data: the models' parametric model is frozen
        head = tracked_head(parametric, train_frames.select(evenly_spread(FRAMES_PER_HEAD, len(train_frames))))
    gen = torch.Generator().manual_seed(1)
    frame = torch.randint(head.num_frames, (n,), generator=gen).to(device)
    x = head.vertices[frame, torch.randint(head.vertices.shape[1], (n,), generator=gen).to(device)]
    x = (x + NOISE * torch.randn(n, 3, generator=gen).to(device)).detach()
    dirs = torch.nn.functional.normalize(torch.randn(n, 3, generator=gen), dim=-1).to(device)
    deformers, encoders, per_frame = primitive_cases(parametric, train_frames, head, frame, mixes, n)
    results: dict = {"points": n, "repeats": repeats, "frames": head.num_frames}
    for group, cases in (("deformers", deformers), ("encoders", encoders), ("per_frame", per_frame)):
        rows = []
        for case in cases:
            start = time.perf_counter()
            fwd, bwd = time_case(case, x, dirs, repeats)
            rows.append({"name": case.name, "forward_seconds": fwd, "backward_seconds": bwd, "per": case.per})
            print(f"  {case.name}: {time.perf_counter() - start:.1f} s", flush=True)
        results[group] = rows
    return results


def print_primitives(results: dict) -> None:
    for group, kind, reference in (("deformers", "deformer", "RigidDeformer"), ("encoders", "encoder", "FrequencyEncoding")):
        rows = results[group]
        ref = rows[0]  # the reference comes first
        print(f"\n| {kind} | forward ns/sample | fwd + bwd ns/sample | forward vs {reference} | fwd + bwd vs {reference} |")
        print("|---|---:|---:|---:|---:|")
        for r in rows:
            print(
                f"| {r['name']} | {1e9 * r['forward_seconds'] / r['per']:,.0f} | {1e9 * r['backward_seconds'] / r['per']:,.0f} | "
                f"{r['forward_seconds'] / ref['forward_seconds']:.1f}× | {r['backward_seconds'] / ref['backward_seconds']:.1f}× |"
            )
    print(f"\n| per-frame primitive ({results['frames']} frames a call) | forward ms/frame | fwd + bwd ms/frame |")
    print("|---|---:|---:|")
    for r in results["per_frame"]:
        print(f"| {r['name']} | {1e3 * r['forward_seconds'] / r['per']:,.1f} | {1e3 * r['backward_seconds'] / r['per']:,.1f} |")


# -------------------------------------------------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, default=None, help=f"training budget per model ({DEFAULT_MINUTES:g})")
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_MINUTES:g} min per model, fewer frames and samples")
    parser.add_argument(
        "--only", nargs="+", default=None, metavar="NAME", help="models by key (exact), part of a key, or paper / mix"
    )
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--skip-primitives", action="store_true")
    parser.add_argument("--skip-models", action="store_true")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument(
        "--baseline", type=Path, default=None, help="a checkout whose models also train, each right after ours (A/B)"
    )
    parser.add_argument("--only-exact", default=None, help=argparse.SUPPRESS)  # a child: train this model alone
    parser.add_argument("--json", type=Path, default=None, help=argparse.SUPPRESS)  # where the child writes its metrics
    parser.add_argument(
        "--iterations", type=int, default=None, help="a fixed step budget per model instead of the clock (A/B runs)"
    )
    args = parser.parse_args()
    if args.minutes is None:
        args.minutes = QUICK_MINUTES if args.quick else DEFAULT_MINUTES
    args.out = (args.out or Path(tempfile.mkdtemp(prefix="compare_bench_"))).resolve()  # children run elsewhere
    if args.baseline is not None:
        args.baseline = args.baseline.resolve()
        if not (args.baseline / "benchmarks" / "compare.py").is_file():
            raise SystemExit(f"--baseline: expected a headfields checkout, got {args.baseline} (no benchmarks/compare.py)")
    args.out.mkdir(parents=True, exist_ok=True)
    entries = registry()

    if args.only_exact is not None:  # the child
        entry = next((e for e in entries if e.key == args.only_exact and e.build is not None), None)
        if entry is None:
            raise SystemExit(f"--only-exact: expected one of {[e.key for e in entries if e.build]}, got {args.only_exact!r}")
        metrics = train_one(entry, args)
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(metrics, indent=2) + "\n")
        return

    start = time.perf_counter()
    selected = select(entries, args.only)
    train_frames, eval_frames = load_video(args.quick)  # writes the cached video once, before any child
    results: dict = {"models": {}, "primitives": None}
    if not args.skip_models:
        results["models"] = run_models(selected, args)
    if not args.skip_primitives:
        print("\n== primitives ==", flush=True)
        parametric = load_model(train_frames.model_path, train_frames.model_type, device=args.device)
        mixes = [e for e in entries if e.kind == "mix" and e.build is not None]
        results["primitives"] = run_primitives(parametric, train_frames, mixes, args)

    threads = num_cpu_threads() if torch.device(args.device).type == "cpu" else "-"
    header = (
        f"{len(train_frames)} training frames, {len(eval_frames)} held-out test frames evaluated at "
        f"{eval_frames.cameras.width} px; {args.minutes:g} min per model; {torch.get_num_threads()} torch threads, "
        f"{threads} Warp CPU threads; torch {torch.__version__}, warp {warp.config.version}; device {args.device} "
        f"({platform.processor() or platform.machine()})"
    )
    results["header"] = header
    print(f"\n{header}\n")
    if not args.skip_models:
        print_models(selected, results["models"])
        if args.baseline is not None:
            print_baseline(selected, results["models"])
    if results["primitives"] is not None:
        p = results["primitives"]
        print(
            f"\n{p['points']} samples per call, median of {p['repeats']} after a warm-up; "
            "fwd + bwd: gradients for the weights, points and directions"
        )
        print_primitives(p)
    results["wall_seconds"] = time.perf_counter() - start
    (args.out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nrenders, metrics and results.json under {args.out} ({results['wall_seconds']:.0f} s in all)")


if __name__ == "__main__":
    main()
