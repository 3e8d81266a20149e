"""``train portrait360 --video VIDEO --template TURN``'s chain: the turn's template and the video's capture each made
once into the cache, under their videos' contents, and reused; refused in one line where it cannot apply."""

from pathlib import Path

import pytest

from headfields.apps.commands import main
from headfields.apps.tracking import template_video


@pytest.fixture
def made(tmp_path, monkeypatch):
    """The two trackers replaced by stand-ins that write their marker files and count their calls."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    calls = []

    def template(turn, out, smplx=None, log=print):
        calls.append(("template", Path(turn).name))
        Path(out).mkdir(parents=True)
        (Path(out) / "template.npz").write_bytes(b"")
        return Path(out)

    def capture(video, template, out, smplx=None, log=print):
        calls.append(("capture", Path(video).name, Path(template).parent.name))
        Path(out).mkdir(parents=True)
        (Path(out) / "tracking.json").write_text("{}")
        return Path(out)

    monkeypatch.setattr(template_video, "track_template", template)
    monkeypatch.setattr(template_video, "track_template_video", capture)
    for name, content in (("turn.mp4", b"turning"), ("video.mp4", b"talking"), ("other.mp4", b"talking more")):
        (tmp_path / name).write_bytes(content)
    return tmp_path, calls


def test_the_template_and_the_capture_are_made_once_and_reused(made):
    folder, calls = made
    lines = []
    first = template_video.templated_capture(folder / "video.mp4", folder / "turn.mp4", log=lines.append)
    again = template_video.templated_capture(folder / "video.mp4", folder / "turn.mp4", log=lines.append)
    other = template_video.templated_capture(folder / "other.mp4", folder / "turn.mp4", log=lines.append)
    assert first == again != other and first.parent == folder / "cache" / "headfields" / "tracked"
    assert calls == [("template", "turn.mp4"), ("capture", "video.mp4", "templates"), ("capture", "other.mp4", "templates")]
    assert any("was built before" in line for line in lines) and any(
        "tracked against its template before" in line for line in lines
    )


def test_a_missing_video_or_a_flame_model_is_refused_in_one_line(made, capsys):
    folder, calls = made
    with pytest.raises(ValueError, match="template: expected a video file"):
        template_video.templated_capture(folder / "video.mp4", folder / "missing.mp4")
    assert main(["train", "insta", "--video", str(folder / "video.mp4"), "--template", str(folder / "turn.mp4")]) == 2
    err = capsys.readouterr().err
    assert "template: expected --video and a model of SMPL-X" in err.strip().splitlines()[-1] and "Traceback" not in err
    assert calls == []
