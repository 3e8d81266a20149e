"""Heads built by hand for the deformer tests: a Head from vertices alone, rigid and bent motions of a small
ellipsoid, and points near each frame's posed mesh."""

import torch
import torch.nn.functional as F

from headfields.geometry import sample_near_surface, uv_sphere
from headfields.parametric import Head


def make_head(vertices, canonical, faces, root=None) -> Head:
    """A Head by hand: posed ``vertices [B,V,3]``, ``canonical [V,3]``; ``root [B,4,4]`` its global motion."""
    b, v = vertices.shape[:2]
    kw = {"dtype": vertices.dtype, "device": vertices.device}
    root = torch.eye(4, **kw).expand(b, 4, 4) if root is None else root
    return Head(
        vertices=vertices,
        rest_vertices=vertices,
        canonical_vertices=canonical,
        faces=faces.to(vertices.device),
        uvs=None,
        uv_faces=None,
        shape=torch.zeros(0, **kw),
        expression=torch.zeros(b, 0, **kw),
        pose=torch.zeros(b, 1, 3, **kw),
        translation=root[:, :3, 3],
        joints=torch.zeros(b, 1, 3, **kw),
        joint_transforms=root[:, None],
        skinning_weights=torch.ones(v, 1, **kw),
        regions={},
        landmarks=None,
    )


def rigid_head(canonical, faces, rotation, translation) -> Head:
    """Every frame b is ``rotation[b] @ canonical + translation[b]``, and the root joint says so."""
    root = torch.eye(4, dtype=canonical.dtype, device=canonical.device).repeat(len(rotation), 1, 1)
    root[:, :3, :3], root[:, :3, 3] = rotation, translation
    vertices = torch.einsum("bij,vj->bvi", rotation, canonical) + translation[:, None]
    return make_head(vertices, canonical, faces, root)


def small_sphere(dtype=torch.float64, device="cpu"):
    v, f = uv_sphere(6, 8, dtype=dtype, device=device)
    return v * torch.tensor([1.0, 0.8, 1.2], dtype=dtype, device=device), f


def bent_head(frames=2, seed=0, device="cpu") -> Head:
    """A non-rigidly moving sphere: every frame bends, stretches, rotates and translates it differently."""
    g = torch.Generator().manual_seed(seed)
    canonical, faces = small_sphere(device=device)
    posed = []
    for _ in range(frames):
        a, k = torch.rand(2, generator=g, dtype=torch.float64) * torch.tensor([0.3, 3.0], dtype=torch.float64) + 0.1
        v = canonical * (1 + a.item() * torch.sin(k.item() * canonical[:, :1]))
        rot = random_rotation(g)
        posed.append(v @ rot.T.to(device) + torch.randn(3, generator=g, dtype=torch.float64).to(device))
    return make_head(torch.stack(posed), canonical, faces)


def random_rotation(g):
    q, _ = torch.linalg.qr(torch.randn(3, 3, generator=g, dtype=torch.float64))
    return q * torch.sign(torch.det(q))


def near_points(head: Head, n: int, thickness: float, seed: int = 0):
    """``n`` points within ``thickness`` of each frame's posed mesh, random directions, frame per point."""
    xs, frames = [], []
    for b in range(head.num_frames):
        xs.append(sample_near_surface(head.posed_mesh, n, thickness, frame=b, seed=seed + b))
        frames.append(torch.full((n,), b, dtype=torch.long, device=head.vertices.device))
    x, frame = torch.cat(xs), torch.cat(frames)
    g = torch.Generator().manual_seed(seed)
    dirs = F.normalize(torch.randn(x.shape, generator=g, dtype=torch.float64), dim=-1).to(x)
    return x, frame, dirs
