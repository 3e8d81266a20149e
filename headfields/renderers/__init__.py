"""Renderers: packed samples (nerfacc's layout, in torch) and the samplers that draw them (stratified in a box,
occupancy-grid marching, importance, NeuS up-sampling, view-balanced pixels), compositing, and the renderers that
take a field (``render_nerf``, ``render_neus``); a rasteriser of 3D Gaussians (``rasterize_gaussians``). The
cameras, the rays through their pixels and camera paths are :mod:`headfields.cameras`.

Every ray carries the index of its frame, so one batch can mix rays from many frames (INSTA trains this way).
"""

# Packed samples, occupancy-grid marching, mesh-guided filtering and compositing.
from .compositing import Composite, composite
from .hierarchical import importance_samples, merge_samples
from .mesh_sampler import CPU_SHELL, mesh_guided_filter
from .occupancy import OccupancyGrid
from .samples import BoxHit, PackedSamples, SampleCount, SampleSlots, SlotSamples, ray_aabb, stratified_samples

__all__ = [
    "CPU_SHELL",
    "BoxHit",
    "Composite",
    "OccupancyGrid",
    "PackedSamples",
    "SampleCount",
    "SampleSlots",
    "SlotSamples",
    "composite",
    "importance_samples",
    "merge_samples",
    "mesh_guided_filter",
    "ray_aabb",
    "stratified_samples",
]

# NeuS rendering: opacity from an SDF, composited from alphas, with up-sampling near the surface.
from .compositing import accumulate, composite_alpha  # noqa: E402
from .neus import (  # noqa: E402
    NEUS_BASE_INV_S,
    NEUS_INITIAL_VARIANCE,
    InverseVariance,
    NeusRays,
    inverse_variance_schedule,
    neus_alpha,
    neus_rays,
    neus_samples,
)

__all__ += [
    "NEUS_BASE_INV_S",
    "NEUS_INITIAL_VARIANCE",
    "InverseVariance",
    "NeusRays",
    "accumulate",
    "composite_alpha",
    "inverse_variance_schedule",
    "neus_alpha",
    "neus_rays",
    "neus_samples",
]

# View-balanced ray sampling: rays drawn evenly from front, side and back views.
from .view_balance import (  # noqa: E402
    BACK,
    FRONT,
    SIDE,
    VIEW_EDGES,
    balanced_frames,
    sample_pixels_balanced,
    view_angles,
    view_bins,
)

__all__ += [
    "BACK",
    "FRONT",
    "SIDE",
    "VIEW_EDGES",
    "balanced_frames",
    "sample_pixels_balanced",
    "view_angles",
    "view_bins",
]

# Renderers that take a field, and the samplers they draw from.
from .context import RenderContext  # noqa: E402
from .inference import nerf_weights_inference, render_nerf_inference, render_neus_inference  # noqa: E402
from .nerf_passes import NerfPasses, render_nerf_passes  # noqa: E402
from .samplers import OccupancySampler, StratifiedSampler, ray_bounds  # noqa: E402
from .volume import (  # noqa: E402
    EARLY_STOP_TRANSMITTANCE,
    INTERACTIVE_TRANSMITTANCE,
    NerfRender,
    NeusRender,
    NeusSampler,
    render_nerf,
    render_neus,
)

__all__ += [
    "EARLY_STOP_TRANSMITTANCE",
    "INTERACTIVE_TRANSMITTANCE",
    "NerfPasses",
    "NerfRender",
    "NeusRender",
    "NeusSampler",
    "RenderContext",
    "render_nerf_passes",
    "OccupancySampler",
    "StratifiedSampler",
    "ray_bounds",
    "render_nerf",
    "nerf_weights_inference",
    "render_nerf_inference",
    "render_neus",
    "render_neus_inference",
]

# 3D Gaussians: EWA splatting, 16x16 tiles, front-to-back blending in Warp with a hand-written backward.
from .gaussians import GaussianRender, project_gaussians, rasterize_gaussians, sh_colors  # noqa: E402

__all__ += ["GaussianRender", "project_gaussians", "rasterize_gaussians", "sh_colors"]
