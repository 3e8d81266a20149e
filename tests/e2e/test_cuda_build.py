"""tools/cuda_build.py: the decoder shapes it compiles are the models' own, its shared-memory verdicts follow
the architectures' limits, and it reads each kernel's request from what the compile wrote. A real CUDA compile of the
decoder takes a minute or more a kernel (cuBLASDx), so the compile itself is replaced there; the script's figures come
from running it (docs/results.md, "The fused decoder's CUDA build"). The Gaussian rasteriser's kernels compile in a
second each: NVRTC builds them for sm_90 here."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from headfields.experimental.fused_nerf import BLOCK_THREADS, _kernel, _shape
from headfields.models.insta import Insta, cpu_config, paper_config
from headfields.parametric import load_model


@pytest.fixture
def cuda_build(tool_script):
    return tool_script("cuda_build")


@pytest.mark.parametrize("recipe", ["paper", "cpu"])
def test_the_decoder_compiled_is_the_one_insta_builds(cuda_build, recipe, tiny_video):
    config = paper_config() if recipe == "paper" else cpu_config()
    frames, _ = tiny_video
    model = Insta(load_model(frames.model_path, frames.model_type), frames.segmentation_labels, config)
    assert cuda_build.decoder_shape(recipe) == _shape(model.field.decoder)


def test_a_block_fits_where_the_architecture_lets_it(cuda_build):
    margin = 4 * BLOCK_THREADS  # Warp's static shared memory, as fused_nerf counts it
    assert cuda_build.fits(103_168, 90)  # INSTA's paper decoder, a tile of 64, on an H100
    assert cuda_build.fits(99 * 1024 - margin, 89)
    assert not cuda_build.fits(99 * 1024 - margin + 1, 89)
    assert not cuda_build.fits(198 * 1024, 86)  # MonoAvatar's tile of 64 on a GeForce RTX 30
    with pytest.raises(ValueError, match="arch"):
        cuda_build.fits(1, 70)


def test_each_kernel_is_compiled_at_the_launches_block_and_its_request_read_back(cuda_build, monkeypatch, tmp_path):
    """Warp's own compile, with only the native build replaced by one that writes a kernel's metadata where Warp
    would: the request is read from the folder Warp names, a temporary one or the cache's (whose folder name carries
    the module's hash at the block the launches use), and a kernel that fails is reported, not fatal."""
    import warp as wp
    from warp._src import context

    asked, requests = [], iter([1000, 2000, 3000, 4000, 5000, 6000])

    def build(self, device, output_dir=None, output_name=None, output_arch=None, use_ptx=None):
        asked.append((self.options["block_dim"], output_arch, use_ptx))
        folder = Path(output_dir or Path(wp.config.kernel_cache_dir) / self.get_module_identifier(self.options["block_dim"]))
        folder.mkdir(parents=True, exist_ok=True)
        (folder / self._get_meta_name(block_dim=self.options["block_dim"])).write_text(
            json.dumps({"k_cuda_kernel_forward_smem_bytes": next(requests)})
        )
        return True

    monkeypatch.setattr(context.Module, "_compile", build)
    monkeypatch.setattr(wp.config, "kernel_cache_dir", str(tmp_path))
    rows = cuda_build.build("cpu", [89], [32], None)
    assert asked == [(BLOCK_THREADS, 89, False)] * 2  # float32 and bfloat16, cubin each
    assert [(r["precision"], r["shared_bytes"], r["fits"]) for r in rows] == [("float32", 1000, True), ("bfloat16", 2000, True)]
    asked.clear()
    rows = cuda_build.build("cpu", [90], [64], tmp_path)  # into the cache: PTX and cubin
    assert asked == [(BLOCK_THREADS, 90, True), (BLOCK_THREADS, 90, False)] * 2
    assert [r["shared_bytes"] for r in rows] == [4000, 6000]  # the cubin's compile wrote each kernel's metadata last
    modules = [_kernel(cuda_build.decoder_shape("cpu"), True, 64, reduced, True).module for reduced in (False, True)]
    assert {p.name for p in tmp_path.iterdir()} == {m.get_module_identifier(BLOCK_THREADS) for m in modules}
    assert all(m.options["block_dim"] != BLOCK_THREADS or BLOCK_THREADS == 256 for m in modules)  # put back after
    assert "| cpu | 64 | bfloat16 | sm_90 |" in cuda_build.table(rows)

    def fails(*args, **kwargs):
        raise RuntimeError("NVRTC: error")

    monkeypatch.setattr(context.Module, "_compile", fails)
    rows = cuda_build.build("cpu", [90], [16], None)
    assert [r["error"] for r in rows] == ["RuntimeError: NVRTC: error"] * 2
    assert "does not build: RuntimeError: NVRTC: error" in cuda_build.table(rows)


def test_the_gaussian_kernels_build_for_sm_90(cuda_build, capsys):
    """The rasteriser's block-cooperative kernels compiled by NVRTC for an H100 / H200 (a second each, no cuBLASDx):
    each builds, its block asks for its batch of splat rows in shared memory, and fits."""
    import warp as wp

    from headfields.renderers.gaussian_blocks import BATCH
    from headfields.renderers.gaussian_kernels import PARAMS

    if wp.get_cuda_toolkit_version() is None:
        pytest.skip("this Warp was built without CUDA: no NVRTC to compile with")
    rows = cuda_build.main(["--kernels", "gaussians"])
    assert [(r["rows"], r["precision"]) for r in rows] == [
        ("forward", "float32"), ("backward", "float32"), ("forward", "float64"), ("backward", "float64")
    ]  # fmt: skip
    for r in rows:
        assert "error" not in r, r
        size = 4 if r["precision"] == "float32" else 8
        assert BATCH * (PARAMS + 1) * size <= r["shared_bytes"] < 2 * BATCH * (PARAMS + 1) * size and r["fits"]
    assert "| gaussians | backward | float64 | sm_90 |" in capsys.readouterr().out


def test_bad_arguments(cuda_build):
    with pytest.raises(SystemExit):
        cuda_build.main(["--rows", "0"])
    with pytest.raises(SystemExit):
        cuda_build.main(["--arch", "70"])  # Warp 1.19's NVRTC starts at sm_75
    with pytest.raises(SystemExit):
        cuda_build.main(["--kernels", "mlp"])
    with pytest.raises(RuntimeError, match="--cache"):  # this process imported Warp already
        cuda_build.main(["--cache", "/tmp/never"])
