"""How long a real-sized capture takes to load, and how much memory: INSTA's layout at 512², 2,000 training frames.

    python benchmarks/capture_loading.py                    # writes the capture under outputs/, then times it
    python benchmarks/capture_loading.py --frames 500 --resolution 256

The capture: the synthetic head video rendered at ``--resolution`` for 16 frames and written in INSTA's layout
(images, depth and segmentation PNGs, a tracked mesh and expression a frame), then listed ``--frames`` times over
in ``transforms_train.json`` (each frame's files hard links to a rendered one's, so it takes the disk of 16 frames).
Decoding cost does not depend on the pictures, so the figures are a real capture's of that size.

Each load runs in a fresh process (``load_insta_dataset(root, "train", background=...)``, white as
``load_subject`` and training load it) and reports its wall time and peak resident memory: first with no decoded
cache, then again from the cache the first wrote. Figures are medians of ``--repeats`` runs each. ``--baseline
DIR`` also times the loader of another checkout (``git worktree add DIR REV``) in the same run, each checkout with a
cache folder of its own (an older checkout's entries are stale to a newer one), and prints the ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SOURCE_FRAMES = 16

# A child process: load the split, print seconds and peak resident memory (ru_maxrss is in KiB on Linux).
CHILD = """
import json, resource, sys, time
from headfields.data import load_insta_dataset
t = time.perf_counter()
frames = load_insta_dataset(sys.argv[1], "train", background=tuple(json.loads(sys.argv[2])))
seconds = time.perf_counter() - t
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(json.dumps({"seconds": seconds, "peak_bytes": peak, "frames": len(frames), "size": list(frames.images.shape)}))
"""


def write_capture(out: Path, frames: int, resolution: int) -> Path:
    """The capture of ``frames`` training frames at ``resolution`` in ``out`` (kept between runs)."""
    from headfields.synthetic import SyntheticVideoConfig, write_insta_capture

    marker = out / "capture.json"
    wanted = {"frames": frames, "resolution": resolution}
    if marker.is_file() and json.loads(marker.read_text()) == wanted:
        return out
    shutil.rmtree(out, ignore_errors=True)
    config = SyntheticVideoConfig(num_frames=SOURCE_FRAMES + 3, num_val=1, num_test=2, resolution=resolution, episode_frames=4)
    source = write_insta_capture(out.with_name(out.name + "_source"), config)
    shutil.copytree(source, out)
    meta = json.loads((out / "transforms_train.json").read_text())
    rendered, listed = meta["frames"], []
    for k in range(frames):
        frame = dict(rendered[k % len(rendered)])
        for key in ("file_path", "depth_path", "seg_mask_path", "mesh_path", "exp_path"):
            if key not in frame:
                continue
            path = Path(frame[key])
            copy = path.with_name(f"r{k:05d}{path.suffix}")
            if not (out / copy).exists():
                os.link(out / path, out / copy)
            frame[key] = str(copy)
        listed.append(frame)
    meta["frames"] = listed
    (out / "transforms_train.json").write_text(json.dumps(meta))
    (out / "transforms.json").unlink(missing_ok=True)  # the splits' own files name every frame
    marker.write_text(json.dumps(wanted))
    return out


def load_once(root: Path, background: list[float], cache: Path, checkout: Path = ROOT) -> dict:
    """One load in a fresh process, with ``checkout``'s headfields and ``cache`` as its cache folder."""
    env = {**os.environ, "PYTHONPATH": str(checkout), "XDG_CACHE_HOME": str(cache)}
    command = [sys.executable, "-c", CHILD, str(root), json.dumps(background)]
    result = subprocess.run(command, cwd=checkout, capture_output=True, text=True, env=env)
    if result.returncode != 0:
        raise SystemExit(f"loading failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=2000)
    parser.add_argument("--resolution", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=ROOT / "outputs" / "capture_loading" / "insta_512")
    parser.add_argument("--background", type=float, nargs=3, default=[1.0, 1.0, 1.0], help="RGB the images go over")
    parser.add_argument("--baseline", type=Path, default=None, help="another checkout whose loader to time beside")
    args = parser.parse_args()
    root = write_capture(args.out, args.frames, args.resolution)

    checkouts = {"": ROOT} if args.baseline is None else {"": ROOT, "baseline, ": args.baseline.resolve()}
    runs: dict[tuple[str, str], list[dict]] = {}
    for _ in range(args.repeats):
        for name, checkout in checkouts.items():
            cache = args.out.with_name(args.out.name + "_cache") / ("baseline" if name else "this")
            shutil.rmtree(cache, ignore_errors=True)  # no decoded cache: the first load decodes
            runs.setdefault((name, "first load"), []).append(load_once(root, args.background, cache, checkout))
            runs.setdefault((name, "from the cache"), []).append(load_once(root, args.background, cache, checkout))
    shape = f"{args.frames} frames at {args.resolution}² in INSTA's layout ({root}), over {args.background}"
    print(f"{shape}, {os.cpu_count()} CPUs, medians of {args.repeats}:")
    medians = {
        key: (statistics.median(r["seconds"] for r in results), statistics.median(r["peak_bytes"] for r in results))
        for key, results in runs.items()
    }
    print("| load | seconds | peak memory |" + (" speed-up vs the baseline | memory vs the baseline |" if args.baseline else ""))
    print("|---|---:|---:|" + ("---:|---:|" if args.baseline else ""))
    for (name, load), (seconds, peak) in medians.items():
        base = medians.get(("baseline, ", load)) if args.baseline is not None else None
        ratios = f" {base[0] / seconds:.1f}x | {peak / base[1]:.2f}x |" if base else ""
        print(f"| {name}{load} | {seconds:.1f} | {peak / 2**30:.2f} GiB |{ratios}")


if __name__ == "__main__":
    main()
