"""Mixes of the papers' parts that none of the papers built, each a few lines of assembly, with the batch it
trains on and the paper model it is compared with (``benchmarks/compare.py``, ``docs/mix_and_match.md``).

    model = MIXES["mix_hyper_insta"].build(parametric, train_frames)
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from torch import nn

from ..data import FrameSet
from ..deformers import DeformerChain, HyperDeformer, HyperDeformerConfig, TriangleFrameDeformer
from ..encoders import HashGrid, HashGridConfig, HyperEncoding
from ..parametric import SubjectModel
from ..training import TrainingConfig
from .insta import Insta, InstaConfig, insta_deformer, insta_face_masks, unread_recipe_fields
from .insta import cpu_config as insta_cpu_config
from .method import Method, Recipe
from .monoavatar import MonoAvatar, MonoAvatarConfig, cpu_config, unread_settings
from .neus_avatar import NeusAvatar, NeusAvatarConfig
from .neus_model import NEUS_UNREAD_TRAINING_FIELDS

__all__ = ["METHODS", "MIXES", "Mix", "anchored_hashgrid", "anchored_hashgrid_config", "hyper_insta", "triangle_neus"]

# A small backward field (MonoNPHM's is 6 x 400): it runs on every sample INSTA keeps.
HYPER = HyperDeformerConfig(hidden_dim=64, hidden_layers=3, skip_layer=None, hyper_dim=2, position_frequencies=4)
HYPER_FREQUENCIES = 2  # PE bands of the hyper coordinates
# A smaller grid than INSTA's (2^14 rows, 8 levels): the anchored features already carry most of the signal.
ANCHORED_GRID = HashGridConfig(levels=8, features_per_level=2, log2_table_size=14, base_resolution=16, finest_resolution=512)


def triangle_neus(parametric: SubjectModel, train_frames: FrameSet, config: NeusAvatarConfig | None = None) -> NeusAvatar:
    """INSTA's triangle frames with MonoNPHM's NeuS SDF: an INSTA-style avatar with a clean surface (no paper built it)."""
    return NeusAvatar(parametric, TriangleFrameDeformer(), config)  # no max_distance: every sample maps


def anchored_hashgrid_config() -> MonoAvatarConfig:
    """The anchored hash grid's recipe: MonoAvatar's CPU one without the error correction (the synthetic
    video's tracking is exact)."""
    return cpu_config(error_correction=None)


def anchored_hashgrid(
    parametric: SubjectModel,
    train_frames: FrameSet,
    config: MonoAvatarConfig | None = None,
    hash_grid: HashGridConfig = ANCHORED_GRID,
) -> MonoAvatar:
    """MonoAvatar's mesh-anchored UV-CNN features with a hash grid: a combination none of the papers built."""
    config = config or anchored_hashgrid_config()
    return MonoAvatar(parametric, len(train_frames), config, point_encoder=HashGrid(hash_grid))


def hyper_insta(parametric: SubjectModel, train_frames: FrameSet, config: InstaConfig | None = None) -> Insta:
    """INSTA with a hyper-dimensional backward field: a combination none of the papers built."""
    config = config or insta_cpu_config()  # a mix runs beside INSTA's CPU recipe (compare.py)
    triangles = insta_deformer(insta_face_masks(parametric(), config))
    deformer = DeformerChain(triangles, HyperDeformer(parametric.num_expression, HYPER))
    encoder = HyperEncoding(HashGrid(config.hash_grid), HYPER.hyper_dim, HYPER_FREQUENCIES)
    return Insta(parametric, train_frames.segmentation_labels, config, deformer=deformer, encoder=encoder)


@dataclass(frozen=True)
class Mix:
    build: Callable[[SubjectModel, FrameSet, object], nn.Module]  # (parametric, train_frames, config)
    config: Callable[[], object]  # the mix's recipe (what build uses without a config)
    config_type: type  # its class
    rays_per_batch: int
    frames_per_batch: int | None  # rays from this many frames per batch (None: all)
    peer: str  # the closest paper model (for "MonoNPHM", compare.py runs its networks without the prior: hyper_neus)
    eval_every: int = 1000
    unread_training: tuple[str, ...] = ()  # TrainingConfig's fields its steps have no use for (refused when set)
    unread_recipe: Callable[[object], Mapping[str, str]] | None = None  # its recipe's fields a mode leaves unread

    @property
    def name(self) -> str:
        return (self.build.__doc__ or "").strip().rstrip(".")

    def method(self, key: str) -> Method:
        """The mix as the registry's method ``key``: its one recipe ("cpu"), five minutes of training."""
        batches = {"rays_per_batch": self.rays_per_batch, "frames_per_batch": self.frames_per_batch}
        return Method(
            key,
            lambda subject, config: self.build(subject.parametric, subject.train, config),
            {"cpu": Recipe(self.config)},
            self.config_type,
            training=TrainingConfig(max_minutes=5.0, eval_every=self.eval_every, **batches),
            unread_training=self.unread_training,
            unread_recipe=self.unread_recipe,
        )


MIXES = {
    "mix_triangle_neus": Mix(
        triangle_neus,
        NeusAvatarConfig,
        NeusAvatarConfig,
        512,
        None,
        "MonoNPHM",
        eval_every=500,
        unread_training=NEUS_UNREAD_TRAINING_FIELDS,
    ),
    "mix_anchored_hashgrid": Mix(
        anchored_hashgrid, anchored_hashgrid_config, MonoAvatarConfig, 1024, 4, "MonoAvatar", unread_recipe=unread_settings
    ),
    "mix_hyper_insta": Mix(hyper_insta, insta_cpu_config, InstaConfig, 2048, None, "INSTA", unread_recipe=unread_recipe_fields),
}
METHODS = [mix.method(key) for key, mix in MIXES.items()]  # the registry's
