"""The INSTA / NeRFace dataset format: save -> load round trips, files checked with independent readers
(Pillow, trimesh, json), hand-written NeRFace and INSTA files, and every missing or malformed file naming
itself in the error."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import trimesh
from PIL import Image

from headfields.cameras import PinholeCameras, look_at, pixel_rays
from headfields.data import (
    DEFAULT_INTEGER_DEPTH_SCALE,
    INSTA_FACE_PARSING,
    FrameSet,
    TrackedParams,
    load_insta_dataset,
    save_insta_dataset,
)

from helpers import raises_naming

W, H = 8, 6
LABELS = {"skin": 1, "lips": 2, "hair": 3}


def poses(n: int, seed: int, dtype=torch.float32) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    eye = torch.randn(n, 3, generator=g, dtype=torch.float64) * 0.2 + torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64)
    return look_at(eye, torch.zeros(n, 3, dtype=torch.float64)).to(dtype)


def frame_set(split: str, n: int, seed: int, model_path: Path | None = None, full: bool = True, dtype=torch.float32) -> FrameSet:
    """n frames of W x H pixels with every optional field (``full``) or none."""
    g = torch.Generator().manual_seed(seed)
    cams = PinholeCameras(9.5, 10.25, 4.0, 3.25, W, H, poses(n, seed, dtype))
    images = torch.randint(0, 256, (n, H, W, 3), generator=g, dtype=torch.uint8)
    if not full:
        return FrameSet(split, cams, images)
    depths = torch.rand(n, H, W, generator=g) * 2 + 0.3
    depths[:, 0, :] = 0.0  # no depth on the top row
    faces = torch.tensor([[0, 1, 2], [0, 2, 3], [1, 3, 2]])
    return FrameSet(
        split,
        cams,
        images,
        masks=torch.rand(n, H, W, generator=g) > 0.5,
        depths=depths,
        segmentation=torch.randint(0, 4, (n, H, W), generator=g, dtype=torch.uint8),
        expression=torch.randn(n, 7, generator=g),
        params=TrackedParams(
            shape=torch.randn(10, generator=g),
            expression=torch.randn(n, 7, generator=g),
            pose=torch.randn(n, 5, 3, generator=g),
            translation=torch.randn(n, 3, generator=g),
        ),
        mesh_vertices=torch.randn(n, 4, 3, generator=g),
        mesh_faces=faces,
        model_type=None if model_path is None else "flame",
        model_path=model_path,
        segmentation_labels=dict(LABELS),
    )


@pytest.fixture
def dataset(tmp_path) -> tuple[Path, dict[str, FrameSet]]:
    root = tmp_path / "capture"
    model = root / "model"
    sets = {
        "train": frame_set("train", 3, 0, model),
        "val": frame_set("val", 2, 1, model),
        "test": frame_set("test", 1, 2, model),
    }
    # Every split shares the identity: one shape vector.
    for s in sets.values():
        s.params.shape = sets["train"].params.shape
    save_insta_dataset(root, sets)
    return root, sets


def transforms(root: Path, split: str = "train") -> dict:
    return json.loads((root / f"transforms_{split}.json").read_text())


def rewrite(root: Path, meta: dict, split: str = "train") -> Path:
    path = root / f"transforms_{split}.json"
    path.write_text(json.dumps(meta))
    return path


def raises_file(error, path: Path, *also: str):
    """An error whose message names ``path`` (and each of ``also``)."""
    pattern = "^" + "".join(f"(?=.*{re.escape(text)})" for text in (str(path), *also))
    return pytest.raises(error, match=pattern)


# ---------------------------------------------------------------- round trip


def test_round_trip_is_exact(dataset):
    root, sets = dataset
    for split, saved in sets.items():
        loaded = load_insta_dataset(root, split)
        assert loaded.split == split and loaded.root == root and len(loaded) == len(saved)
        c, d = loaded.cameras, saved.cameras
        assert (c.fx, c.fy, c.cx, c.cy, c.width, c.height) == (d.fx, d.fy, d.cx, d.cy, d.width, d.height)
        assert c.camera_to_world.dtype == torch.float32 and torch.equal(c.camera_to_world, d.camera_to_world)
        assert torch.equal(loaded.images, saved.images)
        assert torch.equal(loaded.masks, saved.masks)
        assert torch.equal(loaded.segmentation, saved.segmentation)
        assert torch.equal(loaded.expression, saved.expression)
        for key in ("shape", "expression", "pose", "translation"):
            assert torch.equal(getattr(loaded.params, key), getattr(saved.params, key))
        assert torch.equal(loaded.mesh_vertices, saved.mesh_vertices)
        assert torch.equal(loaded.mesh_faces, saved.mesh_faces)
        # Depths: quantised to integer_depth_scale metres, held in float16 (2^-11 relative); 0 stays "no depth".
        assert loaded.depths.dtype == torch.float16
        torch.testing.assert_close(loaded.depths.float(), saved.depths, atol=DEFAULT_INTEGER_DEPTH_SCALE / 2 + 1e-6, rtol=2**-11)
        assert torch.equal(loaded.depths == 0, saved.depths == 0)
        assert loaded.model_type == "flame" and loaded.model_path == root / "model"
        assert loaded.segmentation_labels == LABELS
        assert [p.name for p in loaded.image_paths] == [f"{k:05d}.png" for k in _numbers(sets, split)]


def _numbers(sets: dict[str, FrameSet], split: str) -> range:
    start = sum(len(sets[s]) for s in ("train", "val", "test")[: ("train", "val", "test").index(split)])
    return range(start, start + len(sets[split]))


def test_written_files_read_back_with_other_readers(dataset):
    root, sets = dataset
    meta = transforms(root, "val")
    saved = sets["val"]
    assert (meta["fl_x"], meta["fl_y"], meta["cx"], meta["cy"], meta["w"], meta["h"]) == (9.5, 10.25, 4.0, 3.25, W, H)
    assert meta["camera_angle_x"] == pytest.approx(2 * math.atan(W / 2 / 9.5))
    assert meta["model"] == {"type": "flame", "path": "model"} and meta["segmentation_labels"] == LABELS
    frame = meta["frames"][1]  # global frame 4: after the 3 train frames
    assert frame["file_path"] == "images/00004.png" and frame["mesh_path"] == "meshes/00004.obj"
    np.testing.assert_array_equal(np.array(frame["transform_matrix"], dtype=np.float32), saved.cameras.camera_to_world[1].numpy())
    rgba = np.asarray(Image.open(root / frame["file_path"]))
    assert rgba.shape == (H, W, 4)
    np.testing.assert_array_equal(rgba[..., :3], saved.images[1].numpy())
    np.testing.assert_array_equal(rgba[..., 3] == 255, saved.masks[1].numpy())
    depth = Image.open(root / frame["depth_path"])
    assert depth.mode == "I;16"
    metres = np.asarray(depth).astype(np.float64) * meta["integer_depth_scale"]  # instant-ngp: value x scale
    np.testing.assert_allclose(metres, saved.depths[1].numpy(), atol=meta["integer_depth_scale"] / 2 + 1e-6)
    np.testing.assert_array_equal(np.asarray(Image.open(root / frame["seg_mask_path"])), saved.segmentation[1].numpy())
    mesh = trimesh.load(root / frame["mesh_path"], process=False)
    np.testing.assert_array_equal(np.asarray(mesh.vertices, dtype=np.float32), saved.mesh_vertices[1].numpy())
    np.testing.assert_array_equal(mesh.faces, saved.mesh_faces.numpy())
    np.testing.assert_array_equal(np.loadtxt(root / frame["exp_path"], dtype=np.float32), saved.expression[1].numpy())
    with np.load(root / frame["params_path"]) as p:
        np.testing.assert_array_equal(p["pose"], saved.params.pose[1].numpy())
        np.testing.assert_array_equal(p["shape"], saved.params.shape.numpy())


def test_round_trip_without_optional_data_and_float64_poses(tmp_path):
    saved = frame_set("train", 3, 5, full=False, dtype=torch.float64)
    save_insta_dataset(tmp_path, {"train": saved})
    assert Image.open(tmp_path / "images/00000.png").mode == "RGB"
    assert not (tmp_path / "depth").exists()
    meta = transforms(tmp_path)
    assert (
        "integer_depth_scale" not in meta and "model" not in meta and set(meta["frames"][0]) == {"file_path", "transform_matrix"}
    )
    loaded = load_insta_dataset(tmp_path)
    assert torch.equal(loaded.images, saved.images)
    assert torch.equal(loaded.cameras.camera_to_world, saved.cameras.camera_to_world.float())
    for name in ("masks", "depths", "segmentation", "expression", "params", "mesh_vertices", "mesh_faces", "model_type"):
        assert getattr(loaded, name) is None
    assert loaded.segmentation_labels == {}
    # The splits not given are written without frames: loading one says so.
    assert transforms(tmp_path, "test")["frames"] == []
    with raises_naming("split"):
        load_insta_dataset(tmp_path, "test")


def test_frame_set_moves_between_devices(dataset, device):
    root, _ = dataset
    moved = load_insta_dataset(root, "val").to(device)
    assert moved.images.device.type == device.type and moved.cameras.device.type == device.type
    assert moved.params.pose.device.type == device.type and moved.mesh_faces.device.type == device.type


def test_select_slices_every_per_frame_field_and_keeps_the_shared_ones(dataset):
    root, _ = dataset
    frames = load_insta_dataset(root, "train")
    picked = frames.select([2, 0])
    assert len(picked) == 2 and picked.split == frames.split
    for i, f in enumerate([2, 0]):
        assert picked.image_paths[i] == frames.image_paths[f]
        torch.testing.assert_close(picked.cameras.camera_to_world[i], frames.cameras.camera_to_world[f], rtol=0, atol=0)
        for name in ("images", "masks", "depths", "segmentation", "expression", "mesh_vertices"):
            assert torch.equal(getattr(picked, name)[i], getattr(frames, name)[f]), name
        for name in ("expression", "pose", "translation"):
            assert torch.equal(getattr(picked.params, name)[i], getattr(frames.params, name)[f]), name
    assert torch.equal(picked.params.shape, frames.params.shape) and torch.equal(picked.mesh_faces, frames.mesh_faces)
    assert (picked.cameras.fx, picked.cameras.width) == (frames.cameras.fx, frames.cameras.width)
    assert picked.segmentation_labels == frames.segmentation_labels and picked.model_path == frames.model_path
    with raises_naming("frames"):
        frames.select([len(frames)])


# ---------------------------------------------------------------- hand-written files


def _nerface_folder(tmp_path: Path) -> tuple[Path, list[np.ndarray], list[np.ndarray]]:
    """A NeRFace-style single transforms.json: intrinsics list (cx, cy relative), OpenGL poses, file paths
    without extension, inline expressions; the second image is a JPEG."""
    root = tmp_path / "nerface"
    (root / "train").mkdir(parents=True)
    rng = np.random.default_rng(0)
    images, matrices = [], []
    frames = []
    for i in range(3):
        image = rng.integers(0, 256, (H, W, 3), dtype=np.uint8) if i != 1 else np.full((H, W, 3), 128, np.uint8)
        suffix = ".jpg" if i == 1 else ".png"
        Image.fromarray(image).save(root / "train" / f"f_{i:04d}{suffix}")
        angle = 0.2 * i
        gl = np.eye(4)  # OpenGL camera: looks along its -z, here rotated about world y and moved back
        gl[:3, :3] = [[math.cos(angle), 0, math.sin(angle)], [0, 1, 0], [-math.sin(angle), 0, math.cos(angle)]]
        gl[:3, 3] = [0.1 * i, 0.0, 1.2]
        images.append(image)
        matrices.append(gl)
        frames.append({"file_path": f"./train/f_{i:04d}", "transform_matrix": gl.tolist(), "expression": [0.5 * i, -1.0, 2.0]})
    meta = {"camera_angle_x": 0.7, "intrinsics": [11.0, 12.0, 0.5, 0.375], "frames": frames}
    (root / "transforms.json").write_text(json.dumps(meta))
    return root, images, matrices


def test_nerface_transforms_json_loads(tmp_path):
    root, images, matrices = _nerface_folder(tmp_path)
    fs = load_insta_dataset(root)
    assert len(fs) == 3 and (fs.cameras.width, fs.cameras.height) == (W, H)  # size from the first image
    assert fs.image_paths[1].suffix == ".jpg" and fs.image_paths[0].suffix == ".png"
    assert torch.equal(fs.images[0], torch.from_numpy(images[0]))
    assert (fs.images[1].int() - 128).abs().max() <= 2  # JPEG of a flat grey image
    torch.testing.assert_close(fs.expression, torch.tensor([[0.0, -1.0, 2.0], [0.5, -1.0, 2.0], [1.0, -1.0, 2.0]]))
    assert fs.masks is None and fs.depths is None and fs.params is None
    # NeRFace's ray for pixel (i, j): R @ [(i - W cx) / fx, -(j - H cy) / fy, -1] (nerf_helpers.get_ray_bundle).
    cols, rows = np.meshgrid(np.arange(W), np.arange(H))
    for k, gl in enumerate(matrices):
        d = np.stack([(cols - W * 0.5) / 11.0, -(rows - H * 0.375) / 12.0, -np.ones_like(cols, dtype=float)], -1)
        expected = d.reshape(-1, 3) @ gl[:3, :3].T
        expected /= np.linalg.norm(expected, axis=-1, keepdims=True)
        pixels = torch.from_numpy(np.stack([cols.reshape(-1), rows.reshape(-1)], -1) + 0.5).float()  # our pixel centres
        rays = pixel_rays(fs.cameras, k, pixels)
        np.testing.assert_allclose(rays.directions.numpy(), expected, atol=1e-6)
        np.testing.assert_allclose(rays.origins.numpy()[0], gl[:3, 3], atol=1e-6)
    with raises_naming("split"):  # a single transforms.json without val_filenames: everything is train
        load_insta_dataset(root, "val")


def test_single_transforms_json_with_split_lists(tmp_path):
    root, _, _ = _nerface_folder(tmp_path)
    meta = json.loads((root / "transforms.json").read_text())
    meta["val_filenames"] = ["train/f_0001.jpg"]
    meta["test_filenames"] = ["./train/f_0002"]
    (root / "transforms.json").write_text(json.dumps(meta))
    assert [p.name for p in load_insta_dataset(root, "train").image_paths] == ["f_0000.png"]
    assert [p.name for p in load_insta_dataset(root, "val").image_paths] == ["f_0001.jpg"]
    test = load_insta_dataset(root, "test")
    assert [p.name for p in test.image_paths] == ["f_0002.png"] and test.expression[0, 0] == 1.0
    meta["test_filenames"] = ["train/nothing"]
    (root / "transforms.json").write_text(json.dumps(meta))
    with raises_file(ValueError, root / "transforms.json", "test_filenames"):
        load_insta_dataset(root, "test")


def test_insta_style_file_with_field_of_view_and_depth_scale(tmp_path):
    Image.fromarray(np.zeros((H, W, 3), np.uint8)).save(tmp_path / "a.png")
    depth = np.full((H, W), 1000, np.uint16)
    depth[0, 0] = 0
    Image.fromarray(depth).save(tmp_path / "a_depth.png")
    seg = np.zeros((H, W, 3), np.uint8)
    seg[..., 0], seg[..., 2] = 130, 9  # INSTA's face parser: the code (upper lip) in red, other channels not read
    seg[0, :, 0] = 0  # a background row
    Image.fromarray(seg).save(tmp_path / "a_seg.png")
    (tmp_path / "a.txt").write_text("0.5 1.5\n-2.0\n")
    meta = {
        "camera_angle_x": math.pi / 2,
        "w": W,
        "h": H,
        "integer_depth_scale": 0.001,  # INSTA's millimetres
        "frames": [
            {
                "file_path": "a.png",
                "transform_matrix": np.eye(4).tolist(),
                "depth_path": "a_depth.png",
                "seg_mask_path": "a_seg.png",
                "exp_path": "a.txt",
            }
        ],
    }
    rewrite(tmp_path, meta, "test")
    fs = load_insta_dataset(tmp_path, "test")
    assert fs.cameras.fx == pytest.approx(W / 2) and fs.cameras.fy == pytest.approx(W / 2)  # square pixels
    assert (fs.cameras.cx, fs.cameras.cy) == (W / 2, H / 2)
    assert fs.depths[0, 1, 1] == pytest.approx(1.0) and fs.depths[0, 0, 0] == 0
    assert (fs.segmentation[0, 1:] == 130).all() and (fs.segmentation[0, 0] == 0).all()
    assert fs.segmentation_labels == INSTA_FACE_PARSING  # detected from the codes: transforms name no labels
    assert fs.segmentation_labels["upper_lip"] == 130 and fs.segmentation_labels["cloth"] == 90
    assert fs.expression.tolist() == [[0.5, 1.5, -2.0]]


# ---------------------------------------------------------------- missing files


def test_missing_folder_and_transforms(tmp_path):
    with raises_file(FileNotFoundError, tmp_path / "absent"):
        load_insta_dataset(tmp_path / "absent")
    with raises_file(FileNotFoundError, tmp_path / "transforms_val.json"):
        load_insta_dataset(tmp_path, "val")
    with raises_naming("split"):
        load_insta_dataset(tmp_path, "training")


@pytest.mark.parametrize("key", ["file_path", "mesh_path", "exp_path", "depth_path", "seg_mask_path", "params_path"])
def test_missing_per_frame_file_is_named(dataset, key):
    root, _ = dataset
    path = root / transforms(root)["frames"][2][key]
    path.unlink()
    with raises_file(FileNotFoundError, path):
        load_insta_dataset(root)


def test_missing_image_without_extension_is_named(tmp_path):
    root, _, _ = _nerface_folder(tmp_path)
    (root / "train" / "f_0002.png").unlink()
    with raises_file(FileNotFoundError, root / "train" / "f_0002.png"):
        load_insta_dataset(root)


# ---------------------------------------------------------------- malformed files


def test_invalid_json_syntax(dataset):
    root, _ = dataset
    path = root / "transforms_train.json"
    path.write_text(path.read_text()[:-20])
    with raises_file(ValueError, path, "invalid JSON"):
        load_insta_dataset(root)


@pytest.mark.parametrize(
    ("edit", "names"),
    [
        (lambda m: m["frames"][1].pop("transform_matrix"), ["frames[1]", "transform_matrix"]),
        (
            lambda m: m.update(frames=[dict(f, transform_matrix=f["transform_matrix"][:3]) for f in m["frames"]]),
            ["frames[0].transform_matrix", "4x4"],
        ),
        (lambda m: m["frames"][2]["transform_matrix"][0].__setitem__(0, 2.0), ["frames[2].transform_matrix", "rigid"]),
        (lambda m: m["frames"][0].pop("file_path"), ["frames[0]", "file_path"]),
        (lambda m: [m.pop(k) for k in ("fl_x", "camera_angle_x")], ["fl_x"]),
        (lambda m: m.update(fl_y="ten"), ["fl_y"]),
        (lambda m: m.update(w=9), ["w, h"]),
        (lambda m: m.pop("h"), ["h: missing"]),
        (lambda m: m.update(w=math.nan), ["w: expected a finite number"]),  # not a bare "cannot convert NaN"
        (lambda m: m.update(h=math.inf), ["h: expected a finite number"]),  # nor an OverflowError
        (lambda m: m.update(w=8.5), ["w: expected a positive integer"]),
        (lambda m: [m.pop(k) for k in ("fl_x", "w", "h")] and m.update(camera_angle_x=math.pi), ["camera_angle_x", "(0, pi)"]),
        (lambda m: m.pop("integer_depth_scale"), ["integer_depth_scale"]),
        (lambda m: m["frames"][1].pop("mesh_path"), ["frames[1]", "mesh_path"]),
        (lambda m: m["frames"][0].pop("exp_path"), ["frames[1]", "exp_path"]),
        (lambda m: m.update(model={"type": "bfm", "path": "model"}), ["model"]),
        (lambda m: m.update(segmentation_labels={"skin": 300}), ["segmentation_labels"]),
        (lambda m: m.update(camera_convention="directx"), ["camera_convention"]),
        (lambda m: m.update(frames="all"), ["frames"]),
    ],
)
def test_malformed_transforms_name_the_file_and_key(dataset, edit, names):
    root, _ = dataset
    meta = transforms(root)
    edit(meta)
    path = rewrite(root, meta)
    with raises_file(ValueError, path, *names):
        load_insta_dataset(root)


def test_image_of_the_wrong_size_is_named(dataset):
    root, _ = dataset
    path = root / transforms(root)["frames"][1]["file_path"]
    Image.fromarray(np.zeros((H, W + 1, 4), np.uint8)).save(path)
    with raises_file(ValueError, path, "w, h"):
        load_insta_dataset(root)


def test_malformed_per_frame_files_are_named(dataset):
    root, _ = dataset
    frames = transforms(root)["frames"]
    mesh = root / frames[1]["mesh_path"]
    mesh.write_text("v 0 0 0\nv 1 0 0\nv 0 1 0\nf 1 2 3\n")  # 3 vertices where the first frame has 4
    with raises_file(ValueError, mesh, "vertices"):
        load_insta_dataset(root)
    mesh.write_text("v 0 0 zero\n")
    with raises_file(ValueError, mesh, "line 1"):
        load_insta_dataset(root)


def test_malformed_expression_params_and_depth_files(dataset):
    root, sets = dataset
    frames = transforms(root)["frames"]
    exp = root / frames[2]["exp_path"]
    exp.write_text("1 2 3\n")  # 3 coefficients where frame 0 has 7
    with raises_file(ValueError, exp, "coefficients"):
        load_insta_dataset(root)
    exp.write_text("1 2 x\n")
    with raises_file(ValueError, exp, "numbers"):
        load_insta_dataset(root)
    np.savetxt(exp, sets["train"].expression[2].numpy())
    params = root / frames[1]["params_path"]
    np.savez(params, shape=np.zeros(10, np.float32), expression=np.zeros(7, np.float32), pose=np.zeros((5, 3), np.float32))
    with raises_file(ValueError, params, "translation"):
        load_insta_dataset(root)
    params.write_text("not a zip")
    with raises_file(ValueError, params):
        load_insta_dataset(root)
    params.unlink()
    arrays = {k: getattr(sets["train"].params, k)[1].numpy() for k in ("expression", "pose", "translation")}
    np.savez(params, shape=np.ones(10, np.float32), **arrays)
    with raises_file(ValueError, params, "identity"):
        load_insta_dataset(root)


def test_depth_and_segmentation_images_of_the_wrong_kind(dataset):
    root, _ = dataset
    frames = transforms(root)["frames"]
    depth = root / frames[0]["depth_path"]
    Image.fromarray(np.zeros((H, W, 3), np.uint8)).save(depth)
    with raises_file(ValueError, depth, "16-bit"):
        load_insta_dataset(root)
    Image.fromarray(np.full((H, W), 200, np.uint8)).save(depth)  # 8-bit grey: not a depth map
    with raises_file(ValueError, depth, "16-bit", "mode L"):
        load_insta_dataset(root)
    Image.fromarray(np.zeros((H - 1, W), np.uint16)).save(depth)
    with raises_file(ValueError, depth, "size"):
        load_insta_dataset(root)
    Image.fromarray(np.zeros((H, W), np.uint16)).save(depth)
    seg = root / frames[1]["seg_mask_path"]
    colours = np.zeros((H, W, 3), np.uint8)
    colours[..., 0] = 7
    Image.fromarray(colours).save(seg)
    with raises_file(ValueError, seg, "label"):
        load_insta_dataset(root)
    image = root / frames[2]["file_path"]
    Image.fromarray(np.zeros((H, W, 3), np.uint8)).save(image)  # RGB among RGBA images
    with raises_file(ValueError, image, "alpha"):
        load_insta_dataset(root)
    image.write_bytes(b"not a png")
    with raises_file(ValueError, image):
        load_insta_dataset(root)


# ---------------------------------------------------------------- bad FrameSets and writer input


def test_bad_frame_sets():
    fs = frame_set("train", 2, 3)
    with raises_naming("split"):
        FrameSet("training", fs.cameras, fs.images)
    with raises_naming("images"):
        FrameSet("train", fs.cameras, fs.images[:, :, :-1])
    with raises_naming("images"):
        FrameSet("train", fs.cameras, fs.images.float())
    with raises_naming("masks"):
        FrameSet("train", fs.cameras, fs.images, masks=fs.masks.to(torch.uint8))
    with raises_naming("depths"):
        FrameSet("train", fs.cameras, fs.images, depths=-fs.depths)
    with raises_naming("params"):
        FrameSet("train", fs.cameras, fs.images, params=frame_set("train", 3, 0).params)
    with raises_naming("mesh_faces"):
        FrameSet("train", fs.cameras, fs.images, mesh_vertices=fs.mesh_vertices)
    with raises_naming("model_type"):
        FrameSet("train", fs.cameras, fs.images, model_type="bfm", model_path=Path("m"))
    with raises_naming("segmentation_labels"):
        FrameSet("train", fs.cameras, fs.images, segmentation_labels={"skin": 256})
    with raises_naming("pose"):
        TrackedParams(torch.zeros(3), torch.zeros(2, 4), torch.zeros(2, 5, 2), torch.zeros(2, 3))


def test_bad_writer_input(tmp_path):
    fs = frame_set("train", 2, 4)
    with raises_naming("frame_sets"):
        save_insta_dataset(tmp_path, {"training": fs})
    with raises_naming("frame_sets"):
        save_insta_dataset(tmp_path, {"val": fs})
    with raises_naming("frame_sets"):
        save_insta_dataset(tmp_path, {})
    with raises_naming("integer_depth_scale"):
        save_insta_dataset(tmp_path, {"train": fs}, integer_depth_scale=0.0)
    with raises_naming("depths"):  # 2.3 m does not fit 16 bits of 10 micrometres
        save_insta_dataset(tmp_path, {"train": fs}, integer_depth_scale=1e-5)
    other = frame_set("val", 1, 5)
    other.segmentation_labels = {"skin": 4}
    with raises_naming("frame_sets"):
        save_insta_dataset(tmp_path, {"train": fs, "val": other})


def test_obj_reader_handles_polygons_texture_indices_and_negative_indices(tmp_path):
    from headfields.data import _io

    path = tmp_path / "quad.obj"
    path.write_text("# a quad\nv 0 0 0\nv 1 0 0\nv 1 1 0\nv 0 1 0\nvt 0 0\nvn 0 0 1\nf 1/1/1 2/1/1 3/1/1 4/1/1\nf -1 -2 -4\n")
    vertices, faces = _io.read_obj(path)
    np.testing.assert_array_equal(vertices, [[0, 0, 0], [1, 0, 0], [1, 1, 0], [0, 1, 0]])
    np.testing.assert_array_equal(faces, [[0, 1, 2], [0, 2, 3], [3, 2, 0]])  # the quad as a fan, then -1 -> 3
    reference = trimesh.load(path, process=False)  # the peer reader agrees on the triangulated area
    assert trimesh.Trimesh(vertices, faces, process=False).area == pytest.approx(reference.area) == pytest.approx(1.5)
    path.write_text("v 0 0 0\nv 1 0 0\nv 0 1 0\nf 1 2 4\n")
    with raises_file(ValueError, path, "out of range"):
        _io.read_obj(path)


def test_obj_reader_checks_every_line_and_splits_on_any_whitespace(tmp_path):
    from headfields.data import _io

    path = tmp_path / "mesh.obj"
    # 12 tokens in all, as 3 "x y z" vertices would have: the second vertex is still short of a coordinate.
    path.write_text("v 0 0 0 1\nv 1 0\nv 0 1 0\nf 1 2 3\n")
    with raises_file(ValueError, path, "line 2", "3 coordinates"):
        _io.read_obj(path)
    path.write_text("v\t0 0 0\nv 1\t0\t0\nv  0 1 0\r\nf\t1 2\t3\n")  # tabs, double spaces, CRLF
    vertices, faces = _io.read_obj(path)
    np.testing.assert_array_equal(vertices, [[0, 0, 0], [1, 0, 0], [0, 1, 0]])
    np.testing.assert_array_equal(faces, [[0, 1, 2]])
    path.write_text("v 0 0 0 1\nv 1 0 0 1\nv 0 1 0 1\nf 1 2 3\n")  # homogeneous w: dropped
    np.testing.assert_array_equal(_io.read_obj(path)[0], [[0, 0, 0], [1, 0, 0], [0, 1, 0]])


def test_obj_writer_round_trips_float32_exactly_and_trimesh_reads_it(tmp_path):
    from headfields.data import _io

    rng = np.random.default_rng(0)
    vertices = (rng.standard_normal((600, 3)) * 10.0 ** rng.integers(-30, 30, (600, 1))).astype(np.float32)
    f32 = np.finfo(np.float32)
    vertices[:4] = [[0.0, -0.0, 1e-45], [f32.max, f32.tiny, -1.0 / 3], [0.1, 0.2, 0.3], [1, 2, 3]]
    faces = np.concatenate([rng.permutation(600).reshape(-1, 3), rng.integers(0, 600, (700, 3))])  # all vertices used
    path = tmp_path / "mesh.obj"
    _io.write_obj(path, vertices, faces)
    v, f = _io.read_obj(path)
    assert v.dtype == np.float32 and np.array_equal(v.view(np.uint32), vertices.view(np.uint32))  # bit-exact, -0.0 too
    np.testing.assert_array_equal(f, faces)
    reference = trimesh.load(path, process=False)
    np.testing.assert_array_equal(reference.vertices.astype(np.float32), vertices)
    np.testing.assert_array_equal(reference.faces, faces)


def test_obj_writer_writes_each_mesh_s_own_faces_whatever_it_wrote_before(tmp_path):
    """The face lines are formatted once for a run of frames with the same faces: a mesh with other faces of the same
    count, or with texture corners, gets its own."""
    from headfields.data import _io

    rng = np.random.default_rng(1)
    vertices = rng.standard_normal((48, 3)).astype(np.float32)
    # The same shape, other indices, every vertex used (trimesh drops the others).
    faces = [np.concatenate([rng.permutation(48).reshape(-1, 3), rng.integers(0, 48, (24, 3))]) for _ in range(2)]
    uvs, uv_faces = rng.random((60, 2)).astype(np.float32), rng.integers(0, 60, (40, 3))
    order = [(0, False), (0, False), (1, False), (0, True), (1, True), (0, False)]
    for k, (which, textured) in enumerate(order):
        path = tmp_path / f"{k}.obj"
        _io.write_obj(path, vertices, faces[which], *((uvs, uv_faces) if textured else ()))
        np.testing.assert_array_equal(_io.read_obj(path)[1], faces[which])
        if not textured:  # trimesh splits textured vertices by their texture coordinates
            np.testing.assert_array_equal(trimesh.load(path, process=False).faces, faces[which])
        else:
            read_uvs, read_uv_faces = _io.read_obj_uvs(path, len(uv_faces))
            np.testing.assert_array_equal(read_uv_faces, uv_faces)
            np.testing.assert_array_equal(read_uvs, uvs)
