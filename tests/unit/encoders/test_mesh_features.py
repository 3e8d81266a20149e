"""MonoAvatar's mesh-feature encoder: inside ``reuse_frame_features(frames)`` a call finds its samples' frames among
the block's on the device. Against the per-call path (each call finds its own frames with ``unique``) and a brute
force over frames (each frame's points encoded alone), with the read-backs counted on CUDA's paths; the block's mesh,
kept and refit from block to block, against one built afresh."""

from __future__ import annotations

import dataclasses
import tempfile

import pytest
import torch

from headfields.checks import trusted_values
from headfields.device_paths import cuda_paths
from headfields.encoders import MeshAnchoredConfig, MeshFeatureEncoder
from headfields.parametric import load_model
from headfields.synthetic import write_synthetic_flame


@pytest.fixture(scope="module")
def setting():
    with tempfile.TemporaryDirectory() as folder:
        parametric = load_model(write_synthetic_flame(folder, seed=0), "flame", num_shape=0, num_expression=4)
    gen = torch.Generator().manual_seed(0)
    head = parametric(
        expression=torch.randn(5, 4, generator=gen), pose=0.1 * torch.randn(5, len(parametric.joint_names), 3, generator=gen)
    )
    torch.manual_seed(0)
    anchored = MeshAnchoredConfig(position_frequencies=2, hidden_dim=8, hidden_layers=1, out_dim=8)
    encoder = MeshFeatureEncoder.build("codes_mlp", parametric(), 1, anchored, feature_dim=8)
    ray_frames = torch.tensor([4, 1, 1, 3, 4])  # frames 0 and 2 unseen
    ray = torch.randint(0, 5, (60,), generator=gen).sort().values  # samples of the rays, packed
    points = head.vertices[ray_frames[ray], torch.randint(0, head.vertices.shape[1], (60,), generator=gen)].detach()
    points = points + 0.01 * torch.randn(60, 3, generator=gen)
    return encoder, head, ray_frames, ray, points


def test_the_block_s_frames_give_what_each_call_s_own_give_and_nothing_is_read_back(setting, host_sync_spy):
    encoder, head, ray_frames, ray, points = setting
    frame = ray_frames[ray]
    with torch.no_grad():
        alone = torch.cat([encoder(points[frame == f], head, frame[frame == f]) for f in (1, 3, 4)])
    order = torch.cat([(frame == f).nonzero()[:, 0] for f in (1, 3, 4)])  # brute force: each frame on its own
    with torch.no_grad(), encoder.reuse_frame_features():
        own = encoder(points, head, frame)
    with cuda_paths(), trusted_values(), host_sync_spy() as spy, torch.no_grad():
        with encoder.reuse_frame_features(torch.unique(ray_frames)):
            block = encoder(points, head, frame)
            again = encoder(points[::2], head, frame[::2].contiguous())  # a second pass: its own samples, the same frames
    torch.testing.assert_close(block[order], alone, rtol=1e-6, atol=1e-7)
    # CUDA's path against the CPU's: other kernels, so close, not bit-equal (an AVX-512 EPYC differs in the last bit).
    torch.testing.assert_close(block, own, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(again, own[::2], rtol=1e-6, atol=1e-7)
    assert spy.reads == {}, spy.report()  # the block's frames given: the samples found among them on the device
    with cuda_paths(), trusted_values(), host_sync_spy() as spy, torch.no_grad(), encoder.reuse_frame_features():
        encoder(points, head, frame)
        encoder(points[::2], head, frame[::2])
    assert sum(spy.reads.values()) == 4, spy.report()  # without the block's frames: unique and tolist a call


def test_a_later_block_refits_the_kept_mesh_and_encodes_as_a_fresh_one(setting):
    encoder, head, _, ray, points = setting
    meshes = []
    for frames in (torch.tensor([0, 2, 4]), torch.tensor([1, 3, 4])):  # as many frames: the first block's mesh refit
        frame = frames[ray % 3]
        with torch.no_grad():
            fresh = encoder(points, head, frame)  # (no block: its own mesh)
            with encoder.reuse_frame_features(frames):
                kept = encoder(points, head, frame)
        torch.testing.assert_close(kept, fresh, rtol=0, atol=0)
        meshes.append(encoder._shared.meshes[3][0])
    mesh = meshes[0]
    assert meshes[1] is mesh  # refit, not built again
    torch.testing.assert_close(mesh.vertices, head.to_joint_frame(1, frames, head.vertices[frames]), rtol=0, atol=0)


def test_a_block_of_another_number_of_frames_keeps_the_first_mesh_alive(setting):
    """A captured CUDA graph reads the kept mesh's BVHs: a block of one frame (an image's render) between training
    blocks of three builds its own and leaves the three frames' mesh, which the next such block refits."""
    encoder, head, _, ray, points = setting
    frames = torch.tensor([0, 2, 4])
    with torch.no_grad():
        with encoder.reuse_frame_features(frames):
            encoder(points, head, frames[ray % 3])
        three = encoder._shared.meshes[3][0]
        with encoder.reuse_frame_features(torch.tensor([1])):
            encoder(points, head, torch.ones_like(ray))
        with encoder.reuse_frame_features(torch.tensor([1, 2, 3])):
            encoder(points, head, 1 + ray % 3)
    assert encoder._shared.meshes[3][0] is three and encoder._shared.meshes[1][0] is not three


def test_in_a_block_a_pass_without_gradient_leaves_the_kept_mesh_s_vertices_with_theirs(setting):
    encoder, head, _, ray, points = setting
    frames = torch.tensor([0, 2, 4])
    grad_head = dataclasses.replace(head, vertices=head.vertices.detach().clone().requires_grad_(True))
    with encoder.reuse_frame_features(frames):
        with torch.no_grad():
            encoder(points, grad_head, frames[ray % 3])  # (the kept mesh refit without a gradient)
        features = encoder(points, grad_head, frames[ray % 3])  # refit again: these vertices carry one
        assert encoder._shared.meshes[3][0].vertices.requires_grad
    with encoder.reuse_frame_features(frames):
        features = encoder(points, grad_head, frames[ray % 3])  # a new block: with the gradient first
        with torch.no_grad():
            encoder(points, grad_head, frames[ray % 3])  # (the mesh as it is: the same frames)
    assert encoder._shared.meshes[3][0].vertices.requires_grad
    features.sum().backward()
    assert grad_head.vertices.grad is not None and grad_head.vertices.grad.abs().sum() > 0


def test_frames_not_sorted_and_distinct_are_refused_naming_frames(setting):
    encoder = setting[0]
    for frames in (torch.tensor([3, 1]), torch.tensor([1, 1, 3])):
        with pytest.raises(ValueError, match="frames"), encoder.reuse_frame_features(frames):
            pass
