"""``python -m headfields template``: a synthetic turn's video, with landmark files (its true points projected, where
the face is in view) and mask files, turned into a template folder by a run interrupted after its cues and resumed;
bad input is refused in one line with nothing left at the output path."""

import json
import math
import shutil
from dataclasses import replace

import numpy as np
import pytest
import torch
from PIL import Image
from smplx.lbs import batch_rodrigues

from headfields.apps.commands import main
from headfields.apps.media import write_video
from headfields.apps.tracking import template_tracker
from headfields.apps.tracking.template_tracker import load_template
from headfields.apps.tracking.template_video import TemplateVideoConfig, track_template_video
from headfields.cameras import project_points
from headfields.data import load_insta_dataset
from headfields.fitting import SurfaceLandmarks, TemplateTrackingConfig
from headfields.fitting.landmark_tracking import OPENCV_FROM_WORLD
from headfields.parametric import load_model
from headfields.synthetic import cached_synthetic_video, portrait_person

FRAMES = 40
IN_VIEW = math.radians(50.0)


@pytest.fixture(scope="module")
def turn(tmp_path_factory):
    """The turn's mp4, landmark and mask folders, focal length and true rotations in the tracker's world."""
    folder = tmp_path_factory.mktemp("turn")
    config, _ = portrait_person(seed=3, resolution=64, supersampling=1)
    root = cached_synthetic_video(replace(config, num_frames=FRAMES + 1, num_val=1, num_test=1))  # as test_turn_tracking
    parts = [load_insta_dataset(root, split) for split in ("train", "val")]
    cameras = replace(parts[0].cameras, camera_to_world=torch.cat([p.cameras.camera_to_world for p in parts]))
    pose = torch.cat([p.params.pose for p in parts])
    translation = torch.cat([p.params.translation for p in parts])
    model = load_model(root / "model", model_type="smplx")
    rotation = (OPENCV_FROM_WORLD.float() @ torch.linalg.inv(cameras.camera_to_world))[:, :3, :3] @ batch_rodrigues(pose[:, 0])
    in_view = torch.atan2(rotation[:, 0, 2], rotation[:, 2, 2]).abs() < IN_VIEW
    surface = SurfaceLandmarks.static(model)
    on_face = surface.points(model(shape=parts[0].params.shape, pose=pose, translation=translation).vertices, model.faces)
    k = on_face.shape[1]
    pixels = project_points(cameras, on_face.reshape(-1, 3), torch.arange(FRAMES).repeat_interleave(k)).pixels.view(FRAMES, k, 2)
    video = folder / "turn.mp4"
    write_video(video, torch.cat([p.images for p in parts]), fps=25)
    landmarks, masks, faceless, holed = (folder / name for name in ("landmarks", "masks", "faceless", "holed"))
    for made in (landmarks, masks, faceless, holed):
        made.mkdir()
    for i, (mask, seen) in enumerate(zip(torch.cat([p.masks for p in parts]), in_view, strict=True)):
        points = np.full((68, 2), np.nan, dtype=np.float32)
        if seen:  # the 51 points of SMPL-X's static embedding; the jaw's contour, unused, anywhere finite
            points[:] = pixels[i].mean(0).numpy()
            points[surface.observed.numpy()] = pixels[i].numpy()
        np.save(landmarks / f"{i:05d}.npy", points)
        np.save(faceless / f"{i:05d}.npy", np.full((68, 2), np.nan, dtype=np.float32))
        Image.fromarray(mask.numpy().astype(np.uint8) * 255).save(masks / f"{i:05d}.png")
        Image.fromarray(mask.numpy().astype(np.uint8) * 255 * (i != 20)).save(holed / f"{i:05d}.png")  # a matte missed
    return video, landmarks, masks, faceless, cameras.fx, rotation, in_view, holed


def _command(turn, out, *extra):
    video, landmarks, masks, _, focal, _, _, _ = turn
    cues = ["--landmarks", str(landmarks), "--masks", str(masks), "--size", "64", "--focal", str(focal)]
    return ["template", str(video), "--out", str(out), *cues, "--rounds", "1", "--template-steps", "30", *extra]


def test_an_interrupted_template_resumes_and_writes_the_template_and_the_turn_s_tracking(turn, tmp_path, monkeypatch, capsys):
    out = tmp_path / "template"

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(template_tracker, "track_turn", interrupted)
    assert main(_command(turn, out)) == 130  # Ctrl-C after the cues: they stay for the rerun, nothing at --out
    assert not out.exists() and len(list(tmp_path.glob(".template.tracking-*/cues.pt"))) == 1
    monkeypatch.undo()
    capsys.readouterr()
    assert main(_command(turn, out)) == 0
    assert "track: cues from the interrupted run" in capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir()) == ["model", "template.npz", "template.obj", "tracking.json"]
    assert [p.name for p in tmp_path.iterdir()] == ["template"]  # the work folder gone
    template = load_template(out)
    model = load_model(out / "model", model_type="smplx")
    assert template["offsets"].shape == template["vertices"].shape == (model.num_vertices, 3)
    assert template["global_orient"].shape == template["transl"].shape == (FRAMES, 3)
    rotation, in_view = turn[5], turn[6]
    cosine = ((batch_rodrigues(template["global_orient"]).transpose(1, 2) @ rotation).diagonal(dim1=1, dim2=2).sum(-1) - 1) / 2
    error = torch.rad2deg(torch.acos(cosine.clamp(-1, 1)))
    assert float(error.median()) < 5.0, error  # one round of 30 steps (the library's test holds the default's accuracy)
    assert torch.equal(template["found"], in_view)
    report = json.loads((out / "tracking.json").read_text())
    assert report["frames"] == FRAMES and report["found"] == int(in_view.sum())


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"--trim-end": "1.2"}, "masks: expected the subject to turn once all the way round"),  # 0.4 s: a quarter turn
        ({"--landmarks": "faceless"}, "expected a face in at least one frame"),
        ({"--masks": "holed"}, "masks: expected the subject in every frame, 1 frames have none (the first: [20])"),
        ({"--rounds": "0"}, "rounds: expected"),
    ],
)
def test_bad_input_is_refused_in_one_line_leaving_nothing(turn, tmp_path, capsys, change, message):
    command = _command(turn, tmp_path / "template")
    for flag, value in change.items():
        value = {"faceless": str(turn[3]), "holed": str(turn[7])}.get(value, value)
        if flag in command:
            command[command.index(flag) + 1] = value
        else:
            command += [flag, value]
    assert main(command) == 2
    err = capsys.readouterr().err  # progress lines, then the refusal's one line
    assert message in err.strip().splitlines()[-1] and "template: error:" in err and "Traceback" not in err, err
    assert list(tmp_path.iterdir()) == []


@pytest.fixture(scope="module")
def template(turn, tmp_path_factory):
    out = tmp_path_factory.mktemp("built") / "template"
    assert main(_command(turn, out)) == 0
    return out


def test_a_video_tracked_against_the_template_is_a_capture_of_smplx(turn, template, tmp_path):
    video, landmarks, masks, _, focal, rotation, _, _ = turn
    stored = load_template(template)
    assert stored["colours"].shape == (len(stored["offsets"]), 3) and 0.5 < float(stored["seen"].float().mean()) < 1.0
    tracking = TemplateTrackingConfig(
        rigid_steps=100, yaw_bins=36, search_points=256, steps=30, frames_per_step=8, points_per_frame=512,
        visibility_every=15,
    )  # fmt: skip
    config = TemplateVideoConfig(size=64, focal=focal, test_frames=4, tracking=tracking)
    out = track_template_video(video, template, tmp_path / "capture", config, landmarks=landmarks, masks=masks)
    frames = [load_insta_dataset(out, split) for split in ("train", "val", "test")]
    assert [len(f) for f in frames] == [FRAMES - 5, 1, 4]
    model = load_model(out / "model", model_type="smplx")
    pose = torch.cat([f.params.pose for f in frames])
    assert pose.shape == (FRAMES, model.num_joints, 3) and torch.equal(frames[0].params.shape, stored["shape"].float())
    head = batch_rodrigues(pose[:, 0]) @ batch_rodrigues(pose[:, model.joint_index("head")])
    cosine = ((head.transpose(1, 2) @ rotation).diagonal(dim1=1, dim2=2).sum(-1) - 1) / 2
    error = torch.rad2deg(torch.acos(cosine.clamp(-1, 1)))
    assert float(error.median()) < 8.0, error  # 30 steps (the library's test holds the tracker's accuracy)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["capture"]  # the work folder gone


def test_a_template_of_another_topology_or_flame_s_flags_are_refused_in_one_line(turn, template, tmp_path, capsys):
    video, landmarks, masks = (str(x) for x in turn[:3])
    other = tmp_path / "other"
    shutil.copytree(template, other)
    stored = {name: value.numpy() for name, value in load_template(template).items()}
    np.savez(other / "template.npz", **{**stored, "offsets": stored["offsets"][:-1]})
    command = ["track", video, "--out", str(tmp_path / "capture"), "--landmarks", landmarks, "--masks", masks]
    for extra, message in (
        (["--template", str(other)], "template: expected a template of the model's"),
        (["--template", str(template), "--flame", str(other)], "flame: expected no --flame with --template"),
    ):
        assert main([*command, *extra]) == 2
        err = capsys.readouterr().err
        assert message in err.strip().splitlines()[-1] and "Traceback" not in err, err
        assert sorted(p.name for p in tmp_path.iterdir()) == ["other"]
