import pytest

from headfields.apps.tracking import video_tracker
from headfields.apps.tracking.avatar_refinement import AvatarRefinementConfig


@pytest.fixture(autouse=True)
def landmark_stages_alone(monkeypatch):
    """The tracker's tests hold the landmark stages to their aims: the refinement through an avatar (minutes at 512 px)
    has its own tests (test_avatar_refinement.py). The default is the module's, which the track command reads too."""
    monkeypatch.setattr(video_tracker, "DEFAULT_REFINEMENT", AvatarRefinementConfig(avatar_steps=0))
