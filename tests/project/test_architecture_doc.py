"""docs/architecture.md's "write your own avatar" runs as written: its avatar trains with the shared loop."""

import json
import re
from pathlib import Path

from headfields.training import TrainingConfig, train

DOC = (Path(__file__).parents[2] / "docs" / "architecture.md").read_text()


def test_write_your_own_avatar_trains_as_written(tiny_video, tmp_path):
    blocks = re.findall(r"```python\n(.*?)```", DOC.split("## Write your own avatar")[1], re.S)
    assert len(blocks) == 2
    assert len(blocks[0].strip().splitlines()) < 30  # the promise: a new avatar in under 30 lines
    scope: dict = {}
    exec(compile(blocks[0], "docs/architecture.md", "exec"), scope)
    train_frames, eval_frames = tiny_video
    from headfields.parametric import load_model

    model = scope["MyAvatar"](load_model(train_frames.model_path, train_frames.model_type))
    config = TrainingConfig(max_iterations=30, rays_per_batch=128, eval_every=0, checkpoint_every=0, log_every=10)
    lines = []
    metrics = train(model, train_frames, eval_frames, tmp_path, config, log=_Lines(lines))
    assert metrics["iterations"] == 30 and metrics["psnr"] > 0
    losses = [json.loads(line)["loss"] for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert len(losses) == 4 and losses[-1] < losses[0], losses  # steps 1, 10, 20, 30: it learns
    assert any(line.startswith("final  psnr") for line in lines)  # the log object got the loop's lines
    # The second block names what the first defines and the loop's entry points.
    assert "train(MyAvatar(" in blocks[1] and "synthetic_subject()" in blocks[1]


class _Lines:
    def __init__(self, lines):
        self.lines = lines

    def write(self, text):
        self.lines.extend(t for t in text.splitlines() if t)

    def flush(self):
        pass
