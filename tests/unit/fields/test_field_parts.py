"""The small parts models are assembled from: ``Head.select`` against a head evaluated for the chosen frames,
the conditions (tracked, per-frame codes, shared code, concatenated) against rows picked by hand and gradients
counted by hand, ``MappedDeformer`` + ``Normalize`` against ``(x - c) / s``, a ``HyperDeformer``'s condition
module against the explicit condition, ``joint_index`` against FLAME's joint list, and ``render_image`` with a
one-frame head against the render with the full head."""

import dataclasses

import pytest
import torch
from torch.testing import assert_close

from headfields.decoders import AppearanceConfig, SdfMlpConfig
from headfields.deformers import (
    Canonical,
    DeformerChain,
    HyperDeformer,
    HyperDeformerConfig,
    MappedDeformer,
    RigidDeformer,
    RigidDeformerConfig,
)
from headfields.encoders import LatentCodesConfig
from headfields.fields import (
    ConcatCondition,
    FrameCodes,
    FrameCondition,
    Normalize,
    RegionExpression,
    SharedCode,
    TrackedCondition,
)
from headfields.heads import tracked_head
from headfields.models.neus_avatar import NeusAvatar, NeusAvatarConfig
from headfields.parametric import Head, load_model
from headfields.renderers import NeusSampler
from headfields.synthetic import write_synthetic_flame
from headfields.training import render_image

from helpers import raises_naming

FRAMES, EXPRESSIONS = 4, 10
TINY_NEUS = NeusAvatarConfig(
    sdf=SdfMlpConfig(hidden_dim=16, hidden_layers=2, position_frequencies=2),
    appearance=AppearanceConfig(hidden_dim=16, hidden_layers=2, feature_dim=8),
    sampler=NeusSampler(coarse=12, rounds=1, per_round=4, padding=0.03),
)
SHARED = ("canonical_vertices", "faces", "skinning_weights", "shape", "regions", "uvs", "uv_faces")


@pytest.fixture(scope="module")
def flame(tmp_path_factory):
    """(model, head, inputs): a synthetic FLAME posed with random expressions, joint poses and translations."""
    folder = tmp_path_factory.mktemp("flame")
    write_synthetic_flame(folder)
    model = load_model(folder, num_shape=10, num_expression=EXPRESSIONS, dtype=torch.float64)
    g = torch.Generator().manual_seed(1)
    inputs = {
        "expression": torch.randn(FRAMES, EXPRESSIONS, generator=g, dtype=torch.float64),
        "pose": 0.3 * torch.randn(FRAMES, model.num_joints, 3, generator=g, dtype=torch.float64),
        "translation": 0.05 * torch.randn(FRAMES, 3, generator=g, dtype=torch.float64),
    }
    return model, model(**inputs), inputs


def samples(n=9, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = (torch.rand(n, 3, generator=g, dtype=torch.float64) - 0.5) * 0.3
    frame = torch.arange(n) % FRAMES
    return x, frame


def canonical_of(x):
    return Canonical(points=x, dirs=None, valid=torch.ones(len(x), dtype=torch.bool), face=None)


# ---------------------------------------------------------------- Head.select


def test_select_picks_rows_shares_identity_and_matches_a_head_of_those_frames(flame):
    model, head, inputs = flame
    codes = torch.randn(FRAMES, 2, dtype=torch.float64)
    coded = dataclasses.replace(head, codes=codes)
    index = [2, 0, 2]
    picked = coded.select(index)
    assert picked.num_frames == 3
    for name in Head.PER_FRAME:
        value = getattr(coded, name)
        assert value is not None, name  # every per-frame field present, so every one is checked
        assert_close(getattr(picked, name), torch.stack([value[i] for i in index]), rtol=0, atol=0)
    for name in SHARED:
        assert getattr(picked, name) is getattr(coded, name), name
    # Independent truth: the model evaluated for those frames' inputs only.
    fresh = model(**{k: v[index] for k, v in inputs.items()})
    for name in ("vertices", "rest_vertices", "joints", "joint_transforms", "landmarks"):
        assert_close(getattr(picked, name), getattr(fresh, name))
    assert head.codes is None and head.select([1, 3]).codes is None
    assert_close(head.select(torch.tensor([3])).expression, inputs["expression"][3:4], rtol=0, atol=0)


@pytest.mark.parametrize("frames", [[0, FRAMES], [-1], [[0, 1]]])
def test_select_out_of_range_raises(flame, frames):
    with raises_naming("frames"):
        flame[1].select(frames)


# ---------------------------------------------------------------- conditions


@pytest.mark.parametrize("with_codes", [False, True])
def test_tracked_condition_picks_expression_poses_and_codes(flame, with_codes):
    _, head, _ = flame
    codes = torch.randn(FRAMES, 2, dtype=torch.float64) if with_codes else None
    head = dataclasses.replace(head, codes=codes)
    condition = TrackedCondition(3, (2, 1), 2)
    assert condition.dim == 3 + 6 + 2
    x, frame = samples()
    out = condition(canonical_of(x), head, frame)
    for row, f in zip(out, frame.tolist(), strict=True):
        expected = [*head.expression[f, :3].tolist(), *head.pose[f, 2].tolist(), *head.pose[f, 1].tolist()]
        expected += codes[f].tolist() if with_codes else [0.0, 0.0]
        assert row.tolist() == expected
    with raises_naming("head"):
        TrackedCondition(3, (), 3)(canonical_of(x), dataclasses.replace(head, codes=torch.zeros(FRAMES, 2)), frame)


def test_frame_codes_attach_to_the_head_and_receive_the_gradient(flame):
    _, head, _ = flame
    codes = FrameCodes(FRAMES, LatentCodesConfig(dim=2, init_std=0.1)).double()
    attached = codes.attach(head)
    assert attached.codes is codes.codes and head.codes is None
    assert attached.vertices is head.vertices
    x, frame = samples()
    out = TrackedCondition(1, (), 2)(canonical_of(x), attached, frame)
    assert_close(out[:, 1:], codes.codes.detach()[frame], rtol=0, atol=0)
    weights = torch.randn(len(x), 2, dtype=torch.float64)
    (out[:, 1:] * weights).sum().backward()
    expected = torch.zeros(FRAMES, 2, dtype=torch.float64)
    for w, f in zip(weights, frame.tolist(), strict=True):
        expected[f] += w
    assert_close(codes.codes.grad, expected)
    with raises_naming("head"):
        codes.attach(head.select([0, 1]))


def test_attaching_codes_keeps_the_head_s_geometry_built_once(flame):
    _, head, _ = flame
    codes = FrameCodes(FRAMES, LatentCodesConfig(dim=2, init_std=0.1)).double()
    built = head.posed_mesh, head.bounds  # the BVH-bearing mesh and the boxes, computed on the tracked head
    for _ in range(2):  # a model attaches its codes at every step
        attached = codes.attach(head)
        assert attached.posed_mesh is built[0] and attached.bounds is built[1]
    assert "rest_mesh" not in head.__dict__  # what was never built stays lazy
    assert_close(attached.rest_mesh.vertices, head.rest_vertices, rtol=0, atol=0)
    assert head.rest_mesh is attached.rest_mesh  # built through the attached head, kept for the tracked one
    # Geometry first asked for through an attached head (a renderer's boxes) is computed once, not at every step.
    fresh = dataclasses.replace(head)
    boxes = [codes.attach(fresh).bounds for _ in range(2)]
    assert boxes[0] is boxes[1] is fresh.bounds
    assert codes.attach(codes.attach(fresh)).bounds is boxes[0]
    # A head whose vertices differ computes its own.
    moved = dataclasses.replace(head, vertices=head.vertices + 1.0)
    assert moved.with_codes(codes.codes).posed_mesh is not built[0]


def test_shared_code_and_concatenation(flame):
    _, head, _ = flame
    shared = SharedCode(LatentCodesConfig(dim=3, init_std=0.5)).double()
    x, frame = samples()
    out = shared(canonical_of(x), head, frame)
    assert out.shape == (len(x), 3) and shared.dim == 3
    assert_close(out, shared.codes.codes.detach()[0].expand(len(x), 3), rtol=0, atol=0)
    weights = torch.randn(len(x), 3, dtype=torch.float64)
    (out * weights).sum().backward()
    assert_close(shared.codes.codes.grad, weights.sum(0, keepdim=True))

    tracked = TrackedCondition(2, (0,))
    both = ConcatCondition(tracked, shared)
    assert both.dim == 2 + 3 + 3
    got = both(canonical_of(x), head, frame)
    expected = torch.cat([head.expression[frame, :2], head.pose[frame, 0], shared.codes.codes.detach()[0].expand(len(x), 3)], 1)
    assert_close(got, expected, rtol=0, atol=0)


def test_per_frame_rows_are_the_condition_of_each_frame(flame):
    """``per_frame(head)[frame]`` is ``condition(canonical, head, frame)`` for the conditions of the frame alone;
    one that reads the samples (RegionExpression on faces), and a concatenation holding it, give None."""
    _, head, _ = flame
    head = dataclasses.replace(head, codes=torch.randn(FRAMES, 2, dtype=torch.float64))
    shared = SharedCode(LatentCodesConfig(dim=3, init_std=0.5)).double()
    x, frame = samples()
    for condition in (
        TrackedCondition(3, (2, 1), 2),
        shared,
        ConcatCondition(TrackedCondition(2, (0,), 2), shared),
        RegionExpression(4),
    ):
        rows = condition.per_frame(head)
        assert rows.shape == (FRAMES, condition.dim)
        assert_close(rows[frame], condition(canonical_of(x), head, frame), rtol=0, atol=0)
    regional = RegionExpression(4, faces=torch.ones(head.faces.shape[0], dtype=torch.bool))
    assert regional.per_frame(head) is None and ConcatCondition(shared, regional).per_frame(head) is None


def test_region_expression_rows_are_its_table_and_each_samples_row(flame):
    """RegionExpression.rows: the frames' expression rows and a row of ``outside`` (row FRAMES), and each sample's row:
    its frame's where its nearest face is in the region and valid, the outside row elsewhere (INSTA's lips)."""
    _, head, _ = flame
    x, frame = samples(12)
    g = torch.Generator().manual_seed(3)
    faces = torch.rand(head.faces.shape[0], generator=g) < 0.5
    face = torch.randint(0, head.faces.shape[0], (12,), generator=g)
    valid = torch.rand(12, generator=g) < 0.8
    canonical = Canonical(points=x, dirs=None, valid=valid, face=face)
    region = RegionExpression(4, faces=faces, outside=1.0)
    table, index = region.rows(canonical, head, frame)
    inside = faces[face] & valid
    expected = torch.where(inside[:, None], head.expression[frame, :4], torch.ones(12, 4, dtype=torch.float64))
    assert table.shape == (FRAMES + 1, 4) and (table[FRAMES] == 1.0).all() and table.dtype == head.expression.dtype
    assert set(region.state_dict()) == {"faces"}  # the outside row is made from ``outside``: a checkpoint keeps none
    assert torch.equal(index, torch.where(inside, frame, FRAMES)) and inside.any() and not inside.all()
    assert_close(table[index], expected, rtol=0, atol=0)
    assert_close(region(canonical, head, frame), expected, rtol=0, atol=0)
    everywhere = RegionExpression(4)  # no region: the frame's row at every sample
    table, index = everywhere.rows(canonical, head, frame)
    assert torch.equal(index, frame) and torch.equal(table, head.expression[:, :4])


def test_frame_condition_rows_are_each_frames_output_once(flame):
    """FrameCondition.rows: the network's output once for each frame present, and each sample's row: per sample, the
    network on that sample's frame's inputs."""
    _, head, _ = flame
    x, frame = samples(10)
    network = torch.nn.Linear(3, 2).double()
    condition = FrameCondition(lambda head, frames: head.expression[frames, :3], network, 2)
    table, index = condition.rows(canonical_of(x), head, frame)
    assert table.shape == (len(frame.unique()), 2)
    with torch.no_grad():
        per_sample = network(head.expression[frame, :3])
        assert_close(table[index], per_sample, rtol=1e-12, atol=1e-12)
        assert_close(condition(canonical_of(x), head, frame), per_sample, rtol=1e-12, atol=1e-12)


# ---------------------------------------------------------------- deformers


def test_mapped_normalize_and_chain_after_rigid(flame):
    _, head, _ = flame
    center, scale = torch.tensor([0.01, -0.02, 0.03], dtype=torch.float64), 0.125
    x, frame = samples()
    dirs = torch.nn.functional.normalize(torch.randn(len(x), 3, dtype=torch.float64), dim=-1)
    out = MappedDeformer(Normalize(center, scale))(x, head, frame, dirs)
    assert_close(out.points, (x - center) / scale, rtol=0, atol=0)
    assert_close(out.dirs, dirs, rtol=0, atol=0)
    assert out.valid.dtype == torch.bool and bool(out.valid.all())

    chain = DeformerChain(RigidDeformer(RigidDeformerConfig(joint=1)), MappedDeformer(Normalize(center, scale)))
    got = chain(x, head, frame).points
    expected = (head.to_joint_frame(1, frame, x[:, None])[:, 0] - center) / scale
    assert_close(got, expected)
    root = (head.to_joint_frame(0, frame, x[:, None])[:, 0] - center) / scale
    assert (got - root).abs().max() > 1e-2  # the neck's frame, not the root's


def random_hyper(condition_dim, condition=None):
    torch.manual_seed(0)
    config = HyperDeformerConfig(hidden_dim=16, hidden_layers=2, skip_layer=1, beta=10.0, hyper_dim=2)
    deformer = HyperDeformer(condition_dim, config, condition=condition).double()
    with torch.no_grad():
        deformer.output.weight.normal_(0, 0.3)
        deformer.output.bias.normal_(0, 0.3)
    return deformer


def test_hyper_deformer_reads_its_condition_module(flame):
    _, head, _ = flame
    module = ConcatCondition(TrackedCondition(4, (2,)), SharedCode(LatentCodesConfig(dim=2, init_std=1.0))).double()
    deformer = random_hyper(module.dim, module)
    x, frame = samples()
    implicit = deformer(x, head, frame)
    condition = module(canonical_of(x), head, frame)
    explicit = deformer(x, head, frame, condition=condition)
    # The module's rows are read once per frame (per_frame) there: the same up to float64 rounding.
    assert_close(implicit.points, explicit.points, rtol=0, atol=1e-14)
    zero = deformer(x, head, frame, condition=torch.zeros_like(condition))
    assert (implicit.points - zero.points).abs().max() > 1e-3  # the condition matters

    by_canonical = deformer.regularizers(implicit)
    by_deformation = deformer.regularizers(deformer.deform(x, condition))
    for name in ("offset", "hyper", "total"):
        assert_close(getattr(by_canonical, name), getattr(by_deformation, name))
    offset, hyper = implicit.points[:, :3] - x, implicit.points[:, 3:]
    assert_close(by_canonical.offset, offset.square().sum(1).mean())
    assert_close(by_canonical.hyper, hyper.square().sum(1).mean())
    assert float(by_canonical.offset.detach()) > 0

    with raises_naming("condition"):
        HyperDeformer(module.dim + 1, condition=module)


# ---------------------------------------------------------------- joint_index


def test_joint_index(flame):
    model = flame[0]
    names = ("global", "neck", "jaw", "left_eye", "right_eye")  # FLAME's joints, in smplx's order
    assert model.joint_names == names
    for i, name in enumerate(names):
        assert model.joint_index(name) == i
    assert model.joint_index("jaw", "rigid_joint") == 2
    with raises_naming("rigid_joint"):
        model.joint_index("head", "rigid_joint")
    with raises_naming("joint"):
        model.joint_index("Neck")


# ---------------------------------------------------------------- render_image with a one-frame head


def test_render_image_with_the_frames_own_head_equals_the_full_head(tiny_video):
    frames, _ = tiny_video
    parametric = load_model(frames.model_path, frames.model_type)
    torch.manual_seed(0)
    model = NeusAvatar(parametric, RigidDeformer(RigidDeformerConfig(nearest_face=True)), TINY_NEUS)
    head = tracked_head(model.parametric, frames)
    cpu = torch.device("cpu")
    f, other = 3, 0
    full = render_image(model, frames, f, 256, cpu)
    own = render_image(model, frames, f, 256, cpu, head=head.select([f]))
    assert_close(own, full)
    wrong = render_image(model, frames, f, 256, cpu, head=head.select([other]))
    assert (wrong - full).abs().max() > 1e-3  # the one-frame head is read: another frame's renders differently


def test_samples_taken_from_an_encoding_keep_their_region_rows(tiny_video):
    """NerfField.encode_samples finds each sample's row of a region condition (INSTA's lips) once; samples taken from
    the encoding (EncodedSamples.rows, as early termination keeps them) decode as the field evaluated afresh at them,
    on the lips and off them."""
    from tiny_configs import TINY_INSTA

    from headfields.models.insta import Insta

    frames = tiny_video[0]
    parametric = load_model(frames.model_path, frames.model_type)
    torch.manual_seed(0)
    field = Insta(parametric, frames.segmentation_labels, TINY_INSTA).field
    head = tracked_head(parametric, frames)
    g = torch.Generator().manual_seed(2)
    lips = field.condition.faces
    faces = torch.cat([lips.nonzero()[:, 0][:40], (~lips).nonzero()[:, 0][:40]])  # near the lips and away
    frame = torch.randint(0, head.num_frames, (len(faces),), generator=g)
    x = head.vertices[frame[:, None], head.faces[faces]].mean(1) + 1e-3 * torch.randn(len(faces), 3, generator=g)
    dirs = torch.nn.functional.normalize(torch.randn(len(faces), 3, generator=g), dim=1)
    keep = torch.randperm(len(faces), generator=g)[:50]
    with torch.no_grad():
        encoded = field.encode_samples(x, dirs, frame, head)
        taken = field.decode_samples(encoded.rows(keep), frame[keep], head)
        afresh = field(x[keep], dirs[keep], frame[keep], head)
    on_lips = lips[afresh.canonical.face.clamp(min=0)] & afresh.canonical.valid
    assert on_lips.any() and not on_lips.all()
    assert torch.equal(taken.rgb, afresh.rgb) and torch.equal(taken.density, afresh.density)
