"""MonoAvatar's mesh-anchored features (Bai et al. 2023, see ../shared/PAPERS.md, "MonoAvatar").

Each query point ``q`` gathers its ``k`` nearest posed mesh vertices ``v_j`` (with per-vertex features ``f_j``,
e.g. from :class:`~headfields.encoders.UVUNet` sampled at the vertices), runs one shared MLP per neighbour on
``PE(v_j - q) ⊕ f_j`` and blends the ``k`` outputs with inverse-distance weights. The features ride the posed
mesh, so no deformation of the points is needed.

Warp picks the neighbours (:func:`~headfields.geometry.knn_vertices`); torch recomputes the offsets from
``mesh.vertices``, so gradients reach the points, the vertex positions and the vertex features.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from jaxtyping import Float, Int
from torch import Tensor, nn

from ..checks import IntLike, check_count, check_float, check_positive
from ..geometry import TriangleMesh, gather_vertex_rows, knn_vertices
from ..geometry.queries import MAX_KNN
from ..networks import _product_dtype, linear, mlp  # _product_dtype: bfloat16 inside reduced_precision()
from .frequency import FrequencyEncoding

# MonoAvatar (PAPERS.md): k = 4 nearest vertices; PE of positions with 10 bands; MLP0 3 x 128 ReLU.
MONOAVATAR_K = 4
MONOAVATAR_POSITION_FREQUENCIES = 10
MONOAVATAR_HIDDEN = 128
MONOAVATAR_HIDDEN_LAYERS = 3
MONOAVATAR_OUT = 128
# Distance softening, in mesh units (FLAME: metres, so a micrometre, far below the ~mm vertex spacing): the
# weights use sqrt(d^2 + eps^2) for d. See MeshAnchoredEncoder.
DISTANCE_EPS = 1e-6
# How far R^T R may be from the identity for ``rotation`` to count as a rotation (float32 poses pass).
ROTATION_TOLERANCE = 1e-3
SPATIAL_DIMS = 3
# Points a block without autograd: 4,096 neighbour rows (k = 4), oneDNN's block (backends.cpu.onednn.ONEDNN_BLOCK_ROWS),
# whose 128-wide float32 activations (2 MB) stay in the cache between the layers.
INFERENCE_BLOCK = 1024


@dataclass(frozen=True)
class MeshAnchoredConfig:
    """Sizes of MonoAvatar's per-neighbour MLP0 and its aggregation; the defaults are the paper's (PAPERS.md)."""

    k: int = MONOAVATAR_K  # nearest posed vertices per point
    position_frequencies: int = MONOAVATAR_POSITION_FREQUENCIES  # NeRF PE bands of the offset (input included)
    hidden_dim: int = MONOAVATAR_HIDDEN
    hidden_layers: int = MONOAVATAR_HIDDEN_LAYERS  # ReLU layers of MLP0
    out_dim: int = MONOAVATAR_OUT  # width of MLP0's output, the blended feature
    eps: float = DISTANCE_EPS  # distance softening (mesh units)

    def __post_init__(self) -> None:
        check_count("k", self.k, 1, MAX_KNN)
        check_count("position_frequencies", self.position_frequencies, 0)
        check_count("hidden_dim", self.hidden_dim, 1)
        check_count("hidden_layers", self.hidden_layers, 0)
        check_count("out_dim", self.out_dim, 1)
        if isinstance(self.eps, bool) or not isinstance(self.eps, int | float):
            raise TypeError(f"eps: expected a positive number, got {self.eps!r}")
        check_positive("eps", self.eps)


@dataclass
class AnchoredFeatures:
    """What :class:`MeshAnchoredEncoder` returns for N points."""

    features: Float[Tensor, "N C"]  # the blended MLP0 outputs
    weights: Float[Tensor, "N k"]  # inverse-distance weights, positive, summing to one per row
    index: Int[Tensor, "N k"]  # the neighbours' vertex indices, nearest first
    distance: Float[Tensor, "N k"]  # their (unsoftened) distances to the points


class MeshAnchoredEncoder(nn.Module):
    """Blend of per-neighbour MLP outputs over the ``k`` nearest posed vertices (MonoAvatar's aggregation).

    For point ``q`` and neighbour ``v_j`` with feature ``f_j``: ``h_j = MLP0(PE(o_j) ⊕ f_j)`` where the offset
    ``o_j = v_j - q``, expressed in the head's frame, ``R^T (v_j - q)``, when the head's rotation ``R`` (head ->
    world) is given, so the features turn with the head; the output is ``Σ_j w_j h_j``. The weights are the
    paper's normalised inverse distances with ``d`` softened to ``sqrt(d^2 + eps^2)``, computed as a softmax of
    ``-log(d^2 + eps^2) / 2``: finite and smooth everywhere (no square root at zero), equal to ``(1/d_j) / Σ 1/d``
    wherever ``d >> eps``, and at a vertex the weight of that vertex is ``1 - O(eps Σ_k 1/d_k)`` (one in the
    limit ``eps -> 0``), so the point takes that vertex's ``h_j``.

    MLP0 is ``hidden_layers`` ReLU layers of ``hidden_dim`` and a linear output of ``out_dim`` (the blend is
    then of unclipped features; the decoder adds its own non-linearity).
    """

    def __init__(self, feature_dim: int, config: MeshAnchoredConfig | None = None) -> None:
        """``feature_dim``: width of the per-vertex features (MonoAvatar: 64)."""
        super().__init__()
        self.feature_dim = check_count("feature_dim", feature_dim, 1)
        self.config = config = config if config is not None else MeshAnchoredConfig()
        self.in_dim = SPATIAL_DIMS
        self.out_dim = config.out_dim
        self.position_encoding = FrequencyEncoding(SPATIAL_DIMS, config.position_frequencies, include_input=True)
        width = self.position_encoding.out_dim + feature_dim  # features to features: bfloat16 may run its products
        self.mlp0 = mlp(width, config.hidden_dim, config.hidden_layers, config.out_dim, reducible=True)

    def forward(
        self,
        points: Float[Tensor, "N 3"],
        mesh: TriangleMesh,
        vertex_features: Float[Tensor, "B V F"],
        frame: Int[Tensor, " N"] | IntLike,
        rotation: Float[Tensor, "B 3 3"] | None = None,
    ) -> AnchoredFeatures:
        """``points`` near frame ``frame[i]`` of ``mesh`` (posed vertices ``[B, V, 3]``); ``vertex_features``
        ``[B, V, feature_dim]``, one set per frame, in the network's dtype; ``rotation`` ``[B, 3, 3]`` (head ->
        world) or None (offsets stay in world axes)."""
        weight = self.mlp0[0].weight
        b, v = mesh.num_frames, mesh.num_vertices
        check_float("vertex_features", vertex_features, [b, v, self.feature_dim], device=mesh.device)
        if vertex_features.dtype != weight.dtype:
            raise TypeError(f"vertex_features: expected {weight.dtype} (the network's parameters), got {vertex_features.dtype}")
        if weight.device != mesh.device:
            raise ValueError(f"mesh: expected a mesh on {weight.device} (the network's device), got one on {mesh.device}")
        if rotation is not None:
            check_float("rotation", rotation, [b, 3, 3], device=mesh.device)
            eye = torch.eye(3, dtype=rotation.dtype, device=rotation.device)
            error = (rotation.transpose(1, 2) @ rotation - eye).abs().amax()
            if error > ROTATION_TOLERANCE:
                raise ValueError(f"rotation: expected rotation matrices (R^T R = I), got one off by {float(error):.3g}")

        knn = knn_vertices(mesh, points, self.config.k, frame)  # checks points and k
        frame = mesh.frame_index(frame, points.shape[0])
        index = knn.index
        dtype = knn.distance.dtype  # the wider of the points' and the mesh's
        offset = gather_vertex_rows(mesh.vertices.to(dtype), frame, index) - points.to(dtype)[:, None]  # [N, k, 3]
        if rotation is not None:
            # R^T o as row vectors: o^T R.
            offset = torch.einsum("nki,nij->nkj", offset, rotation.to(dtype).index_select(0, frame))
        # softmax(-log(d^2 + eps^2) / 2) = normalised 1 / sqrt(d^2 + eps^2), without overflow at d = 0.
        logits = -0.5 * torch.log(offset.square().sum(dim=-1) + self.config.eps**2)
        weights = torch.softmax(logits, dim=-1).to(weight.dtype)

        n, k = index.shape
        # MLP0's first layer on [PE(o_j), f_j] as two products: the feature half once per vertex of the frames
        # present, then gathered (neighbours share vertices: 4 frames of 5,557 against 4 rows per sample).
        width = self.position_encoding.out_dim
        first = self.mlp0[0]
        per_vertex = linear(vertex_features.reshape(b * v, self.feature_dim), weight[:, width:].contiguous(), first.bias, True)
        per_vertex, position_weight = per_vertex.reshape(b, v, -1), weight[:, :width].contiguous()
        # The weights sum to one, so the last linear layer commutes with the blend: it runs once a point on the
        # blended activations, not once a neighbour (k x fewer rows; MLP0 alone is its first layer).
        layers, last = (self.mlp0[1:-1], self.mlp0[-1]) if len(self.mlp0) > 1 else (None, None)

        def blend(rows: slice, out: Tensor | None = None) -> Tensor:  # Σ_j w_j h_j before MLP0's last layer, points ``rows``
            m = offset[rows].shape[0]
            encoded = self.position_encoding(offset[rows].reshape(m * k, SPATIAL_DIMS).to(weight.dtype))
            h = gather_vertex_rows(per_vertex, frame[rows], index[rows]).reshape(m * k, -1)
            if out is None or _product_dtype(encoded, True) is not None:
                h = linear(encoded, position_weight, reducible=True) + h
            else:  # float32 without autograd: the product summed into the gathered rows, no pass or tensor of its own
                h.addmm_(encoded, position_weight.t())  # (4,096 rows: 0.36 against 1.09 ms, the same values)
            h = h if layers is None else layers(h)
            return torch.bmm(weights[rows, None, :], h.reshape(m, k, -1), out=out)[:, 0]

        if torch.is_grad_enabled():
            blended = blend(slice(None))
        else:  # blocks of points whose temporaries ([block x k, 128] a layer) stay in the cache, blended in place
            blended = weights.new_empty(n, first.out_features)  # MLP0's hidden width (its output width without hidden layers)
            for start in range(0, n, INFERENCE_BLOCK):
                rows = slice(start, start + INFERENCE_BLOCK)
                blend(rows, out=blended[rows, None, :])
        features = blended if last is None else linear(blended, last.weight, last.bias, True)
        return AnchoredFeatures(features=features, weights=weights, index=index, distance=knn.distance)

    def extra_repr(self) -> str:
        return f"feature_dim={self.feature_dim}, k={self.config.k}, out_dim={self.out_dim}, eps={self.config.eps}"
