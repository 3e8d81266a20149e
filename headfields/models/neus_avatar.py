"""A NeuS head avatar with any deformer: the SDF, appearance, lighting and renderer of MonoNPHM (Giebenhain et al.,
CVPR 2024) behind a deformer of your choice. With INSTA's triangle frames it is an INSTA-style avatar with a clean
surface (``examples/mix_triangle_neus.py``), a model none of the papers built.

sample (NeuS: stratified in each frame's padded posed-mesh box, then up-sampling near the zero level) → deform →
normalise (the neutral head spans about [-1, 1]) → SDF MLP (the frame's expression near the lips) → albedo (the
expression everywhere) × SH lighting of the world normal → NeuS compositing → L1 + silhouette + eikonal.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..checks import check_count
from ..decoders import AppearanceConfig, AppearanceField, SdfMlp, SdfMlpConfig, SHLighting
from ..deformers import Deformer
from ..fields import NeusField, Normalize, RegionExpression
from ..heads import MOUTH_REGIONS, present_regions
from ..parametric import SubjectModel
from ..training import OptimizerConfig
from .neus_model import NeusConfig, NeusModel

__all__ = ["NeusAvatar", "NeusAvatarConfig"]


@dataclass(frozen=True)
class NeusAvatarConfig(NeusConfig):
    """CPU-sized defaults (a 5-minute run on 2 cores), those of MonoNPHM's ``cpu_config`` where they meet."""

    sdf: SdfMlpConfig = field(default_factory=lambda: SdfMlpConfig(hidden_dim=96, hidden_layers=4, position_frequencies=4))
    appearance: AppearanceConfig = field(
        default_factory=lambda: AppearanceConfig(hidden_dim=64, hidden_layers=3, position_frequencies=4)
    )
    lighting: bool = True  # albedo x SH lighting of the world normal (False: the albedo is the colour)
    # INSTA's lips conditioning: samples whose nearest posed face is in these regions give the SDF the frame's first
    # expression coefficients (zeros elsewhere); the albedo sees them at every sample (expression_everywhere): brow
    # wrinkles are not on the mesh. In one 5-minute run each with triangle frames (10 held-out frames): 27.10 dB
    # without conditioning, 27.43 dB with the lips conditioning of both, 27.78 dB with the albedo's everywhere.
    expression_dims: int = 16  # 0: no conditioning at all (of the SDF nor of the albedo)
    lips_regions: tuple[str, ...] = MOUTH_REGIONS
    expression_everywhere: bool = True  # False: the albedo too sees the expression near the lips only
    # Clipping: through the triangle frames NeuS's loss spikes now and then and its sharpness stalls; in one 5-minute
    # run each, clipping at 1.0 gave 27.10 dB on 10 held-out frames against 25.73 dB without.
    optimization: OptimizerConfig = OptimizerConfig(1e-3, 1e-4, 5_000, max_grad_norm=1.0, ema_decay=0.95)

    def __post_init__(self) -> None:
        super().__post_init__()
        check_count("expression_dims", self.expression_dims, 0)


class NeusAvatar(NeusModel):
    """posed sample → ``deformer`` → :class:`~headfields.fields.NeusField` → NeuS. ``hyper_dim``: the
    hyper-dimensions the deformer appends to the canonical points (0 for mesh-driven deformers).

    Its renderer can keep the rays that miss its box (of no length), so a step's shapes can follow from its rays
    alone with no sample budget; then ``cuda_graph`` takes its step."""

    renders_every_ray = True  # render_neus keeps the rays that miss the box when the shapes are fixed
    captures_graph = True  # (graph_phase)

    def __init__(self, parametric: SubjectModel, deformer: Deformer, config: NeusAvatarConfig | None = None, hyper_dim=0):
        c = config or NeusAvatarConfig()
        super().__init__(parametric, c, hyper_dim)
        if c.expression_dims > parametric.num_expression:
            raise ValueError(
                f"expression_dims: expected at most the model's {parametric.num_expression} coefficients, got {c.expression_dims}"
            )
        neutral = parametric()
        sdf_condition = colour_condition = None
        if c.expression_dims:
            lips = neutral.face_mask(*present_regions("lips_regions", c.lips_regions, neutral.regions))
            sdf_condition = RegionExpression(c.expression_dims, lips, outside=0.0)
            colour_condition = RegionExpression(c.expression_dims, None if c.expression_everywhere else lips)
        sdf = SdfMlp(hyper_dim + c.expression_dims, c.sdf)
        self.field = NeusField(
            deformer,
            sdf,
            AppearanceField(3 + hyper_dim, sdf.feature_dim, c.expression_dims, c.appearance),
            Normalize.of_box(neutral.canonical_vertices),
            SHLighting() if c.lighting else None,
            sdf_condition,
            colour_condition,
        )

    def graph_phase(self, step: int) -> bool:
        """What :meth:`training_step` decides by the step number (``TrainingConfig.cuda_graph``): nothing. No loss
        switches on, the sharpness is learnt and the learning rate is set outside the step: one phase throughout."""
        return True
