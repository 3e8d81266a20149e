"""The NeRF decoder's fused inference kernel (experimental.fused_nerf, opted in by fused_inference): against the decoder's layers
in float64, where it runs and where it declines, its weights kept in step with the parameters, and a whole INSTA frame through
it."""

import copy
import math
from concurrent.futures import ThreadPoolExecutor
from unittest import mock

import pytest
import torch
from tiny_configs import TINY_INSTA

from headfields.decoders import NerfDecoder, NerfDecoderConfig
from headfields.experimental import fused_nerf
from headfields.heads import tracked_head
from headfields.models.insta import Insta
from headfields.networks import reduced_precision
from headfields.parametric import load_model
from headfields.training import render_image

from helpers import raises_naming

# (feature_dim, dir_dim, cond_dim, config): INSTA's decoder as its CPU recipe builds it (a 48-wide density input),
# MonoAvatar's (softplus, three 128-wide density layers, a 64-wide colour layer under them, 64 geometry features,
# no condition), and a condition that enters the colour MLP alone.
SHAPES = {
    "insta": (32, 16, 16, NerfDecoderConfig()),
    "monoavatar": (
        128,
        27,
        0,
        NerfDecoderConfig(128, 3, 1, color_hidden_dim=64, geometry_dim=64, density_activation="softplus"),
    ),
    "cond_to_color": (8, 4, 3, NerfDecoderConfig(hidden_dim=16, geometry_dim=5, cond_to_density=False, cond_to_color=True)),
}


def decoder(name: str, device) -> NerfDecoder:
    features, dirs, cond, config = SHAPES[name]
    torch.manual_seed(0)
    dec = NerfDecoder(features, dirs, cond, config).to(device)
    with torch.no_grad():
        for p in dec.parameters():  # weights that make every layer count (default init leaves many ReLUs off)
            p.normal_(0.0, 0.3)
    return dec


def inputs(dec: NerfDecoder, n: int, device):
    g = torch.Generator().manual_seed(n)
    features = torch.randn(n, dec.feature_dim, generator=g).to(device)
    dirs = torch.randn(n, dec.dir_dim, generator=g).to(device)
    cond = torch.randn(n, dec.cond_dim, generator=g).to(device) if dec.cond_dim else None
    return features, dirs, cond


# The kernel's float32 products, refused on CUDA (wrong there for INSTA's decoder on an H200, 2026-11-27:
# test_cuda_refuses_the_float32_kernel), are held to the layers on the CPU; its bfloat16 products on every device.
CPU = torch.device("cpu")


def fused_on(dec: NerfDecoder):
    return fused_nerf.fused_inference(dec)


@pytest.mark.parametrize("name", list(SHAPES))
def test_fused_decoder_matches_its_layers_in_float64(name):
    device = CPU
    dec = decoder(name, device)
    truth = NerfDecoder(dec.feature_dim, dec.dir_dim, dec.cond_dim, dec.config).to(device).double()
    truth.load_state_dict({k: v.double() for k, v in dec.state_dict().items()})
    # No rows, one, a tile and one more, and many tiles with a partial last one (TILE_ROWS = 64).
    for n in (0, 1, fused_nerf.TILE_ROWS + 1, 1000):
        features, dirs, cond = inputs(dec, n, device)
        with torch.no_grad(), fused_on(dec):
            assert fused_nerf.fuses(dec, features)
            out = dec(features, dirs, cond)
            density = dec.density(features, cond)
        with torch.no_grad():
            ref = truth(features.double(), dirs.double(), None if cond is None else cond.double())
            layers = dec(features, dirs, cond)  # torch's float32 layers: the rounding to stay within
        assert out.density.shape == (n,) and out.rgb.shape == (n, 3)
        assert out.extras["geometry"].shape == (n, dec.config.geometry_dim)
        assert out.density.dtype == torch.float32
        # float32 sums in another order than torch's: as far from float64 as torch's own float32, within a few times.
        for got, mine, exact in (
            (out.density, layers.density, ref.density),
            (density, layers.density, ref.density),
            (out.rgb, layers.rgb, ref.rgb),
            (out.extras["geometry"], layers.extras["geometry"], ref.extras["geometry"]),
        ):
            scale = exact.abs().amax() if n else 1.0
            ours, torchs = ((x.double() - exact).abs().amax() / scale if n else 0.0 for x in (got, mine))
            assert ours <= 4 * torchs + 1e-6, (ours, torchs)


@pytest.mark.parametrize("name", ["insta", "cond_to_color"])
def test_fused_decoder_gathers_a_tables_rows_as_the_layers_read_them(name):
    """With cond_index the condition is a table and each sample's row of it (INSTA's frames' expressions and the lips'
    "outside" row), gathered in the kernel: to the bit the kernel's output on cond[cond_index] (which the test above
    holds to float64), the same products on the same rows."""
    device = CPU
    dec = decoder(name, device)
    n = 3 * fused_nerf.TILE_ROWS + 5
    features, dirs, _ = inputs(dec, n, device)
    g = torch.Generator().manual_seed(1)
    table = torch.randn(7, dec.cond_dim, generator=g).to(device)
    index = torch.randint(0, 7, (n,), generator=g).to(device)
    with torch.no_grad():
        rows = fused_nerf.fused_decode(dec, features, dirs, table[index])
        gathered = fused_nerf.fused_decode(dec, features, dirs, table, index)
        density = fused_nerf.fused_density(dec, features, table, index)
        rows_density = fused_nerf.fused_density(dec, features, table[index])
    for got, expected in ((gathered.rgb, rows.rgb), (gathered.density, rows.density), (density, rows_density)):
        torch.testing.assert_close(got, expected, rtol=0, atol=0)
    with torch.no_grad():
        with raises_naming("cond_index"):
            fused_nerf.fused_decode(dec, features, dirs, table, index + 7)  # past the table's rows
        with raises_naming("cond"):
            fused_nerf.fused_decode(dec, features, dirs, None, index)
        with raises_naming("cond_index"):
            fused_nerf.fused_decode(
                decoder("monoavatar", device), torch.zeros(n, 128, device=device), torch.zeros(n, 27, device=device), table, index
            )


def test_fused_softplus_keeps_tiny_densities():
    device = CPU
    # log(1 + exp(x)) rounds to 0 below x = -17 in float32; torch's log1p does not, and neither does the kernel.
    dec = decoder("monoavatar", device)
    with torch.no_grad():
        dec.density_net[-1].weight[0] = 0.0
        dec.density_net[-1].bias[0] = -30.0  # every raw density -30: softplus = log1p(e^-30) = 9.36e-14
        features, _, _ = inputs(dec, 64, device)
        with fused_on(dec):
            density = dec.density(features)
    torch.testing.assert_close(density, torch.full_like(density, math.log1p(math.exp(-30.0))), rtol=1e-6, atol=0)


def test_fused_decoder_declines_where_it_does_not_apply():
    device = CPU
    dec = decoder("insta", device)
    features, dirs, cond = inputs(dec, 40, device)
    with torch.no_grad():
        with fused_on(dec):
            assert fused_nerf.fuses(dec, features) and "forward" in vars(dec)
            with pytest.raises(ValueError, match="^decoder: already"):
                fused_on(dec).__enter__()
        assert not {"forward", "density"} & vars(dec).keys()  # out of the block: the decoder's own layers, the default
        shallow = NerfDecoder(4, 3, 0, NerfDecoderConfig(hidden_dim=8, density_layers=0)).to(device)
        with fused_on(shallow):
            assert not fused_nerf.fuses(shallow, torch.zeros(2, 4, device=device))
            assert shallow(torch.zeros(2, 4, device=device), torch.zeros(2, 3, device=device)).rgb.shape == (2, 3)
        assert not fused_nerf.fuses(copy.deepcopy(dec).double(), features.double())
    with fused_on(dec):
        assert not fused_nerf.fuses(dec, features)  # autograd on: training keeps torch's layers
        out = dec(features, dirs, cond)
    assert out.density.requires_grad
    with raises_naming("decoder"):
        fused_on(torch.nn.Linear(2, 2)).__enter__()  # only a NerfDecoder opts in


def bfloat16_layers(dec: NerfDecoder, features, dirs, cond):
    """The decoder as torch's layers run it in reduced_precision(), in float64: each hidden layer's input, weights and
    bias rounded to bfloat16 and its output too; the output layers in full precision."""

    def bf16(t):
        return t.to(torch.bfloat16).double()

    def mlp(net, x):
        layers = [m for m in net if isinstance(m, torch.nn.Linear)]
        for layer in layers[:-1]:
            x = bf16(torch.relu(bf16(x) @ bf16(layer.weight).T + bf16(layer.bias)))
        return x @ layers[-1].weight.double().T + layers[-1].bias.double()

    c = dec.config
    raw = mlp(dec.density_net, torch.cat([features, cond], 1) if dec.cond_dim and c.cond_to_density else features.double())
    colour_in = [raw[:, 1:], dirs.double()] + ([cond.double()] if c.cond_to_color else [])
    return raw[:, 0], torch.sigmoid(mlp(dec.color_net, torch.cat(colour_in, 1)))


@pytest.mark.parametrize("name", ["insta", "monoavatar"])
def test_fused_decoder_in_reduced_precision_rounds_as_the_layers_do(device, name):
    """Inside reduced_precision() the kernel runs its hidden layers' products on bfloat16 operands (Warp's bfloat16
    tiles, summed in float32), as torch's layers do where the device has bfloat16 products; here forced on any CPU."""
    dec = decoder(name, device)
    features, dirs, cond = inputs(dec, 500, device)
    raw, rgb = bfloat16_layers(dec, features, dirs, cond)
    with torch.no_grad():
        full = dec(features, dirs, cond)  # float32 products
        with fused_on(dec), reduced_precision():
            with mock.patch.object(fused_nerf, "_product_dtype", lambda x, reducible: torch.bfloat16):
                reduced = dec(features, dirs, cond)
            torch_reduces = fused_nerf._product_dtype(features, True) is not None  # this device's bfloat16 products
            fused = dec(features, dirs, cond)
        with reduced_precision():
            layers = dec(features, dirs, cond)
    # A hidden output on a rounding boundary may round the other way (float32 sums against float64): a few pixels.
    assert (reduced.rgb.double() - rgb).abs().amax() < 2e-2 and (reduced.rgb.double() - rgb).abs().mean() < 1e-4
    density = torch.exp(raw) if dec.config.density_activation == "trunc_exp" else torch.nn.functional.softplus(raw)
    relative = (reduced.density.double() - density).abs() / density.abs().amax()  # the output layer: float32 weights
    assert relative.amax() < 2e-2 and relative.mean() < 1e-4
    assert (full.rgb.double() - rgb).abs().amax() > 5e-2  # the rounding is what the emulation sees
    # Where the device has no bfloat16 products, neither torch's layers nor the kernel round: both float32.
    torch.testing.assert_close(fused.rgb, layers.rgb, rtol=0, atol=1e-3 if torch_reduces else 2e-6)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_refuses_the_float32_kernel():
    """Called directly, the kernel names why; a decoder on CUDA keeps torch's layers in float32 and takes the kernel
    inside reduced_precision() where the GPU multiplies bfloat16."""
    cuda = torch.device("cuda")  # no index: torch's current device
    dec = decoder("insta", cuda)
    features, dirs, cond = inputs(dec, 100, cuda)
    with torch.no_grad(), fused_on(dec):
        assert not fused_nerf.fuses(dec, features)
        with pytest.raises(ValueError, match="^decoder: expected reduced_precision"):
            fused_nerf.fused_decode(dec, features, dirs, cond)
        layers = dec(features, dirs, cond)
        with reduced_precision():
            assert fused_nerf.fuses(dec, features) == (fused_nerf._product_dtype(features, True) is not None)
    truth = NerfDecoder(dec.feature_dim, dec.dir_dim, dec.cond_dim, dec.config).to(CPU)
    truth.load_state_dict({k: v.cpu() for k, v in dec.state_dict().items()})
    with torch.no_grad():
        torch.testing.assert_close(layers.rgb.cpu(), truth(features.cpu(), dirs.cpu(), cond.cpu()).rgb, rtol=0, atol=1e-5)


def test_fused_decoder_checks_its_input_as_the_layers_do(device):
    dec = decoder("insta", device)
    features, dirs, cond = inputs(dec, 8, device)
    with torch.no_grad(), fused_on(dec):
        with raises_naming("cond"):
            dec(features, dirs, None)
        with raises_naming("dirs_encoded"):
            dec(features, dirs[:, :3], cond)
        with raises_naming("features"):
            dec(features[:, :5], dirs, cond)


def test_fused_weights_follow_the_parameters():
    """The kernel reads the parameters as they are on each call: after a fused Adam step (which changes no version
    counter, the training loop's optimiser), an in-place edit and a checkpoint's load."""
    device = CPU
    dec = decoder("insta", device)
    features, dirs, cond = inputs(dec, 50, device)
    optimiser = torch.optim.Adam(dec.parameters(), lr=1e-2, fused=True)
    with torch.no_grad(), fused_on(dec):
        before = dec(features, dirs, cond).rgb
    (dec(features, dirs, cond).rgb - 0.5).square().sum().backward()  # autograd on: torch's layers
    optimiser.step()
    with torch.no_grad():
        with fused_on(dec):
            stepped = dec(features, dirs, cond).rgb
        layers_stepped = dec(features, dirs, cond).rgb  # the layers themselves, unfused
        dec.color_net[-1].bias.add_(1.0)  # in place, under no_grad
        with fused_on(dec):
            edited = dec(features, dirs, cond).rgb
        layers_edited = dec(features, dirs, cond).rgb
        dec.load_state_dict(decoder("insta", device).state_dict())  # a checkpoint's load
        with fused_on(dec):
            again = dec(features, dirs, cond).rgb
    assert (stepped - before).abs().max() > 1e-3 and (edited - stepped).abs().max() > 1e-3
    torch.testing.assert_close(stepped, layers_stepped, rtol=0, atol=2e-6)
    torch.testing.assert_close(edited, layers_edited, rtol=0, atol=2e-6)
    torch.testing.assert_close(again, before)


def tiny_insta(frames, device) -> Insta:
    """INSTA's tiny recipe with decoder weights that make every layer count (as :func:`decoder`'s)."""
    torch.manual_seed(0)
    model = Insta(load_model(frames.model_path, frames.model_type), frames.segmentation_labels, TINY_INSTA).to(device)
    with torch.no_grad():
        for p in model.field.decoder.parameters():
            p.normal_(0.0, 0.3)
    return model


def test_fused_decoder_renders_an_insta_frame_as_the_layers_do(tiny_video):
    device = CPU
    _, test = tiny_video
    model = tiny_insta(test, device)
    model.sampler.grid.binary.fill_(True)  # every cell: the whole box marched
    layers = render_image(model, test, 0, 4096, device)  # on the CPU, clamped to [0, 1]
    with fused_on(model.field.decoder):
        fused = render_image(model, test, 0, 4096, device)
    assert (layers - torch.tensor(model.config.background)).abs().amax() > 0.05  # a field seen, not the background
    torch.testing.assert_close(fused, layers, rtol=0, atol=1e-5)


def test_an_insta_fields_density_alone_is_the_layers(tiny_video):
    """NerfField without directions (the occupancy grid's refresh): the fused density of the lips condition's rows,
    against the layers, at points around the posed head (some on lips faces, most not)."""
    device = CPU
    _, test = tiny_video
    model = tiny_insta(test, device)
    head = tracked_head(model.parametric, test)  # on the model's device
    g = torch.Generator().manual_seed(2)
    vertices = head.vertices[0].cpu()
    x = (vertices[torch.randint(0, len(vertices), (500,), generator=g)] + 0.01 * torch.randn(500, 3, generator=g)).to(device)
    frame = torch.zeros(500, dtype=torch.long, device=device)
    with torch.no_grad():
        layers = model.field(x, None, frame, head)
        with fused_on(model.field.decoder):
            fused = model.field(x, None, frame, head)
        table, index = model.field.condition.rows(layers.canonical, head, frame)
    lips = index != table.shape[0] - 1
    assert lips.any() and not lips.all()  # both kinds of rows are gathered
    assert fused.rgb is None and layers.density.abs().amax() > 0
    torch.testing.assert_close(fused.density, layers.density, rtol=2e-5, atol=1e-6)


def test_the_kernel_called_directly_checks_its_input():
    dec = decoder("insta", torch.device("cpu"))
    features, dirs, cond = inputs(dec, 3, torch.device("cpu"))
    with torch.no_grad():
        with raises_naming("features"):
            fused_nerf.fused_decode(dec, features[:, :7], dirs, cond)
        with raises_naming("cond"):
            fused_nerf.fused_density(dec, features, None)
        with raises_naming("decoder"):
            fused_nerf.fused_decode(copy.deepcopy(dec).double(), features.double(), dirs.double(), cond.double())
        colour_only = decoder("cond_to_color", torch.device("cpu"))
        x, _, c = inputs(colour_only, 3, torch.device("cpu"))
        # A condition the density MLP does not read is ignored, whatever its dtype, as the layers ignore it.
        torch.testing.assert_close(fused_nerf.fused_density(colour_only, x, c.double()), colour_only.density(x, c.double()))
    with raises_naming("decoder"):  # autograd on
        fused_nerf.fused_decode(dec, features, dirs, cond)


def test_warp_reports_the_kernels_shared_memory():
    """kernels.tile_shared_bytes reads Warp's build metadata (no public accessor): a figure for the kernel's tiles that
    grows with the tile's rows, at least the input tile and the first layer's weights and output in float32."""
    from headfields import kernels

    s = fused_nerf._shape(decoder("insta", torch.device("cpu")))
    small, large = (
        kernels.tile_shared_bytes(fused_nerf._kernel(s, True, rows, False, True), torch.device("cpu"), fused_nerf.BLOCK_THREADS)
        for rows in (32, 64)
    )
    assert small is not None and large is not None
    assert 4 * (32 * 48 + 48 * 64 + 32 * 64) <= small < large


@pytest.mark.parametrize(("limit", "rows"), [(232_448, 64), (101_376, 64), (70_000, 32), (20_000, None)])
def test_a_gpu_with_less_shared_memory_takes_smaller_tiles_or_none(monkeypatch, limit, rows):
    """On CUDA the tile halves until the kernel's shared memory fits the device (an H100's 227 KB, a GeForce's 99 KB:
    INSTA's decoder asks 87 KB at 64 samples, 52 KB at 32), and where none fits the decoder keeps torch's layers. A
    pretend GPU: Warp's figures from the CPU's builds."""
    from types import SimpleNamespace

    from headfields import kernels

    cpu = torch.device("cpu")
    s = fused_nerf._shape(decoder("insta", cpu))
    gpu, real = SimpleNamespace(max_shared_memory_per_block=limit), kernels.warp_device
    monkeypatch.setattr(kernels, "warp_device", lambda device: gpu if device.type == "cuda" else real(device))
    ask = kernels.tile_shared_bytes
    monkeypatch.setattr(kernels, "tile_shared_bytes", lambda kernel, device, block_dim: ask(kernel, cpu, block_dim))
    assert fused_nerf._tile_rows.__wrapped__(s, True, False, True, torch.device("cuda"), 64) == rows


def test_threads_running_the_kernel_on_the_cpu_at_once_get_their_own_results():
    """Warp's CPU tiles share one static arena a module: launches from four threads at once (a viewer's render
    beside a script's) take turns, each getting what it gets alone (without the turns the process died of SIGILL)."""
    cpu = torch.device("cpu")
    dec = decoder("insta", cpu)
    batches = [inputs(dec, 4096 + 64 * i, cpu) for i in range(4)]
    with torch.no_grad():
        alone = [fused_nerf.fused_decode(dec, *batch) for batch in batches]

        def same(a, b) -> bool:
            return torch.equal(a.density, b.density) and torch.equal(a.rgb, b.rgb)

        def run(i: int) -> list[bool]:
            with torch.no_grad():  # autograd's mode is a thread's own
                return [same(fused_nerf.fused_decode(dec, *batches[i]), alone[i]) for _ in range(6)]

        with ThreadPoolExecutor(4) as pool:
            agree = list(pool.map(run, range(4)))
    assert all(all(row) for row in agree)
