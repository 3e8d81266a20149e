"""Captures checked as a careful user would (issue 38): cameras within bounds that follow from the image size and
the tracked head, one colour mode a split, no frame in two splits, every file inside the capture, pathological
files named. Each capture is written here, small, in tmp_path; each refusal must name the file and the key, and
each bound has a capture just inside it that still loads (the truth: the field of view, the image size and the
head's size, worked out here from their definitions)."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from headfields.cameras import PinholeCameras, look_at
from headfields.data import FrameSet, TrackedParams, load_insta_dataset, load_subject, save_insta_dataset
from headfields.data.capture_checks import HEAD_SIZE
from headfields.data.inspect import inspect_capture
from headfields.data.trackers import load_imavatar_dataset, load_vhap_dataset
from headfields.synthetic import write_synthetic_flame

W = H = 16
F = 20.0  # px: a 43.6 deg field of view across 16 px
SIDE = 0.3  # m, the tracked mesh's box: its longest side is the head's size
CUBE_FACES = torch.tensor(  # the 12 outward triangles of the corners below (x, y, z in {-0.5, 0.5}, z fastest)
    [[0, 1, 3], [0, 3, 2], [4, 6, 7], [4, 7, 5], [0, 4, 5], [0, 5, 1]]
    + [[2, 3, 7], [2, 7, 6], [0, 2, 6], [0, 6, 4], [1, 5, 7], [1, 7, 3]]
)


def raises_file(error, path: Path, *also: str):
    """An error whose message names ``path`` and each of ``also`` (in any order)."""
    pattern = "^" + "".join(f"(?=.*{re.escape(str(text))})" for text in (path, *also))
    return pytest.raises(error, match=pattern)


def cube(centre) -> torch.Tensor:
    corners = torch.tensor([[x, y, z] for x in (-0.5, 0.5) for y in (-0.5, 0.5) for z in (-0.5, 0.5)], dtype=torch.float64)
    return (corners * SIDE + torch.as_tensor(centre, dtype=torch.float64)).float()


def frames(split: str, n: int, seed: int, mesh: bool = True, params: bool = False, size: int = W, f: float = F) -> FrameSet:
    """n frames of a head (a box of side SIDE near the origin) seen from 1 m, with its tracked meshes or params."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(n, 3, generator=g, dtype=torch.float64) * 0.05
    jitter = torch.randn(n, 3, generator=g, dtype=torch.float64) * 0.1
    eyes = centres + torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64) + jitter
    cams = PinholeCameras(f, f, size / 2, size / 2, size, size, look_at(eyes, centres).float())
    images = torch.randint(0, 256, (n, size, size, 3), generator=g, dtype=torch.uint8)
    fs = FrameSet(split, cams, images)
    if mesh:
        fs.mesh_vertices, fs.mesh_faces = torch.stack([cube(c) for c in centres]), CUBE_FACES
    if params:
        fs.params = TrackedParams(torch.zeros(4), torch.zeros(n, 3), torch.zeros(n, 5, 3), centres.float())
    return fs


def capture(root: Path, mesh: bool = True, params: bool = False, **options) -> Path:
    """An INSTA-format capture: 3 training frames, 1 validation, 2 test."""
    sizes = {"train": 3, "val": 1, "test": 2}
    sets = {s: frames(s, n, k, mesh, params) for k, (s, n) in enumerate(sizes.items())}
    return save_insta_dataset(root, sets, **options)


def edit(root: Path, change, split: str = "train", name: str | None = None) -> Path:
    path = root / (name or f"transforms_{split}.json")
    meta = json.loads(path.read_text())
    change(meta)
    path.write_text(json.dumps(meta))
    return path


def move_camera(meta: dict, k: int, position) -> None:
    m = np.array(meta["frames"][k]["transform_matrix"])
    m[:3, 3] = position
    meta["frames"][k]["transform_matrix"] = m.tolist()


def write_png(path: Path, array: np.ndarray, mode: str | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array, mode).save(path)


# ---------------------------------------------------------------- 1. camera bounds


def fov_focal(size: int, degrees: float) -> float:
    """The focal length (px) that spans ``size`` px with a field of view of ``degrees`` (pinhole geometry)."""
    return size / 2 / math.tan(math.radians(degrees) / 2)


ABSURD_INTRINSICS = {
    "focal length 1e-30": ("fl_x", 1e-30),
    "focal length 1e30": ("fl_x", 1e30),
    "fl_y 1e-30": ("fl_y", 1e-30),
    "principal point 1e30": ("cx", 1e30),
    "cy -1e30": ("cy", -1e30),
    "a 179.9 deg field of view": ("camera_angle_x", math.radians(179.9)),
}


@pytest.mark.parametrize("case", ABSURD_INTRINSICS, ids=list(ABSURD_INTRINSICS))
def test_absurd_intrinsics_are_refused_naming_the_key(tmp_path, case):
    key, value = ABSURD_INTRINSICS[case]
    root = capture(tmp_path / "c", mesh=False)
    path = edit(root, lambda m: (m.pop("fl_x") if key == "camera_angle_x" else None, m.update({key: value})))
    with raises_file(ValueError, path, f"{key}: expected"):
        load_insta_dataset(root, "train")
    # inspect says the same, one line naming the file and the key; the other splits still load
    report = inspect_capture(root)
    assert any(line.startswith(f"{path}: {key}:") for line in report.problems), report.problems


def test_nerface_intrinsics_are_bounded_too(tmp_path):
    """NeRFace's ``intrinsics: [fx, fy, cx, cy]`` (cx, cy relative to the size) is checked in pixels."""
    root = capture(tmp_path / "c", mesh=False)
    good = [F, F, 0.5, 0.5]
    for k in ("fl_x", "fl_y", "cx", "cy", "camera_angle_x", "camera_angle_y", "camera_convention"):
        edit(root, lambda m, k=k: m.pop(k))
    path = edit(root, lambda m: m.update(intrinsics=good, camera_convention="opencv"))
    assert load_insta_dataset(root).cameras.cx == pytest.approx(W / 2 + 0.5)
    for bad in ([1e-30, F, 0.5, 0.5], [F, F, 1e30, 0.5], [F, F, 0.5, -2.1]):  # -2.1 x 16 px: past -H
        edit(root, lambda m, bad=bad: m.update(intrinsics=bad))
        with raises_file(ValueError, path, "intrinsics: expected"):
            load_insta_dataset(root)


@pytest.mark.parametrize("axis", ["fl_x", "fl_y"])
def test_focal_lengths_at_the_field_of_view_bounds_load(tmp_path, axis):
    """175 deg and 0.5 deg across the image: a hair inside loads, a hair outside is refused."""
    root = capture(tmp_path / "c", mesh=False)
    wide, narrow = fov_focal(W, 175.0), fov_focal(W, 0.5)
    assert wide == pytest.approx(0.349, abs=1e-3) and narrow == pytest.approx(1833.5, abs=0.1)
    for focal, loads in ((wide * 1.000001, True), (narrow * 0.999999, True), (wide * 0.999, False), (narrow * 1.001, False)):
        path = edit(root, lambda m, focal=focal: m.update({axis: focal}))
        if loads:
            assert getattr(load_insta_dataset(root).cameras, axis.replace("l_", "")) == pytest.approx(focal)
        else:
            with raises_file(ValueError, path, f"{axis}: expected a focal length"):
                load_insta_dataset(root)


@pytest.mark.parametrize("key, size", [("cx", W), ("cy", H)])
def test_principal_point_within_one_image_size_of_the_edges_loads(tmp_path, key, size):
    root = capture(tmp_path / "c", mesh=False)
    for value, loads in ((-size, True), (2 * size, True), (-size - 0.01, False), (2 * size + 0.01, False)):
        path = edit(root, lambda m, value=value: m.update({key: value}))
        if loads:
            assert getattr(load_insta_dataset(root).cameras, key) == value
        else:
            with raises_file(ValueError, path, f"{key}: expected the principal point"):
                load_insta_dataset(root)


@pytest.mark.parametrize("scene", ["mesh", "params", "origin"])
def test_a_camera_too_far_to_see_the_head_is_refused(tmp_path, scene):
    """Bound: focal length (px) x head size (m), where the head is one pixel wide. The head: the tracked mesh's box
    (side SIDE), else the tracked translation, else the origin, with a head of HEAD_SIZE."""
    root = capture(tmp_path / "c", mesh=scene == "mesh", params=scene == "params")
    train = load_insta_dataset(root)
    if scene == "mesh":
        centre, size = train.mesh_vertices[1].double().mean(0).numpy(), SIDE  # a box: its centre is the mean
    else:
        centre = train.params.translation[1].double().numpy() if scene == "params" else np.zeros(3)
        size = HEAD_SIZE
    assert HEAD_SIZE == 0.2  # the documented head length (ANSUR II)
    bound = F * size
    direction = np.array([0.6, 0.0, 0.8])
    for distance, loads in ((0.999 * bound, True), (1.001 * bound, False), (1e30, False)):
        path = edit(root, lambda m, d=distance: move_camera(m, 1, centre + d * direction))
        if loads:
            position = load_insta_dataset(root).cameras.camera_to_world[1, :3, 3].double().numpy()
            assert np.linalg.norm(position - centre) == pytest.approx(distance, rel=1e-5)
        else:
            with raises_file(ValueError, path, r"frames[1].transform_matrix: the camera is"):
                load_insta_dataset(root)


def test_a_real_world_insta_capture_loads(tmp_path):
    """INSTA's numbers: 512 x 512 px, a focal length of about 1500 px, the camera about 1 m from a FLAME-sized head."""
    sets = {s: frames(s, 1, k, size=512, f=1500.0) for k, s in enumerate(("train", "test"))}
    root = save_insta_dataset(tmp_path / "insta", sets)
    assert load_insta_dataset(root, "test").cameras.fx == 1500.0


# ---------------------------------------------------------------- VHAP and IMavatar


def write_vhap(root: Path, n: int = 2, translation=(0.0, 0.02, 0.0), **intrinsics) -> Path:
    """A minimal VHAP export: transforms_{train,test}.json (OpenGL c2w, cy from the bottom), one FLAME .npz."""
    params = dict(translation=np.array([translation]), rotation=np.zeros((1, 3)), neck_pose=np.zeros((1, 3)))
    params |= dict(jaw_pose=np.zeros((1, 3)), eyes_pose=np.zeros((1, 6)), shape=np.zeros(4), expr=np.zeros((1, 3)))
    (root / "flame_param").mkdir(parents=True)
    np.savez(root / "flame_param" / "00000.npz", **params)
    eyes = torch.tensor([[math.sin(a), 0.0, math.cos(a)] for a in np.linspace(-0.5, 0.5, 2 * n)])  # 1 m from the head
    c2w = look_at(eyes, torch.zeros(2 * n, 3))
    c2w_gl = c2w.double().numpy() @ np.diag([1.0, -1.0, -1.0, 1.0])
    rng = np.random.default_rng(0)
    for s, split in enumerate(("train", "test")):
        frames = []
        for k in range(n):
            name = f"images/{split}_{k}.png"
            write_png(root / name, rng.integers(0, 256, (H, W, 3), dtype=np.uint8))
            matrix = c2w_gl[s * n + k].tolist()
            frames.append(dict(file_path=name, flame_param_path="flame_param/00000.npz", transform_matrix=matrix))
        top = dict(fl_x=F, fl_y=F, cx=W / 2, cy=H / 2, w=W, h=H) | intrinsics
        (root / f"transforms_{split}.json").write_text(json.dumps({**top, "frames": frames}))
    return root


def write_imavatar(folder: Path, n: int = 2, intrinsics=(-F / W, F / H, 0.5, 0.5), translation=-4.0) -> Path:
    """A minimal IMavatar sequence: world_mat 3x4 world-to-camera in FLAME x 4 units, normalised intrinsics."""
    rng = np.random.default_rng(1)
    frames = []
    for k in range(n):
        write_png(folder / "image" / f"{k + 1}.png", rng.integers(0, 256, (H, W, 3), dtype=np.uint8))
        world_mat = np.eye(4)[:3]
        world_mat[2, 3] = translation
        frames.append(dict(file_path=f"./image/{k + 1}", world_mat=world_mat.tolist(), expression=[0.0] * 3, pose=[0.0] * 15))
    meta = dict(frames=frames, intrinsics=list(intrinsics), shape_params=[0.0] * 4)
    (folder / "flame_params.json").write_text(json.dumps(meta))
    return folder


def test_vhap_cameras_are_bounded(tmp_path):
    root = write_vhap(tmp_path / "ok")
    assert load_vhap_dataset(root).cameras.fx == F
    path = write_vhap(tmp_path / "focal", fl_x=1e-30) / "transforms_train.json"
    with raises_file(ValueError, path, "fl_x: expected a focal length"):
        load_vhap_dataset(path.parent)
    path = write_vhap(tmp_path / "cy", cy=1e30) / "transforms_train.json"
    with raises_file(ValueError, path, "cy: expected the principal point"):
        load_vhap_dataset(path.parent)
    # the head placed by its tracked translation: 1e30 m away, no camera sees it
    path = write_vhap(tmp_path / "far", translation=(0.0, 0.0, 1e30)) / "transforms_train.json"
    with raises_file(ValueError, path, "frames[0].transform_matrix: the camera is", "flame_param_path"):
        load_vhap_dataset(path.parent)


def test_imavatar_cameras_are_bounded(tmp_path):
    """IMavatar's normalised intrinsics (x the image size) and its camera 4 units = 1 m away load; absurd ones
    are refused naming ``intrinsics`` or the frame's ``world_mat``."""
    ok = write_imavatar(tmp_path / "ok")
    cams = load_imavatar_dataset(ok).cameras
    assert (cams.fx, cams.cx) == pytest.approx((F, W / 2 + 0.5))
    old = write_imavatar(tmp_path / "old", intrinsics=(-F * 512 / W, F * 512 / H, 256.0, 256.0))  # pixels of 512
    assert load_imavatar_dataset(old).cameras.fx == pytest.approx(F)
    for name, intrinsics in (("tiny", (-1e-30, 1e-30, 0.5, 0.5)), ("centre", (-F / W, F / H, 1e30, 0.5))):
        folder = write_imavatar(tmp_path / name, intrinsics=intrinsics)
        with raises_file(ValueError, folder / "flame_params.json", "intrinsics: expected"):
            load_imavatar_dataset(folder)
    far = write_imavatar(tmp_path / "far", translation=-4e30)
    with raises_file(ValueError, far / "flame_params.json", "frames[0].world_mat: the camera is"):
        load_imavatar_dataset(far)


# ---------------------------------------------------------------- 2. one colour mode


def test_one_grey_image_among_colour_ones_is_refused(tmp_path):
    root = capture(tmp_path / "c", mesh=False)
    odd = root / load_insta_dataset(root).image_paths[1]
    write_png(odd, np.full((H, W), 128, dtype=np.uint8), "L")
    with raises_file(ValueError, odd, "grey image (mode L)", "colour images (mode RGB", "'train'"):
        load_insta_dataset(root, "train")
    assert any(line.startswith(f"{odd}: a grey image") for line in inspect_capture(root).problems)


def test_a_split_all_grey_or_grey_palette_loads(tmp_path):
    """All grey loads (as RGB with equal channels); a palette of greys is grey, a palette of colours colour."""
    root = capture(tmp_path / "c", mesh=False)
    paths = load_insta_dataset(root).image_paths
    grey = np.arange(H * W, dtype=np.uint8).reshape(H, W)
    for path in paths:
        write_png(path, grey, "L")
    Image.fromarray(grey, "L").convert("P").save(paths[0])  # a palette of greys
    images = load_insta_dataset(root).images
    assert (images == torch.from_numpy(grey)[..., None]).all()
    rgb = np.random.default_rng(0).integers(0, 256, (H, W, 3), dtype=np.uint8)
    Image.fromarray(rgb).convert("P").save(paths[2])  # a palette of colours: odd among greys
    with raises_file(ValueError, paths[2], "colour image (mode P)", "grey images (mode L, P"):
        load_insta_dataset(root)


def test_grey_with_alpha_among_colour_with_alpha_is_refused(tmp_path):
    """The masks come from alpha as before (every image must have it or none); grey-with-alpha is still grey."""
    root = capture(tmp_path / "c", mesh=False)
    paths = load_insta_dataset(root).image_paths
    rgba = np.random.default_rng(0).integers(0, 256, (H, W, 4), dtype=np.uint8)
    for path in paths:
        write_png(path, rgba, "RGBA")
    assert load_insta_dataset(root).masks is not None
    write_png(paths[2], rgba[..., :2], "LA")
    with raises_file(ValueError, paths[2], "grey image (mode LA)", "(mode RGBA"):
        load_insta_dataset(root)


@pytest.mark.parametrize("reader", ["vhap", "imavatar"])
def test_the_trackers_readers_refuse_a_grey_image_too(tmp_path, reader):
    if reader == "vhap":
        root, load = write_vhap(tmp_path / "v"), load_vhap_dataset
        odd = root / "images" / "train_1.png"
    else:
        root, load = write_imavatar(tmp_path / "i"), load_imavatar_dataset
        odd = root / "image" / "2.png"
    write_png(odd, np.zeros((H, W), dtype=np.uint8), "L")
    with raises_file(ValueError, odd, "grey image (mode L)"):
        load(root, "train")


# ---------------------------------------------------------------- 3. no frame in two splits


def move_mesh_vertex(path: Path, vertex: int, position) -> None:
    lines = path.read_text().splitlines()
    rows = [i for i, line in enumerate(lines) if line.startswith("v ")]
    lines[rows[vertex]] = "v " + " ".join(f"{x:.9g}" for x in position)
    path.write_text("\n".join(lines) + "\n")


@pytest.mark.parametrize("offset", [3.0, 1000.0])
def test_a_tracked_mesh_vertex_far_from_the_rest_is_named(tmp_path, offset):
    """A vertex metres (or a kilometre) off the head loaded, and training later blamed a "zero-area" triangle (the
    head's box was as big as the spike): the load refuses the mesh file, naming the vertex and its distance, and
    ``inspect`` reports it. (The test's head is a box of 8 vertices, 0.3 m: its median distance is 0.26 m.)"""
    root = capture(tmp_path / "c")
    train = load_insta_dataset(root)
    mesh = root / json.loads((root / "transforms_train.json").read_text())["frames"][1]["mesh_path"]
    spike = train.mesh_vertices[1, 3].double().numpy() + np.array([offset, 0.0, 0.0])
    move_mesh_vertex(mesh, 3, spike)
    with raises_file(ValueError, mesh, "vertex 3 lies", "m from the mesh's median vertex", "a spike"):
        load_insta_dataset(root)
    assert any(line.startswith(f"{mesh}: vertex 3 lies") for line in inspect_capture(root).problems)


def test_a_head_mesh_loads_and_a_vertex_a_metre_off_it_does_not():
    """The synthetic FLAME head (with its neck: 1.9 times the median distance at most) is within the bound; one
    vertex moved a metre off it is not."""
    from headfields.data.capture_checks import check_mesh_spread
    from headfields.synthetic._head_mesh import build_head

    vertices = np.asarray(build_head().vertices, dtype=np.float64)[None]
    check_mesh_spread([Path("head.obj")], vertices)
    vertices[0, 100] += [0.0, 0.0, 1.0]
    with raises_file(ValueError, "head.obj", "vertex 100 lies"):
        check_mesh_spread([Path("head.obj")], vertices)


def test_the_mesh_spread_bound_loads_just_inside_it():
    """The bound, worked out here: 1000 vertices on a sphere of radius r about the origin (median distance r) and
    one at 7.7 r are a head; at 8.3 r that one is a spike."""
    from headfields.data.capture_checks import MAX_VERTEX_SPREAD, check_mesh_spread

    g = np.random.default_rng(0)
    sphere = g.normal(size=(1000, 3))
    sphere = 0.1 * sphere / np.linalg.norm(sphere, axis=1, keepdims=True)
    assert MAX_VERTEX_SPREAD == 8.0
    for times, loads in ((7.7, True), (8.3, False)):  # (the median distance is r within 1%, the centre 0 within 1%)
        vertices = np.concatenate([sphere, [[0.1 * times, 0.0, 0.0]]])[None]
        if loads:
            check_mesh_spread([Path("m.obj")], vertices)
        else:
            with raises_file(ValueError, "m.obj", "vertex 1000 lies 0.8", "times the median distance"):
                check_mesh_spread([Path("m.obj")], vertices)


def test_a_vertex_pulled_0_3_m_off_a_head_is_named_and_an_expression_loads():
    """A vertex 0.3 m off a FLAME head lies about 4 times the median distance from the median vertex, within
    ``MAX_VERTEX_SPREAD`` (a head with its neck reaches 1.9): it loaded. Its nearest neighbour along an edge lies
    tens of times the edge length about it away: the file and the vertex are named. The same vertex moved 5 mm (an
    expression) loads."""
    from headfields.data.capture_checks import check_mesh_spread
    from headfields.synthetic._head_mesh import build_head

    head = build_head()
    vertices, faces = np.repeat(np.asarray(head.vertices, dtype=np.float64)[None], 3, axis=0), np.asarray(head.faces)
    paths = [Path(f"{k}.obj") for k in range(3)]
    vertices[1, 100] += [0.0, 0.0, 0.005]
    check_mesh_spread(paths, vertices, faces)
    vertices[2, 100] += [0.0, 0.0, 0.3]
    check_mesh_spread(paths, vertices)  # the spread alone lets it pass
    with raises_file(ValueError, "2.obj", "vertex 100 lies 0.", "m from its nearest neighbour along an edge", "a spike"):
        check_mesh_spread(paths, vertices, faces)


def test_the_edge_gap_bound_loads_just_inside_it():
    """The bound, worked out here: a flat grid of squares of side h, each cut by a diagonal (the median edge is h),
    one inner vertex lifted by z off it. Its shortest edge is sqrt(h^2 + z^2), its neighbours' shortest h: at 7.9 h
    it is a head, at 8.1 h a spike."""
    from headfields.data.capture_checks import MAX_EDGE_GAP, check_mesh_spread

    h, n = 0.01, 12
    x, y = np.meshgrid(np.arange(n) * h, np.arange(n) * h, indexing="ij")
    grid = np.stack([x.ravel(), y.ravel(), np.zeros(n * n)], axis=1)
    corner = (np.arange(n - 1)[:, None] * n + np.arange(n - 1)).ravel()  # each square's corner nearest the origin
    faces = np.concatenate([np.stack([corner, corner + n, corner + n + 1], 1), np.stack([corner, corner + n + 1, corner + 1], 1)])
    assert MAX_EDGE_GAP == 8.0
    for times, loads in ((7.9, True), (8.1, False)):
        vertices = grid.copy()[None]
        vertices[0, 5 * n + 5, 2] = h * math.sqrt(times**2 - 1)
        if loads:
            check_mesh_spread([Path("m.obj")], vertices, faces)
        else:
            with raises_file(ValueError, "m.obj", f"vertex {5 * n + 5} lies 0.081 m", "8.1 times the edge length"):
                check_mesh_spread([Path("m.obj")], vertices, faces)


def test_a_training_frame_listed_again_for_testing_is_refused(tmp_path):
    root = capture(tmp_path / "c", mesh=False)
    train = json.loads((root / "transforms_train.json").read_text())["frames"]
    test = edit(root, lambda m: m["frames"].append(train[0]), "test")
    image = root / train[0]["file_path"]
    for split in ("test", "train"):  # both loads refuse, each naming both splits and the file
        with raises_file(ValueError, image, "'train'", "'test'", root / "transforms_train.json", test):
            load_insta_dataset(root, split)
    assert any(line.startswith(f"{image}: listed by split") for line in inspect_capture(root).problems)
    load_insta_dataset(root, "val")  # the validation split shares nothing


def test_the_same_file_under_another_name_is_the_same_frame(tmp_path):
    """A test image that is a link to a training image (or ``./`` in its path) is the same file, resolved."""
    root = capture(tmp_path / "c", mesh=False)
    train = load_insta_dataset(root).image_paths
    link = root / "images" / "link.png"
    link.symlink_to(train[2].name)
    edit(root, lambda m: m["frames"][0].update(file_path="images/link.png"), "test")
    with raises_file(ValueError, link, "'train'", "'test'"):
        load_insta_dataset(root, "test")
    edit(root, lambda m: m["frames"][0].update(file_path="./images/../images/00001.png"), "test")
    with raises_file(ValueError, root / "images" / ".." / "images" / "00001.png", "'train'", "'test'"):
        load_insta_dataset(root, "test")


def test_insta_validation_frames_inside_its_test_frames_load(tmp_path):
    """INSTA's scripts/transforms.py writes ``val`` as the last 20 of its test frames: both held out, that loads;
    only a training frame held out is refused."""
    root = capture(tmp_path / "c", mesh=False)
    test = json.loads((root / "transforms_test.json").read_text())["frames"]
    edit(root, lambda m: m.update(frames=test[-1:]), "val")
    assert load_insta_dataset(root, "val").image_paths == load_insta_dataset(root, "test").image_paths[-1:]
    load_insta_dataset(root, "train")


def test_a_single_transforms_file_keeps_training_frames_out_of_the_held_out_ones(tmp_path):
    """nerfstudio's convention (one transforms.json, ``test_filenames``): training takes the frames no other split
    lists, so a test image listed twice among the frames would be trained on too."""
    root = capture(tmp_path / "c", mesh=False)
    frames = [f for s in ("train", "val", "test") for f in json.loads((root / f"transforms_{s}.json").read_text())["frames"]]
    top = json.loads((root / "transforms_train.json").read_text()) | {"frames": frames}
    for s in ("train", "val", "test"):
        (root / f"transforms_{s}.json").unlink()
    names = [f["file_path"] for f in frames]
    (root / "transforms.json").write_text(json.dumps(top | {"val_filenames": names[3:4], "test_filenames": names[4:]}))
    assert [len(load_insta_dataset(root, s)) for s in ("train", "val", "test")] == [3, 1, 2]
    top["frames"] = frames + [dict(frames[5])]  # the last test frame again, an entry no list names
    (root / "transforms.json").write_text(json.dumps(top | {"val_filenames": names[3:4], "test_filenames": names[4:]}))
    for split in ("train", "test"):
        with raises_file(ValueError, root / names[5], "'train'", "'test'", root / "transforms.json"):
            load_insta_dataset(root, split)


def test_vhap_splits_share_no_frame(tmp_path):
    root = write_vhap(tmp_path / "v")
    first = json.loads((root / "transforms_train.json").read_text())["frames"][0]
    test = edit(root, lambda m: m["frames"].append(first), "test")
    with raises_file(ValueError, root / first["file_path"], "'train'", "'test'", test):
        load_vhap_dataset(root, "test")


# ---------------------------------------------------------------- 4. every file inside the root


@pytest.fixture(scope="module")
def flame_folder(tmp_path_factory) -> Path:
    return write_synthetic_flame(tmp_path_factory.mktemp("flame"))


def test_a_model_file_linked_out_of_the_capture_is_refused(tmp_path, flame_folder):
    """The capture's model folder holds links to model files elsewhere: refused, naming the link, unless allowed."""
    sets = {s: frames(s, n, k, mesh=False) for k, (s, n) in enumerate((("train", 2), ("test", 1)))}
    for fs in sets.values():
        fs.model_type, fs.model_path = "flame", tmp_path / "c" / "model"
    root = save_insta_dataset(tmp_path / "c", sets)
    (root / "model").mkdir()
    for file in flame_folder.iterdir():
        (root / "model" / file.name).symlink_to(file)
    first = sorted((root / "model").iterdir())[0]
    with raises_file(ValueError, root / "transforms_train.json", "model.path:", first, "allow_outside_root"):
        load_insta_dataset(root)
    with raises_file(ValueError, root / "transforms_train.json", "model.path:", first):
        load_subject(root)
    assert any("model.path:" in line for line in inspect_capture(root).problems)
    subject = load_subject(root, allow_outside_root=True)
    assert subject.parametric.model_type == "flame"
    # links that stay inside the capture are the capture's own files
    inside = tmp_path / "c" / "files"
    inside.mkdir()
    for link in (root / "model").iterdir():
        target = inside / link.name
        target.write_bytes(link.read_bytes())
        link.unlink()
        link.symlink_to(target)
    assert load_subject(root).parametric.model_type == "flame"


def test_a_canonical_mesh_linked_out_of_the_capture_is_refused(tmp_path):
    """A capture with tracked meshes and no model: its canonical.obj must be its own too."""
    root = capture(tmp_path / "c")
    outside = tmp_path / "elsewhere.obj"
    outside.write_text((root / "meshes" / "00000.obj").read_text())
    (root / "canonical.obj").symlink_to(outside)
    with raises_file(ValueError, root / "canonical.obj", "outside the capture folder", "allow_outside_root"):
        load_subject(root)
    assert load_subject(root, allow_outside_root=True).parametric.num_vertices == 8


# ---------------------------------------------------------------- 5. pathological files


@pytest.mark.parametrize("allow_outside_root", [False, True])
def test_an_image_linked_to_itself_is_named(tmp_path, allow_outside_root):
    root = capture(tmp_path / "c", mesh=False)
    image = load_insta_dataset(root).image_paths[1]
    image.unlink()
    image.symlink_to(image.name)  # ELOOP
    with raises_file(ValueError, image, "loop of symbolic links"):
        load_insta_dataset(root, allow_outside_root=allow_outside_root)


def test_a_transforms_file_nested_past_the_parser_is_named(tmp_path):
    root = capture(tmp_path / "c", mesh=False)
    path = root / "transforms_train.json"
    path.write_text("[" * 100_000)
    with raises_file(ValueError, path, "nested deeper"):
        load_insta_dataset(root)
    assert any(line.startswith(f"{path}: invalid JSON") for line in inspect_capture(root).problems)


def depth_capture(root: Path) -> Path:
    fs = frames("train", 2, 0, mesh=False)
    fs.depths = torch.full((2, H, W), 1.0)
    return save_insta_dataset(root, {"train": fs})


@pytest.mark.parametrize("scale", [1e300, 1e-300, 10000.0])  # 10000: units per metre, the inverse mix-up
def test_an_absurd_integer_depth_scale_names_the_key(tmp_path, scale):
    root = depth_capture(tmp_path / "c")
    path = edit(root, lambda m: m.update(integer_depth_scale=scale))
    with raises_file(ValueError, path, "integer_depth_scale: expected metres per depth-PNG unit"):
        load_insta_dataset(root)


def test_depth_scales_at_the_range_bounds_load(tmp_path):
    """65535 units may stand for 0.1 m to 1 km: the scales at both ends load, with the depths they say."""
    root = depth_capture(tmp_path / "c")
    units = 10000  # what the writer stored for 1 m at its 1e-4 m a unit
    for top, outward in ((0.1, 0.999), (1000.0, 1.001)):
        scale = top / 65535
        edit(root, lambda m, s=scale: m.update(integer_depth_scale=s))
        metres = load_insta_dataset(root).depths.float()  # float16: 2^-11 relative
        torch.testing.assert_close(metres, torch.full((2, H, W), units * scale), atol=0, rtol=2**-11)
        edit(root, lambda m, s=scale * outward: m.update(integer_depth_scale=s))
        with pytest.raises(ValueError, match="integer_depth_scale"):
            load_insta_dataset(root)


def test_absurd_coefficients_and_mesh_coordinates_name_their_file(tmp_path):
    root = capture(tmp_path / "c", params=True)
    params = root / "params" / "00001.npz"
    arrays = dict(np.load(params))
    np.savez(params, **(arrays | {"expression": np.full(3, 1e30, dtype=np.float32)}))
    with raises_file(ValueError, params, "expression: expected coefficients within"):
        load_insta_dataset(root)
    np.savez(params, **arrays)
    mesh = root / "meshes" / "00002.obj"
    lines = mesh.read_text().splitlines()
    lines[0] = "v 1e39 0 0"
    mesh.write_text("\n".join(lines) + "\n")
    with raises_file(ValueError, mesh, "expected finite vertex coordinates"):
        load_insta_dataset(root)


def test_the_trackers_coefficients_are_bounded(tmp_path):
    folder = write_imavatar(tmp_path / "i")
    path = edit(folder, lambda m: m.update(shape_params=[1e30] * 4), name="flame_params.json")
    with raises_file(ValueError, path, "shape_params: expected coefficients within"):
        load_imavatar_dataset(folder)
    root = write_vhap(tmp_path / "v")
    npz = root / "flame_param" / "00000.npz"
    np.savez(npz, **(dict(np.load(npz)) | {"expr": np.full((1, 3), -1e30)}))
    with raises_file(ValueError, npz, "expr: expected coefficients within"):
        load_vhap_dataset(root)


def test_inspect_reports_the_trackers_frames(tmp_path):
    """Our tracker's tracking.json: frames without a face and frames whose landmarks sit far from the fit are named;
    an unreadable report is a problem naming the file."""
    root = capture(tmp_path / "c", mesh=False)
    report_file = root / "tracking.json"
    # W = 16 px: the flag is 6 px per 512 of width, 0.1875 px here; frame 2 has no face, frame 3 lies 0.5 px off.
    report_file.write_text(
        json.dumps({"found": [True, True, False, True], "reprojection_px": [0.05, 0.1, None, 0.5], "jitter_px": 0.02})
    )
    lines = inspect_capture(root).lines
    assert "tracking: 4 frames, 1 without a face (2)" in lines
    assert any(line.startswith("tracking: landmarks 0.10 px") and line.endswith("in frames 3") for line in lines), lines
    report_file.write_text("{not json")
    assert any(line.startswith(f"{report_file}: cannot read") for line in inspect_capture(root).problems)


def test_a_vertex_pulled_off_a_head_mesh_is_refused_on_load(tmp_path):
    """The load and ``inspect`` refuse a capture whose head mesh has a vertex 0.3 m off, naming the file and vertex
    (within 8 times the vertices' spread, which the older rule alone let through)."""
    from headfields.synthetic._head_mesh import build_head

    head = build_head()
    sets = {s: frames(s, n, k) for k, (s, n) in enumerate({"train": 2, "test": 1}.items())}
    for fs in sets.values():
        fs.mesh_vertices = torch.from_numpy(np.asarray(head.vertices, np.float32)).expand(len(fs), -1, -1).clone()
        fs.mesh_faces = torch.from_numpy(np.asarray(head.faces))
    root = save_insta_dataset(tmp_path / "c", sets)
    load_insta_dataset(root)
    mesh = root / json.loads((root / "transforms_train.json").read_text())["frames"][1]["mesh_path"]
    move_mesh_vertex(mesh, 100, np.asarray(head.vertices[100]) + [0.0, 0.0, 0.3])
    with raises_file(ValueError, mesh, "vertex 100 lies", "nearest neighbour along an edge", "a spike"):
        load_insta_dataset(root)
    assert any(line.startswith(f"{mesh}: vertex 100 lies") for line in inspect_capture(root).problems)


def test_one_non_finite_coefficient_is_named_with_its_position(tmp_path):
    """One NaN among a frame's expression coefficients read "expected at least one finite number"."""
    from headfields.data._io import read_vector

    path = tmp_path / "00000.txt"
    path.write_text("0.1 0.2\nnan 0.4 1e39\n")
    with pytest.raises(ValueError, match=r"expected finite numbers \(float32's\), got nan at position 2 of 5 and 1 more$"):
        read_vector(path)
    path.write_text("\n")
    with pytest.raises(ValueError, match="expected whitespace-separated numbers, found none"):
        read_vector(path)
