"""The fused Warp triangle-frame deformer (deformers/triangle_kernels.py) against its torch reference
(``TriangleDeformerConfig(backend="torch")``): values and gradients for points, directions and both meshes'
vertices under every option, float64 gradcheck, boundary faces without neighbours, the per-chunk gradient
buffers of concurrent CPU launches, and second derivatives through the reference."""

import dataclasses
import itertools

import pytest
import torch
import torch.nn.functional as F

from headfields import kernels
from headfields.backends.cpu.wide_bvh import WideBvh
from headfields.deformers import TriangleDeformerConfig, TriangleFrameDeformer
from headfields.geometry import box, closest_point, face_adjacency
from headfields.geometry import mesh as mesh_module
from headfields.geometry.triangles import closest_point_on_triangle, gather_triangles
from headfields.parametric import load_model
from headfields.synthetic import write_synthetic_flame

from hand_heads import bent_head, make_head, near_points

OPTIONS = list(itertools.product([False, True], [False, True], [None, 0.15], ["posed", "rest"]))


def random_masks(num_faces: int, device, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return ((torch.rand(num_faces, generator=g) < 0.5).to(device), (torch.rand(num_faces, generator=g) < 0.5).to(device))


def with_rest(head, seed: int = 0):
    """``head`` whose rest mesh differs from its posed mesh (a smooth bend of it)."""
    rest = head.vertices * (1 + 0.1 * torch.sin(3 * head.vertices[..., 1:2] + seed))
    return dataclasses.replace(head, rest_vertices=rest)


def run(backend: str, head, x, frame, dirs, *, rows=None, scale=None, blend=None, grad=True, **config):
    """One path's output, and with ``grad`` the gradients of a fixed random linear loss over ``rows`` (Bool
    ``[N]``, None: all) w.r.t. points, directions, the source mesh's vertices and the canonical vertices."""
    deformer = TriangleFrameDeformer(TriangleDeformerConfig(backend=backend, **config), scale_faces=scale, blend_faces=blend)
    source_name = "rest_vertices" if config.get("source") == "rest" else "vertices"
    leaves = [x, dirs, getattr(head, source_name), head.canonical_vertices]
    leaves = [None if t is None else t.detach().clone().requires_grad_(grad) for t in leaves]
    head = dataclasses.replace(head, **{source_name: leaves[2], "canonical_vertices": leaves[3]})
    out = deformer(leaves[0], head, frame, leaves[1])
    if not grad:
        return out, None
    g = torch.Generator().manual_seed(7)
    weight = torch.ones(len(x), 1, dtype=out.points.dtype) if rows is None else rows[:, None].to(out.points.dtype).cpu()
    loss = (out.points * (weight * torch.randn(out.points.shape, generator=g, dtype=out.points.dtype)).to(x.device)).sum()
    if out.dirs is not None:
        loss = loss + (out.dirs * (weight * torch.randn(out.dirs.shape, generator=g, dtype=out.dirs.dtype)).to(x.device)).sum()
    grads = torch.autograd.grad(loss, [t for t in leaves if t is not None])
    return out, grads


def face_distance(vertices, faces, x, frame, face):
    """Distance (float64) from ``x[i]`` to triangle ``face[i]`` of frame ``frame[i]``."""
    tri = gather_triangles(vertices.double(), faces, frame, face)
    point, _ = closest_point_on_triangle(x.double(), tri[:, 0], tri[:, 1], tri[:, 2])
    return torch.linalg.vector_norm(x.double() - point, dim=-1)


def compare(head, x, frame, dirs, *, atol, grad_atol, grad_rtol=0.0, **options):
    """The Warp path against the torch path: the same ``valid``; the same faces, or where they differ a tie (a
    shared vertex or edge nearest: either face is a nearest one, and the two queries may pick either); points,
    directions and the gradients of a loss over the rows with one face equal."""
    warp, _ = run("warp", head, x, frame, dirs, grad=False, **options)
    reference, _ = run("torch", head, x, frame, dirs, grad=False, **options)
    assert torch.equal(warp.valid, reference.valid)
    differ = warp.face != reference.face
    assert differ.float().mean() < 0.02
    if differ.any():
        source = head.rest_vertices if options.get("source") == "rest" else head.vertices
        ours, theirs = (
            face_distance(source, head.faces, x[differ], frame[differ], f[differ]) for f in (warp.face, reference.face)
        )
        torch.testing.assert_close(ours, theirs, atol=1e-6, rtol=0)
    same = ~differ
    assert warp.points.dtype == reference.points.dtype and (dirs is None) == (warp.dirs is None)
    torch.testing.assert_close(warp.points[same], reference.points[same], atol=atol, rtol=0)
    if dirs is not None:
        torch.testing.assert_close(warp.dirs[same], reference.dirs[same], atol=atol, rtol=0)
    _, warp_grads = run("warp", head, x, frame, dirs, rows=same, **options)
    _, torch_grads = run("torch", head, x, frame, dirs, rows=same, **options)
    names = ["x"] + (["dirs"] if dirs is not None else []) + ["source", "canonical"]
    for name, a, b in zip(names, warp_grads, torch_grads, strict=True):
        torch.testing.assert_close(a, b, atol=grad_atol, rtol=grad_rtol, msg=name)
    return warp


@pytest.mark.parametrize(("scale_on", "blend_on", "max_distance", "source"), OPTIONS)
def test_float64_values_and_gradients_equal_the_torch_path(device, scale_on, blend_on, max_distance, source):
    head = with_rest(bent_head(frames=3, seed=11, device=device))
    mesh = head.rest_mesh if source == "rest" else head.posed_mesh
    x, frame, dirs = near_points(dataclasses.replace(head, vertices=mesh.vertices), 60, 0.3, seed=3)
    if max_distance is not None:  # Warp's float32 distance decides; keep clear of ties with torch's float64 one
        distance = closest_point(mesh, x, frame).distance
        keep = (distance - max_distance).abs() > 1e-6
        x, frame, dirs = x[keep], frame[keep], dirs[keep]
    scale, blend = random_masks(head.faces.shape[0], device)
    options = {"scale": scale if scale_on else None, "blend": blend if blend_on else None}
    config = {"max_distance": max_distance, "source": source, "area_exponent": 0.7}
    for d in (dirs, None):
        out = compare(head, x, frame, d, atol=1e-10, grad_atol=1e-9, **options, **config)
        assert out.points.dtype == torch.float64
        if max_distance is not None:
            assert 0.1 < out.valid.float().mean() < 0.9


def test_float32_values_equal_the_torch_path_to_rounding(device):
    head = bent_head(frames=3, seed=12, device=device)
    head = dataclasses.replace(head, vertices=head.vertices.float(), rest_vertices=head.vertices.float())
    head = dataclasses.replace(head, canonical_vertices=head.canonical_vertices.float())
    x, frame, dirs = near_points(head, 300, 0.3, seed=4)
    scale, blend = random_masks(head.faces.shape[0], device, seed=2)
    for options in ({}, {"scale": scale, "blend": blend}, {"scale": scale, "blend": blend, "max_distance": 0.15}):
        out = compare(head, x, frame, dirs, atol=2e-5, grad_atol=2e-3, grad_rtol=1e-3, **options)
        assert out.points.dtype == torch.float32


def test_insta_masks_on_a_parametric_head(tmp_path):
    write_synthetic_flame(tmp_path)
    model = load_model(tmp_path, num_shape=10, num_expression=10, dtype=torch.float64)
    pose = torch.zeros(2, 5, 3, dtype=torch.float64)
    pose[:, 0] = torch.tensor([[0.3, -0.5, 0.2], [-0.2, 0.4, 0.1]])
    pose[:, 2, 0] = torch.tensor([0.25, 0.1])
    expression = torch.zeros(2, 10, dtype=torch.float64)
    expression[:, 4] = torch.tensor([2.0, -1.0])
    head = model(expression=expression, pose=pose)
    x, frame, dirs = near_points(head, 500, 0.01, seed=2)
    # Also 1 cm around the vertices (as benchmarks/compare.py samples): where a vertex is nearest, faces tie.
    g = torch.Generator().manual_seed(3)
    around = head.vertices[frame, torch.randint(head.vertices.shape[1], (len(x),), generator=g)]
    x = torch.cat([x, around + 0.01 * torch.randn(around.shape, generator=g, dtype=torch.float64)])
    frame, dirs = frame.repeat(2), dirs.repeat(2, 1)
    options = {"scale": head.face_mask("eyes"), "blend": head.face_mask("skin", "lips")}
    compare(head, x, frame, dirs, atol=1e-10, grad_atol=1e-8, grad_rtol=1e-8, **options)


def boxy_head(open_mesh: bool = False):
    """A perturbed box (posed) over a box (canonical), points above the centroid of a few triangles: the face
    choice is stable under gradcheck's perturbations. ``open_mesh`` drops two faces: boundary edges."""
    v, f = box(dtype=torch.float64)
    if open_mesh:
        f = f[:-2]
    g = torch.Generator().manual_seed(0)
    posed = v * torch.tensor([1.2, 0.9, 1.1], dtype=torch.float64) + 0.05 * torch.randn(v.shape, generator=g, dtype=torch.float64)
    pick = torch.tensor([0, 3, 5, 8, 9])
    tri = posed[f[pick]]
    n = F.normalize(torch.linalg.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]), dim=-1)
    x = tri.mean(dim=1) + 0.07 * n
    dirs = F.normalize(torch.randn(len(pick), 3, generator=g, dtype=torch.float64), dim=-1)
    return v, f, posed, x, dirs, pick


@pytest.mark.parametrize("open_mesh", [False, True])
def test_gradcheck_in_float64(open_mesh):
    v, f, posed, x, dirs, pick = boxy_head(open_mesh)
    selected = torch.arange(f.shape[0]) % 2 == 0
    far = torch.tensor([[5.0, 5.0, 5.0]], dtype=torch.float64)  # dropped by max_distance
    x = torch.cat([x, far])
    dirs = torch.cat([dirs, F.normalize(far, dim=-1)])
    deformers = (
        TriangleFrameDeformer(TriangleDeformerConfig(max_distance=1.0)),
        TriangleFrameDeformer(
            TriangleDeformerConfig(max_distance=1.0, area_exponent=0.5), scale_faces=selected, blend_faces=~selected
        ),
        TriangleFrameDeformer(
            TriangleDeformerConfig(max_distance=1.0), scale_faces=~selected, blend_faces=torch.ones_like(selected)
        ),
    )
    for i, deformer in enumerate(deformers):

        def fn(x, d, posed, canonical, deformer=deformer):
            out = deformer(x, make_head(posed[None], canonical, f), 0, d)
            return out.points, out.dirs

        inputs = tuple(t.clone().requires_grad_() for t in (x, dirs, posed, v))
        assert torch.autograd.gradcheck(fn, inputs, fast_mode=i < 2)  # every option on in the last: the full check
        out = deformer(x, make_head(posed[None], v, f), 0, dirs)
        assert torch.equal(out.face, torch.cat([pick, torch.tensor([-1])]))


def test_boundary_faces_blend_with_the_neighbours_they_have():
    v, f, posed, x, dirs, pick = boxy_head(open_mesh=True)
    assert (face_adjacency(f)[pick] < 0).any(dim=1).sum() >= 2  # some picked faces lie on the boundary
    head = make_head(posed[None], v, f)
    everything = torch.ones(f.shape[0], dtype=torch.bool)
    frame = torch.zeros(len(x), dtype=torch.long)
    out = compare(head, x, frame, dirs, atol=1e-12, grad_atol=1e-10, blend=everything, scale=everything)
    assert torch.equal(out.face, pick)


def test_vertex_gradients_of_concurrent_cpu_chunks_add_up():
    """Enough samples that launch_rows splits the rows into chunks run concurrently (with two or more CPU threads),
    each adding its vertex gradients into a buffer of its own: the buffers sum to the torch path's gradients."""
    head = bent_head(frames=2, seed=13)
    x, frame, dirs = near_points(head, 12_000, 0.2, seed=6)
    if kernels.num_cpu_threads() > 1:
        assert len(kernels.launch_bounds(len(x), x.device)) > 2
    scale, blend = random_masks(head.faces.shape[0], "cpu", seed=3)
    compare(head, x, frame, dirs, atol=1e-10, grad_atol=1e-9, grad_rtol=1e-10, scale=scale, blend=blend)


def test_second_derivatives_go_through_the_torch_reference():
    v, f, posed, x, dirs, _ = boxy_head()
    selected = torch.arange(f.shape[0]) % 2 == 0
    deformer = TriangleFrameDeformer(scale_faces=selected, blend_faces=~selected)

    def fn(x, posed):
        out = deformer(x, make_head(posed[None], v, f), 0, dirs)
        return out.points, out.dirs

    inputs = tuple(t.clone().requires_grad_() for t in (x, posed))
    assert torch.autograd.gradgradcheck(fn, inputs, fast_mode=True)


def test_forward_only_and_dtype_promotion():
    head = bent_head(frames=2, seed=14)
    x, frame, dirs = near_points(head, 50, 0.3)
    with torch.no_grad():
        out = TriangleFrameDeformer()(x, head, frame, dirs)
    assert out.points.grad_fn is None and out.face.dtype == torch.long
    # float32 samples on a float64 head: mapped in float64, the gradient back in float32.
    x32 = x.float().requires_grad_()
    out = TriangleFrameDeformer()(x32, head, frame, dirs.float())
    assert out.points.dtype == torch.float64 and out.dirs.dtype == torch.float64
    out.points.sum().backward()
    assert x32.grad.dtype == torch.float32
    reference = TriangleFrameDeformer(TriangleDeformerConfig(backend="torch"))(x32, head, frame, dirs.float())
    torch.testing.assert_close(out.points, reference.points, atol=1e-12, rtol=0)
    empty = TriangleFrameDeformer()(x[:0], head, frame[:0], dirs[:0])
    assert empty.points.shape == (0, 3) and empty.dirs.shape == (0, 3) and empty.face.shape == (0,)
    # No samples with strides Warp would refuse (torch calls them contiguous): Portrait360's 512² render met them.
    odd = x.new_empty(0, 3).as_strided((0, 3), (1, 2)).requires_grad_()
    empty = TriangleFrameDeformer()(odd, head, frame[:0], odd)
    empty.points.sum().backward()
    assert empty.points.shape == (0, 3) and odd.grad.shape == (0, 3)


@pytest.mark.parametrize("max_distance", [None, 0.15])
def test_faces_from_the_cpu_wide_bvh_map_like_the_torch_path(monkeypatch, max_distance):
    # On the CPU a mesh queried enough (32 queries a face) finds the nearest faces on its wide BVH and the fused kernel
    # only maps them: built here at the first query.
    monkeypatch.setattr(mesh_module, "WIDE_BUILD_QUERIES_PER_FACE", 0)
    head = bent_head(frames=3, seed=13, device=torch.device("cpu"))
    x, frame, dirs = near_points(head, 300, 0.3, seed=5)
    scale, blend = random_masks(head.faces.shape[0], torch.device("cpu"), seed=3)
    out = compare(head, x, frame, dirs, atol=1e-10, grad_atol=1e-9, scale=scale, blend=blend, max_distance=max_distance)
    assert isinstance(head.posed_mesh.wide_bvh(), WideBvh)
    assert out.valid.all() if max_distance is None else 0.1 < out.valid.float().mean() < 0.9


@pytest.mark.parametrize("wide", [False, True])
def test_samples_along_rays_walk_in_their_own_order_with_the_same_answers(monkeypatch, wide):
    """On the CPU samples packed along rays skip the Morton sort (kernels.in_local_order): the faces, points,
    directions and their gradients are those of the Morton walk (the vertex gradients to summation order)."""
    monkeypatch.setattr(mesh_module, "WIDE_BUILD_QUERIES_PER_FACE", 0 if wide else 10**9)
    head = bent_head(frames=3, seed=2, device=torch.device("cpu"))
    g = torch.Generator().manual_seed(4)
    rays, steps = 200, 30
    frame = torch.randint(0, 3, (rays,), generator=g).repeat_interleave(steps)
    towards = F.normalize(torch.randn(rays, 3, generator=g, dtype=torch.float64), dim=-1).repeat_interleave(steps, 0)
    miss = 0.3 * torch.randn(rays, 3, generator=g, dtype=torch.float64).repeat_interleave(steps, 0)
    aim = head.vertices.mean(dim=1)[frame] + miss
    t = (torch.arange(steps, dtype=torch.float64) * 0.1 - 1.5).repeat(rays)[:, None]  # 30 steps of 0.1 across the head
    x, dirs = aim + t * towards, towards
    mesh = head.posed_mesh
    queries = mesh.to_warp_frame(x, frame)
    assert torch.equal(mesh.query_order(queries, frame), torch.arange(len(x)))  # walked as given
    assert torch.equal(mesh.query_order(queries, frame, always_sorted=True), kernels.morton_order(queries, frame, 3))
    shuffled = torch.randperm(len(x), generator=g)
    assert not torch.equal(mesh.query_order(queries[shuffled], frame[shuffled]), torch.arange(len(x)))
    scale, blend = random_masks(head.faces.shape[0], torch.device("cpu"), seed=1)
    own, own_grads = run("warp", head, x, frame, dirs, scale=scale, blend=blend)
    monkeypatch.setattr(kernels, "in_local_order", lambda points: False)  # every walk in Morton order
    sorted_, sorted_grads = run("warp", head, x, frame, dirs, scale=scale, blend=blend)
    assert torch.equal(own.face, sorted_.face) and torch.equal(own.points, sorted_.points)
    assert torch.equal(own.dirs, sorted_.dirs)
    for name, a, b in zip(["x", "dirs", "source", "canonical"], own_grads, sorted_grads, strict=True):
        if name in ("x", "dirs"):
            assert torch.equal(a, b), name
        else:
            torch.testing.assert_close(a, b, atol=1e-12, rtol=0, msg=name)
