"""The synthetic video's hair volume and glasses: detail the tracked template lacks.

Truth comes from outside the renderer: distances to the template from the geometry kernels, an independent
quadrature (trapezoids on a 20 times finer grid, in float64) for the compositing, the tracked model evaluated
anew for the rigid motion, and pixels back-projected through the written cameras and depths.
"""

import dataclasses
import hashlib
import math
from pathlib import Path

import pytest
import torch

from headfields.cameras import PinholeCameras, look_at, pixel_rays
from headfields.data import INSTA_FACE_PARSING, load_insta_dataset
from headfields.geometry import TriangleMesh, closest_point, ray_intersect
from headfields.parametric import load_model
from headfields.synthetic import (
    GLASSES_LABEL,
    HAIR_VOLUME_LABEL,
    HairVolume,
    HairVolumeConfig,
    SyntheticVideoConfig,
    cached_synthetic_video,
    glasses_mesh,
    make_synthetic_video,
    write_insta_capture,
    write_synthetic_flame,
)
from headfields.synthetic._appearance import head_appearance
from headfields.synthetic._head_mesh import HAIRLINE_BACK_Y, HAIRLINE_FRONT_Y, _front_weight
from headfields.synthetic._render import Additions, render_frames

from helpers import raises_naming

# 40 pixels, one ray per pixel: enough for the glasses' 4 mm rims to cover a few pixel centres.
VIDEO = SyntheticVideoConfig(
    num_frames=6, num_val=1, num_test=2, resolution=40, supersampling=1, episode_frames=2, hair_volume=True, glasses=True
)
FACE = ("skin", "lips", "eyes")
VIEWS = ((0.0, 0.0, 0.7), (0.6, 0.15, 0.2), (0.0, 0.45, -0.55))  # front, side, above behind: camera positions


@pytest.fixture(scope="module")
def head(tmp_path_factory):
    model = load_model(write_synthetic_flame(tmp_path_factory.mktemp("flame")))
    return model, model()


@pytest.fixture(scope="module")
def hair(head) -> HairVolume:
    return HairVolume.around(head[1].canonical_vertices, head[1].faces)


@pytest.fixture(scope="module")
def video(tmp_path_factory) -> Path:
    return make_synthetic_video(tmp_path_factory.mktemp("hair_video"), VIDEO)


@pytest.fixture(scope="module")
def frames(video):
    return load_insta_dataset(video, "train")


def _view_rays(head, size: int):
    """Rays through ``size`` x ``size`` pixel centres from each of VIEWS towards the canonical head, their hits
    on it (``far``: inf on a miss), and a grey surface behind (white background)."""
    eyes = torch.tensor(VIEWS)
    camera_to_world = look_at(eyes, torch.zeros_like(eyes), torch.tensor([0.0, 1.0, 0.0]))
    cameras = PinholeCameras.from_fov(camera_to_world, size, size, math.radians(40))
    steps = torch.arange(size) + 0.5
    pixels = torch.stack(torch.meshgrid(steps, steps, indexing="xy"), dim=-1).reshape(-1, 2)
    rays = [pixel_rays(cameras, f, pixels) for f in range(len(VIEWS))]
    origins, dirs = torch.cat([r.origins for r in rays]), torch.cat([r.directions for r in rays])
    hit = ray_intersect(head[1].canonical_mesh, origins, dirs)
    far = torch.where(hit.hit, hit.t, math.inf)
    surface = torch.where(hit.hit[:, None], torch.tensor([0.5, 0.5, 0.5]), torch.tensor([1.0, 1.0, 1.0]))
    return origins, dirs, far, surface


def test_volume_lies_one_to_six_centimetres_beyond_the_scalp(head, hair):
    lo, hi = hair.centre - hair.bound_radii, hair.centre + hair.bound_radii
    x = lo + (hi - lo) * torch.rand(200_000, 3, generator=torch.Generator().manual_seed(0))
    x = x[hair.density(x) > 0]
    assert len(x) > 10_000
    near = closest_point(head[1].canonical_mesh, x)
    assert ((near.sign > 0) | (near.distance < 1e-4)).all()  # outside the head
    assert near.distance.max() <= 0.06 + 1e-4  # never past max_thickness
    p = near.point
    assert near.distance[p[:, 1] > 0.1].max() > 0.055  # ~6 cm over the crown ...
    assert near.distance[p[:, 2] < -0.08].max() > 0.055  # ... and behind the head
    # ~1 cm at the template's hairline: where the nearest scalp point lies at most 3 mm above it.
    azimuth = torch.atan2(p[:, 0], p[:, 2]).double().numpy()
    hairline = HAIRLINE_BACK_Y + (HAIRLINE_FRONT_Y - HAIRLINE_BACK_Y) * torch.as_tensor(_front_weight(azimuth))
    at_hairline = p[:, 1].double() - hairline < 0.003
    assert at_hairline.sum() > 50
    assert 0.006 < near.distance[at_hairline].max() < 0.0115
    # The quadrature skips cells of the occupancy grid: none of them may hold hair.
    assert hair._occupied(x).all()


def test_compositing_matches_an_independent_quadrature(head, hair):
    origins, dirs, far, surface = _view_rays(head, 20)
    out = hair.composite(origins, dirs, far)
    image = out.rgb + out.transmittance[:, None] * surface
    # Converged: halving the step changes no pixel by 1/255.
    half = hair.composite(origins, dirs, far, step=hair.config.step / 2)
    assert (image - (half.rgb + half.transmittance[:, None] * surface)).abs().max() < 1 / 255

    # A dozen rays of all opacities, against trapezoids (float64) on a 20 times finer grid from 0.25 m before
    # the skull's centre to the surface (or 0.25 m past the centre): T(t) = exp(-int sigma), rgb = int T sigma c.
    opacity = out.opacity
    order = torch.argsort(opacity)
    rays = order[torch.linspace(int((opacity == 0).sum()), len(order) - 1, 12).long()]
    assert opacity[rays].min() < 0.2 and opacity[rays].max() > 0.9
    for i in rays.tolist():
        centre = float((hair.centre - origins[i]) @ dirs[i])
        t = torch.linspace(centre - 0.25, min(float(far[i]), centre + 0.25), int(0.5 / (hair.config.step / 20)))
        t = t.double()
        sigma, colour = hair.density_colour(origins[i] + t[:, None].float() * dirs[i])
        sigma, colour, dt = sigma.double(), colour.double(), t.diff()
        depth = torch.cat([torch.zeros(1, dtype=torch.float64), torch.cumsum(0.5 * (sigma[1:] + sigma[:-1]) * dt, 0)])
        emitted = (torch.exp(-depth) * sigma)[:, None] * colour
        rgb = (0.5 * (emitted[1:] + emitted[:-1]) * dt[:, None]).sum(dim=0)
        expected = rgb + torch.exp(-depth[-1]) * surface[i].double()
        assert (image[i].double() - expected).abs().max() < 1 / 255, f"ray {i}: opacity {float(opacity[i]):.3f}"


def test_a_face_in_front_of_the_volume_hides_it(tmp_path, head, hair):
    model, neutral = head
    eye = torch.tensor([[0.0, 0.0, 0.7]])
    cameras = PinholeCameras.from_fov(look_at(eye, torch.zeros_like(eye), torch.tensor([0.0, 1.0, 0.0])), 32, 32, 0.6)
    appearance = head_appearance(model, seed=0)
    brow = torch.zeros(1)
    plain = render_frames(neutral, cameras, appearance, brow, 32, 2, (1.0, 1.0, 1.0))
    additions = Additions(neutral.joint_transforms[:, 1], hair, len(appearance.names) + 1, None, 0)
    with_hair = render_frames(neutral, cameras, appearance, brow, 32, 2, (1.0, 1.0, 1.0), additions)
    # Pixels on the face whose rays would cross the hair behind the head if the head did not stop them.
    steps = torch.arange(32) + 0.5
    rays = pixel_rays(cameras, 0, torch.stack(torch.meshgrid(steps, steps, indexing="xy"), dim=-1).reshape(-1, 2))
    hit = ray_intersect(neutral.posed_mesh, rays.origins, rays.directions, frame=0)
    behind = hair.composite(rays.origins, rays.directions, torch.full_like(hit.t, math.inf)).opacity
    front = hair.composite(rays.origins, rays.directions, torch.where(hit.hit, hit.t, math.inf)).opacity
    names = {i + 1: name for i, name in enumerate(appearance.names)}
    face = torch.tensor([names.get(int(c)) in FACE for c in plain[3][0].reshape(-1)])
    hidden = face & (behind > 0.5) & (front == 0)
    assert hidden.sum() > 20
    # Exactly the colours and labels of the head without hair there, although the hair is on the ray.
    assert torch.equal(with_hair[0][0].reshape(-1, 3)[hidden], plain[0][0].reshape(-1, 3)[hidden])
    assert torch.equal(with_hair[3][0].reshape(-1)[hidden], plain[3][0].reshape(-1)[hidden])


def _tracked(frames, model, joint: str = "neck"):
    """The tracked head of ``frames`` (its parameters evaluated anew), and each frame's head joint transform."""
    p = frames.params
    tracked = model(shape=p.shape, expression=p.expression, pose=p.pose, translation=p.translation)
    return tracked, tracked.joint_transforms[:, model.joint_index(joint)]


def _seen_points(frames, f: int):
    """World points of frame ``f``'s pixel centres at their written depth, with the pixels' labels."""
    steps = torch.arange(frames.images.shape[2]) + 0.5
    pixels = torch.stack(torch.meshgrid(steps, steps, indexing="xy"), dim=-1).reshape(-1, 2)
    rays = pixel_rays(frames.cameras, f, pixels)
    t = frames.depths[f].reshape(-1) / (rays.directions @ frames.cameras.camera_to_world[f, :3, 2])
    return rays, t, frames.segmentation[f].reshape(-1).long()


def test_labels_follow_the_opacity_rule(frames, hair):
    model = load_model(frames.model_path, frames.model_type)
    tracked, transforms = _tracked(frames, model)
    lens, lens_faces = glasses_mesh(tracked.canonical_vertices, tracked.faces)
    codes = frames.segmentation_labels
    checked = 0
    for f in range(len(frames)):
        rays, depth_t, label = _seen_points(frames, f)
        rotation, shift = transforms[f, :3, :3], transforms[f, :3, 3]
        hit = ray_intersect(TriangleMesh(frames.mesh_vertices[f], frames.mesh_faces), rays.origins, rays.directions)
        posed_lens = TriangleMesh(lens @ rotation.T + shift, lens_faces)
        lens_hit = ray_intersect(posed_lens, rays.origins, rays.directions)
        far = torch.minimum(torch.where(hit.hit, hit.t, math.inf), torch.where(lens_hit.hit, lens_hit.t, math.inf))
        out = hair.composite((rays.origins - shift) @ rotation, rays.directions @ rotation, far)
        # The rule: the hair volume's label where its opacity before the first opaque surface exceeds 0.5.
        clear = (out.opacity - 0.5).abs() > 0.01  # away from the threshold: float32 round-off elsewhere
        is_hair = label == codes[HAIR_VOLUME_LABEL]
        assert torch.equal(is_hair[clear], (out.opacity > 0.5)[clear])
        # Its depth: where the opacity reaches 0.5. The mask: every labelled pixel.
        torch.testing.assert_close(depth_t[is_hair & clear], out.median_t[is_hair & clear], atol=1e-4, rtol=2**-11)  # float16
        assert torch.equal(frames.masks[f].reshape(-1), label != 0)
        checked += int(is_hair.sum())
    assert checked > 100


def test_the_volume_rides_the_head_joint(head, hair):
    model, _ = head
    # Two frames: the head turned, nodded and moved in the second, and its camera moved with it (rigidly, by the
    # head joint's relative transform). The cranium's weights are all on the head joint (FLAME's neck): the scalp
    # follows its transform to the expressions' millimetres, so the hair, made on the canonical scalp, must too.
    pose = torch.zeros(2, model.num_joints, 3)
    pose[1, model.joint_index("neck")] = torch.tensor([0.3, 0.6, -0.2])
    posed = model(pose=pose, translation=torch.tensor([[0.0, 0.0, 0.0], [0.03, -0.02, 0.05]]))
    transforms = posed.joint_transforms[:, model.joint_index("neck")]
    scalp = posed.regions["hair"]
    moved = torch.einsum("bij,vj->bvi", transforms[:, :3, :3], posed.canonical_vertices[scalp]) + transforms[:, None, :3, 3]
    assert (moved - posed.vertices[:, scalp]).norm(dim=-1).max() < 0.004
    assert (posed.vertices[1, scalp] - posed.vertices[0, scalp]).norm(dim=-1).max() > 0.05
    eye = torch.tensor([[0.05, 0.1, 0.6]])
    first = look_at(eye, torch.zeros_like(eye), torch.tensor([0.0, 1.0, 0.0]))[0]
    relative = transforms[1] @ torch.linalg.inv(transforms[0])
    cameras = PinholeCameras.from_fov(torch.stack([first, relative @ first]), 32, 32, 0.7)
    appearance = head_appearance(model, seed=0)
    code = len(appearance.names) + 1
    images, _, depths, labels = render_frames(
        posed, cameras, appearance, torch.zeros(2), 32, 1, (1.0, 1.0, 1.0), Additions(transforms, hair, code, None, 0)
    )
    hair_pixels = labels[0] == code
    assert hair_pixels.sum() > 30
    assert torch.equal(labels[1] == code, hair_pixels)  # the same pixels show the hair ...
    difference = (images[1].int() - images[0].int()).abs()[hair_pixels & (labels[1] == code)]
    assert difference.max() <= 1  # ... in the same colours (float32 round-off at most)
    torch.testing.assert_close(depths[1][hair_pixels], depths[0][hair_pixels], atol=1e-5, rtol=0)


def test_glasses_are_labelled_and_off_the_template(frames, head):
    model, neutral = head
    lens, _ = glasses_mesh(neutral.canonical_vertices, neutral.faces)
    near = closest_point(neutral.canonical_mesh, lens)
    assert (near.sign > 0).all() and near.distance.min() > 0.003  # outside the head, clear of the skin
    assert frames.mesh_vertices.shape[1] == model.num_vertices  # the written meshes are the template's
    code = frames.segmentation_labels[GLASSES_LABEL]
    seen = 0
    for f in range(len(frames)):
        rays, t, label = _seen_points(frames, f)
        on = label == code
        points = rays.origins[on] + t[on, None] * rays.directions[on]
        mesh = TriangleMesh(frames.mesh_vertices[f], frames.mesh_faces)
        assert (closest_point(mesh, points).distance > 0.002).all()
        seen += int(on.sum())
    assert seen > 10


def test_same_seed_same_video_cached_apart_and_in_insta_codes(tmp_path, video, hair, head):
    def digest(root: Path) -> str:
        h = hashlib.sha256()
        for path in sorted(p for p in root.rglob("*") if p.is_file() and p.suffix in (".png", ".json")):
            h.update(path.read_bytes())
        return h.hexdigest()

    tiny = dataclasses.replace(VIDEO, num_frames=4, num_test=1, resolution=12, glasses=False)
    first = digest(make_synthetic_video(tmp_path / "first", tiny))
    cached = cached_synthetic_video(dataclasses.replace(tiny, hair_volume=None), tmp_path / "cache", hair_volume=True)
    assert digest(cached) == first  # the same video again, under a name of its own
    assert cached.name.startswith("synthetic_head_hair_")
    other = HairVolume.around(head[1].canonical_vertices, head[1].faces, seed=1)
    x = hair.outer_points()[::50] * 0.9  # inside the shell
    assert not torch.equal(hair.density(x), other.density(x))  # another seed: other clumps
    # As a real INSTA capture: the face parser's hair and glasses codes.
    capture = load_insta_dataset(write_insta_capture(tmp_path / "capture", source=video, frames=3), "train")
    codes = set(capture.segmentation.unique().tolist())
    assert {INSTA_FACE_PARSING["hair"], INSTA_FACE_PARSING["glasses"]} <= codes
    with raises_naming("source"):
        write_insta_capture(tmp_path / "other", source=video, hair_volume=True)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("min_thickness", 0.0),
        ("max_thickness", 0.005),
        ("density", -1.0),
        ("strands", 0),
        ("strand_contrast", 1.5),
        ("tip_colour", (1.0, 2.0, 0.0)),
        ("step", 0.01),
    ],
)
def test_bad_hair_config_names_the_field(field, value):
    with raises_naming(field):
        HairVolumeConfig(**{field: value})


def test_hair_volume_option_takes_true_for_the_default_hair():
    assert SyntheticVideoConfig(hair_volume=True).hair_volume == HairVolumeConfig()
    assert SyntheticVideoConfig(hair_volume=False).hair_volume is None
    assert SyntheticVideoConfig(hair_volume=True) == SyntheticVideoConfig(hair_volume=HairVolumeConfig())  # one cache
