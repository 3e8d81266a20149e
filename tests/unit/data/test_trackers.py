"""Readers of other trackers' captures (IMavatar / PointAvatar, VHAP / GaussianAvatars): tiny captures written
here as each tracker's own writer writes them (field names, nesting, conventions), read back and checked against
that format's own maths (its projection, written out by hand from its code), smplx's FLAME for the pose mapping,
and every malformed or missing file naming itself and the field."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from smplx.lbs import batch_rigid_transform, batch_rodrigues, vertices2joints

from headfields.cameras import PinholeCameras, look_at, project_points
from headfields.data import (
    FrameSet,
    TrackedParams,
    held_out_splits,
    load_insta_dataset,
    load_subject,
    save_insta_dataset,
    save_vhap_dataset,
)
from headfields.data.trackers import (
    IMAVATAR_JSON,
    detect_capture_format,
    load_imavatar_dataset,
    load_tracker_dataset,
    load_vhap_dataset,
)
from headfields.heads import tracked_head
from headfields.parametric import load_model
from headfields.synthetic import write_synthetic_flame

from helpers import raises_naming
from model_files import flame_arrays, smplx_flame, write_flame

W, H = 8, 6
FX, FY, CX, CY = 9.5, 10.25, 4.25, 2.5  # OpenCV pixels, centres at +0.5 (VHAP's convention too)
NUM_SHAPE, NUM_EXPR = 20, 10


def raises_file(error, path: Path, *also: str):
    """An error whose message names ``path`` (and each of ``also``)."""
    pattern = "^" + "".join(f"(?=.*{re.escape(text)})" for text in (str(path), *also))
    return pytest.raises(error, match=pattern)


def write_png(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def cameras_cv(n: int, seed: int, distance: float) -> np.ndarray:
    """Camera-to-world matrices (OpenCV axes) around the origin at about ``distance``, looking at it."""
    g = torch.Generator().manual_seed(seed)
    eye = torch.randn(n, 3, generator=g, dtype=torch.float64) * 0.15 * distance + torch.tensor(
        [0.0, 0.0, distance], dtype=torch.float64
    )
    target = torch.randn(n, 3, generator=g, dtype=torch.float64) * 0.02 * distance
    return look_at(eye, target).numpy()


def random_points(seed: int, n: int = 6) -> np.ndarray:
    """Points in a head-sized box around the origin (metres)."""
    return np.random.default_rng(seed).uniform(-0.08, 0.08, (n, 3))


@pytest.fixture(scope="module")
def flame_folder(tmp_path_factory) -> Path:
    return write_synthetic_flame(tmp_path_factory.mktemp("flame"))


@pytest.fixture(scope="module")
def flame_pair(flame_folder):
    """Our model and smplx's FLAME on the same files, with the capture's direction counts."""
    return load_model(flame_folder, num_shape=NUM_SHAPE, num_expression=NUM_EXPR), smplx_flame(flame_folder, NUM_SHAPE, NUM_EXPR)


def smplx_vertices(reference, shape, expression, global_orient, neck, jaw, leye, reye, transl) -> torch.Tensor:
    t = [torch.as_tensor(np.asarray(a), dtype=torch.float32) for a in (expression, global_orient, neck, jaw, leye, reye, transl)]
    n = len(t[0])
    betas = torch.as_tensor(np.asarray(shape), dtype=torch.float32)[None].expand(n, -1)
    out = reference(
        betas=betas,
        expression=t[0],
        global_orient=t[1],
        neck_pose=t[2],
        jaw_pose=t[3],
        leye_pose=t[4],
        reye_pose=t[5],
        transl=t[6],
    )
    return out.vertices.detach()


# ================================================================ IMavatar / PointAvatar


def write_imavatar(
    folder: Path, n: int = 5, seed: int = 0, shape: np.ndarray | None = None, old_intrinsics: bool = False
) -> dict:
    """A sequence folder as IMavatar's preprocessing leaves it: ``image/<k>.png`` and ``mask/<k>.png`` (ffmpeg
    frames, k from 1, the matte as RGB) and ``flame_params.json`` as ``preprocess/DECA/optimize.py`` dumps it
    (world_mat 3x4 world-to-camera in FLAME x 4 units, the camera looking along -z; intrinsics
    [-fx/size, fy/size, cx/size, cy/size] with pixel centres at integers). Returns the truth."""
    rng = np.random.default_rng(seed)
    c2w = cameras_cv(n, seed, 4 * 0.9)  # their world is FLAME x 4
    c2w_gl = c2w @ np.diag([1.0, -1.0, -1.0, 1.0])
    w2c = np.linalg.inv(c2w_gl)
    w2c[0] = np.eye(4)
    w2c[0, :3, 3] = [0.0, 0.0, -4.0]  # the writer's own camera: identity rotation, translation_p = (0, 0, -4)
    cx_int, cy_int = CX - 0.5, CY - 0.5
    if old_intrinsics:  # IMavatar's older layout: pixels of a 512 px image
        intrinsics = [-FX * 512 / W, FY * 512 / H, cx_int * 512 / W, cy_int * 512 / H]
    else:
        intrinsics = [-FX / W, FY / H, cx_int / W, cy_int / H]
    truth = {
        "images": rng.integers(0, 256, (n, H, W, 3), dtype=np.uint8),
        "matte": rng.choice(np.array([0, 100, 200, 255], dtype=np.uint8), (n, H, W)),
        "shape": rng.normal(size=NUM_SHAPE) * 0.5 if shape is None else shape,
        "expression": rng.normal(size=(n, NUM_EXPR)),
        "pose": rng.normal(size=(n, 15)) * 0.2,
        "world_mat": w2c[:, :3],
        "intrinsics": intrinsics,
    }
    frames = []
    for k in range(n):
        name = str(k + 1)
        write_png(folder / "image" / f"{name}.png", truth["images"][k])
        write_png(folder / "mask" / f"{name}.png", np.repeat(truth["matte"][k][..., None], 3, axis=2))
        frames.append(
            {
                "file_path": "./image/" + name,
                "world_mat": truth["world_mat"][k].tolist(),
                "expression": truth["expression"][k].tolist(),
                "pose": truth["pose"][k].tolist(),
                "bbox": [-0.5, -0.5, 0.5, 0.5],
                "flame_keypoints": rng.uniform(-1, 1, (70, 2)).tolist(),
            }
        )
    meta = {"frames": frames, "intrinsics": intrinsics, "shape_params": truth["shape"].tolist()}
    (folder / "flame_params.json").write_text(json.dumps(meta))
    return truth


def imavatar_pixels(truth: dict, points_theirs: np.ndarray, frame: int) -> np.ndarray:
    """optimize.py's ``projection`` of points in IMavatar's world with its NDC intrinsics, then NDC -> pixels as its
    landmarks (``pixel / size * 2 - 1``), then +0.5 for our pixel centres."""
    f = np.asarray(truth["intrinsics"], dtype=np.float64)
    if f[3] > 1:  # the older layout: pixels of a 512 px image (real_dataset.py)
        f = f / 512
    k = [2 * f[0], 2 * f[1], 2 * f[2] - 1, 2 * f[3] - 1]  # cam_intrinsics of optimize.py, per axis size
    m = truth["world_mat"][frame]
    q = points_theirs @ m[:, :3].T + m[:, 3]
    i = q[:, 0] / q[:, 2] * k[0] + k[2]
    j = q[:, 1] / q[:, 2] * k[1] + k[3]
    return np.stack([(i + 1) * W / 2, (j + 1) * H / 2], axis=-1) + 0.5


@pytest.fixture
def imavatar(tmp_path) -> tuple[Path, dict]:
    folder = tmp_path / "subject1" / "MVI_1810"
    return folder, write_imavatar(folder)


def test_imavatar_reads_what_the_writer_wrote(imavatar):
    folder, truth = imavatar
    frames = load_imavatar_dataset(folder, "train")
    assert isinstance(frames, FrameSet) and frames.split == "train" and len(frames) == 5
    assert frames.model_type is None and frames.model_path is None
    assert torch.equal(frames.images, torch.from_numpy(truth["images"]))
    assert torch.equal(frames.masks, torch.from_numpy(truth["matte"] >= 128))
    assert frames.image_paths == [folder / "image" / f"{k}.png" for k in range(1, 6)]
    p = frames.params
    torch.testing.assert_close(p.shape, torch.from_numpy(truth["shape"]).float())
    torch.testing.assert_close(p.expression, torch.from_numpy(truth["expression"]).float())
    torch.testing.assert_close(p.pose, torch.from_numpy(truth["pose"]).float().reshape(5, 5, 3))
    assert torch.equal(p.translation, torch.zeros(5, 3))
    cams = frames.cameras
    assert (cams.fx, cams.fy, cams.cx, cams.cy, cams.width, cams.height) == pytest.approx((FX, FY, CX, CY, W, H))


def test_imavatar_cameras_project_as_imavatar_does(imavatar):
    """A point p (metres) is IMavatar's 4 p: each frame's camera puts it on the pixel optimize.py's projection
    gives, in front of the camera; the writer's own camera (0, 0, -4) sees the origin at the principal point."""
    folder, truth = imavatar
    cams = load_imavatar_dataset(folder).cameras
    points = np.concatenate([np.zeros((1, 3)), random_points(1)])
    for frame in range(5):
        pixels, depth = project_points(cams, torch.from_numpy(points).float(), frame)
        expected = imavatar_pixels(truth, 4 * points, frame)
        torch.testing.assert_close(pixels.double(), torch.from_numpy(expected), atol=1e-3, rtol=0)
        assert (depth > 0).all()
    origin = project_points(cams, torch.zeros(1, 3), 0).pixels[0]
    torch.testing.assert_close(origin, torch.tensor([CX, CY]), atol=1e-5, rtol=0)
    torch.testing.assert_close(cams.camera_to_world[0, :3, 3], torch.tensor([0.0, 0.0, 1.0]))  # 4 / 4 metres


def test_imavatar_old_intrinsics_are_pixels_of_512(tmp_path):
    new, old = tmp_path / "new", tmp_path / "old"
    write_imavatar(new)
    write_imavatar(old, old_intrinsics=True)
    a, b = load_imavatar_dataset(new).cameras, load_imavatar_dataset(old).cameras
    assert (b.fx, b.fy, b.cx, b.cy) == pytest.approx((a.fx, a.fy, a.cx, a.cy))


def test_imavatar_pose_drives_flame_as_imavatar(imavatar, flame_pair):
    """IMavatar's 15 numbers are FLAME's full pose (global, neck, jaw, eyes), its vertices FLAME x 4: ours match
    smplx's FLAME fed the same numbers, and land on the pixels IMavatar's projection gives their x 4 copy."""
    folder, truth = imavatar
    frames = load_imavatar_dataset(folder)
    model, reference = flame_pair
    head = model(frames.params.shape, frames.params.expression, frames.params.pose, frames.params.translation)
    pose = truth["pose"]
    expected = smplx_vertices(
        reference, truth["shape"], truth["expression"], *(pose[:, 3 * j : 3 * j + 3] for j in range(5)), np.zeros((5, 3))
    )
    torch.testing.assert_close(head.vertices, expected, atol=1e-5, rtol=0)
    for frame in (0, 3):
        pixels = project_points(frames.cameras, head.vertices[frame, ::97], frame).pixels
        theirs = imavatar_pixels(truth, 4 * expected[frame, ::97].double().numpy(), frame)
        torch.testing.assert_close(pixels.double(), torch.from_numpy(theirs), atol=2e-3, rtol=0)


def test_imavatar_sequences_of_a_split(tmp_path):
    subject = tmp_path / "subject1"
    a = write_imavatar(subject / "MVI_1810", n=3, seed=1)
    b = write_imavatar(subject / "MVI_1814", n=2, seed=2, shape=a["shape"])
    frames = load_imavatar_dataset(subject, "train", sequences=["MVI_1810", "MVI_1814"])
    assert len(frames) == 5
    assert torch.equal(frames.images, torch.from_numpy(np.concatenate([a["images"], b["images"]])))
    torch.testing.assert_close(
        frames.params.expression, torch.from_numpy(np.concatenate([a["expression"], b["expression"]])).float()
    )
    with pytest.raises(ValueError, match=r"^sequences: .*MVI_1810.*MVI_1814"):
        load_imavatar_dataset(subject, "train")
    assert detect_capture_format(subject) == "imavatar"
    write_imavatar(subject / "MVI_1812", n=2, seed=3)  # another identity
    with raises_file(ValueError, subject / "MVI_1812" / "flame_params.json", "shape_params"):
        load_imavatar_dataset(subject, "test", sequences=["MVI_1810", "MVI_1812"])


def test_imavatar_without_masks(imavatar):
    folder, _ = imavatar
    for path in (folder / "mask").iterdir():
        path.unlink()
    assert load_imavatar_dataset(folder).masks is None


def _edit_json(path: Path, change) -> Path:
    meta = json.loads(path.read_text())
    change(meta)
    path.write_text(json.dumps(meta))
    return path


def _edit(folder: Path, change) -> Path:
    return _edit_json(folder / "flame_params.json", change)


IMAVATAR_BAD = {
    "nan_world_mat": (lambda m: m["frames"][3]["world_mat"][1].__setitem__(2, math.nan), "frames[3].world_mat"),
    "world_mat_2x4": (lambda m: m["frames"][1].__setitem__("world_mat", m["frames"][1]["world_mat"][:2]), "frames[1].world_mat"),
    "scaled_world_mat": (
        lambda m: m["frames"][0].__setitem__("world_mat", (2 * np.array(m["frames"][0]["world_mat"])).tolist()),
        "frames[0].world_mat",
    ),
    "pose_12": (lambda m: m["frames"][2].__setitem__("pose", m["frames"][2]["pose"][:12]), "frames[2].pose"),
    "missing_pose": (lambda m: m["frames"][1].pop("pose"), "frames[1]: missing key 'pose'"),
    "expression_count": (lambda m: m["frames"][4]["expression"].append(0.0), "frames[4].expression"),
    "text_expression": (lambda m: m["frames"][0].__setitem__("expression", "smile"), "frames[0].expression"),
    "missing_shape": (lambda m: m.pop("shape_params"), "shape_params: missing key"),
    "intrinsics_3": (lambda m: m.__setitem__("intrinsics", m["intrinsics"][:3]), "intrinsics"),
    "mirrored": (lambda m: m["intrinsics"].__setitem__(0, -m["intrinsics"][0]), "intrinsics"),
    "no_frames": (lambda m: m.__setitem__("frames", []), "frames"),
    "outside": (lambda m: m["frames"][0].__setitem__("file_path", "../elsewhere/1"), "frames[0].file_path"),
}


@pytest.mark.parametrize("case", sorted(IMAVATAR_BAD))
def test_imavatar_bad_file_names_file_and_field(imavatar, case):
    folder, _ = imavatar
    change, field = IMAVATAR_BAD[case]
    path = _edit(folder, change)
    with raises_file(ValueError, path, field):
        load_imavatar_dataset(folder)


def test_imavatar_missing_files_name_themselves(imavatar, tmp_path):
    folder, _ = imavatar
    (folder / "mask" / "4.png").unlink()
    with raises_file(FileNotFoundError, folder / "mask" / "4.png", "mask not found"):
        load_imavatar_dataset(folder)
    (folder / "image" / "3.png").unlink()
    with raises_file(FileNotFoundError, folder / "image" / "3.png", "frames[2].file_path"):
        load_imavatar_dataset(folder)
    (folder / "flame_params.json").write_text("{not json")
    with raises_file(ValueError, folder / "flame_params.json", "invalid JSON"):
        load_imavatar_dataset(folder)
    with raises_file(FileNotFoundError, tmp_path / "flame_params.json"):
        load_imavatar_dataset(tmp_path)


# ================================================================ VHAP / GaussianAvatars

TIMESTEPS, NUM_CAMERAS = 4, 2
VHAP_V = 7  # rows of the per-vertex offsets: no model's vertex count


def vhap_params(rng: np.random.Generator, t: int) -> dict[str, np.ndarray]:
    """The tracker's whole sequence (``tracked_flame_params_*.npz``): T rows per key, shape [S]."""
    return {
        "translation": rng.normal(size=(t, 3)) * 0.02,
        "rotation": rng.normal(size=(t, 3)) * 0.2,
        "neck_pose": rng.normal(size=(t, 3)) * 0.2,
        "jaw_pose": rng.normal(size=(t, 3)) * 0.2,
        "eyes_pose": rng.normal(size=(t, 6)) * 0.2,
        "shape": rng.normal(size=NUM_SHAPE) * 0.5,
        "expr": rng.normal(size=(t, NUM_EXPR)),
        "static_offset": np.zeros((1, VHAP_V, 3)),
    }


def write_vhap(root: Path, seed: int = 0, params: dict | None = None) -> dict:
    """A capture as ``vhap/export_as_nerf_dataset.py`` exports it: per (timestep, camera) frame an image, a
    foreground mask and the timestep's FLAME ``.npz`` (``write_flame_param``: rows ``[[tid]]``), c2w in OpenGL
    axes, intrinsics with cy from the bottom (``convert_camera_convention``), then ``split_json`` (train ratio
    0.7; with two cameras the last one is the validation view). Returns the truth."""
    rng = np.random.default_rng(seed)
    params = vhap_params(rng, TIMESTEPS) if params is None else params
    c2w_gl = cameras_cv(NUM_CAMERAS, seed, 0.9) @ np.diag([1.0, -1.0, -1.0, 1.0])
    intrinsic = {"cx": CX, "cy": H - CY, "fl_x": FX, "fl_y": FY, "h": H, "w": W}
    intrinsic |= {"camera_angle_x": 2 * math.atan(W / (2 * FX)), "camera_angle_y": 2 * math.atan(H / (2 * FY))}
    images = rng.integers(0, 256, (TIMESTEPS, NUM_CAMERAS, H, W, 3), dtype=np.uint8)
    alpha = rng.integers(0, 256, (TIMESTEPS, NUM_CAMERAS, H, W), dtype=np.uint8)
    db = {"frames": []}
    for ti in range(TIMESTEPS):
        one = {k: (v if k in ("shape", "static_offset") else v[[ti]]) for k, v in params.items()}
        (root / "flame_param").mkdir(parents=True, exist_ok=True)
        np.savez(root / "flame_param" / f"{ti:05d}.npz", **one)
        for ci in range(NUM_CAMERAS):
            frame = {
                "timestep_index": ti,
                "timestep_index_original": ti,
                "timestep_id": f"{ti:05d}",
                "camera_index": ci,
                "camera_id": str(ci),
                **intrinsic,
                "transform_matrix": c2w_gl[ci].tolist(),
                "file_path": f"images/{ti:05d}_{ci:02d}.png",
                "fg_mask_path": f"fg_masks/{ti:05d}_{ci:02d}.png",
                "flame_param_path": f"flame_param/{ti:05d}.npz",
            }
            write_png(root / frame["file_path"], images[ti, ci])
            write_png(root / frame["fg_mask_path"], alpha[ti, ci])
            db["frames"].append(frame)
    db |= intrinsic | {"timestep_indices": list(range(TIMESTEPS)), "camera_indices": list(range(NUM_CAMERAS))}
    (root / "transforms.json").write_text(json.dumps(db, indent=4))
    nt_train = math.ceil(TIMESTEPS * 0.7)
    top = {k: v for k, v in db.items() if k not in ("frames", "timestep_indices", "camera_indices")}
    splits = {
        "train": [f for f in db["frames"] if f["timestep_index"] < nt_train and f["camera_index"] < NUM_CAMERAS - 1],
        "val": [f for f in db["frames"] if f["timestep_index"] < nt_train and f["camera_index"] == NUM_CAMERAS - 1],
        "test": [f for f in db["frames"] if f["timestep_index"] >= nt_train],
    }
    for split, frames in splits.items():
        (root / f"transforms_{split}.json").write_text(json.dumps({**top, "frames": frames}, indent=4))
    return {"params": params, "c2w_gl": c2w_gl, "images": images, "alpha": alpha, "splits": splits}


def vhap_pixels(frame: dict, points: np.ndarray) -> np.ndarray:
    """VHAP's rasteriser (``render_nvdiffrast.py``): w2c = inverse(transform_matrix), OpenGL projection from K
    (``projection_from_intrinsics``), NDC -> nvdiffrast pixels (centres at +0.5, row 0 at NDC y = -1), then the
    rows flipped (``.flip(1)``)."""
    w, h, fx, fy, cx, cy = (frame[k] for k in ("w", "h", "fl_x", "fl_y", "cx", "cy"))
    near, far = 0.1, 10.0
    proj = np.array(
        [
            [2 * fx / w, 0, (w - 2 * cx) / w, 0],
            [0, 2 * fy / h, (h - 2 * cy) / h, 0],
            [0, 0, -(far + near) / (far - near), -2 * far * near / (far - near)],
            [0, 0, -1, 0],
        ]
    )
    cam = np.concatenate([points, np.ones((len(points), 1))], axis=1) @ np.linalg.inv(np.array(frame["transform_matrix"])).T
    clip = cam @ proj.T
    ndc = clip[:, :3] / clip[:, 3:]
    return np.stack([(ndc[:, 0] + 1) * w / 2, h - (ndc[:, 1] + 1) * h / 2], axis=-1)


@pytest.fixture
def vhap(tmp_path) -> tuple[Path, dict]:
    root = tmp_path / "export"
    return root, write_vhap(root)


@pytest.mark.parametrize("split", ["train", "val", "test"])
def test_vhap_reads_what_the_writer_wrote(vhap, split):
    root, truth = vhap
    frames = load_vhap_dataset(root, split)
    written = truth["splits"][split]
    assert len(frames) == len(written) and frames.model_type is None
    ts = [f["timestep_index"] for f in written]
    cs = [f["camera_index"] for f in written]
    assert torch.equal(frames.images, torch.from_numpy(truth["images"][ts, cs]))
    assert torch.equal(frames.masks, torch.from_numpy(truth["alpha"][ts, cs] >= 128))
    assert frames.image_paths == [root / f["file_path"] for f in written]
    p, q = frames.params, truth["params"]
    torch.testing.assert_close(p.shape, torch.from_numpy(q["shape"]).float())
    torch.testing.assert_close(p.expression, torch.from_numpy(q["expr"][ts]).float())
    torch.testing.assert_close(p.translation, torch.from_numpy(q["translation"][ts]).float())
    model = ("global", "neck", "jaw", "left_eye", "right_eye")  # smplx's FLAME joint order
    vhap_rows = {
        "global": q["rotation"],
        "neck": q["neck_pose"],
        "jaw": q["jaw_pose"],
        "left_eye": q["eyes_pose"][:, :3],
        "right_eye": q["eyes_pose"][:, 3:],
    }
    for j, name in enumerate(model):
        torch.testing.assert_close(p.pose[:, j], torch.from_numpy(vhap_rows[name][ts]).float())
    cams = frames.cameras
    assert (cams.fx, cams.fy, cams.cx, cams.cy, cams.width, cams.height) == pytest.approx((FX, FY, CX, CY, W, H))


def test_vhap_cameras_project_as_vhap_renders(vhap):
    root, truth = vhap
    points = np.concatenate([np.zeros((1, 3)), random_points(2)])
    for split in ("train", "test"):
        frames = load_vhap_dataset(root, split)
        for k, written in enumerate(truth["splits"][split]):
            pixels, depth = project_points(frames.cameras, torch.from_numpy(points).float(), k)
            torch.testing.assert_close(pixels.double(), torch.from_numpy(vhap_pixels(written, points)), atol=1e-4, rtol=0)
            assert (depth > 0).all()


def test_vhap_pose_drives_flame_as_vhap(vhap, flame_pair):
    """VHAP's FlameHead: full pose [rotation, neck, jaw, eyes], translation added after skinning = smplx's FLAME
    with global_orient, neck, jaw, leye = eyes[:3], reye = eyes[3:], transl."""
    root, truth = vhap
    frames = load_vhap_dataset(root, "test")
    model, reference = flame_pair
    p = frames.params
    head = model(p.shape, p.expression, p.pose, p.translation)
    q, ts = truth["params"], [f["timestep_index"] for f in truth["splits"]["test"]]
    expected = smplx_vertices(
        reference,
        q["shape"],
        q["expr"][ts],
        q["rotation"][ts],
        q["neck_pose"][ts],
        q["jaw_pose"][ts],
        q["eyes_pose"][ts, :3],
        q["eyes_pose"][ts, 3:],
        q["translation"][ts],
    )
    torch.testing.assert_close(head.vertices, expected, atol=1e-5, rtol=0)


def test_vhap_jaw_alone_rotates_the_jaw_alone(tmp_path, flame_pair):
    params = vhap_params(np.random.default_rng(5), TIMESTEPS)
    for key in ("translation", "rotation", "neck_pose", "eyes_pose"):
        params[key][:] = 0.0
    params["jaw_pose"][:] = [0.3, 0.0, 0.0]  # export_as_nerf_dataset's open mouth
    write_vhap(tmp_path, params=params)
    frames = load_vhap_dataset(tmp_path)
    model, _ = flame_pair
    jaw = model.joint_index("jaw")
    expected = torch.zeros_like(frames.params.pose)
    expected[:, jaw] = torch.tensor([0.3, 0.0, 0.0])
    torch.testing.assert_close(frames.params.pose, expected)
    head = model(frames.params.shape, frames.params.expression, frames.params.pose, frames.params.translation)
    rotations = head.joint_transforms[:, :, :3, :3]
    for j in range(model.num_joints):
        if j == jaw:
            assert (rotations[:, j] - torch.eye(3)).abs().max() > 0.1
        else:
            torch.testing.assert_close(rotations[:, j], torch.eye(3).expand(len(frames), 3, 3), atol=1e-6, rtol=0)


def test_vhap_sequence_file_is_read_at_timestep_index(vhap):
    """A frame may name the tracker's whole-sequence file (T rows); its row is the frame's timestep_index."""
    root, truth = vhap
    np.savez(root / "flame_param" / "all.npz", **truth["params"])
    path = root / "transforms_test.json"
    meta = json.loads(path.read_text())
    for f in meta["frames"]:
        f["flame_param_path"] = "flame_param/all.npz"
    path.write_text(json.dumps(meta))
    frames = load_vhap_dataset(root, "test")
    ts = [f["timestep_index"] for f in meta["frames"]]
    torch.testing.assert_close(frames.params.expression, torch.from_numpy(truth["params"]["expr"][ts]).float())
    meta["frames"][1]["timestep_index"] = TIMESTEPS
    path.write_text(json.dumps(meta))
    with raises_file(ValueError, path, "frames[1].timestep_index"):
        load_vhap_dataset(root, "test")
    short = {k: (v[:2] if k == "expr" else v) for k, v in truth["params"].items()}  # rows of expr != rows of the rest
    np.savez(root / "flame_param" / "all.npz", **short)
    with raises_file(ValueError, root / "flame_param" / "all.npz", "expr", f"expected {TIMESTEPS} rows"):
        load_vhap_dataset(root, "test")


def vhap_flame_vertices(arrays: dict, params: dict, ts: list[int]) -> torch.Tensor:
    """VHAP's ``FlameHead.forward`` (``vhap/model/flame.py``) at timesteps ``ts``, written out in float64: the
    shape and expression blend shapes (``shapedirs[..., :S]`` and ``[..., 300:300 + E]``), then ``static_offset``
    (its rows on FLAME's vertices; the teeth's come after them), the joints regressed from that, pose correctives
    and skinning (``vhap/model/lbs.py``: smplx's), the translation last. ``dynamic_offset`` is not passed, as
    ``export_as_nerf_dataset.py`` poses its meshes."""
    v = len(arrays["v_template"])
    shapedirs = np.concatenate([arrays["shapedirs"][:, :, :NUM_SHAPE], arrays["shapedirs"][:, :, 300 : 300 + NUM_EXPR]], 2)
    betas = np.concatenate([np.broadcast_to(params["shape"], (len(ts), NUM_SHAPE)), params["expr"][ts]], 1)
    v_shaped = arrays["v_template"][None] + np.einsum("bl,mkl->bmk", betas, shapedirs)
    v_shaped = torch.from_numpy(v_shaped + params["static_offset"][:, :v])
    pose = np.concatenate([params[k][ts] for k in ("rotation", "neck_pose", "jaw_pose", "eyes_pose")], 1)
    rotations = batch_rodrigues(torch.from_numpy(pose).reshape(-1, 3)).view(len(ts), -1, 3, 3)
    joints = vertices2joints(torch.from_numpy(arrays["J_regressor"]), v_shaped)
    feature = (rotations[:, 1:] - torch.eye(3, dtype=torch.float64)).reshape(len(ts), -1)
    v_posed = v_shaped + (feature @ torch.from_numpy(arrays["posedirs"].reshape(-1, 36).T.copy())).view(len(ts), -1, 3)
    parents = torch.from_numpy(arrays["kintree_table"][0].astype(np.int64))
    parents[0] = -1
    _, transforms = batch_rigid_transform(rotations, joints, parents, dtype=torch.float64)
    blended = torch.einsum("vj,bjrc->bvrc", torch.from_numpy(arrays["weights"]), transforms)
    vertices = torch.einsum("bvrc,bvc->bvr", blended[..., :3, :3], v_posed) + blended[..., :3, 3]
    return vertices + torch.from_numpy(params["translation"][ts])[:, None]


def test_vhap_static_offsets_reach_the_posed_mesh(tmp_path):
    """A capture whose tracker fitted static offsets (and dynamic ones), its FLAME with VHAP's 120 teeth rows in
    them: the subject's posed mesh is VHAP's own vertices, offsets included, the dynamic ones not applied."""
    arrays = flame_arrays(3)
    folder = write_flame(tmp_path / "flame", arrays=arrays)
    v = len(arrays["v_template"])
    rng = np.random.default_rng(7)
    params = vhap_params(rng, TIMESTEPS)
    params["static_offset"] = rng.normal(size=(1, v + 120, 3)) * 5e-3  # VHAP's add_teeth rows after FLAME's
    params["dynamic_offset"] = rng.normal(size=(TIMESTEPS, v + 120, 3)) * 5e-3
    params["jaw_pose"][:, 0] = np.abs(params["jaw_pose"][:, 0])  # open jaws move the offsets with the jaw
    write_vhap(tmp_path / "export", params=params)
    subject = load_subject(tmp_path / "export", folder)
    assert subject.train.params.static_offset.shape == (v + 120, 3)
    assert any("teeth" in note for note in subject.notes) and any("dynamic_offset" in note for note in subject.notes)
    for frames in (subject.train, subject.eval):
        ts = [int(Path(p).name[:5]) for p in frames.image_paths]  # images/{timestep}_{camera}.png
        head = tracked_head(subject.parametric, frames)
        expected = vhap_flame_vertices(arrays, params, ts)
        torch.testing.assert_close(head.vertices.double(), expected, atol=1e-5, rtol=0)
        without = vhap_flame_vertices(arrays, params | {"static_offset": np.zeros((1, v, 3))}, ts)
        assert (head.vertices.double() - without).abs().max() > 1e-3  # the offsets moved it
    torch.testing.assert_close(
        subject.parametric(shape=subject.train.params.shape).canonical_vertices.double(),
        torch.from_numpy(
            arrays["v_template"] + arrays["shapedirs"][:, :, :NUM_SHAPE] @ params["shape"] + params["static_offset"][0, :v]
        ),
        atol=1e-5,
        rtol=0,
    )


def test_vhap_offsets_ignored_on_request_and_checked(tmp_path, flame_folder):
    params = vhap_params(np.random.default_rng(6), TIMESTEPS)
    params["static_offset"] = np.full((1, VHAP_V, 3), 1e-3)
    write_vhap(tmp_path, params=params)
    assert load_vhap_dataset(tmp_path).params.static_offset.shape == (VHAP_V, 3)
    frames = load_vhap_dataset(tmp_path, offsets="ignore")
    assert frames.params.static_offset is None
    torch.testing.assert_close(frames.params.expression, torch.from_numpy(params["expr"][:3]).float())
    assert load_tracker_dataset(tmp_path, "train", offsets="ignore").params.static_offset is None  # options reach the reader
    with raises_naming("data") as error:  # 7 rows: neither the model's vertices nor them and VHAP's teeth
        load_subject(tmp_path, flame_folder)
    assert "static_offset" in str(error.value)
    np.savez(
        tmp_path / "flame_param" / "00001.npz",
        **{k: v if k != "static_offset" else v * 2 for k, v in np.load(tmp_path / "flame_param" / "00001.npz").items()},
    )
    with raises_file(ValueError, tmp_path / "flame_param" / "00001.npz", "static_offset", "same identity"):
        load_vhap_dataset(tmp_path)
    np.savez(tmp_path / "flame_param" / "00001.npz", **(params | {"static_offset": np.ones((1, VHAP_V, 2))}))
    with raises_file(ValueError, tmp_path / "flame_param" / "00001.npz", "static_offset", "[1, V, 3]"):
        load_vhap_dataset(tmp_path)


def _edit_frames(root: Path, split: str, change) -> Path:
    return _edit_json(root / f"transforms_{split}.json", change)


VHAP_BAD = {
    "nan_matrix": (lambda m: m["frames"][1]["transform_matrix"][0].__setitem__(3, math.nan), "frames[1].transform_matrix"),
    "scaled_matrix": (
        lambda m: m["frames"][0].__setitem__("transform_matrix", (np.eye(4) * 2).tolist()),
        "frames[0].transform_matrix",
    ),
    "other_focal": (lambda m: m["frames"][1].__setitem__("fl_x", FX + 1), "frames[1].fl_x"),
    "missing_file_path": (lambda m: m["frames"][0].pop("file_path"), "frames[0]: missing key 'file_path'"),
    "missing_params": (lambda m: m["frames"][1].pop("flame_param_path"), "frames[1]: missing key 'flame_param_path'"),
    "some_masks": (lambda m: m["frames"][1].pop("fg_mask_path"), "frames[1]"),
    "wrong_size": (lambda m: [f.__setitem__("w", W + 1) for f in m["frames"]], "expected 9x6 pixels"),
    "empty": (lambda m: m.__setitem__("frames", []), "frames: the 'test' split has no frames"),
}


@pytest.mark.parametrize("case", sorted(VHAP_BAD))
def test_vhap_bad_transforms_name_file_and_field(vhap, case):
    root, _ = vhap
    change, field = VHAP_BAD[case]
    path = _edit_frames(root, "test", change)
    named = root / "images" / "00003_00.png" if case == "wrong_size" else path
    with raises_file(ValueError, named, field):
        load_vhap_dataset(root, "test")


@pytest.mark.parametrize(
    ("key", "value", "field"),
    [
        ("jaw_pose", None, "missing key 'jaw_pose'"),
        ("eyes_pose", np.zeros((1, 3)), "eyes_pose"),
        ("expr", np.full((1, NUM_EXPR), np.nan), "expr"),
    ],
)
def test_vhap_bad_parameter_file_names_file_and_key(vhap, key, value, field):
    root, truth = vhap
    path = root / "flame_param" / "00003.npz"
    arrays = dict(np.load(path))
    arrays.pop(key) if value is None else arrays.__setitem__(key, value)
    np.savez(path, **arrays)
    with raises_file(ValueError, path, field):
        load_vhap_dataset(root, "test")


def test_vhap_missing_files_name_themselves(vhap):
    root, _ = vhap
    (root / "fg_masks" / "00003_01.png").unlink()
    with raises_file(FileNotFoundError, root / "fg_masks" / "00003_01.png", "frames[1].fg_mask_path"):
        load_vhap_dataset(root, "test")
    (root / "images" / "00003_00.png").unlink()
    with raises_file(FileNotFoundError, root / "images" / "00003_00.png", "frames[0].file_path"):
        load_vhap_dataset(root, "test")
    (root / "flame_param" / "00001.npz").unlink()
    with raises_file(FileNotFoundError, root / "flame_param" / "00001.npz", "frames[1].flame_param_path"):
        load_vhap_dataset(root, "train")
    (root / "transforms_val.json").unlink()
    with raises_file(FileNotFoundError, root / "transforms_val.json"):
        load_vhap_dataset(root, "val")


# ================================================================ detection and dispatch


def test_detect_and_dispatch(tmp_path, imavatar, vhap):
    folder, _ = imavatar
    root, _ = vhap
    assert detect_capture_format(folder) == "imavatar"
    assert detect_capture_format(root) == "vhap"
    cams = PinholeCameras(FX, FY, CX, CY, W, H, torch.from_numpy(cameras_cv(2, 0, 0.9)).float())
    insta = save_insta_dataset(tmp_path / "insta", {"train": FrameSet("train", cams, torch.zeros(2, H, W, 3, dtype=torch.uint8))})
    assert detect_capture_format(insta) == "insta"
    assert torch.equal(load_tracker_dataset(insta).cameras.camera_to_world, load_insta_dataset(insta).cameras.camera_to_world)
    for path, reader in ((folder, load_imavatar_dataset), (root, load_vhap_dataset)):
        a, b = load_tracker_dataset(path, "test"), reader(path, "test")
        assert torch.equal(a.images, b.images) and torch.equal(a.params.pose, b.params.pose)
    assert load_tracker_dataset(folder, format="imavatar").split == "train"
    with pytest.raises(ValueError, match=r"^format: .*'colmap'"):
        load_tracker_dataset(folder, format="colmap")
    (tmp_path / "empty").mkdir()
    with raises_file(FileNotFoundError, tmp_path / "empty", "no capture found"):
        detect_capture_format(tmp_path / "empty")
    with raises_file(FileNotFoundError, tmp_path / "missing", "capture folder not found"):
        load_tracker_dataset(tmp_path / "missing")
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "transforms_train.json").write_text("[1, 2")
    with raises_file(ValueError, tmp_path / "broken" / "transforms_train.json", "invalid JSON"):
        detect_capture_format(tmp_path / "broken")


def test_bad_arguments_name_the_argument(imavatar, vhap):
    folder, _ = imavatar
    root, _ = vhap
    with raises_naming("split"):
        load_imavatar_dataset(folder, "validation")
    with raises_naming("split"):
        load_vhap_dataset(root, "all")
    with raises_naming("offsets"):
        load_vhap_dataset(root, offsets="error")
    with raises_naming("sequences"):
        load_imavatar_dataset(folder.parent, sequences="MVI_1810")
    with raises_naming("format"):
        load_tracker_dataset(folder, format="colmap")
    with raises_naming("root"):
        detect_capture_format(3)


def test_load_subject_reads_a_vhap_export_with_the_model_folder(vhap, flame_folder):
    """What the example scripts do with ``--data EXPORT --model FLAME``: the detected reader, FLAME loaded with
    the capture's own numbers of directions, the unmatted images set to the background outside the masks."""
    root, truth = vhap
    subject = load_subject(root, flame_folder, background=(0.0, 1.0, 0.0))
    assert subject.parametric.num_shape == NUM_SHAPE and subject.parametric.num_expression == NUM_EXPR
    assert any("dynamic_offset" in note for note in subject.notes)
    assert subject.train.params.static_offset is None  # zeros: nothing to carry, the model as loaded
    train = subject.train
    outside = ~train.masks
    assert outside.any() and (train.images[outside] == torch.tensor([0, 255, 0], dtype=torch.uint8)).all()
    first = truth["images"][0, 0]  # the first training frame: timestep 0, camera 0
    inside = train.masks[0].numpy()
    np.testing.assert_array_equal(train.images[0].numpy()[inside], first[inside])
    head = tracked_head(subject.parametric, train)
    assert head.vertices.shape[0] == len(train) and torch.isfinite(head.vertices).all()


def test_load_subject_loads_both_of_a_vhap_exports_held_out_splits(vhap, flame_folder):
    """VHAP's val (the last camera at the training timesteps: novel views) and test (the later timesteps:
    self-reenactment), both loaded when asked, each with the frames the export lists."""
    root, truth = vhap
    assert held_out_splits(root) == ["val", "test"] and load_subject(root, flame_folder).more_held_out == {}
    subject = load_subject(root, flame_folder, all_held_out=True)
    assert list(subject.held_out) == ["test", "val"]
    for split, frames in subject.held_out.items():
        written = truth["splits"][split]
        assert frames.split == split and len(frames) == len(written)
        assert frames.image_paths == [root / f["file_path"] for f in written]


def test_load_subject_names_the_imavatar_reader(tmp_path):
    (tmp_path / IMAVATAR_JSON).write_text("{}")
    with raises_naming("data") as error:
        load_subject(tmp_path)
    assert "load_imavatar_dataset" in str(error.value)


def _frame_set(split: str, n: int, seed: int, joints: int = 5) -> FrameSet:
    g = torch.Generator().manual_seed(seed)
    cameras = PinholeCameras(FX, FY, CX, CY, W, H, torch.from_numpy(cameras_cv(n, seed, 0.6)).float())
    params = TrackedParams(
        torch.randn(NUM_SHAPE, generator=g) * 0.5,
        torch.randn(n, NUM_EXPR, generator=g),
        torch.randn(n, joints, 3, generator=g) * 0.2,
        torch.randn(n, 3, generator=g) * 0.02,
        static_offset=torch.randn(VHAP_V, 3, generator=g) * 1e-3,
    )
    images = torch.randint(0, 256, (n, H, W, 3), generator=g, dtype=torch.uint8)
    masks = torch.rand(n, H, W, generator=g) > 0.5
    return FrameSet(split, cameras, images, masks=masks, params=params)


def test_vhap_writer_is_read_back_and_projects_as_vhap_renders(tmp_path):
    """What save_vhap_dataset writes: the same frames through our reader, VHAP's rasteriser's pixels (from the
    written JSON alone) where our cameras put the points, and the parameter files VHAP's FlameHead reads."""
    sets = {"train": _frame_set("train", 3, 0), "test": _frame_set("test", 2, 1)}
    root = save_vhap_dataset(tmp_path / "export", sets)
    assert detect_capture_format(root) == "vhap" and held_out_splits(root) == ["test"]  # an empty val, as VHAP's
    points = random_points(3)
    for split, written in sets.items():
        frames = load_vhap_dataset(root, split)
        assert torch.equal(frames.images, written.images) and torch.equal(frames.masks, written.masks)
        p, q = frames.params, written.params
        for key in ("shape", "expression", "pose", "translation", "static_offset"):
            torch.testing.assert_close(getattr(p, key), getattr(q, key))
        torch.testing.assert_close(frames.cameras.camera_to_world, written.cameras.camera_to_world)
        meta = json.loads((root / f"transforms_{split}.json").read_text())
        for k, frame in enumerate(meta["frames"]):
            ours = project_points(written.cameras, torch.from_numpy(points).float(), k).pixels
            torch.testing.assert_close(ours.double(), torch.from_numpy(vhap_pixels(frame, points)), atol=1e-4, rtol=0)
            with np.load(root / frame["flame_param_path"]) as data:
                assert data["eyes_pose"].shape == (1, 6) and data["neck_pose"].shape == (1, 3)
                np.testing.assert_allclose(data["neck_pose"][0], q.pose[k, 1].numpy())
                np.testing.assert_allclose(data["eyes_pose"][0, 3:], q.pose[k, 4].numpy())  # the right eye: VHAP's 2nd
    every = json.loads((root / "transforms.json").read_text())["frames"]
    assert [f["timestep_index"] for f in every] == [0, 1, 2, 3, 4]


def test_vhap_writer_refuses_a_body_model_and_writes_nothing(tmp_path):
    sets = {"train": _frame_set("train", 2, 0, joints=55)}
    with raises_naming("frame_sets"):
        save_vhap_dataset(tmp_path / "export", sets)
    assert not (tmp_path / "export").exists()
