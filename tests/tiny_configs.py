"""Tiny configurations of the paper models, shared by the tests that train them a few steps on the tiny video."""

import dataclasses

from headfields.decoders import NerfDecoderConfig
from headfields.deformers import BlendFieldConfig, ErrorCorrectionConfig
from headfields.encoders import HashGridConfig, MeshAnchoredConfig, UVCodeDecoderConfig, UVUNetConfig
from headfields.models import mononphm
from headfields.models.insta import cpu_config as insta_cpu_config
from headfields.models.monoavatar import MonoAvatarConfig
from headfields.models.portrait360 import Portrait360Config
from headfields.training import OptimizerConfig

TINY_GRID = HashGridConfig(levels=4, log2_table_size=12, base_resolution=4, finest_resolution=32)

# INSTA's paper recipe as tools/step_anatomy.py sets it (recipe fields): the sizes that do not
# change what a step launches made small: a 16^3 grid refreshed every 4 steps, a 2^12-row hash table of 4 levels.
TINY_PAPER_STEP = dict(hash_grid=TINY_GRID, occupancy_resolution=16, occupancy_every=4, occupancy_warmup=2, warmup_steps=2)

# INSTA's CPU recipe shrunk (its paper recipe marches a 1 m cube, which a 16^3 grid and 64 steps cannot resolve).
TINY_INSTA = insta_cpu_config(
    hash_grid=TINY_GRID,
    decoder=NerfDecoderConfig(hidden_dim=16),
    occupancy_resolution=16,
    occupancy_every=4,
    steps_per_diagonal=64,
    warmup_steps=5,
)

# MonoAvatar's code decoder at TINY_MONOAVATAR's sizes, for its features="code_cnn" (the displacement features the
# recipe trains with leave it unread, and a run refuses it changed: models.monoavatar.unread_settings).
TINY_CODE_DECODER = UVCodeDecoderConfig(out_channels=8, resolution=32, channels=(16, 8, 4))

TINY_MONOAVATAR = MonoAvatarConfig(
    feature_dim=8,
    uv_resolution=32,
    unet=UVUNetConfig(out_channels=8, channels=(4, 8, 16)),
    anchored=MeshAnchoredConfig(position_frequencies=4, hidden_dim=16, hidden_layers=1, out_dim=16),
    decoder=NerfDecoderConfig(hidden_dim=16, density_layers=1, color_layers=1, geometry_dim=8, density_activation="softplus"),
    coarse_samples=24,
    fine_samples=12,
    error_correction=ErrorCorrectionConfig(latent_dim=4, hidden_dim=16, hidden_layers=2, window_steps=20, start_step=3),
    correction_samples=64,
    optimization=OptimizerConfig(5e-3, 5e-4, 100, ema_decay=0.95),
)

# The anchored hash grid mix's recipe at those sizes: no error correction, whose samples a run then leaves unread.
TINY_ANCHORED_HASHGRID = dataclasses.replace(
    TINY_MONOAVATAR, error_correction=None, correction_samples=MonoAvatarConfig.correction_samples
)

TINY_PORTRAIT = Portrait360Config(
    blend_fields=BlendFieldConfig(num_fields=4, mlp_hidden_dim=16, mapping_hidden_dim=16),
    hash_grid=HashGridConfig(levels=4, features_per_level=2, log2_table_size=12, base_resolution=8, finest_resolution=64),
    decoder=NerfDecoderConfig(hidden_dim=16, density_layers=1, color_layers=1, geometry_dim=7),
    sh_degree=2,
    num_samples=48,
    optimization=OptimizerConfig(1e-2, betas=(0.9, 0.99), eps=1e-15),
)

# MonoNPHM's tracking in a few steps a stage, on a few rays, with a coarse sampler and one small mesh scored.
TINY_MONONPHM = mononphm.cpu_config(
    sampler=dataclasses.replace(mononphm.cpu_config().sampler, coarse=8, per_round=8),
    tracking=mononphm.MonoNphmTracking(
        first_frame=dataclasses.replace(mononphm.MonoNphmTracking().first_frame, steps=12),
        per_frame=dataclasses.replace(mononphm.MonoNphmTracking().per_frame, steps=2),
        joint=dataclasses.replace(mononphm.MonoNphmTracking().joint, steps=4),
        rays_per_step=96,
    ),
    geometry_frames=1,
    mesh_resolution=24,
)
