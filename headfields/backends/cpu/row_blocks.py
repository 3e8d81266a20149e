"""Evaluations without autograd a block of rows at a time: :func:`row_blocks` runs a function over ROW_BLOCK rows of
its inputs at a time and writes its outputs into place, so an MLP's activations stay in the cache and each can be
overwritten by the next layer (:func:`~headfields.networks.softplus_`), instead of a pass over memory and a fresh
tensor, page-faulted as it is first written, per layer for every row. The Softplus MLPs (the SDF MLP, MonoNPHM's
hyper deformer) take this path on the CPU (:func:`runs_in_row_blocks`)."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from ...device_paths import takes_cuda_path

__all__ = ["ROW_BLOCK", "row_blocks", "runs_in_row_blocks"]

# Rows at a time: half oneDNN's block (onednn.ONEDNN_BLOCK_ROWS, fixed by oneDNN's buffers). A layer of 200 over
# 2,048 rows is 1.6 MB; on 20,000 rows of 4 x 200, blocks of 2,048 took 90 ms and of 4,096 110 ms (2-core AMD EPYC).
ROW_BLOCK = 2048


def runs_in_row_blocks(x: Tensor) -> bool:
    """Whether an MLP's evaluation of ``x`` (``[rows, ...]``) goes through :func:`row_blocks`: on the CPU, without
    autograd, over more than ROW_BLOCK rows."""
    return not torch.is_grad_enabled() and not takes_cuda_path(x.device) and x.shape[0] > ROW_BLOCK


def row_blocks(fn: Callable[..., tuple[Tensor, ...]], *inputs: Tensor) -> tuple[Tensor, ...]:
    """``fn(*blocks)`` on ROW_BLOCK rows of each of ``inputs`` (``[rows, ...]`` each, one ``rows``) at a time, its
    outputs (a tuple of ``[block rows, ...]``) written into place: an evaluation without autograd whose activations
    stay in the cache.

    ```python
    sdf, features = row_blocks(lambda x: (net(x), net.hidden(x)), points)  # [N], [N, H]
    ```
    """
    if not inputs:
        raise ValueError("inputs: expected one tensor at least, got none")
    rows = inputs[0].shape[0]
    for k, x in enumerate(inputs):
        if x.dim() == 0 or x.shape[0] != rows or rows == 0:
            raise ValueError(f"inputs[{k}]: expected rows = {rows} > 0 like inputs[0], got shape {list(x.shape)}")
    outputs: tuple[Tensor, ...] = ()
    for start in range(0, rows, ROW_BLOCK):
        block = slice(start, start + ROW_BLOCK)
        parts = fn(*(x[block] for x in inputs))
        length = min(ROW_BLOCK, rows - start)
        if not isinstance(parts, tuple) or any(p.dim() == 0 or p.shape[0] != length for p in parts):
            raise ValueError(f"fn: expected a tuple of tensors of {length} rows (the block's), got {parts!r:.200}")
        outputs = outputs or tuple(p.new_empty(rows, *p.shape[1:]) for p in parts)
        for out, part in zip(outputs, parts, strict=True):
            out[block] = part
    return outputs
