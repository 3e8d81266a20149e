"""Real INSTA captures: the synthetic video written in INSTA's released layout (checked with independent readers:
json, Pillow, numpy, trimesh), read back as a subject of tracked meshes with no model files (any topology), the
rigid head fit and the regions voted from the segmentation against known truth, every model that can training on
it, and each bad capture named by the loader and by ``inspect``."""

from __future__ import annotations

import json
import math
import re
import shutil
import threading
import warnings

import numpy as np
import pytest
import torch
import trimesh
from PIL import Image
from smplx.lbs import batch_rodrigues

from headfields.apps.commands import main
from headfields.data import INSTA_FACE_PARSING, load_insta_dataset, load_subject
from headfields.data._io import read_obj
from headfields.data.inspect import inspect_capture
from headfields.data.tracked_mesh_reader import read_region_file, regions_from_segmentation
from headfields.heads import tracked_head
from headfields.models.hyper_neus import HyperNeusAvatar
from headfields.models.portrait360 import Portrait360
from headfields.parametric import TrackedMeshModel, load_model, rigid_fit
from headfields.parametric.tracked_meshes import cylindrical_uvs, rotation_to_axis_angle
from headfields.synthetic import SyntheticVideoConfig, make_synthetic_video, write_insta_capture

from helpers import raises_naming

INSTA_KEYS = {"fl_x", "fl_y", "cx", "cy", "w", "h", "camera_angle_x", "camera_angle_y", "x_fov", "y_fov", "integer_depth_scale"}
FRAME_KEYS = {"transform_matrix", "file_path", "mesh_path", "exp_path", "depth_path", "seg_mask_path"}


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    """A small synthetic video at 40 px (large enough for the lips to cover pixels), in headfields' layout."""
    config = SyntheticVideoConfig(num_frames=12, num_val=1, num_test=2, resolution=40, episode_frames=3)
    return make_synthetic_video(tmp_path_factory.mktemp("video"), config)


@pytest.fixture(scope="module")
def capture(video, tmp_path_factory):
    """The video in INSTA's layout on FLAME's topology."""
    return write_insta_capture(tmp_path_factory.mktemp("insta") / "capture", source=video)


@pytest.fixture(scope="module")
def remeshed(video, tmp_path_factory):
    """The video in INSTA's layout on a re-meshed head (4x the faces, shuffled vertices), 4 frames a split."""
    return write_insta_capture(tmp_path_factory.mktemp("remeshed") / "capture", source=video, remesh=True, frames=4)


# ---------------------------------------------------------------- the layout, read with independent readers


def test_capture_is_written_as_insta_scripts_write_it(capture, video):
    combined = json.loads((capture / "transforms.json").read_text())
    splits = {s: json.loads((capture / f"transforms_{s}.json").read_text()) for s in ("train", "val", "test")}
    for meta in (combined, *splits.values()):
        assert set(meta) == INSTA_KEYS | {"frames"}  # none of headfields' own keys (model, labels, params)
        assert all(isinstance(meta[k], float) for k in INSTA_KEYS)  # transforms.py writes every value as a float
        assert meta["integer_depth_scale"] == 1e-3 and meta["x_fov"] == pytest.approx(math.degrees(meta["camera_angle_x"]))
        assert all(set(f) == FRAME_KEYS for f in meta["frames"])
    assert [f["file_path"] for f in combined["frames"]] == [f["file_path"] for s in splits.values() for f in s["frames"]]

    frame = combined["frames"][0]
    image = Image.open(capture / frame["file_path"])
    seg = Image.open(capture / frame["seg_mask_path"])
    depth = Image.open(capture / frame["depth_path"])
    assert image.mode == "RGBA" and seg.mode == "RGB" and depth.mode.startswith("I;16")
    seg = np.asarray(seg)
    assert (seg[..., 1:] == 0).all() and set(np.unique(seg[..., 0])) <= {0, *INSTA_FACE_PARSING.values()}
    assert {130, 120, 250} <= set(np.unique(seg[..., 0]))  # both lips and the skin are there, each its own code
    source = load_insta_dataset(video, "train")
    metres = np.asarray(depth).astype(np.float64) * 1e-3
    np.testing.assert_allclose(metres, source.depths[0].numpy(), atol=5e-4 + 1e-6, rtol=2**-11)  # mm steps, float16
    np.testing.assert_allclose(np.loadtxt(capture / frame["exp_path"]), source.expression[0].numpy(), atol=1e-6)
    mesh = trimesh.load(capture / frame["mesh_path"], process=False)
    np.testing.assert_allclose(mesh.vertices, source.mesh_vertices[0].numpy(), atol=1e-6)
    canonical = trimesh.load(capture / "canonical.obj", process=False)
    # trimesh splits vertices along UV seams: the faces and the UVs tell the topology and the texture map.
    assert canonical.faces.shape == mesh.faces.shape and canonical.visual.uv is not None


def test_capture_reads_back_the_same_images_and_cameras(capture, video):
    source, read = load_insta_dataset(video, "test"), load_insta_dataset(capture, "test", background=(1.0, 1.0, 1.0))
    assert read.segmentation_labels == INSTA_FACE_PARSING  # detected from the codes
    assert torch.equal(read.images, source.images)  # the alpha covers the anti-aliased rim: compositing is exact
    assert torch.allclose(read.cameras.camera_to_world, source.cameras.camera_to_world)
    assert (read.masks >= source.masks).all()
    lips = torch.isin(read.segmentation, torch.tensor([120, 130]))
    assert torch.equal(lips, source.segmentation == source.segmentation_labels["lips"])


def test_loading_meshes_leaves_the_warning_filters_to_the_caller(capture, monkeypatch):
    """The meshes are parsed on a side thread: a ``warnings.catch_warnings`` there would swap the process's filters
    under the caller's thread (Python's context is not thread-safe), and a caller's ``pytest.warns`` could miss a
    warning. None is entered off the caller's thread, and a warning said after the load is still caught."""
    entered = []
    plain = warnings.catch_warnings

    def spy(*args, **kwargs):
        entered.append(threading.current_thread().name)
        return plain(*args, **kwargs)

    monkeypatch.setattr(warnings, "catch_warnings", spy)
    with pytest.warns(UserWarning, match="after the load"):
        frames = load_insta_dataset(capture, "test", cache=False)
        warnings.warn("after the load", UserWarning, stacklevel=1)
    assert frames.mesh_vertices is not None
    assert [name for name in entered if name != threading.main_thread().name] == []


def test_rgba_images_are_composited_over_the_background(tmp_path):
    rgba = np.zeros((2, 2, 4), np.uint8)
    rgba[..., :3] = (200, 100, 0)
    rgba[..., 3] = [[255, 128], [0, 51]]
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    meta = {"fl_x": 2.0, "frames": [{"file_path": "a.png", "transform_matrix": np.eye(4).tolist()}]}
    (tmp_path / "transforms_train.json").write_text(json.dumps(meta))
    bg = (0.0, 0.5, 1.0)
    images = load_insta_dataset(tmp_path, background=bg).images[0].double()
    for (r, c), a in {(0, 0): 1.0, (0, 1): 128 / 255, (1, 0): 0.0, (1, 1): 51 / 255}.items():
        expected = torch.tensor([200.0, 100.0, 0.0]) * a + torch.tensor(bg, dtype=torch.float64) * 255 * (1 - a)
        assert torch.allclose(images[r, c], expected, atol=1.0)  # integer compositing: within one level
    assert torch.equal(load_insta_dataset(tmp_path).images[0], torch.from_numpy(rgba[..., :3]))  # no background: as is
    meta["composited_over"] = list(bg)  # headfields' key: already composited over this colour, so left alone
    (tmp_path / "transforms_train.json").write_text(json.dumps(meta))
    assert torch.equal(load_insta_dataset(tmp_path, background=bg).images[0], torch.from_numpy(rgba[..., :3]))
    # Over another colour: the old colour's share (1 - alpha) swapped for the new one's.
    white = load_insta_dataset(tmp_path, background=(1.0, 1.0, 1.0)).images[0].double()
    for (r, c), a in {(0, 0): 1.0, (0, 1): 128 / 255, (1, 0): 0.0, (1, 1): 51 / 255}.items():
        old = torch.tensor(rgba[r, c, :3], dtype=torch.float64)
        expected = old + (255 - torch.tensor(bg, dtype=torch.float64) * 255) * (1 - a)
        assert torch.allclose(white[r, c], expected.clamp(0, 255), atol=1.0)


# ---------------------------------------------------------------- the tracked-mesh subject


def test_rigid_fit_recovers_the_head_motion_despite_an_open_jaw():
    g = torch.Generator().manual_seed(0)
    canonical = torch.randn(400, 3, generator=g, dtype=torch.float64) * 0.1
    rotation = batch_rodrigues(torch.tensor([[0.3, -0.5, 0.2], [-0.1, 0.0, 0.4]], dtype=torch.float64))
    translation = torch.tensor([[0.01, -0.02, 0.5], [0.0, 0.1, -0.3]], dtype=torch.float64)
    moved = torch.einsum("bij,vj->bvi", rotation, canonical) + translation[:, None]
    moved[:, :60] += torch.tensor([0.0, -0.03, 0.01], dtype=torch.float64)  # 15% of the vertices move (a jaw)
    fit = rigid_fit(canonical, moved)
    assert torch.allclose(fit[:, :3, :3], rotation, atol=1e-9) and torch.allclose(fit[:, :3, 3], translation, atol=1e-9)


def test_neutral_head_moves_with_translation_and_names_a_batch_mismatch():
    mesh = trimesh.creation.icosphere(subdivisions=1)
    model = TrackedMeshModel(torch.tensor(mesh.vertices, dtype=torch.float32), torch.tensor(mesh.faces), 4)
    shift = torch.tensor([[0.1, -0.2, 0.3], [0.0, 0.0, 1.0]])
    head = model(translation=shift)
    assert torch.allclose(head.vertices, model.v_template + shift[:, None])
    assert torch.allclose(head.rest_vertices, model.v_template.expand(2, -1, -1), atol=1e-6)
    with raises_naming("expression"):
        model(translation=shift, expression=torch.zeros(3, 4))
    with raises_naming("regions"):
        TrackedMeshModel(model.v_template, model.faces, 4, {"lips.v2": torch.tensor([0, 1])})


def test_axis_angle_of_rotation_matrices_against_rodrigues():
    g = torch.Generator().manual_seed(1)
    axis = torch.nn.functional.normalize(torch.randn(500, 3, generator=g, dtype=torch.float64), dim=1)
    angle = torch.rand(500, 1, generator=g, dtype=torch.float64) * (math.pi - 1e-3)
    angle[:3] = torch.tensor([[0.0], [1e-7], [math.pi - 1e-6]], dtype=torch.float64)
    vectors = axis * angle
    got = rotation_to_axis_angle(batch_rodrigues(vectors))
    assert torch.allclose(batch_rodrigues(got), batch_rodrigues(vectors), atol=1e-9)
    assert torch.allclose(got[:-1], vectors[:-1], atol=1e-7)  # unique below pi


def test_cylindrical_uvs_keep_every_face_whole():
    mesh = trimesh.creation.icosphere(subdivisions=3)
    vertices, faces = torch.tensor(mesh.vertices, dtype=torch.float32), torch.tensor(mesh.faces)
    uvs, uv_faces = cylindrical_uvs(vertices, faces)
    corners = uvs[uv_faces]  # [F, 3, 2]
    assert uvs.min() >= 0 and uvs.max() <= 1
    span = corners[..., 0].amax(1) - corners[..., 0].amin(1)
    away_from_poles = vertices[faces, 1].abs().amax(1) < 0.9  # at a pole the angle is any: those faces fan out
    assert span[away_from_poles].max() < 0.1  # no face stretched across the back seam


def test_tracked_head_is_the_meshes_with_the_rigid_motion_undone(remeshed):
    subject = load_subject(remeshed)
    model, frames = subject.parametric, subject.train
    assert isinstance(model, TrackedMeshModel) and model.num_vertices == frames.mesh_vertices.shape[1]
    head = tracked_head(model, frames)
    assert torch.equal(head.vertices, frames.mesh_vertices)
    assert torch.allclose(head.pose_points(head.rest_vertices[1], 1), head.vertices[1], atol=1e-5)  # skinning
    neck = model.joint_index("neck")
    in_head = head.to_joint_frame(neck, torch.arange(len(frames)), head.vertices)
    assert torch.allclose(in_head, head.rest_vertices, atol=1e-5)
    assert frames.params is None  # INSTA's layout holds no parameters
    assert any(n.startswith("UVs:") for n in subject.notes)  # canonical.obj of the re-meshed head has none


def test_regions_voted_from_the_segmentation_match_the_models_regions(video):
    """Truth: the synthetic FLAME's own regions; the vote sees only images, cameras and meshes."""
    frames = load_insta_dataset(video, "train")
    model = load_model(frames.model_path, frames.model_type)
    vote = regions_from_segmentation(frames)
    regions = model.regions
    agree, seen = 0, 0
    for name, code in frames.segmentation_labels.items():
        inside = torch.zeros(model.num_vertices, dtype=torch.bool)
        inside[regions[name]] = True
        truth = inside[frames.mesh_faces].all(dim=1)
        voted = truth & (vote.label >= 0)
        agree += int((vote.label[voted] == code).sum())
        seen += int(voted.sum())
    assert seen > 2000 and agree / seen > 0.9
    assert ((vote.label == frames.segmentation_labels["lips"]).sum()) > 20


def test_region_files_json_and_one_obj_per_region(capture, tmp_path):
    vertices, faces = (torch.from_numpy(x) for x in read_obj(capture / "canonical.obj"))
    ids = [3, 10, 11, 500]
    (tmp_path / "regions.json").write_text(json.dumps({"lips": ids}))
    masks = read_region_file(tmp_path / "regions.json", vertices, faces)
    assert masks["lips"].nonzero().flatten().tolist() == ids
    folder = tmp_path / "mesh_masks"
    folder.mkdir()
    # The region's own OBJ: its faces over a vertex list of its own (only the vertices it uses, reordered).
    used = faces[ids].unique().flip(0)
    local = {int(v): i for i, v in enumerate(used)}
    trimesh.Trimesh(vertices[used].numpy(), [[local[int(v)] for v in f] for f in faces[ids]], process=False).export(
        folder / "lips.obj"
    )
    assert read_region_file(folder, vertices, faces)["lips"].nonzero().flatten().tolist() == ids
    # Written with 6 decimals, as Blender and MeshLab write OBJs: matched within a tolerance.
    lines = [f"v {x:.6f} {y:.6f} {z:.6f}" for x, y, z in vertices[used].tolist()]
    lines += [f"f {' '.join(str(local[int(v)] + 1) for v in f)}" for f in faces[ids]]
    (folder / "lips.obj").write_text("\n".join(lines) + "\n")
    assert read_region_file(folder, vertices, faces)["lips"].nonzero().flatten().tolist() == ids
    trimesh.Trimesh(vertices[:3].numpy() + 1.0, [[0, 1, 2]], process=False).export(folder / "hair.obj")
    with raises_naming(str(folder / "hair.obj")):
        read_region_file(folder, vertices, faces)
    (tmp_path / "bad.json").write_text(json.dumps({"lips": [len(faces)]}))
    with raises_naming(str(tmp_path / "bad.json")):
        read_region_file(tmp_path / "bad.json", vertices, faces)


def test_region_file_in_the_capture_replaces_the_vote(capture, tmp_path):
    copy = shutil.copytree(capture, tmp_path / "capture")
    (copy / "regions.json").write_text(json.dumps({"upper_lip": [0, 1, 2]}))
    subject = load_subject(copy)
    assert set(subject.parametric.regions) == {"upper_lip"} and any("regions.json" in n for n in subject.notes)


def test_models_without_a_skeleton_name_what_is_missing(remeshed):
    subject = load_subject(remeshed)
    with raises_naming("parametric") as error:
        Portrait360(subject.parametric)
    assert "SMPL-X's skeleton" in str(error.value) and "params_path" in str(error.value)
    with raises_naming("parametric") as error:
        HyperNeusAvatar(subject.parametric, len(subject.train))
    assert "jaw joint" in str(error.value)


@pytest.mark.unchecked
@pytest.mark.parametrize("model", ["insta", "monoavatar", "mix_triangle_neus"])
def test_the_train_command_trains_on_a_remeshed_capture_with_no_model(remeshed, tmp_path, capsys, model):
    """``python -m headfields train MODEL --data CAPTURE`` with no ``--model``, on meshes of a topology never
    shipped, writes metrics and renders: every model that can (Portrait360 and HyperNeuS need what such a capture
    lacks: test above)."""

    argv = ["train", model, "--data", str(remeshed), "--out", str(tmp_path), "--iterations", "2", "--rays", "128"]
    assert main([*argv, "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "regions (the segmentation" in out and "cylindrical projection" in out
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["iterations"] == 2 and 5 < metrics["psnr"] < 60
    assert list((tmp_path / "renders").rglob("*.png"))


# ---------------------------------------------------------------- bad captures


def _frame_file(root, key, k=1):
    return root / json.loads((root / "transforms_train.json").read_text())["frames"][k][key]


def _corrupt_vertex_count(root):
    path = _frame_file(root, "mesh_path")
    path.write_text(path.read_text().replace("f ", "v 0 0 0\nf ", 1))
    return path


def _corrupt_matrix(root):
    meta = json.loads((root / "transforms_train.json").read_text())
    meta["frames"][1]["transform_matrix"][0][0] = float("nan")
    (root / "transforms_train.json").write_text(json.dumps(meta))  # Python's json writes NaN
    return root / "transforms_train.json"


def _corrupt_labels(root):
    path = _frame_file(root, "seg_mask_path")
    seg = np.asarray(Image.open(path)).copy()
    seg[0, 0, 0] = 33  # no face parser writes 33
    Image.fromarray(seg).save(path)
    return path


def _corrupt_depth(root):
    path = _frame_file(root, "depth_path")
    Image.fromarray(np.zeros((4, 4), np.uint8)).convert("L").save(path)
    return path


def _missing_canonical(root):
    (root / "canonical.obj").unlink()
    return root / "canonical.obj"


def _missing_image(root):
    path = _frame_file(root, "file_path")
    path.unlink()
    return path


def _frame_counts_disagree(root):
    meta = json.loads((root / "transforms.json").read_text())
    meta["frames"] = meta["frames"][:-1]  # transforms.json lost the last test frame
    (root / "transforms.json").write_text(json.dumps(meta))
    return root / "transforms.json"


def _canonical_topology(root):
    path = root / "canonical.obj"
    path.write_text(path.read_text() + "v 0 0 0\n")
    return path


CORRUPTIONS = [
    _corrupt_vertex_count,
    _corrupt_matrix,
    _corrupt_labels,
    _corrupt_depth,
    _missing_canonical,
    _missing_image,
    _frame_counts_disagree,
    _canonical_topology,
]


@pytest.mark.parametrize("corrupt", CORRUPTIONS, ids=lambda f: f.__name__.strip("_"))
def test_bad_capture_is_named_by_the_loader_and_by_inspect(capture, tmp_path, corrupt):
    root = shutil.copytree(capture, tmp_path / "capture")
    path = corrupt(root)
    report = inspect_capture(root)
    assert report.problems and str(path) in report.problems[0], report.problems
    if corrupt is not _frame_counts_disagree:  # not the loader's concern: it reads the split files only
        with pytest.raises((OSError, ValueError), match=re.escape(str(path))):
            load_subject(root)


def test_inspect_prints_the_summary(capture, capsys, tmp_path):
    assert main(["inspect", str(capture)]) == 0
    out = capsys.readouterr().out
    assert "frames: train 9, val 1, test 2" in out and "40 x 40 px" in out
    assert "250 skin" in out and "130 upper_lip" in out and "120 lower_lip" in out
    assert "tracked meshes: 5557 vertices" in out and "no problems found" in out
    assert "insta                  yes" in out and "hyper_neus             no: parametric" in out
    # A capture with a problem: the report names it and the command's status is 1, without a traceback.
    assert main(["inspect", str(tmp_path / "nowhere")]) == 1
    assert "problem: " in capsys.readouterr().out
