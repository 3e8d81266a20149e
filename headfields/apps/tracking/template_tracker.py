"""A static turn's video turned into the subject's personal template (the 360-degree portrait's first step): the video
tracker's ingest and 2D cues (MediaPipe's face mesh or the user's landmark files, the selfie mask or the user's
matting), then :func:`~headfields.fitting.track_turn` with SMPL-X (the user's files, or the synthetic SMPL-X written
with the template). The cues are kept in a work folder beside the output, so an interrupted run resumes after them; the
template is written there and renamed into place, so the output path holds a whole template or nothing.

The template folder:

- ``template.npz``: ``shape [S]`` (SMPL-X's shape coefficients), ``offsets [V, 3]`` (per vertex, canonical: hair and
  clothing beyond the body; they turn with their vertex's skinning rotation), ``vertices [V, 3]`` and ``faces [F, 3]``
  (the template at rest), and the turn's tracking: ``global_orient [N, 3]`` and ``transl [N, 3]`` (SMPL-X's, the
  camera fixed at the origin: OpenCV's axes turned to y up, looking down -z), ``found [N]`` (the frames with a face),
  ``focal``, ``width``, ``height`` (the frames' pixels); ``colours [V, 3]`` (in [0, 1]) and ``seen [V]``: each
  vertex's colour, the median of the turn's frames that see it (:func:`~headfields.fitting.vertex_colours`), and
  whether any did;
- ``template.obj``: the template at rest, to look at;
- ``model/``: the synthetic SMPL-X it is built on (not with ``--smplx``: your licensed files stay where they are);
- ``tracking.json``: the frames, those with a face, the settings.

    from headfields.apps.tracking.template_tracker import track_template

    track_template("turn.mp4", "template/")
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from ...checks import check_count, check_positive
from ...data import write_obj
from ...fitting.landmark_tracking import SurfaceLandmarks
from ...fitting.template_appearance import vertex_colours
from ...fitting.turn_tracking import TurnFit, TurnTrackingConfig, track_turn
from ...parametric import load_model
from ...progress import Progress
from ...synthetic import write_synthetic_smplx
from .staging import move_into_place, staged
from .video_tracker import VideoTrackerConfig, _cues, _work_folder, check_inputs

__all__ = ["TemplateTrackerConfig", "WholeFrameIngest", "check_mattes", "load_template", "stage_bars", "track_template"]

TEMPLATE_FILE = "template.npz"


@dataclass(frozen=True)
class WholeFrameIngest:
    """A turning subject's video read as the video tracker reads it
    (:class:`~headfields.apps.tracking.video_tracker.VideoTrackerConfig`), on the whole frame: the template's and the
    dynamic video's."""

    fps: float | None = 25.0  # resampled to this frame rate (None: every frame as it comes)
    trim_start: float = 0.0  # seconds dropped at the start and the end
    trim_end: float = 0.0
    size: int = 256  # the frames' side, pixels (the whole frame padded to a square: the bust turns within it)
    smoothing: float = 1.0  # the landmark track's Gaussian, frames
    max_size: int = 1920  # frames are decoded at most this large (their longer side)
    # The camera's focal length in the decoded frames' pixels (None: a phone's main camera, 69 degrees across).
    focal: float | None = None

    def __post_init__(self) -> None:
        if self.fps is not None:
            check_positive("fps", self.fps, finite=True)
        check_count("size", self.size, 64)
        check_positive("smoothing", self.smoothing, finite=True)
        check_count("max_size", self.max_size, 64)
        if self.focal is not None:
            check_positive("focal", self.focal, finite=True)

    def ingest(self, **more) -> VideoTrackerConfig:
        """The video tracker's settings that read the frames so (``more``: its other fields)."""
        return VideoTrackerConfig(
            fps=self.fps, trim_start=self.trim_start, trim_end=self.trim_end, size=self.size, whole_frame=True,
            smoothing=self.smoothing, max_size=self.max_size, **more,
        )  # fmt: skip

    def focal_length(self, cues: dict) -> float:
        """The focal length in the square frames' pixels: the decoded frame padded to a square of side crop[2],
        resized to ``size``."""
        return float(cues["focal"]) if self.focal is None else self.focal * self.size / float(cues["crop"][2])


@dataclass(frozen=True)
class TemplateTrackerConfig(WholeFrameIngest):
    """The turn's ingest and its tracking."""

    turn: TurnTrackingConfig = field(default_factory=TurnTrackingConfig)


def track_template(
    video: str | Path,
    out: str | Path,
    config: TemplateTrackerConfig | None = None,
    *,
    landmarks: str | Path | None = None,
    landmarks_first: int = 0,
    masks: str | Path | None = None,
    smplx: str | Path | None = None,
    log: Callable[[str], None] = print,
) -> Path:
    """Build the template of the turn in ``video`` into the new folder ``out``; returns ``out``. ``landmarks``,
    ``landmarks_first`` and ``masks``: the user's own cues, as :func:`~headfields.apps.tracking.track_video` reads them;
    ``smplx``: the folder of the user's SMPL-X files (default: the synthetic SMPL-X, written into the template)."""
    config = config or TemplateTrackerConfig()
    video, out = check_inputs(video, out, "template", landmarks, landmarks_first, masks)
    work = _work_folder(video, out, config, (landmarks, landmarks_first), masks, smplx, "template")
    with staged(work):
        model_dir = Path(smplx) if smplx is not None else write_synthetic_smplx(work / "model")
        model = load_model(model_dir, model_type="smplx")
        # The video tracker's ingest and cues, on the whole frame: a turn is framed already (its crop is the face's).
        cues = _cues(video, work, config.ingest(), landmarks, landmarks_first, masks, log)
        check_mattes(cues["masks"])
        fit = _fit(cues, model, config.focal_length(cues), config.turn, log)
        result = work / "template"
        shutil.rmtree(result, ignore_errors=True)
        result.mkdir()
        if smplx is None:
            shutil.copytree(model_dir, result / "model")
        _write(result, fit, model, cues, config)
        move_into_place(result, out)
    log(f"template: {out} ({len(cues['found'])} frames, {int(cues['found'].sum())} with a face)")
    return out


def check_mattes(masks: torch.Tensor) -> None:
    """Refuse, naming ``masks``, frames where the matting found no one."""
    empty = torch.nonzero(~masks.flatten(1).any(1))[:, 0].tolist()
    if empty:  # MediaPipe's selfie model reads people facing it: from behind it often sees no one
        raise ValueError(
            f"masks: expected the subject in every frame, {len(empty)} frames have none (the first: {empty[:5]}); "
            "the selfie model misses people seen from behind: give a matting tool's masks with --masks DIR"
        )


@contextmanager
def stage_bars(command: str) -> Iterator[Callable[[str, int, int], None]]:
    """A ``progress(stage, step, steps)`` for the trackers: a bar a stage, a new one each time a stage starts again."""
    bars: dict[str, Progress] = {}

    def progress(stage: str, step: int, total: int) -> None:
        if step == 1:
            if stage in bars:
                bars[stage].close()
            bars[stage] = Progress(total, f"{command}: {stage}", "step")
        bars[stage].update(1)

    try:
        yield progress
    finally:
        for bar in bars.values():
            bar.close()


def _fit(cues: dict, model, focal: float, config: TurnTrackingConfig, log) -> TurnFit:
    """The turn tracked, a progress bar a stage."""
    images = cues["images"]
    log(f"template: tracking the turn ({len(images)} frames of {images.shape[2]} px)")
    with stage_bars("template") as progress:
        return track_turn(model, cues["masks"], cues["points"], cues["found"], SurfaceLandmarks.static(model),
                          focal, config, progress)  # fmt: skip


def _write(folder: Path, fit: TurnFit, model, cues: dict, config: TemplateTrackerConfig) -> None:
    """The template folder's files (the module docstring)."""
    params = fit.params(model)
    rest = fit.template.canonical(model).detach()
    width, height = cues["images"].shape[2], cues["images"].shape[1]
    posed = torch.einsum("nij,vj->nvi", fit.rotation, rest) + fit.translation[:, None]
    colours = vertex_colours(posed, model.faces, cues["images"], fit.cameras)
    np.savez(
        folder / TEMPLATE_FILE,
        shape=fit.template.shape.numpy(),
        offsets=fit.template.offsets.numpy(),
        vertices=rest.numpy(),
        faces=model.faces.cpu().numpy(),
        global_orient=params.pose[:, 0].numpy(),
        transl=params.translation.numpy(),
        found=fit.found.numpy(),
        colours=colours.colours.numpy(),
        seen=colours.seen.numpy(),
        focal=np.float64(fit.cameras.fx),
        width=np.int64(width),
        height=np.int64(height),
    )
    write_obj(folder / "template.obj", rest.numpy(), model.faces.cpu().numpy())
    report = {"frames": len(fit.found), "found": int(fit.found.sum()), "settings": asdict(config)}
    (folder / "tracking.json").write_text(json.dumps(report, indent=1))


def load_template(folder: str | Path) -> dict[str, torch.Tensor]:
    """A template folder's ``template.npz`` as tensors (see the module docstring for its fields)."""
    path = Path(folder) / TEMPLATE_FILE
    try:
        with np.load(path) as data:
            return {name: torch.from_numpy(np.asarray(data[name])) for name in data.files}
    except (OSError, ValueError) as error:
        raise ValueError(f"template: cannot read {str(path)!r} as a template ({error})") from None
