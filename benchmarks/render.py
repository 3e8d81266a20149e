"""Milliseconds a frame: each model's inference renderer beside its training renderer, in the same run.

    python benchmarks/render.py                           # INSTA, MonoAvatar, Portrait360, hyper NeuS at 128-512 px
    python benchmarks/render.py --only insta --sizes 512  # one model, one size
    python benchmarks/render.py --train-minutes 5         # models trained longer first (opaque heads stop earlier)
    python benchmarks/render.py --only insta --sizes 512 --anatomy  # and where the 512² frame's time goes
    python benchmarks/render.py --only insta --sizes 512 --profile  # and its kernels, by their time on the device
    python benchmarks/render.py --only insta --baseline ../old      # and another checkout's renderers on the same runs

Each model (its CPU recipe on the CPU, its paper recipe on CUDA, unless ``--recipe``) is trained for
``--train-minutes`` on its synthetic video into ``--out/<model>`` (a run folder: a finished run there is reused,
not trained again), then loaded with :func:`headfields.load_run`. For each size, the first held-out frame is
rendered through its camera resized to that square: by the inference renderer (``model.render_rays``: rounds over
the live rays, stopped at transmittance 1e-4), ``--chunk`` rays a call (default: the run's ``render_chunk``, as the
evaluation and ``render`` call it), as the viewer renders (instant-ngp's interactive stop, 1e-2, and the MLPs'
products in bfloat16), and by the training renderer (``model.render(rays, head)``: every sample; 8,192 rays a call,
``TrainingConfig``'s default), each the median of ``--repeats`` after a warm-up. Printed: ms a frame for each,
their ratios, and at the frame's own size the PSNR of each against the held-out image and its difference from the
training renderer's (the inference renderer's stated agreement: 0.1 dB or better, either way). Written to
``--out/render.json``. ``--anatomy`` (occupancy-grid models: INSTA, the portrait) also times, at the largest size,
the march, the mesh shell's filter and the field over every sample, and counts what the stop at 1e-4 can save: the
rays with samples, their samples, their opacity, and the share of samples in front of the stop. ``--profile`` renders
the largest frame once more under ``torch.profiler``: on CUDA the kernels (Warp's among them) by their time on the
GPU, and the GPU's busy time against the frame's; on the CPU the operations by their own time.

``--baseline CHECKOUT`` renders the same frames by that checkout's renderers (its package), ours and theirs taking
turns: ``tools/frame_turns.py``, run with the checkout's package in a child process, loads each run once and renders a
frame when asked while ours waits, and ours render while it waits. For each size, after a warm-up of each,
``--repeats`` turns of ours (scores, viewer) then theirs (training renderer, inference renderer); printed and
written (``baseline`` in render.json): the medians of each and the medians of the turns' ratios. A shared machine's
speed drifts by a quarter within minutes; taking turns puts the drift on both sides alike. Ours are then timed in
the turns alone (render.json's ``sizes`` holds their medians) and our training renderer not at all: the baseline's
is the reference, and timing ours again before the turns took a third of the A/B's time (minutes of a lent GPU's,
where the frame renders on its CPU cores). Each run is handed to the checkout as a copy that its ``load_run`` reads
(``tools/run_for_checkout.py``: the same weights, the fingerprint and the configuration in that checkout's format).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path
from statistics import median

import torch
from torch.autograd import DeviceType
from torch.profiler import ProfilerActivity, profile

from headfields.apps.runs import RunConfig, SubjectSource, load_run, train_run
from headfields.cameras import image_rays, resized_cameras
from headfields.checks import trusted_values
from headfields.metrics import psnr
from headfields.models.registry import MODELS as REGISTERED
from headfields.models.registry import model_entry
from headfields.networks import products_in
from headfields.renderers import EARLY_STOP_TRANSMITTANCE, INTERACTIVE_TRANSMITTANCE
from headfields.renderers.compositing import transmittance
from headfields.training.evaluation import render_pixels

from avatars import median_seconds

MODELS = ("insta", "monoavatar", "portrait360", "hyper_neus")  # the default; --only takes any registered model but MonoNPHM
CHOICES = tuple(name for name in REGISTERED if name != "mononphm")  # a prior to train first: benchmarks/ablations/nphm.py
SIZES = (128, 256, 512)
# render.json's ratios of the turns (--baseline): each the median over the turns of one time over another
TURN_RATIOS = {
    "training_over_inference": ("baseline_training", "inference"),  # the issue's: the renderer the evaluation ran
    "training_over_interactive": ("baseline_training", "interactive"),
    "inference_over_inference": ("baseline_inference", "inference"),  # like for like
}
TOOLS = Path(__file__).resolve().parents[1] / "tools"  # --baseline's helpers: frame_turns.py, run_for_checkout.py
TURN_ANSWER = "frame_turns: "  # the prefix of tools/frame_turns.py's answer lines (its ANSWER)
TRAINING_CHUNK = 8192  # rays a call of the training renderer: TrainingConfig's render_chunk, which fits every model


def train_model(name: str, recipe: str, minutes: float, out: Path, device: torch.device) -> Path:
    """``name`` trained for ``minutes`` into ``out/name`` (kept as it is when finished there already)."""
    folder = out / name
    if (folder / "metrics.json").exists():
        print(f"{name}: the run in {folder} is reused")
        return folder
    entry = model_entry(name)
    training = dataclasses.replace(
        entry.training_defaults(recipe), max_iterations=10**9, max_minutes=minutes, budget="training", eval_every=0,
        checkpoint_every=0, eval_frames=1,
    )  # fmt: skip
    subject = SubjectSource(video=entry.video() if entry.video is not None else None)
    run = RunConfig(name, entry.recipe(recipe), training, subject, recipe)
    print(f"{name}: training {minutes:g} min ({recipe} recipe) into {folder}", flush=True)
    train_run(run, folder, device)
    return folder


def held_out_frame(run, cameras, chunk: int | None = None, early_stop: float = EARLY_STOP_TRANSMITTANCE):
    """The inference renderer's image through camera 0 of ``cameras`` (the held-out cameras, resized), of held-out
    frame 0's head, ``chunk`` rays a call (None: the run's ``render_chunk``, as the evaluation calls it)."""
    model, head = run.model, run.eval_head
    chunk = run.config.training.render_chunk if chunk is None else chunk

    def render(rays):  # camera 0 sees held-out frame 0's head
        return model.render_rays(dataclasses.replace(rays, frame=torch.zeros_like(rays.frame)), head, early_stop)

    return render_pixels(render, cameras, 0, chunk)


def renderers(run, cameras, chunk: int | None) -> dict:
    """The three ways a frame is rendered through camera 0 of ``cameras`` (it sees held-out frame 0's head): the
    inference renderer as scored, as the viewer renders, and the training renderer."""
    model, head = run.model, run.eval_head
    chunk = run.config.training.render_chunk if chunk is None else chunk

    def interactive(cameras):  # the viewer's: instant-ngp's interactive stop, the MLPs' products in bfloat16
        with products_in("bfloat16"):
            return held_out_frame(run, cameras, chunk, INTERACTIVE_TRANSMITTANCE)

    def training(rays):
        return model.render(dataclasses.replace(rays, frame=torch.zeros_like(rays.frame)), head).composite.rgb

    return {
        "inference": lambda: held_out_frame(run, cameras, chunk),
        "interactive": lambda: interactive(cameras),
        "training": lambda: render_pixels(training, cameras, 0, TRAINING_CHUNK),
    }


def frame_times(run, sizes: tuple[int, ...], chunk: int | None, repeats: int, device: torch.device, only=None) -> dict:
    """ms a frame at each size for each renderer (``only``: those of these names), the median of ``repeats`` after a
    warm-up; printed as they come."""
    times = {}
    for size in sizes:
        cameras = resized_cameras(run.subject.eval.cameras, size, size).to(device)
        chosen = {name: render for name, render in renderers(run, cameras, chunk).items() if only is None or name in only}
        seconds = {name: median_seconds(render, repeats, device) for name, render in chosen.items()}
        times[size] = {f"{name}_ms": 1000 * t for name, t in seconds.items()}
        print(f"  {size}²: " + ", ".join(f"{name} {1000 * t:,.0f} ms" for name, t in seconds.items()), flush=True)
    return times


def measure(run, sizes: tuple[int, ...], chunk: int | None, repeats: int, device: torch.device, timed: bool = True) -> dict:
    """Each renderer's ms a frame at each size (``timed``; else ``sizes`` is left for the turns to fill), and at the
    frame's own size each image's PSNR and its largest difference from the training renderer's. The images come after
    the timings, or untimed after one render at the largest size: a mesh's first queries in a process are Warp's until
    its wide BVH is built (``TriangleMesh.wide_bvh``), and the images compare the renderers, not the searches."""
    frames = run.subject.eval
    result = {"sizes": frame_times(run, sizes, chunk, repeats, device) if timed else {}}
    if not timed:
        largest = resized_cameras(frames.cameras, max(sizes), max(sizes)).to(device)
        renderers(run, largest, chunk)["inference"]()
    images = {name: render().clamp(0, 1) for name, render in renderers(run, frames.cameras.to(device), chunk).items()}
    truth = frames.images[0].float() / 255
    result["psnr"] = {name: float(psnr(image, truth)) for name, image in images.items()}
    result["max_difference"] = float((images["inference"] - images["training"]).abs().max())
    result["interactive_max_difference"] = float((images["interactive"] - images["training"]).abs().max())
    return result


def anatomy(run, size: int, device: torch.device) -> dict | None:
    """Where a ``size``² frame's time goes with every sample evaluated (occupancy-grid models; None for others)."""
    model, head = run.model, run.eval_head
    grid = getattr(getattr(model, "sampler", None), "grid", None)
    if grid is None:
        return None
    cameras = resized_cameras(run.subject.eval.cameras, size, size).to(device)
    rays = dataclasses.replace(image_rays(cameras, 0), frame=torch.zeros(size * size, dtype=torch.long, device=device))
    with torch.no_grad(), trusted_values():
        (marched,), march_s = timed(lambda: (grid.march(rays.origins, rays.directions, step_size=model.sampler.step_size),))
        (samples,), sampler_s = timed(lambda: (model.sampler(rays, head),))

        def field():
            density = [model.field(*_points(samples, rays, part), head).density for part in torch.split(
                torch.arange(len(samples), device=device), 1 << 18)]  # fmt: skip
            return (torch.cat(density),)

        (density,), field_s = timed(field)
        tau = density * samples.deltas
        light = transmittance(samples, tau)
        weights = light * -torch.expm1(-tau)
        hit = samples.counts() > 0
        opacity = torch.zeros(samples.num_rays, device=device).index_add_(0, samples.ray, weights)[hit]
    return {
        "size": size, "marched": len(marched), "kept": len(samples), "march_s": march_s,
        "shell_s": sampler_s - march_s, "field_s": field_s, "us_per_sample": 1e6 * field_s / max(len(samples), 1),
        "hit_rays": int(hit.sum()), "samples_per_hit_ray": len(samples) / max(int(hit.sum()), 1),
        "median_opacity": float(opacity.median()), "opaque_rays": float((opacity > 0.99).float().mean()),
        "in_front_of_stop": float((light >= 1e-4).float().mean()),
    }  # fmt: skip


PROFILE_ROWS = 15  # kernels (or CPU operations) --profile lists


def profiled(run, size: int, device: torch.device) -> dict:
    """One inference frame at ``size``² under torch.profiler: its wall time, the device's busy time (the kernels' sum;
    on the CPU the operations' own time) and the ``PROFILE_ROWS`` kernels or operations that took the most of it."""
    cameras = resized_cameras(run.subject.eval.cameras, size, size).to(device)
    cuda = device.type == "cuda"
    held_out_frame(run, cameras)  # compiled and warm
    with profile(activities=[ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])) as prof:
        _, wall = timed(lambda: held_out_frame(run, cameras))
    rows = profile_rows(prof.key_averages(), cuda)
    busy = sum(us for _, _, us in rows) / 1000
    top = [{"name": name, "calls": calls, "ms": us / 1000} for name, calls, us in rows[:PROFILE_ROWS]]
    return {"size": size, "wall_ms": 1000 * wall, "busy_ms": busy, "device": "cuda" if cuda else "cpu", "top": top}


def _points(samples, rays, index):
    ray = samples.ray[index]
    return rays.origins[ray] + samples.t_mid[index, None] * rays.directions[ray], rays.directions[ray], rays.frame[ray]


def baseline_copies(checkout: Path, args: argparse.Namespace) -> dict[str, Path]:
    """Each of our runs as ``checkout``'s ``load_run`` reads it, in ``--out/baseline`` (a copy, else a link)."""
    out = (args.out / "baseline").resolve()  # the checkout's processes run in it
    out.mkdir(parents=True, exist_ok=True)
    this = checkout == Path(__file__).resolve().parents[1]  # this checkout reads its own runs as they are
    copies = {}
    for name in args.only:  # each run copied as the checkout's load_run reads it (run_for_checkout.py), else linked
        copy, run = out / name, (args.out / name).resolve()
        copies[name] = copy
        if copy.is_symlink() or copy.is_file():
            copy.unlink()
        rebase = [sys.executable, str(TOOLS / "run_for_checkout.py"), str(run), str(copy)]
        if this or subprocess.run(rebase, cwd=checkout, env=_with_package(checkout)).returncode != 0:
            if not this:
                print(f"--baseline: {name} could not be copied for {checkout}; its load_run reads our run as it is")
            shutil.rmtree(copy, ignore_errors=True)
            copy.symlink_to(run, target_is_directory=True)
    return copies


def _with_package(checkout: Path) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(checkout)}


def their_frames(checkout: Path, run: Path, device: str) -> subprocess.Popen:
    """frame_turns.py on ``run`` with ``checkout``'s package, loaded and waiting for its first request."""
    script = TOOLS / "frame_turns.py"
    command = [sys.executable, str(script), str(run), "--device", device]
    pipes = dict(stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    worker = subprocess.Popen(command, cwd=checkout, env=_with_package(checkout), **pipes)
    _answer(worker)
    return worker


def their_seconds(worker: subprocess.Popen, renderer: str, size: int) -> float:
    worker.stdin.write(f"{renderer} {size}\n")
    worker.stdin.flush()
    return _answer(worker)["seconds"]


def _answer(worker: subprocess.Popen) -> dict:
    """The worker's next answer; the lines before it (its package's messages) are printed as they come."""
    for line in worker.stdout:
        if line.startswith(TURN_ANSWER):
            return json.loads(line[len(TURN_ANSWER) :])
        print(line, end="", flush=True)
    raise SystemExit(f"--baseline: its frame_turns.py exited with status {worker.wait()}")


def taking_turns(run, worker: subprocess.Popen, sizes: tuple[int, ...], chunk: int | None, repeats: int, device) -> dict:
    """ms a frame, ours (scores, viewer) and theirs (training, inference renderers) in turns: each renderer's times
    in the order they ran (after one untimed turn), their medians, and the medians of the turns' ratios."""
    result = {"sizes": {}, "turns": {}, "ratios": {}}
    for size in sizes:
        cameras = resized_cameras(run.subject.eval.cameras, size, size).to(device)
        ours = renderers(run, cameras, chunk)
        turns = [
            {
                "inference": 1000 * timed(ours["inference"])[1],
                "interactive": 1000 * timed(ours["interactive"])[1],
                "baseline_training": 1000 * their_seconds(worker, "training", size),
                "baseline_inference": 1000 * their_seconds(worker, "inference", size),
            }
            for _ in range(repeats + 1)
        ][1:]  # the first a warm-up of each
        result["turns"][size] = times = {key: [turn[key] for turn in turns] for key in turns[0]}
        theirs = {"training_ms": times["baseline_training"], "inference_ms": times["baseline_inference"]}
        result["sizes"][size] = {key: median(ms) for key, ms in theirs.items()}
        result["ratios"][size] = {name: median(turn[a] / turn[b] for turn in turns) for name, (a, b) in TURN_RATIOS.items()}
        print(f"  {size}²: " + ", ".join(f"{key} {median(ms):,.0f} ms" for key, ms in times.items()), flush=True)
    return result


def profile_rows(events, cuda: bool) -> list[tuple[str, int, float]]:
    """(name, calls, µs) of what kept the device busy, most first: on CUDA the kernels themselves (and copies), not the
    operations that launched them nor a ``record_function`` range's annotation on the GPU, each of which would count its
    kernels twice; on the CPU the operations with time of their own."""
    if cuda:
        rows = [
            (e.key, e.count, e.self_device_time_total)
            for e in events
            if e.device_type == DeviceType.CUDA and not getattr(e, "is_user_annotation", False)
        ]
    else:
        rows = [(e.key, e.count, e.self_cpu_time_total) for e in events if e.self_cpu_time_total > 0]
    return sorted(rows, key=lambda row: -row[2])


def print_profile(name: str, p: dict) -> None:
    what, busy = ("kernel", "GPU busy") if p["device"] == "cuda" else ("operation", "operations' own time")
    print(f"\n{name}, {p['size']}² under the profiler: {p['wall_ms']:,.1f} ms a frame, {busy} {p['busy_ms']:,.1f} ms")
    print(f"\n| {what} | calls | ms | share of {busy} |\n|---|---:|---:|---:|")
    for row in p["top"]:
        label = row["name"] if len(row["name"]) <= 90 else row["name"][:87] + "..."
        share = row["ms"] / p["busy_ms"] if p["busy_ms"] > 0 else 0.0
        print(f"| `{label}` | {row['calls']:,} | {row['ms']:,.2f} | {share:.0%} |")


def timed(work):
    """``work()`` and its seconds, the GPU's queue drained before and after (its kernels run after the call returns)."""
    synchronize = torch.cuda.synchronize if torch.cuda.is_available() and torch.cuda.is_initialized() else lambda: None
    synchronize()
    start = time.perf_counter()
    out = work()
    synchronize()
    return out, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="+", choices=CHOICES, default=list(MODELS))
    parser.add_argument("--sizes", nargs="+", type=int, default=list(SIZES))
    parser.add_argument("--train-minutes", type=float, default=2.0)
    parser.add_argument("--recipe", choices=("paper", "cpu"), default=None, help="default: paper on CUDA, cpu on the CPU")
    parser.add_argument("--chunk", type=int, default=None, help="rays an inference render call (default: the run's)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--anatomy", action="store_true", help="also where the largest frame's time goes")
    parser.add_argument("--profile", action="store_true", help="also the largest frame's kernels under torch.profiler")
    parser.add_argument("--out", type=Path, default=Path("outputs/render_benchmark"))
    parser.add_argument("--baseline", type=Path, default=None, help="a checkout whose renderers also render our runs (A/B)")
    args = parser.parse_args()
    if args.baseline is not None and not (args.baseline / "headfields").is_dir():
        raise SystemExit(f"--baseline: expected a headfields checkout, got {args.baseline} (no headfields/)")
    device = torch.device(args.device)
    recipe = args.recipe or ("paper" if device.type == "cuda" else "cpu")
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else None
    print(f"torch {torch.__version__}, {gpu or platform.processor() or 'CPU'}, {torch.get_num_threads()} threads")
    results, runs = {}, {}
    for name in args.only:
        folder = train_model(name, recipe, args.train_minutes, args.out, device)
        runs[name] = run = load_run(folder, device)
        # With a baseline, ours are timed in the turns alone (see the module docstring).
        results[name] = measure(run, tuple(args.sizes), args.chunk, args.repeats, device, timed=args.baseline is None)
        if args.anatomy:
            results[name]["anatomy"] = anatomy(run, max(args.sizes), device)
        if args.profile:
            results[name]["profile"] = profiled(run, max(args.sizes), device)
    if args.baseline is None:  # with one, ours are timed in the turns (their table below)
        print("\n| model | size | inference ms | interactive ms | training ms | speed-up | interactive speed-up |")
        print("|---|---:|---:|---:|---:|---:|---:|")
        for name, r in results.items():
            for size, t in r["sizes"].items():
                train, inf, fast = t["training_ms"], t["inference_ms"], t["interactive_ms"]
                ratios = f"{train / inf:.2f}x | {train / fast:.2f}x"
                print(f"| {name} | {size}² | {inf:,.0f} | {fast:,.0f} | {train:,.0f} | {ratios} |")
    print("\n| model | PSNR training | inference: difference | largest pixel difference | interactive: difference | largest |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, r in results.items():
        p = r["psnr"]
        print(f"| {name} | {p['training']:.3f} dB | {p['inference'] - p['training']:+.4f} dB | {r['max_difference']:.2e} | "
              f"{p['interactive'] - p['training']:+.4f} dB | {r['interactive_max_difference']:.2e} |")  # fmt: skip
    parts = {name: r["anatomy"] for name, r in results.items() if r.get("anatomy")}
    if parts:
        print(
            "\n| model | size | samples marched | kept by the shell | march s | shell s | field s | µs a sample | "
            "rays with samples | samples a ray | median opacity | rays > 0.99 | samples in front of the stop |"
        )
        print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        for name, a in parts.items():
            print(f"| {name} | {a['size']}² | {a['marched']:,} | {a['kept']:,} | {a['march_s']:.2f} | {a['shell_s']:.2f} | "
                  f"{a['field_s']:.2f} | {a['us_per_sample']:.2f} | {a['hit_rays']:,} | {a['samples_per_hit_ray']:.1f} | "
                  f"{a['median_opacity']:.3f} | {a['opaque_rays']:.0%} | {a['in_front_of_stop']:.0%} |")  # fmt: skip
    for name, r in results.items():
        if "profile" in r:
            print_profile(name, r["profile"])
    args.out.mkdir(parents=True, exist_ok=True)
    info = {"device": gpu or "cpu", "threads": torch.get_num_threads(), "recipe": recipe, "train_minutes": args.train_minutes}

    def save() -> None:  # render.json as it stands: written before the baseline too, so a baseline that fails keeps ours
        (args.out / "render.json").write_text(json.dumps({"info": info, "models": results}, indent=2))

    save()
    if args.baseline is not None:
        checkout = args.baseline.resolve()
        copies = baseline_copies(checkout, args)
        print(f"\n== taking turns with the baseline: {checkout} ==", flush=True)
        for name, r in results.items():
            print(f"{name}:", flush=True)
            worker = their_frames(checkout, copies[name], args.device)
            try:
                r["baseline"] = {"checkout": str(checkout)}
                r["baseline"].update(taking_turns(runs[name], worker, tuple(args.sizes), args.chunk, args.repeats, device))
                for size, times in r["baseline"]["turns"].items():  # ours, timed in the turns alone
                    r["sizes"][size] = {f"{key}_ms": median(times[key]) for key in ("inference", "interactive")}
            finally:
                worker.stdin.close()
                worker.wait()
            save()
        # The ratios: the baseline's training renderer (the renderer the evaluation ran) over ours; and ours
        # against the baseline's own inference renderer, like for like. Each the median of the turns' ratios.
        print(
            "\n| model | size | inference ms | interactive ms | baseline inference ms | baseline training ms | "
            "baseline training / inference | baseline training / interactive | baseline inference / inference |"
        )
        print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
        for name, r in results.items():
            b = r["baseline"]
            for size in args.sizes:
                t, theirs, q = b["turns"][size], b["sizes"][size], b["ratios"][size]
                print(f"| {name} | {size}² | {median(t['inference']):,.0f} | {median(t['interactive']):,.0f} | "
                      f"{theirs['inference_ms']:,.0f} | {theirs['training_ms']:,.0f} | {q['training_over_inference']:.2f}x | "
                      f"{q['training_over_interactive']:.2f}x | {q['inference_over_inference']:.2f}x |")  # fmt: skip


if __name__ == "__main__":
    main()
