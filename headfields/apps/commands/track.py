"""``python -m headfields track VIDEO --out CAPTURE``: a video of a face turned into a capture in INSTA's layout (or
VHAP's, ``--layout vhap``) that every FLAME model trains on: MediaPipe's face mesh (or your landmark files), the
selfie mask (or your matting), lip and mouth labels, a FLAME fit, all on the CPU. Rerun the same command to resume an
interrupted run.

    python -m headfields track clip.mp4 --out captures/me
    python -m headfields track clip.mp4 --out captures/me --flame FLAME2023/ --identity identity.npy
    python -m headfields track clip.mp4 --out captures/me --landmarks lmks/ --masks alpha/ --trim-start 2
    python -m headfields track clip.mp4 --out captures/me_vhap --layout vhap
    python -m headfields track clip.mp4 --out captures/me --landmarks mp478/ --embedding emb.npz --trust-landmarks

With ``--template DIR`` (``python -m headfields template``'s folder) the video is tracked against the subject's
personal template instead, the back of the head included: SMPL-X's body, head, jaw and expressions per frame, a
capture ``portrait360`` trains on.

    python -m headfields track video.mp4 --template template/ --out captures/me360 --masks alpha/
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
    parser.add_argument(
        "--size", type=int, default=None, help="the capture's images: this many pixels a side (default 512; 256 with --template)"
    )
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
    parser.add_argument(
        "--template", type=Path, default=None,
        help="a personal template's folder (python -m headfields template): track SMPL-X against it, back views included",
    )  # fmt: skip
    parser.add_argument("--smplx", type=Path, default=None, help="with --template: the SMPL-X folder it was built on")
    parser.add_argument("--focal", type=float, default=None, help="with --template: the camera's focal length, pixels")
    parser.set_defaults(command=track)


# What only the FLAME tracker reads: refused with --template, where they would be ignored.
FLAME_FLAGS = ("flame", "identity", "embedding", "photometric_steps", "photometric_weight", "avatar_steps")


def _track_template(args: argparse.Namespace) -> int:
    from ..tracking.template_video import TemplateVideoConfig, track_template_video

    for name in FLAME_FLAGS:
        if getattr(args, name) is not None:
            raise ValueError(f"{name.replace('_', '-')}: expected no --{name.replace('_', '-')} with --template (FLAME's)")
    if args.trust_landmarks or args.whole_frame or args.layout != "insta" or args.correspondence != "model":
        raise ValueError("template: expected none of --trust-landmarks, --whole-frame, --layout, --correspondence (FLAME's)")
    size = 256 if args.size is None else args.size
    config = TemplateVideoConfig(
        fps=args.fps, trim_start=args.trim_start, trim_end=args.trim_end, size=size, focal=args.focal,
        test_frames=args.test_frames,
    )  # fmt: skip
    track_template_video(
        args.video, args.template, args.out, config, landmarks=args.landmarks, landmarks_first=args.landmarks_first,
        masks=args.masks, smplx=args.smplx,
    )  # fmt: skip
    return 0


def track(args: argparse.Namespace) -> int:
    from ...fitting.landmark_config import TRUSTED_LANDMARKS, LandmarkTrackingConfig
    from ..tracking.avatar_refinement import AvatarRefinementConfig
    from ..tracking.video_tracker import VideoTrackerConfig, track_video

    if args.template is not None:
        return _track_template(args)
    if args.smplx is not None or args.focal is not None:
        raise ValueError("template: expected --template DIR with --smplx and --focal")
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
        size=512 if args.size is None else args.size,
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
