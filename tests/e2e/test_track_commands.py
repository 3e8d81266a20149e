"""The commands that take a video: ``train MODEL --video`` tracks a clip it has not seen with the model it trains (the
user's FLAME folder, named by no capture; cached by the clip's content and that folder, so a second use reads it back)
and ``render RUN --drive VIDEO`` reenacts from another clip, every frame of it, tracked first with the run's FLAME;
``track`` refuses an output folder that holds files, one line, nothing changed."""

import functools

import torch

from headfields.apps.commands import main
from headfields.apps.media import read_video, write_video
from headfields.apps.tracking import tracked_capture, video_tracker
from headfields.apps.tracking.avatar_refinement import AvatarRefinementConfig
from headfields.apps.tracking.model_files import mediapipe_folder
from headfields.data import load_insta_dataset
from headfields.fitting import LandmarkTrackingConfig
from headfields.synthetic import SyntheticVideoConfig, make_synthetic_video, write_synthetic_flame

TRAIN = ["--max-iterations", "3", "--eval-every", "0", "--checkpoint-every", "0", "--device", "cpu"]
FRAMES = 18  # 15 in the clip: the synthetic video's training frames


def _clip(root, path, seed, rotation):
    config = SyntheticVideoConfig(num_frames=FRAMES, num_val=1, num_test=2, resolution=128, supersampling=1, seed=seed)
    images = load_insta_dataset(make_synthetic_video(root, config), "train").images
    write_video(path, torch.rot90(images, k=-rotation // 90, dims=(1, 2)), fps=25, rotation=rotation)
    return path


def test_train_and_drive_from_videos(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HEADFIELDS_MEDIAPIPE", str(mediapipe_folder()))  # the installed models, before the cache moves
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    # The avatar refinement run, not its accuracy (test_avatar_refinement.py): minutes at 512 px by default. Likewise the
    # FLAME fit's stages, few steps, and the iBUG table for MediaPipe's points (the model's own views, 13 s for the two
    # clips, are test_video_tracker.py's): what these commands track with, not how well.
    monkeypatch.setattr(video_tracker, "DEFAULT_REFINEMENT", AvatarRefinementConfig(avatar_steps=5, refit_steps=1, size=32))
    fit = LandmarkTrackingConfig(keyframe_steps=4, frame_steps=3, global_steps=3, photometric_steps=2)
    quick = functools.partial(video_tracker.VideoTrackerConfig, fit=fit, correspondence="table")
    monkeypatch.setattr(video_tracker, "VideoTrackerConfig", quick)
    clip = _clip(tmp_path / "a", tmp_path / "me.mp4", seed=0, rotation=90)
    other = _clip(tmp_path / "b", tmp_path / "other.mp4", seed=1, rotation=0)

    flame = write_synthetic_flame(tmp_path / "FLAME2023")  # stands for the user's licensed files, kept apart
    run = tmp_path / "run"
    assert main(["train", "gaussian_avatar", "--video", str(clip), "--model", str(flame), "--out", str(run), *TRAIN]) == 0
    cache = tmp_path / "cache" / "headfields" / "tracked"
    tracked = list(cache.iterdir())
    assert len(tracked) == 1 and (tracked[0] / "tracking.json").is_file()  # cached by the clip's content
    assert load_insta_dataset(tracked[0], "train", pixels=False).model_path is None  # no copy, no path out of it
    assert not (tracked[0] / "model").exists()
    lines = []
    assert tracked_capture(clip, flame=flame, log=lines.append) == tracked[0] and "was tracked before" in lines[0]

    out = tmp_path / "reenacted.mp4"
    assert main(["render", str(run), "--drive", str(other), "--out", str(out), "--resolution", "128", "--device", "cpu"]) == 0
    assert read_video(out).shape[0] == FRAMES - 3  # every frame of the other clip drives the avatar
    driver = set(cache.iterdir()) - {tracked[0]}
    assert len(driver) == 1 and not (driver.pop() / "model").exists()  # fitted with the run's FLAME, not the synthetic

    capsys.readouterr()
    assert main(["track", str(clip), "--out", str(run)]) == 2  # a folder that holds files: refused, nothing changed
    assert "track: error: out: expected a new or empty folder" in capsys.readouterr().err
    assert (run / "config.json").is_file()


def test_video_and_data_together_are_refused(tmp_path, capsys):
    assert main(["train", "gaussian_avatar", "--video", str(tmp_path / "x.mp4"), "--data", str(tmp_path), *TRAIN]) == 2
    assert "video: expected either --video or --data, got both" in capsys.readouterr().err


def test_trusted_landmarks_need_landmarks(tmp_path, capsys):
    """``--trust-landmarks`` without ``--landmarks``: one line naming what is missing, nothing written."""
    out = tmp_path / "me"
    assert main(["track", str(tmp_path / "x.mp4"), "--out", str(out), "--trust-landmarks"]) == 2
    assert "track: error: trust-landmarks: expected --landmarks DIR" in capsys.readouterr().err
    assert not out.exists()


def test_trusted_landmarks_fit_with_their_preset(tmp_path, monkeypatch):
    """``--trust-landmarks``: TRUSTED_LANDMARKS and no avatar; a photometric flag or --avatar-steps still wins."""
    from headfields.fitting import TRUSTED_LANDMARKS

    seen = []
    monkeypatch.setattr(video_tracker, "track_video", lambda video, out, config, **options: seen.append(config))
    base = ["track", str(tmp_path / "x.mp4"), "--out", str(tmp_path / "me"), "--landmarks", str(tmp_path)]
    assert main([*base, "--trust-landmarks"]) == 0
    assert main([*base, "--trust-landmarks", "--photometric-steps", "3", "--avatar-steps", "7"]) == 0
    assert main(base) == 0
    assert seen[0].fit == TRUSTED_LANDMARKS and seen[0].refine.avatar_steps == 0
    assert seen[1].fit.photometric_steps == 3 and seen[1].fit.expression_prior == TRUSTED_LANDMARKS.expression_prior
    assert seen[1].refine.avatar_steps == 7
    assert seen[2].fit == LandmarkTrackingConfig() and seen[2].refine.avatar_steps > 0
