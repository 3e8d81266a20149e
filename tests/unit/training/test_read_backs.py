"""Host synchronisations in INSTA's training step (issues 39 and 78), found on the CPU, on CUDA's paths
(``headfields.device_paths.cuda_paths``), by a spy on the torch calls that would read a value back from a CUDA device
or copy host values to it (tools/host_syncs.py).

With fixed shapes (``TrainingConfig.fixed_shapes``), the step's drawing of rays, the march, early termination,
the field, compositing, the loss, the optimiser and the occupancy refresh read nothing back and copy nothing from
the host; the sample counts and the finite-loss check read host copies two steps later (the spy's ``late`` reads, not
read-backs: ``host_syncs.LATE_READS``). Any read-back or copy fails the test."""

import torch
from tiny_configs import TINY_GRID

import headfields.training.loop as loop
from headfields.checks import check_finite
from headfields.device_paths import cuda_paths
from headfields.geometry import TriangleMesh, box, closest_point
from headfields.models.insta import Insta, paper_config
from headfields.parametric import load_model
from headfields.training import TrainingConfig, train


def test_the_spy_sees_a_read_back_and_a_copy_in_the_library(host_sync_spy):
    with host_sync_spy() as spy:
        check_finite("x", torch.ones(3))  # bool(bad.any())
        torch.ones(3).sum().item()  # the test's own: not the library's
        torch.tensor([1.0, 2.0])
    assert spy.reads == {("__bool__", "checks.py:check_finite"): 1} and not spy.copies
    with host_sync_spy() as spy:
        box()  # its corners, faces and size made from Python values
    assert spy.copies == {("tensor", "geometry/primitives.py:box"): 3} and not spy.reads


def test_on_cuda_s_paths_the_cpu_s_own_reads_are_not_asked(host_sync_spy):
    """On the CPU a mesh query asks whether its points come in a local order (a read-back, where it costs nothing);
    on CUDA's paths it sorts them instead, as a GPU does."""
    mesh = TriangleMesh(*box())
    points = torch.rand(4096, 3) - 0.5  # many points, walked in a random order
    with host_sync_spy() as cpu:
        own = closest_point(mesh, points, validate=False)
    with cuda_paths(), host_sync_spy() as gpu:
        taken = closest_point(mesh, points, validate=False)
    assert any(where == "kernels.py:in_local_order" for _, where in cpu.reads), cpu.report()
    assert not gpu.reads and not gpu.copies, gpu.report()
    assert torch.equal(own.face, taken.face) and torch.equal(own.distance, taken.distance)


def test_value_checks_of_a_trusted_step_read_nothing_back(host_sync_spy):
    """Inside a training step (:func:`~headfields.checks.trusted_values`), the hand-written checks of values that
    MonoAvatar's and the NeuS avatars' steps met are skipped: degenerate triangles (a mesh built, triangle frames),
    points beyond float32's reach in the k-nearest search, the importance sampler's weights, an empty UV mask, NeuS's
    opacity inputs, unit normals for the lighting, a box's corners, opacities and masks in [0, 1]. Outside it they
    still run."""
    from headfields.checks import trusted_values
    from headfields.decoders import SHLighting
    from headfields.geometry import knn_vertices, sample_box, sample_uv, triangle_frames
    from headfields.losses import mask_loss
    from headfields.renderers import PackedSamples, importance_samples, neus_alpha

    vertices, faces = box()
    points = torch.rand(64, 3) - 0.5
    samples = PackedSamples(torch.tensor([0, 0, 1]), torch.tensor([0.0, 1.0, 0.0]), torch.tensor([1.0, 2.0, 1.0]), 2)
    weights, uv_map, uv = torch.tensor([0.5, 0.5, 1.0]), torch.rand(2, 4, 4), torch.rand(5, 2)
    mask = torch.ones(4, 4, dtype=torch.bool)

    def run():
        triangle_frames(vertices, faces)
        knn_vertices(TriangleMesh(vertices, faces), points, 2)
        importance_samples(samples, weights, 4)
        sample_uv(uv_map, uv, mask)
        neus_alpha(torch.zeros(3), -torch.ones(3), torch.full((3,), 0.1), 10.0)
        SHLighting()(torch.nn.functional.normalize(points, dim=-1))
        sample_box(torch.tensor([[-1.0, -1.0, -1.0], [1.0, 1.0, 1.0]]), 8, torch.Generator().manual_seed(0))
        mask_loss(torch.full((4,), 0.5), torch.ones(4))

    with cuda_paths(), host_sync_spy() as checked:
        run()
    with cuda_paths(), trusted_values(), host_sync_spy() as trusted:
        run()
    skipped = {
        ("__bool__", "geometry/triangles.py:check_nondegenerate"): 2,  # triangle frames, and the mesh built
        ("__bool__", "geometry/queries.py:knn_vertices"): 1,
        ("tolist", "renderers/hierarchical.py:_check_weights"): 1,
        ("__bool__", "geometry/uv.py:sample_uv"): 1,  # the empty mask's; its uncovered vertices' stays (an algorithm's)
        ("tolist", "renderers/neus.py:neus_alpha"): 1,
        ("__float__", "decoders/appearance.py:forward"): 1,
        ("__bool__", "geometry/sampling.py:sample_box"): 1,
        ("__bool__", "losses.py:mask_loss"): 4,  # each bound of both
    }
    for site, count in skipped.items():
        assert checked.reads.get(site, 0) - trusted.reads.get(site, 0) == count, (site, checked.report(), trusted.report())


def test_insta_s_step_reads_nothing_back_and_copies_nothing(tiny_video, tmp_path, monkeypatch, host_sync_spy):
    """With the sample budget, early termination and fixed shapes on."""
    train_frames, eval_frames = tiny_video
    parametric = load_model(train_frames.model_path, train_frames.model_type)
    # A 32^3 grid, not the paper's 128^3: its refreshes (every cell through the field) would take most of the test.
    recipe = paper_config(
        hash_grid=TINY_GRID, warmup_steps=2, occupancy_warmup=3, occupancy_resolution=32, occupancy_every=4
    )  # fmt: skip
    model = Insta(parametric, train_frames.segmentation_labels, recipe)
    spy, step = host_sync_spy(), loop._Loop.train_step

    def spied(self):  # after the first steps: the grid past its warm-up, refreshed from its occupied cells at step 8
        if self.step < 6:
            return step(self)
        with cuda_paths(), spy:
            return step(self)

    monkeypatch.setattr(loop._Loop, "train_step", spied)
    config = TrainingConfig(
        max_iterations=10, rays_per_batch=128, samples_per_batch=2048, early_stop=1e-4, fixed_shapes=True,
        eval_every=0, checkpoint_every=0, log_every=100,
    )  # fmt: skip
    train(model, train_frames, eval_frames, tmp_path / "run", config, log=None)
    assert not spy.reads and not spy.copies, spy.report()
    # The counts and the loss of the step two before, copied to pinned host memory without waiting: by the time they
    # are read the GPU has finished that step (on the CPU the copy is the tensor itself).
    assert spy.late == {("tolist", "training/host_copy.py:read"): 8}, spy.report()  # 4 steps, 2 copies each


def test_a_gaussian_avatar_s_step_reads_back_only_its_pair_count(tiny_video, tmp_path, monkeypatch, host_sync_spy):
    """Issue 80: outside the densification steps, the Gaussian avatar's step waits for the GPU once, for the number of
    (tile, Gaussian) pairs the rasteriser sorts (gsplat reads it too), and copies nothing from the host; its loss is
    read two steps later, as fixed shapes' is."""
    from headfields.models.gaussian_avatars import GaussianAvatar, cpu_config

    train_frames, eval_frames = tiny_video
    # With the paper's FLAME fine-tuning: each step poses FLAME too, its kinematic chain walked on the host.
    recipe = cpu_config(fine_tune_flame=True)
    model = GaussianAvatar(load_model(train_frames.model_path, train_frames.model_type), recipe)
    spy, step = host_sync_spy(), loop._Loop.train_step

    def spied(self):
        if self.step < 3:
            return step(self)
        with cuda_paths(), spy:
            return step(self)

    monkeypatch.setattr(loop._Loop, "train_step", spied)
    config = TrainingConfig(max_iterations=9, eval_every=0, checkpoint_every=0, log_every=100)
    train(model, train_frames, eval_frames, tmp_path / "run", config, log=None)
    assert spy.reads == {("__int__", "renderers/gaussians.py:_tile_lists"): 6}, spy.report()
    assert spy.late == {("tolist", "training/host_copy.py:read"): 6}, spy.report()
    assert not spy.copies, spy.report()
