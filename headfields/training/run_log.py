"""What a run writes as it trains: ``RUN/log.jsonl``, and TensorBoard events where asked for."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
from PIL import Image

from ..outputs import write_atomic
from .evaluation import Evaluation

__all__ = ["RunLog"]

SIDE_BY_SIDE_FRAMES = 4  # held-out frames stacked in out/side_by_side.png, and shown in TensorBoard


class RunLog:
    """``RUN/log.jsonl``: one JSON object a line (``step``, ``time`` in training seconds, then the record's values),
    appended as training goes. A resumed run first drops the lines past its checkpoint's step, so the file is the
    history of the weights it continues from, without the steps an interruption lost."""

    def __init__(self, path: Path, resume_step: int = 0):
        self.path = Path(path)
        kept = []
        if resume_step > 0 and self.path.exists():
            for line in self.path.read_text().splitlines():
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:  # a line cut short by the interruption
                    continue
                if isinstance(record, dict) and record.get("step", math.inf) <= resume_step:
                    kept.append(line)
        write_atomic(self.path, "".join(f"{line}\n" for line in kept))

    def append(self, step: int, seconds: float, **values) -> None:
        record = {"step": step, "time": round(seconds, 3), **values}
        with open(self.path, "a") as f:
            f.write(json.dumps(record, allow_nan=True) + "\n")


def tensorboard_writer(out: Path, step: int):
    """A TensorBoard writer into ``out/tensorboard`` that drops the events past ``step`` (a resumed run's)."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as error:
        raise ImportError(
            f"log: 'tensorboard' needs the tensorboard package ({error}): pip install 'headfields[tensorboard]'"
        ) from None
    return SummaryWriter(str(out / "tensorboard"), purge_step=step if step > 0 else None)


def board_scalars(board, step: int, values: dict[str, float], rates: list[float]) -> None:
    for name, value in values.items():
        board.add_scalar(f"train/{name}", value, step)
    for i, rate in enumerate(rates):
        board.add_scalar(f"learning_rate/group_{i}", rate, step)


def board_evaluation(board, step: int, ev: Evaluation, renders: Path, frames: list[int]) -> None:
    for name in ("psnr", "psnr_head", "ssim", "l1"):
        value = getattr(ev, name)
        if value is not None:
            board.add_scalar(f"eval/{name}", value, step)
    for f in frames[:SIDE_BY_SIDE_FRAMES]:  # truth | render | error of the evaluated frames
        image = np.asarray(Image.open(renders / f"{f:05d}_compare.png"))
        board.add_image(f"eval/frame_{f:05d}", image, step, dataformats="HWC")
    board.flush()
