"""``python -m headfields template VIDEO --out TEMPLATE``: a video of the subject turning once on a chair, a neutral
face on a still neck, turned into their personal template (the 360-degree portrait's first step): SMPL-X's shape
with per-vertex offsets for hair and clothing, and the turn's tracking (the back of the head included), on the CPU.
Rerun the same command to resume an interrupted run.

    python -m headfields template turn.mp4 --out template/
    python -m headfields template turn.mp4 --out template/ --smplx SMPLX2020/ --focal 1450
    python -m headfields template turn.mp4 --out template/ --landmarks lmks/ --masks alpha/ --rounds 1
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

from ._common import add_video_cues, command_parser

__all__ = ["add_parser", "template"]


def add_parser(commands) -> None:
    parser = command_parser(commands, "template", "build a personal template from a video of a turn", __doc__)
    parser.add_argument("video", type=Path, help="the video (mp4, mov, ...) of one turn; a phone's rotation flag is honoured")
    parser.add_argument("--out", type=Path, required=True, help="a new folder for the template")
    add_video_cues(parser)
    parser.add_argument("--size", type=int, default=256, help="the frames the turn is tracked on: this many pixels a side")
    parser.add_argument("--focal", type=float, default=None, help="the camera's focal length, pixels (default: a phone's)")
    parser.add_argument("--smplx", type=Path, default=None, help="your SMPL-X model's folder (default: the synthetic SMPL-X)")
    parser.add_argument("--rounds", type=int, default=None, help="templates fitted, the poses refined between (default 2)")
    parser.add_argument("--template-steps", type=int, default=None, help="each template fit's steps (default 150)")
    parser.set_defaults(command=template)


def template(args: argparse.Namespace) -> int:
    from ...fitting.turn_tracking import TurnTrackingConfig
    from ..tracking.template_tracker import TemplateTrackerConfig, track_template

    turn = TurnTrackingConfig()
    if args.rounds is not None:
        turn = replace(turn, rounds=args.rounds)
    if args.template_steps is not None:
        turn = replace(turn, template=replace(turn.template, steps=args.template_steps))
    config = TemplateTrackerConfig(
        fps=args.fps, trim_start=args.trim_start, trim_end=args.trim_end, size=args.size, focal=args.focal, turn=turn
    )
    track_template(
        args.video, args.out, config, landmarks=args.landmarks, landmarks_first=args.landmarks_first, masks=args.masks,
        smplx=args.smplx,
    )  # fmt: skip
    return 0
