"""LPIPS (Zhang et al. 2018), the learned perceptual distance of the avatar papers' tables, version 0.1 of the
``lpips`` package, with either trunk the papers use: AlexNet ("LPIPS (alex)": INSTA's, MonoAvatar's and
GaussianAvatars' tables) or VGG16 ("LPIPS (vgg)": GaussianAvatars' ``metrics.py``, which its tables do not use:
its issue #35). GaussianAvatars' tables feed AlexNet [0, 1] images without mapping them to [-1, 1] (its issue
#100): ``normalize=False`` gives that number.

The network is the ``lpips`` package's: the trunk's five convolutional stages (AlexNet's, or VGG16's up to
relu1_2, relu2_2, relu3_3, relu4_3 and relu5_3), each stage's features unit-normalised over channels, their
squared differences weighted by the package's calibrated 1x1 convolutions, averaged over space and summed over the
stages. We build it here in plain torch rather than call ``lpips.LPIPS``: that one imports torchvision for the
trunks' definitions, and PyPI's torchvision wheels are built against CUDA torch, so with a CPU build of torch
``import torchvision`` (and so ``import lpips``) fails. ``tests/unit/fields/test_perceptual.py`` checks that this
network gives ``lpips.LPIPS``'s numbers on the same weights, for both trunks.

Two weight files a network, neither downloaded (evaluation runs offline):

- the trunk: torchvision's ImageNet AlexNet or VGG16, the file its ``alexnet(weights="IMAGENET1K_V1")`` or
  ``vgg16(weights="IMAGENET1K_V1")`` downloads into ``torch.hub.get_dir()/checkpoints/`` (:data:`ALEXNET_FILE`,
  :data:`VGG16_FILE`), or a path you give;
- the linear layers: ``weights/v0.1/alex.pth`` or ``vgg.pth`` inside the installed ``lpips`` package (``pip
  install -e ".[lpips]"``), found without importing it.

:func:`load_lpips` returns an :class:`Lpips` network, or :class:`LpipsUnavailable` with the reason when either
file is missing: the training loop then records ``lpips: null`` (``lpips_vgg: null``) and the reason, never a
made-up value.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import pickle
import warnings
import zipfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from jaxtyping import Bool, Float
from torch import Tensor, nn

from ..checks import check_float, check_shape, checking_values

__all__ = [
    "ALEXNET_FILE",
    "ALEXNET_URL",
    "LPIPS_BACKGROUND",
    "LPIPS_MIN_SIZES",
    "LPIPS_NETWORKS",
    "VGG16_FILE",
    "VGG16_URL",
    "Lpips",
    "LpipsUnavailable",
    "default_lpips_weights",
    "load_lpips",
]

# torchvision's ImageNet trunks (AlexNet_Weights.IMAGENET1K_V1, VGG16_Weights.IMAGENET1K_V1): the names their
# downloads give the files in torch.hub's checkpoints folder; the 8 hex digits are the start of each file's SHA-256.
ALEXNET_FILE = "alexnet-owt-7be5be79.pth"
ALEXNET_URL = f"https://download.pytorch.org/models/{ALEXNET_FILE}"
VGG16_FILE = "vgg16-397923af.pth"
VGG16_URL = f"https://download.pytorch.org/models/{VGG16_FILE}"
# lpips v0.1's input scaling: ImageNet's mean and standard deviation, mapped from [0, 1] to [-1, 1].
SHIFT = (-0.030, -0.088, -0.188)
SCALE = (0.458, 0.448, 0.450)
NORM_EPS = 1e-10  # lpips's guard in the channel normalisation
LPIPS_BACKGROUND = 1.0  # the colour (white) both images take outside a mask
ZIP_MAGIC = b"PK\x03\x04"  # how a zip archive (what torch.save writes) starts
VGG16_STAGES = ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512))  # each stage's 3x3 convolutions


def _alexnet_features() -> nn.Sequential:
    """AlexNet's convolutional part with torchvision's layer indices (so its state dict's ``features.*`` keys
    load as they are), up to the last ReLU: the final pooling feeds no stage."""
    return nn.Sequential(
        nn.Conv2d(3, 64, kernel_size=11, stride=4, padding=2),
        nn.ReLU(),
        nn.MaxPool2d(kernel_size=3, stride=2),
        nn.Conv2d(64, 192, kernel_size=5, padding=2),
        nn.ReLU(),
        nn.MaxPool2d(kernel_size=3, stride=2),
        nn.Conv2d(192, 384, kernel_size=3, padding=1),
        nn.ReLU(),
        nn.Conv2d(384, 256, kernel_size=3, padding=1),
        nn.ReLU(),
        nn.Conv2d(256, 256, kernel_size=3, padding=1),
        nn.ReLU(),
    )


def _vgg16_features() -> nn.Sequential:
    """VGG16's convolutional part with torchvision's layer indices (3x3 convolutions and ReLUs, a 2x2 pooling
    between stages), up to relu5_3 (index 29): the final pooling feeds no stage."""
    layers: list[nn.Module] = []
    width = 3
    for stage, widths in enumerate(VGG16_STAGES):
        if stage > 0:
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
        for out in widths:
            layers += [nn.Conv2d(width, out, kernel_size=3, padding=1), nn.ReLU()]
            width = out
    return nn.Sequential(*layers)


@dataclass(frozen=True)
class _Trunk:
    """What differs between LPIPS's trunks: everything else (scaling, normalisation, linear layers) is shared."""

    title: str  # for messages
    features: Callable[[], nn.Sequential]
    channels: tuple[int, ...]  # the five stages' widths
    taps: tuple[int, ...]  # the ReLUs after which lpips reads each stage (torchvision's ``features`` indices)
    # The smallest image the trunk's strides and poolings leave a pixel for at its last stage.
    min_size: int
    file: str  # torchvision's weights file in torch.hub's cache
    url: str
    linear: str  # the linear layers' file in the lpips package's weights/v0.1
    setting: str  # the TrainingConfig field that gives the trunk's file


TRUNKS = {
    "alex": _Trunk(
        title="AlexNet",
        features=_alexnet_features,
        channels=(64, 192, 384, 256, 256),
        taps=(1, 4, 7, 9, 11),
        # A stride-4 11x11 convolution, then two 3x3 stride-2 poolings: (31 + 4 - 11) // 4 + 1 = 7, then 3, then 1.
        min_size=31,
        file=ALEXNET_FILE,
        url=ALEXNET_URL,
        linear="alex.pth",
        setting="lpips_weights",
    ),
    "vgg": _Trunk(
        title="VGG16",
        features=_vgg16_features,
        channels=(64, 128, 256, 512, 512),
        taps=(3, 8, 15, 22, 29),  # relu1_2, relu2_2, relu3_3, relu4_3, relu5_3
        min_size=16,  # four 2x2 poolings before relu5_3: 16 / 2^4 = 1
        file=VGG16_FILE,
        url=VGG16_URL,
        linear="vgg.pth",
        setting="lpips_vgg_weights",
    ),
}
LPIPS_NETWORKS = tuple(TRUNKS)  # the ``network`` names, as the lpips package spells them (``lpips.LPIPS(net=...)``)
LPIPS_MIN_SIZES = {name: trunk.min_size for name, trunk in TRUNKS.items()}  # pixels, each side


def _trunk(network: object) -> _Trunk:
    if not isinstance(network, str) or network not in TRUNKS:
        raise ValueError(f"network: expected one of {LPIPS_NETWORKS}, got {network!r}")
    return TRUNKS[network]


class Lpips(nn.Module):
    """LPIPS v0.1 with AlexNet (``network="alex"``) or VGG16 (``"vgg"``): ``Lpips(backbone, linear, network=...)``
    from the two state dicts (torchvision's AlexNet or VGG16, and the ``lpips`` package's ``alex.pth`` or
    ``vgg.pth``), or :func:`load_lpips` from their files. Its weights are frozen; the distance is differentiable
    with respect to the images. ``source`` says where the weights came from; ``min_size`` is the smallest image
    side the trunk takes."""

    def __init__(
        self,
        backbone: Mapping[str, Tensor],
        linear: Mapping[str, Tensor],
        source: str = "given state dicts",
        network: str = "alex",
    ):
        super().__init__()
        trunk = _trunk(network)
        self.network, self.min_size, self._title, self._taps = network, trunk.min_size, trunk.title, trunk.taps
        self.features = trunk.features()
        self.linear = nn.ModuleList(nn.Conv2d(c, 1, kernel_size=1, bias=False) for c in trunk.channels)
        self.register_buffer("shift", torch.tensor(SHIFT).view(1, 3, 1, 1))
        self.register_buffer("scale", torch.tensor(SCALE).view(1, 3, 1, 1))
        state = {k.removeprefix("features."): v for k, v in backbone.items() if k.startswith("features.")}
        _load(self.features, state, "backbone", f"torchvision's {trunk.title}")
        # The package's layers are lin{i}.model.1 (a dropout sits at model.0, inactive when evaluating).
        layers = {f"{i}.weight": linear.get(f"lin{i}.model.1.weight") for i in range(len(trunk.channels))}
        _load(self.linear, {k: v for k, v in layers.items() if v is not None}, "linear", f"lpips's {trunk.linear} (lin0..lin4)")
        self.requires_grad_(False)
        self.eval()
        self.source = source

    @property
    def device(self) -> torch.device:
        """Where the network's weights are (and the images must be)."""
        return self.shift.device

    def forward(
        self,
        pred: Float[Tensor, "*B H W 3"],
        target: Float[Tensor, "*B H W 3"],
        mask: Bool[Tensor, "*B H W"] | None = None,
        normalize: bool = True,
    ) -> Float[Tensor, ""]:
        """LPIPS between images in [0, 1] (``[H, W, 3]`` or ``[B, H, W, 3]``, at least ``min_size`` a side: 31
        for AlexNet, 16 for VGG16), averaged over the images: lpips's number for each pair, on the network's
        device and dtype.

        With ``mask``, both images are set to white (:data:`LPIPS_BACKGROUND`) outside it before the network,
        as the papers' tables evaluate images with the background removed: the background then adds nothing
        but the network's view of the head's edge against white, and the score is the whole image's mean (so
        it shrinks with the head's share of the image; compare it between runs on the same frames). Every
        image needs a pixel in its mask.

        ``normalize=False`` feeds the [0, 1] images to the network as they are, not mapped to lpips's [-1, 1]
        (as ``lpips.LPIPS()(x, y)`` with its default ``normalize=False`` on [0, 1] images): what GaussianAvatars'
        ``train.py`` scores, the LPIPS of its paper's tables (its issue #100). Only to compare with those numbers.

        Example: ``load_lpips()(render, truth)`` is 0 for identical images and ~0.1 to 0.3 for avatar renders."""
        if not isinstance(normalize, bool):
            raise TypeError(f"normalize: expected True or False, got {normalize!r}")
        if pred.dim() not in (3, 4):
            raise ValueError(f"pred: expected shape [H, W, 3] or [B, H, W, 3], got {list(pred.shape)}")
        device = self.device
        check_float("pred", pred, [None] * (pred.dim() - 1) + [3], device=device)
        check_float("target", target, list(pred.shape), device=device)
        h, w = pred.shape[-3], pred.shape[-2]
        if min(h, w) < self.min_size:
            size = f"{self.min_size} x {self.min_size}"
            raise ValueError(f"pred: expected images of at least {size} pixels (what {self._title} needs), got {h} x {w}")
        if checking_values():
            for name, x in (("pred", pred), ("target", target)):
                if bool((x < 0).any() | (x > 1).any()):
                    lo, hi = float(x.min()), float(x.max())
                    raise ValueError(f"{name}: expected values in [0, 1], got values in [{lo:.4g}, {hi:.4g}]")
        x, y = pred.reshape(-1, h, w, 3), target.reshape(-1, h, w, 3)
        if mask is not None:
            check_shape("mask", mask, list(pred.shape[:-1]), device=device)
            if mask.dtype != torch.bool:
                raise TypeError(f"mask: expected a bool tensor, got {mask.dtype}")
            mask = mask.reshape(-1, h, w, 1)
            empty = ~mask.flatten(1).any(dim=1)
            if bool(empty.any()):
                raise ValueError(f"mask: expected a pixel in every image's mask, image {int(empty.nonzero()[0, 0])} has none")
            x, y = (torch.where(mask, t, torch.full_like(t, LPIPS_BACKGROUND)) for t in (x, y))
        return self._distance(x, y, normalize).mean()

    def _distance(self, x: Tensor, y: Tensor, normalize: bool = True) -> Tensor:
        """Per-image LPIPS of ``[N, H, W, 3]`` images in [0, 1] (``normalize=False``: fed as they are)."""
        dtype = self.shift.dtype
        # [0, 1] -> [-1, 1] (lpips's input range) -> ImageNet-normalised; NCHW for the convolutions.
        x, y = ((2 * t.to(dtype) - 1 if normalize else t.to(dtype)).permute(0, 3, 1, 2) for t in (x, y))
        x, y = (x - self.shift) / self.scale, (y - self.shift) / self.scale
        total = x.new_zeros(x.shape[0])
        stage = 0
        for index, layer in enumerate(self.features):
            x, y = layer(x), layer(y)
            if index == self._taps[stage]:
                fx = x / (torch.linalg.vector_norm(x, dim=1, keepdim=True) + NORM_EPS)
                fy = y / (torch.linalg.vector_norm(y, dim=1, keepdim=True) + NORM_EPS)
                total = total + self.linear[stage]((fx - fy).square()).mean(dim=(1, 2, 3))
                stage += 1
        return total


def _load(module: nn.Module, state: Mapping[str, Tensor], name: str, what: str) -> None:
    """``state`` into ``module``, every tensor present and of its shape, else an error naming ``name``."""
    expected = module.state_dict()
    missing = sorted(set(expected) - set(state))
    if missing:
        raise ValueError(f"{name}: expected the state dict of {what}, missing {missing}")
    for key, value in expected.items():
        if not isinstance(state[key], Tensor) or state[key].shape != value.shape:
            got = list(state[key].shape) if isinstance(state[key], Tensor) else type(state[key]).__name__
            raise ValueError(f"{name}: expected {what}, got {key} of shape {got} (expected {list(value.shape)})")
    module.load_state_dict(dict(state))


@dataclass(frozen=True)
class LpipsUnavailable:
    """Why there is no LPIPS network: metrics record ``lpips: null`` (or ``lpips_vgg: null``) and this reason."""

    reason: str


def default_lpips_weights(network: str = "alex") -> Path:
    """Where torchvision keeps its ImageNet AlexNet (``network="alex"``) or VGG16 (``"vgg"``):
    ``torch.hub.get_dir()/checkpoints/`` and :data:`ALEXNET_FILE` or :data:`VGG16_FILE` (``$TORCH_HOME/hub/...``;
    ``~/.cache/torch/hub/...`` by default)."""
    return Path(torch.hub.get_dir()) / "checkpoints" / _trunk(network).file


def _linear_weights(trunk: _Trunk) -> Path | LpipsUnavailable:
    """The installed lpips package's ``alex.pth`` or ``vgg.pth``, found without importing the package (which
    imports torchvision)."""
    spec = importlib.util.find_spec("lpips")
    if spec is None or not spec.submodule_search_locations:
        return LpipsUnavailable('the lpips package is not installed (pip install -e ".[lpips]")')
    path = Path(next(iter(spec.submodule_search_locations))) / "weights" / "v0.1" / trunk.linear
    if not path.is_file():
        return LpipsUnavailable(f"the lpips package has no {path} (its linear layers' weights): reinstall it")
    return path


def _unreadable(path: Path, error: Exception) -> str:
    """What a file ``torch.load(weights_only=True)`` refused is, in a few words (never torch's advice)."""
    try:
        with open(path, "rb") as file:
            head = file.read(len(ZIP_MAGIC))
    except OSError as reading:  # unreadable (permissions, a folder): the operating system's reason
        return f"{type(reading).__name__}: {reading.strerror}"
    if not head:
        what = "an empty file"
    elif head != ZIP_MAGIC:
        what = "not a torch.save file of tensors"
    elif not zipfile.is_zipfile(path):
        what = "a truncated or damaged zip archive"
    elif isinstance(error, pickle.UnpicklingError):  # torch.save's archive, of more than tensors: refused, not run
        what = "a torch.save file of objects other than tensors (a whole model? save its state_dict())"
    else:
        what = "a zip archive torch.save did not write"
    return f"{what} ({type(error).__name__})"


def _read(path: Path, name: str, expected: str) -> dict[str, Tensor]:
    """The state dict in ``path``, else one line naming ``name``, the file and ``expected`` (what it should be)."""
    try:
        with warnings.catch_warnings():  # a plain pickle's protocol warning: the error below says it all
            warnings.filterwarnings("ignore", message="Detected pickle protocol", category=UserWarning)
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        # torch.load raises many kinds (zip, pickle, EOF, IndexError), some over several lines advising
        # weights_only=False, which would run the file's code: say what the file is instead, in one line.
        raise ValueError(f"{name}: could not read {path}: {_unreadable(path, error)}; expected {expected}") from None
    if not isinstance(state, Mapping):
        raise ValueError(f"{name}: {path} holds a {type(state).__name__}, not a state dict; expected {expected}")
    return dict(state)


def load_lpips(
    weights: str | Path | None = None, device: str | torch.device | None = None, network: str = "alex"
) -> Lpips | LpipsUnavailable:
    """The LPIPS network with ``network``'s trunk (``"alex"``: AlexNet, ``"vgg"``: VGG16) on ``device`` (default:
    the CPU), or :class:`LpipsUnavailable` with the reason.

    The trunk's weights come from ``weights`` when given (a torchvision AlexNet or VGG16 state dict; a missing
    file is an error, since you asked for it), else from torch.hub's cache (:func:`default_lpips_weights`; when
    not there, unavailable). The linear layers come from the installed ``lpips`` package (not installed:
    unavailable). Nothing is downloaded. To fill the cache on a machine with network:
    ``torchvision.models.alexnet(weights="IMAGENET1K_V1")`` (``vgg16(...)``), or fetch :data:`ALEXNET_URL`
    (:data:`VGG16_URL`) into it.

    Example: ``metric = load_lpips(network="vgg"); value = metric(render, truth) if isinstance(metric, Lpips) else None``."""
    trunk = _trunk(network)
    if weights is not None:
        backbone_path = Path(weights)
        if not backbone_path.is_file():
            raise FileNotFoundError(f"weights: no file at {backbone_path} (torchvision's {trunk.title} state dict, {trunk.file})")
    linear_path = _linear_weights(trunk)
    if isinstance(linear_path, LpipsUnavailable):
        return linear_path
    if weights is None:
        backbone_path = default_lpips_weights(network)
        if not backbone_path.is_file():
            return LpipsUnavailable(
                f"no {trunk.title} weights at {backbone_path} (torch.hub's cache; nothing is downloaded): put {trunk.url} "
                f"there, or give the file's path (TrainingConfig.{trunk.setting})"
            )
    backbone = _read(backbone_path, "weights", f"torchvision's {trunk.title} state dict ({trunk.file})")
    try:
        version = importlib.metadata.version("lpips")
    except importlib.metadata.PackageNotFoundError:  # found on the path but not installed as a distribution
        version = "?"
    source = f"{network}: backbone {backbone_path}, linear layers lpips {version} v0.1"
    try:
        linear = _read(linear_path, "linear", f"the lpips package's {trunk.linear} (v0.1): reinstall lpips")
        metric = Lpips(backbone, linear, source, network)
    except ValueError as error:  # the backbone's state dict is the ``weights`` file: name the argument given
        message = str(error)
        raise ValueError("weights:" + message.removeprefix("backbone:")) if message.startswith("backbone:") else error from None
    return metric.to(device) if device is not None else metric
