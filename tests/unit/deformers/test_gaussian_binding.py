"""GaussianAvatars' binding: frames against hand-computed ones, rigid and scaled motions, quaternions against
matrices, gradients, the regularisers by hand, and bad input."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from headfields.deformers.gaussian_binding import (
    BindingRegulariserConfig,
    GaussianSet,
    bind_gaussians,
    binding_regularisers,
    face_frames,
    matrix_to_quaternion,
    quaternion_multiply,
    quaternion_to_matrix,
)

D = torch.float64
S = math.sqrt(0.5)


def right_triangle():
    # Legs 2 (along x, the first edge) and 1 (along y): normal +z, height over the first edge 1.
    return torch.tensor([[0.0, 0.0, 0.0], [2.0, 0.0, 0.0], [0.0, 1.0, 0.0]], dtype=D), torch.tensor([[0, 1, 2]])


def small_mesh(seed=0):
    g = torch.Generator().manual_seed(seed)
    vertices = torch.randn(5, 3, generator=g, dtype=D)
    faces = torch.tensor([[0, 1, 2], [0, 2, 3], [1, 3, 4]])
    return vertices, faces


def random_rotation(seed):
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(3, 3, generator=g, dtype=D))
    return q * torch.sign(torch.det(q))


def random_locals(n, seed=1):
    g = torch.Generator().manual_seed(seed)
    return (
        torch.randn(n, 3, generator=g, dtype=D),
        torch.randn(n, 4, generator=g, dtype=D),
        torch.rand(n, 3, generator=g, dtype=D) + 0.1,
    )


def test_face_frames_of_a_right_triangle_in_the_xy_plane():
    v, f = right_triangle()
    frames = face_frames(v, f)
    # Columns: edge direction x, normal z, edge x normal = x × z = -y.
    expected = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, 1.0, 0.0]], dtype=D)
    torch.testing.assert_close(frames.rotation[0], expected)
    torch.testing.assert_close(frames.origin[0], torch.tensor([2 / 3, 1 / 3, 0.0], dtype=D))
    torch.testing.assert_close(frames.scale[0], torch.tensor(1.5, dtype=D))  # (edge 2 + height 1) / 2
    # A batch of frames: each frame's frames.
    batched = face_frames(torch.stack([v, 3 * v]), f)
    assert batched.rotation.shape == (2, 1, 3, 3) and batched.scale.shape == (2, 1)
    torch.testing.assert_close(batched.rotation[1, 0], expected)
    torch.testing.assert_close(batched.scale[1, 0], torch.tensor(4.5, dtype=D))


def test_a_degenerate_face_raises_rather_than_giving_nan():
    v = torch.tensor([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [2.0, 0.0, 0.0]])
    with pytest.raises(ValueError, match="zero area"):
        face_frames(v, torch.tensor([[0, 1, 2]]))


def test_a_rigidly_moved_and_scaled_mesh_moves_the_gaussians_with_it():
    v, f = small_mesh()
    parent = torch.tensor([0, 1, 2, 2, 0])
    means, quats, scales = random_locals(5)
    q, t, s = random_rotation(3), torch.tensor([0.3, -1.0, 2.0], dtype=D), 1.7
    before = bind_gaussians(face_frames(v, f), parent, means, quats, scales)
    after = bind_gaussians(face_frames(s * v @ q.T + t, f), parent, means, quats, scales)
    torch.testing.assert_close(after.means, s * before.means @ q.T + t)
    torch.testing.assert_close(after.scales, s * before.scales)

    def covariance(g):
        rs = quaternion_to_matrix(g.quats) * g.scales[:, None, :]  # R diag(s)
        return rs @ rs.transpose(1, 2)

    torch.testing.assert_close(covariance(after), s**2 * q @ covariance(before) @ q.T)
    torch.testing.assert_close(after.quats.norm(dim=-1), torch.ones(5, dtype=D))


def test_bound_means_scales_and_rotations_follow_the_formula_on_a_hand_frame():
    v, f = right_triangle()
    local_mean = torch.tensor([[1.0, 2.0, 3.0]], dtype=D)
    quat = torch.tensor([[2 * S, 0.0, 0.0, 2 * S]], dtype=D)  # unnormalised 90° about z
    world = bind_gaussians(face_frames(v, f), torch.tensor([0]), local_mean, quat, torch.tensor([[1.0, 2.0, 4.0]], dtype=D))
    # k R μ' + T with R(x, y, z) = (x, -z, y), k = 1.5, T = (2/3, 1/3, 0).
    torch.testing.assert_close(world.means[0], torch.tensor([1.5 + 2 / 3, -4.5 + 1 / 3, 3.0], dtype=D))
    torch.testing.assert_close(world.scales[0], torch.tensor([1.5, 3.0, 6.0], dtype=D))
    face_rotation = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, 1.0, 0.0]], dtype=D)
    rot_z = torch.tensor([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]], dtype=D)
    torch.testing.assert_close(quaternion_to_matrix(world.quats[0]), face_rotation @ rot_z)


def test_quaternions_of_a_quarter_turn_about_z():
    q = torch.tensor([S, 0.0, 0.0, S], dtype=D)
    r = torch.tensor([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]], dtype=D)
    torch.testing.assert_close(quaternion_to_matrix(q), r)
    torch.testing.assert_close(matrix_to_quaternion(r), q)
    torch.testing.assert_close(quaternion_multiply(q, q), torch.tensor([0.0, 0.0, 0.0, 1.0], dtype=D))  # 180° about z
    # Half turns (trace -1, where w = 0 and the trace candidate vanishes) come out exactly.
    for axis in range(3):
        half = torch.zeros(4, dtype=D)
        half[1 + axis] = 1
        torch.testing.assert_close(matrix_to_quaternion(quaternion_to_matrix(half)), half)


def test_quaternion_product_is_the_matrix_product():
    a, b = torch.randn(2, 8, 4, dtype=D, generator=torch.Generator().manual_seed(4))
    torch.testing.assert_close(quaternion_to_matrix(quaternion_multiply(a, b)), quaternion_to_matrix(a) @ quaternion_to_matrix(b))


@settings(max_examples=25)
@given(st.lists(st.floats(-1, 1), min_size=4, max_size=4).filter(lambda c: sum(x * x for x in c) > 1e-2))
def test_matrix_to_quaternion_inverts_quaternion_to_matrix_up_to_sign(coefficients):
    q = torch.tensor(coefficients, dtype=D)
    q = q / q.norm()
    back = matrix_to_quaternion(quaternion_to_matrix(q))
    assert min((back - q).abs().max(), (back + q).abs().max()) < 1e-10
    assert back[0] >= 0


def test_bind_gaussians_gradcheck_through_the_frames_and_the_local_parameters():
    v, f = small_mesh(2)
    parent = torch.tensor([0, 2, 1, 2])
    inputs = [x.requires_grad_() for x in (v.clone(), *random_locals(4, seed=5))]

    def bound(vertices, means, quats, scales):
        g = bind_gaussians(face_frames(vertices, f), parent, means, quats, scales)
        return g.means, g.quats, g.scales

    assert torch.autograd.gradcheck(bound, inputs)


def test_one_per_face_starts_as_gaussian_avatars_does():
    v, f = small_mesh()
    g = GaussianSet.one_per_face(3, sh_degree=3, dtype=D, generator=torch.Generator().manual_seed(0))
    assert g.num_gaussians == 3 and g.sh_degree == 3
    assert g.parent.tolist() == [0, 1, 2] and g.sh_rest.shape == (3, 15, 3) and not g.sh_rest.any()
    assert bool(((g.sh_dc >= 0) & (g.sh_dc < 1 / 255)).all())
    posed = g.bound(v, f)
    frames = face_frames(v, f)
    torch.testing.assert_close(posed.means, frames.origin)  # at the face's mean vertex
    torch.testing.assert_close(posed.scales, frames.scale[:, None].expand(3, 3))  # local scale 1
    torch.testing.assert_close(quaternion_to_matrix(posed.quats), frames.rotation)  # identity local rotation
    torch.testing.assert_close(posed.opacities, torch.full((3,), 0.1, dtype=D))
    assert posed.sh.shape == (3, 16, 3) and posed.face_scale.shape == (3,)


def test_binding_regularisers_by_hand():
    g = GaussianSet.one_per_face(2, sh_degree=0, dtype=D)
    with torch.no_grad():
        g.local_means.copy_(torch.tensor([[0.3, 0.4, 0.0], [0.0, 3.0, 0.0]], dtype=D))  # norms 0.5 and 3
        g.local_log_scales.copy_(torch.tensor([[0.5, 1.6, 0.6], [1.0, 1.0, 0.1]], dtype=D).log())
    position, scale = binding_regularisers(g)
    torch.testing.assert_close(position, torch.tensor(0.01 * (0.0 + 2.0) / 2, dtype=D))
    torch.testing.assert_close(
        scale, torch.tensor((1.0 + math.sqrt(0.32)) / 2, dtype=D)
    )  # relu(s - 0.6) = (0, 1, 0), (.4, .4, 0)
    position, scale = binding_regularisers(
        g, visible=torch.tensor([False, True]), config=BindingRegulariserConfig(scale_weight=2.0)
    )
    torch.testing.assert_close(position, torch.tensor(0.02, dtype=D))
    torch.testing.assert_close(scale, torch.tensor(2 * math.sqrt(0.32), dtype=D))
    position, scale = binding_regularisers(g, visible=torch.tensor([False, False]))
    assert position.item() == 0 and scale.item() == 0


def test_regulariser_gradients_are_finite_at_the_initial_state():
    g = GaussianSet.one_per_face(3, sh_degree=1)  # μ' = 0: the norm's kink
    with torch.no_grad():
        g.local_log_scales[0] = math.log(0.1)  # relu(s - 0.6) = 0 in every component
    sum(binding_regularisers(g)).backward()
    assert torch.isfinite(g.local_means.grad).all() and torch.isfinite(g.local_log_scales.grad).all()


def test_bad_input_names_the_argument():
    v, f = small_mesh()
    frames = face_frames(v, f)
    means, quats, scales = random_locals(2)
    with pytest.raises(ValueError, match="parent"):
        bind_gaussians(frames, torch.tensor([0, 3]), means, quats, scales)
    with pytest.raises(ValueError, match="local_quats"):
        bind_gaussians(frames, torch.tensor([0, 1]), means, torch.full_like(quats, math.nan), scales)
    with pytest.raises(ValueError, match="local_quats"):
        bind_gaussians(frames, torch.tensor([0, 1]), means, torch.zeros_like(quats), scales)
    with pytest.raises(ValueError, match="local_scales"):
        bind_gaussians(frames, torch.tensor([0, 1]), means, quats, -scales)
    with pytest.raises(ValueError, match="faces"):
        GaussianSet.one_per_face(4, dtype=D).bound(v, f)
    with pytest.raises(ValueError, match="vertices"):
        face_frames(torch.full_like(v, math.inf), f)
    z = torch.zeros(2, 3)
    with pytest.raises(ValueError, match="parent"):
        GaussianSet(torch.tensor([0, 5]), z, torch.zeros(2, 4), z, torch.zeros(2), torch.zeros(2, 1, 3), torch.zeros(2, 3, 3), 3)
    with pytest.raises(ValueError, match="sh_rest"):
        GaussianSet(torch.tensor([0, 1]), z, torch.zeros(2, 4), z, torch.zeros(2), torch.zeros(2, 1, 3), torch.zeros(2, 4, 3), 3)
    with pytest.raises(TypeError, match="visible"):
        binding_regularisers(GaussianSet.one_per_face(2), visible=torch.ones(2))
