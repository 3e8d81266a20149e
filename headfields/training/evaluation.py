"""Rendering held-out frames and scoring them: PSNR, SSIM, L1 and LPIPS (AlexNet's and VGG16's) over the frame,
the head and named regions, GaussianAvatars' own PSNR and LPIPS beside them, with the renders and comparisons
written as PNGs."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from jaxtyping import Bool, Float
from PIL import Image
from torch import Tensor

from ..cameras import PinholeCameras, Rays, image_pixels, pixel_rays
from ..checks import check_count, check_memory, trusted_values
from ..data import BACKGROUND_LABEL, FrameSet
from ..heads import tracked_head
from ..metrics import SSIM_WINDOW, l1, psnr, ssim
from ..metrics.perceptual import TRUNKS, Lpips, LpipsUnavailable, load_lpips
from ..outputs import atomic_path
from ..parametric import Head
from ..progress import Progress
from ..renderers.volume import EARLY_STOP_TRANSMITTANCE
from .config import region_codes
from .contract import AvatarModel

__all__ = [
    "Evaluation",
    "HEAD_MASKING",
    "comparison",
    "evaluate",
    "evenly_spread",
    "frame_seconds",
    "image_bytes",
    "lpips_for_run",
    "render_image",
    "render_pixels",
    "render_view",
    "save_png",
]

ERROR_GAIN = 4.0  # error images show |render - truth| four times brighter
# How the *_head metrics use the mask (recorded in metrics.json as "head_masking").
HEAD_MASKING = (
    "psnr_head, l1_head: over the mask's pixels; ssim_head: the SSIM map averaged over the window centres in the "
    "mask; lpips_head, lpips_vgg_head: LPIPS of both images set to white outside the mask; each a mean over the "
    "frames whose mask has pixels"
)


@dataclass
class Evaluation:
    """Means over the evaluated frames. The ``*_head`` scores use each frame's head mask (``mask`` says which;
    None without one, or when no frame's mask has a pixel; see :data:`HEAD_MASKING`); ``lpips`` (AlexNet's, the
    INSTA and MonoAvatar tables') is None with the reason in ``lpips_note``, ``lpips_vgg`` (VGG16's) likewise in
    ``lpips_vgg_note``; ``psnr_regions`` holds each asked region's PSNR (None where no frame shows it).

    ``*_gaussian_avatars``: the whole frame scored as GaussianAvatars' ``train.py`` scores it, the numbers of its
    paper's tables (its issues #35 and #100): PSNR the mean of the channels' PSNRs, LPIPS AlexNet's with the
    [0, 1] images fed unscaled (None when ``lpips`` is, the same reason); SSIM as 3DGS's is ``ssim_3dgs``."""

    psnr: float
    ssim: float  # over the windows inside the image (Wang et al.; the avatar papers' tables)
    ssim_3dgs: float  # with the image zero-padded, windows on every pixel: 3DGS's (GaussianAvatars' scores)
    psnr_gaussian_avatars: float  # each frame's mean of its three channels' PSNRs (GaussianAvatars' train.py)
    frames: int
    l1: float
    psnr_head: float | None
    ssim_head: float | None
    l1_head: float | None
    head_frames: int  # frames whose mask has pixels (the head means are over them)
    mask: str | None  # which mask: "segmentation != 0 (background)", the foreground masks, or None
    lpips: float | None
    lpips_head: float | None
    lpips_note: str | None  # why lpips is None (None when it was computed)
    lpips_network: str | None  # "alex: backbone <file>, linear layers lpips <version> v0.1" when computed
    lpips_vgg: float | None
    lpips_vgg_head: float | None
    lpips_vgg_note: str | None
    lpips_vgg_network: str | None  # "vgg: backbone <file>, ..." when computed
    lpips_gaussian_avatars: float | None  # AlexNet's, [0, 1] images fed as they are (GaussianAvatars' train.py)
    lpips_gaussian_avatars_note: str | None  # why it is None: lpips_note's reason
    psnr_regions: dict[str, float | None]
    region_frames: dict[str, int]  # frames in which each region has pixels (its PSNR is the mean over them)
    regions: dict[str, tuple[int, ...]]  # the label codes of each region

    def summary(self) -> str:
        """The scores in a line: ``psnr 24.31  head psnr 22.10  ssim 0.9012  lpips 0.0811  lpips_vgg 0.1520``."""
        head = "" if self.psnr_head is None else f"  head psnr {self.psnr_head:.2f}"
        perceptual = "" if self.lpips is None else f"  lpips {self.lpips:.4f}"
        perceptual += "" if self.lpips_vgg is None else f"  lpips_vgg {self.lpips_vgg:.4f}"
        return f"psnr {self.psnr:.2f}{head}  ssim {self.ssim:.4f}{perceptual}"

    def unscored(self) -> list[str]:
        """A line for each LPIPS left out, with why (``lpips: null (...)``)."""
        notes = {"lpips": self.lpips_note, "lpips_vgg": self.lpips_vgg_note}
        return [f"{key}: null ({note})" for key, note in notes.items() if note is not None]

    def metrics(self) -> dict[str, object]:
        """The image part of ``metrics.json`` (JSON types: lists, not tuples)."""
        out: dict[str, object] = {
            "psnr": self.psnr,
            "ssim": self.ssim,
            "ssim_3dgs": self.ssim_3dgs,
            "l1": self.l1,
            "psnr_head": self.psnr_head,
            "ssim_head": self.ssim_head,
            "l1_head": self.l1_head,
            "lpips": self.lpips,
            "lpips_head": self.lpips_head,
            "lpips_note": self.lpips_note,
            "lpips_network": self.lpips_network,
            "lpips_vgg": self.lpips_vgg,
            "lpips_vgg_head": self.lpips_vgg_head,
            "lpips_vgg_note": self.lpips_vgg_note,
            "lpips_vgg_network": self.lpips_vgg_network,
            "psnr_gaussian_avatars": self.psnr_gaussian_avatars,
            "lpips_gaussian_avatars": self.lpips_gaussian_avatars,
            "lpips_gaussian_avatars_note": self.lpips_gaussian_avatars_note,
            "mask": self.mask,
            "head_masking": HEAD_MASKING if self.mask is not None else None,
            "head_frames": self.head_frames,
        }
        if self.regions:
            out["psnr_regions"] = dict(self.psnr_regions)
            out["regions"] = {
                name: {"labels": list(codes), "frames": self.region_frames[name]} for name, codes in self.regions.items()
            }
        return out


def render_image(
    model: AvatarModel,
    frames: FrameSet,
    frame: int,
    chunk: int,
    device: torch.device,
    render: Callable[[Rays], Float[Tensor, "R 3"]] | None = None,
    head: Head | None = None,
) -> Float[Tensor, "H W 3"]:
    """Frame ``frame`` of ``frames``, ``chunk`` rays at a time without gradients, on the CPU, clamped to [0, 1].
    ``render(rays)`` gives the colours (default: ``model.render_rays(rays, head)``, ``head`` the frames' tracked
    head, built when not given, or a one-frame head of frame ``frame``: a tracker's fit of it)."""
    if render is None:
        head = head if head is not None else tracked_head(model.parametric, frames)
        return render_view(model, frames.cameras, frame, head, 0 if head.num_frames == 1 else frame, chunk, device)
    return render_pixels(render, frames.cameras.to(device), frame, chunk).clamp(0, 1)


def render_view(
    model: AvatarModel,
    cameras: PinholeCameras,
    camera: int,
    head: Head,
    head_frame: int,
    chunk: int,
    device: torch.device,
    early_stop: float = EARLY_STOP_TRANSMITTANCE,
) -> Float[Tensor, "H W 3"]:
    """The image of camera ``camera`` of ``cameras`` seeing frame ``head_frame`` of ``head`` (any camera: a
    capture's, or a new path around the head), ``chunk`` rays at a time without gradients, on the CPU, in [0, 1],
    each ray stopped at transmittance ``early_stop`` (the viewer's: ``INTERACTIVE_TRANSMITTANCE``); a rasteriser
    (``model.draws_images``) draws it in one call of ``render_camera``, with its own stop."""
    check_count("head_frame", head_frame, 0, head.num_frames - 1)
    if model.draws_images:  # a rasteriser draws the whole image at once (GaussianAvatar)
        _check_image_memory(cameras, device)
        with torch.no_grad():
            return model.render_camera(cameras.to(device), camera, head, head_frame).image.clamp(0, 1).cpu()

    def render(rays: Rays) -> Float[Tensor, "R 3"]:
        one_frame = dataclasses.replace(rays, frame=torch.full_like(rays.frame, head_frame))
        return model.render_rays(one_frame, head, early_stop=early_stop)

    return render_pixels(render, cameras.to(device), camera, chunk).clamp(0, 1)


def frame_seconds(model: AvatarModel, frames: FrameSet, head: Head, chunk: int, device: torch.device) -> float:
    """Seconds one frame of ``frames`` takes to render (a first estimate; evaluations measure): a rasteriser's whole
    first frame, else one ``chunk`` of its rays scaled to the image."""
    cameras = frames.cameras.to(device)
    was_training = model.training
    model.eval()
    start = time.perf_counter()
    with torch.no_grad(), trusted_values():
        if model.draws_images:
            model.render_camera(cameras, 0, head, 0)
            scale = 1.0
        else:
            pixels = image_pixels(cameras)[:chunk]
            model.render_rays(pixel_rays(cameras, 0, pixels), head)
            scale = cameras.height * cameras.width / len(pixels)
    seconds = (time.perf_counter() - start) * scale
    model.train(was_training)
    return seconds


def _check_image_memory(cameras: PinholeCameras, device: torch.device) -> None:
    """Refuse an image of ``cameras``' size that ``device`` has no memory for, before anything is allocated."""
    size = f"{cameras.width} x {cameras.height} pixels"
    check_memory("cameras", size, image_bytes(cameras.width, cameras.height), device, "an image's buffers")


def render_pixels(render: Callable[[Rays], Tensor], cameras: PinholeCameras, camera: int, chunk: int) -> Float[Tensor, "H W C"]:
    """What ``render(rays)`` gives for every pixel of camera ``camera`` of ``cameras`` (colours [R, 3], a depth [R],
    ...), ``chunk`` rays at a time without gradients, as an image [H, W, C] on the CPU. An image too large for the
    memory available is refused before anything is allocated."""
    _check_image_memory(cameras, cameras.device)
    pixels = image_pixels(cameras)
    out = []
    with torch.no_grad():
        for start in range(0, len(pixels), chunk):
            with trusted_values():  # the image's own pixels and rays: nothing to check, nothing read back from a GPU
                out.append(render(pixel_rays(cameras, camera, pixels[start : start + chunk])))
    return torch.cat(out).reshape(cameras.height, cameras.width, -1).cpu()


def image_bytes(width: int, height: int, channels: int = 3) -> int:
    """The bytes :func:`render_pixels` holds for an image: the pixel centres (2 float32 and the temporaries that
    make them: 24 bytes a pixel) and the rendered values, in chunks and then concatenated (2 x 4 bytes a channel)."""
    return width * height * (24 + 8 * channels)


def save_png(image: Float[Tensor, "H W 3"], path: str | Path) -> None:
    """An image in [0, 1] as an 8-bit PNG, written whole (parent folders made as needed)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as temporary:
        Image.fromarray((image.clamp(0, 1).numpy() * 255 + 0.5).astype(np.uint8)).save(temporary)


def comparison(pred: Float[Tensor, "H W 3"], truth: Float[Tensor, "H W 3"]) -> Float[Tensor, "H W3 3"]:
    """Ground truth | render | error side by side; the error is the mean absolute difference, x ERROR_GAIN."""
    error = ((pred - truth).abs().mean(dim=-1, keepdim=True) * ERROR_GAIN).clamp(0, 1).expand_as(pred)
    return torch.cat([truth, pred, error], dim=1)


def _head_masks(frames: FrameSet) -> tuple[Bool[Tensor, "N H W"] | None, str | None]:
    """The subject's pixels of every frame and which mask they come from: the segmentation's non-background
    labels, else the foreground masks, else none."""
    if frames.segmentation is not None:
        return frames.segmentation != BACKGROUND_LABEL, f"segmentation != {BACKGROUND_LABEL} (background)"
    if frames.masks is not None:
        return frames.masks, "masks (foreground alpha)"
    return None, None


def _lpips_network(
    name: str, lpips: Lpips | LpipsUnavailable | None, network: str, frames: FrameSet
) -> tuple[Lpips | None, str | None]:
    """The network to use for ``frames``, or None and why not; ``name``: the argument that gave it, which must
    be LPIPS with ``network``'s trunk."""
    h, w = frames.cameras.height, frames.cameras.width
    if lpips is not None and not isinstance(lpips, Lpips | LpipsUnavailable):
        raise TypeError(f"{name}: expected an Lpips network, LpipsUnavailable or None, got {type(lpips).__name__}")
    if isinstance(lpips, Lpips) and lpips.network != network:
        raise ValueError(f"{name}: expected LPIPS ({network}), got LPIPS ({lpips.network})")
    if lpips is None:
        return None, f"not computed (no LPIPS ({network}) network given to evaluate)"
    if isinstance(lpips, LpipsUnavailable):
        return None, lpips.reason
    if min(h, w) < lpips.min_size:
        size = f"{lpips.min_size} x {lpips.min_size}"
        return None, f"images of {h} x {w} pixels are smaller than LPIPS ({lpips.network}) needs ({size})"
    return lpips, None


def _mean(values: list[float]) -> float | None:
    return float(np.mean(values)) if values else None


def _source(network: Lpips | None) -> str | None:
    return None if network is None else network.source


def evaluate(
    model: AvatarModel,
    frames: FrameSet,
    indices: list[int],
    chunk: int,
    device: torch.device,
    out: Path | None = None,
    head: Head | None = None,
    regions: dict[str, tuple[int, ...]] | None = None,
    lpips: Lpips | LpipsUnavailable | None = None,
    progress: Progress | None = None,
    lpips_vgg: Lpips | LpipsUnavailable | None = None,
) -> Evaluation:
    """PSNR, SSIM, L1 and LPIPS over the given held-out frames (means over frames), over the whole frame and
    over the head (each frame's subject mask: the segmentation's non-background pixels, else ``frames.masks``;
    :data:`HEAD_MASKING` says how each score uses it), and the PSNR of each of ``regions`` ({name: segmentation
    label codes}, e.g. ``{"hair": (6,), "face": (1, 2, 5)}``: the pixels with any of the codes).

    ``lpips``: the AlexNet network from :func:`~headfields.metrics.perceptual.load_lpips` (load it once, not per call),
    or its :class:`~headfields.metrics.perceptual.LpipsUnavailable`; without one, or for images under 31 x 31, ``lpips``
    is None and ``lpips_note`` says why. ``lpips_vgg``: the same with VGG16 (``load_lpips(network="vgg")``,
    images of at least 16 x 16), scored into ``lpips_vgg`` and ``lpips_vgg_head``. The whole frame is also
    scored as GaussianAvatars' ``train.py`` scores it: ``psnr_gaussian_avatars`` (``psnr(..., channels="mean")``)
    and, with ``lpips``, ``lpips_gaussian_avatars`` (the same network, ``normalize=False``). A frame whose mask
    (or region) has no pixel is left out of that mean; ``head_frames`` and ``region_frames`` count the frames in
    it. With ``out``, writes each frame's render (``00000.png``) and its comparison with the ground truth
    (``00000_compare.png``). ``head``: the frames' tracked head (built when not given). ``progress``: advanced by
    one a frame.

    Example: ``evaluate(model, frames, [0, 5], 8192, device, regions={"hair": (6,)}, lpips=load_lpips()).psnr_head``."""
    regions = region_codes("regions", regions) if regions is not None else {}
    if regions and frames.segmentation is None:
        raise ValueError("regions: expected frames with a segmentation (region labels) to find the regions in, got none")
    # {metrics.json key: (network or None, why not)}: AlexNet's under the papers' "lpips", VGG16's beside it.
    perceptual = {
        "lpips": _lpips_network("lpips", lpips, "alex", frames),
        "lpips_vgg": _lpips_network("lpips_vgg", lpips_vgg, "vgg", frames),
    }
    head = head if head is not None else tracked_head(model.parametric, frames)
    masks, mask_rule = _head_masks(frames)
    full: dict[str, list[float]] = {"psnr": [], "ssim": [], "ssim_3dgs": [], "l1": [], "lpips": [], "lpips_vgg": []}
    ga: dict[str, list[float]] = {"psnr": [], "lpips": []}  # GaussianAvatars' train.py's conventions
    inside: dict[str, list[float]] = {"psnr": [], "ssim": [], "l1": [], "lpips": [], "lpips_vgg": []}
    per_region: dict[str, list[float]] = {name: [] for name in regions}
    codes = {name: torch.tensor(c, dtype=torch.uint8) for name, c in regions.items()}
    half = SSIM_WINDOW // 2
    for f in indices:
        pred = render_image(model, frames, f, chunk, device, head=head)
        truth = frames.images[f].float() / 255.0
        full["psnr"].append(float(psnr(pred, truth)))
        full["ssim"].append(float(ssim(pred, truth)))
        full["ssim_3dgs"].append(float(ssim(pred, truth, padding="zero")))
        full["l1"].append(float(l1(pred, truth)))
        ga["psnr"].append(float(psnr(pred, truth, channels="mean")))
        mask = None if masks is None else masks[f].cpu()
        if mask is not None and bool(mask.any()):
            inside["psnr"].append(float(psnr(pred, truth, mask=mask)))
            inside["l1"].append(float(l1(pred, truth, mask=mask)))
            if bool(mask[half:-half, half:-half].any()):  # a mask only on the border has no SSIM window centre
                inside["ssim"].append(float(ssim(pred, truth, mask=mask)))
        for key, (network, _) in perceptual.items():
            if network is None:
                continue
            on = network.device
            images = pred.to(on), truth.to(on)  # once for the network's scores of the frame
            with torch.no_grad():
                full[key].append(float(network(*images)))
                if key == "lpips":
                    ga["lpips"].append(float(network(*images, normalize=False)))
                if mask is not None and bool(mask.any()):
                    inside[key].append(float(network(*images, mask=mask.to(on))))
        for name, c in codes.items():
            region = torch.isin(frames.segmentation[f].cpu(), c)
            if bool(region.any()):
                per_region[name].append(float(psnr(pred, truth, mask=region)))
        if out is not None:
            out.mkdir(parents=True, exist_ok=True)
            save_png(pred, out / f"{f:05d}.png")
            save_png(comparison(pred, truth), out / f"{f:05d}_compare.png")
        if progress is not None:
            progress.update(1)
    head_frames = len(inside["psnr"])
    return Evaluation(
        psnr=float(np.mean(full["psnr"])),
        ssim=float(np.mean(full["ssim"])),
        ssim_3dgs=float(np.mean(full["ssim_3dgs"])),
        frames=len(indices),
        l1=float(np.mean(full["l1"])),
        psnr_head=_mean(inside["psnr"]),
        ssim_head=_mean(inside["ssim"]),
        l1_head=_mean(inside["l1"]),
        head_frames=head_frames,
        mask=mask_rule,
        lpips=_mean(full["lpips"]),
        lpips_head=_mean(inside["lpips"]),
        lpips_note=perceptual["lpips"][1],
        lpips_network=_source(perceptual["lpips"][0]),
        lpips_vgg=_mean(full["lpips_vgg"]),
        lpips_vgg_head=_mean(inside["lpips_vgg"]),
        lpips_vgg_note=perceptual["lpips_vgg"][1],
        lpips_vgg_network=_source(perceptual["lpips_vgg"][0]),
        psnr_gaussian_avatars=float(np.mean(ga["psnr"])),
        lpips_gaussian_avatars=_mean(ga["lpips"]),
        lpips_gaussian_avatars_note=perceptual["lpips"][1],
        psnr_regions={name: _mean(values) for name, values in per_region.items()},
        region_frames={name: len(values) for name, values in per_region.items()},
        regions=regions,
    )


def evenly_spread(count: int, total: int) -> list[int]:
    """``min(count, total)`` indices spread evenly over ``range(total)``, its ends included (all of them when
    ``count >= total``)."""
    n = min(count, total)
    return sorted({round(i * (total - 1) / max(n - 1, 1)) for i in range(n)})


def lpips_for_run(weights: str | None, device: torch.device, network: str) -> Lpips | LpipsUnavailable:
    """:func:`~headfields.metrics.perceptual.load_lpips` of ``network`` for a training run, its errors naming the config's
    field that gave ``weights`` (``TrainingConfig.lpips_weights``, ``lpips_vgg_weights``: the trunk's ``setting``)
    and the train command's flag for it (``--lpips-weights``, ``--lpips-vgg-weights``)."""
    setting = TRUNKS[network].setting
    try:
        return load_lpips(weights, device, network)
    except (FileNotFoundError, ValueError) as error:
        message = str(error)
        if not message.startswith("weights:"):
            raise
        flag = "--" + setting.replace("_", "-")
        given = f"the file {flag} gives" if weights is not None else f"torch.hub's cache; or give a file with {flag}"
        raise type(error)(f"{setting}:" + message.removeprefix("weights:") + f" ({given})") from None
