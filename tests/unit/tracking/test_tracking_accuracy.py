"""The tracker against the truth on the built-in synthetic video (300 frames at 96 px, written as a phone's portrait
clip): the issue's aims held where the tracker meets them; and the measure itself, blind to one similarity transform
of the whole video and to nothing else."""

from dataclasses import replace

import numpy as np
import pytest
import torch

from headfields.apps.media import write_video
from headfields.apps.tracking.accuracy import capture_tracking, tracking_accuracy
from headfields.apps.tracking.embedding import model_embedding, save_embedding
from headfields.apps.tracking.video_tracker import VideoTrackerConfig, track_video
from headfields.cameras import project_points
from headfields.data import TrackedParams, load_insta_dataset
from headfields.fitting.landmark_config import TRUSTED_LANDMARKS
from headfields.parametric import load_model
from headfields.synthetic import SyntheticVideoConfig, cached_synthetic_video

NOISE_PX = 1.5  # of a 512-pixel frame: the "true landmarks plus 1.5 px"
TRACKED = 120  # the video's first frames tracked (its 300 took 128 s in CI; benchmarks/tracking.py tracks them all)
FPS = 25
SPLITS = ("train", "val", "test")


@pytest.fixture(scope="module")
def builtin(tmp_path_factory):
    """The built-in video's truth (its whole tracking, in the tracker's frame order), model and the phone's mp4."""
    config = SyntheticVideoConfig()
    root = cached_synthetic_video(config)
    parts = [load_insta_dataset(root, split) for split in SPLITS]
    images = torch.cat([p.images for p in parts])
    video = tmp_path_factory.mktemp("builtin") / "phone.mp4"
    write_video(video, torch.rot90(images, k=-1, dims=(1, 2)), fps=FPS, rotation=90)
    return root, capture_tracking(root), load_model(root / "model"), video, [len(p) for p in parts]


def test_true_mediapipe_points_track_the_builtin_video(builtin, tmp_path):
    """From true landmarks plus 1.5 px of noise: MediaPipe's points (468 ids) in the tracker's own correspondence (the
    model's views' embedding, given as --embedding; the truth's points are its points on the true meshes, as the iBUG
    ones are the static embedding's), fitted by TRUSTED_LANDMARKS, on the video's first 120 frames: 0.99 mm, 1.07 deg,
    jaw 0.34 deg. Over all 300 (the issue's aims: 1 mm, 1 degree) 0.87 mm, 0.93 deg, jaw 0.35 (five noise draws
    0.82-0.87 mm, 0.88-0.94 deg: benchmarks/tracking.py --variants dense). iBUG's 51 true points reach 1.12 mm only
    through the avatar's refit (benchmarks/tracking.py)."""
    root, (params, cameras), model, video, sizes = builtin
    surface = model_embedding(model, 128)  # 408 of MediaPipe's 468 points
    embedding = save_embedding(tmp_path / "embedding.npz", surface)
    head = model(shape=params.shape, expression=params.expression, pose=params.pose, translation=params.translation)
    points = surface.points(head.vertices, model.faces)
    n, k = points.shape[:2]
    pixels = project_points(cameras, points.reshape(-1, 3), torch.arange(n).repeat_interleave(k)).pixels.reshape(n, k, 2)
    pixels = pixels + torch.randn(n, k, 2, generator=torch.Generator().manual_seed(0)) * NOISE_PX * cameras.width / 512
    folder = tmp_path / "landmarks"
    folder.mkdir()
    for i in range(n):
        mediapipe = np.tile(pixels[i].mean(0).numpy(), (468, 1))  # the points the embedding leaves out: any finite value
        mediapipe[surface.observed.numpy()] = pixels[i].numpy()
        np.save(folder / f"{i:05d}.npy", mediapipe)
    config = VideoTrackerConfig(
        size=cameras.width, whole_frame=True, val_frames=sizes[1], test_frames=sizes[2], fit=TRUSTED_LANDMARKS,
        trim_end=(n - TRACKED) / FPS,
    )  # fmt: skip
    capture = track_video(video, tmp_path / "me", config, landmarks=folder, embedding=embedding, log=lambda line: None)
    kept = torch.arange(TRACKED)
    truth = (params.select(kept), replace(cameras, camera_to_world=cameras.camera_to_world[kept]))
    result = tracking_accuracy(model, capture_tracking(capture), truth)
    assert result.frames == TRACKED and n == 300
    assert result.vertex_mm < 1.2 and result.rotation_deg < 1.3 and result.jaw_deg < 0.6, result


def test_the_measure_ignores_one_rigid_motion_and_sees_each_frames_own(builtin):
    """Every camera turned by 0.3 rad about its own centre and moved along its axis (one rigid motion of all the
    heads in the cameras' frames): 0 mm, 0 degrees. The head's yaw alternately +2 and -2 degrees on its neck, the jaw
    +1 and -1 degree: 2 and 1 degrees, the alignment unable to take either back."""
    _, (params, cameras), model, _, _ = builtin
    c, s_ = float(np.cos(0.3)), float(np.sin(0.3))
    local = torch.tensor([[c, 0.0, s_, 0.0], [0.0, 1.0, 0.0, 0.0], [-s_, 0.0, c, 0.05], [0.0, 0.0, 0.0, 1.0]])
    moved = replace(cameras, camera_to_world=cameras.camera_to_world @ local)
    same = tracking_accuracy(model, (params, moved), (params, cameras))
    assert same.vertex_mm < 1e-3 and same.rotation_deg < 0.05 and same.jaw_deg == 0.0, same
    sign = torch.ones(params.num_frames)
    sign[1::2] = -1
    pose = params.pose.clone()
    pose[:, model.joint_index("neck"), 1] += sign * float(np.deg2rad(2.0))
    pose[:, model.joint_index("jaw"), 0] += sign * float(np.deg2rad(1.0))
    shaken = TrackedParams(params.shape, params.expression, pose, params.translation)
    result = tracking_accuracy(model, (shaken, cameras), (params, cameras))
    assert result.rotation_deg == pytest.approx(2.0, abs=0.2) and result.jaw_deg == pytest.approx(1.0, abs=0.01)
    assert result.vertex_mm > 1.0, result


def test_the_image_measure_ignores_a_crop_and_sees_each_frames_shift(builtin):
    """Cameras of a crop (twice the pixels, the centre moved): 0 px. Each camera moved sideways by half a pixel at the
    head's depth, alternately left and right: 0.5 px (the neck, further back, a little less)."""
    _, (params, cameras), model, _, _ = builtin
    crop = replace(cameras, fx=cameras.fx * 2, fy=cameras.fy * 2, cx=cameras.cx * 2 - 7.0, cy=cameras.cy * 2 + 3.0)
    cropped = tracking_accuracy(model, (params, crop), (params, cameras))
    assert cropped.image_px < 1e-4 and max(cropped.regions_px.values()) < 1e-4, cropped
    head = model(shape=params.shape, expression=params.expression, pose=params.pose, translation=params.translation)
    frame = torch.arange(params.num_frames)
    depth = project_points(cameras, head.landmarks.mean(1), frame).depth
    sign = torch.ones(params.num_frames)
    sign[1::2] = -1
    local = torch.eye(4).repeat(params.num_frames, 1, 1)
    local[:, 0, 3] = sign * 0.5 * depth / cameras.fx
    moved = replace(cameras, camera_to_world=cameras.camera_to_world @ local)
    result = tracking_accuracy(model, (params, moved), (params, cameras))
    assert result.image_px == pytest.approx(0.5, abs=0.03) and result.regions_px["neck"] == pytest.approx(0.5, abs=0.1)
    # The eyes turned 5 degrees, alternately left and right: the face's own measure blind, the whole head's not.
    pose = params.pose.clone()
    for eye in ("left_eye", "right_eye"):
        pose[:, model.joint_index(eye), 1] += sign * float(np.deg2rad(5.0))
    gazing = TrackedParams(params.shape, params.expression, pose, params.translation)
    result = tracking_accuracy(model, (gazing, cameras), (params, cameras))
    same = tracking_accuracy(model, (params, cameras), (params, cameras))
    assert result.image_px < 1e-4 and result.regions_px["neck"] < 1e-4 < 0.1 < result.regions_px["eyes"], result
    assert result.gaze_deg == pytest.approx(5.0) and same.gaze_deg == 0.0, result
