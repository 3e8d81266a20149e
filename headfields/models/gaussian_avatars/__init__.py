"""GaussianAvatars (Qian, Kirschstein, Schoneveld, Davoli, Giebenhain, Nießner; CVPR 2024): 3D Gaussians bound to the
tracked mesh's triangles, rasterised. One module a concept: ``model`` (:class:`GaussianAvatar`, its configuration and
recipes), ``density`` (the paper's adaptive density control, children keeping their parent's face), ``fine_tuning``
(each training timestep's FLAME parameters, fitted in the same optimiser), ``rates`` (the extent and the learning rates
of a run) and ``steps`` (its training steps, which the shared loop calls: a whole frame
a step, density control after backward).

    model = GaussianAvatar(subject.parametric, cpu_config())
    out = model.render_camera(frames.cameras, 0, head, 0)  # GaussianRender: image [H, W, 3], alpha, depth
"""

from .density import DensityConfig, DensityControl, gaussian_param_groups
from .fine_tuning import FittedTracking
from .model import GaussianAvatar, GaussianAvatarConfig, cpu_config, paper_config, unread_recipe_fields
from .rates import camera_extent, learning_rates, position_learning_rate
from .steps import GaussianSteps

__all__ = [
    "DensityConfig",
    "DensityControl",
    "FittedTracking",
    "GaussianAvatar",
    "GaussianAvatarConfig",
    "GaussianSteps",
    "camera_extent",
    "cpu_config",
    "gaussian_param_groups",
    "learning_rates",
    "paper_config",
    "position_learning_rate",
    "unread_recipe_fields",
]
