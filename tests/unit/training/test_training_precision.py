"""``TrainingConfig.precision`` (issue 78): a training step's field MLPs in bfloat16 products from float32 weights, as
tiny-cuda-nn trains INSTA's MLPs in half precision; the values themselves are checked in tests/unit/core/test_networks.py."""

import json
from collections import Counter

import pytest
import torch
from tiny_configs import TINY_INSTA
from torch.utils._python_dispatch import TorchDispatchMode

from headfields.backends.cpu import onednn
from headfields.models.insta import Insta
from headfields.parametric import load_model
from headfields.training import TrainingConfig, train

from helpers import raises_naming

PRODUCTS = ("mm", "addmm")


class ProductTypes(TorchDispatchMode):
    """The dtype of each matrix product's operands, forward and backward."""

    def __init__(self):
        super().__init__()
        self.dtypes: Counter = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func.overloadpacket.__name__ in PRODUCTS:
            self.dtypes[args[-1].dtype] += 1
        return func(*args, **(kwargs or {}))


def test_precision_is_checked():
    with raises_naming("precision"):
        TrainingConfig(precision="float16")


def _run(frames, folder, precision: str) -> tuple[list[float], Counter, Insta]:
    train_frames, eval_frames = frames
    torch.manual_seed(0)
    model = Insta(load_model(train_frames.model_path, train_frames.model_type), train_frames.segmentation_labels, TINY_INSTA)
    config = TrainingConfig(
        max_iterations=3, rays_per_batch=64, eval_every=0, checkpoint_every=0, log_every=1, precision=precision
    )
    with ProductTypes() as spy:
        train(model, train_frames, eval_frames, folder, config, device="cpu", log=None)
    losses = [json.loads(line)["loss"] for line in (folder / "log.jsonl").read_text().splitlines() if '"loss"' in line]
    return losses, spy.dtypes, model


def test_insta_trains_its_mlps_with_bfloat16_products_from_float32_weights(tiny_video, tmp_path):
    if not onednn.bfloat16_products():
        pytest.skip("this CPU has no bfloat16 products (the block then keeps float32: test_networks.py)")
    exact, exact_types, _ = _run(tiny_video, tmp_path / "float32", "float32")
    reduced, reduced_types, model = _run(tiny_video, tmp_path / "bfloat16", "bfloat16")
    assert torch.bfloat16 not in exact_types and reduced_types[torch.bfloat16] > 0  # forward and backward products
    assert reduced_types[torch.float32] > 0  # the output layers, the deformation, the evaluation
    assert all(p.dtype == torch.float32 for p in model.parameters())  # the optimiser's weights
    assert len(reduced) == len(exact) == 3 and reduced != exact
    assert reduced[0] == pytest.approx(exact[0], rel=0.02)  # the same weights, the products' rounding apart
