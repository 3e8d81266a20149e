"""INSTA with a hyper-dimensional backward field: a combination none of the papers built.

INSTA's triangle frames carry a posed sample to the canonical FLAME space; MonoNPHM's backward field (HyperNeRF's
hyper-dimensions) then adds an offset and two hyper coordinates, conditioned on the frame's expression, so the
canonical hash-grid NeRF can hold what the FLAME mesh does not move (wrinkles, the inside of the mouth) as a
smooth family of slices. The field reads ``[hash grid(x + Δx), PE(h)]``. Everything else is INSTA: occupancy
grid, mesh-guided samples, lips conditioning, losses.

    python examples/mix_hyper_insta.py --out outputs/mix_hyper_insta --max-minutes 5
    torchrun --nproc_per_node=2 examples/mix_hyper_insta.py --device cpu --rays 4096

Writes ``out/metrics.json`` (held-out psnr, ssim, train_seconds, iterations), renders and a checkpoint.
``benchmarks/compare.py`` trains it next to INSTA for the same time.
"""

from __future__ import annotations

from headfields.cli import rounded, training_config, training_parser
from headfields.data import FrameSet, load_subject
from headfields.deformers import DeformerChain, HyperDeformer, HyperDeformerConfig, TriangleFrameDeformer
from headfields.distributed import destroy_distributed, init_distributed
from headfields.encoders import HashGrid, HyperEncoding
from headfields.models.insta import Insta, InstaConfig
from headfields.parametric import ParametricModel
from headfields.training import train

RAYS_PER_BATCH = 2048  # INSTA's batch
FRAMES_PER_BATCH = None
# A small backward field (MonoNPHM's is 6 x 400): it runs on every sample INSTA keeps.
HYPER = HyperDeformerConfig(hidden_dim=64, hidden_layers=3, skip_layer=None, hyper_dim=2, position_frequencies=4)
HYPER_FREQUENCIES = 2  # PE bands of the hyper coordinates


def build(parametric: ParametricModel, train_frames: FrameSet, config: InstaConfig | None = None) -> Insta:
    """INSTA whose deformer is followed by the hyper field and whose hash grid also reads the hyper coordinates."""
    config = config or InstaConfig()
    hyper = HyperDeformer(parametric.num_expression, HYPER)  # conditioned on the frame's expression
    deformer = DeformerChain(TriangleFrameDeformer(), hyper)
    encoder = HyperEncoding(HashGrid(config.hash_grid), HYPER.hyper_dim, HYPER_FREQUENCIES)
    return Insta(parametric, train_frames.segmentation_labels, config, deformer=deformer, encoder=encoder)


def main() -> None:
    parser = training_parser(__doc__.split("\n")[0], "outputs/mix_hyper_insta", minutes=5.0, rays=RAYS_PER_BATCH)
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
