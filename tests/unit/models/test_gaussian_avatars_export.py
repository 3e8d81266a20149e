"""Issue 80: a Gaussian avatar exported in GaussianAvatars' own layout (``point_cloud.ply`` with local values and
``binding_0``, ``flame_param.npz`` beside it) re-poses, by GaussianAvatars' formulas written out here from its code,
to our posed Gaussians within 1e-5. The files are read as its ``load_ply`` reads them (properties by name, the npz's
keys indexed as ``select_mesh_by_timestep`` indexes them), the FLAME mesh rebuilt from the npz as its ``FlameHead``
builds it (smplx's skinning primitives, of which its ``lbs`` is a copy); a round trip through
``read_bound_splat_ply``; bad input named, nothing written."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch
from smplx.lbs import batch_rigid_transform, batch_rodrigues, vertices2joints

from headfields.data.splat_ply import BINDING, read_bound_splat_ply, read_splat_ply
from headfields.deformers import GaussianSet
from headfields.models.gaussian_avatars import GaussianAvatar, cpu_config
from headfields.models.gaussian_avatars.export import (
    FLAME_PARAM,
    POINT_CLOUD,
    TEETH_VERTICES,
    export_gaussian_avatars,
    flame_param_arrays,
)
from headfields.parametric import TrackedMeshModel, load_model

from helpers import raises_naming
from model_files import flame_arrays, random_parameters, write_flame

FRAMES = 3
SH_DEGREE = 3  # the viewer's default --sh_degree: its load_ply asserts 45 f_rest properties
# scene/gaussian_model.py construct_list_of_attributes, with binding_0 last.
GA_ORDER = ["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2", *[f"f_rest_{i}" for i in range(45)]]
GA_ORDER += ["opacity", "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3", BINDING]
# FlameGaussianModel.load_meshes' flame_param, T timesteps, V vertices (FLAME's and the teeth's).
GA_SHAPES = {
    "shape": ("300",),
    "expr": ("T", "100"),
    "rotation": ("T", "3"),
    "neck_pose": ("T", "3"),
    "jaw_pose": ("T", "3"),
    "eyes_pose": ("T", "6"),
    "translation": ("T", "3"),
    "static_offset": ("1", "V", "3"),
    "dynamic_offset": ("T", "V", "3"),
}


@pytest.fixture(scope="module")
def avatar(tmp_path_factory):
    """A float64 FLAME model with fewer directions than GaussianAvatars' 300 + 100, a head of it on FRAMES random
    frames, and a Gaussian avatar on it with random trained-looking values, several Gaussians a face."""
    folder = write_flame(tmp_path_factory.mktemp("flame"))
    parametric = load_model(folder, num_shape=40, num_expression=30, dtype=torch.float64)
    shape, expression, pose, translation = random_parameters(parametric, 3, FRAMES, 0.5, torch.float64)
    head = parametric(shape=shape, expression=expression, pose=pose, translation=translation)
    model = GaussianAvatar(parametric, cpu_config(sh_degree=SH_DEGREE))
    g = torch.Generator().manual_seed(0)
    faces = parametric.faces.shape[0]
    n = 3 * faces

    def randn(*size):
        return torch.randn(*size, generator=g, dtype=torch.float64)

    parent = torch.randint(0, faces, (n,), generator=g)
    model.gaussians = GaussianSet(
        parent, randn(n, 3) * 0.5, randn(n, 4), randn(n, 3) * 0.3 - 1, randn(n) * 3, randn(n, 1, 3), randn(n, 15, 3), faces
    )
    model.active_sh_degree.fill_(SH_DEGREE)
    return flame_arrays(), parametric, head, model


def read_ga_ply(path):
    """scene/gaussian_model.py load_ply: the header's properties, each read by name (f_rest_*, scale_*, rot* and
    binding* sorted by their index), as float32 like its tensors."""
    data = path.read_bytes()
    header, _, body = data.partition(b"end_header\n")
    lines = header.decode("ascii").splitlines()
    assert lines[:3] == ["ply", "format binary_little_endian 1.0", f"element vertex {lines[2].split()[-1]}"]  # SIBR
    names = [line.split()[2] for line in lines if line.startswith("property ")]
    assert all(line.split()[1] == "float" for line in lines if line.startswith("property "))  # every one 'f4'
    rows = np.frombuffer(body, dtype=[(name, "<f4") for name in names], count=int(lines[2].split()[-1]))

    def stacked(prefix):
        found = sorted((name for name in names if name.startswith(prefix)), key=lambda name: int(name.split("_")[-1]))
        return torch.from_numpy(np.stack([rows[name] for name in found], axis=1).astype(np.float64))

    p = len(rows)
    return names, {
        "xyz": torch.from_numpy(np.stack([rows[axis] for axis in "xyz"], 1).astype(np.float64)),
        "opacity": torch.from_numpy(rows["opacity"].astype(np.float64))[:, None],
        "features_dc": stacked("f_dc_").reshape(p, 3, 1).transpose(1, 2),
        "features_rest": stacked("f_rest_").reshape(p, 3, -1).transpose(1, 2),
        "scaling": stacked("scale_"),
        "rotation": stacked("rot"),
        "binding": stacked("binding").long().squeeze(-1),
    }


def ga_flame_vertices(arrays, flame_param, timestep):
    """flame_model/flame.py FlameHead.forward at ``timestep`` (select_mesh_by_timestep's indexing) on FLAME's own
    vertices: the teeth come after them and move none of them (zero J_regressor columns, per-vertex skinning)."""
    v = len(arrays["v_template"])
    f64 = {k: torch.from_numpy(np.asarray(a, dtype=np.float64)) for k, a in flame_param.items()}
    shapedirs = torch.from_numpy(np.concatenate([arrays["shapedirs"][:, :, :300], arrays["shapedirs"][:, :, 300:400]], 2))
    betas = torch.cat([f64["shape"][None], f64["expr"][[timestep]]], dim=1)
    v_shaped = torch.from_numpy(arrays["v_template"])[None] + torch.einsum("bl,mkl->bmk", betas, shapedirs)
    v_shaped = v_shaped + f64["static_offset"][:, :v]
    full_pose = torch.cat([f64[k][[timestep]] for k in ("rotation", "neck_pose", "jaw_pose", "eyes_pose")], dim=1)
    # flame_model/lbs.py lbs
    posedirs = torch.from_numpy(arrays["posedirs"].reshape(-1, 36).T.copy())
    regressor, weights = torch.from_numpy(arrays["J_regressor"]), torch.from_numpy(arrays["weights"])
    parents = torch.tensor(arrays["kintree_table"][0].astype(np.int64))
    parents[0] = -1
    joints = vertices2joints(regressor, v_shaped)
    rot_mats = batch_rodrigues(full_pose.view(-1, 3)).view(1, -1, 3, 3)
    pose_feature = (rot_mats[:, 1:] - torch.eye(3, dtype=torch.float64)).view(1, -1)
    v_posed = v_shaped + (pose_feature @ posedirs).view(1, -1, 3)
    _, a = batch_rigid_transform(rot_mats, joints, parents, dtype=torch.float64)
    t = torch.matmul(weights[None], a.view(1, 5, 16)).view(1, -1, 4, 4)
    homogeneous = torch.cat([v_posed, torch.ones_like(v_posed[..., :1])], dim=2)
    vertices = torch.matmul(t, homogeneous[..., None])[:, :, :3, 0]
    return vertices[0] + f64["translation"][timestep]


def ga_build_rotation(r):
    """utils/general_utils.py build_rotation: (w, x, y, z), normalised, to a matrix."""
    q = r / r.norm(dim=1, keepdim=True)
    w, x, y, z = q.unbind(1)
    rows = [
        1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
        2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
        2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
    ]  # fmt: skip
    return torch.stack(rows, 1).reshape(-1, 3, 3)


def ga_world(verts, faces, ply):
    """update_mesh_properties (compute_face_orientation with safe_normalize, length, dot) and get_xyz, get_scaling,
    get_rotation (a rotation matrix here: face_orien_mat times the normalised local rotation's)."""

    def length(x):
        return torch.sqrt(torch.clamp((x * x).sum(-1, keepdim=True), min=1e-20))

    def safe_normalize(x):
        return x / length(x)

    v0, v1, v2 = verts[faces[:, 0]], verts[faces[:, 1]], verts[faces[:, 2]]
    face_center = verts[faces].mean(dim=-2)
    a0 = safe_normalize(v1 - v0)
    a1 = safe_normalize(torch.linalg.cross(a0, v2 - v0, dim=-1))
    a2 = -safe_normalize(torch.linalg.cross(a1, a0, dim=-1))
    orientation = torch.cat([a0[..., None], a1[..., None], a2[..., None]], dim=-1)
    face_scaling = (length(v1 - v0) + (a2 * (v2 - v0)).sum(-1, keepdim=True).abs()) / 2
    b = ply["binding"]
    xyz = torch.bmm(orientation[b], ply["xyz"][..., None]).squeeze(-1) * face_scaling[b] + face_center[b]
    scaling = torch.exp(ply["scaling"]) * face_scaling[b]
    rotation = orientation[b] @ ga_build_rotation(ply["rotation"])
    return xyz, scaling, rotation, torch.sigmoid(ply["opacity"][:, 0])


def test_the_export_re_poses_by_gaussian_avatars_formulas_to_our_gaussians(avatar, tmp_path):
    arrays, parametric, head, model = avatar
    ply_path = export_gaussian_avatars(tmp_path / "ga", model, head, iteration=600)
    folder = tmp_path / "ga" / "point_cloud" / "iteration_600"
    assert ply_path == folder / POINT_CLOUD and (folder / FLAME_PARAM).is_file()  # load_ply: the npz beside the PLY
    names, ply = read_ga_ply(ply_path)
    assert names == GA_ORDER
    torch.testing.assert_close(ply["binding"], model.gaussians.parent, rtol=0, atol=0)

    flame_param = dict(np.load(folder / FLAME_PARAM))  # load_ply(has_target=False)
    v = parametric.num_vertices + TEETH_VERTICES
    sizes = {"T": FRAMES, "V": v, "1": 1, "3": 3, "6": 6, "100": 100, "300": 300}
    assert list(flame_param) == list(GA_SHAPES)
    for key, dims in GA_SHAPES.items():
        assert flame_param[key].shape == tuple(sizes[d] for d in dims), key
        assert flame_param[key].dtype == np.float32, key  # the motion loader keeps float32 arrays only
    assert not flame_param["static_offset"].any() and not flame_param["dynamic_offset"].any()
    faces = torch.from_numpy(arrays["f"].astype(np.int64))
    for t in range(FRAMES):  # num_timesteps = expr.shape[0]
        verts = ga_flame_vertices(arrays, flame_param, t)
        torch.testing.assert_close(verts, head.vertices[t], atol=1e-5, rtol=0)
        xyz, scaling, rotation, opacity = ga_world(verts, faces, ply)
        ours = model.posed(head, t)
        assert ours.means.dtype == torch.float64
        torch.testing.assert_close(xyz, ours.means, atol=1e-5, rtol=0)
        torch.testing.assert_close(scaling, ours.scales, atol=1e-5, rtol=0)
        torch.testing.assert_close(rotation, ga_build_rotation(ours.quats), atol=1e-5, rtol=0)
        torch.testing.assert_close(opacity, ours.opacities, atol=1e-5, rtol=0)
        sh = torch.cat([ply["features_dc"], ply["features_rest"]], dim=1)
        torch.testing.assert_close(sh, ours.sh, atol=1e-5, rtol=0)
        world = model.splats(head, t)  # the per-frame world-space PLY's values
        torch.testing.assert_close(xyz, world.means, atol=1e-5, rtol=0)


def test_a_models_static_offsets_are_written_and_re_pose(avatar):
    """A VHAP subject's model carries the tracker's static offsets: the npz holds them on FLAME's rows (zeros on the
    teeth's), and GaussianAvatars' FlameHead re-poses them to our vertices."""
    arrays, parametric, head, _ = avatar
    offset = torch.randn(parametric.num_vertices, 3, generator=torch.Generator().manual_seed(4), dtype=torch.float64) * 5e-3
    model = parametric.with_static_offset(offset)
    moved = model(shape=head.shape, expression=head.expression, pose=head.pose, translation=head.translation)
    flame_param = flame_param_arrays(model, moved)
    v = parametric.num_vertices
    np.testing.assert_array_equal(flame_param["static_offset"][0, :v], offset.numpy().astype(np.float32))
    assert not flame_param["static_offset"][0, v:].any() and flame_param["static_offset"].shape == (1, v + TEETH_VERTICES, 3)
    for t in range(FRAMES):
        torch.testing.assert_close(ga_flame_vertices(arrays, flame_param, t), moved.vertices[t], atol=1e-5, rtol=0)
    assert (moved.vertices - head.vertices).abs().max() > 1e-3


def test_the_bound_ply_reads_back_as_the_local_values(avatar, tmp_path):
    _, _, head, model = avatar
    gaussians = model.gaussians
    path = export_gaussian_avatars(tmp_path, model, head)
    assert path == tmp_path / "point_cloud" / "iteration_0" / POINT_CLOUD
    local, binding = read_bound_splat_ply(path)
    assert torch.equal(binding, gaussians.parent)
    with torch.no_grad():
        torch.testing.assert_close(local.means, gaussians.local_means.float())
        unit = torch.nn.functional.normalize(gaussians.local_quats, dim=-1).float()
        torch.testing.assert_close(local.quats, unit)
        torch.testing.assert_close(local.scales, gaussians.local_log_scales.exp().float())
        torch.testing.assert_close(local.opacities, torch.sigmoid(gaussians.opacity_logits).float())
        torch.testing.assert_close(local.sh, torch.cat([gaussians.sh_dc, gaussians.sh_rest], 1).float())
    with pytest.raises(ValueError, match="carries a binding"):  # local values, never taken as world ones
        read_splat_ply(path)


def test_sh_bands_above_the_reached_degree_are_written_as_zeros(avatar, tmp_path):
    # Our render draws the bands reached so far; GaussianAvatars' viewer draws every band of the file.
    _, _, head, model = avatar
    model.active_sh_degree.fill_(1)
    try:
        local, _ = read_bound_splat_ply(export_gaussian_avatars(tmp_path, model, head))
    finally:
        model.active_sh_degree.fill_(SH_DEGREE)
    assert not local.sh[:, 4:].any() and bool(local.sh[:, 1:4].ne(0).all())


def test_the_npz_pads_our_directions_and_orders_the_eyes(avatar):
    _, parametric, head, _ = avatar
    arrays = flame_param_arrays(parametric, head)
    torch.testing.assert_close(torch.from_numpy(arrays["shape"][:40]), head.shape.float())
    assert not arrays["shape"][40:].any() and not arrays["expr"][:, 30:].any()
    torch.testing.assert_close(torch.from_numpy(arrays["eyes_pose"]), head.pose[:, 3:5].reshape(FRAMES, 6).float())
    torch.testing.assert_close(torch.from_numpy(arrays["jaw_pose"]), head.pose[:, 2].float())


def test_bad_input_is_named_and_nothing_is_written(avatar, tmp_path):
    _, parametric, head, model = avatar
    out = tmp_path / "out"
    moved = dataclasses.replace(head, vertices=head.vertices + 1e-3)  # not the mesh of its parameters
    with pytest.raises(ValueError, match=r"^head: its vertices lie up to 0\.001 from the FLAME model's"):
        export_gaussian_avatars(out, model, moved)
    with raises_naming("head"):
        export_gaussian_avatars(out, model, dataclasses.replace(head, faces=head.faces[:, [0, 2, 1]]))
    with pytest.raises(ValueError, match=r"^head: its parameters do not fit the FLAME model \(expression: expected"):
        export_gaussian_avatars(out, model, dataclasses.replace(head, expression=head.expression[:, :10]))
    with raises_naming("head"):
        export_gaussian_avatars(out, model, "frames")
    tracked = TrackedMeshModel(parametric.v_template.float(), parametric.faces, 0)
    with pytest.raises(ValueError, match=r"^parametric: .*expected a FLAME model, got tracked meshes"):
        flame_param_arrays(tracked, tracked())
    with raises_naming("model"):
        export_gaussian_avatars(out, torch.nn.Linear(1, 1), head)
    with raises_naming("iteration"):
        export_gaussian_avatars(out, model, head, iteration=-1)
    for timesteps in ([0], [0, -1, 2], [0, 1, True]):  # one integer >= 0 a frame
        with raises_naming("timesteps"):
            export_gaussian_avatars(out, model, head, timesteps=timesteps)
    with raises_naming("out"):
        export_gaussian_avatars(None, model, head)
    assert not out.exists()


# --- issue 96: the layout written whole, one iteration; flame_param rows by the capture's timesteps ---------------


def _layout(out) -> dict[str, bytes]:
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


def test_an_export_over_an_earlier_layout_leaves_its_own_iteration_and_the_users_files(avatar, tmp_path):
    # GaussianAvatars' searchForMaxIteration loads the highest iteration_*: an earlier, higher one must go.
    _, _, head, model = avatar
    out = tmp_path / "ga"
    export_gaussian_avatars(out, model, head, iteration=900)
    (out / "cfg_args").write_text("the user's")
    (out / "point_cloud" / "notes.txt").write_text("the user's")
    (out / "point_cloud" / "iteration_best").mkdir()  # not Scene.save's name: not the export's to remove
    export_gaussian_avatars(out, model, head, iteration=600)
    assert sorted(p.name for p in out.iterdir()) == ["cfg_args", "point_cloud"]  # no temporary, no lock
    assert sorted(p.name for p in (out / "point_cloud").iterdir()) == ["iteration_600", "iteration_best", "notes.txt"]
    assert sorted(p.name for p in (out / "point_cloud" / "iteration_600").iterdir()) == [FLAME_PARAM, POINT_CLOUD]


def test_a_failed_or_killed_export_leaves_the_previous_layout_and_a_second_writer_is_refused(avatar, tmp_path, monkeypatch):
    from headfields.models.gaussian_avatars import export as gaussian_avatars_export
    from headfields.outputs import OutputBusyError, hold

    _, _, head, model = avatar
    out = tmp_path / "ga"
    export_gaussian_avatars(out, model, head, iteration=900)
    before = _layout(out)

    def full_disk(path, arrays):
        raise OSError(28, "No space left on device")

    with monkeypatch.context() as patch:
        patch.setattr(gaussian_avatars_export, "_write_npz", full_disk)  # the PLY written, then the npz fails
        with pytest.raises(OSError, match=rf"out: could not write {out / 'point_cloud' / 'iteration_600'}"):
            export_gaussian_avatars(out, model, head, iteration=600)
    assert _layout(out) == before and sorted(p.name for p in out.iterdir()) == ["point_cloud"]
    with hold(out / "point_cloud"), pytest.raises(OutputBusyError, match=r"^out: .*point_cloud is being written"):
        export_gaussian_avatars(out, model, head, iteration=600)
    assert _layout(out) == before
    # A killed writer leaves its hidden folder (in out, where GaussianAvatars lists nothing): the next export sweeps it.
    (out / ".iteration_600.4242.0badcafe.tmpdir").mkdir()
    export_gaussian_avatars(out, model, head, iteration=600)
    assert sorted(p.name for p in out.iterdir()) == ["point_cloud"]
    assert sorted(p.name for p in (out / "point_cloud").iterdir()) == ["iteration_600"]


@pytest.fixture(scope="module")
def vhap_run(tiny_video, tmp_path_factory):
    """A Gaussian avatar's run (built, not trained) on the tiny video written as a VHAP capture of train (5 frames),
    val (1) and test (2), its timestep_index renumbered backwards (7 - the writer's) and the val frame a novel view of
    training frame 1 (its timestep, its tracking), as VHAP numbers a rig's cameras; the training timesteps' FLAME
    values fine-tuned away from the tracking."""
    from headfields.apps.runs import Run, RunConfig, SubjectSource
    from headfields.data import SPLITS, load_insta_dataset, save_vhap_dataset
    from headfields.heads import tracked_head
    from headfields.models.registry import build_model
    from headfields.training import TrainingConfig

    capture = tmp_path_factory.mktemp("vhap")
    train, test = tiny_video
    save_vhap_dataset(capture, {"train": train, "val": load_insta_dataset(train.root, "val"), "test": test})
    listed = {split: json.loads((capture / f"transforms_{split}.json").read_text()) for split in SPLITS}
    for split in SPLITS:
        for frame in listed[split]["frames"]:
            frame["timestep_index"] = 7 - frame["timestep_index"]
    seen = listed["train"]["frames"][1]
    listed["val"]["frames"][0].update(timestep_index=seen["timestep_index"], flame_param_path=seen["flame_param_path"])
    for split in SPLITS:
        (capture / f"transforms_{split}.json").write_text(json.dumps(listed[split]))
    source = SubjectSource(data=str(capture), model=str(tiny_video[0].model_path))
    config = RunConfig("gaussian_avatar", cpu_config(), TrainingConfig(), source)
    subject = source.load("cpu", pixels=False)
    model = build_model(config.model, subject, config.recipe)
    model.tracking.start(tracked_head(model.parametric, subject.train))
    with torch.no_grad():
        model.tracking.expression.add_(0.25)
        model.tracking.translation.add_(0.01)
    heads = {
        s: model.fitted_head(tracked_head(model.parametric, f)) for s, f in {"train": subject.train, **subject.held_out}.items()
    }
    return Run(capture, config, model, subject, heads["train"], heads["test"], torch.device("cpu"), 7, None)


def test_flame_param_rows_are_the_captures_timesteps_across_the_splits(vhap_run, tmp_path):
    """GaussianAvatars poses a frame of any split with row ``timestep_index`` of flame_param: row t is the frame of
    timestep t's values, the fine-tuned ones for a training timestep (the val frame sees one again), the tracker's
    for a held-out one; a timestep no frame has is zeros, as its load_meshes fills it."""
    from headfields.apps.gaussian_avatars_run import export_gaussian_avatars_run, run_timesteps
    from headfields.models.gaussian_avatars.export import capture_timesteps

    run = vhap_run
    ply = export_gaussian_avatars_run(run, tmp_path)
    assert ply == tmp_path / "point_cloud" / "iteration_7" / POINT_CLOUD
    flame_param = dict(np.load(ply.parent / FLAME_PARAM))
    assert flame_param["expr"].shape[0] == 8  # timesteps 0 .. 7; 2 was the val frame's own before it saw 6
    fitted, e = run.model.tracking, run.model.tracking.expression.shape[1]
    tracked_test = run.subject.eval.params
    cases = [  # (split, frame, its timestep_index, its expression and translation)
        ("train", 0, 7, fitted.expression[0], fitted.translation[0]),
        ("train", 4, 3, fitted.expression[4], fitted.translation[4]),
        ("val", 0, 6, fitted.expression[1], fitted.translation[1]),
        ("test", 0, 1, tracked_test.expression[0], tracked_test.translation[0]),
        ("test", 1, 0, tracked_test.expression[1], tracked_test.translation[1]),
    ]
    for split, frame, t, expression, translation in cases:
        assert capture_timesteps(run.frames(split))[frame] == t
        np.testing.assert_allclose(flame_param["expr"][t, :e], expression.detach().numpy(), atol=1e-6, err_msg=split)
        np.testing.assert_allclose(flame_param["translation"][t], translation.detach().numpy(), atol=1e-6, err_msg=split)
        head = run.head(split)
        np.testing.assert_allclose(flame_param["jaw_pose"][t], head.pose[frame, 2].numpy(), atol=1e-6, err_msg=split)
    assert not (run.model.tracking.expression - run.subject.train.params.expression).abs().max() < 0.1  # fitted: not tracked
    assert not any(flame_param[key][2].any() for key in ("expr", "rotation", "translation"))
    # A capture without timestep_index (INSTA's): numbered as save_vhap_dataset numbers them, train, val, test.
    insta_test = dataclasses.replace(run.subject.eval, root=None)
    assert capture_timesteps(insta_test, start=6) == [6, 7]
    # A run that loaded one held-out split (trained before all_held_out): the others read from the capture.
    older = dataclasses.replace(run, subject=dataclasses.replace(run.subject, more_held_out={}))
    assert run_timesteps(older)[1] == run_timesteps(run)[1] == [7, 6, 5, 4, 3, 6, 1, 0]
