"""benchmarks/cuda_build.py: the decoder shapes it compiles are the models' own, its shared-memory verdicts follow
the architectures' limits, and it reads each kernel's request from what the compile wrote. A real CUDA compile takes
a minute or more a kernel (cuBLASDx), so the compile itself is replaced here; the script's figures come from running
it (docs/benchmarks.md)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from headfields.decoders.fused_nerf import BLOCK_THREADS, _shape
from headfields.models.insta import Insta, cpu_config, paper_config
from headfields.parametric import load_model

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import cuda_build  # noqa: E402


@pytest.mark.parametrize("recipe", ["paper", "cpu"])
def test_the_decoder_compiled_is_the_one_insta_builds(recipe, tiny_video):
    config = paper_config() if recipe == "paper" else cpu_config()
    frames, _ = tiny_video
    model = Insta(load_model(frames.model_path, frames.model_type), frames.segmentation_labels, config)
    assert cuda_build.decoder_shape(recipe) == _shape(model.field.decoder)


def test_a_block_fits_where_the_architecture_lets_it():
    margin = 4 * BLOCK_THREADS  # Warp's static shared memory, as fused_nerf counts it
    assert cuda_build.fits(87_040, 90, BLOCK_THREADS)  # INSTA's tile of 64 on an H100
    assert cuda_build.fits(99 * 1024 - margin, 89, BLOCK_THREADS)
    assert not cuda_build.fits(99 * 1024 - margin + 1, 89, BLOCK_THREADS)
    assert not cuda_build.fits(198 * 1024, 86, BLOCK_THREADS)  # MonoAvatar's tile of 64 on a GeForce RTX 30
    with pytest.raises(ValueError, match="arch"):
        cuda_build.fits(1, 61, BLOCK_THREADS)


def test_each_kernel_is_compiled_at_the_launches_block_and_its_request_read_back(monkeypatch, tmp_path, capsys):
    import warp as wp

    asked = []

    def compile_aot_module(module, arch, module_dir, use_ptx):  # what Warp writes: the kernel's meta among others
        asked.append((module.options["block_dim"], arch, use_ptx))
        folder = module_dir or str(tmp_path / module.get_module_identifier(BLOCK_THREADS))
        Path(folder).mkdir(parents=True, exist_ok=True)
        request = 1000 * len(asked)
        (Path(folder) / "k.meta").write_text(json.dumps({"k_cuda_kernel_forward_smem_bytes": request}))

    monkeypatch.setattr(wp, "compile_aot_module", compile_aot_module)
    monkeypatch.setattr(wp.config, "kernel_cache_dir", str(tmp_path))
    rows = cuda_build.build("cpu", [89], [32], None)
    assert asked == [(BLOCK_THREADS, 89, False)] * 2  # float32 and bfloat16, cubin each
    assert [(r["precision"], r["shared_bytes"], r["fits"]) for r in rows] == [("float32", 1000, True), ("bfloat16", 2000, True)]
    asked.clear()
    rows = cuda_build.build("cpu", [90], [64], tmp_path)  # into a cache: PTX and cubin, read where the cache keeps it
    assert asked == [(BLOCK_THREADS, 90, True), (BLOCK_THREADS, 90, False)] * 2
    assert [r["shared_bytes"] for r in rows] == [2000, 4000]
    assert "| cpu | 64 | bfloat16 | sm_90 |" in cuda_build.table(rows)


def test_bad_arguments():
    with pytest.raises(SystemExit):
        cuda_build.main(["--rows", "0"])
    with pytest.raises(SystemExit):
        cuda_build.main(["--arch", "61"])
    with pytest.raises(RuntimeError, match="--cache"):  # this process imported Warp already
        cuda_build.main(["--cache", "/tmp/never"])
