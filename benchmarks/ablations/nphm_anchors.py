"""How well a prior places its anchors, the points MonoNPHM's landmark term projects: on every scan of its own
training set, each identity's anchors (``Nphm.anchors`` of its code) carried into the scan's expression by root
finding (``posed_points``), against the true positions of the anchor vertices there, in mm. Grouped as the paper
weighs the landmark pairs: x 100 (chin, lips, eyelids), x 1 (the other paired anchors), and the unpaired ones. The
landmark term projects these anchors: under the paper's 7.5 on the anchors a CPU prior missed them by 6-11 mm,
under ``cpu_prior_training()``'s 750 (:data:`~headfields.models.mononphm.prior_training.CPU_ANCHOR_WEIGHT`) by 1-1.8 mm.

    python benchmarks/ablations/nphm_anchors.py outputs/nphm/prior.pt   # the scan set benchmarks/ablations/nphm.py trains on
    python benchmarks/ablations/nphm_anchors.py /tmp/nphm/prior.pt --identities 4 --expressions 3
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch

from headfields.data.ibug import ANCHOR_LANDMARK_PAIRS, ANCHOR_PAIR_WEIGHTS
from headfields.fitting import posed_points
from headfields.models.mononphm import load_prior
from headfields.parametric import load_model
from headfields.synthetic import ScanSetConfig, anchor_vertices, synthetic_scan_set, write_synthetic_flame


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("prior", type=Path, help="save_prior's file (benchmarks/ablations/nphm.py's DIR/prior.pt)")
    parser.add_argument("--identities", type=int, default=16, help="the scan set's, as the prior was trained")
    parser.add_argument("--expressions", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    prior = load_prior(args.prior, "cpu").eval()
    with tempfile.TemporaryDirectory() as folder:
        flame = load_model(write_synthetic_flame(Path(folder)), "flame")
    config = ScanSetConfig(num_identities=args.identities, expressions=args.expressions, seed=args.seed)
    scans = synthetic_scan_set(flame, config)
    if prior.identity_codes.count != scans.num_identities or prior.expression_codes.count != scans.num_scans:
        raise SystemExit(f"{args.prior}: trained on another scan set (give its --identities and --expressions)")
    ids, _ = anchor_vertices(flame)
    errors = []
    with torch.no_grad():
        for n in range(scans.num_scans):
            i = int(scans.identity[n])
            identity, expression = prior.identity_codes.codes[i : i + 1], prior.expression_codes.codes[n : n + 1]
            anchors = prior.anchors(identity)
            group = torch.zeros(anchors.shape[1], dtype=torch.long)
            posed = posed_points(
                lambda x: prior.deform(x, group, identity, expression, anchors).offset,  # noqa: B023 (used at once)
                anchors[0], prior.normalize, torch.eye(3), torch.zeros(3),
            )  # fmt: skip
            errors.append(1000 * (posed.points - scans.vertices[n][ids]).norm(dim=-1))
    error = torch.stack(errors)  # [scans, anchors] mm
    weight = {a: w for (a, _), w in zip(ANCHOR_LANDMARK_PAIRS, ANCHOR_PAIR_WEIGHTS, strict=True)}
    groups = {
        "paired, x 100 (chin, lips, eyelids)": [a for a, w in weight.items() if w > 1],
        "paired, x 1": [a for a, w in weight.items() if w <= 1],
        "unpaired": [a for a in range(error.shape[1]) if a not in weight],
    }
    neutral = scans.expression == 0
    print(f"{args.prior}: {scans.num_scans} scans of {scans.num_identities} identities, anchors posed by the prior's own codes")
    print("| anchors | count | neutral scans (mm) | expression scans (mm) |")
    print("|---|---:|---:|---:|")
    for name, members in groups.items():
        rows = error[:, members]
        print(f"| {name} | {len(members)} | {rows[neutral].mean():.1f} | {rows[~neutral].mean():.1f} |")


if __name__ == "__main__":
    main()
