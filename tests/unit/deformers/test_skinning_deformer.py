"""The inverse-skinning deformer (360° portrait avatar) and the triangle-frame deformer on the rest mesh: posed
vertices of smplx's output back to rest vertices computed from smplx's own parts, the chain to the canonical
mesh, forward skinning round trips, directions under a global rotation (closed form), max_distance,
gradcheck, devices and bad input."""

import dataclasses

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from headfields.deformers import (
    DeformerChain,
    SkinningDeformer,
    SkinningDeformerConfig,
    TriangleDeformerConfig,
    TriangleFrameDeformer,
)
from headfields.geometry import face_normals, sample_near_surface
from headfields.parametric import blend_transforms, inverse_skinning, load_model, skinning_weights, transform_points
from headfields.synthetic import write_synthetic_smplx

from helpers import raises_naming
from model_files import (
    flame_arrays,
    random_parameters,
    smplx_flame,
    smplx_flame_output,
    smplx_smplx,
    smplx_smplx_output,
    write_flame,
)

LARGE_ANGLE = 1.2  # radians per joint at most: far from the rest pose


def _close(actual, expected, atol=1e-5):
    torch.testing.assert_close(actual, expected, atol=atol, rtol=0)


def _rotation(axis_angle):
    """Rotation matrices by the matrix exponential of the cross-product matrix (independent of Rodrigues)."""
    x, y, z = axis_angle.unbind(-1)
    zero = torch.zeros_like(x)
    skew = torch.stack([zero, -z, y, z, zero, -x, -y, x, zero], dim=-1).reshape(*axis_angle.shape[:-1], 3, 3)
    return torch.linalg.matrix_exp(skew)


def _packed(vertices):
    """``[B, V, 3]`` as one batch of points with their frame indices."""
    b, v = vertices.shape[:2]
    return vertices.reshape(-1, 3), torch.arange(b, device=vertices.device).repeat_interleave(v)


def _smplx_rest(reference, output_fn, params):
    """smplx's rest vertices: its zero-pose output (template + shape + expression, no translation) plus the pose
    correctives ``(R_j - I)_{j>0} · posedirs``, with the rotations from the matrix exponential."""
    shape, expression, pose, translation = params
    b = expression.shape[0]
    shaped = output_fn(reference, shape, expression, torch.zeros_like(pose), torch.zeros_like(translation)).vertices
    feature = (_rotation(pose[:, 1:].double()) - torch.eye(3, dtype=torch.float64)).reshape(b, -1)
    correctives = (feature @ reference.posedirs.double()).reshape(b, -1, 3)
    return shaped + correctives.to(shaped.dtype)


@pytest.fixture(scope="module")
def flame_folder(tmp_path_factory):
    return write_flame(tmp_path_factory.mktemp("flame"), seed=3)


@pytest.fixture(scope="module")
def flame(flame_folder):
    return load_model(flame_folder, num_shape=10, num_expression=10), smplx_flame(flame_folder, 10, 10)


@pytest.fixture(scope="module")
def rigid_rest_flame(tmp_path_factory):
    """FLAME without pose correctives: at zero expression the rest mesh is the canonical mesh."""
    arrays = flame_arrays(seed=4)
    arrays["posedirs"] = arrays["posedirs"] * 0
    return load_model(write_flame(tmp_path_factory.mktemp("rigid_rest"), seed=4, arrays=arrays), num_shape=10)


@pytest.fixture(scope="module")
def synthetic_smplx(tmp_path_factory):
    folder = write_synthetic_smplx(tmp_path_factory.mktemp("synthetic_smplx"))
    return load_model(folder, "smplx", num_shape=20, num_expression=20), smplx_smplx(folder, 20, 20)


# ---------------------------------------------------------------- vertices against smplx


@pytest.mark.parametrize("autograd", [True, False])
@pytest.mark.parametrize("model_name", ["flame", "synthetic_smplx"])
def test_smplx_posed_vertices_go_to_rest_vertices(request, model_name, autograd):
    """smplx poses the mesh far from rest; the deformer takes its posed vertices back to smplx's rest vertices
    (skinning them forward again gives smplx's output), with autograd and without (inverse_skinning's path)."""
    model, reference = request.getfixturevalue(model_name)
    output_fn = smplx_flame_output if model_name == "flame" else smplx_smplx_output
    frames = 2 if model_name == "flame" else 1  # the synthetic SMPL-X has 11.5k vertices: one frame is enough
    params = random_parameters(model, 11, frames, LARGE_ANGLE)
    head = model(*params)
    posed = output_fn(reference, *params).vertices
    rest = _smplx_rest(reference, output_fn, params)
    x, frame = _packed(posed)
    with torch.set_grad_enabled(autograd):
        out = SkinningDeformer()(x, head, frame)
    _close(out.points, rest.reshape(-1, 3))
    assert out.valid.all() and out.dirs is None
    # The reported face holds the vertex.
    vertex = torch.arange(posed.shape[1]).repeat(frames)
    assert (head.faces[out.face] == vertex[:, None]).any(dim=1).all()
    _close(head.pose_points(out.points, frame), x)


def test_an_image_of_one_frame_among_many_skins_back_to_smplx_rest_vertices(flame):
    """Without autograd a batch that holds one frame of several (an image rendered on the CPU) blends a table of
    that frame alone; its rest points are smplx's, as the table over every frame's and the per-point gather's are."""
    model, reference = flame
    params = random_parameters(model, 12, 3, LARGE_ANGLE)
    head = model(*params)
    rest = _smplx_rest(reference, smplx_flame_output, params)
    x, frame = head.vertices[1], torch.ones(head.vertices.shape[1], dtype=torch.long)
    weights, transforms = head.skinning_weights, head.joint_transforms
    with torch.no_grad():
        one, _, _, _ = inverse_skinning(head.posed_mesh, weights, transforms, x, frame)
    with torch.enable_grad():
        every, _, _, _ = inverse_skinning(head.posed_mesh, weights, transforms, x, frame)
        few, _, _, _ = inverse_skinning(head.posed_mesh, weights, transforms, x[:2], frame[:2])  # per point
    _close(one, rest[1])
    _close(every.detach(), rest[1])
    _close(few.detach(), rest[1, :2])


# ---------------------------------------------------------------- the chain to the canonical mesh


def test_chain_maps_posed_vertices_to_canonical_vertices(rigid_rest_flame):
    """Without expression or pose correctives the rest mesh is the canonical mesh, so skinning back then the
    triangle frames on the rest mesh land exactly on the canonical vertices, however far the pose."""
    model = rigid_rest_flame
    shape, expression, pose, translation = random_parameters(model, 5, 3, LARGE_ANGLE)
    head = model(shape, torch.zeros_like(expression), pose, translation)
    x, frame = _packed(head.vertices)
    dirs = F.normalize(torch.randn(x.shape[0], 3, generator=torch.Generator().manual_seed(0)), dim=-1)
    chain = DeformerChain(SkinningDeformer(), TriangleFrameDeformer(TriangleDeformerConfig(source="rest")))
    out = chain(x, head, frame, dirs)
    _close(out.points, head.canonical_vertices.repeat(3, 1))
    assert out.valid.all()
    _close(out.face, SkinningDeformer()(x, head, frame).face, atol=0)
    _close(out.dirs.norm(dim=-1), torch.ones(x.shape[0]))
    # The posed-mesh triangle frames alone cannot undo a non-rigid skinning: the skinning step matters.
    alone = TriangleFrameDeformer()(x, head, frame).points
    assert (alone - head.canonical_vertices.repeat(3, 1)).norm(dim=-1).max() > 1e-3


def test_rest_source_reads_the_rest_mesh(flame):
    """``source="rest"`` is the posed-source deformer on a head whose posed mesh is the rest mesh, and chained
    after skinning it is that deformer applied to ``head.unpose_points``."""
    model, _ = flame
    head = model(*random_parameters(model, 7, 2, LARGE_ANGLE))
    rest_as_posed = dataclasses.replace(head, vertices=head.rest_vertices)
    points = torch.cat([sample_near_surface(head.posed_mesh, 200, 0.01, frame=b, seed=b) for b in range(2)])
    frame = torch.arange(2).repeat_interleave(200)
    dirs = F.normalize(torch.randn(400, 3, generator=torch.Generator().manual_seed(1)), dim=-1)
    config = TriangleDeformerConfig(max_distance=0.005, source="rest")
    masks = torch.arange(head.faces.shape[0]) % 3 == 0
    options = {"scale_faces": masks, "blend_faces": ~masks}
    unposed = head.unpose_points(points, frame)
    rest = TriangleFrameDeformer(config, **options)(unposed, head, frame, dirs)
    expected = TriangleFrameDeformer(dataclasses.replace(config, source="posed"), **options)(unposed, rest_as_posed, frame, dirs)
    for name in ("points", "dirs", "valid", "face"):
        _close(getattr(rest, name), getattr(expected, name), atol=0)
    assert 0 < rest.valid.sum() < 400  # max_distance is measured on the rest mesh
    chained = DeformerChain(SkinningDeformer(), TriangleFrameDeformer(config, **options))(points, head, frame, dirs)
    _close(chained.points, rest.points, atol=1e-6)


def test_forward_skinning_returns_points_near_the_mesh(synthetic_smplx):
    """Posed points within 1 mm of the surface, skinned back and forward again (``head.pose_points``), land
    where they started wherever the weights are locally uniform (most of the head); where they vary, the
    nearest rest triangle of the unposed point is not quite the image of the posed one: a bounded error."""
    model, _ = synthetic_smplx
    head = model(*random_parameters(model, 9, 2, 0.3))
    points = torch.cat([sample_near_surface(head.posed_mesh, 500, 1e-3, frame=b, seed=b) for b in range(2)])
    frame = torch.arange(2).repeat_interleave(500)
    rest = SkinningDeformer()(points, head, frame).points
    error = (head.pose_points(rest, frame) - points).norm(dim=-1)
    assert error.quantile(0.9) < 1e-5 and error.max() < 5e-3


# ---------------------------------------------------------------- directions and rigid motion


def test_global_rotation_is_undone_exactly(flame):
    """Only the root rotated: every joint moves rigidly as ``x -> R (x - j0) + j0 + t``, so any point and
    direction goes back by ``Rᵀ`` (closed form, the root joint from the regressor)."""
    model, _ = flame
    shape, expression, pose, translation = random_parameters(model, 2, 2, 2.5)
    pose[:, 1:] = 0
    head = model(shape, expression, pose, translation)
    g = torch.Generator().manual_seed(3)
    canonical = (torch.rand(400, 3, generator=g) * 2 - 1) * 0.15
    frame = torch.randint(0, 2, (400,), generator=g)
    dirs = F.normalize(torch.randn(400, 3, generator=g), dim=-1)
    root = torch.einsum("v,bvc->bc", model.J_regressor[0], head.rest_vertices)[frame]
    rot = _rotation(pose[:, 0])[frame]
    posed = torch.einsum("nrc,nc->nr", rot, canonical - root) + root + translation[frame]
    posed_dirs = torch.einsum("nrc,nc->nr", rot, dirs)
    out = SkinningDeformer()(posed, head, frame, posed_dirs)
    _close(out.points, canonical)
    _close(out.dirs, dirs, atol=1e-6)


@pytest.mark.parametrize("autograd", [True, False])
def test_directions_under_a_non_rigid_pose_follow_the_inverse_blended_rotation(flame, autograd):
    """At a posed vertex the nearest triangle's weights are the vertex's own row, so the direction map is
    ``normalize(inv(sum_j W[v, j] R_j) d)``: built here in NumPy from the weights and joint rotations (with autograd
    and without: a barycentric blend of the corners' transforms, inverted by the adjugate)."""
    model, _ = flame
    head = model(*random_parameters(model, 11, 2, LARGE_ANGLE))
    x, frame = _packed(head.vertices)
    g = torch.Generator().manual_seed(5)
    keep = torch.randperm(x.shape[0], generator=g)[:300]
    x, frame = x[keep], frame[keep]
    dirs = F.normalize(torch.randn(300, 3, generator=g), dim=-1)
    with torch.set_grad_enabled(autograd):
        out = SkinningDeformer()(x, head, frame, dirs)

    weights = head.skinning_weights.double().numpy()[keep.numpy() % head.vertices.shape[1]]  # [N, J]
    rotations = head.joint_transforms[..., :3, :3].double().numpy()[frame.numpy()]  # [N, J, 3, 3]
    linear = np.einsum("nj,njrc->nrc", weights, rotations)
    expected = np.einsum("nrc,nc->nr", np.linalg.inv(linear), dirs.double().numpy())
    expected /= np.linalg.norm(expected, axis=-1, keepdims=True)
    _close(out.dirs, torch.from_numpy(expected).float(), atol=1e-5)
    # Non-rigid indeed: somewhere the blended linear part is far from a rotation.
    assert np.abs(np.einsum("nrc,nsc->nrs", linear, linear) - np.eye(3)).max() > 1e-2


@pytest.mark.parametrize("count", [50, 120, 1000], ids=["each point's joints", "the frames present", "every frame"])
@pytest.mark.parametrize("autograd", [True, False])
def test_points_off_the_mesh_map_as_the_gather_and_solve(flame, count, autograd):
    """Between the vertices, in two frames mixed in one batch: the deformer (either blend, with autograd or without)
    gives the points, directions and faces of skinning_weights, blend_transforms and a batched solve."""
    model, _ = flame
    head = model(*random_parameters(model, 12, 3, LARGE_ANGLE))
    # Three frames of 262 vertices and 5 joints, two of them present: 50 points blend each point's joints (a table
    # of 524 rows would outgrow 50 x 5); 120 the table of the frames present without autograd (524 rows, not 786;
    # with autograd, which reads nothing back to find them, each point's joints); 1,000 the table of every frame.
    v, j = head.vertices.shape[1], head.joint_transforms.shape[1]
    assert 2 * v > 50 * j and 2 * v <= 120 * j < 3 * v <= 1000 * j
    g = torch.Generator().manual_seed(6)
    frame = torch.tensor([2, 0]).repeat(count // 2)  # frames 2 and 0, not 1: the table holds the frames present
    x = head.vertices[frame, torch.randint(0, head.vertices.shape[1], (count,), generator=g)]
    x = x + 0.01 * torch.randn(count, 3, generator=g)
    dirs = F.normalize(torch.randn(count, 3, generator=g), dim=-1)
    w = skinning_weights(head.posed_mesh, head.skinning_weights, x, frame)
    blended = blend_transforms(w.weights, head.joint_transforms, frame)
    points = transform_points(blended, x, inverse=True)
    expected_dirs = F.normalize(torch.linalg.solve(blended[:, :3, :3], dirs), dim=-1)
    with torch.set_grad_enabled(autograd):
        out = SkinningDeformer()(x, head, frame, dirs)
        empty = SkinningDeformer()(x[:0], head, frame[:0], dirs[:0])  # a chunk of rays that meets no sample
    assert torch.equal(out.face, w.face)
    _close(out.points, points.detach(), atol=2e-6)
    _close(out.dirs, expected_dirs.detach(), atol=2e-6)
    assert empty.points.shape == (0, 3) and empty.dirs.shape == (0, 3) and empty.face.shape == (0,)


@pytest.mark.parametrize("count", [4, 100], ids=["each point's joints", "the corners' table"])
def test_inverse_skinning_differentiates_twice_by_either_blend(flame_folder, count):
    """gradcheck and gradgradcheck of the rest points and the inverse linear parts in the points, the vertex weights
    and the joint transforms; one frame of 262 vertices and 5 joints: 4 points blend each point's joints, 100 the
    table."""
    model = load_model(flame_folder, num_shape=2, num_expression=2, dtype=torch.float64)
    head = model(*random_parameters(model, 8, 1, LARGE_ANGLE, dtype=torch.float64))
    assert (head.vertices.shape[1] > count * head.joint_transforms.shape[1]) == (count == 4)
    g = torch.Generator().manual_seed(7)
    # A little off the surface above face centres, so each sample keeps its nearest face under perturbation.
    faces, frame = torch.randperm(len(head.faces), generator=g)[:count], torch.zeros(count, dtype=torch.long)
    normal = face_normals(head.vertices, head.faces)[frame, faces]
    x = (head.vertices[frame[:, None], head.faces[faces]].mean(dim=1) + 1e-3 * normal).requires_grad_()
    weights = head.skinning_weights.detach().clone().requires_grad_()
    transforms = head.joint_transforms.detach().clone().requires_grad_()

    def rest_and_inverse(x, weights, transforms):
        rest, inverse, _, _ = inverse_skinning(head.posed_mesh, weights, transforms, x, frame)
        return rest, inverse

    assert torch.autograd.gradcheck(rest_and_inverse, (x, weights, transforms), fast_mode=True)
    assert torch.autograd.gradgradcheck(rest_and_inverse, (x, weights, transforms), fast_mode=True)


def test_max_distance_drops_far_samples(flame):
    model, _ = flame
    head = model(*random_parameters(model, 1, 2, LARGE_ANGLE))
    g = torch.Generator().manual_seed(4)
    near, frame = _packed(head.vertices[:, :50])
    far = F.normalize(torch.randn(50, 3, generator=g), dim=-1)  # 1 m out: the head is ~0.2 m across
    x = torch.cat([near, far.repeat(2, 1)])
    frame = torch.cat([frame, frame])
    dirs = torch.randn(200, 3, generator=g) * 3
    out = SkinningDeformer(SkinningDeformerConfig(max_distance=0.3))(x, head, frame, dirs)
    assert out.valid[:100].all() and not out.valid[100:].any()
    assert (out.face[100:] == -1).all() and (out.face[:100] >= 0).all()
    _close(out.points[100:], x[100:], atol=0)
    _close(out.dirs[100:], F.normalize(dirs[100:], dim=-1), atol=1e-6)
    _close(out.points[:100], head.rest_vertices[:, :50].reshape(-1, 3))


# ---------------------------------------------------------------- gradients, devices, bad input


def test_gradcheck_points_and_dirs(flame_folder):
    model = load_model(flame_folder, num_shape=2, num_expression=2, dtype=torch.float64)
    head = model(*random_parameters(model, 8, 2, LARGE_ANGLE, dtype=torch.float64))
    # A little off the surface above face centres, so each sample keeps its nearest face under perturbation.
    faces, frame = torch.tensor([3, 40, 101, 250]), torch.tensor([0, 1, 1, 0])
    corners = head.vertices[frame[:, None], head.faces[faces]]
    normal = face_normals(head.vertices, head.faces)[frame, faces]
    x = (corners.mean(dim=1) + 1e-3 * normal).requires_grad_()
    dirs = F.normalize(torch.randn(4, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(5)), dim=-1)
    dirs.requires_grad_()
    deformer = SkinningDeformer()

    def forward(x, d):
        out = deformer(x, head, frame, d)
        return out.points, out.dirs

    assert torch.autograd.gradcheck(forward, (x, dirs), fast_mode=True)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_on_device(flame_folder, device, dtype):
    model = load_model(flame_folder, num_shape=4, num_expression=4, dtype=dtype, device=device)
    head = model(*[p.to(device) for p in random_parameters(model, 1, 2, LARGE_ANGLE, dtype=dtype)])
    x, frame = _packed(head.vertices)
    dirs = torch.ones_like(x)
    chain = DeformerChain(SkinningDeformer(), TriangleFrameDeformer(TriangleDeformerConfig(source="rest")))
    out = SkinningDeformer()(x, head, frame, dirs)
    assert out.points.device.type == device.type and out.points.dtype == dtype and out.dirs.dtype == dtype
    _close(out.points, head.rest_vertices.reshape(-1, 3))
    assert chain(x, head, frame, dirs).points.shape == (x.shape[0], 3)
    empty = SkinningDeformer()(x[:0], head, frame[:0], dirs[:0])
    assert empty.points.shape == (0, 3) and empty.face.shape == (0,)


def test_bad_input(flame):
    model, _ = flame
    head = model(*random_parameters(model, 0, 2, 0.3))
    x, frame, dirs = torch.zeros(4, 3), torch.tensor([0, 1, 1, 0]), torch.ones(4, 3)
    deformer = SkinningDeformer()
    with raises_naming("x"):
        deformer(torch.zeros(4, 2), head, frame)
    with raises_naming("x"):
        deformer(torch.full((4, 3), float("nan")), head, frame)
    with raises_naming("frame"):
        deformer(x, head, torch.tensor([0, 1, 2, 0]))
    with raises_naming("frame"):
        deformer(x, head)  # two frames: the frame is required
    with raises_naming("dirs"):
        deformer(x, head, frame, torch.zeros(4, 3))
    with raises_naming("dirs"):
        deformer(x, head, frame, dirs[:3])
    with raises_naming("head"):
        deformer(x, "head", frame)
    with raises_naming("max_distance"):
        SkinningDeformerConfig(max_distance=-1.0)
    with raises_naming("source"):
        TriangleDeformerConfig(source="world")
    with pytest.raises(dataclasses.FrozenInstanceError):
        SkinningDeformerConfig().max_distance = 1.0


def test_on_a_gpu_it_reads_nothing_back(flame, host_sync_spy):
    """Training on a GPU: neither blend asks the device for the frames present (torch.unique), with autograd (the
    step's passes) or without (its march); only the singular check, under checked values, reads back, and the trusted
    training step turns it off. The points still skin back to their rest vertices."""
    from headfields.checks import trusted_values
    from headfields.device_paths import cuda_paths

    model, _ = flame
    head = model(*random_parameters(model, 12, 3, LARGE_ANGLE))
    assert head.posed_mesh.num_frames == 3  # built (its triangles checked) before: the skinning's own reads are the question
    g = torch.Generator().manual_seed(8)
    # The topology's tie tables are built once at the first query (a read-back outside any step), by whichever test
    # of this module queries first: build them here, so the spy sees the step's reads whatever the order.
    SkinningDeformer()(head.vertices[0, :4], head, torch.zeros(4, dtype=torch.long), torch.ones(4, 3))
    for grad in (True, False):
        for count in (50, 1000):  # each point's joints, every frame's table
            frame = torch.randint(0, 3, (count,), generator=g)
            vertex = torch.randint(0, head.vertices.shape[1], (count,), generator=g)
            with torch.set_grad_enabled(grad), cuda_paths(), trusted_values(), host_sync_spy() as spy:
                out = SkinningDeformer()(head.vertices[frame, vertex], head, frame, torch.ones(count, 3))
            assert not spy.reads and not spy.copies, spy.report()
            _close(out.points, head.rest_vertices[frame, vertex])
