"""Coloured meshes out of fields (``headfields.apps.export``) against analytic truth, and the PLY writer against trimesh
and headfields' own reader.

The analytic fields are the real NerfField / NeusField composers with hand-written parts: a sphere of radius R whose
centre follows the frame's translation (read through the field's condition, so a wrong frame moves the sphere),
density a sigmoid that crosses DENSITY_THRESHOLD on the sphere, SDF ``|x - c| - R``, and a colour that is the
normalised position (plus, for the NeRF, a blue channel that reads the view direction)."""

import dataclasses
import math

import numpy as np
import pytest
import torch
import trimesh
from tiny_configs import TINY_INSTA
from torch import nn

from headfields.apps.export import DENSITY_THRESHOLD, ColoredMesh, field_mesh, write_ply
from headfields.data.scans import read_ply
from headfields.decoders import AppearanceConfig, DecoderOutput, SdfMlpConfig, SdfOutput
from headfields.fields import NerfField, NeusField
from headfields.geometry import uv_sphere
from headfields.heads import tracked_head
from headfields.models.insta import Insta
from headfields.models.mixes import triangle_neus
from headfields.models.neus_avatar import NeusAvatarConfig
from headfields.parametric import TrackedMeshModel, load_model
from headfields.renderers import NeusSampler
from headfields.training import AvatarModel

from helpers import raises_naming

RADIUS = 0.08  # the analytic sphere's, metres
OFFSET = (0.01, -0.02, 0.015)  # its centre from the frame's translation: not the grid's centre
WIDTH = 0.01  # the density's falloff, metres
RESOLUTION = 40
PADDING = 0.05
TRANSLATIONS = [[0.0, 0.0, 0.0], [0.3, -0.1, 0.2]]
# The NeuS avatar of test_neus_avatar, as small: its SDF starts as a sphere in canonical units.
TINY_NEUS = NeusAvatarConfig(
    sdf=SdfMlpConfig(hidden_dim=32, hidden_layers=2, position_frequencies=2),
    appearance=AppearanceConfig(hidden_dim=16, hidden_layers=2, feature_dim=8),
    sampler=NeusSampler(coarse=12, rounds=1, per_round=4, padding=0.03),
)


def _head(device, dtype=torch.float32):
    """Two frames of a 10 cm sphere mesh, the second moved: the box field_mesh marches is around the frame's."""
    vertices, faces = uv_sphere(8, 12, radius=0.1, dtype=torch.float32)
    model = TrackedMeshModel(vertices, faces, 0).to(device)
    return model(torch.tensor(TRANSLATIONS, device=device))


def _centre(head, frame):
    return head.translation[frame] + torch.tensor(OFFSET, dtype=head.translation.dtype, device=head.translation.device)


def _analytic_colour(points, centre):
    return ((points - centre) / (2 * RADIUS) + 0.5).clamp(0, 1)


class _Centre(nn.Module):
    """The condition: each sample's frame's sphere centre."""

    dim = 3

    def forward(self, canonical, head, frame):
        return head.translation[frame] + torch.tensor(OFFSET, dtype=head.translation.dtype, device=frame.device)


class _Sphere(nn.Module):
    """A NerfDecoder's interface: density ``2 T sigmoid((R - d) / w)`` (T at the sphere), rgb the normalised position
    in red and green, blue ``(1 - dirs . radial) / 2``: 1 when looking at the sphere straight in."""

    def density(self, features, cond):
        return 2 * DENSITY_THRESHOLD * torch.sigmoid((RADIUS - (features - cond).norm(dim=-1)) / WIDTH)

    def forward(self, features, dirs, cond):
        rgb = _analytic_colour(features, cond)
        radial = torch.nn.functional.normalize(features - cond, dim=-1)
        rgb = torch.cat([rgb[:, :2], (1 - (dirs * radial).sum(-1, keepdim=True)) / 2], dim=1)
        return DecoderOutput(density=self.density(features, cond), rgb=rgb)


class _SphereSdf(nn.Module):
    def forward(self, points, extra):
        return SdfOutput(sdf=(points - extra).norm(dim=-1) - RADIUS, features=points - extra)


class _PositionAlbedo(nn.Module):
    def forward(self, mapped, features, code):
        return _analytic_colour(features, torch.zeros_like(features))


class _Model(AvatarModel):
    def __init__(self, field):
        super().__init__()
        self.field = field

    def radiance_field(self):
        return self.field


def _nerf_model():
    return _Model(NerfField(None, nn.Identity(), _Sphere(), nn.Identity(), condition=_Centre()))


def _neus_model():
    return _Model(NeusField(None, _SphereSdf(), _PositionAlbedo(), sdf_condition=_Centre()))


def _signed_volume(vertices, faces):
    """The divergence theorem: positive for a closed surface whose faces are counter-clockwise from outside."""
    v = vertices.double()[faces]
    return float(torch.linalg.det(v).sum() / 6)


@pytest.mark.parametrize("kind", ["nerf", "neus"])
def test_the_sphere_comes_out_where_it_is_facing_out_with_its_colours(device, kind):
    head = _head(device)
    model = _nerf_model() if kind == "nerf" else _neus_model()
    frame = 1
    mesh = field_mesh(model, head, frame, resolution=RESOLUTION, padding=PADDING)
    assert isinstance(mesh, ColoredMesh) and len(mesh.faces) > 500
    assert mesh.vertices.device == head.vertices.device and mesh.vertices.dtype == head.vertices.dtype
    assert mesh.faces.dtype == torch.long and mesh.colors.shape == mesh.vertices.shape

    voxel = float((head.bounds[frame, 1] - head.bounds[frame, 0]).amax() + 2 * PADDING) / (RESOLUTION - 1)
    centre = _centre(head, frame)
    distance = (mesh.vertices - centre).norm(dim=-1) - RADIUS
    assert float(distance.abs().max()) < 0.1 * voxel, (float(distance.abs().max()), voxel)  # ~0.7 mm at a 7 mm voxel
    # Closed, outward: the signed volume is the ball's (marching cubes cuts a little off the curvature).
    assert _signed_volume(mesh.vertices, mesh.faces) == pytest.approx(4 / 3 * math.pi * RADIUS**3, rel=0.02)

    expected = _analytic_colour(mesh.vertices, centre)
    if kind == "nerf":  # blue read the view direction: -normal looks straight in (the mesh normal is within degrees)
        torch.testing.assert_close(mesh.colors[:, :2], expected[:, :2], rtol=0, atol=1e-5)
        assert float(mesh.colors[:, 2].min()) > 0.995
    else:
        torch.testing.assert_close(mesh.colors, expected, rtol=0, atol=1e-5)
    assert float(mesh.colors.min()) >= 0 and float(mesh.colors.max()) <= 1


def test_the_frame_picks_the_box_and_the_field_s_frame():
    """Frame 0's sphere is 0.36 m from frame 1's: each mesh is around its own centre (the box and the field agree)."""
    head, model = _head("cpu"), _neus_model()
    for frame in (0, 1):
        mesh = field_mesh(model, head, frame, resolution=24)
        torch.testing.assert_close(mesh.vertices.mean(0), _centre(head, frame), rtol=0, atol=2e-3)


def test_a_level_picks_another_surface_and_colours_are_clamped():
    """SDF level 0.02: the sphere of radius R + 2 cm; density level T / 2: where sigmoid = 1/4, d = R + w ln 3.
    The NeuS albedo there reaches past [0, 1] (position / 2R beyond the sphere): clamped."""
    head = _head("cpu")
    mesh = field_mesh(_neus_model(), head, 0, resolution=32, level=0.02)
    radius = (mesh.vertices - _centre(head, 0)).norm(dim=-1)
    assert float((radius - RADIUS - 0.02).abs().max()) < 1e-3
    assert float(mesh.colors.min()) == 0 and float(mesh.colors.max()) == 1
    mesh = field_mesh(_nerf_model(), head, 0, resolution=32, level=DENSITY_THRESHOLD / 2)
    radius = (mesh.vertices - _centre(head, 0)).norm(dim=-1)
    assert float((radius - RADIUS - WIDTH * math.log(3)).abs().max()) < 1e-3


def test_float64_heads_give_float64_meshes():
    head = _head("cpu")
    floats = [f.name for f in dataclasses.fields(head) if torch.is_tensor(getattr(head, f.name))]
    head64 = dataclasses.replace(head, **{k: getattr(head, k).double() for k in floats if getattr(head, k).is_floating_point()})
    mesh = field_mesh(_neus_model(), head64, 0, resolution=16)
    assert mesh.vertices.dtype == torch.float64 and mesh.colors.dtype == torch.float64


def test_an_empty_surface_names_the_level_and_the_range_found():
    head = _head("cpu")
    with raises_naming("level") as error:
        field_mesh(_nerf_model(), head, 0, resolution=16, level=3 * DENSITY_THRESHOLD)
    assert "lies in [" in str(error.value) and "e.g." in str(error.value)
    with raises_naming("level") as error:
        field_mesh(_neus_model(), head, 0, resolution=16, level=-0.5)  # deeper than the sphere's centre
    assert "SDF" in str(error.value)


def test_bad_arguments_are_named():
    head, model = _head("cpu"), _neus_model()
    for frame in (-1, 2):
        with raises_naming("frame"):
            field_mesh(model, head, frame)
    with raises_naming("frame"):
        field_mesh(model, head, 0.0)
    with raises_naming("resolution"):
        field_mesh(model, head, 0, resolution=1)
    for level in (math.nan, math.inf, True):
        with raises_naming("level"):
            field_mesh(model, head, 0, level=level)
    with raises_naming("padding"):
        field_mesh(model, head, 0, padding=-0.1)
    with raises_naming("chunk"):
        field_mesh(model, head, 0, chunk=0)
    with raises_naming("model"):
        field_mesh(nn.Linear(3, 1), head, 0)
    with raises_naming("model"):
        field_mesh(_Model(nn.Linear(3, 1)), head, 0)
    with raises_naming("head"):
        field_mesh(model, head.vertices, 0)
    broken = dataclasses.replace(head, vertices=head.vertices.clone())
    broken.vertices[1, 3, 0] = math.nan
    field_mesh(model, broken, 0, resolution=8)  # only the frame asked for is read
    with raises_naming("head"):
        field_mesh(model, broken, 1)


class _NanSdf(_SphereSdf):
    def forward(self, points, extra):
        out = super().forward(points, extra)
        return SdfOutput(sdf=torch.where(out.sdf > 0.05, math.nan, out.sdf), features=out.features)


def test_a_field_giving_nan_is_blamed_not_the_level():
    model = _Model(NeusField(None, _NanSdf(), _PositionAlbedo(), sdf_condition=_Centre()))
    with raises_naming("model"):
        field_mesh(model, _head("cpu"), 0, resolution=16)


def test_write_ply_reads_back_in_trimesh_and_read_ply(tmp_path):
    g = torch.Generator().manual_seed(0)
    vertices = torch.randn(50, 3, generator=g, dtype=torch.float64)
    faces = torch.randint(0, 50, (80, 3), generator=g)
    colors = torch.rand(50, 3, generator=g)
    colors[0] = torch.tensor([0.0, 1.0, 0.5])  # both ends and a half (rounds to 128)
    path = write_ply(tmp_path / "deep" / "folder" / "mesh.ply", vertices, faces, colors)
    assert path.read_bytes().startswith(b"ply\nformat binary_little_endian 1.0\n")
    loaded = trimesh.load(path, process=False)
    np.testing.assert_array_equal(loaded.vertices, vertices.float().double().numpy())
    np.testing.assert_array_equal(loaded.faces, faces.numpy())
    rgb = np.rint(colors.numpy().astype(np.float64) * 255).astype(np.uint8)
    np.testing.assert_array_equal(loaded.visual.vertex_colors[:, :3], rgb)
    assert tuple(rgb[0]) == (0, 255, 128)
    v, f, c = read_ply(path)
    np.testing.assert_array_equal(v, vertices.float().numpy())
    np.testing.assert_array_equal(f, faces.numpy())
    np.testing.assert_allclose(c, rgb / 255, atol=1e-7)

    plain = write_ply(tmp_path / "plain.ply", vertices.float(), faces.int())
    assert read_ply(plain)[2] is None and "red" not in plain.read_bytes()[:300].decode("latin-1")
    np.testing.assert_array_equal(trimesh.load(plain, process=False).faces, faces.numpy())


def test_write_ply_checks_its_inputs(tmp_path):
    vertices, faces, colors = torch.rand(4, 3), torch.tensor([[0, 1, 2], [0, 2, 3]]), torch.rand(4, 3)
    path = tmp_path / "m.ply"
    bad_vertices = vertices.clone()
    bad_vertices[1, 2] = math.nan
    for v in (vertices[:, :2], bad_vertices, vertices.long()):
        with raises_naming("vertices"):
            write_ply(path, v, faces, colors)
    for f in (torch.tensor([[0, 1, 4]]), torch.tensor([[0, -1, 2]]), faces.float(), faces[:, :2]):
        with raises_naming("faces"):
            write_ply(path, vertices, f, colors)
    for c in (colors[:3], colors + 1, -colors, torch.full((4, 3), math.nan), (colors * 255).to(torch.uint8)):
        with raises_naming("colors"):
            write_ply(path, vertices, faces, c)
    with raises_naming("path"):
        write_ply(3, vertices, faces, colors)
    assert not path.exists()


def test_a_mesh_of_a_real_model_goes_to_a_file(tiny_video, tmp_path):
    """End to end on the library's models, untrained: the NeuS avatar starts as a sphere through INSTA's
    deformer, so it has a surface; INSTA's untrained density is ~1 per metre everywhere, so at the default level
    it has none and says so, and at a level inside the range it reports there is one."""
    frames = tiny_video[0]
    parametric = load_model(frames.model_path, frames.model_type)
    torch.manual_seed(0)
    neus = triangle_neus(parametric, frames, TINY_NEUS)
    head = tracked_head(parametric, frames)
    mesh = field_mesh(neus, head, 2, resolution=24)
    assert len(mesh.faces) > 100 and float(mesh.colors.min()) >= 0 and float(mesh.colors.max()) <= 1
    lo, hi = head.bounds[2, 0] - 0.05, head.bounds[2, 1] + 0.05
    assert bool(((mesh.vertices >= lo - 1e-6) & (mesh.vertices <= hi + 1e-6)).all())
    assert _signed_volume(mesh.vertices, mesh.faces) > 0  # the SDF is negative inside: faces out
    path = write_ply(tmp_path / "neus.ply", mesh.vertices, mesh.faces, mesh.colors)
    assert len(trimesh.load(path, process=False).faces) == len(mesh.faces)

    insta = Insta(parametric, frames.segmentation_labels, TINY_INSTA)
    with raises_naming("level") as error:
        field_mesh(insta, head, 2, resolution=24)
    low, high = (float(x) for x in str(error.value).split("lies in [")[1].split("]")[0].split(", "))
    assert 0 <= low < high < DENSITY_THRESHOLD / 10, (low, high)  # ~1 per metre
    mesh = field_mesh(insta, head, 2, resolution=24, level=(low + high) / 2)
    assert len(mesh.faces) > 0 and float(mesh.colors.min()) >= 0 and float(mesh.colors.max()) <= 1
