"""Reenactment transfer (``drive``, ``is_own_capture``) against truth computed independently: the transfer
formulas by hand in numpy, joint rotations composed with scipy's Rotation, on FrameSets built in memory."""

from __future__ import annotations

import math
import os

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.spatial.transform import Rotation

from headfields.apps.driving import drive, is_own_capture
from headfields.cameras import PinholeCameras
from headfields.data import FrameSet, TrackedParams

from helpers import raises_naming

SIZE = 6  # image side in pixels


def random_axis_angles(rng: np.random.Generator, count: int, max_angle: float = math.pi) -> np.ndarray:
    """``count`` axis-angle vectors with uniform random axes and angles in [0, max_angle)."""
    axes = rng.normal(size=(count, 3))
    axes /= np.linalg.norm(axes, axis=1, keepdims=True)
    return axes * rng.uniform(0, max_angle, size=(count, 1))


def near_pi_axis_angles(rng: np.random.Generator, count: int) -> np.ndarray:
    """Random axes with angles at pi and just below it (where axis-angle is least stable)."""
    axes = rng.normal(size=(count, 3))
    axes /= np.linalg.norm(axes, axis=1, keepdims=True)
    angles = math.pi - np.array([0.0, 1e-9, 1e-6, 1e-4, 1e-2])[np.arange(count) % 5]
    return axes * angles[:, None]


def make_frames(
    n: int,
    seed: int,
    num_expression: int = 4,
    joints: int = 3,
    shape_size: int = 5,
    pose: np.ndarray | None = None,
    dtype: torch.dtype = torch.float64,
    with_params: bool = True,
    expression_files: int | None = None,
    mesh: tuple[int, np.ndarray] | None = None,
    root=None,
) -> FrameSet:
    """N frames in memory: random images and cameras, and random tracking of the asked kinds."""
    rng = np.random.default_rng(seed)
    c2w = torch.eye(4, dtype=torch.float32).repeat(n, 1, 1)
    c2w[:, :3, 3] = torch.as_tensor(rng.normal(size=(n, 3)), dtype=torch.float32)
    cameras = PinholeCameras(10.0, 10.0, SIZE / 2, SIZE / 2, SIZE, SIZE, c2w)
    images = torch.as_tensor(rng.integers(0, 256, size=(n, SIZE, SIZE, 3)), dtype=torch.uint8)
    params = None
    if with_params:
        if pose is None:
            pose = random_axis_angles(rng, n * joints).reshape(n, joints, 3)
        params = TrackedParams(
            shape=torch.as_tensor(rng.normal(size=shape_size), dtype=dtype),
            expression=torch.as_tensor(rng.normal(size=(n, num_expression)), dtype=dtype),
            pose=torch.as_tensor(pose, dtype=dtype),
            translation=torch.as_tensor(rng.normal(size=(n, 3)), dtype=dtype),
        )
    expression = None
    if expression_files is not None:
        expression = torch.as_tensor(rng.normal(size=(n, expression_files)), dtype=dtype)
    vertices = faces = None
    if mesh is not None:
        num_vertices, faces_array = mesh
        vertices = torch.as_tensor(rng.normal(size=(n, num_vertices, 3)), dtype=dtype)
        faces = torch.as_tensor(faces_array, dtype=torch.long)
    return FrameSet(
        split="train",
        cameras=cameras,
        images=images,
        expression=expression,
        params=params,
        mesh_vertices=vertices,
        mesh_faces=faces,
        root=root,
    )


FACES = np.array([[0, 1, 2], [0, 2, 3], [1, 3, 4], [2, 4, 5]])
OTHER_FACES = np.array([[0, 2, 1], [0, 3, 2], [1, 4, 3], [2, 5, 4]])  # same vertices, flipped winding


def rotation_matrices(axis_angles) -> np.ndarray:
    """[..., 3] axis-angle -> [..., 3, 3] rotation matrices, by scipy."""
    a = np.asarray(axis_angles, dtype=np.float64)
    return Rotation.from_rotvec(a.reshape(-1, 3)).as_matrix().reshape(*a.shape[:-1], 3, 3)


def numpy_of(x: torch.Tensor) -> np.ndarray:
    return x.detach().cpu().double().numpy()


# ---------------------------------------------------------------- absolute transfer


def test_absolute_is_the_drivers_tracking_with_the_avatars_shape():
    avatar = make_frames(5, seed=1, expression_files=7)
    driver = make_frames(3, seed=2, expression_files=7)
    driven = drive(avatar, driver, relative=False, avatar_neutral=4, driver_neutral=2)
    np.testing.assert_array_equal(numpy_of(driven.params.shape), numpy_of(avatar.params.shape))
    for key in ("expression", "pose", "translation"):
        np.testing.assert_array_equal(numpy_of(getattr(driven.params, key)), numpy_of(getattr(driver.params, key)), err_msg=key)
    np.testing.assert_array_equal(numpy_of(driven.expression), numpy_of(driver.expression))
    assert len(driven) == 3


def test_drive_keeps_the_drivers_frames():
    avatar = make_frames(4, seed=3, expression_files=2)
    driver = make_frames(6, seed=4, expression_files=2)
    driver.split = "test"
    for relative in (True, False):
        driven = drive(avatar, driver, relative=relative)
        assert driven.split == "test"
        assert len(driven) == 6
        assert driven.cameras.fx == driver.cameras.fx and driven.cameras.width == driver.cameras.width
        torch.testing.assert_close(driven.cameras.camera_to_world, driver.cameras.camera_to_world, rtol=0, atol=0)
        assert torch.equal(driven.images, driver.images)
        assert not torch.equal(driven.images[:4], avatar.images)  # (the two are distinguishable)


def test_drive_leaves_its_inputs_untouched():
    avatar = make_frames(4, seed=5, expression_files=3)
    driver = make_frames(5, seed=6, expression_files=3)
    before = [numpy_of(t).copy() for f in (avatar, driver) for t in (*vars(f.params).values(), f.expression) if t is not None]
    drive(avatar, driver, relative=True, avatar_neutral=2, driver_neutral=3)
    drive(avatar, driver, relative=False)
    after = [numpy_of(t) for f in (avatar, driver) for t in (*vars(f.params).values(), f.expression) if t is not None]
    for b, a in zip(before, after, strict=True):
        np.testing.assert_array_equal(a, b)


# ---------------------------------------------------------------- relative transfer


def test_relative_with_itself_gives_its_own_tracking_back():
    """The avatar driven by its own frames from the same neutral frame: every frame's tracking unchanged."""
    rng = np.random.default_rng(7)
    pose = random_axis_angles(rng, 8 * 4, max_angle=math.pi - 1e-3).reshape(8, 4, 3)  # below pi: one vector each
    avatar = make_frames(8, seed=7, joints=4, pose=pose, expression_files=5)
    for neutral in (0, 5):
        driven = drive(avatar, avatar, relative=True, avatar_neutral=neutral, driver_neutral=neutral)
        np.testing.assert_array_equal(numpy_of(driven.params.shape), numpy_of(avatar.params.shape))
        np.testing.assert_allclose(numpy_of(driven.params.pose), pose, rtol=0, atol=1e-6)
        for key in ("expression", "translation"):
            np.testing.assert_allclose(
                numpy_of(getattr(driven.params, key)), numpy_of(getattr(avatar.params, key)), rtol=0, atol=1e-12
            )
        np.testing.assert_allclose(numpy_of(driven.expression), numpy_of(avatar.expression), rtol=0, atol=1e-12)


def test_relative_with_itself_in_float32():
    rng = np.random.default_rng(8)
    pose = random_axis_angles(rng, 6 * 2, max_angle=3.0).reshape(6, 2, 3)
    avatar = make_frames(6, seed=8, joints=2, pose=pose, dtype=torch.float32)
    driven = drive(avatar, avatar, avatar_neutral=1, driver_neutral=1)
    assert driven.params.pose.dtype == torch.float32 and driven.params.expression.dtype == torch.float32
    np.testing.assert_allclose(numpy_of(driven.params.pose), pose, rtol=0, atol=1e-5)


def test_relative_expression_and_translation_by_hand():
    avatar = make_frames(5, seed=9, num_expression=6, expression_files=3)
    driver = make_frames(4, seed=10, num_expression=6, expression_files=3)
    an, dn = 3, 1
    driven = drive(avatar, driver, relative=True, avatar_neutral=an, driver_neutral=dn)
    a, d = avatar.params, driver.params
    for key in ("expression", "translation"):
        av, dv = numpy_of(getattr(a, key)), numpy_of(getattr(d, key))
        expected = np.stack([av[an] + (dv[f] - dv[dn]) for f in range(4)])
        np.testing.assert_allclose(numpy_of(getattr(driven.params, key)), expected, rtol=0, atol=1e-12, err_msg=key)
    # the driver's neutral frame lands exactly on the avatar's neutral frame
    np.testing.assert_allclose(numpy_of(driven.params.expression[dn]), numpy_of(a.expression[an]), rtol=0, atol=1e-12)
    np.testing.assert_array_equal(numpy_of(driven.params.shape), numpy_of(a.shape))
    # the expression files move the same way
    ae, de = numpy_of(avatar.expression), numpy_of(driver.expression)
    expected = np.stack([ae[an] + (de[f] - de[dn]) for f in range(4)])
    np.testing.assert_allclose(numpy_of(driven.expression), expected, rtol=0, atol=1e-12)


def check_relative_rotations(avatar_pose: np.ndarray, driver_pose: np.ndarray, an: int, dn: int, atol: float) -> None:
    n, j = driver_pose.shape[:2]
    avatar = make_frames(avatar_pose.shape[0], seed=11, joints=j, pose=avatar_pose)
    driver = make_frames(n, seed=12, joints=j, pose=driver_pose)
    driven = drive(avatar, driver, relative=True, avatar_neutral=an, driver_neutral=dn)
    out = numpy_of(driven.params.pose)
    assert out.shape == (n, j, 3)
    assert np.all(np.isfinite(out))
    assert np.linalg.norm(out, axis=-1).max() <= math.pi + 1e-6, "axis-angle out of [0, pi]"
    r_avatar = Rotation.from_rotvec(avatar_pose[an])  # J rotations
    r_neutral = Rotation.from_rotvec(driver_pose[dn])
    for f in range(n):
        expected = (Rotation.from_rotvec(driver_pose[f]) * r_neutral.inv() * r_avatar).as_matrix()
        np.testing.assert_allclose(rotation_matrices(out[f]), expected, rtol=0, atol=atol, err_msg=f"frame {f}")


@settings(max_examples=25)
@given(seed=st.integers(0, 2**32 - 1), an=st.integers(0, 2), dn=st.integers(0, 3))
def test_relative_rotations_against_scipy(seed, an, dn):
    rng = np.random.default_rng(seed)
    avatar_pose = random_axis_angles(rng, 3 * 5).reshape(3, 5, 3)
    driver_pose = random_axis_angles(rng, 4 * 5).reshape(4, 5, 3)
    check_relative_rotations(avatar_pose, driver_pose, an, dn, atol=1e-6)


@settings(max_examples=25)
@given(seed=st.integers(0, 2**32 - 1))
def test_relative_rotations_near_pi_against_scipy(seed):
    """Inputs at and just below pi, and outputs at pi (the neutral frames at rest, a frame turned by ~pi)."""
    rng = np.random.default_rng(seed)
    avatar_pose = near_pi_axis_angles(rng, 2 * 5).reshape(2, 5, 3)
    driver_pose = near_pi_axis_angles(rng, 3 * 5).reshape(3, 5, 3)
    check_relative_rotations(avatar_pose, driver_pose, 1, 2, atol=1e-6)
    rest = np.zeros((1, 5, 3))
    turned = np.concatenate([rest, near_pi_axis_angles(rng, 5)[None]])  # frame 0 neutral, frame 1 ~pi per joint
    check_relative_rotations(rest, turned, 0, 0, atol=1e-6)


def test_relative_rotation_of_a_half_turn_is_a_half_turn():
    """Frame 1 turns pi about z from the driver's neutral; the avatar's neutral is a quarter turn about x."""
    avatar_pose = np.array([[[math.pi / 2, 0, 0]]])
    driver_pose = np.array([[[0.0, 0, 0]], [[0, 0, math.pi]]])
    avatar = make_frames(1, seed=13, joints=1, pose=avatar_pose)
    driver = make_frames(2, seed=14, joints=1, pose=driver_pose)
    out = numpy_of(drive(avatar, driver).params.pose)
    np.testing.assert_allclose(out[0, 0], avatar_pose[0, 0], rtol=0, atol=1e-7)
    expected = rotation_matrices([0, 0, math.pi]) @ rotation_matrices(avatar_pose[0, 0])
    np.testing.assert_allclose(rotation_matrices(out[1, 0]), expected, rtol=0, atol=1e-7)
    assert abs(np.linalg.norm(out[1, 0]) - math.pi) < 1e-6  # R_z(pi) R_x(pi/2) turns by pi too


# ---------------------------------------------------------------- tracked meshes (no model files)


def mesh_frames(n: int, seed: int, faces=FACES, num_vertices: int = 6, expression: int | None = 3) -> FrameSet:
    return make_frames(n, seed, with_params=False, expression_files=expression, mesh=(num_vertices, faces))


def test_tracked_meshes_relative_by_hand():
    avatar, driver = mesh_frames(4, seed=20), mesh_frames(5, seed=21)
    an, dn = 2, 4
    driven = drive(avatar, driver, relative=True, avatar_neutral=an, driver_neutral=dn)
    assert driven.params is None
    av, dv = numpy_of(avatar.mesh_vertices), numpy_of(driver.mesh_vertices)
    expected = np.stack([av[an] + dv[f] - dv[dn] for f in range(5)])
    np.testing.assert_allclose(numpy_of(driven.mesh_vertices), expected, rtol=0, atol=1e-12)
    np.testing.assert_allclose(numpy_of(driven.mesh_vertices[dn]), av[an], rtol=0, atol=1e-12)
    assert torch.equal(driven.mesh_faces, driver.mesh_faces)
    ae, de = numpy_of(avatar.expression), numpy_of(driver.expression)
    np.testing.assert_allclose(numpy_of(driven.expression), np.stack([ae[an] + de[f] - de[dn] for f in range(5)]), atol=1e-12)
    assert torch.equal(driven.images, driver.images)


def test_tracked_meshes_absolute_keeps_the_drivers_meshes():
    avatar, driver = mesh_frames(4, seed=22), mesh_frames(3, seed=23)
    driven = drive(avatar, driver, relative=False, avatar_neutral=3, driver_neutral=2)
    assert torch.equal(driven.mesh_vertices, driver.mesh_vertices)
    assert torch.equal(driven.mesh_faces, driver.mesh_faces)
    assert torch.equal(driven.expression, driver.expression)


def test_tracked_meshes_of_another_topology_raise():
    avatar = mesh_frames(3, seed=24)
    with pytest.raises(ValueError, match="^driver:.*faces"):
        drive(avatar, mesh_frames(3, seed=25, faces=OTHER_FACES))
    with pytest.raises(ValueError, match="^driver:.*faces"):
        drive(avatar, mesh_frames(3, seed=25, faces=FACES[:3]))  # fewer faces
    with pytest.raises(ValueError, match=r"^driver:.*\[6, 3\].*\[7, 3\]"):
        drive(avatar, mesh_frames(3, seed=25, num_vertices=7))  # another vertex count
    with pytest.raises(ValueError, match="^driver:.*without"):
        drive(avatar, make_frames(3, seed=26, expression_files=3))  # parameters, no meshes


# ---------------------------------------------------------------- errors


def test_expression_sizes_differ():
    avatar = make_frames(3, seed=30, num_expression=10)
    with pytest.raises(ValueError, match=r"^driver:.*\[10\].*\[12\]"):
        drive(avatar, make_frames(3, seed=31, num_expression=12))
    with pytest.raises(ValueError, match=r"^driver:.*\[10\].*\[12\]"):
        drive(avatar, make_frames(3, seed=31, num_expression=12), relative=False)


def test_expression_file_sizes_differ():
    avatar = make_frames(3, seed=32, expression_files=50)
    with pytest.raises(ValueError, match=r"^driver:.*\[50\].*\[100\]"):
        drive(avatar, make_frames(3, seed=33, expression_files=100))
    with pytest.raises(ValueError, match="^driver:.*without"):
        drive(avatar, make_frames(3, seed=33))  # no expression files at all


def test_joint_counts_differ():
    avatar = make_frames(3, seed=34, joints=5)
    with pytest.raises(ValueError, match=r"^driver:.*\[5, 3\].*\[3, 3\]"):
        drive(avatar, make_frames(3, seed=35, joints=3))


def test_driver_without_params():
    avatar = make_frames(3, seed=36)
    driver = mesh_frames(3, seed=37, expression=None)
    with pytest.raises(ValueError, match="^driver:.*parameters"):
        drive(avatar, driver)


def test_avatar_without_tracking():
    avatar = make_frames(3, seed=38, with_params=False)
    with pytest.raises(ValueError, match="^avatar:"):
        drive(avatar, make_frames(3, seed=39))


def test_neutral_frame_out_of_range():
    avatar, driver = make_frames(3, seed=40), make_frames(5, seed=41)
    for bad in (3, -1, 100):
        with raises_naming("avatar_neutral"):
            drive(avatar, driver, avatar_neutral=bad)
    for bad in (5, -1):
        with raises_naming("driver_neutral"):
            drive(avatar, driver, driver_neutral=bad)
    with raises_naming("avatar_neutral"):
        drive(avatar, driver, avatar_neutral=True)  # a bool is no frame index
    drive(avatar, driver, avatar_neutral=2, driver_neutral=4)  # the last frames are fine


# ---------------------------------------------------------------- is_own_capture


def test_is_own_capture_by_folder(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    os.symlink(tmp_path / "a", tmp_path / "link")
    avatar = make_frames(3, seed=50, root=tmp_path / "a")
    same = make_frames(2, seed=50, root=tmp_path / "a")
    via_link = make_frames(2, seed=51, root=tmp_path / "link")
    dotted = make_frames(2, seed=51, root=tmp_path / "b" / ".." / "a")
    other = make_frames(2, seed=50, root=tmp_path / "b")  # the same identity shape, another folder
    assert is_own_capture(avatar, same) is True
    assert is_own_capture(avatar, via_link) is True
    assert is_own_capture(avatar, dotted) is True
    assert is_own_capture(avatar, other) is False


def test_is_own_capture_in_memory():
    avatar = make_frames(3, seed=52)
    same_shape = make_frames(4, seed=53)
    same_shape.params.shape = avatar.params.shape.clone()
    assert is_own_capture(avatar, same_shape) is True
    assert is_own_capture(avatar, make_frames(3, seed=54)) is False  # another shape
    assert is_own_capture(avatar, make_frames(3, seed=52, shape_size=7)) is False  # another shape size
    assert is_own_capture(avatar, mesh_frames(3, seed=55)) is False  # no parameters to compare
