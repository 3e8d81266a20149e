"""A parametric model restricted to the vertices its landmarks lie on, in float64, with its Jacobians written out: what
the landmark fit (:mod:`.landmark_tracking`) evaluates thousands of times.

Linear blend skinning is linear in the rest vertices and the rest joints once the rotations are fixed, and both are
linear in the shape and expression coefficients: a posed vertex is ``M_v (rest_v) + sum_m D_vm J_m + t`` with
``M_v = sum_j w_vj G_j`` (``G_j`` the joint's world rotation) and ``D_vm = sum_j w_vj C_jm``, where the posed joint
``j`` is ``sum_m A_jm J_m`` along the kinematic chain and ``C_jm = A_jm - [j = m] G_j``. So the Jacobians in the shape
and expression are products with the blend shapes, and only the rotations need forward-mode autodiff (six tangents,
the head's and the jaw's, where differentiating the whole model took one a coefficient: 59 a frame, 360 on keyframes).

    surface = LandmarkSurface(model, SurfaceLandmarks.static(model), expressions=50)
    world = surface(shape, expression, pose, translation)  # [B, K, 3]
    d_shape, d_expression = surface.linear(pose)  # [B, K, 3, S], [B, K, 3, E]
"""

from __future__ import annotations

import torch
from smplx.lbs import batch_rodrigues
from torch import Tensor

from ..parametric.model import ParametricModel

__all__ = ["LandmarkSurface"]


class LandmarkSurface:
    """``model``'s landmarks (faces and barycentric weights: anything with ``faces`` and ``bary``) as a function of
    its coefficients, the first ``expressions`` expression coefficients only; equal to the full model's."""

    def __init__(self, model: ParametricModel, landmarks, expressions: int | None = None):
        corners = model.faces.cpu()[landmarks.faces]  # [K, 3] vertex ids
        used, inverse = torch.unique(corners.flatten(), return_inverse=True)
        self.corners, self.bary = inverse.view(-1, 3), landmarks.bary.double()
        e = model.num_expression if expressions is None else expressions
        template = model.v_template.detach().cpu().double()
        if model.static_offset is not None:
            template = template + model.static_offset.detach().cpu().double()
        shapedirs = model.shapedirs.detach().cpu().double()
        exprdirs = model.expr_dirs.detach().cpu().double()[..., :e]
        regressor = model.J_regressor.detach().cpu().double()
        self.template, self.shapedirs, self.exprdirs = template[used], shapedirs[used], exprdirs[used]
        posedirs = model.posedirs.detach().cpu().double()
        self.posedirs = posedirs.view(posedirs.shape[0], -1, 3)[:, used].reshape(posedirs.shape[0], -1)
        self.weights = model.lbs_weights.detach().cpu().double()[used]
        self.joint_template = regressor @ template
        self.joint_shape = torch.einsum("jv,vcs->jcs", regressor, shapedirs)
        self.joint_expression = torch.einsum("jv,vcs->jcs", regressor, exprdirs)
        self.parents = [int(p) for p in model.parents.cpu()]

    def _skinning(self, pose: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``M [B, V, 3, 3]``, ``D [B, V, J, 3, 3]`` and the pose correctives ``[B, V, 3]`` of ``pose [B, J, 3]``."""
        b, j = pose.shape[:2]
        rotations = batch_rodrigues(pose.reshape(-1, 3)).view(b, j, 3, 3)
        zero = torch.zeros_like(rotations[:, 0])
        world: list[Tensor] = []
        chains: list[list[Tensor]] = []  # chains[i][m]: the posed joint i's block on rest joint m
        for i, parent in enumerate(self.parents):
            if parent < 0:
                world.append(rotations[:, i])
                chains.append([torch.eye(3, dtype=pose.dtype).expand_as(zero) if m == i else zero for m in range(j)])
                continue
            world.append(world[parent] @ rotations[:, i])
            row = list(chains[parent])
            row[i] = row[i] + world[parent]
            row[parent] = row[parent] - world[parent]
            chains.append(row)
        rotation = torch.stack(world, dim=1)  # [B, J, 3, 3]
        c = torch.stack([torch.stack(row, dim=1) for row in chains], dim=1)  # [B, J, J, 3, 3]
        c = c - torch.diag_embed(rotation.permute(0, 2, 3, 1)).permute(0, 3, 4, 1, 2)  # C_jm = A_jm - [j = m] G_j
        m_blend = torch.einsum("vj,bjrc->bvrc", self.weights, rotation)
        d_blend = torch.einsum("vj,bjmrc->bvmrc", self.weights, c)
        eye = torch.eye(3, dtype=pose.dtype)
        correctives = ((rotations[:, 1:] - eye).reshape(b, -1) @ self.posedirs).view(b, -1, 3)
        return m_blend, d_blend, correctives

    def _landmarks(self, per_vertex: Tensor) -> Tensor:
        """Per used vertex ``[B, V, 3, ...]`` to per landmark ``[B, K, 3, ...]`` by the barycentric weights."""
        bary = self.bary.view(1, *self.bary.shape, *([1] * (per_vertex.dim() - 2)))
        return (per_vertex[:, self.corners] * bary).sum(2)

    def __call__(self, shape: Tensor, expression: Tensor, pose: Tensor, translation: Tensor) -> Tensor:
        """The landmarks' world positions ``[B, K, 3]``; ``pose [B, J, 3]`` axis-angle per joint, ``expression [B, E]``
        the first E coefficients."""
        m_blend, d_blend, correctives = self._skinning(pose)
        rest = self.template + self.shapedirs @ shape + torch.einsum("vce,be->bvc", self.exprdirs, expression) + correctives
        joints = self.joint_template + self.joint_shape @ shape + torch.einsum("jce,be->bjc", self.joint_expression, expression)
        posed = (m_blend @ rest[..., None])[..., 0] + torch.einsum("bvmrc,bmc->bvr", d_blend, joints) + translation[:, None]
        return self._landmarks(posed)

    def linear(self, pose: Tensor, shape: bool = True) -> tuple[Tensor | None, Tensor]:
        """The landmarks' Jacobians in the shape (None unless ``shape``) and in the expression coefficients under
        ``pose``: ``[B, K, 3, S]``, ``[B, K, 3, E]``."""
        m_blend, d_blend, _ = self._skinning(pose)

        def product(directions: Tensor, joint_directions: Tensor) -> Tensor:
            per_vertex = torch.einsum("bvrc,vcs->bvrs", m_blend, directions)
            return self._landmarks(per_vertex + torch.einsum("bvmrc,mcs->bvrs", d_blend, joint_directions))

        d_shape = product(self.shapedirs, self.joint_shape) if shape else None
        return d_shape, product(self.exprdirs, self.joint_expression)
