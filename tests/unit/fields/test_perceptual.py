"""headfields.metrics.perceptual against the lpips package's own LPIPS on the same networks (a seeded random AlexNet and
VGG16: no download), its input range (and GaussianAvatars' unscaled one), averaging and masking; the weight lookup
and what happens when a file is missing or corrupt."""

import importlib.util
import pickle
import sys
import warnings
from types import SimpleNamespace
from unittest import mock

import pytest
import torch

import headfields.metrics.perceptual as perceptual
from headfields.metrics.perceptual import (
    ALEXNET_FILE,
    LPIPS_BACKGROUND,
    LPIPS_MIN_SIZES,
    VGG16_FILE,
    Lpips,
    LpipsUnavailable,
    load_lpips,
)
from headfields.training.evaluation import lpips_for_run

from helpers import raises_naming, random_alexnet, random_vgg16

FIND_SPEC = importlib.util.find_spec  # the real one, for the test that hides lpips
LPIPS_INSTALLED = FIND_SPEC("lpips") is not None
needs_lpips = pytest.mark.skipif(not LPIPS_INSTALLED, reason="the lpips package is not installed (pip install -e '.[dev]')")

_TORCHVISION_OPS = []  # keeps the op library below alive: its definitions go when it is collected


@pytest.fixture
def weights_file(tmp_path):
    path = tmp_path / ALEXNET_FILE
    torch.save(random_alexnet(0), path)
    return path


@pytest.fixture(scope="module")
def vgg_file(tmp_path_factory):
    """A random VGG16 saved once for the module (59 MB)."""
    path = tmp_path_factory.mktemp("vgg16") / VGG16_FILE
    torch.save(random_vgg16(0), path)
    return path


@pytest.fixture
def metric(weights_file) -> Lpips:
    if not LPIPS_INSTALLED:
        pytest.skip("the lpips package is not installed (its linear layers' weights)")
    loaded = load_lpips(weights_file)
    assert isinstance(loaded, Lpips)
    return loaded


def import_lpips():
    """The lpips package, the oracle. PyPI's torchvision is built against CUDA torch: with a CPU build of torch
    its C++ ops do not load, and ``import torchvision`` then stops registering fake kernels of two of them. lpips
    needs only torchvision's AlexNet definition, so where that happens the two schemas are declared first."""
    try:
        import lpips
    except RuntimeError as error:
        if "torchvision::" not in str(error):
            raise
        for name in [m for m in sys.modules if m.split(".")[0] in ("torchvision", "lpips")]:
            del sys.modules[name]
        library = torch.library.Library("torchvision", "FRAGMENT")
        for op in ("nms", "qnms"):
            library.define(f"{op}(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
        _TORCHVISION_OPS.append(library)
        import lpips
    import torchvision

    return lpips, torchvision


@pytest.fixture(scope="module", params=["alex", "vgg"])
def oracle(request, tmp_path_factory):
    """(lpips.LPIPS on a seeded random torchvision AlexNet or VGG16's layers, our Lpips loaded from that trunk's
    saved file)."""
    if not LPIPS_INSTALLED:
        pytest.skip("the lpips package is not installed")
    lpips, torchvision = import_lpips()
    network = request.param
    torch.manual_seed(0)
    if network == "alex":
        trunk = torchvision.models.alexnet(weights=None)  # torchvision's own layout and initialisation
    else:
        # torchvision's VGG16 layers, without the classifier (124 M numbers, 2 s to build, never read), given
        # torchvision's VGG initialisation of the convolutions so that the deep stages' features stay alive.
        trunk = SimpleNamespace(features=torchvision.models.vgg.make_layers(torchvision.models.vgg.cfgs["D"]))
        for layer in trunk.features:
            if isinstance(layer, torch.nn.Conv2d):
                torch.nn.init.kaiming_normal_(layer.weight, mode="fan_out", nonlinearity="relu")
                torch.nn.init.zeros_(layer.bias)
    path = tmp_path_factory.mktemp(network) / (ALEXNET_FILE if network == "alex" else VGG16_FILE)
    torch.save({f"features.{k}": v for k, v in trunk.features.state_dict().items()}, path)
    # lpips builds its trunk from torchvision's constructor: handed this one, it reads the same weights (and
    # builds no second trunk); it passes the pre-0.13 ``pretrained`` argument, hence the warning.
    tv = sys.modules["lpips.pretrained_networks"].tv
    with mock.patch.object(tv, "alexnet" if network == "alex" else "vgg16", lambda **_: trunk), warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        reference = lpips.LPIPS(net=network, pnet_rand=True, verbose=False)  # the linear layers: the wheel's .pth
    ours = load_lpips(path, network=network)
    assert isinstance(ours, Lpips) and ours.network == network
    return reference, ours


def nchw(x: torch.Tensor) -> torch.Tensor:
    return x.reshape(-1, *x.shape[-3:]).permute(0, 3, 1, 2)


@pytest.mark.parametrize("shape", [(2, 40, 52, 3), (40, 36, 3), "smallest"])
def test_matches_the_lpips_package(oracle, shape):
    reference, ours = oracle
    if shape == "smallest":
        shape = (1, ours.min_size, ours.min_size + 1, 3)
    g = torch.Generator().manual_seed(1)
    a, b = torch.rand(shape, generator=g), torch.rand(shape, generator=g)
    b = (0.7 * a + 0.3 * b).clamp(0, 1)
    expected = reference(nchw(a), nchw(b), normalize=True).flatten()  # lpips maps [0, 1] to [-1, 1] itself
    got = ours(a, b)
    assert got > 0.01  # the random trunk's features are alive: the comparison means something
    torch.testing.assert_close(got, expected.mean(), rtol=1e-5, atol=1e-7)
    # lpips's native input is [-1, 1]: our [0, 1] images are converted the same way.
    torch.testing.assert_close(got, reference(nchw(2 * a - 1), nchw(2 * b - 1)).mean(), rtol=1e-5, atol=1e-7)


def test_unscaled_inputs_as_gaussian_avatars_feeds_them(oracle):
    # GaussianAvatars' train.py hands lpips [0, 1] images without mapping them to [-1, 1] (its issue #100): the
    # lpips package's number for those images as they are (its default normalize=False).
    reference, ours = oracle
    g = torch.Generator().manual_seed(6)
    shape = (1, ours.min_size, ours.min_size + 1, 3)  # test_matches_the_lpips_package's smallest: VGG16 is slow on CPUs
    a, b = torch.rand(shape, generator=g), torch.rand(shape, generator=g)
    b = (0.7 * a + 0.3 * b).clamp(0, 1)
    got = ours(a, b, normalize=False)
    torch.testing.assert_close(got, reference(nchw(a), nchw(b)).mean(), rtol=1e-5, atol=1e-7)
    assert abs(got - ours(a, b)) > 1e-3 * ours(a, b)  # another number than LPIPS's own


def _small_lpips() -> Lpips:
    """AlexNet LPIPS on random weights, built from state dicts: no file read."""
    linear = {f"lin{i}.model.1.weight": torch.rand(1, c, 1, 1) for i, c in enumerate((64, 192, 384, 256, 256))}
    return Lpips(random_alexnet(8), linear)


def test_unscaled_inputs_are_what_the_network_sees():
    # normalize=False on x is the usual LPIPS of x' = (x + 1) / 2, the images whose [-1, 1] mapping is x itself.
    metric = _small_lpips()
    g = torch.Generator().manual_seed(7)
    a, b = torch.rand(2, 31, 34, 3, generator=g), torch.rand(2, 31, 34, 3, generator=g)
    got = metric(a, b, normalize=False)
    torch.testing.assert_close(got, metric((a + 1) / 2, (b + 1) / 2), rtol=1e-6, atol=0)
    assert abs(got - metric(a, b)) > 1e-3 * got
    assert metric(a, a, normalize=False).item() == 0.0
    with raises_naming("normalize"):
        metric(a, b, normalize=1)


def test_mask_sets_both_images_to_white_outside_it(oracle):
    reference, ours = oracle
    g = torch.Generator().manual_seed(2)
    a, b = torch.rand(2, 48, 40, 3, generator=g), torch.rand(2, 48, 40, 3, generator=g)
    mask = torch.zeros(2, 48, 40, dtype=torch.bool)
    mask[0, 10:30, 5:25] = True
    mask[1, 20:44, 12:38] = True
    white = torch.full_like(a, LPIPS_BACKGROUND)
    expected = reference(
        nchw(torch.where(mask[..., None], a, white)), nchw(torch.where(mask[..., None], b, white)), normalize=True
    )
    torch.testing.assert_close(ours(a, b, mask=mask), expected.mean(), rtol=1e-5, atol=1e-7)
    if ours.network != "alex":
        return  # the mask is applied before the trunk: what follows holds for either, checked once
    # What lies outside the mask does not count; a mask of every pixel is no mask.
    elsewhere = torch.where(mask[..., None], b, torch.rand(b.shape, generator=g))
    torch.testing.assert_close(ours(a, elsewhere, mask=mask), ours(a, b, mask=mask))
    torch.testing.assert_close(ours(a, b, mask=torch.ones_like(mask)), ours(a, b))


def test_averages_over_images(metric):
    g = torch.Generator().manual_seed(3)
    a, b = torch.rand(3, 36, 33, 3, generator=g), torch.rand(3, 36, 33, 3, generator=g)
    singles = torch.stack([metric(a[i], b[i]) for i in range(3)])
    assert singles.min() > 0
    torch.testing.assert_close(metric(a, b), singles.mean())
    assert metric(a, a).item() == 0.0  # identical images: exactly 0


def test_is_differentiable_in_the_images(metric):
    g = torch.Generator().manual_seed(4)
    a = torch.rand(1, 32, 32, 3, generator=g).requires_grad_()
    b = torch.rand(1, 32, 32, 3, generator=g)
    metric(a, b).backward()
    assert torch.isfinite(a.grad).all() and a.grad.abs().sum() > 0
    assert not any(p.requires_grad for p in metric.parameters())  # the network stays frozen


@pytest.mark.parametrize("network, file, title", [("alex", ALEXNET_FILE, "AlexNet"), ("vgg", VGG16_FILE, "VGG16")])
def test_default_weights_come_from_the_torch_hub_cache(request, tmp_path, monkeypatch, network, file, title):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    expected = tmp_path / "checkpoints" / file
    assert perceptual.default_lpips_weights(network) == expected
    if not LPIPS_INSTALLED:
        pytest.skip("the lpips package is not installed")
    missing = load_lpips(network=network)
    assert isinstance(missing, LpipsUnavailable) and str(expected) in missing.reason and title in missing.reason
    assert ("lpips_vgg_weights" in missing.reason) == (network == "vgg")  # the setting that gives the file
    expected.parent.mkdir()
    if network == "alex":
        torch.save(random_alexnet(5), expected)
    else:
        expected.symlink_to(request.getfixturevalue("vgg_file"))
    found = load_lpips(network=network)
    assert isinstance(found, Lpips) and str(expected) in found.source and found.network == network
    assert found.source.startswith(f"{network}: ") and found.min_size == LPIPS_MIN_SIZES[network]


@pytest.mark.parametrize("network", ["alex", "vgg"])
def test_without_the_lpips_package_it_is_unavailable(weights_file, monkeypatch, network):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *args: None if name == "lpips" else FIND_SPEC(name, *args))
    result = load_lpips(weights_file, network=network)  # the package is looked for before the trunk is read
    assert isinstance(result, LpipsUnavailable) and "lpips package is not installed" in result.reason


def test_bad_weight_files_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="^weights:"):
        load_lpips(tmp_path / "nowhere.pth")  # asked for and missing: an error, not "unavailable"
    if not LPIPS_INSTALLED:
        pytest.skip("the lpips package is not installed")
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a checkpoint")
    with raises_naming("weights"):
        load_lpips(garbage)
    wrong = tmp_path / "wrong.pth"
    state = random_alexnet(6)
    state["features.3.weight"] = state["features.3.weight"][:, :32]
    torch.save(state, wrong)
    with raises_naming("weights"):
        load_lpips(wrong)
    del state["features.3.weight"]
    torch.save(state, wrong)
    with raises_naming("weights"):
        load_lpips(wrong)
    alexnet = tmp_path / ALEXNET_FILE
    torch.save(random_alexnet(6), alexnet)
    with pytest.raises(ValueError, match="^weights: expected the state dict of torchvision's VGG16"):
        load_lpips(alexnet, network="vgg")  # AlexNet's file for VGG16: the trunk named, not a shape error deep inside
    with pytest.raises(FileNotFoundError, match=f"^weights:.*VGG16.*{VGG16_FILE}"):
        load_lpips(tmp_path / "nowhere.pth", network="vgg")


def _truncated_zip(path):
    torch.save({"features.0.weight": torch.zeros(8, 3)}, path)
    path.write_bytes(path.read_bytes()[:200])


class _NotAStateDict:
    pass


@pytest.mark.parametrize(
    "write, what",
    [
        (lambda path: path.write_bytes(b"not a checkpoint" * 8), "not a torch.save file"),
        (_truncated_zip, "truncated or damaged zip archive"),
        (lambda path: path.write_bytes(b""), "an empty file"),
        (lambda path: torch.save([torch.zeros(2)], path), "holds a list, not a state dict"),  # a pickle of a non-dict
        (lambda path: path.write_bytes(pickle.dumps(_NotAStateDict())), "not a torch.save file"),  # never unpickled
        (lambda path: torch.save(torch.nn.Linear(2, 2), path), "a whole model"),
    ],
    ids=["garbage", "truncated-zip", "empty", "list", "pickled-object", "whole-module"],
)
@pytest.mark.parametrize("network", ["alex", "vgg"])
def test_corrupt_weight_files_say_what_was_expected(tmp_path, write, what, network):
    if not LPIPS_INSTALLED:
        pytest.skip("the lpips package is not installed (its linear layers are looked for first)")
    path = tmp_path / "weights.pth"
    write(path)
    title, file = ("AlexNet", ALEXNET_FILE) if network == "alex" else ("VGG16", VGG16_FILE)
    setting = "lpips_weights" if network == "alex" else "lpips_vgg_weights"
    for call, name in ((load_lpips, "weights"), (lpips_for_run, setting)):
        with pytest.raises(ValueError) as raised:
            call(str(path), torch.device("cpu"), network)
        message = str(raised.value)
        # One line: the argument or setting, the file, what it is and what was expected; none of torch's advice.
        assert message.startswith(f"{name}: ") and "\n" not in message, message
        assert str(path) in message and what in message and f"expected torchvision's {title} state dict ({file})" in message
        assert "weights_only" not in message and raised.value.__cause__ is None
    assert f"(the file --{setting.replace('_', '-')} gives)" in message  # the train command's flag


@pytest.mark.parametrize(
    "call",
    [
        lambda: load_lpips(network="squeeze"),  # the lpips package's third trunk: not built here
        lambda: load_lpips(network="VGG"),
        lambda: perceptual.default_lpips_weights(["vgg"]),
        lambda: Lpips(random_alexnet(7), {}, network=None),
    ],
)
def test_unknown_networks_are_named(call):
    with raises_naming("network"):
        call()


@pytest.mark.parametrize(
    "call, name",
    [
        (lambda m: m(torch.rand(30, 40, 3), torch.rand(30, 40, 3)), "pred"),  # under AlexNet's 31 x 31
        (lambda m: m(torch.rand(32, 32, 3) * 255, torch.rand(32, 32, 3)), "pred"),  # 0..255, not [0, 1]
        (lambda m: m(torch.rand(32, 32, 3), torch.rand(32, 32, 3) - 0.5), "target"),
        (lambda m: m(torch.rand(32, 32, 3), torch.rand(32, 33, 3)), "target"),
        (lambda m: m(torch.rand(32, 32, 4), torch.rand(32, 32, 4)), "pred"),
        (lambda m: m(torch.rand(2, 2, 32, 32, 3), torch.rand(2, 2, 32, 32, 3)), "pred"),
        (lambda m: m(torch.rand(32, 32, 3), torch.rand(32, 32, 3), mask=torch.ones(32, 31, dtype=torch.bool)), "mask"),
        (lambda m: m(torch.rand(32, 32, 3), torch.rand(32, 32, 3), mask=torch.ones(32, 32)), "mask"),
        (lambda m: m(torch.rand(2, 32, 32, 3), torch.rand(2, 32, 32, 3), mask=_one_empty()), "mask"),
    ],
)
def test_bad_input(metric, call, name):
    with raises_naming(name):
        call(metric)


def test_vgg_takes_images_down_to_16_pixels(vgg_file):
    if not LPIPS_INSTALLED:
        pytest.skip("the lpips package is not installed")
    vgg = load_lpips(vgg_file, network="vgg")
    assert isinstance(vgg, Lpips) and vgg.min_size == LPIPS_MIN_SIZES["vgg"] == 16
    assert vgg(torch.rand(16, 20, 3), torch.rand(16, 20, 3)) > 0  # under AlexNet's 31, VGG16's last stage has a pixel
    with pytest.raises(ValueError, match=r"^pred: .*16 x 16 pixels \(what VGG16 needs\), got 15 x 20"):
        vgg(torch.rand(15, 20, 3), torch.rand(15, 20, 3))


def _one_empty() -> torch.Tensor:
    mask = torch.ones(2, 32, 32, dtype=torch.bool)
    mask[1] = False  # the second image has no pixel to compare
    return mask


def test_state_dicts_are_checked():
    linear = {f"lin{i}.model.1.weight": torch.rand(1, c, 1, 1) for i, c in enumerate((64, 192, 384, 256, 256))}
    Lpips(random_alexnet(7), linear)  # builds without files
    with raises_naming("linear"):
        Lpips(random_alexnet(7), {k: v for k, v in linear.items() if not k.startswith("lin4")})
    with raises_naming("backbone"):
        Lpips({}, linear)
    vgg_linear = {f"lin{i}.model.1.weight": torch.rand(1, c, 1, 1) for i, c in enumerate((64, 128, 256, 512, 512))}
    vgg16 = random_vgg16(7)
    with raises_naming("linear"):
        Lpips(vgg16, linear, network="vgg")  # AlexNet's linear layers on VGG16's stages
    assert Lpips(vgg16, vgg_linear, network="vgg").network == "vgg"
