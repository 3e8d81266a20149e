"""A dynamic video tracked against the subject's personal template (the 360-degree portrait's second step) into a
capture ``portrait360`` trains on: the video tracker's ingest and 2D cues on the whole frame, then
:func:`~headfields.fitting.track_with_template` with the template folder's SMPL-X, shape and colours (``python -m
headfields template`` writes it). The cues are kept in a work folder beside the output, so an interrupted run resumes
after them; the capture is written there and renamed into place.

The capture is in headfields' layout (:func:`~headfields.data.save_insta_dataset`): the frames, their masks and mouth
labels, SMPL-X's parameters per frame (the template's shape; global, head and jaw rotations, ten expressions,
translation), the posed template's meshes (its offsets included), the synthetic SMPL-X in ``model/`` (not with
``--smplx``: train with ``--model``), the detections, and ``tracking.json``.

    from headfields.apps.tracking.template_video import track_template_video

    track_template_video("video.mp4", "template/", "capture/")
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from torch import Tensor

from ...checks import check_count
from ...data import TrackedParams
from ...data.capture_cache import cache_folder
from ...fitting import PersonalTemplate, SurfaceLandmarks, TemplateTrackingConfig, VertexColours, track_with_template
from ...parametric import load_model
from .capture_files import capture_frames, save_capture
from .staging import move_into_place, staged
from .template_tracker import (
    TEMPLATE_FILE,
    TemplateTrackerConfig,
    WholeFrameIngest,
    check_mattes,
    load_template,
    stage_bars,
    track_template,
)
from .video_tracker import _cues, _digest, _splits, _work_folder, check_inputs

__all__ = ["TemplateVideoConfig", "templated_capture", "track_template_video"]


@dataclass(frozen=True)
class TemplateVideoConfig(WholeFrameIngest):
    """The video's ingest (as the template's), its splits and its tracking."""

    test_frames: int | None = None  # held out at the end (None: 350, at most a tenth)
    tracking: TemplateTrackingConfig = field(default_factory=TemplateTrackingConfig)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.test_frames is not None:
            check_count("test_frames", self.test_frames, 0)


def track_template_video(
    video: str | Path,
    template: str | Path,
    out: str | Path,
    config: TemplateVideoConfig | None = None,
    *,
    landmarks: str | Path | None = None,
    landmarks_first: int = 0,
    masks: str | Path | None = None,
    smplx: str | Path | None = None,
    log: Callable[[str], None] = print,
) -> Path:
    """Track ``video`` against the ``template`` folder and write the capture to the new folder ``out``; returns
    ``out``. ``landmarks``, ``landmarks_first`` and ``masks``: the user's own cues, as
    :func:`~headfields.apps.tracking.track_video` reads them; ``smplx``: the folder of the SMPL-X files the template
    was built on (default: the template's synthetic ``model/``)."""
    config = config or TemplateVideoConfig()
    video, out = check_inputs(video, out, "capture", landmarks, landmarks_first, masks)
    template = Path(template)
    stored = load_template(template)
    if "colours" not in stored:
        raise ValueError(f"template: {str(template)!r} has no colours; build it again with python -m headfields template")
    model_dir = Path(smplx) if smplx is not None else template / "model"
    if not model_dir.is_dir():
        raise ValueError(f"smplx: expected the folder of the SMPL-X files {str(template)!r} was built on (--smplx DIR)")
    model = load_model(model_dir, model_type="smplx")
    if stored["offsets"].shape != (model.num_vertices, 3):
        raise ValueError(
            f"template: expected a template of the model's {model.num_vertices} vertices, {str(template)!r} holds "
            f"{len(stored['offsets'])}: another topology (give its SMPL-X with --smplx)"
        )
    person = PersonalTemplate(stored["shape"].float(), stored["offsets"].float())
    colours = VertexColours(stored["colours"].float(), stored["seen"].bool())
    ingest = config.ingest(test_frames=config.test_frames)
    work = _work_folder(video, out, config, (landmarks, landmarks_first), masks, smplx, str(template.absolute()))
    with staged(work):
        cues = _cues(video, work, ingest, landmarks, landmarks_first, masks, log)
        check_mattes(cues["masks"])
        splits = _splits(len(cues["found"]), ingest)  # a video too short is refused before the tracking
        focal = config.focal_length(cues)
        images = cues["images"]
        log(f"track: against {template} ({len(images)} frames of {images.shape[2]} px)")
        with stage_bars("track") as progress:
            track = track_with_template(
                model, person, colours, images, cues["masks"], cues["points"], cues["found"],
                SurfaceLandmarks.static(model), focal, config.tracking, progress,
            )  # fmt: skip
        capture = work / "capture"
        shutil.rmtree(capture, ignore_errors=True)
        named = Path(shutil.copytree(model_dir, capture / "model")) if smplx is None else None
        _write_capture(capture, cues, track.params, person, model, named, splits, focal, config)
        move_into_place(capture, out)
    log(f"track: {out} ({len(cues['found'])} frames, {int(cues['found'].sum())} with a face)")
    return out


def templated_capture(
    video: str | Path, turn: str | Path, smplx: str | Path | None = None, log: Callable[[str], None] = print
) -> Path:
    """The capture of ``video`` tracked against the template built from the video of the subject's ``turn`` (with the
    user's ``smplx`` folder, or the synthetic SMPL-X), each made on first use into the cache folder
    (``~/.cache/headfields/templates/`` and ``tracked/``) under its video's content and the default settings, and
    reused after: what ``train --video --template`` reads."""
    video, turn = Path(video), Path(turn)
    for name, path in (("video", video), ("template", turn)):
        if not path.is_file():
            raise ValueError(f"{name}: expected a video file, {str(path)!r} is not a file")
    smplx = None if smplx is None else Path(smplx).expanduser().absolute()
    template = cache_folder() / "templates" / _digest(turn, TemplateTrackerConfig(), None, None, smplx, None)
    if (template / TEMPLATE_FILE).is_file():
        log(f"template: {turn} was built before: {template}")
    else:
        track_template(turn, template, smplx=smplx, log=log)
    root = cache_folder() / "tracked" / _digest(video, TemplateVideoConfig(), None, None, smplx, str(template))
    if (root / "tracking.json").is_file():
        log(f"track: {video} was tracked against its template before: {root}")
        return root
    return track_template_video(video, template, root, smplx=smplx, log=log)


def _write_capture(
    root: Path, cues: dict, params: TrackedParams, person: PersonalTemplate, model, named: Path | None, splits: dict,
    focal: float, config: TemplateVideoConfig,
) -> None:  # fmt: skip
    """The capture's files (:mod:`.capture_files`: the template's meshes, SMPL-X named) and ``tracking.json``."""

    def posed(p: TrackedParams) -> Tensor:
        return person.posed(model, p.pose, p.translation, p.expression)

    video, _ = capture_frames(cues, params, focal, posed, model.faces.cpu(), "smplx", named)
    save_capture(root, video, cues, splits)
    report = {"frames": len(cues["found"]), "found": cues["found"].tolist(), "settings": asdict(config)}
    (root / "tracking.json").write_text(json.dumps(report))
