"""INSTA's recipes against INSTA's code. The numbers are literals read off Zielon/INSTA (configs/nerf/main.json,
src/core.cu, src/masking.cpp, include/rta/masking.h) and the instant-ngp it ships (testbed_nerf.cu, nerf.h,
nerf_loader.h): ``paper_config() == InstaConfig()``, the CPU recipe's documented differences, the triangle masks
(masking.cpp's loop, written here), the box and marching, the depth prior's allow-list and normalisation, and the
optimiser's groups (tiny-cuda-nn puts no L2 on the hash grid)."""

import dataclasses
import math

import pytest
import torch
from tiny_configs import TINY_GRID, TINY_INSTA

from headfields.geometry import uv_sphere
from headfields.heads import mesh_depth, tracked_head
from headfields.losses import depth_loss, ngp_huber_loss
from headfields.models.insta import (
    INSTA_DEPTH_REGIONS,
    Insta,
    InstaConfig,
    cpu_config,
    insta_face_masks,
    paper_config,
)
from headfields.parametric import TrackedMeshModel, load_model
from headfields.renderers import RenderContext
from headfields.training import OptimizerConfig, build_optimizer, ray_batch

from helpers import raises_naming


def test_the_default_is_the_paper_recipe_with_insta_s_numbers():
    c = InstaConfig()
    assert paper_config() == c and paper_config(shell=0.01) == dataclasses.replace(c, shell=0.01)
    g = c.hash_grid  # main.json "encoding"; the finest 2048 over the unit cube: testbed.cu's desired_resolution
    assert (g.levels, g.features_per_level, g.log2_table_size, g.base_resolution, g.finest_resolution) == (16, 8, 18, 16, 2048)
    assert c.box_size == 1.0 and c.shell is None  # the unit cube of instant-ngp at aabb_scale 1, in metres
    assert c.occupancy_resolution == 128 and c.steps_per_diagonal == 1024 and c.cone_angle == 0.0  # nerf.h, testbed_nerf.cu
    assert (c.occupancy_decay, c.occupancy_threshold) == (0.95, 0.01)
    assert c.optimization == OptimizerConfig(1.75e-3, betas=(0.9, 0.99), eps=1e-15, weight_decay=1e-6, ema_decay=0.95)
    assert (c.expression_dims, c.mouth_weight, c.warmup_steps, c.depth_weight, c.huber_delta) == (16, 40.0, 500, 1.25, 0.1)


def test_the_cpu_recipe_differs_only_in_its_documented_sizes():
    paper, cpu = paper_config(), cpu_config()
    changed = {f.name for f in dataclasses.fields(InstaConfig) if getattr(paper, f.name) != getattr(cpu, f.name)}
    sizes = {"hash_grid", "box_size", "occupancy_resolution", "steps_per_diagonal", "cone_angle", "shell", "optimization"}
    assert changed == sizes
    assert cpu.hash_grid.features_per_level == 2 and dataclasses.replace(cpu.hash_grid, features_per_level=8) == paper.hash_grid
    assert (cpu.box_size, cpu.occupancy_resolution, cpu.steps_per_diagonal) == (None, 64, 256)
    assert (cpu.cone_angle, cpu.shell) == (1 / 256, 0.03)
    assert cpu.optimization == dataclasses.replace(paper.optimization, learning_rate=2.5e-3)  # INSTA-pytorch's rate
    assert cpu_config(shell=None).shell is None and cpu_config(shell=None).occupancy_resolution == 64


# INSTA's FlameMasks enum (include/rta/masking.h) and the masks masking.cpp loads, in its std::map's key order.
ENUM = {"boundary": 0, "eye_region": 1, "face": 2, "left_ear": 4, "lips": 7, "right_ear": 10}


def masking_cpp(faces, masks):
    """src/masking.cpp ``triangle_to_mask``: for each face, for each mask in key order, the face takes the mask if
    any of its vertices is in it (later masks overwrite earlier ones); Torso (15) when none."""
    labels = []
    for face in faces:
        label = 15
        for name in sorted(masks, key=ENUM.get):
            for vertex_id in masks[name]:
                if sum(int(v) == vertex_id for v in face) > 0:
                    label = ENUM[name]
                    break
        labels.append(label)
    return torch.tensor(labels)


def test_triangle_masks_follow_insta_s_masking():
    vertices, faces = uv_sphere(8, 12, radius=0.1, dtype=torch.float32)
    g = torch.Generator().manual_seed(0)
    ids = torch.randperm(len(vertices), generator=g)
    # Overlapping vertex sets, so that faces touch several masks and the order decides.
    regions = {"face": ids[:50], "eye_region": ids[40:75], "lips": ids[45:56], "left_ear": ids[75:81]}
    regions["right_ear"] = torch.cat([ids[54:56], ids[81:87]])  # two vertices shared with the lips
    regions["boundary"] = ids[85:95]
    model = TrackedMeshModel(vertices, faces, 16, regions=regions)
    label = masking_cpp(faces.tolist(), {k: set(v.tolist()) for k, v in regions.items()})
    masks = insta_face_masks(model(), paper_config())
    assert torch.equal(masks.scale, label == 1) and torch.equal(masks.blend, label == 2) and torch.equal(masks.lips, label == 7)
    assert all((label == i).any() for i in (1, 2, 4, 7, 10))  # each mask wins somewhere
    off = insta_face_masks(model(), paper_config(scale_regions=(), blend_regions=()))
    assert off.scale is None and off.blend is None and torch.equal(off.lips, masks.lips)
    with raises_naming("blend_regions"):
        insta_face_masks(model(), paper_config(blend_regions=("gills",)))
    with raises_naming("lips_regions"):
        insta_face_masks(model(), paper_config(lips_regions=()))


def sphere_subject(radius=0.1):
    vertices, faces = uv_sphere(8, 12, radius=radius, dtype=torch.float32)
    half = len(vertices) // 2
    regions = {"skin": torch.arange(half), "eyes": torch.arange(4), "lips": torch.arange(half, len(vertices))}
    return TrackedMeshModel(vertices, faces, 16, regions=regions)


def test_the_paper_model_marches_insta_s_box_and_the_cpu_model_the_mesh_s():
    subject, labels = sphere_subject(), {"skin": 1, "lips": 2}
    paper = Insta(subject, labels, paper_config(hash_grid=TINY_GRID))  # INSTA's table is 2^18 x 8 a level: a small one here
    torch.testing.assert_close(paper.field.mapping.box, torch.tensor([[-0.5] * 3, [0.5] * 3]))
    assert paper.sampler.grid.resolution == (128, 128, 128) and paper.sampler.grid.cone_angle == 0.0
    assert paper.sampler.step_size == pytest.approx(math.sqrt(3) / 1024) and paper.sampler.shell is None
    masks = insta_face_masks(subject(), paper.config)
    deformer = paper.field.deformer
    assert torch.equal(deformer.blend_faces, masks.blend) and torch.equal(deformer.scale_faces, masks.scale)
    assert torch.equal(paper.field.condition.faces, masks.lips)
    cpu = Insta(subject, labels, cpu_config(hash_grid=TINY_GRID))
    low, high = subject.v_template.amin(0), subject.v_template.amax(0)
    pad = 0.15 * (high - low).norm()
    torch.testing.assert_close(cpu.field.mapping.box, torch.stack([low - pad, high + pad]))
    assert cpu.sampler.grid.resolution == (64, 64, 64) and cpu.sampler.grid.cone_angle == 1 / 256
    with raises_naming("box_size"):
        Insta(subject, labels, paper_config(hash_grid=TINY_GRID, box_size=0.1))
    with raises_naming("depth_regions"):
        Insta(subject, labels, paper_config(hash_grid=TINY_GRID, depth_regions=("hair",)))


def test_the_hash_grid_is_left_out_of_the_weight_decay():
    model = Insta(sphere_subject(), {"skin": 1, "lips": 2}, cpu_config(hash_grid=TINY_GRID))
    optimizer = build_optimizer(model, model.optimization)
    decay = {id(p): group["weight_decay"] for group in optimizer.param_groups for p in group["params"]}
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert len(decay) == len(trainable) and decay[id(model.field.encoder.table)] == 0.0
    assert all(d == 1e-6 for i, d in decay.items() if i != id(model.field.encoder.table))


# Face-parsing codes in (90, 250] get INSTA's depth prior (its compute_loss_kernel_train_nerf), by their names.
ALLOWED = {"skin", "left_brow", "right_brow", "left_eye", "right_eye", "glasses", "left_ear", "right_ear", "earring", "nose"}
ALLOWED |= {"mouth_interior", "upper_lip", "lower_lip", "neck", "necklace"}


def test_the_depth_prior_is_insta_s_allow_list_summed_over_all_rays(tiny_video):
    assert set(INSTA_DEPTH_REGIONS) == ALLOWED | {"lips", "teeth", "eyes"}  # the synthetic head's own names
    assert not {"cloth", "hair", "hat"} & set(INSTA_DEPTH_REGIONS)
    frames = tiny_video[0]
    torch.manual_seed(0)
    config = dataclasses.replace(TINY_INSTA, random_background=False)  # the loss over white, as rendered below
    model = Insta(load_model(frames.model_path, frames.model_type), frames.segmentation_labels, config)
    head = tracked_head(model.parametric, frames)
    batch = ray_batch(frames, 512, torch.Generator().manual_seed(0), torch.device("cpu"), head=head)
    batch = dataclasses.replace(batch, context=RenderContext())
    with torch.no_grad():
        out = model.training_step(batch, 0)
        rendered = model.render(batch.rays, head).composite
    prior = mesh_depth(head, batch.rays)
    hair = torch.tensor(frames.segmentation_labels["hair"])
    assert ((batch.segmentation == hair) & (prior > 0)).any()  # hair on the mesh: the allow-list decides
    names = {code: name for name, code in frames.segmentation_labels.items()}
    keep = torch.tensor([names.get(int(s)) in ALLOWED | {"lips", "teeth", "eyes"} for s in batch.segmentation]) & (prior > 0)
    expected = (rendered.depth - prior).abs()[keep].sum() / len(keep)
    assert out.logs["depth"] == pytest.approx(float(expected), rel=1e-5)
    rgb = ngp_huber_loss(rendered.rgb, batch.rgb)  # before the warm-up: no mouth weights
    assert float(out.loss) == pytest.approx(float(rgb + 1.25 * expected), rel=1e-5)
    # No segmentation, no allow-list: INSTA applies no depth prior.
    plain = model.training_step(dataclasses.replace(batch, segmentation=None), 0)
    assert "depth" not in plain.logs and float(plain.loss.detach()) == pytest.approx(float(rgb), rel=1e-5)
    assert float(depth_loss(rendered.depth, prior, keep)) * keep.float().mean() == pytest.approx(float(expected), rel=1e-5)


def test_random_backgrounds_leave_an_empty_scene_no_loss_where_the_frame_shows_only_background(tiny_video):
    """instant-ngp's random_bg_color: a pixel that saw only the background (outside the mask, white) is trained over
    a random colour, the step's generator's first draw, which is also its target. An empty scene (no occupied cell:
    every ray shows its background) costs nothing there; a pixel the head covers keeps white and its own colour."""
    frames = tiny_video[0]
    subject = load_model(frames.model_path, frames.model_type)
    model = Insta(subject, frames.segmentation_labels, TINY_INSTA)
    assert model.config.random_background  # INSTA's (instant-ngp's) default
    model.sampler.grid.binary.zero_()  # no cell occupied: no samples, every ray its background
    head = tracked_head(subject, frames)
    batch = ray_batch(frames, 256, torch.Generator().manual_seed(0), torch.device("cpu"), head=head)
    white, grey = torch.ones_like(batch.rgb), torch.full_like(batch.rgb, 0.25)
    empty = dataclasses.replace(batch, rgb=white, mask=torch.zeros_like(batch.mask), segmentation=None)
    with torch.no_grad():
        out = model.training_step(dataclasses.replace(empty, context=RenderContext(torch.Generator().manual_seed(1))), 0)
        assert float(out.loss) == 0.0 and torch.equal(out.rgb, white)  # the running PSNR reads it over white
        # A fog of the drawn colours would not be free: the renderer was given them (a ray shows its background).
        drawn = torch.rand(white.shape, generator=torch.Generator().manual_seed(1))
        shown = model.render(empty.rays, head, background=drawn).composite.rgb
        assert torch.equal(shown, drawn)
        # Covered pixels (in the mask, or any colour but white) keep white and their colour: the loss over white.
        for covered in (dataclasses.replace(empty, rgb=grey), dataclasses.replace(empty, mask=torch.ones_like(batch.mask))):
            out = model.training_step(dataclasses.replace(covered, context=RenderContext(torch.Generator().manual_seed(1))), 0)
            assert float(out.loss) == pytest.approx(float(ngp_huber_loss(white, covered.rgb)), rel=1e-6)
