"""Helpers shared by the tests (pytest puts this folder on sys.path)."""

import contextlib
import warnings

import jaxtyping
import pytest
import torch

from headfields.renderers import PackedSamples, SlotSamples


def raises_naming(name: str):
    """Bad input raises a ValueError/TypeError that names ``name``: either the library's own
    ``"name: expected ..."`` message or the jaxtyping checker's ``parameter 'name'``."""
    return pytest.raises((ValueError, TypeError), match=rf"(^{name}:|parameter '{name}')")


def fit(model, batch, steps: int, on_backward=None):
    """``steps`` optimiser steps of ``model`` on one batch, as the training loop takes them (the model's optimiser
    and schedule, ``before_step`` with the batch's head); ``on_backward(step)`` runs after each backward. Returns
    the losses, the optimiser and the last step's output."""
    from headfields.training import build_optimizer, set_learning_rate

    optimizer = build_optimizer(model, model.optimization)
    losses = []
    for step in range(steps):
        set_learning_rate(optimizer, model.optimization, step)
        model.before_step(step, batch.head)
        out = model.training_step(batch, step)
        optimizer.zero_grad()
        out.loss.backward()
        if on_backward is not None:
            on_backward(step)
        optimizer.step()
        losses.append(float(out.loss.detach()))
    return losses, optimizer, out


def tiny_nphm_config(sdf_width: int = 16):
    """An NPHM prior small enough for a test: codes of a few numbers, members ``sdf_width`` wide, 3 neighbours."""
    from headfields.decoders import AnchorSdfConfig, AppearanceConfig, SdfMlpConfig
    from headfields.deformers import HyperDeformerConfig
    from headfields.models.mononphm import NphmConfig

    return NphmConfig(
        global_dim=4,
        local_dim=2,
        expression_dim=3,
        compressed_identity_dim=2,
        appearance_dim=2,
        sdf=AnchorSdfConfig(
            local=SdfMlpConfig(hidden_dim=sdf_width, hidden_layers=2), neighbours=3, sigma_rank=3, global_distance=0.75
        ),
        deformer=HyperDeformerConfig(hidden_dim=16, hidden_layers=2, skip_layer=1),
        appearance=AppearanceConfig(hidden_dim=16, hidden_layers=2, feature_dim=4),
        anchor_hidden=8,
    )


def tiny_flame_prior(flame, config=None, seed: int = 0):
    """A frozen NPHM prior on ``flame``'s anchors (``config``: :func:`tiny_nphm_config`'s by default), its anchor
    predictor at zero (the anchors are the template's), weights drawn from ``seed``: what MonoNPHM's tests track."""
    from headfields.models.mononphm import Nphm
    from headfields.synthetic import anchor_vertices

    ids, mirror = anchor_vertices(flame)
    neutral = flame().canonical_vertices
    torch.manual_seed(seed)
    prior = Nphm(neutral[ids], mirror, (neutral.amin(0) + neutral.amax(0)) / 2, 1, 1, config or tiny_nphm_config())
    with torch.no_grad():
        prior.anchor_offsets[-1].weight.zero_()
        prior.anchor_offsets[-1].bias.zero_()
    return prior.requires_grad_(False)


@contextlib.contextmanager
def shapes_unchecked():
    """The jaxtyping runtime checker off inside (every thread: its switch is global), back as it was after. For the
    end-to-end runs marked ``unchecked`` (conftest): they call, thousands of times, functions that the unit tests
    check, and the checker made them a third slower."""
    before = jaxtyping.config.jaxtyping_disable
    jaxtyping.config.update("jaxtyping_disable", True)
    try:
        yield
    finally:
        jaxtyping.config.update("jaxtyping_disable", before)


# torchvision's AlexNet and VGG16 convolutions (features.*), written out so these tests need no torchvision.
ALEXNET_SHAPES = {
    "features.0": (64, 3, 11, 11),
    "features.3": (192, 64, 5, 5),
    "features.6": (384, 192, 3, 3),
    "features.8": (256, 384, 3, 3),
    "features.10": (256, 256, 3, 3),
}
VGG16_SHAPES = {
    f"features.{index}": (out, width, 3, 3)
    for index, width, out in zip(
        (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28),  # the 3x3 convolutions between the ReLUs and poolings
        (3, 64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512),
        (64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512, 512),
        strict=True,
    )
}


def _random_convolutions(shapes: dict[str, tuple[int, ...]], seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    state = {}
    for name, shape in shapes.items():
        fan_in = shape[1] * shape[2] * shape[3]
        state[f"{name}.weight"] = torch.randn(shape, generator=g) * (2 / fan_in) ** 0.5  # He init: features stay alive
        state[f"{name}.bias"] = torch.randn(shape[0], generator=g) * 0.01
    state["classifier.1.weight"] = torch.zeros(8, 4)  # a file's other keys are ignored
    return state


def random_alexnet(seed: int) -> dict[str, torch.Tensor]:
    """AlexNet's convolutions with random He-initialised weights: a weights file LPIPS reads, nothing downloaded."""
    return _random_convolutions(ALEXNET_SHAPES, seed)


def random_vgg16(seed: int) -> dict[str, torch.Tensor]:
    """VGG16's convolutions with random He-initialised weights (15 M numbers, 59 MB saved: make few)."""
    return _random_convolutions(VGG16_SHAPES, seed)


def slot_samples(per_ray: list[int], slots: int, fits: list[bool]) -> SlotSamples:
    """Rays with ``per_ray`` samples each (ray r's at t = r + k / 100), in ``slots`` slots with padding after."""
    ray = torch.cat([torch.full((n,), r, dtype=torch.long) for r, n in enumerate(per_ray)] + [torch.zeros(0, dtype=torch.long)])
    start = torch.cat([r + torch.arange(n, dtype=torch.float64) / 100 for r, n in enumerate(per_ray)] + [torch.zeros(0)])
    n = len(ray)
    pad = slots - n
    last = len(per_ray) - 1
    far = torch.tensor([start[-1].item() + 0.01 if n else 0.0], dtype=torch.float64)
    ray = torch.cat([ray, torch.full((pad,), last)])
    end = torch.cat([start + 0.01, far.expand(pad)])
    start = torch.cat([start, far.expand(pad)])
    samples = PackedSamples(ray, start, end, len(per_ray))
    return SlotSamples(samples, torch.tensor(n), torch.tensor(n), torch.tensor(fits))


def eager_and_graphed(monkeypatch, train_one):
    """``train_one(graphed)`` for graphed False, then True (``TrainingConfig.cuda_graph``), a capture's warning failing
    it: the StepGraph the graphed run made and what each run returned (its metrics, say), by ``graphed``."""
    from headfields.training import step_graph

    graphs, made = [], step_graph.StepGraph.__init__

    def kept(self, *args, **kwargs):
        made(self, *args, **kwargs)
        graphs.append(self)

    monkeypatch.setattr(step_graph.StepGraph, "__init__", kept)
    runs = {}
    for graphed in (False, True):
        with warnings.catch_warnings():
            warnings.simplefilter("error", RuntimeWarning)  # a failed capture warns: here it fails the test
            runs[graphed] = train_one(graphed)
    (graph,) = graphs
    return graph, runs


def true_pupils(model, params, cameras) -> torch.Tensor:
    """Each eye's pupil in each frame's pixels ``[N, 2, 2]`` (``headfields.parametric.EYE_JOINTS`` order): the
    eyeball vertex nearest straight ahead of its joint, posed by the model's own skinning and projected. Independent
    of the gaze fit, which composes the joint transforms itself."""
    from headfields.cameras import project_points
    from headfields.parametric import EYE_JOINTS

    rest = model(shape=params.shape)
    poles = []
    for name in EYE_JOINTS:
        j = model.joint_index(name)
        ball = torch.nonzero(model.lbs_weights[:, j] > 0.5)[:, 0]
        ahead = rest.rest_vertices[0, ball] - rest.joints[0, j]
        poles.append(ball[(ahead[:, 2] / ahead.norm(dim=-1)).argmax()])
    head = model(shape=params.shape, expression=params.expression, pose=params.pose, translation=params.translation)
    posed = head.vertices[:, torch.stack(poles)].detach()
    n = posed.shape[0]
    return project_points(cameras, posed.reshape(-1, 3), torch.arange(n).repeat_interleave(2)).pixels.view(n, 2, 2)
