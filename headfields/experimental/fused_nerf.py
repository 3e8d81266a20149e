"""A :class:`~headfields.decoders.NerfDecoder`'s inference pass in one Warp kernel: both MLPs on a tile of samples.
Experimental: no device takes it by default; a user opts in a decoder with :func:`fused_inference`.

Layer by layer, torch writes each MLP's activations to memory and reads them back, launches a kernel a product, a
bias, a ReLU and a concatenation, and INSTA's lips condition enters by a 144-wide concatenation. Here a block of
threads takes ``TILE_ROWS`` samples through the density MLP, the activation, and the colour MLP in tiles
(``wp.tile_matmul``: cuBLASDx on CUDA, a scalar product on the CPU): the inputs are read once and only density,
colour and the geometry features are written. The concatenations become sums of products (``[x, c] W^T =
x Wx^T + c Wc^T``), so no input is copied; a condition given as a table and each sample's row of it (INSTA's frames'
lips expressions, ``fields.RegionExpression.rows``) is gathered in the kernel. No autograd: training keeps torch's
layers. Inside :func:`~headfields.networks.reduced_precision`, where torch's layers would run their products in
bfloat16 (the viewer's), the hidden layers read bfloat16 operands (Warp's bfloat16 tiles, summed in float32) and round
their outputs to bfloat16, the output layers stay float32: torch's rounding, in another order of summation.

On the CPU, where oneDNN runs the layers near the float32 peak on every core (``networks.Mlp``), this kernel runs on one
thread (Warp's CPU tiles share one arena: ``kernels.launch_rows``) and is 4-5x slower (INSTA's decoder on 65,536
samples, 2 cores: 0.47 s against torch's 0.10 s), so the CPU never takes it unless asked. On a GPU it is a variant
of ``tools/frame_variants.py`` until a GPU has measured it; the decoder itself keeps torch's layers. On CUDA it
takes only bfloat16 products (the viewer's ``reduced_precision()``): its float32 products came out wrong there
for INSTA's decoder (an H200, 2026-11-27; right for MonoAvatar's and on the CPU), cause not yet found.
The weights are packed for the kernel on each call (two small operations), so they never lag the parameters.

    with torch.no_grad():
        out = fused_decode(decoder, features, dirs_encoded, cond)  # decoder(features, dirs_encoded, cond), fused
"""

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from typing import Any, no_type_check

import torch
import warp as wp
from jaxtyping import Float, Int
from torch import Tensor, nn

from .. import kernels
from ..checks import check_int
from ..decoders.nerf import DecoderOutput, NerfDecoder
from ..networks import (
    SOFTPLUS_THRESHOLD,  # F.softplus's default: x itself above it, as NerfDecoder's softplus
    _product_dtype,  # the products' dtype: bfloat16 inside reduced_precision() where it applies
)

__all__ = ["TILE_ROWS", "fused_decode", "fused_density", "fused_inference", "fuses"]

# Samples a block. Warp asks a GPU for the shared memory of all the kernel's tiles at once: INSTA's decoder 87 KB at
# 64 samples (52 KB at 32), MonoAvatar's 198 KB (132 KB), more than some GPUs have (a GeForce's 99 KB), where the tile
# halves (_tile_rows). The weights are read once a block: on the CPU, 64 samples took 20-30% less time than 32 (both
# decoders). A GPU's best: frame_variants.py's "32-sample tiles".
TILE_ROWS = 64
BLOCK_THREADS = 128  # threads a block, which share its products
MIN_TILE_ROWS = 16  # the smallest tile tried where a GPU's shared memory cannot hold TILE_ROWS samples' layers


@dataclass(frozen=True)
class _Shape:
    """A decoder's widths and depths: the kernel's compile-time constants."""

    features: int
    cond: int  # conditioning width, 0 without
    cond_to_density: bool
    cond_to_color: bool
    dirs: int
    hidden: int
    density_layers: int
    geometry: int
    color_hidden: int
    color_layers: int
    softplus: bool

    @property
    def width(self) -> int:  # the packed weights' columns: every layer's output fits
        return max(self.hidden, 1 + self.geometry, self.color_hidden, 3)


def _shape(decoder: nn.Module) -> _Shape | None:
    """The decoder's shape where the kernel covers it (None: layers missing, or not plain linear layers)."""
    c = decoder.config
    if c.density_layers < 1 or c.color_layers < 1 or c.geometry_dim < 1:
        return None
    nets = (decoder.density_net, decoder.color_net)
    for net in nets:
        for layer in net:
            if not isinstance(layer, nn.Linear | nn.ReLU) or (isinstance(layer, nn.Linear) and layer.bias is None):
                return None
    color_hidden = decoder.color_net[0].out_features
    return _Shape(
        decoder.feature_dim, decoder.cond_dim, c.cond_to_density, c.cond_to_color, decoder.dir_dim, c.hidden_dim,
        c.density_layers, c.geometry_dim, color_hidden, c.color_layers, c.density_activation == "softplus",
    )  # fmt: skip


def _unfit(decoder: nn.Module, features: Tensor) -> str | None:
    """Why the kernel cannot evaluate ``decoder`` on ``features`` here (None: it can)."""
    if torch.is_grad_enabled():
        return "expected no autograd (training keeps torch's layers)"
    if features.dtype != torch.float32 or decoder.density_net[0].weight.dtype != torch.float32:
        return f"expected float32 features and parameters, got {features.dtype} and {decoder.density_net[0].weight.dtype}"
    if _shape(decoder) is None:
        return "expected a hidden layer in each MLP, a geometry feature and linear layers with biases"
    if features.device.type == "cuda" and _product_dtype(features, True) is None:
        return (
            "expected reduced_precision() on CUDA: there the kernel's float32 products came out wrong (INSTA's decoder "
            "on an H200, Warp 1.19.0's cuBLASDx products: up to 1.0 in rgb; its bfloat16 ones match), torch's layers "
            "serve float32"
        )
    return None


def fuses(decoder: nn.Module, features: Tensor) -> bool:
    """Whether the kernel serves ``decoder`` on ``features`` (what :func:`fused_inference` asks): without autograd,
    float32 features and parameters, a decoder the kernel covers (a hidden layer in each MLP and a geometry feature),
    whose tiles fit the device's shared memory (on CUDA: built there to be asked, and bfloat16 products)."""
    if not isinstance(decoder, NerfDecoder):
        return False
    if _unfit(decoder, features) is not None:
        return False
    reduced = _product_dtype(features, True) is not None
    return _tile_rows(_shape(decoder), True, reduced, decoder.cond_dim > 0, features.device, TILE_ROWS) is not None


@cache
def _tile_rows(s: _Shape, color: bool, reduced: bool, gathered: bool, device: torch.device, rows: int) -> int | None:
    """``rows``, or the largest half of it down to :data:`MIN_TILE_ROWS` whose kernel's shared memory fits CUDA
    ``device`` (None: none does); the CPU's tiles take ``rows`` (MonoAvatar's and INSTA's fit its arena at 64)."""
    if device.type != "cuda":
        return rows
    limit = kernels.warp_device(device).max_shared_memory_per_block
    while rows >= MIN_TILE_ROWS:
        need = kernels.tile_shared_bytes(_kernel(s, color, rows, reduced, gathered), device, BLOCK_THREADS)
        if need is None or _fits_block(need, limit):
            return rows
        rows //= 2
    return None


def _fits_block(request: int, limit: int) -> bool:
    """Whether a block whose tiles ask ``request`` bytes of shared memory fits a GPU that lets a block have ``limit``:
    Warp's own static shared memory comes on top of the tiles' request (its allocator's offset, 4 bytes a thread)."""
    return request + 4 * BLOCK_THREADS <= limit


def _linears(decoder: nn.Module) -> list[nn.Linear]:
    return [layer for net in (decoder.density_net, decoder.color_net) for layer in net if isinstance(layer, nn.Linear)]


@cache
def _packing(s: _Shape, sizes: tuple[tuple[int, int], ...], device: torch.device) -> Tensor:
    """For each entry of the packed weights, its place in the parameters laid end to end (each layer's weight then its
    bias, the last place a zero): the packing as one gather. ``sizes``: each linear layer's ``(out, in)``."""
    rows, start = [], 0
    for out, inputs in sizes:
        block = torch.full((inputs + 1, s.width), -1, dtype=torch.long)  # -1: the padding's zero
        block[:inputs, :out] = start + torch.arange(out * inputs).reshape(out, inputs).t()  # W^T
        block[inputs, :out] = start + out * inputs + torch.arange(out)  # the bias row
        rows.append(block)
        start += out * inputs + out
    index = torch.cat(rows)
    return index.masked_fill(index < 0, start).reshape(-1).to(device)  # the zero after the parameters


def _packed(decoder: nn.Module, s: _Shape) -> Tensor:
    """Every linear layer's ``[W^T; b]`` (``in + 1`` rows, ``out`` of :attr:`_Shape.width` columns), the density MLP's
    then the colour MLP's, in one float32 tensor: packed on each call (a concatenation and a gather), so it is never
    stale, whatever changed the parameters (a fused optimiser's step changes no version counter). ``s``: the
    decoder's shape."""
    linears = _linears(decoder)
    weight = linears[0].weight
    index = _packing(s, tuple(tuple(layer.weight.shape) for layer in linears), weight.device)
    with torch.no_grad():
        flat = torch.cat([t.reshape(-1) for layer in linears for t in (layer.weight, layer.bias)] + [weight.new_zeros(1)])
        return flat[index].reshape(-1, s.width)


@no_type_check
@wp.func
def _relu_value(x: float):
    return wp.max(x, 0.0)


@no_type_check
@wp.func
def _sigmoid(x: float):
    return 1.0 / (1.0 + wp.exp(-x))


@no_type_check
@wp.func
def _softplus(x: float):
    # log1p(exp(x)) as torch computes it: log(1 + u) loses u < 1e-7 to rounding, u * log(v) / (v - 1) does not.
    if x > SOFTPLUS_THRESHOLD:
        return x
    u = wp.exp(x)
    v = 1.0 + u
    if v == 1.0:
        return u
    return u * wp.log(v) / (v - 1.0)


# Layers as functions of their own: the shared memory a product takes is released when its function returns (a
# kernel's straight-line tiles would hold theirs to its end). Their tiles live in shared memory, where a product
# reads its operands inside a function (a register tile there is not moved into shared memory for it).


@cache
def _bias(rows: int, outputs: int, dtype: type) -> wp.Function:
    """A float32 shared ``[rows, outputs]`` tile of the bias row at ``(row, col)`` of packed weights of ``dtype``: a
    layer's accumulator before its products."""

    @no_type_check
    @wp.func
    def bias(w: wp.array2d(dtype=dtype), row: int, col: int):
        out = wp.tile_zeros(shape=(rows, outputs), dtype=float, storage="shared")
        wp.tile_assign(out, wp.tile_broadcast(wp.tile_load(w, shape=(1, outputs), offset=(row, col)), shape=(rows, outputs)))
        return out

    return bias


@cache
def _product(rows: int, inputs: int, outputs: int, dtype: type) -> wp.Function:
    """``out += x W`` for float32 shared tiles ``x [rows, inputs]`` and ``out [rows, outputs]`` and the ``[inputs,
    outputs]`` block at ``(first, col)`` of packed weights of ``dtype``, ``x`` rounded to ``dtype`` first."""

    @no_type_check
    @wp.func
    def product(w: wp.array2d(dtype=dtype), x: Any, out: Any, first: int, col: int):
        weights = wp.tile_load(w, shape=(inputs, outputs), offset=(first, col), storage="shared")
        if wp.static(dtype is float):
            wp.tile_matmul(x, weights, out)
        else:
            rounded = wp.tile_zeros(shape=(rows, inputs), dtype=dtype, storage="shared")
            wp.tile_assign(rounded, x)
            wp.tile_matmul(rounded, weights, out)

    return product


@cache
def _input_product(rows: int, inputs: int, outputs: int, dtype: type) -> wp.Function:
    """:func:`_product` of the ``[rows, inputs]`` rows of ``a`` from row ``row`` (the tile loaded in it, and released)."""
    product = _product(rows, inputs, outputs, dtype)

    @no_type_check
    @wp.func
    def input_product(w: wp.array2d(dtype=dtype), a: wp.array2d(dtype=float), row: int, out: Any, first: int, col: int):
        product(w, wp.tile_load(a, shape=(rows, inputs), offset=(row, 0), storage="shared"), out, first, col)

    return input_product


@cache
def _gathered_product(rows: int, inputs: int, outputs: int, dtype: type) -> wp.Function:
    """:func:`_product` of the rows of ``table`` that ``index`` names from row ``row`` on (a condition's rows, gathered
    in the kernel: no ``[N, C]`` condition in memory)."""
    product = _product(rows, inputs, outputs, dtype)

    @no_type_check
    @wp.func
    def gathered_product(
        w: wp.array2d(dtype=dtype),
        table: wp.array2d(dtype=float),
        index: wp.array(dtype=wp.int32),
        row: int,
        out: Any,
        first: int,
        col: int,
    ):
        at = wp.tile_load(index, shape=rows, offset=row)  # past the last sample: 0, a row read for nothing
        product(w, wp.tile_load_indexed(table, indices=at, shape=(rows, inputs), axis=0, storage="shared"), out, first, col)

    return gathered_product


@cache
def _relu(rows: int, cols: int, dtype: type) -> wp.Function:
    """The ReLU of a float32 shared ``[rows, cols]`` tile in place, its values rounded to ``dtype`` (a layer's output
    in bfloat16, as torch's bfloat16 layers return it; a float32 layer's as it is)."""

    @no_type_check
    @wp.func
    def relu(x: Any):
        wp.tile_assign(x, wp.tile_map(_relu_value, x))
        if wp.static(dtype is not float):
            rounded = wp.tile_zeros(shape=(rows, cols), dtype=dtype, storage="shared")
            wp.tile_assign(rounded, x)
            wp.tile_assign(x, rounded)

    return relu


@cache
def _hidden_layers(rows: int, width: int, layers: int, dtype: type) -> wp.Function:
    """``layers`` hidden layers of ``width`` on the float32 shared tile ``h`` in place (its values rounded to ``dtype``
    after each, as :func:`_relu` rounds), the first's weights at row ``first`` of the packed weights of ``dtype``."""
    bias, product, relu = _bias(rows, width, dtype), _product(rows, width, width, dtype), _relu(rows, width, dtype)

    @no_type_check
    @wp.func
    def hidden_layers(w: wp.array2d(dtype=dtype), h: Any, first: int):
        for layer in range(layers):
            start = first + layer * (width + 1)
            z = bias(w, start + width, 0)
            product(w, h, z, start, 0)
            relu(z)
            wp.tile_assign(h, z)

    return hidden_layers


@cache
def _kernel(s: _Shape, color: bool, rows: int, reduced: bool, gathered: bool) -> wp.Kernel:
    """The kernel of shape ``s``: density (and, with ``color``, geometry and rgb) of ``rows`` samples a block; with
    ``reduced``, the hidden layers' products in bfloat16 as torch's layers run them in ``reduced_precision()``; with
    ``gathered``, the condition as rows of a table and each sample's row (else one row a sample)."""
    R, F, C, D, H, G, CH = rows, s.features, s.cond, s.dirs, s.hidden, s.geometry, s.color_hidden
    CD = C if s.cond_to_density else 0
    CC = C if s.cond_to_color else 0
    # The first row of each layer in the packed weights (see _packed); a layer's bias row follows its inputs' rows.
    DENSITY_BIAS = F + CD
    HIDDEN0 = DENSITY_BIAS + 1
    DENSITY_OUT = HIDDEN0 + (s.density_layers - 1) * (H + 1)
    COLOR0 = DENSITY_OUT + H + 1
    COLOR_BIAS = COLOR0 + G + D + CC
    COLOR_HIDDEN0 = COLOR_BIAS + 1
    COLOR_OUT = COLOR_HIDDEN0 + (s.color_layers - 1) * (CH + 1)
    SOFTPLUS = s.softplus
    # The hidden layers (each followed by a ReLU) read their inputs and weights in LOW: float32, or bfloat16 where
    # reduced, summed in float32 and their outputs rounded to LOW (torch's bfloat16 layers return bfloat16); the
    # output layers read float32 (networks.Mlp keeps them so).
    LOW = wp.bfloat16 if reduced else float
    bias_h, bias_ch = _bias(R, H, LOW), _bias(R, CH, LOW)
    bias_out, bias_3 = _bias(R, 1 + G, float), _bias(R, 3, float)
    features_in, dirs_in = _input_product(R, F, H, LOW), _input_product(R, D, CH, LOW)
    conditioned = _gathered_product if gathered else _input_product
    cond_in, cond_color_in = conditioned(R, C, H, LOW), conditioned(R, C, CH, LOW)
    GATHERED = gathered
    geometry_in = _product(R, G, CH, LOW)
    density_hidden, color_hidden = _hidden_layers(R, H, s.density_layers - 1, LOW), _hidden_layers(R, CH, s.color_layers - 1, LOW)
    to_out, to_rgb = _product(R, H, 1 + G, float), _product(R, CH, 3, float)
    relu_h, relu_ch = _relu(R, H, LOW), _relu(R, CH, LOW)

    @no_type_check
    # No backward: inference only, and Warp's tile products take bfloat16 operands only without one.
    @wp.kernel(module="unique", module_options={"enable_backward": False})
    def decode(
        w: wp.array2d(dtype=float),
        wl: wp.array2d(dtype=LOW),
        table: wp.array2d(dtype=float),
        features: wp.array2d(dtype=float),
        cond: wp.array2d(dtype=float),
        index: wp.array(dtype=wp.int32),
        dirs: wp.array2d(dtype=float),
        density: wp.array2d(dtype=float),
        geometry: wp.array2d(dtype=float),
        rgb: wp.array2d(dtype=float),
    ):
        row = wp.tid() * R
        # The density MLP: [features, cond] W^T as features Wf^T + cond Wc^T, no concatenation.
        h = bias_h(wl, DENSITY_BIAS, 0)
        features_in(wl, features, row, h, 0, 0)
        if wp.static(CD > 0 and GATHERED):
            cond_in(wl, table, index, row, h, F, 0)
        elif wp.static(CD > 0):
            cond_in(wl, cond, row, h, F, 0)
        relu_h(h)
        density_hidden(wl, h, HIDDEN0)
        # Its output layer: the raw density (column 0) and the geometry features (columns 1..G), views of one product.
        out = bias_out(w, DENSITY_OUT + H, 0)
        to_out(w, h, out, DENSITY_OUT, 0)
        sigma = wp.tile_view(out, offset=(0, 0), shape=(R, 1))
        if wp.static(SOFTPLUS):
            wp.tile_store(density, wp.tile_map(_softplus, sigma), offset=(row, 0))
        else:
            wp.tile_store(density, wp.tile_map(wp.exp, sigma), offset=(row, 0))
        if wp.static(color):
            g = wp.tile_view(out, offset=(0, 1), shape=(R, G))
            wp.tile_store(geometry, g, offset=(row, 0))
            # The colour MLP on [geometry, dirs, cond?]: a product for each part.
            y = bias_ch(wl, COLOR_BIAS, 0)
            geometry_in(wl, g, y, COLOR0, 0)
            if wp.static(D > 0):
                dirs_in(wl, dirs, row, y, COLOR0 + G, 0)
            if wp.static(CC > 0 and GATHERED):
                cond_color_in(wl, table, index, row, y, COLOR0 + G + D, 0)
            elif wp.static(CC > 0):
                cond_color_in(wl, cond, row, y, COLOR0 + G + D, 0)
            relu_ch(y)
            color_hidden(wl, y, COLOR_HIDDEN0)
            o = bias_3(w, COLOR_OUT + CH, 0)
            to_rgb(w, y, o, COLOR_OUT, 0)
            wp.tile_store(rgb, wp.tile_map(_sigmoid, o), offset=(row, 0))

    return decode


def _check(decoder: nn.Module, features: Tensor, cond: Tensor | None, index: Tensor | None, reads_cond: bool) -> None:
    if index is None:  # a condition row by row
        decoder._check_inputs(features, cond, reads_cond)
    elif not reads_cond:  # a table the decoder does not read here (a colour-only condition, density alone)
        decoder._check_inputs(features, None, False)
    else:  # a table of conditions and each sample's row of it
        decoder._check("features", features, decoder.feature_dim, None)
        if decoder.cond_dim == 0:
            raise ValueError("cond_index: expected None (the decoder takes no condition), got a tensor")
        if cond is None:
            raise ValueError(f"cond: expected a table of rows of {decoder.cond_dim} that cond_index names, got None")
        decoder._check("cond", cond, decoder.cond_dim, None)
        check_int("cond_index", index, [features.shape[0]], upper=cond.shape[0], device=features.device)
    unfit = _unfit(decoder, features)
    if unfit is not None:
        raise ValueError(f"decoder: {unfit}")


def _run(
    decoder: nn.Module, features: Tensor, dirs: Tensor | None, cond: Tensor | None, index: Tensor | None
) -> tuple[Tensor, Tensor, Tensor]:
    """Density ``[N]``, geometry ``[N, G]`` and rgb ``[N, 3]`` (without ``dirs``: density alone, the others empty)."""
    n, color, c = features.shape[0], dirs is not None, decoder.config
    unread = features.new_empty(n, 0)  # an input or output the kernel's shape does not touch
    density = features.new_empty(n, 1)
    geometry = features.new_empty(n, c.geometry_dim) if color else unread
    rgb = features.new_empty(n, 3) if color else unread
    reads_cond = cond is not None and (c.cond_to_density or (color and c.cond_to_color))
    gathered = reads_cond and index is not None
    table = cond.contiguous() if gathered else features.new_empty(0, max(decoder.cond_dim, 1))
    rows_cond = cond.contiguous() if reads_cond and not gathered else unread
    at = index.to(torch.int32).contiguous() if gathered else features.new_empty(n, dtype=torch.int32)
    reduced = _product_dtype(features, True) is not None  # reduced_precision(): torch's layers' bfloat16 products
    s = _shape(decoder)
    rows = _tile_rows(s, color, reduced, gathered, features.device, TILE_ROWS)
    if rows is None:
        raise ValueError(
            f"decoder: expected layers whose tiles of {MIN_TILE_ROWS} samples fit a block's shared memory on "
            f"{features.device}, got wider ones (torch's layers serve it)"
        )
    weights = _packed(decoder, s)
    low = weights.to(torch.bfloat16) if reduced else weights  # the hidden layers' weights and biases, as torch rounds
    shared = [weights, low, table]
    per_row = [features.contiguous(), rows_cond, at, dirs.contiguous() if color else unread, density, geometry, rgb]
    kernel = _kernel(s, color, rows, reduced, gathered)
    kernels.launch_rows(kernel, n, shared, per_row, features.device, tile=(rows, BLOCK_THREADS))
    return density[:, 0], geometry, rgb


def fused_decode(
    decoder: nn.Module,
    features: Float[Tensor, "N F"],
    dirs_encoded: Float[Tensor, "N Dd"],
    cond: Float[Tensor, "N C"] | Float[Tensor, "T C"] | None = None,
    cond_index: Int[Tensor, " N"] | None = None,
):
    """``decoder(features, dirs_encoded, cond)`` (a :class:`~headfields.decoders.NerfDecoder`) by the kernel, on any
    device (:func:`fuses` says where :func:`fused_inference` takes it). With ``cond_index``, ``cond`` is a table whose
    row ``cond_index[i]`` is sample ``i``'s condition (``decoder(..., cond[cond_index])``), gathered in the kernel."""
    _check(decoder, features, cond, cond_index, decoder.config.cond_to_density or decoder.config.cond_to_color)
    decoder._check("dirs_encoded", dirs_encoded, decoder.dir_dim, features.shape[0])
    density, geometry, rgb = _run(decoder, features, dirs_encoded, cond, cond_index)
    return DecoderOutput(density=density, rgb=rgb, extras={"geometry": geometry})


def fused_density(
    decoder: nn.Module,
    features: Float[Tensor, "N F"],
    cond: Float[Tensor, "N C"] | Float[Tensor, "T C"] | None = None,
    cond_index: Int[Tensor, " N"] | None = None,
) -> Tensor:
    """``decoder.density(features, cond)`` by the kernel (no colour MLP), on any device; ``cond_index`` as
    :func:`fused_decode`'s."""
    _check(decoder, features, cond, cond_index, decoder.config.cond_to_density)
    return _run(decoder, features, None, cond, cond_index)[0]


@contextlib.contextmanager
def fused_inference(decoder: NerfDecoder) -> Iterator[NerfDecoder]:
    """The opt-in: inside the block, ``decoder`` evaluates by the kernel wherever :func:`fuses` holds (no autograd,
    float32, tiles that fit) and by its own layers elsewhere; this decoder only, its parameters and state unchanged:
    ``with torch.no_grad(), fused_inference(model.field.decoder): rgb = render_image(model, ...)``."""
    if not isinstance(decoder, NerfDecoder):
        raise TypeError(f"decoder: expected a headfields.decoders.NerfDecoder, got {type(decoder).__name__}")
    if {"forward", "density"} & vars(decoder).keys():
        raise ValueError("decoder: already inside fused_inference")
    layers_forward, layers_density = decoder.forward, decoder.density

    def forward(features: Tensor, dirs_encoded: Tensor, cond: Tensor | None = None) -> DecoderOutput:
        if fuses(decoder, features):
            return fused_decode(decoder, features, dirs_encoded, cond)
        return layers_forward(features, dirs_encoded, cond)

    def density(features: Tensor, cond: Tensor | None = None) -> Tensor:
        return fused_density(decoder, features, cond) if fuses(decoder, features) else layers_density(features, cond)

    # The instance's own attributes come before the class's methods (nn.Module.__call__ calls self.forward).
    decoder.forward, decoder.density = forward, density
    try:
        yield decoder
    finally:
        del decoder.forward, decoder.density
