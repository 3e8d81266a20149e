"""Skinning of arbitrary points: on mesh vertices against smplx's posed vertices, rigid poses against the
closed form, weights against barycentric blends, round trips, gradcheck and bad input."""

import pytest
import torch
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from headfields.geometry import TriangleMesh, face_normals, sample_surface
from headfields.parametric import (
    EYE_JOINTS,
    blend_transforms,
    load_model,
    skin_points,
    skinned_to,
    skinning_weights,
    transform_points,
)
from headfields.synthetic import write_synthetic_flame

from helpers import raises_naming
from model_files import (
    random_parameters,
    smplx_flame,
    smplx_flame_output,
    smplx_smplx,
    smplx_smplx_output,
    write_flame,
    write_smplx,
)


@pytest.fixture(scope="module")
def flame_folder(tmp_path_factory):
    return write_flame(tmp_path_factory.mktemp("flame"), seed=3)


@pytest.fixture(scope="module")
def flame(flame_folder):
    return load_model(flame_folder, num_shape=10, num_expression=10), smplx_flame(flame_folder, 10, 10)


@pytest.fixture(scope="module")
def smplx_pair(tmp_path_factory):
    folder = write_smplx(tmp_path_factory.mktemp("smplx"), seed=5)
    return load_model(folder, "smplx", num_shape=10, num_expression=10), smplx_smplx(folder, 10, 10)


def _all_vertices(head, seed):
    """Every vertex of every frame as one packed batch, shuffled so frames mix: (points, frame, vertex id)."""
    b, v = head.vertices.shape[:2]
    order = torch.randperm(b * v, generator=torch.Generator().manual_seed(seed))
    frame, vertex = order // v, order % v
    return head.rest_vertices[frame, vertex], frame, vertex


def _close(actual, expected, atol=1e-5):
    torch.testing.assert_close(actual, expected, atol=atol, rtol=0)


@hsettings(max_examples=10)
@given(seed=st.integers(0, 2**31 - 1), batch=st.integers(1, 3), angle=st.floats(0.0, 0.7))
def test_pose_points_on_vertices_match_smplx_flame(flame, seed, batch, angle):
    model, reference = flame
    params = random_parameters(model, seed, batch, angle)
    head = model(*params)
    expected = smplx_flame_output(reference, *params).vertices
    points, frame, vertex = _all_vertices(head, seed)
    posed = head.pose_points(points, frame)
    _close(posed, expected[frame, vertex])
    _close(head.unpose_points(posed, frame), points)  # round trip; float32 solve of a blended transform: ~1e-6 m


@pytest.fixture(scope="module")
def synthetic_flame(tmp_path_factory):
    folder = write_synthetic_flame(tmp_path_factory.mktemp("synthetic_flame"))
    return load_model(folder), smplx_flame(folder, 300, 100)


@hsettings(max_examples=10)
@given(seed=st.integers(0, 2**31 - 1), batch=st.integers(1, 2), angle=st.floats(0.0, 0.4), neutral=st.booleans())
def test_skinning_the_synthetic_flame_matches_smplx(synthetic_flame, seed, batch, angle, neutral):
    """The acceptance property: a FLAME file written by headfields loads in smplx, and skinning its vertices as
    arbitrary points (weights from the nearest rest triangle) gives smplx's posed vertices. ``neutral`` keeps
    the expression at zero, where the lips are closest (each lip must keep its own weights)."""
    model, reference = synthetic_flame
    params = random_parameters(model, seed, batch, angle)
    if neutral:
        params[1] = torch.zeros_like(params[1])
    head = model(*params)
    expected = smplx_flame_output(reference, *params).vertices
    points, frame, vertex = _all_vertices(head, seed)
    _close(head.pose_points(points, frame), expected[frame, vertex])


@hsettings(max_examples=10)
@given(seed=st.integers(0, 2**31 - 1), batch=st.integers(1, 3), angle=st.floats(0.0, 0.5))
def test_pose_points_on_vertices_match_smplx_smplx(smplx_pair, seed, batch, angle):
    model, reference = smplx_pair
    params = random_parameters(model, seed, batch, angle)
    head = model(*params)
    expected = smplx_smplx_output(reference, *params).vertices
    points, frame, vertex = _all_vertices(head, seed)
    posed = head.pose_points(points, frame)
    _close(posed, expected[frame, vertex])
    _close(head.unpose_points(posed, frame), points)  # round trip


def _rotation(axis_angle):
    """Rotation matrices by the matrix exponential of the cross-product matrix (independent of Rodrigues)."""
    x, y, z = axis_angle.unbind(-1)
    zero = torch.zeros_like(x)
    skew = torch.stack([zero, -z, y, z, zero, -x, -y, x, zero], dim=-1).reshape(*axis_angle.shape[:-1], 3, 3)
    return torch.linalg.matrix_exp(skew)


def test_global_pose_moves_every_point_rigidly(flame):
    """With only the root rotated, every joint transform is the same rigid motion about the root joint, so any
    point (not only vertices) moves by x -> R (x - j0) + j0 + t, and unposing undoes it."""
    model, _ = flame
    shape, expression, pose, translation = random_parameters(model, 2, 2, 1.0)
    pose[:, 1:] = 0
    head = model(shape, expression, pose, translation)
    g = torch.Generator().manual_seed(0)
    points = (torch.rand(500, 3, generator=g) * 2 - 1) * 0.15  # around and inside the head, off the mesh
    frame = torch.randint(0, 2, (500,), generator=g)
    root = torch.einsum("v,bvc->bc", model.J_regressor[0], head.rest_vertices)  # rest root joint per frame
    rot = _rotation(pose[:, 0])
    expected = torch.einsum("nrc,nc->nr", rot[frame], points - root[frame]) + root[frame] + translation[frame]
    _close(head.pose_points(points, frame), expected)
    _close(head.unpose_points(expected, frame), points)


def test_weights_are_barycentric_blends(flame):
    model, _ = flame
    head = model(*random_parameters(model, 4, 2, 0.5))
    mesh, weights = head.rest_mesh, head.skinning_weights
    # On a vertex: its own row.
    w = skinning_weights(mesh, weights, head.rest_vertices[1], 1)
    _close(w.weights, weights)
    assert (w.distance < 1e-6).all() and (w.frame == 1).all()
    # Inside a face: the barycentric blend of its three rows.
    s = sample_surface(mesh, 300, frame=0, seed=1)
    w = skinning_weights(mesh, weights, s.point, 0)
    assert torch.equal(w.face, s.face)
    _close(w.weights, torch.einsum("nk,nkj->nj", s.bary, weights[head.faces[s.face]]))
    _close(w.weights.sum(dim=1), torch.ones(300))


def test_mixed_frames_equal_one_frame_at_a_time(flame):
    model, _ = flame
    head = model(*random_parameters(model, 6, 3, 0.6))
    g = torch.Generator().manual_seed(2)
    points = (torch.rand(300, 3, generator=g) * 2 - 1) * 0.12
    frame = torch.randint(0, 3, (300,), generator=g)
    mixed = head.pose_points(points, frame)
    for b in range(3):
        pick = frame == b
        _close(mixed[pick], head.pose_points(points[pick], b), atol=1e-7)
    # blend_transforms picks each point's frame: a loop over points, done by hand.
    w = skinning_weights(head.rest_mesh, head.skinning_weights, points, frame).weights
    by_hand = torch.stack([(w[i, :, None, None] * head.joint_transforms[frame[i]]).sum(0) for i in range(300)])
    _close(blend_transforms(w, head.joint_transforms, frame), by_hand, atol=1e-6)
    with torch.no_grad():  # without autograd: a weighted sum of the frame's rows, not a gather and a product
        _close(blend_transforms(w, head.joint_transforms, frame), by_hand, atol=1e-6)
        _close(head.pose_points(points, frame), mixed, atol=1e-7)


def test_gradcheck_points_and_pose(flame_folder):
    model = load_model(flame_folder, num_shape=2, num_expression=2, dtype=torch.float64)
    shape, expression, pose, translation = random_parameters(model, 8, 2, 0.5, dtype=torch.float64)
    head = model(shape, expression, pose, translation)
    # Points a little off the surface above chosen faces, so each keeps its nearest face under perturbation.
    faces = torch.tensor([3, 40, 101, 250])
    frame = torch.tensor([0, 1, 1, 0])
    corners = head.rest_vertices[frame[:, None], head.faces[faces]]
    normal = face_normals(head.rest_vertices, head.faces)[frame, faces]
    points = (corners.mean(dim=1) + 1e-3 * normal).requires_grad_()
    pose = pose.clone().requires_grad_()

    def forward(points, pose):
        return model(shape, expression, pose, translation).pose_points(points, frame)

    def inverse(points, pose):
        return model(shape, expression, pose, translation).unpose_points(points, frame)

    assert torch.autograd.gradcheck(forward, (points, pose), fast_mode=True)
    posed = forward(points, pose).detach().requires_grad_()
    assert torch.autograd.gradcheck(inverse, (posed, pose), fast_mode=True)


def test_bad_input(flame):
    model, _ = flame
    head = model(*random_parameters(model, 0, 2, 0.3))
    points = torch.zeros(4, 3)
    with raises_naming("frame"):
        head.pose_points(points, 2)
    with raises_naming("frame"):
        head.pose_points(points)  # two frames: the frame is required
    with raises_naming("frame"):
        head.unpose_points(points, torch.tensor([0, 1, 2, 0]))
    with raises_naming("points"):
        head.pose_points(torch.zeros(4, 2), 0)
    with raises_naming("points"):
        head.pose_points(torch.full((4, 3), float("nan")), 0)
    with raises_naming("vertex_weights"):
        skinning_weights(head.rest_mesh, head.skinning_weights[:-1], points, 0)
    with raises_naming("transforms"):
        skin_points(head.rest_mesh, head.skinning_weights, head.joint_transforms[:1], points, 0)
    with pytest.raises(ValueError, match="^points: row 0's blended transform is singular"):  # no weight reaches it
        skin_points(head.posed_mesh, torch.zeros_like(head.skinning_weights), head.joint_transforms, points, 0, inverse=True)
    one_frame = TriangleMesh(head.rest_vertices[0], head.faces)
    assert skinning_weights(one_frame, head.skinning_weights, points).weights.shape == (4, 5)  # None: the only frame


def test_blend_and_transform_bad_input(flame):
    model, _ = flame
    head = model(*random_parameters(model, 0, 2, 0.3))
    weights, transforms = head.skinning_weights[:4], head.joint_transforms
    with raises_naming("frame"):
        blend_transforms(weights, transforms, torch.tensor([0, 1, 2, 0]))  # two frames: 2 is out of range
    with raises_naming("frame"):
        blend_transforms(weights, transforms, torch.tensor([0, -1, 0, 0]))
    with raises_naming("frame"):
        blend_transforms(weights, transforms, torch.tensor([0, 1, 0]))  # one per point
    with raises_naming("frame"):
        blend_transforms(weights, transforms, torch.tensor([0.0, 1.0, 0.0, 0.0]))
    with raises_naming("weights"):
        blend_transforms(torch.full((4, 5), float("nan")), transforms, torch.zeros(4, dtype=torch.long))
    with raises_naming("weights"):
        blend_transforms(weights[0], transforms, torch.zeros(4, dtype=torch.long))
    with raises_naming("transforms"):
        blend_transforms(weights, transforms[:, :4], torch.zeros(4, dtype=torch.long))  # 4 joints, weights have 5
    blended = blend_transforms(weights, transforms, torch.zeros(4, dtype=torch.long))
    with raises_naming("transforms"):
        transform_points(blended[:, :3], torch.zeros(4, 3))
    with raises_naming("points"):
        transform_points(blended, torch.zeros(3, 3))  # one point per transform
    with raises_naming("points"):
        transform_points(blended, torch.full((4, 3), float("inf")), inverse=True)


def test_on_device(flame_folder, device):
    model = load_model(flame_folder, num_shape=4, num_expression=4, device=device)
    head = model(*[p.to(device) for p in random_parameters(model, 1, 2, 0.5)])
    frame = torch.tensor([0, 1], device=device).repeat_interleave(head.vertices.shape[1])
    posed = head.pose_points(head.rest_vertices.reshape(-1, 3), frame)
    assert posed.device.type == device.type
    _close(posed, head.vertices.reshape(-1, 3))
    if device.type != "cpu":  # frame and points must be on the weights' / transforms' device
        w = head.skinning_weights[:2]
        with raises_naming("frame"):
            blend_transforms(w, head.joint_transforms, torch.tensor([0, 1]))
        with raises_naming("points"):
            transform_points(head.joint_transforms[0, :2], torch.zeros(2, 3))


def test_skinned_to_the_eye_joints_are_the_eyeballs(synthetic_flame):
    """The synthetic head's eyeballs: spheres of EYE_RADIUS about the eye joints, 2 + rows x columns vertices each."""
    from headfields.synthetic._head_mesh import EYE_COLUMNS, EYE_RADIUS, EYE_ROWS

    model, _ = synthetic_flame
    rest = model()
    for name in EYE_JOINTS:
        ball = skinned_to(model, [name])
        distance = (rest.rest_vertices[0, ball] - rest.joints[0, model.joint_index(name)]).norm(dim=-1)
        assert int(ball.sum()) == 2 + EYE_ROWS * EYE_COLUMNS
        torch.testing.assert_close(distance, torch.full_like(distance, EYE_RADIUS), atol=1e-6, rtol=0)
    assert int(skinned_to(model, EYE_JOINTS).sum()) == 2 * (2 + EYE_ROWS * EYE_COLUMNS)
    assert not skinned_to(model, []).any()
    with pytest.raises(ValueError, match="joints: expected one of"):
        skinned_to(model, ["left_eyes"])
