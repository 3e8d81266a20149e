"""How much of MonoNPHM's geometry error is the prior's and how much the tracking's: on a tracked run of a synthetic
person (``benchmarks/ablations/nphm.py``'s ``DIR/mononphm``), the face-region scores (MonoNPHM's protocol) of the tracked
surface, of the prior's mean identity and of the tracked global code with the local codes at their centre (what
the images taught the global code), of the surface under the identity code fitted to the true surface in 3D (the prior's ceiling,
:func:`headfields.models.mononphm.surface_identity`; the global code alone, then global and local codes), and
of the capture's tracked FLAME, on the frames the run scored.

    # ~3 min a frame on 2 cores
    python benchmarks/ablations/nphm_ceiling.py outputs/nphm/mononphm outputs/nphm_harder/mononphm --frames 1
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from headfields.apps.runs import load_run
from headfields.models.mononphm import face_scan, identity_code, scan_score, surface_identity
from headfields.synthetic import load_ground_truth

ROWS = (
    "tracked",
    "the prior's mean identity (the codes' centre, untracked)",
    "tracked global code, local codes at the centre",
    "ceiling: global code",
    "ceiling: global and local codes",
    "the capture's tracked FLAME",
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("runs", type=Path, nargs="+", help="MonoNPHM run folders of synthetic identity videos")
    parser.add_argument("--steps", type=int, default=300, help="Adam steps of each ceiling fit")
    parser.add_argument("--frames", type=int, default=None, help="score only the first this many of the frames the run scored")
    args = parser.parse_args()
    for folder in args.runs:
        run = load_run(folder, "cpu")
        model, held_out = run.model, run.subject.eval
        truth, faces = load_ground_truth(run.subject.root, held_out.split)
        scored = json.loads((folder / "metrics.json").read_text()).get("geometry_frames")
        if scored is None:
            raise SystemExit(f"{folder}: its metrics.json names no geometry_frames (a run from before they were recorded)")
        measured = scored[: args.frames]
        head = model.head(held_out, "held_out")
        scores = {row: [] for row in ROWS}
        for f in measured:
            points, normals = face_scan(held_out, f, truth[f], faces)
            tracked, centre = model.codes.identity.detach(), model.codes.identity_centre
            fits = {
                ROWS[0]: tracked,
                ROWS[1]: centre,
                ROWS[2]: torch.cat([tracked[:, : model.prior.config.global_dim], centre[:, model.prior.config.global_dim :]], 1),
                ROWS[3]: surface_identity(model, head, f, truth[f], faces, args.steps, local=False),
                ROWS[4]: surface_identity(model, head, f, truth[f], faces, args.steps),
            }
            for row, code in fits.items():
                with torch.no_grad(), identity_code(model, code):
                    surface = model.extract_mesh(head, f, model.config.mesh_resolution)
                scores[row].append(scan_score(surface.vertices, surface.faces, points, normals))
            scores[ROWS[-1]].append(scan_score(held_out.mesh_vertices[f], held_out.mesh_faces, points, normals))
        print(f"\n{folder}: frames {measured} of the held-out split, the face region after a similarity ICP")
        print("| surface | L1 (mm) | L2 (mm) | normals | F@1 mm | F@2.5 mm | F@5 mm |")
        print("|---|---:|---:|---:|---:|---:|---:|")
        for row, values in scores.items():
            table = torch.tensor(
                [[1000 * s.chamfer_l1, 1000 * s.chamfer_l2, s.normal_consistency, *s.f_score.values()] for s in values]
            ).mean(0)  # L1, L2, normals, F-scores at 1, 2.5, 5 and 10 mm
            print(
                f"| {row} | {table[0]:.2f} | {table[1]:.2f} | {table[2]:.3f} | {table[3]:.3f} | {table[4]:.3f} | {table[5]:.3f} |"
            )


if __name__ == "__main__":
    main()
