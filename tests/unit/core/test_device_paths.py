"""headfields.device_paths: the switch that sends the CPU down CUDA's code paths. On those paths the CPU must
compute what its own paths compute (they are the GPU's code, run by Warp's CPU backend and torch's CPU kernels), and
launch what a GPU launches: one Warp launch a kernel, no oneDNN, no SIMD lanes, Warp's own BVH."""

import threading

import pytest
import torch

from headfields import kernels
from headfields.backends.cpu.wide_bvh import available as wide_bvh_available
from headfields.device_paths import cuda_paths, takes_cuda_path
from headfields.encoders import HashGrid, HashGridConfig
from headfields.geometry import TriangleMesh, closest_point, head_proxy
from headfields.networks import Mlp

from helpers import raises_naming


def test_the_switch_holds_inside_its_block_and_its_thread_only():
    assert not takes_cuda_path("cpu") and takes_cuda_path(torch.device("cuda", 0)) and not takes_cuda_path("meta")
    seen = []
    with cuda_paths():
        assert takes_cuda_path("cpu") and takes_cuda_path(torch.device("cpu"))
        with cuda_paths(False):
            assert not takes_cuda_path("cpu")
        assert takes_cuda_path("cpu")
        other = threading.Thread(target=lambda: seen.append(takes_cuda_path("cpu")))
        other.start()
        other.join()
    assert not takes_cuda_path("cpu") and seen == [False]
    with raises_naming("enabled"), cuda_paths("yes"):
        pass


def test_a_launch_is_one_chunk_on_cuda_s_paths():
    assert len(kernels.launch_bounds(1 << 20, torch.device("cpu"), min_rows=1)) - 1 == min(kernels.num_cpu_threads(), 1 << 20)
    with cuda_paths():
        assert kernels.launch_bounds(1 << 20, torch.device("cpu"), min_rows=1) == [0, 1 << 20]
        count, slot = kernels.launch_slots(1 << 12, torch.device("cpu"), min_rows=1)
    assert count == 1 and slot.eq(0).all()


@pytest.mark.parametrize("features", [2, 8])
def test_the_hash_grid_encodes_and_differentiates_alike_on_both_paths(features):
    """The CPU's lanes (narrow rows) against the GPU's per-point kernel, forward and table gradient."""
    torch.manual_seed(0)
    config = HashGridConfig(levels=4, features_per_level=features, log2_table_size=10, base_resolution=4, finest_resolution=64)
    grid = HashGrid(config)
    points = torch.rand(3000, 3)
    weights = torch.randn(3000, 4 * features)

    def encoded():
        grid.zero_grad()
        out = grid(points)
        (out * weights).sum().backward()
        return out.detach(), grid.table.grad.clone()

    own, own_grad = encoded()
    with cuda_paths():
        taken, taken_grad = encoded()
    torch.testing.assert_close(taken, own, rtol=0, atol=0)
    torch.testing.assert_close(taken_grad, own_grad, rtol=1e-5, atol=1e-6)  # atomics add in another order


def test_an_mlp_without_autograd_gives_the_layer_by_layer_values_on_both_paths():
    torch.manual_seed(1)
    net = Mlp(torch.nn.Linear(32, 64), torch.nn.ReLU(), torch.nn.Linear(64, 64), torch.nn.ReLU(), torch.nn.Linear(64, 4))
    x = torch.randn(5000, 32)
    with torch.no_grad():
        want = torch.nn.Sequential(*net)(x)
        own = net(x)
        with cuda_paths():
            taken = net(x)
    torch.testing.assert_close(own, want, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(taken, want, rtol=0, atol=0)  # CUDA's path: torch's own products, layer by layer


def test_mesh_queries_answer_alike_on_both_paths():
    """The CPU's wide BVH (built after enough queries) against Warp's BVH, which a GPU walks."""
    mesh = TriangleMesh(*head_proxy())
    g = torch.Generator().manual_seed(2)
    points = torch.randn(20000, 3, generator=g) * 0.2
    assert (mesh.wide_bvh() is not None) == wide_bvh_available()  # built now, not after enough queries
    own = closest_point(mesh, points, signed=False)
    with cuda_paths():
        assert mesh.wide_bvh(len(points)) is None
        taken = closest_point(mesh, points, signed=False)
    # The same distances to float32 rounding; where two faces lie that near (64 of 20,000 here), either may answer.
    torch.testing.assert_close(taken.distance, own.distance, rtol=0, atol=1e-6)
    assert (own.face == taken.face).float().mean() > 0.99
