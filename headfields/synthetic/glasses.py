"""A pair of glasses for the synthetic head: opaque geometry the tracked template lacks altogether, moving rigidly
with the head.

The frame is a mesh of its own, built in the head's canonical frame (metres, y up, the face along +z) from thin
tubes: two elliptic rims in front of the eyes, a bridge arching over the nose between them, and two temples that
leave the rims' outer edges, pass the sides of the head clear of the skin and hook down behind where the ears
would be. It is fitted to the canonical mesh by ray casting: the rims stand ``GLASSES_CLEARANCE`` in front of
the face's most prominent point behind them, the temples as far out from the skull's side.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from torch import Tensor

from ..checks import check_float
from ..geometry import TriangleMesh, ray_intersect
from ._appearance import AMBIENT, LIGHT_DIRECTION
from ._head_mesh import EYE_X, EYE_Y

__all__ = ["GLASSES_COLOUR", "GLASSES_LABEL", "glasses_colour", "glasses_mesh"]

GLASSES_LABEL = "glasses"  # the segmentation label of the frame's pixels (INSTA's face parser has one too)
GLASSES_COLOUR = (0.10, 0.12, 0.18)  # a dark blue-grey frame (linear RGB)
RIM_HALF_WIDTH, RIM_HALF_HEIGHT = 0.023, 0.017  # the lens outline, an ellipse about each eye (EYE_X, EYE_Y)
RIM_RADIUS = 0.002  # the tubes' radius: rims 4 mm thick, about a pixel of the default 96-pixel video
TEMPLE_RADIUS = 0.0015
GLASSES_CLEARANCE = 0.005  # metres between the tubes' surface and the skin (rims in front, temples at the sides)
BRIDGE_RISE = 0.004  # the bridge arches this far above the rims' inner ends
TEMPLE_BACK_Z = -0.01  # the temples run back to here (about the ears), then hook down
EAR_HOOK = (0.025, 0.02)  # the hook's drop and its run further back (metres)
TUBE_SIDES = 8  # vertices round each tube's section
RIM_POINTS, BRIDGE_POINTS, TEMPLE_POINTS = 48, 12, 24


def glasses_mesh(vertices: Float[Tensor, "V 3"], faces: Int[Tensor, "F 3"]) -> tuple[Float[Tensor, "G 3"], Int[Tensor, "H 3"]]:
    """The glasses fitted to the canonical synthetic head ``vertices``, ``faces``: their vertices (canonical,
    like the head's) and faces.

        vertices, faces = glasses_mesh(head.canonical_vertices, head.faces)
    """
    check_float("vertices", vertices, [None, 3])
    device = vertices.device
    mesh = TriangleMesh(vertices.detach()[None].float(), faces)
    angle = torch.linspace(0.0, 2 * math.pi, RIM_POINTS + 1, dtype=torch.float64)[:-1]
    outline = torch.stack([RIM_HALF_WIDTH * angle.cos(), RIM_HALF_HEIGHT * angle.sin()], dim=1)  # about a lens centre
    lenses = [torch.tensor([side * EYE_X, EYE_Y], dtype=torch.float64) for side in (1.0, -1.0)]
    # The rims' plane: in front of the face wherever a rim or the bridge passes (rays cast back from far in front).
    behind = torch.cat([lens + outline for lens in lenses] + [torch.tensor([[0.0, EYE_Y]], dtype=torch.float64)])
    face_z = _front_surface_z(mesh, behind)
    if face_z.isinf().any():
        raise ValueError("vertices: expected the synthetic head, found no face behind the glasses' rims")
    z = float(face_z.max()) + GLASSES_CLEARANCE + RIM_RADIUS
    # The temples: outside the skull's side at their height, over the length they run back.
    skull = vertices.detach().double().cpu()
    low, high = EYE_Y - EAR_HOOK[0] - TEMPLE_RADIUS, EYE_Y + TEMPLE_RADIUS  # the temples' heights, hook included
    level = (skull[:, 1] > low - 0.01) & (skull[:, 1] < high + 0.01) & (skull[:, 2] < z)
    if not level.any():
        raise ValueError("vertices: expected the synthetic head, found no skull beside the eyes")
    temple_x = float(skull[level, 0].abs().max()) + GLASSES_CLEARANCE + TEMPLE_RADIUS

    tubes = []
    for lens in lenses:
        rim = torch.cat([lens + outline, torch.full((RIM_POINTS, 1), z, dtype=torch.float64)], dim=1)
        tubes.append(_tube(rim, RIM_RADIUS, closed=True))
    inner = EYE_X - RIM_HALF_WIDTH
    u = torch.linspace(-1.0, 1.0, BRIDGE_POINTS, dtype=torch.float64)
    bridge = torch.stack([inner * u, EYE_Y + BRIDGE_RISE * (1.0 - u * u), torch.full_like(u, z)], dim=1)
    tubes.append(_tube(bridge, TEMPLE_RADIUS, closed=False))
    for side in (1.0, -1.0):
        outer = EYE_X + RIM_HALF_WIDTH
        controls = torch.tensor(
            [
                [outer, EYE_Y, z],
                [temple_x, EYE_Y, z - 0.01],
                [temple_x, EYE_Y, 0.5 * (z + TEMPLE_BACK_Z)],
                [temple_x, EYE_Y, TEMPLE_BACK_Z],
                [temple_x, EYE_Y - EAR_HOOK[0], TEMPLE_BACK_Z - EAR_HOOK[1]],
            ],
            dtype=torch.float64,
        )
        controls[:, 0] *= side
        tubes.append(_tube(_spline(controls, TEMPLE_POINTS), TEMPLE_RADIUS, closed=False))

    points, triangles, offset = [], [], 0
    for v, f in tubes:
        points.append(v)
        triangles.append(f + offset)
        offset += len(v)
    return torch.cat(points).float().to(device), torch.cat(triangles).to(device)


def glasses_colour(normals: Float[Tensor, "N 3"], dirs: Float[Tensor, "N 3"]) -> Float[Tensor, "N 3"]:
    """The frame's shaded colour where rays ``dirs`` hit it with canonical face normals ``normals`` (either side:
    the side facing the ray is lit, with the head surface's light)."""
    facing = torch.where(((normals * dirs).sum(dim=1) > 0)[:, None], -normals, normals)
    light = F.normalize(torch.tensor(LIGHT_DIRECTION, dtype=normals.dtype, device=normals.device), dim=0)
    shade = AMBIENT + (1.0 - AMBIENT) * (facing @ light).clamp(min=0.0)
    return torch.tensor(GLASSES_COLOUR, dtype=normals.dtype, device=normals.device) * shade[:, None]


def _front_surface_z(mesh: TriangleMesh, xy: Float[Tensor, "N 2"]) -> Float[Tensor, " N"]:
    """The height z of the first surface that rays from far in front (+z) down -z meet at ``xy`` (-inf: none)."""
    far = 1.0
    origins = torch.cat([xy, torch.full((len(xy), 1), far, dtype=xy.dtype)], dim=1).float().to(mesh.device)
    dirs = torch.tensor([0.0, 0.0, -1.0], device=mesh.device).expand_as(origins).contiguous()
    hit = ray_intersect(mesh, origins, dirs)
    return torch.where(hit.hit, far - hit.t, -math.inf).double().cpu()


def _spline(controls: Float[Tensor, "K 3"], count: int) -> Float[Tensor, "P 3"]:
    """``count`` points per span of the uniform Catmull-Rom spline through ``controls`` (ends repeated)."""
    p = torch.cat([controls[:1], controls, controls[-1:]])
    s = torch.linspace(0.0, 1.0, count + 1, dtype=controls.dtype)[:-1, None]
    spans = []
    for i in range(1, len(p) - 2):
        p0, p1, p2, p3 = p[i - 1], p[i], p[i + 1], p[i + 2]
        spans.append(0.5 * (2 * p1 + (p2 - p0) * s + (2 * p0 - 5 * p1 + 4 * p2 - p3) * s**2 + (3 * p1 - p0 - 3 * p2 + p3) * s**3))
    return torch.cat([*spans, controls[-1:]])


def _tube(curve: Float[Tensor, "P 3"], radius: float, closed: bool) -> tuple[Float[Tensor, "W 3"], Int[Tensor, "T 3"]]:
    """A tube of ``radius`` round ``curve``: rings of TUBE_SIDES vertices in frames carried along the curve
    (parallel transport); an open tube's ends are capped."""
    n = len(curve)
    ahead = torch.roll(curve, -1, 0) if closed else torch.cat([curve[1:], 2 * curve[-1:] - curve[-2:-1]])
    behind = torch.roll(curve, 1, 0) if closed else torch.cat([2 * curve[:1] - curve[1:2], curve[:-1]])
    tangent = F.normalize(ahead - behind, dim=1)
    normal = torch.zeros_like(curve)
    guess = torch.tensor([0.0, 0.0, 1.0], dtype=curve.dtype)  # rims lie in a plane of constant z: no twist
    if (tangent[0] @ guess).abs() > 0.9:
        guess = torch.tensor([0.0, 1.0, 0.0], dtype=curve.dtype)
    previous = guess
    for i in range(n):
        previous = F.normalize(previous - (previous @ tangent[i]) * tangent[i], dim=0)
        normal[i] = previous
    binormal = torch.linalg.cross(tangent, normal)
    theta = 2 * math.pi * torch.arange(TUBE_SIDES, dtype=curve.dtype) / TUBE_SIDES
    ring = theta.cos()[None, :, None] * normal[:, None] + theta.sin()[None, :, None] * binormal[:, None]
    vertices = (curve[:, None] + radius * ring).reshape(-1, 3)
    k = torch.arange(TUBE_SIDES)
    segments = n if closed else n - 1
    faces = []
    for i in range(segments):
        a, b = i * TUBE_SIDES + k, ((i + 1) % n) * TUBE_SIDES + k
        a2, b2 = i * TUBE_SIDES + (k + 1) % TUBE_SIDES, ((i + 1) % n) * TUBE_SIDES + (k + 1) % TUBE_SIDES
        faces += [torch.stack([a, b, b2], dim=1), torch.stack([a, b2, a2], dim=1)]
    if not closed:  # a centre vertex at each end, fanned to its ring
        ends = torch.stack([curve[0], curve[-1]])
        first, last = len(vertices), len(vertices) + 1
        faces += [
            torch.stack([torch.full_like(k, first), (k + 1) % TUBE_SIDES, k], dim=1),
            torch.stack([torch.full_like(k, last), (n - 1) * TUBE_SIDES + k, (n - 1) * TUBE_SIDES + (k + 1) % TUBE_SIDES], dim=1),
        ]
        vertices = torch.cat([vertices, ends])
    return vertices, torch.cat(faces)
