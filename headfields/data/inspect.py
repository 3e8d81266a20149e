"""A capture checked before training on it (``python -m headfields inspect CAPTURE`` prints it).

Reads every split as the training scripts would and reports what it found: frames per split, image size,
intrinsics, the label codes present (with their names), the expression width, the tracked meshes' topology, the
subject's model (parametric, or the tracked meshes with their regions), the tracker's own report where our tracker
wrote the capture (``tracking.json``: frames without a face, reprojection error, jitter) and, given model builders,
which of them can build a model for it. Each problem is one line naming the file and the field.

    report = inspect_capture("data/me")
    print(report)  # report.problems: a line each
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch

from . import _io
from .frames import BACKGROUND_LABEL, SPLITS, FrameSet
from .insta_reader import load_insta_dataset
from .subject import Subject, load_subject

__all__ = ["CaptureReport", "inspect_capture"]

# A frame whose landmarks sit this far from the fitted head's on average (pixels of the capture's width, per 512) is
# named: a detector's failure or a pose the fit could not follow. The fit's median on the synthetic video is ~1.5.
REPROJECTION_FLAG = 6.0
NAMED_FRAMES = 8  # at most this many frame numbers a line


@dataclass
class CaptureReport:
    root: Path
    lines: list[str] = field(default_factory=list)  # the summary, one fact a line
    problems: list[str] = field(default_factory=list)  # one error a line, naming the file and the field
    models: dict[str, str] = field(default_factory=dict)  # model -> "yes", or why not

    def __str__(self) -> str:
        out = [f"capture {self.root}", *(f"  {line}" for line in self.lines)]
        if self.models:
            out.append("  models:")
            out += [f"    {name:22s} {verdict}" for name, verdict in self.models.items()]
        out += [f"problem: {p}" for p in self.problems]
        out.append(f"{len(self.problems)} problem(s)" if self.problems else "no problems found")
        return "\n".join(out)


def inspect_capture(
    root: str | os.PathLike,
    model: str | os.PathLike | None = None,
    regions: str | os.PathLike | None = None,
    models: Mapping[str, Callable[[Subject], object]] | None = None,
) -> CaptureReport:
    """The report of the capture in ``root`` (``model``, ``regions``: as ``load_subject`` takes them); with
    ``models`` (name -> a function building that model for a subject), whether each can be built for it."""
    report = CaptureReport(Path(root))
    splits: dict[str, FrameSet] = {}
    for split in SPLITS:
        try:
            splits[split] = load_insta_dataset(root, split)
        except (OSError, ValueError, TypeError) as e:
            report.problems.append(str(e))
    if "train" not in splits:
        return report
    train = splits["train"]
    report.lines.append("frames: " + ", ".join(f"{s} {len(fs)}" for s, fs in splits.items()))
    _check_frame_counts(report, splits)
    c = train.cameras
    report.lines.append(
        f"images: {c.width} x {c.height} px, {'RGBA (alpha: the mask)' if train.masks is not None else 'RGB, no mask'}"
    )
    report.lines.append(f"intrinsics: fx {c.fx:.2f}, fy {c.fy:.2f}, cx {c.cx:.2f}, cy {c.cy:.2f}")
    if train.depths is not None:
        report.lines.append(
            f"depth: {float((train.depths > 0).float().mean()):.0%} of pixels, up to {float(train.depths.max()):.3f} m"
        )
    if train.segmentation is not None:
        names = {code: name for name, code in train.segmentation_labels.items()}
        codes = [c for c in torch.unique(train.segmentation).tolist() if c != BACKGROUND_LABEL]
        report.lines.append("label codes: " + ", ".join(f"{code} {names[code]}" for code in codes))
    if train.expression is not None:
        report.lines.append(f"expression: {train.expression.shape[1]} coefficients a frame")
    if train.mesh_vertices is not None:
        report.lines.append(f"tracked meshes: {train.mesh_vertices.shape[1]} vertices, {train.mesh_faces.shape[0]} faces")
    if train.params is not None:
        p = train.params
        report.lines.append(
            f"tracked parameters: shape {p.shape.shape[0]}, expression {p.expression.shape[1]}, pose {p.pose.shape[1]} joints"
        )
    _tracking_lines(report, Path(root) / "tracking.json", c.width)
    try:
        subject = load_subject(root, model, regions=regions)
    except (OSError, ValueError, TypeError) as e:
        report.problems.append(str(e))
        return report
    report.lines.append(f"subject's model: {subject.parametric.model_type} ({type(subject.parametric).__name__})")
    report.lines += subject.notes
    report.models = {name: _can_train(build, subject) for name, build in (models or {}).items()}
    return report


def _tracking_lines(report: CaptureReport, path: Path, width: int) -> None:
    """The tracker's per-frame report (headfields.apps.tracking writes it): frames without a face, the reprojection error's
    median and worst frames, the landmarks' jitter, the focal length."""
    if not path.is_file():
        return
    try:
        data = json.loads(path.read_text())
        found, error = list(data["found"]), list(data["reprojection_px"])
    except (OSError, ValueError, KeyError, TypeError) as e:
        report.problems.append(f"{path}: cannot read the tracker's report ({e})")
        return
    missing = [i for i, f in enumerate(found) if not f]
    named = ", ".join(map(str, missing[:NAMED_FRAMES])) + (", ..." if len(missing) > NAMED_FRAMES else "")
    report.lines.append(f"tracking: {len(found)} frames, {len(missing)} without a face" + (f" ({named})" if missing else ""))
    values = [e for e in error if e is not None and math.isfinite(e)]
    if values:
        limit = REPROJECTION_FLAG * width / 512
        far = [i for i, e in enumerate(error) if e is not None and e > limit]
        median = sorted(values)[len(values) // 2]
        line = f"tracking: landmarks {median:.2f} px from the fitted head (median), worst {max(values):.2f} px"
        if far:
            line += f"; over {limit:.1f} px in frames {', '.join(map(str, far[:NAMED_FRAMES]))}" + (
                ", ..." if len(far) > NAMED_FRAMES else ""
            )
        report.lines.append(line)
    if data.get("jitter_px") is not None:
        report.lines.append(f"tracking: landmark jitter {data['jitter_px']:.3f} px (median frame-to-frame acceleration)")


def _check_frame_counts(report: CaptureReport, splits: dict[str, FrameSet]) -> None:
    """INSTA writes every frame to transforms.json too: the split files must list no frame it lacks."""
    combined = report.root / "transforms.json"
    if not combined.is_file() or not (report.root / "transforms_train.json").is_file():
        return
    try:
        frames = _io.read_json(combined, "transforms file").get("frames", [])
        listed = {
            os.path.splitext(os.path.normpath(f["file_path"]))[0]  # NeRFace's file_path has no extension
            for f in frames
            if isinstance(f, dict) and isinstance(f.get("file_path"), str)
        }
    except ValueError as e:
        report.problems.append(str(e))
        return
    except AttributeError as e:
        report.problems.append(f"{combined}: cannot read its frames ({e})")
        return
    for split, fs in splits.items():
        missing = [p for p in fs.image_paths if os.path.splitext(os.path.normpath(p.relative_to(report.root)))[0] not in listed]
        if missing:
            report.problems.append(
                f"{combined}: frames: lists {len(listed)} frames, without {len(missing)} of transforms_{split}.json's "
                f"{len(fs)} (first: {missing[0]})"
            )


def _can_train(build: Callable, subject: Subject) -> str:
    try:
        build(subject)
    except (ValueError, TypeError) as e:
        return f"no: {e}"
    return "yes"
