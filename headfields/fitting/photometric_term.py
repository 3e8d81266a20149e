"""The photometric term of the face tracker: the frames' pixels against the tracked face's colours, which tells the head's
small turns from expressions where the 51 landmarks cannot (both move them alike).

The face (:func:`face_region`) carries one colour per vertex, interpolated by the barycentrics of each pixel's ray hit;
the colours are the least-squares fit to the frames under the current tracking, re-solved before each Gauss-Newton step
(as metrical-tracker and VHAP fit their texture beside the pose). Warp finds which face each pixel's ray hits; the hit's
barycentrics and their derivatives in the face's corners are torch's (Möller-Trumbore), and the corners' derivatives in
the frame's parameters are the landmark fit's own (:meth:`.LandmarkSurface.linear`, forward-mode for the rotations), so
the term adds a block per frame to the same banded Gauss-Newton system (:mod:`.landmark_tracking`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from jaxtyping import Bool, Float, UInt8
from torch import Tensor

from ..geometry import TriangleMesh
from ..geometry.queries import ray_intersect
from ..geometry.triangles import ray_triangle
from ..parametric.model import ParametricModel
from .landmark_surface import LandmarkSurface

__all__ = ["FACE_MARGIN", "PhotometricTerm", "face_region"]

FACE_MARGIN = (0.01, 0.02, 0.02)  # metres past the static landmarks' box: cheeks, forehead, chin (x, y, depth)
HIDDEN_REGIONS = ("teeth", "mouth_interior", "eyes")  # inside the face or behind the lids: no landmark sees them
PHOTOMETRIC_CHUNK = 16  # frames whose surface Jacobians are held at once
COLOUR_ITERATIONS = 25  # conjugate gradient steps of the colours' least squares (warm-started step to step)


def face_region(model: ParametricModel) -> Bool[Tensor, " V"]:
    """The neutral head's vertices inside the static landmarks' box grown by ``FACE_MARGIN``, in front of its back,
    less the regions no camera sees (teeth, mouth interior, eyeballs) where the model names them."""
    neutral = model()
    points, rest = neutral.landmarks[0], neutral.canonical_vertices
    low, high = points.amin(0), points.amax(0)
    margin = torch.tensor(FACE_MARGIN, dtype=rest.dtype, device=rest.device)
    inside = ((rest[:, :2] > low[:2] - margin[:2]) & (rest[:, :2] < high[:2] + margin[:2])).all(-1)
    region = inside & (rest[:, 2] > low[2] - margin[2])
    for name in HIDDEN_REGIONS:
        if name in model.regions:
            region[model.regions[name]] = False
    return region.detach().cpu()


@dataclass
class _Corners:
    """Each region vertex as a surface point (a face holding it, its one-hot barycentrics): what
    :class:`.LandmarkSurface` evaluates."""

    faces: Tensor
    bary: Tensor


class PhotometricTerm:
    """Frames ``images [N, H, W, 3]`` (uint8) inside ``masks [N, H, W]`` against the face of ``model`` seen by the
    tracker's camera (at the origin, OpenCV axes flipped to the world's: see ``OPENCV_FROM_WORLD``), every
    ``stride``-th pixel a row and a column. Residuals are colours in [0, 1], Cauchy-weighted at ``robust_scale``
    (what the face lacks: hair over the brow, a hand, glasses)."""

    def __init__(
        self,
        model: ParametricModel,
        images: UInt8[Tensor, "N H W 3"],
        masks: Bool[Tensor, "N H W"],
        expressions: int,
        stride: int = 1,
        robust_scale: float = 0.1,
    ):
        faces = model.faces.cpu()
        keep = face_region(model)[faces].all(-1)
        region_faces = faces[keep]
        used, local = torch.unique(region_faces.flatten(), return_inverse=True)
        self.faces = local.view(-1, 3)  # [F, 3] into the region's vertices
        holder = torch.zeros(len(used), dtype=torch.long)  # a face of the model holding each region vertex
        corner = torch.zeros(len(used), dtype=torch.long)
        ids = torch.nonzero(keep)[:, 0]
        for k in range(3):
            holder[local.view(-1, 3)[:, k]] = ids
            corner[local.view(-1, 3)[:, k]] = k
        bary = torch.nn.functional.one_hot(corner, 3).float()
        self.surface = LandmarkSurface(model, _Corners(holder, bary), expressions)
        self.num_vertices = len(used)
        n, h, w, _ = images.shape
        rows = torch.arange(0, h, stride)
        cols = torch.arange(0, w, stride)
        grid_rows, grid_cols = torch.meshgrid(rows, cols, indexing="ij")
        self.pixels = torch.stack([grid_cols.reshape(-1), grid_rows.reshape(-1)], -1)  # [P, 2] (col, row)
        sampled = images[:, grid_rows.reshape(-1), grid_cols.reshape(-1)].double() / 255  # [N, P, 3]
        self.colours_seen = sampled
        self.inside = masks[:, grid_rows.reshape(-1), grid_cols.reshape(-1)]  # [N, P]
        self.width, self.height = w, h
        self.robust_scale = robust_scale
        self.colours = torch.full((self.num_vertices, 3), 0.5, dtype=torch.float64)

    def rays(self, focal: float) -> Tensor:
        """Unit directions ``[P, 3]`` in the world (the camera at the origin looking down -z) of the sampled pixels'
        centres."""
        x = (self.pixels[:, 0].double() + 0.5 - self.width / 2) / focal
        y = (self.pixels[:, 1].double() + 0.5 - self.height / 2) / focal
        return torch.nn.functional.normalize(torch.stack([x, -y, -torch.ones_like(x)], -1), dim=-1)

    def hits(self, vertices: Float[Tensor, "N V 3"], focal: float) -> tuple[Tensor, Tensor, Tensor]:
        """The sampled pixels inside the masks whose rays hit the face: frame ``[R]``, pixel ``[R]``, face ``[R]``
        (fixed while a step is linearised: the barycentrics are recomputed from the corners)."""
        frame, pixel = torch.nonzero(self.inside, as_tuple=True)
        dirs = self.rays(focal)[pixel]
        mesh = TriangleMesh(vertices.float(), self.faces)
        hit = ray_intersect(mesh, torch.zeros_like(dirs).float(), dirs.float(), frame, validate=False)
        return frame[hit.hit], pixel[hit.hit], hit.face[hit.hit]

    def _bary(self, corners: Tensor, dirs: Tensor) -> Tensor:
        return ray_triangle(torch.zeros_like(dirs), dirs, corners[:, 0], corners[:, 1], corners[:, 2])[1]

    def solve_colours(self, vertices: Float[Tensor, "N V 3"], focal: float) -> None:
        """The vertex colours that best explain the hit pixels: the least squares ``min |A c - I|^2`` (``A`` the hits'
        barycentrics) by conjugate gradients on its normal equations, from the current colours (a vertex no pixel
        sees keeps its own)."""
        frame, pixel, face = self.hits(vertices, focal)
        ids = self.faces[face]  # [R, 3]
        bary = self._bary(vertices[frame[:, None], ids], self.rays(focal)[pixel])
        seen = self.colours_seen[frame, pixel]

        def forward(c: Tensor) -> Tensor:  # A c: [V, 3] -> [R, 3]
            return (bary[..., None] * c[ids]).sum(1)

        def adjoint(r: Tensor) -> Tensor:  # A^T r: [R, 3] -> [V, 3]
            out = torch.zeros(self.num_vertices, 3, dtype=torch.float64)
            return out.index_add_(0, ids.reshape(-1), (bary[..., None] * r[:, None]).reshape(-1, 3))

        colours = self.colours.clone()
        r = adjoint(seen - forward(colours))
        direction, norm = r.clone(), r.square().sum(0)
        for _ in range(COLOUR_ITERATIONS):
            product = adjoint(forward(direction))
            alpha = norm / (direction * product).sum(0).clamp(min=1e-30)
            colours, r = colours + alpha * direction, r - alpha * product
            new = r.square().sum(0)
            if bool((new < 1e-24).all()):
                break
            direction, norm = r + new / norm.clamp(min=1e-30) * direction, new
        self.colours = colours.clamp(0, 1)

    def residuals(self, vertices: Float[Tensor, "N V 3"], focal: float) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Frame ``[R]``, pixel ``[R]``, face ``[R]`` and colour residual ``[R, 3]`` of every hit pixel."""
        frame, pixel, face = self.hits(vertices, focal)
        corners = vertices[frame[:, None], self.faces[face]]
        bary = self._bary(corners, self.rays(focal)[pixel])
        colour = (bary[..., None] * self.colours[self.faces[face]]).sum(1)
        return frame, pixel, face, colour - self.colours_seen[frame, pixel]

    def robust(self, residual: Tensor) -> tuple[Tensor, Tensor]:
        """The Cauchy cost of each hit pixel ``[R]`` and its IRLS weight ``[R]``."""
        c2 = self.robust_scale**2
        squared = residual.square().sum(-1)
        return torch.log1p(squared / c2) * c2, 1 / (1 + squared / c2)

    def colour_jacobian(self, corners: Tensor, dirs: Tensor, face: Tensor) -> Tensor:
        """d colour / d corners ``[R, 3 (rgb), 3 (corner), 3 (xyz)]`` of hits on ``face`` with ``corners [R, 3, 3]``."""

        def bary_of(abc: Tensor, d: Tensor) -> Tensor:
            return self._bary(abc[None], d[None])[0]

        d_bary = torch.func.vmap(torch.func.jacfwd(bary_of))(corners, dirs)  # [R, 3 (bary), 3, 3]
        c = self.colours[self.faces[face]]  # [R, 3 (corner), 3 (rgb)]
        return torch.einsum("rkc,rkjx->rcjx", c, d_bary)

    def cost(self, vertices: Float[Tensor, "N V 3"], focal: float) -> Tensor:
        """The Cauchy cost of every hit pixel, summed."""
        return self.robust(self.residuals(vertices, focal)[3])[0].sum()

    def system(
        self, vertices: Float[Tensor, "N V 3"], jacobian: Callable[[Tensor], Tensor], focal: float, scale: float
    ) -> tuple[Tensor, Tensor]:
        """Gauss-Newton blocks ``[N, P, P]`` and gradients ``[N, P]`` of ``scale`` times the cost, per frame:
        ``jacobian(frames)`` gives the region vertices' Jacobians ``[B, V, 3, P]`` in those frames' parameters."""
        frame, pixel, face, residual = self.residuals(vertices, focal)
        _, weight = self.robust(residual)
        dirs = self.rays(focal)[pixel]
        n, h, g = vertices.shape[0], None, None
        for start in range(0, n, PHOTOMETRIC_CHUNK):
            chunk = torch.arange(start, min(n, start + PHOTOMETRIC_CHUNK))
            d_world = jacobian(chunk)
            if h is None:
                p = d_world.shape[-1]
                h, g = torch.zeros(n, p, p, dtype=torch.float64), torch.zeros(n, p, dtype=torch.float64)
            rows = (frame >= start) & (frame < start + len(chunk))
            local, corners = frame[rows] - start, self.faces[face[rows]]
            d_colour = self.colour_jacobian(vertices[frame[rows][:, None], corners], dirs[rows], face[rows])
            rows_jacobian = torch.einsum("rcjx,rjxp->rcp", d_colour, d_world[local[:, None], corners])  # [R, 3, P]
            counts = torch.bincount(local, minlength=len(chunk)).tolist()
            parts = zip(
                rows_jacobian.split(counts), residual[rows].split(counts), (weight[rows] * scale).split(counts), strict=True
            )
            for b, (j, r, w) in enumerate(parts):
                h[start + b] = torch.einsum("rcp,r,rcq->pq", j, w, j)
                g[start + b] = torch.einsum("rcp,r,rc->p", j, w, r)
        return h, g
