"""What a trained run gives through ``python -m headfields render | export``, measured on a finished run (the
demo's: ``make demo``, or ``python examples/insta.py --out outputs/insta``):

- an orbit video (``--camera orbit --frames 48 --resolution 128``): its decoded frame count and size, and the time;
- a replay of the held-out split driven by the capture's own tracking (``--drive CAPTURE``, ``--camera track``): the
  decoded video's PSNR against the capture's images beside the run's held-out PSNR (the renders' own, and the gap);
- ``export``: the posed and canonical meshes' vertex counts, and the distance from the tracked mesh's face (the skin
  and lips the capture's camera sees) to the exported surface (median, 90th and 99th percentiles, millimetres).

    python benchmarks/use_a_run.py outputs/insta --out outputs/use_a_run
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import time
from pathlib import Path

import numpy as np
import torch
import trimesh

from headfields.apps.commands import main as command
from headfields.apps.media import video_info
from headfields.apps.runs import load_run
from headfields.geometry import TriangleMesh, closest_point
from headfields.metrics import visible_faces

FACE_REGIONS = ("skin", "lips")


def _run(argv: list[str]) -> tuple[dict, float]:
    """The command's JSON summary (its last line of output) and its seconds."""
    out = io.StringIO()
    start = time.perf_counter()
    with contextlib.redirect_stdout(out):
        code = command(argv)
    if code != 0:
        raise SystemExit(f"{' '.join(argv)} failed ({code})")
    return json.loads(out.getvalue().strip().splitlines()[-1]), time.perf_counter() - start


def face_distances(run, mesh_file: Path, head, frame: int) -> dict[str, list[float]]:
    """Millimetres from the tracked mesh's face vertices (``FACE_REGIONS`` the capture's first camera sees) to the
    exported mesh: median, 90th and 99th percentiles per region."""
    mesh = trimesh.load(mesh_file, process=False)
    exported = TriangleMesh(torch.tensor(mesh.vertices, dtype=torch.float32), torch.tensor(mesh.faces, dtype=torch.long))
    tracked = head.vertices[frame].cpu()
    eye = run.subject.eval.cameras.camera_to_world[0, :3, 3]
    seen = torch.zeros(len(tracked), dtype=torch.bool)
    seen[head.faces.cpu()[visible_faces(tracked, head.faces.cpu(), eye)].reshape(-1)] = True
    out = {}
    for region in FACE_REGIONS:
        ids = head.regions[region].cpu()
        ids = ids[seen[ids]]
        distance = closest_point(exported, tracked[ids]).distance.numpy() * 1000
        out[region] = [round(float(v), 2) for v in np.percentile(distance, [50, 90, 99])]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", type=Path, help="a finished training run")
    parser.add_argument("--out", type=Path, default=Path("outputs/use_a_run"))
    parser.add_argument("--resolution", type=int, default=256, help="the export's marching-cubes grid")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    run = load_run(args.run, "cpu")
    report: dict = {"run": str(args.run), "run_psnr": run.metrics["psnr"]}

    orbit, seconds = _run(["render", str(args.run), "--camera", "orbit", "--frames", "48", "--resolution", "128",
                           "--out", str(args.out / "orbit.mp4"), "--device", "cpu"])  # fmt: skip
    info = video_info(orbit["video"])
    report["orbit"] = {"frames": info.frames, "width": info.width, "height": info.height, "seconds": round(seconds, 1)}

    capture = run.subject.eval.root
    replay, seconds = _run(["render", str(args.run), "--drive", str(capture), "--out", str(args.out / "replay.mp4"),
                            "--device", "cpu"])  # fmt: skip
    report["replay"] = {
        "frames": replay["frames"],
        "renders_psnr": replay["psnr"],
        "video_psnr": replay["video_psnr"],
        "gap_db": replay["video_psnr"] - run.metrics["psnr"],
        "seconds": round(seconds, 1),
    }

    written, seconds = _run(["export", str(args.run), "--out", str(args.out / "meshes"), "--resolution",
                             str(args.resolution), "--device", "cpu"])  # fmt: skip
    split = run.subject.eval.split
    report["export"] = {
        "seconds": round(seconds, 1),
        "meshes": {Path(k).name: v for k, v in written.items()},
        "canonical_face_mm": face_distances(run, args.out / "meshes" / "canonical.ply", run.model.parametric(), 0),
        f"{split}_00000_face_mm": face_distances(run, args.out / "meshes" / f"{split}_00000.ply", run.eval_head, 0),
    }
    (args.out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
