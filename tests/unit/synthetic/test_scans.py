"""Scans for a parametric head prior: synthetic identities with personal detail, the scan set made of them, the
samples a training step takes, the scan-folder reader, and the video of an identity the prior never saw.

Truth comes from elsewhere each time: an analytic sphere for the samples (its distance is |p| - r, a linear colour
blends to itself), trimesh for the files it writes, smplx for the plain FLAME the detail is added to, brute-force
segment-triangle tests for self-intersections, the template's own mirror symmetry, and ray casts of the true and
the tracked meshes for what the video's depth maps show.
"""

import dataclasses
import math

import numpy as np
import pytest
import torch
import trimesh
from scipy.spatial import cKDTree

from headfields.cameras import pixel_rays
from headfields.data import ScanSet, load_insta_dataset, read_scan_folder, sample_scans
from headfields.data.ibug import ANCHOR_LANDMARK_PAIRS
from headfields.data.scans import read_ply
from headfields.geometry import TriangleMesh, face_normals, ray_intersect, uv_sphere
from headfields.parametric import load_model
from headfields.synthetic import (
    OUT_OF_RANGE_DETAIL,
    PersonalDetailConfig,
    ScanSetConfig,
    SyntheticIdentity,
    SyntheticVideoConfig,
    anchor_vertices,
    load_ground_truth,
    make_synthetic_video,
    nphm_held_out_video,
    personal_detail,
    personal_model,
    synthetic_scan_set,
    write_synthetic_flame,
)
from headfields.synthetic.video import _cache_text

from helpers import raises_naming
from model_files import smplx_flame, smplx_flame_output

NO_PARTS = dict(hair_thickness=(0.0, 0.0), bumps=(0, 0), ear_scale=(1.0, 1.0), ear_push=(0.0, 0.0), grown_ears=0.0)
MIRROR = torch.tensor([-1.0, 1.0, 1.0])


@pytest.fixture(scope="module")
def flame_dir(tmp_path_factory):
    return write_synthetic_flame(tmp_path_factory.mktemp("flame"))


@pytest.fixture(scope="module")
def model(flame_dir):
    return load_model(flame_dir, "flame")


def region_mask(model, *names) -> torch.Tensor:
    mask = torch.zeros(model.num_vertices, dtype=torch.bool)
    for name in names:
        mask[model.regions[name]] = True
    return mask


def mirror_index(points: torch.Tensor) -> torch.Tensor:
    """Each point's nearest point to its mirror image across x = 0 (scipy's KD-tree)."""
    distance, index = cKDTree(points.double().numpy()).query((points * MIRROR).double().numpy())
    assert distance.max() < 1e-9  # the synthetic template is exactly symmetric
    return torch.from_numpy(index)


def pierced_pairs(vertices: torch.Tensor, faces: torch.Tensor) -> set[tuple[int, int]]:
    """(edge, face) pairs where a mesh edge crosses a triangle sharing no vertex with it: Moller-Trumbore in
    float64 on every pair whose bounding spheres meet (scipy's KD-tree)."""
    v = vertices.double()
    edges = torch.cat([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]]).sort(dim=1).values.unique(dim=0)
    tri = v[faces]
    centroid = tri.mean(dim=1)
    reach = (tri - centroid[:, None]).norm(dim=-1).amax(dim=1)
    a, b = v[edges[:, 0]], v[edges[:, 1]]
    half = (b - a).norm(dim=-1) / 2
    radius = float(half.max() + reach.max()) + 1e-9
    near = cKDTree(((a + b) / 2).numpy()).sparse_distance_matrix(cKDTree(centroid.numpy()), radius, output_type="ndarray")
    i, j = torch.from_numpy(near["i"].astype(np.int64)), torch.from_numpy(near["j"].astype(np.int64))
    keep = (torch.from_numpy(near["v"]) <= half[i] + reach[j] + 1e-9) & ~(faces[j][:, :, None] == edges[i][:, None]).any(-1).any(
        -1
    )
    i, j = i[keep], j[keep]
    o, d = a[i], b[i] - a[i]
    p0, p1, p2 = tri[j].unbind(dim=1)
    e1, e2 = p1 - p0, p2 - p0
    h = torch.linalg.cross(d, e2)
    det = (e1 * h).sum(-1)
    inv = 1.0 / torch.where(det.abs() > 1e-18, det, 1.0)
    s = o - p0
    u = (s * h).sum(-1) * inv
    q = torch.linalg.cross(s, e1)
    w = (d * q).sum(-1) * inv
    t = (e2 * q).sum(-1) * inv
    hit = (det.abs() > 1e-18) & (u >= 0) & (w >= 0) & (u + w <= 1) & (t >= 0) & (t <= 1)
    return set(zip(i[hit].tolist(), j[hit].tolist(), strict=True))


# ----------------------------------------------------------------------------------------------------------
# Personal detail


def test_hair_grows_outward_on_the_hair_region_only_within_its_range(model):
    config = PersonalDetailConfig(**{**NO_PARTS, "hair_thickness": (0.008, 0.025)})
    template = model.v_template
    hair = region_mask(model, "hair")
    for seed in range(3):
        d = personal_detail(model, seed, config)
        thickness = d.norm(dim=1)
        assert torch.equal(d[~hair], torch.zeros_like(d[~hair]))
        assert thickness.max() <= 0.025 + 1e-7
        assert thickness.max() >= 0.008 * (1 - config.hair_variation)  # the crown: full thickness, at most thinned
        moved = thickness > 1e-4
        assert (d[moved] * template[moved]).sum(-1).min() > 0  # away from the skull's centre (the origin)
        hairline = hair & (template[:, 1] < -0.02)  # at the nape and over the ears the hair tapers to nothing
        assert thickness[hairline].min() < 1e-3


def test_bumps_stay_off_the_lips_mouth_eyes_and_neck_and_within_their_height(model):
    config = PersonalDetailConfig(**{**NO_PARTS, "bumps": (3, 6), "bump_height": (0.002, 0.005)})
    off = region_mask(model, "lips", "eyes", "teeth", "mouth_interior", "neck")
    for seed in range(3):
        d = personal_detail(model, seed, config)
        assert torch.equal(d[off], torch.zeros_like(d[off]))
        assert 1e-3 < d.norm(dim=1).max() <= 6 * 0.005


def test_ears_are_mirror_images_and_leave_the_face_alone(model):
    config = PersonalDetailConfig(**{**NO_PARTS, "ear_scale": (0.8, 1.3), "ear_push": (0.002, 0.006), "grown_ears": 0.01})
    partner = mirror_index(model.v_template)
    d = personal_detail(model, 4, config)
    # Left ear = right ear, mirrored, up to the normals (each quad's diagonal runs the same way on both sides, so
    # the area-weighted normals are mirror images only to about 0.5 degrees).
    torch.testing.assert_close(d[partner] * MIRROR, d, atol=2e-4, rtol=0)
    assert d.norm(dim=1).max() > 0.009  # grown and pushed: at least the grown ear's 1 cm
    face = model.v_template[:, 2] > 0.05  # 6 cm in front of the ears: the Gaussian's tail only
    assert d[face].norm(dim=1).max() < 1e-4


def test_detail_is_deterministic_per_seed_different_across_seeds_and_non_trivial(model):
    first = personal_detail(model, 7)
    assert torch.equal(first, personal_detail(model, 7))
    assert (first - personal_detail(model, 8)).norm(dim=1).max() > 1e-3
    size = first.norm(dim=1)
    assert size.mean() > 1e-3 and (size > 1e-4).float().mean() > 0.3
    c = PersonalDetailConfig()
    bound = c.hair_thickness[1] + c.bumps[1] * c.bump_height[1] + c.grown_ears + c.ear_push[1] + (c.ear_scale[1] - 1) * 0.1
    assert size.max() <= bound


# Every part at PersonalDetailConfig's bounds at once: the most the config lets one ask for.
AT_THE_BOUNDS = PersonalDetailConfig(
    hair_thickness=(0.04, 0.04),
    bumps=(8, 8),
    bump_height=(0.006, 0.006),
    ear_scale=(2.0, 2.0),
    ear_push=(0.01, 0.01),
    grown_ears=0.02,
)


@pytest.fixture(scope="module")
def surface_faces(model):
    """The faces but the eyeballs' (which sit inside the face on the template already), and the check that the
    template's other faces meet nowhere."""
    eyes = region_mask(model, "eyes")
    faces = model.faces[~eyes[model.faces].any(dim=1)]
    assert not pierced_pairs(model.v_template, faces)
    return faces


@pytest.mark.parametrize(
    "seed, config", [(0, PersonalDetailConfig()), (1, PersonalDetailConfig()), (2, AT_THE_BOUNDS), (3, OUT_OF_RANGE_DETAIL)]
)
def test_detail_folds_no_face_and_adds_no_self_intersection(model, surface_faces, seed, config):
    detailed = model.v_template + personal_detail(model, seed, config)
    assert not pierced_pairs(detailed, surface_faces)
    assert (face_normals(model.v_template, model.faces) * face_normals(detailed, model.faces)).sum(-1).min() > 0.2


def test_personal_model_adds_the_detail_under_every_expression(model, flame_dir):
    before = model.v_template.clone()
    d = personal_detail(model, 3)
    subject = personal_model(model, d)
    assert torch.equal(model.v_template, before)  # the input model is left alone
    generator = torch.Generator().manual_seed(0)
    shape = torch.randn(model.num_shape, generator=generator) * 0.5
    expression = torch.randn(4, model.num_expression, generator=generator)
    zero = torch.zeros(4, model.num_joints, 3)
    reference = smplx_flame(flame_dir, model.num_shape, model.num_expression)
    plain = smplx_flame_output(reference, shape, expression, zero, torch.zeros(4, 3)).vertices.detach()
    personal = subject(shape=shape, expression=expression, pose=zero).vertices
    torch.testing.assert_close(personal - plain, d.expand(4, -1, -1), atol=2e-6, rtol=0)


def test_identity_repr_is_plain_numbers_and_its_shape_is_the_leading_coefficients(model):
    identity = SyntheticIdentity.random(model.num_shape, 5)
    assert identity == SyntheticIdentity.random(model.num_shape, 5)
    assert "tensor" not in repr(identity) and repr(identity) == repr(SyntheticIdentity.random(model.num_shape, 5))
    assert identity != SyntheticIdentity.random(model.num_shape, 6)
    coefficients = identity.shape_coefficients(model)
    assert coefficients.shape == (model.num_shape,) and coefficients[20:].abs().max() == 0
    assert 0.2 < coefficients[:20].std() < 3.0  # drawn with shape_std 1
    from_tensor = SyntheticIdentity(torch.tensor([0.5, -1.0]), 1, 2)
    assert from_tensor.shape == (0.5, -1.0)
    with raises_naming("seed"):
        SyntheticIdentity.random(model.num_shape, -1)
    with raises_naming("shape"):
        SyntheticIdentity((math.nan,), 1, 2)
    with raises_naming("detail_seed"):
        SyntheticIdentity((0.0,), -3, 2)
    with raises_naming("bumps"):
        PersonalDetailConfig(bumps=(2, 40))
    with raises_naming("displacement"):
        personal_model(model, torch.zeros(3, 3))


# ----------------------------------------------------------------------------------------------------------
# Sampling scans


RADIUS = 0.1
SHIFT = torch.tensor([0.02, -0.01, 0.03])


def sphere_scans(registered: bool = True) -> ScanSet:
    """Two identities: a sphere and the same sphere shifted (registered: one's expression 1), colours linear in
    the position relative to the sphere's centre."""
    v, f = uv_sphere(radius=RADIUS)
    small_v, small_f = uv_sphere(20, 40, radius=RADIUS)

    def colour(points):
        return (points / RADIUS + 1) / 2

    if registered:
        vertices, faces = [v, v + SHIFT, small_v], [f, f, small_f]
        return ScanSet(
            vertices, faces, [colour(v), colour(v), colour(small_v)], torch.tensor([0, 0, 1]), torch.tensor([0, 1, 0]), True
        )
    return ScanSet(
        [v, small_v + SHIFT], [f, small_f], [colour(v), colour(small_v)], torch.tensor([0, 0]), torch.tensor([0, 1]), False
    )


BOX = torch.tensor([[-0.2, -0.2, -0.2], [0.2, 0.2, 0.2]])


def test_sphere_samples_lie_on_it_with_outward_normals_and_blended_colours():
    scans = sphere_scans()
    samples = sample_scans(scans, torch.tensor([0, 1, 2, 0]), 500, 400, 100, 0.01, BOX, torch.Generator().manual_seed(0))
    assert samples.surface.shape == (4, 500, 3) and samples.near.shape == (4, 400, 3) and samples.space.shape == (4, 100, 3)
    centre = torch.stack([torch.zeros(3), SHIFT, torch.zeros(3), torch.zeros(3)])[:, None]
    local = samples.surface - centre
    sagitta = RADIUS * (1 - math.cos(math.pi / 20))  # the coarse sphere's faces lie at most this far inside it
    assert (local.norm(dim=-1) <= RADIUS + 1e-6).all() and (local.norm(dim=-1) >= RADIUS - sagitta).all()
    torch.testing.assert_close(samples.normals.norm(dim=-1), torch.ones(4, 500))
    assert ((samples.normals * local).sum(-1) > 0).all()
    torch.testing.assert_close(samples.colours, (local / RADIUS + 1) / 2, atol=1e-6, rtol=0)  # linear: exact
    assert samples.colours.min() >= 0 and samples.colours.max() <= 1
    assert ((samples.space >= BOX[0]) & (samples.space <= BOX[1])).all()
    torch.testing.assert_close(samples.scan, torch.tensor([0, 1, 2, 0]))


def test_near_points_carry_the_spheres_signed_distance():
    scans = sphere_scans()
    samples = sample_scans(scans, torch.tensor([0, 1]), 10, 2000, 0, 0.01, BOX, torch.Generator().manual_seed(1))
    centre = torch.stack([torch.zeros(3), SHIFT])[:, None]
    analytic = (samples.near - centre).norm(dim=-1) - RADIUS
    sagitta = RADIUS * (1 - math.cos(math.pi / 51))  # the fine sphere (51 x 100)
    assert (samples.near_sdf - analytic).abs().max() < 2 * sagitta
    assert abs(float(samples.near_sdf.std()) - 0.01) < 0.001  # the offsets' spread
    assert samples.space.shape == (2, 0, 3)


def test_neutral_surface_is_the_same_material_point_on_the_neutral_scan():
    scans = sphere_scans()
    samples = sample_scans(scans, torch.tensor([0, 1, 2]), 300, 0, 0, 0.01, BOX, torch.Generator().manual_seed(2))
    torch.testing.assert_close(samples.neutral_surface[0], samples.surface[0])
    torch.testing.assert_close(samples.neutral_surface[1], samples.surface[1] - SHIFT, atol=1e-6, rtol=0)
    torch.testing.assert_close(samples.neutral_surface[2], samples.surface[2])
    assert sample_scans(sphere_scans(False), torch.tensor([1]), 5, 5, 5, 0.01, BOX, torch.Generator()).neutral_surface is None


def test_samples_are_deterministic_from_the_generator():
    scans = sphere_scans()
    index = torch.tensor([0, 2])

    def draw(seed):
        return sample_scans(scans, index, 50, 50, 50, 0.01, BOX, torch.Generator().manual_seed(seed))

    first, again, other = draw(3), draw(3), draw(4)
    for name in ("surface", "near", "near_sdf", "space", "colours"):
        assert torch.equal(getattr(first, name), getattr(again, name))
        assert not torch.equal(getattr(first, name), getattr(other, name))


def test_scan_sets_and_sampling_name_their_bad_arguments():
    scans = sphere_scans()
    v, f = uv_sphere(10, 20)
    grey = torch.full_like(v, 0.5)
    with raises_naming("index"):
        sample_scans(scans, torch.tensor([3]), 5, 5, 5, 0.01, BOX, torch.Generator())
    with raises_naming("near_std"):
        sample_scans(scans, torch.tensor([0]), 5, 5, 5, -0.01, BOX, torch.Generator())
    with raises_naming("box"):
        sample_scans(scans, torch.tensor([0]), 5, 5, 5, 0.01, BOX[0], torch.Generator())
    with raises_naming("surface"):
        sample_scans(scans, torch.tensor([0]), -1, 5, 5, 0.01, BOX, torch.Generator())
    with raises_naming("generator"):
        sample_scans(scans, torch.tensor([0]), 5, 5, 5, 0.01, BOX, 0)
    with raises_naming("expression"):  # identity 0 has no neutral scan
        ScanSet([v], [f], [grey], torch.tensor([0]), torch.tensor([1]), False)
    with raises_naming("identity"):  # identity 0 has no scan
        ScanSet([v], [f], [grey], torch.tensor([1]), torch.tensor([0]), False)
    with raises_naming(r"colours\[0\]"):
        ScanSet([v], [f], [grey * 3], torch.tensor([0]), torch.tensor([0]), False)
    with raises_naming("registered"):
        ScanSet([v, v], [f, f.flip(1)], [grey, grey], torch.tensor([0, 0]), torch.tensor([0, 1]), True)
    with raises_naming("colours"):
        ScanSet([v], [f], [], torch.tensor([0]), torch.tensor([0]), False)
    assert scans.num_identities == 2 and scans.num_scans == 3
    assert scans.neutral(1) == 0 and scans.neutral(2) == 2
    torch.testing.assert_close(scans.neutral(torch.tensor([1, 2, 0])), torch.tensor([0, 2, 0]))


# ----------------------------------------------------------------------------------------------------------
# Reading scan folders


def coloured_mesh(subdivisions: int, seed: int, shift: float = 0.0) -> trimesh.Trimesh:
    mesh = trimesh.creation.icosphere(subdivisions, radius=0.1)
    mesh.vertices += shift
    rng = np.random.default_rng(seed)
    mesh.visual.vertex_colors = rng.integers(0, 256, (len(mesh.vertices), 4), dtype=np.uint8)
    return mesh


def assert_read_like_trimesh(scans: ScanSet, k: int, path, source: trimesh.Trimesh) -> None:
    """Vertices and faces as trimesh reads the file, colours as written (8-bit; an OBJ's to its 8 decimals)."""
    truth = trimesh.load(path, process=False)
    np.testing.assert_allclose(scans.vertices[k].numpy(), truth.vertices, atol=1e-7)
    np.testing.assert_array_equal(scans.faces[k].numpy(), truth.faces)
    np.testing.assert_allclose(scans.colours[k].numpy(), source.visual.vertex_colors[:, :3] / 255.0, atol=1e-6)


def test_scan_folders_read_as_trimesh_reads_their_binary_ascii_and_obj_meshes(tmp_path):
    (tmp_path / "bob").mkdir()
    (tmp_path / "alice").mkdir()
    files = {
        "alice/smile.ply": (coloured_mesh(2, 0, 0.01), "binary"),
        "alice/neutral.ply": (coloured_mesh(2, 1), "ascii"),
        "bob/a.obj": (coloured_mesh(1, 2), "obj"),
        "bob/b.ply": (coloured_mesh(2, 3), "binary"),
    }
    for name, (mesh, kind) in files.items():
        data = mesh.export(file_type="obj") if kind == "obj" else mesh.export(file_type="ply", encoding=kind)
        (tmp_path / name).write_bytes(data.encode() if isinstance(data, str) else data)
    scans = read_scan_folder(tmp_path)
    assert scans.names == ["alice/neutral", "alice/smile", "bob/a", "bob/b"]  # the neutral one first
    assert scans.identity.tolist() == [0, 0, 1, 1] and scans.expression.tolist() == [0, 1, 0, 1]
    assert not scans.registered  # bob's meshes differ
    for k, name in enumerate(("alice/neutral.ply", "alice/smile.ply", "bob/a.obj", "bob/b.ply")):
        assert_read_like_trimesh(scans, k, tmp_path / name, files[name][0])
    (tmp_path / "bob/b.ply").unlink()
    (tmp_path / "bob/a.obj").unlink()
    (tmp_path / "bob/x.ply").write_bytes(coloured_mesh(2, 4).export(file_type="ply"))
    assert read_scan_folder(tmp_path).registered  # every identity's meshes share vertices and faces


def test_ply_polygons_become_fans_and_float_colours_are_kept(tmp_path):
    path = tmp_path / "quad.ply"
    header = "ply\nformat ascii 1.0\nelement vertex 5\nproperty float x\nproperty float y\nproperty float z\n"
    header += "property float red\nproperty float green\nproperty float blue\nelement face 2\n"
    header += "property list uchar int vertex_indices\nend_header\n"
    rows = "0 0 0 0 0 0\n1 0 0 1 0 0\n1 1 0 0 1 0\n0 1 0 0 0 1\n2 2 0 0.5 0.5 0.5\n4 0 1 2 3\n3 1 4 2\n"
    path.write_text(header + rows)
    vertices, faces, colours = read_ply(path)
    np.testing.assert_array_equal(faces, [[0, 1, 2], [0, 2, 3], [1, 4, 2]])
    np.testing.assert_allclose(colours[1], [1, 0, 0])
    assert vertices.shape == (5, 3)
    # The same in big-endian binary, written byte by byte, with 8-bit colours.
    binary = header.replace("ascii", "binary_big_endian").replace("float red", "uchar red")
    binary = binary.replace("float green", "uchar green").replace("float blue", "uchar blue")
    rows = [np.array(row[:3], ">f4").tobytes() + np.array(row[3:], "u1").tobytes() for row in [[0, 0, 0, 0, 0, 0],
            [1, 0, 0, 255, 0, 0], [1, 1, 0, 0, 255, 0], [0, 1, 0, 0, 0, 255], [2, 2, 0, 51, 51, 51]]]  # fmt: skip
    polygons = bytes([4]) + np.array([0, 1, 2, 3], ">i4").tobytes() + bytes([3]) + np.array([1, 4, 2], ">i4").tobytes()
    path.write_bytes(binary.encode() + b"".join(rows) + polygons)
    vertices, faces, colours = read_ply(path)
    np.testing.assert_array_equal(faces, [[0, 1, 2], [0, 2, 3], [1, 4, 2]])
    np.testing.assert_allclose(colours[[1, 4]], [[1, 0, 0], [0.2, 0.2, 0.2]], atol=1e-7)
    np.testing.assert_array_equal(vertices[4], [2, 2, 0])


def test_scan_folder_errors_name_what_is_wrong(tmp_path):
    with pytest.raises(FileNotFoundError, match="root"):
        read_scan_folder(tmp_path / "missing")
    with raises_naming("root"):
        read_scan_folder(tmp_path)  # no identity folders
    (tmp_path / "carol").mkdir()
    with raises_naming("root"):
        read_scan_folder(tmp_path)  # no meshes in it
    plain = trimesh.creation.icosphere(1)
    (tmp_path / "carol/neutral.ply").write_bytes(plain.export(file_type="ply"))
    with pytest.raises(ValueError, match="no per-vertex colours"):
        read_scan_folder(tmp_path)
    grey = read_scan_folder(tmp_path, missing_colours="grey")
    assert torch.equal(grey.colours[0], torch.full_like(grey.vertices[0], 0.5))
    with raises_naming("missing_colours"):
        read_scan_folder(tmp_path, missing_colours="pink")
    (tmp_path / "carol/neutral.ply").write_bytes(plain.export(file_type="ply")[:-40])  # truncated
    with pytest.raises(ValueError, match="neutral.ply"):
        read_scan_folder(tmp_path, missing_colours="grey")


# ----------------------------------------------------------------------------------------------------------
# The synthetic scan set


def test_anchors_are_mirror_pairs_then_midplane_vertices_on_the_outside(model):
    """MonoNPHM's layout: 30 mirror pairs (the even one on the subject's right, as iBUG), 5 on the midplane; the
    anchors MonoNPHM pairs with landmarks at a vertex beside their landmark (the model's own landmarks, through
    smplx's vertices2landmarks), the others spread over the head."""
    ids, mirror = anchor_vertices(model)
    assert ids.shape == (65,) and len(ids.unique()) == 65
    assert torch.equal(mirror[mirror], torch.arange(65))
    template = model.v_template
    pairs = torch.arange(0, 60, 2)
    torch.testing.assert_close(template[ids[pairs + 1]], template[ids[pairs]] * MIRROR, atol=1e-6, rtol=0)
    assert (template[ids[pairs], 0] < 0).all()
    assert template[ids[60:], 0].abs().max() < 1e-3 and torch.equal(mirror[60:], torch.arange(60, 65))
    assert not region_mask(model, "eyes", "teeth", "mouth_interior")[ids].any()
    landmarks = model().landmarks[0]
    placed = {a: ibug - 17 for a, ibug in ANCHOR_LANDMARK_PAIRS if ibug >= 17}  # FLAME's 51 static landmarks
    for anchor, landmark in placed.items():
        assert (template[ids[anchor]] - landmarks[landmark]).norm() < 0.003  # a vertex beside it (none lies on it)
    # The others spread: at least 1.5 cm from every other anchor; all together on the top, back, sides and face.
    free = [k for k in range(65) if k not in placed]
    gaps = torch.cdist(template[ids[free]], template[ids]) + (ids[free, None] == ids[None]).float()
    assert gaps.min() > 0.015
    low, high = template[ids].amin(0), template[ids].amax(0)
    assert (high - low > 0.12).all()
    with raises_naming("count"):
        anchor_vertices(model, 64)


def test_synthetic_scan_set_is_registered_and_carries_each_identitys_detail(model, flame_dir):
    config = ScanSetConfig(num_identities=3, expressions=3, seed=1)
    scans = synthetic_scan_set(model, config)
    assert scans.registered and scans.num_identities == 3 and scans.num_scans == 9
    assert scans.anchors.shape == (3, 65, 3)
    reference = smplx_flame(flame_dir, model.num_shape, model.num_expression)
    zero = torch.zeros(1, model.num_expression)
    for i, identity in enumerate(config.identities(model.num_shape)):
        neutral = scans.vertices[scans.neutral(3 * i + 2)]
        plain = smplx_flame_output(reference, identity.shape_coefficients(model), zero, torch.zeros(1, 5, 3), torch.zeros(1, 3))
        detail = personal_detail(model, identity.detail_seed, identity.detail)
        torch.testing.assert_close(neutral - plain.vertices[0].detach(), detail, atol=2e-6, rtol=0)
        back = model.v_template[:, 2] < -0.06  # expressions move the face (the back: blend shapes' tails, 0.02 mm)
        for e in (1, 2):
            scan = scans.vertices[3 * i + e]
            torch.testing.assert_close(scan[back], neutral[back], atol=1e-4, rtol=0)
            assert (scan - neutral).norm(dim=1).max() > 1e-3
        assert 0 <= float(scans.colours[3 * i].min()) and float(scans.colours[3 * i].max()) <= 1
    # The held-out identity is none of the set's; another seed makes other people.
    held_out = config.held_out_identity(model.num_shape)
    assert held_out not in config.identities(model.num_shape)
    assert dataclasses.replace(config, seed=2).identities(model.num_shape)[0] != config.identities(model.num_shape)[0]
    # What a scanner sees of the eyes: their front caps only, in front of the eyeballs' centres.
    eyes = region_mask(model, "eyes")
    seen = scans.faces[0][eyes[scans.faces[0]].all(dim=1)]
    assert 0 < len(seen) < int(eyes[model.faces].all(dim=1).sum()) / 2
    assert (scans.vertices[0][seen].mean(dim=1)[:, 2] > scans.vertices[0][eyes][:, 2].mean()).all()


# ----------------------------------------------------------------------------------------------------------
# The video of an unseen identity


def test_identity_video_shows_the_detail_its_tracked_meshes_lack(tmp_path, model, flame_dir):
    identity = ScanSetConfig().held_out_identity(model.num_shape)
    config = SyntheticVideoConfig(
        num_frames=12, num_val=2, num_test=4, resolution=24, supersampling=1, episode_frames=3, identity=identity
    )
    root = make_synthetic_video(tmp_path, config)
    detail = personal_detail(model, identity.detail_seed, identity.detail)
    hair = region_mask(model, "hair")  # skinned to the neck joint alone: moved rigidly
    for split, count in (("train", 6), ("val", 2), ("test", 4)):
        frames = load_insta_dataset(root, split)
        truth, faces = load_ground_truth(root, split)
        assert truth.shape == (count, model.num_vertices, 3) and torch.equal(faces, model.faces)
        p = frames.params
        torch.testing.assert_close(p.shape, identity.shape_coefficients(model))
        reference = smplx_flame(frames.model_path, model.num_shape, model.num_expression)
        plain = smplx_flame_output(reference, p.shape, p.expression, p.pose, p.translation).vertices.detach()
        torch.testing.assert_close(frames.mesh_vertices, plain, atol=1e-5, rtol=0)  # FLAME with the shape, no detail
        gap = (truth - frames.mesh_vertices).norm(dim=-1)
        torch.testing.assert_close(gap[:, hair], detail[hair].norm(dim=-1).expand(count, -1), atol=1e-5, rtol=0)
    assert detail[hair].norm(dim=-1).max() > 5e-3

    # The depth maps are the true meshes', not the tracked ones'.
    frames = load_insta_dataset(root, "train")
    truth, faces = load_ground_truth(root, "train")
    steps = torch.arange(config.resolution) + 0.5
    pixels = torch.stack(torch.meshgrid(steps, steps, indexing="xy"), dim=-1).reshape(-1, 2)
    rays = pixel_rays(frames.cameras, 0, pixels)
    forward = frames.cameras.camera_to_world[0, :3, 2]

    def depth_map(vertices):
        hit = ray_intersect(TriangleMesh(vertices[:1], faces), rays.origins, rays.directions)
        return torch.where(hit.hit, hit.t * (rays.directions @ forward), 0.0).reshape(config.resolution, -1)

    torch.testing.assert_close(frames.depths[0].float(), depth_map(truth), atol=1e-4, rtol=2**-11)  # float16 depths
    assert (depth_map(frames.mesh_vertices) - frames.depths[0]).abs().max() > 5e-3
    with raises_naming("split"):
        load_ground_truth(root, "all")
    with pytest.raises(FileNotFoundError, match="ground_truth"):
        load_ground_truth(tmp_path / "model", "train")


def test_identity_video_config_keys_its_cache_on_the_identity():
    identity = SyntheticIdentity.random(300, 1)
    plain, personal = SyntheticVideoConfig(), SyntheticVideoConfig(identity=identity)
    assert "identity" not in _cache_text(plain)  # the default video keeps the key it had before identities came
    assert repr(identity) in _cache_text(personal)
    with raises_naming("identity"):
        SyntheticVideoConfig(identity=identity, orbit=True)
    with raises_naming("identity"):
        SyntheticVideoConfig(identity="person")
    held_out = nphm_held_out_video(resolution=32)
    assert held_out.identity == ScanSetConfig().held_out_identity(300) and held_out.resolution == 32
    # The harder person: every range of detail beyond the scan set's, the same seed otherwise.
    harder = nphm_held_out_video(detail=OUT_OF_RANGE_DETAIL).identity
    assert harder.detail == OUT_OF_RANGE_DETAIL and harder.detail_seed == held_out.identity.detail_seed
    for name in ("hair_thickness", "bumps", "bump_height", "ear_scale", "ear_push"):
        assert getattr(OUT_OF_RANGE_DETAIL, name)[0] > getattr(ScanSetConfig().detail, name)[1], name
    with raises_naming("detail"):
        nphm_held_out_video(detail=(0.03, 0.04))
