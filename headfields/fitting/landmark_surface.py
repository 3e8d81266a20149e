"""A parametric model restricted to its landmarks, in float64, with its Jacobians written out: what the landmark fit
(:mod:`.landmark_tracking`) evaluates thousands of times.

Linear blend skinning is linear in the rest vertices and the rest joints once the rotations are fixed, and both are
linear in the shape and expression coefficients: a posed vertex is ``M_v (rest_v) + sum_m D_vm J_m + t`` with
``M_v = sum_j w_vj G_j`` (``G_j`` the joint's world rotation) and ``D_vm = sum_j w_vj C_jm``, where the posed joint
``j`` is ``sum_m A_jm J_m`` along the kinematic chain and ``C_jm = A_jm - [j = m] G_j``. A landmark is a fixed
blend of vertices, so it is ``sum_j G_j (rest_jk) + sum_j w_kj (sum_m C_jm J_m) + t``, where ``rest_jk`` blends
the rest vertices by the landmark's barycentrics times their weights on joint ``j``: the blend shapes are reduced
to the landmarks once, per joint, and no evaluation touches a vertex. The Jacobians in the shape and expression are
products with those reduced blend shapes; only the rotations need forward-mode autodiff (six tangents, the head's
and the jaw's, where differentiating the whole model took one a coefficient: 59 a frame, 360 on keyframes).

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
        bary = landmarks.bary.detach().cpu().double()  # [K, 3]
        e = model.num_expression if expressions is None else expressions
        template = model.v_template.detach().cpu().double()
        if model.static_offset is not None:
            template = template + model.static_offset.detach().cpu().double()
        shapedirs = model.shapedirs.detach().cpu().double()
        exprdirs = model.expr_dirs.detach().cpu().double()[..., :e]
        posedirs = model.posedirs.detach().cpu().double()
        posedirs = posedirs.view(posedirs.shape[0], -1, 3).transpose(0, 1)  # [V, (J-1)*9, 3]
        weights = model.lbs_weights.detach().cpu().double()  # [V, J]
        # Each landmark's corners weighted by their barycentrics and skinning weights: [J, K, 3]. Joints that move
        # none of the corners (the root, the eyes for a face's points) are dropped.
        blend = bary[None] * weights[corners].permute(2, 0, 1)
        self.live = torch.nonzero(blend.abs().amax((1, 2)) > 0)[:, 0]
        blend = blend[self.live]

        def reduce(per_vertex: Tensor) -> Tensor:  # [V, ...] -> [L, K, ...]
            picked = per_vertex[corners]  # [K, 3, ...]
            return torch.einsum("lkc,kc...->lk...", blend, picked)

        self.template, self.shapedirs, self.exprdirs = reduce(template), reduce(shapedirs), reduce(exprdirs)
        self.posedirs = reduce(posedirs)  # [L, K, (J-1)*9, 3]
        self.weights = (bary[..., None] * weights[corners][..., self.live]).sum(1)  # [K, L]: on each live joint
        self.bary_sum = bary.sum(1)[:, None]  # [K, 1]: 1 but for rounding (float32 files), which the full model keeps
        regressor = model.J_regressor.detach().cpu().double()
        self.joint_template = regressor @ template
        self.joint_shape = torch.einsum("jv,vcs->jcs", regressor, shapedirs)
        self.joint_expression = torch.einsum("jv,vcs->jcs", regressor, exprdirs)
        self.parents = [int(p) for p in model.parents.cpu()]

    def _skinning(self, pose: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """The joints' world rotations ``G [B, J, 3, 3]``, their blocks ``C [B, J, J, 3, 3]`` on the rest joints, and
        the pose correctives' features ``[B, (J-1)*9]`` of ``pose [B, J, 3]``."""
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
        features = (rotations[:, 1:] - torch.eye(3, dtype=pose.dtype)).reshape(b, -1)
        return rotation, c, features

    def __call__(self, shape: Tensor, expression: Tensor, pose: Tensor, translation: Tensor) -> Tensor:
        """The landmarks' world positions ``[B, K, 3]``; ``pose [B, J, 3]`` axis-angle per joint, ``expression [B, E]``
        the first E coefficients."""
        rotation, c, features = self._skinning(pose)
        rest = (
            self.template
            + self.shapedirs @ shape
            + torch.einsum("lkxe,be->blkx", self.exprdirs, expression)
            + torch.einsum("lkpx,bp->blkx", self.posedirs, features)
        )  # [B, L, K, 3]
        joints = self.joint_template + self.joint_shape @ shape + torch.einsum("jce,be->bjc", self.joint_expression, expression)
        moved = torch.einsum("bjmrc,bmc->bjr", c[:, self.live], joints)  # [B, L, 3]
        own = torch.einsum("blrc,blkc->bkr", rotation[:, self.live], rest)
        return own + torch.einsum("kl,blr->bkr", self.weights, moved) + translation[:, None] * self.bary_sum

    def linear(self, pose: Tensor, shape: bool = True) -> tuple[Tensor | None, Tensor]:
        """The landmarks' Jacobians in the shape (None unless ``shape``) and in the expression coefficients under
        ``pose``: ``[B, K, 3, S]``, ``[B, K, 3, E]``."""
        rotation, c, _ = self._skinning(pose)
        rotation, c = rotation[:, self.live], c[:, self.live]

        def product(directions: Tensor, joint_directions: Tensor) -> Tensor:
            moved = torch.einsum("blmrc,mcs->blrs", c, joint_directions)
            return torch.einsum("blrc,lkcs->bkrs", rotation, directions) + torch.einsum("kl,blrs->bkrs", self.weights, moved)

        d_shape = product(self.shapedirs, self.joint_shape) if shape else None
        return d_shape, product(self.exprdirs, self.joint_expression)
