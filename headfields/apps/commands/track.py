"""``python -m headfields track VIDEO --out CAPTURE``: a video of a face turned into a capture in INSTA's layout (or
VHAP's, ``--layout vhap``) that every FLAME model trains on: MediaPipe's face mesh (or your landmark files), the
selfie mask (or your matting), lip and mouth labels, a FLAME fit, all on the CPU. Rerun the same command to resume an
interrupted run.

    python -m headfields track clip.mp4 --out captures/me
    python -m headfields track clip.mp4 --out captures/me --flame FLAME2023/ --identity identity.npy
    python -m headfields track clip.mp4 --out captures/me --landmarks lmks/ --masks alpha/ --trim-start 2
    python -m headfields track clip.mp4 --out captures/me_vhap --layout vhap
    python -m headfields track clip.mp4 --out captures/me --landmarks mp478/ --embedding emb.npz --trust-landmarks
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

from ._common import add_video_cues, command_parser

__all__ = ["add_parser", "track"]


def add_parser(commands) -> None:
    parser = command_parser(commands, "track", "track a video of a face into a capture", __doc__)
    parser.add_argument("video", type=Path, help="the video (mp4, mov, ...); a phone's rotation flag is honoured")
    parser.add_argument("--out", type=Path, required=True, help="a new folder for the capture")
    add_video_cues(parser)
    parser.add_argument("--whole-frame", action="store_true", help="no crop around the face: the whole frame, padded square")
    parser.add_argument("--size", type=int, default=512, help="the capture's images: this many pixels a side")
    parser.add_argument("--test-frames", type=int, default=None, help="held out at the end (default: 350, at most a tenth)")
    parser.add_argument(
        "--flame",
        type=Path,
        default=None,
        help="your FLAME model's folder, named by no capture: train with --model (default: the synthetic FLAME, copied in)",
    )
    parser.add_argument("--identity", type=Path, default=None, help="MICA's identity.npy: the FLAME shape, held")
    parser.add_argument(
        "--embedding", type=Path, default=None,
        help="MediaPipe's points on your model (mediapipe_landmark_embedding.npz layout), fitted instead of the iBUG table",
    )  # fmt: skip
    parser.add_argument(
        "--photometric-steps", type=int, default=None,
        help="Gauss-Newton steps with the frames' pixels after the landmarks (0: none; default: the fit's)",
    )  # fmt: skip
    parser.add_argument(
        "--photometric-weight", type=float, default=None,
        help="a frame's mean pixel cost against a landmark's squared pixel (default: the fit's; lower for landmarks you trust)",
    )  # fmt: skip
    parser.add_argument(
        "--trust-landmarks",
        action="store_true",
        help="your --landmarks are exact to their noise (dense MediaPipe points with --embedding): priors and a light "
        "photometric stage for them (headfields.fitting.TRUSTED_LANDMARKS); no avatar unless --avatar-steps is given",
    )
    parser.add_argument(
        "--avatar-steps", type=int, default=None,
        help="training steps of the avatar of the video each frame's head turn is refitted through (0: none; default 3000)",
    )  # fmt: skip
    parser.add_argument(
        "--layout", choices=("insta", "vhap"), default="insta",
        help="INSTA's (metrical-tracker's) layout or VHAP's export (GaussianAvatars'; train with --model CAPTURE/model)",
    )  # fmt: skip
    parser.add_argument(
        "--correspondence", choices=("model", "table"), default="model",
        help="MediaPipe's points on the model: where its own views place them, or our MediaPipe -> iBUG table",
    )  # fmt: skip
    parser.set_defaults(command=track)


def track(args: argparse.Namespace) -> int:
    from ...fitting.landmark_config import TRUSTED_LANDMARKS, LandmarkTrackingConfig
    from ..tracking.avatar_refinement import AvatarRefinementConfig
    from ..tracking.video_tracker import VideoTrackerConfig, track_video

    given = {"photometric_steps": args.photometric_steps, "photometric_weight": args.photometric_weight}
    photometric = {name: value for name, value in given.items() if value is not None}
    if args.trust_landmarks and args.landmarks is None:
        raise ValueError("trust-landmarks: expected --landmarks DIR, the points to trust")
    fit = replace(TRUSTED_LANDMARKS if args.trust_landmarks else LandmarkTrackingConfig(), **photometric)
    avatar_steps = 0 if args.trust_landmarks and args.avatar_steps is None else args.avatar_steps
    config = VideoTrackerConfig(
        fps=args.fps,
        trim_start=args.trim_start,
        trim_end=args.trim_end,
        size=args.size,
        whole_frame=args.whole_frame,
        test_frames=args.test_frames,
        layout=args.layout,
        correspondence=args.correspondence,
        fit=fit,
        **({} if avatar_steps is None else {"refine": AvatarRefinementConfig(avatar_steps=avatar_steps)}),
    )
    track_video(
        args.video,
        args.out,
        config,
        landmarks=args.landmarks,
        landmarks_first=args.landmarks_first,
        masks=args.masks,
        flame=args.flame,
        identity=args.identity,
        embedding=args.embedding,
    )
    return 0
