"""MediaPipe's face landmarker and selfie segmentation (its own models, our pre- and post-processing) against the
synthetic head's geometry: its FLAME landmarks projected by the true cameras, and its rendered mask. The models
are MediaPipe's real ones, installed by ``make setup`` (python -m headfields.apps.tracking.model_files)."""

import builtins
import math
from dataclasses import replace

import numpy as np
import pytest
import torch
from PIL import Image

from headfields.apps.tracking import mediapipe
from headfields.apps.tracking.correspondence import mediapipe_irises
from headfields.apps.tracking.mediapipe import FaceLandmarker, SelfieSegmenter
from headfields.cameras import project_points
from headfields.data import load_insta_dataset
from headfields.parametric import EYE_JOINTS, load_model
from headfields.synthetic import SyntheticVideoConfig, make_synthetic_video

from helpers import shapes_unchecked, true_pupils

SIZE = 256
# MediaPipe's mesh index -> the same place among iBUG-68's points (FLAME's static landmarks are iBUG 17..67):
# outer eye corners, mouth corners, nose tip. MediaPipe's 1 is the tip's front, 4 the tip as iBUG 30 marks it.
PAIRS = {"eye corners": ([33, 263], [36, 45]), "mouth corners": ([61, 291], [48, 54]), "nose tip": ([4], [30])}
# Worst distance (pixels, 256 px frames, ~63 px between the outer eye corners) measured over the video, the same
# frames turned 90 degrees, rolled 20 degrees and cropped at the side: eye corners 2.5, mouth corners 5.4, nose
# tip 3.9 (the synthetic head's lips are drawn wider than MediaPipe puts a real mouth's corners); the margin is
# for XNNPACK's arithmetic on other CPUs.
TOLERANCE = {"eye corners": 4.0, "mouth corners": 8.0, "nose tip": 6.0}


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    """The synthetic head's training frames, their iBUG landmarks in pixels [N, 51, 2] and their masks."""
    root = make_synthetic_video(
        tmp_path_factory.mktemp("mediapipe"),
        SyntheticVideoConfig(num_frames=6, num_val=1, num_test=1, resolution=SIZE, supersampling=1),
    )
    frames = load_insta_dataset(root, "train")
    p = frames.params
    model = load_model(root / "model")
    head = model(shape=p.shape, expression=p.expression, pose=p.pose, translation=p.translation)
    ibug = torch.stack([project_points(frames.cameras, head.landmarks[i], i).pixels for i in range(frames.num_frames)])
    straight = p.pose.clone()
    straight[:, [model.joint_index(name) for name in EYE_JOINTS]] = 0.0
    looking_ahead = true_pupils(model, replace(p, pose=straight), frames.cameras)
    return frames.images, ibug, frames.masks, (true_pupils(model, p, frames.cameras), looking_ahead)


@pytest.fixture(scope="module")
def landmarker():
    return FaceLandmarker()


def _errors(points: torch.Tensor, ibug: torch.Tensor) -> dict[str, float]:
    """The worst distance (pixels) of each pair of :data:`PAIRS` over the frames."""
    return {
        name: (points[:, mp, :2] - ibug[:, [i - 17 for i in ib]]).norm(dim=-1).max().item() for name, (mp, ib) in PAIRS.items()
    }


def _check(faces, ibug: torch.Tensor) -> None:
    assert faces.found.all(), faces.found
    assert (faces.score > 0.9).all(), faces.score
    assert faces.points.shape == (len(ibug), 468, 3) and torch.isfinite(faces.points).all()
    errors = _errors(faces.points, ibug)
    assert all(errors[k] < TOLERANCE[k] for k in PAIRS), errors


def test_landmarks_on_the_projected_face(video, landmarker):
    images, ibug, *_ = video
    faces = landmarker(images)
    _check(faces, ibug)
    # z: MediaPipe's relative depth, in pixels: the nose tip nearer the camera than the outer eye corners.
    assert (faces.points[:, 4, 2] < faces.points[:, [33, 263], 2].min(dim=1).values - 10).all()
    # MediaPipe's own video mode (a detected frame's landmarks from the detector's crop alone) is as close here.
    _check(FaceLandmarker(refine_detections=False)(images), ibug)


def test_irises_follow_the_gaze(video, landmarker):
    """The refined mesh's irises against the pupils of the synthetic eyes, which look about by up to 14 degrees."""
    images, _, _, (pupils, looking_ahead) = video
    faces = FaceLandmarker(irises=True)(images)
    assert faces.points.shape == (len(images), 478, 3) and torch.isfinite(faces.points).all()
    assert faces.points[:, :468].equal(landmarker(images).points)  # the face's points as without the irises
    irises, seen = mediapipe_irises(faces.points[..., :2])
    assert seen.all(), seen
    error, ahead = (irises - pupils).norm(dim=-1), (looking_ahead - pupils).norm(dim=-1)
    # Measured at 256 px (~63 px between the outer eye corners): 0.03-0.71 px, median 0.44; the pupils looking
    # straight ahead would be 1.05-1.65 px off. The margin is for XNNPACK's arithmetic on other CPUs.
    assert float(error.max()) < 1.5 and float(error.median()) < 0.5 * float(ahead.median()), (error, ahead)


def test_turned_a_quarter(video, landmarker):
    images, ibug, *_ = video
    turned = torch.rot90(images, 1, dims=(1, 2))  # counter-clockwise on screen: (x, y) -> (y, W - x)
    _check(landmarker(turned.numpy()), torch.stack([ibug[..., 1], SIZE - ibug[..., 0]], dim=-1))


def test_rolled_twenty_degrees(video, landmarker):
    images, ibug, *_ = video
    angle = 20.0
    rolled = [Image.fromarray(im.numpy()).rotate(angle, resample=Image.BICUBIC, fillcolor=(255, 255, 255)) for im in images]
    rolled = torch.from_numpy(np.stack([np.asarray(im) for im in rolled]))
    # PIL turns counter-clockwise on screen about (W / 2, H / 2), pixel centres at +0.5 (its rotate(90) is np.rot90).
    c, s, d = math.cos(math.radians(angle)), math.sin(math.radians(angle)), ibug - SIZE / 2
    expected = torch.stack([c * d[..., 0] + s * d[..., 1], -s * d[..., 0] + c * d[..., 1]], dim=-1) + SIZE / 2
    _check(landmarker(rolled), expected)


def test_crop_past_the_border_of_a_tall_image(video, landmarker):
    """The face 30 px from the left edge of a 216 x 256 frame: the 1.5x crop reaches past it (padding)."""
    images, ibug, *_ = video
    assert ibug[:, 36 - 17, 0].min() - 40 < 70  # the crop (1.5x the face's ~100 px) reaches past the edge
    _check(landmarker(images[:, :, 40:]), ibug - torch.tensor([40.0, 0.0]))


def test_no_face(video, landmarker):
    """A blank frame: not found, NaN points, score 0; the video goes on (detection again) after it."""
    images, ibug, *_ = video
    blank = torch.full_like(images[:1], 255)
    faces = landmarker(torch.cat([images[:1], blank, images[1:2]]))
    assert faces.found.tolist() == [True, False, True]
    assert faces.score[1] == 0 and torch.isnan(faces.points[1]).all()
    _check(landmarker(images[1:2]), ibug[1:2])
    empty = landmarker(np.zeros((2, 64, 96, 3), np.uint8))
    assert not empty.found.any() and torch.isnan(empty.points).all() and (empty.score == 0).all()


def test_selfie_mask(video):
    images, _, masks, _ = video
    probability = SelfieSegmenter()(images)
    assert probability.shape == masks.shape and probability.dtype == torch.float32
    assert ((probability >= 0) & (probability <= 1)).all()
    found = probability > 0.5
    iou = (found & masks).sum((1, 2)) / (found | masks).sum((1, 2))
    recall = (found & masks).sum((1, 2)) / masks.sum((1, 2))
    # Measured: IoU 0.77-0.81 (the model adds shoulders below the synthetic neck), recall 0.99.
    assert (iou > 0.7).all() and (recall > 0.95).all(), (iou, recall)
    # Any size, the mask at the frame's: the left half of the frames alone.
    half = SelfieSegmenter()(images[:, :, : SIZE // 2])
    assert half.shape == (len(images), SIZE, SIZE // 2)


def test_bad_input(landmarker):
    with pytest.raises(ValueError, match="images: expected uint8 \\[N, H, W, 3\\]"):
        landmarker(torch.zeros(1, 8, 8, 3))
    with pytest.raises(ValueError, match="images: expected uint8"):
        landmarker(np.zeros((8, 8, 3), np.uint8))
    with shapes_unchecked(), pytest.raises(TypeError, match="images: expected a uint8 torch.Tensor or numpy array"):
        landmarker([[0]])  # what a user without the runtime checker sees
    with pytest.raises(ValueError, match="presence_threshold: expected a probability"):
        FaceLandmarker(presence_threshold=2.0)


def test_missing_extra(monkeypatch):
    real_import = builtins.__import__

    def no_litert(name, *args, **kwargs):
        if name.startswith("ai_edge_litert"):
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_litert)
    with pytest.raises(ImportError) as error:
        mediapipe.load_litert()
    message = str(error.value)
    assert message == 'the tracker\'s landmark detector needs the optional extra: pip install "headfields[track]"'
    assert "\n" not in message and error.value.__cause__ is None and error.value.__suppress_context__
