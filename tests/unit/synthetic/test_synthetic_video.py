"""The synthetic head video: what it writes is read back consistently, and it shows what a capture would.

Truth comes from elsewhere each time: the tracked parameters evaluated by smplx must give the written meshes;
mesh vertices projected through the written cameras must land where the ray-cast depth, mask and labels say
they are.
"""

import dataclasses
import hashlib
import math
import multiprocessing
from pathlib import Path

import pytest
import torch

from headfields.cameras import pixel_rays, project_points
from headfields.data import load_insta_dataset
from headfields.geometry import TriangleMesh, ray_intersect
from headfields.parametric import load_model
from headfields.synthetic import SYNTHETIC_EXPRESSIONS, cached_synthetic_video
from headfields.synthetic._appearance import head_appearance
from headfields.synthetic.video import EXPRESSION_CHANNELS, SyntheticVideoConfig, _orbit_yaw, make_synthetic_video

from helpers import raises_naming
from model_files import smplx_flame, smplx_flame_output

SMALL = SyntheticVideoConfig(num_frames=40, num_val=4, num_test=12, resolution=48, episode_frames=8)


@pytest.fixture(scope="module")
def video(tmp_path_factory) -> Path:
    return make_synthetic_video(tmp_path_factory.mktemp("video"), SMALL)


@pytest.fixture(scope="module")
def splits(video):
    return {split: load_insta_dataset(video, split) for split in ("train", "val", "test")}


def test_splits_cover_the_frames_in_order(splits):
    sizes = {split: len(frames) for split, frames in splits.items()}
    assert sizes == {"train": 24, "val": 4, "test": 12}
    for frames in splits.values():
        assert frames.images.shape[1:] == (48, 48, 3)
        assert frames.model_type == "flame"


def test_smplx_on_the_written_parameters_gives_the_written_meshes(splits):
    frames = splits["test"]
    p = frames.params
    reference = smplx_flame(frames.model_path, len(p.shape), p.expression.shape[1])
    expected = smplx_flame_output(reference, p.shape, p.expression, p.pose, p.translation).vertices
    torch.testing.assert_close(frames.mesh_vertices, expected.detach(), atol=1e-5, rtol=0)
    torch.testing.assert_close(frames.expression, p.expression)  # exp_path files and params files agree


def test_ray_cast_depth_mask_and_labels_agree_with_projected_vertices(splits):
    frames = splits["train"]
    model = load_model(frames.model_path, model_type=frames.model_type)
    regions = model().regions
    names = {label: name for name, label in frames.segmentation_labels.items()}
    region_of = torch.empty(model.num_vertices, dtype=torch.long)
    for name, ids in regions.items():
        region_of[ids] = frames.segmentation_labels[name]

    checked = 0
    for f in range(0, len(frames), 5):
        vertices = frames.mesh_vertices[f]
        pixels, depth = project_points(frames.cameras, vertices, f)
        col, row = pixels.floor().long().unbind(-1)
        inside = (col >= 0) & (col < 48) & (row >= 0) & (row < 48)
        seen = frames.depths[f][row[inside], col[inside]]
        # A vertex is visible where the depth map is no nearer than it (1 mm: the pixel spans the slope).
        visible = inside.clone()
        visible[inside] = (seen - depth[inside]).abs() < 1e-3
        assert visible.sum() > 50
        v_row, v_col = row[visible], col[visible]
        assert frames.masks[f][v_row, v_col].all()
        labels = frames.segmentation[f][v_row, v_col].long()
        agree = (labels == region_of[visible]).float().mean()
        assert agree > 0.9, f"frame {f}: labels agree with the vertices' regions for {agree:.0%} only"
        assert set(labels.tolist()) <= set(names)
        checked += int(visible.sum())
    assert checked > 500
    # Pixels outside the mask have no depth and the background label.
    for frames in splits.values():
        assert (frames.depths[~frames.masks] == 0).all()
        assert (frames.segmentation[~frames.masks] == 0).all()
        assert (frames.depths[frames.masks] > 0).all()


def test_test_frames_combine_expressions_never_combined_in_training(splits):
    def channels(frames):
        p = frames.params
        levels = [p.expression[:, SYNTHETIC_EXPRESSIONS[c]] for c in EXPRESSION_CHANNELS]
        levels.append(p.pose[:, 2, 0] / p.pose[:, 2, 0].abs().max().clamp(min=1e-9))  # jaw (FLAME joint 2)
        return (torch.stack(levels, dim=1) > 0.2).sum(dim=1)

    assert (channels(splits["train"]) <= 1).all()
    assert (channels(splits["val"]) <= 1).all()
    assert (channels(splits["test"]) >= 2).any()


def test_raised_brows_darken_the_forehead_only(splits):
    model = load_model(splits["train"].model_path)
    appearance = head_appearance(model, seed=0)
    faces = model.faces
    bary = torch.full((len(faces), 3), 1.0 / 3.0)
    forehead = appearance.wrinkle_weight[faces].mean(dim=1)
    calm = appearance.colour(faces, bary, torch.zeros(len(faces)))
    raised = appearance.colour(faces, bary, torch.ones(len(faces)))
    # Wrinkles only darken, only where the brow-raise direction moves the surface, and visibly somewhere there.
    assert (raised <= calm + 1e-6).all()
    still = forehead == 0
    assert still.any() and torch.equal(raised[still], calm[still])
    loss = (calm - raised).mean(dim=1)
    assert loss[forehead > 0.5].max() > 0.1


def test_open_jaw_shows_teeth_and_mouth_cavity(splits):
    frames = splits["train"]
    jaw = frames.params.pose[:, 2, 0]
    mouth_labels = torch.tensor([frames.segmentation_labels[n] for n in ("teeth", "mouth_interior")])
    mouth_pixels = torch.isin(frames.segmentation.long(), mouth_labels).flatten(1).sum(dim=1)
    assert mouth_pixels[jaw > 0.15].min() > 0
    assert mouth_pixels[jaw < 0.01].float().mean() < 0.2 * mouth_pixels[jaw > 0.15].float().mean()


def test_same_seed_same_files_other_seed_other_video(tmp_path):
    def digest(root: Path) -> str:
        h = hashlib.sha256()
        for path in sorted(p for p in root.rglob("*") if p.is_file() and p.suffix in (".png", ".json", ".npz")):
            h.update(path.relative_to(root).as_posix().encode())
            h.update(path.read_bytes())
        return h.hexdigest()

    tiny = SyntheticVideoConfig(num_frames=6, num_val=1, num_test=2, resolution=16, episode_frames=2)
    first = digest(make_synthetic_video(tmp_path / "first", tiny))
    assert digest(make_synthetic_video(tmp_path / "again", tiny)) == first
    assert digest(make_synthetic_video(tmp_path / "other", dataclasses.replace(tiny, seed=1))) != first


def test_orbit_video_turns_the_smplx_bust_all_the_way_round(tmp_path):
    config = SyntheticVideoConfig(num_frames=24, num_val=2, num_test=6, resolution=32, episode_frames=6, orbit=True)
    root = make_synthetic_video(tmp_path, config)
    frames = load_insta_dataset(root, "train")
    assert frames.model_type == "smplx"
    assert "torso" in frames.segmentation_labels
    yaw = frames.params.pose[:, 0, 1]
    assert yaw.max() - yaw.min() > 3.0  # more than half a turn within the training frames
    assert frames.masks.flatten(1).any(dim=1).all()  # the subject is in view in every frame


def test_portrait_orbit_lingers_at_the_front_and_holds_out_one_even_turn():
    config = SyntheticVideoConfig.portrait360(num_frames=130, num_val=10, num_test=20, resolution=8, episode_frames=10)
    yaw = _orbit_yaw(config, test_start=110)  # the schedule alone: a video of it is checked below
    seen, held_out = yaw[:110], yaw[110:]
    # Training and validation: y + w sin(y) = theta for evenly spaced theta over orbit_turns turns (Kepler).
    w = config.orbit_front_weight
    theta = 2 * math.pi * config.orbit_turns * torch.arange(110, dtype=torch.float64) / 110
    torch.testing.assert_close(seen + w * torch.sin(seen), theta, atol=1e-12, rtol=0)
    # Frames per angle ~ 1 + w cos(yaw): the front third holds 1/3 + w sin(pi/3) / pi of them.
    front = (torch.cos(seen) > 0.5).double().mean()
    assert abs(float(front) - (1 / 3 + w * math.sin(math.pi / 3) / math.pi)) < 0.03
    # Held out: one even turn from the front, so every view is measured.
    torch.testing.assert_close(held_out, 2 * math.pi * torch.arange(20, dtype=torch.float64) / 20, atol=1e-12, rtol=0)


@pytest.mark.unchecked
def test_a_portrait_video_poses_its_frames_by_the_orbit(tmp_path):
    frames = dict(num_frames=26, num_val=2, num_test=4, episode_frames=10)
    config = SyntheticVideoConfig.portrait360(**frames, resolution=8, supersampling=1)
    root = make_synthetic_video(tmp_path, config)
    yaw = torch.cat([load_insta_dataset(root, split).params.pose[:, 0, 1].double() for split in ("train", "val", "test")])
    torch.testing.assert_close(yaw, _orbit_yaw(config, test_start=22), atol=1e-6, rtol=0)  # float32 on disk
    w = config.orbit_front_weight  # and Kepler's equation holds for what was written
    theta = 2 * math.pi * config.orbit_turns * torch.arange(22, dtype=torch.float64) / 22
    torch.testing.assert_close(yaw[:22] + w * torch.sin(yaw[:22]), theta, atol=1e-5, rtol=0)


def test_expression_gain_renders_stronger_expressions_than_the_written_parameters(tmp_path):
    config = dataclasses.replace(SMALL, expression_gain=1.5)
    frames = load_insta_dataset(make_synthetic_video(tmp_path, config), "train")
    p = frames.params
    reference = smplx_flame(frames.model_path, len(p.shape), p.expression.shape[1])
    tracked = smplx_flame_output(reference, p.shape, p.expression, p.pose, p.translation).vertices.detach()
    torch.testing.assert_close(frames.mesh_vertices, tracked, atol=1e-5, rtol=0)  # the files hold the tracked fit
    pose = p.pose.clone()
    pose[:, 2] *= 1.5  # FLAME's jaw
    seen = smplx_flame_output(reference, p.shape, 1.5 * p.expression, pose, p.translation).vertices.detach()

    # Ray cast both meshes through the pixel centres of the widest-open-mouth frame: the depth map is the
    # stronger expression's, not the written one's.
    f = int(p.pose[:, 2, 0].argmax())
    steps = torch.arange(config.resolution) + 0.5
    pixels = torch.stack(torch.meshgrid(steps, steps, indexing="xy"), dim=-1).reshape(-1, 2)
    rays = pixel_rays(frames.cameras, f, pixels)
    forward = frames.cameras.camera_to_world[f, :3, 2]

    def depth_map(vertices):
        hit = ray_intersect(TriangleMesh(vertices[f : f + 1], frames.mesh_faces), rays.origins, rays.directions)
        return torch.where(hit.hit, hit.t * (rays.directions @ forward), 0.0).reshape(config.resolution, -1)

    # smplx and our model: float32 apart, the depths held in float16 (2^-11 relative)
    torch.testing.assert_close(frames.depths[f].float(), depth_map(seen), atol=1e-4, rtol=2**-11)
    assert (depth_map(tracked) - frames.depths[f]).abs().max() > 5e-3


def test_noisy_tracking_and_novel_views_of_training_timesteps(tmp_path):
    """The validation frames are training timesteps seen by a turned camera, with their tracking bit for bit; the
    written expressions carry the stated noise, the images the truth."""
    config = SyntheticVideoConfig(num_frames=10, num_val=2, num_test=2, resolution=16, episode_frames=3, val_view_yaw=0.5)
    exact = make_synthetic_video(tmp_path / "exact", config)
    noisy = make_synthetic_video(tmp_path / "noisy", dataclasses.replace(config, expression_noise=0.2))
    train, val = (load_insta_dataset(noisy, split) for split in ("train", "val"))
    true_train, true_val = (load_insta_dataset(exact, split) for split in ("train", "val"))
    assert len(train) == 6 and len(val) == 2
    seen = [0, 5]  # the training frames the validation frames see again, evenly spread
    for name in ("expression", "pose", "translation"):
        assert torch.equal(getattr(val.params, name), getattr(train.params, name)[seen])
    assert not torch.equal(val.cameras.camera_to_world, train.cameras.camera_to_world[seen])
    assert torch.equal(train.images, true_train.images) and torch.equal(val.images, true_val.images)
    error = train.params.expression - true_train.params.expression
    assert 0.15 < float(error.std()) < 0.25 and torch.equal(train.params.pose, true_train.params.pose)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("num_frames", 10),
        ("resolution", 4),
        ("supersampling", 0),
        ("fov", 0.0),
        ("num_test", 0),
        ("orbit_front_weight", 1.0),
        ("orbit_turns", 0.0),
        ("expression_gain", -1.0),
        ("hair_volume", "thick"),
        ("glasses", 1),
        ("expression_noise", -0.1),
        ("val_view_yaw", 4.0),
    ],
)
def test_bad_config_names_the_field(field, value):
    with raises_naming(field):
        SyntheticVideoConfig(**{field: value})


def test_cached_video_renders_once_and_ignores_a_half_written_folder(tmp_path):
    tiny = SyntheticVideoConfig(num_frames=6, num_val=1, num_test=2, resolution=16, episode_frames=2)
    root = cached_synthetic_video(tiny, tmp_path)
    first = (root / "transforms_train.json").stat().st_mtime_ns
    assert cached_synthetic_video(tiny, tmp_path) == root
    assert (root / "transforms_train.json").stat().st_mtime_ns == first  # reused, not rendered again
    assert len(load_insta_dataset(root, "train")) == 3
    other = cached_synthetic_video(dataclasses.replace(tiny, seed=1), tmp_path)
    assert other != root
    (other / ".complete").unlink()  # as if the run writing it had been killed
    (other / "transforms_train.json").unlink()
    assert cached_synthetic_video(dataclasses.replace(tiny, seed=1), tmp_path) == other
    assert (other / "transforms_train.json").exists()


def _cached_in_child(config: SyntheticVideoConfig, cache_dir: str, start, results) -> None:
    start.wait()  # both processes call at once
    results.put(str(cached_synthetic_video(config, cache_dir)))


def test_processes_starting_together_each_get_a_complete_video(tmp_path):
    """torchrun's ranks call cached_synthetic_video at once: both must see a whole video and leave no partial
    folders behind (the race once left a 'complete' folder without its model)."""
    tiny = SyntheticVideoConfig(num_frames=6, num_val=1, num_test=2, resolution=16, episode_frames=2)
    context = multiprocessing.get_context("spawn")
    start, results = context.Barrier(2), context.Queue()
    workers = [context.Process(target=_cached_in_child, args=(tiny, str(tmp_path), start, results)) for _ in range(2)]
    for worker in workers:
        worker.start()
    roots = [results.get(timeout=120) for _ in workers]
    for worker in workers:
        worker.join(timeout=60)
        assert worker.exitcode == 0
    assert roots[0] == roots[1]
    root = Path(roots[0])
    assert (root / ".complete").exists() and (root / "model").is_dir()
    assert len(load_insta_dataset(root, "train")) == 3
    assert [p.name for p in tmp_path.iterdir()] == [root.name]
