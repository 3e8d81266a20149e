"""MonoAvatar's mesh-anchored UV-CNN features with a hash grid: a combination none of the papers built.

MonoAvatar reads, at each sample in the head's frame, features that ride the tracked FLAME mesh: a UV-space
CNN turns the frame's vertex displacements into a feature per vertex, and the sample blends its 4 nearest
vertices' features. Those follow the expression but are only as fine as the mesh. Here a hash grid of the
sample's head-frame position joins them at the NeRF decoder's input: the grid holds the static fine detail,
the anchored features what moves with the expression. Everything else is MonoAvatar (coarse and fine passes,
mesh-guided samples), with the error-correction warp off as the synthetic video's tracking is exact.

    python examples/mix_anchored_hashgrid.py --out outputs/mix_anchored_hashgrid --max-minutes 5
    torchrun --nproc_per_node=2 examples/mix_anchored_hashgrid.py --device cpu

Writes ``out/metrics.json`` (held-out psnr, ssim, train_seconds, iterations), renders and a checkpoint.
``benchmarks/compare.py`` trains it next to MonoAvatar for the same time.
"""

from __future__ import annotations

from headfields.cli import rounded, training_config, training_parser
from headfields.data import FrameSet, load_subject
from headfields.distributed import destroy_distributed, init_distributed
from headfields.encoders import HashGrid, HashGridConfig
from headfields.models.monoavatar import MonoAvatar, MonoAvatarConfig, cpu_config
from headfields.parametric import ParametricModel
from headfields.training import train

RAYS_PER_BATCH = 1024  # MonoAvatar's batch
FRAMES_PER_BATCH = 4
# A smaller grid than INSTA's (2^14 rows, 8 levels): the anchored features already carry most of the signal.
HASH_GRID = HashGridConfig(levels=8, features_per_level=2, log2_table_size=14, base_resolution=16, finest_resolution=512)


def build(
    parametric: ParametricModel,
    train_frames: FrameSet,
    config: MonoAvatarConfig | None = None,
    hash_grid: HashGridConfig = HASH_GRID,
) -> MonoAvatar:
    """MonoAvatar (default: variant D at CPU sizes, no error-correction warp) with a hash grid beside its anchored
    features."""
    config = config or cpu_config(warp=None)
    return MonoAvatar(parametric, len(train_frames), config, point_encoder=HashGrid(hash_grid))


def main() -> None:
    parser = training_parser(__doc__.split("\n")[0], "outputs/mix_anchored_hashgrid", minutes=5.0, rays=RAYS_PER_BATCH)
    args = parser.parse_args()

    device = init_distributed(args.device)
    subject = load_subject(args.data, args.model, args.eval_split, device=device)
    train_frames, eval_frames, parametric = subject.train, subject.eval, subject.parametric
    model = build(parametric, train_frames).to(device)
    config = training_config(args, frames_per_batch=FRAMES_PER_BATCH)
    metrics = train(model, train_frames, eval_frames, args.out, config, device=device)
    print(rounded(metrics))
    destroy_distributed()


if __name__ == "__main__":
    main()
