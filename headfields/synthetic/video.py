"""A synthetic head video in the INSTA format: what a tracked monocular capture holds, rendered from the
synthetic FLAME head (or the SMPL-X head and torso, seen from all sides).

The sequence is a string of short *episodes*, each raising one expression channel (brows, smile, jaw) and
letting it fall again, over small smooth head, gaze and camera motion. Training frames never combine two
channels; test frames do (brows raised with the jaw open, ...), so a test measures generalisation to
expression combinations never seen. Ground truth is ray cast from the posed mesh with Warp: RGB (anti-aliased),
mask, depth and region segmentation. Everything is deterministic from the seed. Options add what a tracked
template lacks: a volume of hair over the scalp and a pair of glasses (``hair.py``, ``glasses.py``), composited
with the head exactly (``_render.py``), with labels of their own, and absent from the written meshes.

The orbit video (:meth:`SyntheticVideoConfig.portrait360`) is a 360-degree capture: the subject turns before the
camera, lingering where it faces the camera as real subjects do (few back views in training), the held-out frames
make one even turn (every view measured), and the subject's expressions are stronger than its tracked parameters
say (the under-fitting of a monocular tracker: a personal deformation the generic model misses).
:meth:`SyntheticVideoConfig.portrait_turn` is the same subject's static turn (one even turn, a neutral face), from
which the portrait's tracker builds a personal template: :func:`portrait_person` gives the two videos of one person
with hair and a shape of their own, and the folder of an orbit video with a shape of its own holds the true template
(:mod:`.template_truth`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import os
import shutil
import uuid
from dataclasses import replace
from pathlib import Path

import torch
from torch import Tensor

from ..cameras import PinholeCameras, look_at
from ..data import FrameSet, Subject, TrackedParams, load_subject, save_insta_dataset
from ..data.capture_cache import cache_folder
from ..geometry import TriangleMesh
from ..parametric import load_model
from ..parametric.head import Head
from ..parametric.model import ParametricModel
from ._appearance import head_appearance
from ._render import Additions, render_frames
from .glasses import GLASSES_LABEL, glasses_mesh
from .hair import HAIR_VOLUME_LABEL, HairVolume, HairVolumeConfig
from .identities import save_ground_truth
from .model_files import SYNTHETIC_EXPRESSIONS, write_synthetic_flame, write_synthetic_smplx
from .template_truth import save_template_truth, true_template
from .video_config import SyntheticVideoConfig

# Episode channels: two expression directions of the synthetic model and the jaw. Amplitudes are the peak
# coefficient (expression) or angle in radians (jaw) an episode reaches, scaled by a random 0.6-1.0.
EXPRESSION_CHANNELS = ("brow_raise", "smile")
EXPRESSION_PEAK = 1.0
JAW_PEAK = 0.30  # radians: a clearly open mouth showing teeth and the cavity
# The test episodes: every pair of channels at once.
TEST_COMBINATIONS = (("brow_raise", "jaw"), ("smile", "jaw"), ("brow_raise", "smile"))
BACKGROUND_EXPRESSIONS = 20  # expression directions past the named ones that wander a little
BACKGROUND_EXPRESSION_STD = 0.15
HEAD_SWING = (0.10, 0.30, 0.05)  # radians: head pitch, yaw, roll amplitude in the monocular video
GAZE_SWING = 0.25  # radians
HEAD_DRIFT = 0.01  # metres
CAMERA_DRIFT = 0.02  # metres
SHOULDER_DROP = 0.35  # a portrait shows the torso this far (in head-and-neck heights) below the neck
FRAME_MARGIN = 1.1  # the head's bounding box fills the image up to this margin
PER_FRAME_PARAMS = ("expression", "pose", "translation")  # TrackedParams' fields of each frame
CACHE_VERSION = 4  # bump when the generator's output changes, so cached videos are rendered anew


def make_synthetic_video(
    root: str | Path, config: SyntheticVideoConfig | None = None, device: str | torch.device | None = None
) -> Path:
    """Render the synthetic head video into folder ``root`` in the INSTA format and return ``root``.

    ``root/model`` holds the synthetic FLAME (or SMPL-X) model files the parameters refer to;
    :func:`headfields.data.load_insta_dataset` reads the result back. ``device`` runs the model and the ray
    casting (default: the CPU); the parameters are drawn on the CPU, so the video is the same on any device.

    With ``config.hair_volume`` or ``config.glasses`` the images show them (see :mod:`headfields.synthetic.hair`,
    :mod:`headfields.synthetic.glasses`; the camera frames them too), their pixels carry the labels
    ``"hair_volume"`` (the volume's opacity before the first opaque surface exceeds 0.5) and ``"glasses"``, and
    the written meshes stay the template's.

    With ``config.identity`` the subject is that person: their shape with their personal detail
    (:func:`~headfields.synthetic.identities.personal_model`) and appearance seed in the images, masks, depths and
    labels; the written parameters carry their shape coefficients and the written meshes are the plain FLAME of
    those (no detail). ``root/ground_truth.npz`` holds the meshes the camera saw, frame by frame
    (:func:`~headfields.synthetic.identities.save_ground_truth`; read a split's with
    :func:`~headfields.synthetic.identities.load_ground_truth`).

        root = make_synthetic_video("/tmp/hair", SyntheticVideoConfig(hair_volume=True, glasses=True))
    """
    config = config or SyntheticVideoConfig()
    root = Path(root)
    model_type = "smplx" if config.orbit else "flame"
    writer = write_synthetic_smplx if config.orbit else write_synthetic_flame
    model_dir = writer(root / "model", seed=config.seed)
    model = load_model(model_dir, model_type=model_type, device=device)

    generator = torch.Generator().manual_seed(config.seed)
    params, test_start = _sequence(model, config, generator)
    subject_model, detail, appearance_seed = model, None, config.seed
    if config.identity is not None:
        subject_model, detail = config.identity.personal_model(model)
        params = replace(params, shape=config.identity.shape_coefficients(model).float().cpu())
        appearance_seed = config.identity.appearance_seed
    train_end = test_start - config.num_val
    views = None  # the training frames the novel-view validation frames see again
    if config.val_view_yaw is not None:
        views = torch.linspace(0, train_end - 1, config.num_val, dtype=torch.float64).round().long()
        again = params.select(views)
        params = TrackedParams(params.shape, *(torch.cat([getattr(params, k), getattr(again, k)]) for k in PER_FRAME_PARAMS))
    written = _tracking_error(params, config, views)  # what the files say: the tracker's (noisy) parameters
    on_device, tracked = params.to(model.v_template.device), written.to(model.v_template.device)
    head = model(shape=tracked.shape, expression=tracked.expression, pose=tracked.pose, translation=tracked.translation)
    appearance = head_appearance(subject_model, appearance_seed)
    # The subject's canonical head: the template's, or the identity's with its detail (what the additions sit on).
    canonical = head.canonical_vertices.detach()
    if detail is not None:
        canonical = subject_model(shape=on_device.shape).canonical_vertices.detach()
    labels = {name: i + 1 for i, name in enumerate(appearance.names)}
    hair, glasses = None, None  # what the template lacks, in its canonical frame; labelled after its regions
    if config.hair_volume is not None:
        hair = HairVolume.around(canonical, head.faces, config.hair_volume, config.seed)
        labels[HAIR_VOLUME_LABEL] = len(labels) + 1
    if config.glasses:
        glasses = glasses_mesh(canonical, head.faces)
        labels[GLASSES_LABEL] = len(labels) + 1
    extent = [hair.outer_points()] if hair else []
    extent += [glasses[0]] if glasses else []
    extent += [canonical] if detail is not None else []
    cameras = _cameras(head, config, generator, torch.cat(extent) if extent else None)
    if views is not None:
        seen = {k: getattr(on_device, k)[-len(views) :] for k in PER_FRAME_PARAMS}  # the truth: the same views, noise or not
        cameras = _turned(cameras, model(shape=on_device.shape, **seen).vertices.detach(), views, config.val_view_yaw)

    # What the camera sees: the tracked parameters with expression and jaw scaled by the gain.
    expression, pose = on_device.expression * config.expression_gain, on_device.pose.clone()
    jaw = list(model.joint_names).index("jaw")
    pose[:, jaw] *= config.expression_gain
    subject = subject_model(shape=on_device.shape, expression=expression, pose=pose, translation=on_device.translation)
    brow = expression[:, SYNTHETIC_EXPRESSIONS["brow_raise"]]
    additions = None
    if hair is not None or glasses is not None:
        additions = _additions(model, subject, hair, glasses, labels)
    rendered = render_frames(
        subject, cameras, appearance, brow, config.resolution, config.supersampling, config.background, additions
    )
    images, masks, depths, segmentation = (x.cpu() for x in rendered)
    cameras, vertices, faces = cameras.to("cpu"), head.vertices.detach().cpu(), head.faces.cpu()
    n = config.num_frames
    splits = {
        "train": torch.arange(0, train_end),
        "val": torch.arange(train_end, test_start) if views is None else torch.arange(n, n + len(views)),
        "test": torch.arange(test_start, n),
    }
    video = FrameSet(
        split="train",  # each split below is a selection of the whole video
        cameras=cameras,
        images=images,
        masks=masks,
        depths=depths,
        segmentation=segmentation,
        expression=written.expression,
        params=written,
        mesh_vertices=vertices,
        mesh_faces=faces,
        model_type=model_type,
        model_path=model_dir,
        segmentation_labels=labels,
    )
    frame_sets = {split: replace(video.select(index), split=split) for split, index in splits.items()}
    root = save_insta_dataset(root, frame_sets, composited_over=config.background)
    if detail is not None:
        save_ground_truth(root, subject.vertices.detach(), faces, splits, detail)
    if config.orbit and config.shape is not None:  # a person of their own (portrait_person): their template
        save_template_truth(root, true_template(canonical, hair), faces)
    return root


def cached_synthetic_video(
    config: SyntheticVideoConfig | None = None,
    cache_dir: str | Path | None = None,
    *,
    hair_volume: HairVolumeConfig | bool | None = None,
    glasses: bool | None = None,
) -> Path:
    """The synthetic video of ``config``, rendered on first use into a cache folder and reused after.

    ``hair_volume`` and ``glasses``, if given, replace the config's (default: the default video's): the hair
    variant is ``cached_synthetic_video(hair_volume=True)``. The folder (under ``cache_dir``, default
    ``$XDG_CACHE_HOME/headfields`` or ``~/.cache/headfields``) is named by a digest of the config and of this
    package's version, so another config renders anew. Processes that start together (``torchrun``'s ranks)
    may each render it: each renders into a folder of its own and the first to finish moves its folder into
    place, so none ever reads a half-written video.

        root = cached_synthetic_video(hair_volume=True, glasses=True)
    """
    config = config or SyntheticVideoConfig()
    if hair_volume is not None:
        config = replace(config, hair_volume=hair_volume)
    if glasses is not None:
        config = replace(config, glasses=glasses)
    if cache_dir is None:
        cache_dir = cache_folder()
    key = hashlib.sha256(_cache_text(config).encode()).hexdigest()[:16]
    kind = "orbit" if config.orbit else "head"
    kind += ("_hair" if config.hair_volume else "") + ("_glasses" if config.glasses else "")
    kind += "_identity" if config.identity is not None else ""
    root = Path(cache_dir) / f"synthetic_{kind}_{key}"
    done = root / ".complete"
    if done.exists():
        return root
    partial = root.with_name(f"{root.name}.partial-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    try:
        make_synthetic_video(partial, config)
        (partial / done.name).touch()
        if root.exists() and not done.exists():  # an incomplete folder left by an older version: moved aside
            try:  # first (atomic), so a copy another process moves in meanwhile is never the one deleted
                stale = root.rename(root.with_name(f"{root.name}.stale-{uuid.uuid4().hex[:8]}"))
                shutil.rmtree(stale, ignore_errors=True)
            except OSError:
                pass  # another process moved it first
        try:
            partial.rename(root)  # atomic: a folder under the final name is complete
        except OSError:
            if not done.exists():  # not another process's finished copy: a real failure
                raise
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return root


def synthetic_subject(video: SyntheticVideoConfig | None = None, **options) -> Subject:
    """The subject of the synthetic video ``video`` (default: the default video), rendered on first use and cached
    (:func:`cached_synthetic_video`): :func:`~headfields.data.load_subject` of its folder, given ``options``
    (``eval_split``, ``device``, ...).

        subject = synthetic_subject(device="cuda")  # load_subject("path/to/capture") for a real one
    """
    return load_subject(cached_synthetic_video(video), **options)


# Fields added to SyntheticVideoConfig since CACHE_VERSION was last bumped: left out of the cache key while at their
# defaults, so the videos cached before they came keep their keys (their output is the same).
_UNKEYED_AT_DEFAULT = ("identity", "expression_noise", "val_view_yaw", "turn", "shape")


def _cache_text(config: SyntheticVideoConfig) -> str:
    """What the cache key hashes: ``repr((config, CACHE_VERSION))``, written without the late fields at their defaults."""
    fields = [
        f"{f.name}={getattr(config, f.name)!r}"
        for f in dataclasses.fields(config)
        if f.repr and not (f.name in _UNKEYED_AT_DEFAULT and getattr(config, f.name) == f.default)
    ]
    return f"({type(config).__qualname__}({', '.join(fields)}), {CACHE_VERSION!r})"


def _smooth_noise(frames: int, channels: int, generator: torch.Generator, periods: tuple[float, ...] = (97.0, 41.0)) -> Tensor:
    """Smooth random curves in [-1, 1] over the frames: a sum of sines of random phase (one per period)."""
    t = torch.arange(frames, dtype=torch.float64)[:, None]
    out = torch.zeros(frames, channels, dtype=torch.float64)
    for period in periods:
        phase = 2 * math.pi * torch.rand(channels, generator=generator, dtype=torch.float64)
        out += torch.sin(2 * math.pi * t / period + phase)
    return out / len(periods)


def _episodes(config: SyntheticVideoConfig, generator: torch.Generator) -> tuple[dict[str, Tensor], int]:
    """Per-channel activation in [0, 1] over the frames, and the first test frame.

    Training episodes raise one channel each, in turn; test episodes (the last ``num_test`` frames) raise a
    pair of channels together. Each episode is a sin^2 bump of random height 0.6-1.0.
    """
    n, test_start = config.num_frames, config.num_frames - config.num_test
    channels = (*EXPRESSION_CHANNELS, "jaw")
    activation = {c: torch.zeros(n, dtype=torch.float64) for c in channels}
    step = config.episode_frames
    train = [
        (start, min(start + step, test_start), (channels[i % len(channels)],))
        for i, start in enumerate(range(0, test_start, step))
    ]
    test = [
        (start, min(start + step, n), TEST_COMBINATIONS[i % len(TEST_COMBINATIONS)])
        for i, start in enumerate(range(test_start, n, step))
    ]
    for start, stop, active in train + test:
        bump = torch.sin(math.pi * (torch.arange(stop - start, dtype=torch.float64) + 0.5) / (stop - start)) ** 2
        for channel in active:
            height = 0.6 + 0.4 * torch.rand((), generator=generator, dtype=torch.float64)
            activation[channel][start:stop] = height * bump
    return activation, test_start


def _sequence(model: ParametricModel, config: SyntheticVideoConfig, generator: torch.Generator) -> tuple[TrackedParams, int]:
    n = config.num_frames
    activation, test_start = _episodes(config, generator)
    expression = torch.zeros(n, model.num_expression, dtype=torch.float64)
    for channel in EXPRESSION_CHANNELS:
        expression[:, SYNTHETIC_EXPRESSIONS[channel]] = EXPRESSION_PEAK * activation[channel]
    first, last = len(SYNTHETIC_EXPRESSIONS), min(model.num_expression, len(SYNTHETIC_EXPRESSIONS) + BACKGROUND_EXPRESSIONS)
    expression[:, first:last] = BACKGROUND_EXPRESSION_STD * _smooth_noise(n, last - first, generator)

    joint = {name: i for i, name in enumerate(model.joint_names)}
    pose = torch.zeros(n, model.num_joints, 3, dtype=torch.float64)
    pose[:, joint["jaw"], 0] = JAW_PEAK * activation["jaw"]
    gaze = GAZE_SWING * _smooth_noise(n, 2, generator)  # pitch, yaw: both eyes look the same way
    for eye in ("left_eye", "right_eye"):
        pose[:, joint[eye], :2] = gaze
    swing = torch.tensor(HEAD_SWING, dtype=torch.float64) * _smooth_noise(n, 3, generator)
    pose[:, joint["head" if config.orbit else "neck"]] = swing
    if config.orbit:  # the subject turns before the camera: global yaw sweeps all the way round
        pose[:, 0, 1] = _orbit_yaw(config, test_start)
    translation = HEAD_DRIFT * _smooth_noise(n, 3, generator)
    if config.turn:  # the static turn: a neutral face on a still neck, only the chair turning
        expression.zero_()
        pose[:, 1:] = 0.0
    shape = torch.zeros(model.num_shape)
    if config.shape is not None:
        if len(config.shape) > model.num_shape:
            raise ValueError(f"shape: {len(config.shape)} coefficients, the model has {model.num_shape}")
        shape[: len(config.shape)] = torch.tensor(config.shape)
    params = TrackedParams(shape, expression.float(), pose.float(), translation.float())
    return params, test_start


def _orbit_yaw(config: SyntheticVideoConfig, test_start: int) -> Tensor:
    """The subject's global yaw per frame. Training and validation frames turn ``orbit_turns`` times, with frames
    per angle ~ 1 + w cos(yaw) (w = ``orbit_front_weight``): the yaw y solves y + w sin(y) = theta for evenly
    spaced theta. The root lies in [theta - w, theta + w] and the map is increasing: bisection finds it to
    float64 precision. The test frames make one even turn from the front."""
    w = config.orbit_front_weight
    theta = 2 * math.pi * config.orbit_turns * torch.arange(test_start, dtype=torch.float64) / test_start
    low, high = theta - w, theta + w
    for _ in range(60):  # the bracket halves: 2w / 2^60
        mid = (low + high) / 2
        below = mid + w * torch.sin(mid) < theta
        low, high = torch.where(below, mid, low), torch.where(below, high, mid)
    num_test = config.num_frames - test_start
    test = 2 * math.pi * torch.arange(num_test, dtype=torch.float64) / num_test
    return torch.cat([(low + high) / 2, test])


def _head_joint(model: ParametricModel) -> str:
    """The joint the cranium rides: SMPL-X's head, FLAME's neck (FLAME's neck joint turns the head)."""
    return "head" if "head" in model.joint_names else "neck"


def _additions(
    model: ParametricModel,
    subject: Head,
    hair: HairVolume | None,
    glasses: tuple[Tensor, Tensor] | None,
    labels: dict[str, int],
) -> Additions:
    """The hair and glasses carried by the rendered head's joint: its rest -> posed transform moves the canonical
    head rigidly (the cranium's skinning weights are all on it)."""
    transforms = subject.joint_transforms[:, model.joint_index(_head_joint(model))].detach()
    posed = None
    if glasses is not None:
        points = glasses[0] @ transforms[:, :3, :3].transpose(1, 2) + transforms[:, None, :3, 3]
        posed = TriangleMesh(points, glasses[1])
    return Additions(transforms, hair, labels.get(HAIR_VOLUME_LABEL, 0), posed, labels.get(GLASSES_LABEL, 0))


def _tracking_error(params: TrackedParams, config: SyntheticVideoConfig, views: Tensor | None) -> TrackedParams:
    """``params`` with ``config.expression_noise`` on each frame's expression, drawn from a generator of its own (the
    video's other draws stay as they were); the novel-view frames (the last, of training frames ``views``) carry the
    very error of the timestep they see again."""
    if config.expression_noise is None:
        return params
    n = config.num_frames
    generator = torch.Generator().manual_seed(config.seed)
    error = torch.randn(n, params.expression.shape[1], generator=generator, dtype=torch.float64) * config.expression_noise
    if views is not None:
        error = torch.cat([error, error[views]])
    return replace(params, expression=(params.expression.double() + error).to(params.expression.dtype))


def _turned(cameras: PinholeCameras, heads: Tensor, views: Tensor, yaw: float) -> PinholeCameras:
    """``cameras`` (the video's frames') and, after them, those of training frames ``views`` turned by ``yaw`` about
    the vertical through each one's head (``heads [K, V, 3]``, those frames' vertices): the novel views."""
    c, s = math.cos(yaw), math.sin(yaw)
    pose = cameras.camera_to_world
    turn = torch.eye(4, dtype=pose.dtype, device=pose.device).repeat(len(views), 1, 1)
    turn[:, :3, :3] = torch.tensor([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]], dtype=pose.dtype, device=pose.device)
    centre = heads.mean(dim=1).to(pose)
    turn[:, :3, 3] = centre - torch.einsum("kij,kj->ki", turn[:, :3, :3], centre)
    return replace(cameras, camera_to_world=torch.cat([pose, turn @ pose[views.to(pose.device)]]))


def _cameras(head: Head, config: SyntheticVideoConfig, generator: torch.Generator, extra: Tensor | None = None) -> PinholeCameras:
    """A camera in front of the head (+z) at the distance where the head's box fills the view, drifting.

    A portrait (SMPL-X) is framed on the head and shoulders: the box of the vertices outside the torso region,
    extended down into the torso by SHOULDER_DROP of its height. ``extra``: canonical points the box must also
    hold (the hair's outer surface, the glasses).
    """
    rest = head.canonical_vertices.detach()
    if "torso" in head.regions:
        torso = torch.zeros(len(rest), dtype=torch.bool, device=rest.device)
        torso[head.regions["torso"]] = True
        top, bottom = rest[~torso, 1].max(), rest[~torso, 1].min()
        rest = rest[rest[:, 1] >= bottom - SHOULDER_DROP * (top - bottom)]
    if extra is not None:
        rest = torch.cat([rest, extra.to(rest)])
    low, high = rest.amin(dim=0), rest.amax(dim=0)
    centre, half = (low + high) / 2, (high - low) / 2
    # The box's front face spans the image (up to the margin); an orbit must also fit the box turned sideways.
    half_width = max(float(half[0]), float(half[2])) if config.orbit else float(half[0])
    distance = FRAME_MARGIN * max(half_width, float(half[1])) / math.tan(config.fov / 2) + float(half[:3:2].max())
    n = config.num_frames
    drift = CAMERA_DRIFT * _smooth_noise(n, 3, generator).to(rest)
    eye = centre + torch.tensor([0.0, 0.0, distance], dtype=rest.dtype, device=rest.device) + drift
    camera_to_world = look_at(eye, centre.expand(n, 3), torch.tensor([0.0, 1.0, 0.0], dtype=rest.dtype, device=rest.device))
    return PinholeCameras.from_fov(camera_to_world, config.resolution, config.resolution, config.fov)
