"""What a prior can express of a person, apart from how well tracking finds it: the identity code fitted to the
person's true surface in 3D, every other fitted quantity (the frame's expression, its pose) kept as tracked. Its
surface, scored as the tracked one is, is the best any tracking from images could reach with this prior; the gap
between the two is the tracking's, the gap from the truth the prior's.

    code = surface_identity(run.model, head, frame=7, vertices=true_vertices, faces=true_faces)
    with identity_code(run.model, code):
        ceiling = run.model.extract_mesh(head, 7, 128)
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from jaxtyping import Float, Int
from torch import Tensor

from ...checks import check_count, check_float, check_positive
from ...fitting import frozen, run_stage
from ...geometry import TriangleMesh
from ...geometry.sampling import sample_surface
from ...parametric import Head
from .model import MonoNphm

__all__ = ["identity_code", "surface_identity"]

SURFACE_POINTS = 4096  # true-surface points a step
CODE_WEIGHT = 1e-4  # a whisper of the codes' squared norm: keeps the fit from wandering where the surface says nothing


def surface_identity(
    model: MonoNphm,
    head: Head,
    frame: int,
    vertices: Float[Tensor, "V 3"],
    faces: Int[Tensor, "F 3"],
    steps: int = 300,
    rate: float = 3e-3,
    local: bool = True,
    points: int = SURFACE_POINTS,
    seed: int = 0,
) -> Float[Tensor, "1 I"]:
    """The identity code under which frame ``frame`` of ``head`` (with its fitted codes, :meth:`MonoNphm.head`)
    has the true surface ``vertices`` / ``faces`` (world, that frame's) as its zero level set: ``steps`` Adam steps
    of the mean |SDF| at ``points`` points drawn on it a step, from the model's tracked identity. ``local=False`` fits the global
    code alone (the local codes at their centre, ``model.codes.identity_centre``). The model is left as it was."""
    check_count("frame", frame, 0, head.num_frames - 1)
    check_float("vertices", vertices, [None, 3])
    check_count("steps", steps, 1)
    check_count("points", points, 1)
    check_positive("rate", rate, finite=True)
    global_dim = model.prior.config.global_dim
    code = model.codes.identity
    start = code.detach().clone()
    if not local:
        start[:, global_dim:] = model.codes.identity_centre[:, global_dim:]
    mesh = TriangleMesh(vertices.detach(), faces)

    def loss(step: int) -> Tensor:
        x = sample_surface(mesh, points, seed=seed + step).point.to(code.device, code.dtype)
        sdf = model.field.geometry(x, torch.full_like(x[:, 0], frame, dtype=torch.long), head).sdf
        return sdf.abs().mean() + CODE_WEIGHT * code.square().sum()

    def global_only() -> None:  # the local codes stay at their centre
        code.grad[:, global_dim:] = 0

    with identity_code(model, start), frozen(model, [code]):  # the backward pass reaches the identity alone
        run_stage([("identity", [code], rate)], steps, loss, after_backward=None if local else global_only)
        code.grad = None
        return code.detach().clone()


@contextmanager
def identity_code(model: MonoNphm, code: Float[Tensor, "1 I"]) -> Iterator[None]:
    """Within the block the model's identity is ``code`` (its values copied in); after, its own again."""
    check_float("code", code, list(model.codes.identity.shape))
    saved = model.codes.identity.detach().clone()
    with torch.no_grad():
        model.codes.identity.copy_(code)
    try:
        yield
    finally:
        with torch.no_grad():
            model.codes.identity.copy_(saved)
