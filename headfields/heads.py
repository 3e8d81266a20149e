"""The tracked head of a capture's frames, and what models read from it: its depth along rays, the region
names a model and a dataset share.

The training loop builds each split's :class:`~headfields.parametric.Head` once with :func:`tracked_head` and
hands it to the model with every batch.

    head = tracked_head(parametric, frames)  # B frames: posed vertices, joint transforms, expression
    depth = mesh_depth(head, rays)  # [R], 0 where a ray misses its frame's mesh
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection

import torch
from jaxtyping import Float
from torch import Tensor

from .cameras import Rays
from .data import FrameSet
from .geometry import ray_intersect
from .parametric import Head, SubjectModel, TrackedMeshModel

__all__ = ["MOUTH_REGIONS", "mesh_depth", "present_regions", "tracked_head"]

# The lips and the inside of the mouth, by the names of headfields' synthetic model and of INSTA's face-parsing
# preset (headfields.data.INSTA_FACE_PARSING): what INSTA up-weights and where the expression enters its field.
MOUTH_REGIONS = ("lips", "upper_lip", "lower_lip", "teeth", "mouth_interior")


def tracked_head(parametric: SubjectModel, frames: FrameSet) -> Head:
    """A :class:`Head` of every frame of ``frames``, on the parametric model's device.

    With tracked parameters (the synthetic video) the model is evaluated on them. A real INSTA capture has
    tracked meshes and expression coefficients instead: the Head then carries those meshes as its posed (and
    rest) vertices on the model's neutral canonical mesh, which is what mesh-driven deformers need. A capture
    with no model files at all has a :class:`TrackedMeshModel`: see :meth:`TrackedMeshModel.track`.
    """
    device = parametric.v_template.device
    if isinstance(parametric, TrackedMeshModel):
        if frames.mesh_vertices is None or not torch.equal(frames.mesh_faces.to(device), parametric.faces):
            raise ValueError(f"frames: expected tracked meshes with the canonical mesh's faces in the {frames.split} split")
        expression = None if frames.expression is None else frames.expression.to(device)
        return parametric.track(frames.mesh_vertices.to(device), expression)
    if frames.params is not None:
        p = frames.params.to(device)
        return parametric(shape=p.shape, expression=p.expression, pose=p.pose, translation=p.translation)
    if frames.mesh_vertices is None or frames.expression is None:
        raise ValueError(f"frames: expected tracked parameters, or meshes and expressions, in the {frames.split} split")
    neutral = parametric(translation=torch.zeros(len(frames), 3, device=device))  # B neutral frames
    if frames.mesh_faces.shape != neutral.faces.shape or not torch.equal(frames.mesh_faces.to(device), neutral.faces):
        raise ValueError(f"frames: expected tracked meshes with the {parametric.model_type} model's faces")
    vertices = frames.mesh_vertices.to(device)
    return dataclasses.replace(neutral, vertices=vertices, rest_vertices=vertices, expression=frames.expression.to(device))


def mesh_depth(head: Head, rays: Rays) -> Float[Tensor, " R"]:
    """Distance along each ray to its frame's posed mesh, 0 where it misses (INSTA's depth prior)."""
    with torch.no_grad():
        hit = ray_intersect(head.posed_mesh, rays.origins, rays.directions, rays.frame)
    return torch.where(hit.hit, hit.t, torch.zeros_like(hit.t))


def present_regions(name: str, regions: tuple[str, ...], known: Collection[str]) -> list[str]:
    """The configured ``regions`` found in ``known``; none at all is an error naming ``name``, not a silent
    switch-off (a region one model lacks, such as FLAME's torso, is simply skipped)."""
    present = [r for r in regions if r in known]
    if not present:
        raise ValueError(f"{name}: expected at least one of {list(regions)} among the regions {sorted(known)}")
    return present
