"""The shared training loop with INSTA on a tiny synthetic video: the loss falls, the pieces connect, and a
checkpoint resumes where it stopped."""

import dataclasses
import importlib.util
import json
import platform

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image
from tiny_configs import TINY_INSTA

from headfields.deformers import RigidDeformer
from headfields.heads import tracked_head
from headfields.models.insta import Insta
from headfields.parametric import load_model
from headfields.training import (
    AvatarModel,
    DecayingAdam,
    OptimizerConfig,
    RunLog,
    TrainingConfig,
    build_optimizer,
    evaluate,
    evenly_spread,
    random_backgrounds,
    ray_batch,
    set_learning_rate,
    train,
)
from headfields.training.checkpoints import load_checkpoint

from helpers import fit, raises_naming

TINY = TINY_INSTA


@pytest.fixture
def video(tiny_video):
    return tiny_video


def _model(frames, seed=0):
    torch.manual_seed(seed)
    return Insta(load_model(frames.model_path, frames.model_type), frames.segmentation_labels, TINY)


def _batch(model, frames, count, seed=0):
    head = tracked_head(model.parametric, frames)
    return ray_batch(frames, count, torch.Generator().manual_seed(seed), torch.device("cpu"), head=head)


def test_insta_loss_falls_on_a_fixed_batch(video):
    train_frames, _ = video
    model = _model(train_frames)
    losses, _, _ = fit(model, _batch(model, train_frames, 128), 40)  # past TINY's warm-up: the mouth weighting is on
    assert losses[-1] < 0.5 * losses[0], losses
    # Every trainable piece received a gradient: the deformer's canonical points reach the grid and MLPs.
    table = model.field.encoder.table
    assert table.grad is not None and table.grad.abs().sum() > 0


def _checkpoint(folder):
    return load_checkpoint(folder / "checkpoint.pt")


def test_train_writes_metrics_and_renders_and_resumes_exactly(video, tmp_path):
    train_frames, eval_frames = video
    # Checkpoint at a step where the occupancy grid is due for a refresh: the resumed run must do it too.
    every = TINY.occupancy_every
    config = TrainingConfig(max_iterations=2 * every, rays_per_batch=128, eval_every=0, checkpoint_every=every, eval_frames=1)
    straight = _model(train_frames)
    metrics = train(straight, train_frames, eval_frames, tmp_path / "straight", config)
    written = json.loads((tmp_path / "straight" / "metrics.json").read_text())
    assert written == metrics and metrics["iterations"] == 2 * every and metrics["psnr"] > 0
    final = tmp_path / "straight" / "renders" / "final"
    assert len(list(final.glob("*_compare.png"))) == len(eval_frames) == len(list(final.glob("?????.png")))
    # The comparison is ground truth | render | error, and the montage stacks comparisons.
    compare = torch.from_numpy(np.array(Image.open(final / "00000_compare.png"))).float() / 255
    render = torch.from_numpy(np.array(Image.open(final / "00000.png"))).float() / 255
    width = render.shape[1]
    torch.testing.assert_close(compare[:, :width], eval_frames.images[0].float() / 255, atol=1 / 255, rtol=0)
    torch.testing.assert_close(compare[:, width : 2 * width], render, atol=1 / 255, rtol=0)
    error = ((render - eval_frames.images[0].float() / 255).abs().mean(-1) * 4).clamp(0, 1)
    # The PNG's rounding, and a float32 ulp more: the gain of 4 can land an error exactly on a rounding boundary.
    torch.testing.assert_close(compare[:, 2 * width :, 0], error, atol=2 / 255 + 1e-6, rtol=0)
    assert np.asarray(Image.open(tmp_path / "straight" / "side_by_side.png")).shape[1] == 3 * width

    # Stop half-way, then resume from the checkpoint in a fresh model: the same state as straight through.
    halves = tmp_path / "halves"
    train(_model(train_frames), train_frames, eval_frames, halves, dataclasses.replace(config, max_iterations=every))
    resumed = _model(train_frames, seed=123)  # different initial weights: all must come from the checkpoint
    assert train(resumed, train_frames, eval_frames, halves, config)["iterations"] == 2 * every
    a, b = _checkpoint(tmp_path / "straight"), _checkpoint(halves)
    for part in ("model", "ema"):
        for name, value in a[part].items():
            torch.testing.assert_close(b[part][name], value, rtol=0, atol=1e-6, msg=f"{part}: {name}")
    for (i, x), (_, y) in zip(a["optimizer"]["state"].items(), b["optimizer"]["state"].items(), strict=True):
        torch.testing.assert_close(y["exp_avg"], x["exp_avg"], rtol=0, atol=1e-6, msg=f"optimizer: {i}")
    assert torch.equal(a["generator"], b["generator"])
    # log.jsonl: a line per logged step (log_every and step 1), the same history straight through and resumed.
    logs = [
        [json.loads(line) for line in (folder / "log.jsonl").read_text().splitlines()]
        for folder in (tmp_path / "straight", halves)
    ]
    steps = [r["step"] for r in logs[0]]
    assert steps == [1] + list(range(config.log_every, 2 * every + 1, config.log_every)) and [r["step"] for r in logs[1]] == steps
    for x, y in zip(*logs, strict=True):
        assert y["loss"] == pytest.approx(x["loss"], rel=1e-5) and y["terms"].keys() == x["terms"].keys()
        assert len(x["learning_rates"]) == len(build_optimizer(straight, straight.optimization).param_groups) and x["time"] >= 0


def test_run_log_drops_the_lines_past_the_resumed_step(tmp_path):
    path = tmp_path / "log.jsonl"
    path.write_text("".join(json.dumps({"step": s, "loss": 1.0 / s}) + "\n" for s in range(1, 11)) + '{"step": 11, "lo')
    RunLog(path, 6).append(7, 1.5, loss=0.25)
    records = [json.loads(line) for line in path.read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2, 3, 4, 5, 6, 7] and records[-1] == {"step": 7, "time": 1.5, "loss": 0.25}
    RunLog(path, 0)  # a fresh run starts a fresh log
    assert path.read_text() == ""


def test_insta_needs_a_deformer_that_reports_faces(video):
    train_frames, _ = video
    parametric, labels = load_model(train_frames.model_path), train_frames.segmentation_labels
    model = Insta(parametric, labels, TINY, deformer=RigidDeformer())
    batch = _batch(model, train_frames, 16)
    with pytest.raises(ValueError, match="^deformer:"):
        model.training_step(batch, 0)
    with pytest.raises(ValueError, match="^lips_regions:"):
        Insta(parametric, labels, dataclasses.replace(TINY, lips_regions=("gills",)))


def test_insta_reads_a_capture_without_parameters_from_its_meshes(video):
    train_frames, _ = video
    capture = dataclasses.replace(train_frames, params=None)  # what a real INSTA capture holds
    model = _model(train_frames)
    head = tracked_head(model.parametric, capture)
    from_params = tracked_head(model.parametric, train_frames)
    torch.testing.assert_close(head.vertices, train_frames.mesh_vertices)
    torch.testing.assert_close(head.vertices, from_params.vertices, atol=1e-5, rtol=0)
    torch.testing.assert_close(head.expression, train_frames.expression)
    batch = _batch(model, capture, 64, seed=1)
    assert torch.isfinite(model.training_step(batch, step=0).loss)
    with pytest.raises(ValueError, match="^frames:"):
        tracked_head(model.parametric, dataclasses.replace(capture, mesh_vertices=None, mesh_faces=None))


def test_ray_batch_draws_from_the_requested_number_of_frames(video):
    train_frames, _ = video
    generator = torch.Generator().manual_seed(3)
    for _ in range(5):
        batch = ray_batch(train_frames, 256, generator, torch.device("cpu"), frames_per_batch=2)
        assert len(batch.rays.frame.unique()) == 2  # 256 draws from 2 frames miss one with odds 2^-255
    everything = ray_batch(train_frames, 4096, generator, torch.device("cpu"), frames_per_batch=100)
    assert len(everything.rays.frame.unique()) == len(train_frames)
    with pytest.raises(ValueError, match="^frames_per_batch:"):
        TrainingConfig(frames_per_batch=0)


def test_the_optimizer_follows_the_exponential_schedule_over_trainable_parameters():
    """Analytic rates: ``initial`` at step 0, their geometric mean half-way, ``final`` from ``steps`` on; a
    group's ``lr_scale`` multiplies its rate; frozen parameters are left out; no final rate: constant."""
    layers = torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.Linear(3, 1), torch.nn.Linear(1, 1))
    layers[0].requires_grad_(False)

    class Grouped(AvatarModel):  # a model's own groups (any other module: one group of all its parameters)
        def __init__(self):
            super().__init__()
            self.layers = layers

        def param_groups(self):
            return [{"params": layers[:2].parameters()}, {"params": layers[2].parameters(), "lr_scale": 0.1}]

    module = Grouped()
    config = OptimizerConfig(1e-2, 1e-4, 100)
    optimizer = build_optimizer(module, config)
    assert optimizer.param_groups[0]["params"] == list(layers[1].parameters())
    for step, rate in ((0, 1e-2), (50, 1e-3), (100, 1e-4), (1000, 1e-4)):
        set_learning_rate(optimizer, config, step)
        assert optimizer.param_groups[0]["lr"] == pytest.approx(rate, rel=1e-12)
        assert optimizer.param_groups[1]["lr"] == pytest.approx(0.1 * rate, rel=1e-12)
    constant = OptimizerConfig(3e-3)
    set_learning_rate(optimizer, constant, 77)
    assert optimizer.param_groups[0]["lr"] == pytest.approx(3e-3, rel=1e-12)
    for name, kwargs in (
        ("learning_rate", dict(learning_rate=0.0)),
        ("final_learning_rate", dict(learning_rate=1e-2, final_learning_rate=-1.0)),
        ("decay_steps", dict(learning_rate=1e-2, decay_steps=0)),
        ("ema_decay", dict(learning_rate=1e-2, ema_decay=1.0)),
        ("weight_decay", dict(learning_rate=1e-2, weight_decay=-1.0)),
    ):
        with pytest.raises(ValueError, match=f"^{name}:"):
            OptimizerConfig(**kwargs)


def test_the_optimizer_clips_the_total_gradient_norm_before_each_step():
    module = torch.nn.Linear(3, 2)
    optimizer = build_optimizer(module, OptimizerConfig(1e-2, 1e-4, 100, max_grad_norm=0.5))
    for scale, expected in ((10.0, 0.5), (1e-3, None)):  # a large gradient is scaled to the limit, a small one kept
        gradients = [torch.full_like(p, scale) for p in module.parameters()]
        for p, g in zip(module.parameters(), gradients, strict=True):
            p.grad = g.clone()
        optimizer.step()
        norm = torch.linalg.vector_norm(torch.cat([p.grad.reshape(-1) for p in module.parameters()]))
        unclipped = torch.linalg.vector_norm(torch.cat([g.reshape(-1) for g in gradients]))
        assert float(norm) == pytest.approx(expected if expected is not None else float(unclipped), rel=1e-6)


def test_decaying_adam_is_a_deprecated_alias_of_the_same_schedule():
    module = torch.nn.Linear(2, 1)
    with pytest.warns(DeprecationWarning, match="OptimizerConfig"):
        adam = DecayingAdam(1e-2, 1e-4, 100)
    optimizer = adam.build(module)
    adam.set_step(50)
    assert optimizer.param_groups[0]["lr"] == pytest.approx(1e-3, rel=1e-12)


def test_a_model_without_an_average_evaluates_its_weights(video, tmp_path):
    """ema_decay None (the model's, or the loop's override): no average in the checkpoint, and the final
    evaluation reads the trained weights themselves."""
    train_frames, eval_frames = video
    model = _model(train_frames)
    config = TrainingConfig(max_iterations=2, rays_per_batch=64, eval_every=0, checkpoint_every=0, eval_frames=1)
    model.optimization = dataclasses.replace(model.optimization, ema_decay=None)
    train(model, train_frames, eval_frames, tmp_path, config)
    assert _checkpoint(tmp_path)["ema"] is None


@given(st.integers(1, 300), st.integers(1, 300))
def test_evenly_spread_takes_both_ends_and_gaps_within_one(count, total):
    """min(count, total) distinct sorted indices from 0 to total - 1 (both when two or more), consecutive gaps
    differing by at most one: every frame when count >= total (the held-out split smaller than eval_frames)."""
    picked = evenly_spread(count, total)
    n = min(count, total)
    assert len(picked) == n and picked == sorted(set(picked))
    assert picked[0] == 0 and (n == 1 or picked[-1] == total - 1)
    gaps = [b - a for a, b in zip(picked, picked[1:], strict=False)]
    assert not gaps or max(gaps) - min(gaps) <= 1
    if count >= total:
        assert picked == list(range(total))


# The image metrics of issue 19: head (mask) and region scores, L1 and LPIPS in evaluate and metrics.json.


class _Grey(AvatarModel):
    """A model that renders every ray mid-grey: evaluate's scores are then those of a known image."""

    def __init__(self, parametric):
        super().__init__()
        self.parametric = parametric
        self.optimization = OptimizerConfig(learning_rate=1e-3)

    def training_step(self, batch, step):  # pragma: no cover - evaluation only
        raise NotImplementedError

    def render_rays(self, rays, head, early_stop=None):
        return torch.full((rays.origins.shape[0], 3), 0.5)


@pytest.fixture(scope="module")
def video32(tmp_path_factory):
    """Held-out frames of 32 px: large enough for LPIPS's AlexNet (31 x 31)."""
    from headfields.data import load_insta_dataset
    from headfields.synthetic import SyntheticVideoConfig, make_synthetic_video

    config = SyntheticVideoConfig(num_frames=6, num_val=1, num_test=2, resolution=32, episode_frames=2)
    return load_insta_dataset(make_synthetic_video(tmp_path_factory.mktemp("video32"), config), "test")


def _regions(frames):
    labels = frames.segmentation_labels
    return {"hair": (labels["hair"],), "face": (labels["skin"], labels["lips"], labels["eyes"]), "absent": (200,)}


def test_evaluate_scores_the_head_the_regions_and_lpips(video32, tmp_path):
    from headfields.data import BACKGROUND_LABEL
    from headfields.metrics import l1, psnr, ssim
    from headfields.metrics.perceptual import Lpips, load_lpips

    from helpers import random_alexnet, random_vgg16

    frames = video32
    weights, vgg_weights = tmp_path / "alexnet.pth", tmp_path / "vgg16.pth"
    torch.save(random_alexnet(0), weights)
    torch.save(random_vgg16(0), vgg_weights)
    network = load_lpips(weights)  # unavailable without the lpips package: then the note is checked instead
    vgg = load_lpips(vgg_weights, network="vgg")
    regions = _regions(frames)
    ev = evaluate(_Grey(load_model(frames.model_path, frames.model_type)), frames, [0, 1], 4096, torch.device("cpu"),
                  regions=regions, lpips=network, lpips_vgg=vgg)  # fmt: skip
    grey = torch.full((32, 32, 3), 0.5)
    truths = [frames.images[f].float() / 255 for f in range(2)]
    masks = [frames.segmentation[f] != BACKGROUND_LABEL for f in range(2)]

    def mean(values):
        return float(np.mean([float(v) for v in values]))

    assert ev.frames == 2 and ev.head_frames == 2 and ev.mask == "segmentation != 0 (background)"
    assert ev.psnr == pytest.approx(mean(psnr(grey, t) for t in truths), rel=1e-12)
    assert ev.l1 == pytest.approx(mean(l1(grey, t) for t in truths), rel=1e-12)
    # GaussianAvatars' PSNR: per frame, the mean of the three channels' PSNRs (numpy, by hand), then over frames.
    by_channel = [
        np.mean([10 * np.log10(1 / np.mean((0.5 - t[..., c].double().numpy()) ** 2)) for c in range(3)]) for t in truths
    ]
    assert ev.psnr_gaussian_avatars == pytest.approx(float(np.mean(by_channel)), rel=1e-6)
    # A mean of logarithms, above the pooled PSNR when the channels' errors differ (here by 1e-5 relative: the
    # tolerance above tells the two apart).
    assert ev.psnr_gaussian_avatars > ev.psnr
    assert ev.psnr_head == pytest.approx(mean(psnr(grey, t, mask=m) for t, m in zip(truths, masks, strict=True)), rel=1e-12)
    assert ev.ssim_head == pytest.approx(mean(ssim(grey, t, mask=m) for t, m in zip(truths, masks, strict=True)), rel=1e-12)
    assert ev.l1_head == pytest.approx(mean(l1(grey, t, mask=m) for t, m in zip(truths, masks, strict=True)), rel=1e-12)
    hair = [torch.isin(frames.segmentation[f], torch.tensor(regions["hair"], dtype=torch.uint8)) for f in range(2)]
    expected_hair = [float(psnr(grey, t, mask=m)) for t, m in zip(truths, hair, strict=True) if m.any()]
    assert ev.psnr_regions["hair"] == pytest.approx(float(np.mean(expected_hair)), rel=1e-12)
    assert ev.region_frames["hair"] == len(expected_hair) and ev.psnr_regions["face"] is not None
    assert ev.psnr_regions["absent"] is None and ev.region_frames["absent"] == 0  # no frame shows it: null, not NaN
    if isinstance(network, Lpips):
        assert ev.lpips == pytest.approx(mean(network(grey, t) for t in truths), rel=1e-6)
        assert ev.lpips_head == pytest.approx(mean(network(grey, t, m) for t, m in zip(truths, masks, strict=True)), rel=1e-6)
        assert ev.lpips_note is None and str(weights) in ev.lpips_network
        # GaussianAvatars' LPIPS: AlexNet's on [0, 1] images fed unscaled, i.e. the usual LPIPS of (x + 1) / 2.
        unscaled = mean(network((grey + 1) / 2, (t + 1) / 2) for t in truths)
        assert ev.lpips_gaussian_avatars == pytest.approx(unscaled, rel=1e-6) and ev.lpips_gaussian_avatars_note is None
        # VGG16's beside it, under its own keys.
        assert ev.lpips_vgg == pytest.approx(mean(vgg(grey, t) for t in truths), rel=1e-6)
        assert ev.lpips_vgg_head == pytest.approx(mean(vgg(grey, t, m) for t, m in zip(truths, masks, strict=True)), rel=1e-6)
        assert ev.lpips_vgg_note is None and ev.lpips_vgg_network.startswith(f"vgg: backbone {vgg_weights}")
        assert ev.lpips_vgg != pytest.approx(ev.lpips, rel=1e-3)  # two networks, two numbers
        with pytest.raises(ValueError, match=r"^lpips_vgg: expected LPIPS \(vgg\), got LPIPS \(alex\)"):
            evaluate(_Grey(load_model(frames.model_path, frames.model_type)), frames, [0], 4096, torch.device("cpu"),
                     lpips_vgg=network)  # fmt: skip
    else:
        assert ev.lpips is None and ev.lpips_head is None and "not installed" in ev.lpips_note
        assert ev.lpips_gaussian_avatars is None and ev.lpips_gaussian_avatars_note == ev.lpips_note
        assert ev.lpips_vgg is None and ev.lpips_vgg_head is None and "not installed" in ev.lpips_vgg_note
    json.dumps(ev.metrics(), allow_nan=False)  # plain JSON: no NaN anywhere
    assert ev.metrics()["regions"]["face"] == {"labels": list(regions["face"]), "frames": 2}
    # Without a network, or for images under 31 x 31, LPIPS is null with the reason.
    small = evaluate(_Grey(load_model(frames.model_path, frames.model_type)), frames, [0], 4096, torch.device("cpu"))
    assert small.lpips is None and "not computed" in small.lpips_note and small.psnr_regions == {}
    assert small.lpips_vgg is None and "LPIPS (vgg)" in small.lpips_vgg_note
    assert small.lpips_gaussian_avatars is None and small.lpips_gaussian_avatars_note == small.lpips_note
    assert "regions" not in small.metrics() and "psnr_regions" not in small.metrics()


def test_evaluate_without_a_mask_or_segmentation(video32):
    model = _Grey(load_model(video32.model_path, video32.model_type))
    bare = dataclasses.replace(video32, segmentation=None, masks=None)
    ev = evaluate(model, bare, [0], 4096, torch.device("cpu"))
    assert ev.mask is None and ev.psnr_head is None and ev.ssim_head is None and ev.head_frames == 0
    assert ev.metrics()["head_masking"] is None
    only_masks = evaluate(model, dataclasses.replace(video32, segmentation=None), [0], 4096, torch.device("cpu"))
    assert only_masks.mask == "masks (foreground alpha)" and only_masks.psnr_head is not None
    with pytest.raises(ValueError, match="^regions:"):
        evaluate(model, bare, [0], 4096, torch.device("cpu"), regions={"hair": (6,)})


def test_metrics_json_records_the_papers_metrics(video, tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))  # an empty cache: no AlexNet weights
    train_frames, eval_frames = video
    regions = _regions(eval_frames)
    pairs = tuple(regions.items())
    config = TrainingConfig(max_iterations=2, rays_per_batch=64, eval_every=0, checkpoint_every=0, eval_regions=pairs)
    assert hash(config) == hash(dataclasses.replace(config))  # frozen and hashable, as before
    metrics = train(_model(train_frames), train_frames, eval_frames, tmp_path / "run", config)
    assert json.loads((tmp_path / "run" / "metrics.json").read_text()) == metrics
    for key in ("psnr", "ssim", "ssim_3dgs", "l1", "psnr_head", "ssim_head", "l1_head", "psnr_gaussian_avatars"):
        assert isinstance(metrics[key], float) and np.isfinite(metrics[key]), key
    assert 0 < metrics["l1_head"] < 1 and metrics["psnr_head"] > 0
    assert metrics["mask"] == "segmentation != 0 (background)" and "over the mask" in metrics["head_masking"]
    assert metrics["head_frames"] == metrics["eval_frames"] == len(eval_frames)
    assert metrics["lpips"] is None and metrics["lpips_head"] is None and metrics["lpips_network"] is None
    assert str(tmp_path / "hub") in metrics["lpips_note"] or "not installed" in metrics["lpips_note"]
    # GaussianAvatars' LPIPS (AlexNet's, unscaled inputs): null with AlexNet's reason.
    assert metrics["lpips_gaussian_avatars"] is None and metrics["lpips_gaussian_avatars_note"] == metrics["lpips_note"]
    # VGG16's LPIPS beside AlexNet's (GaussianAvatars' metrics.py, not its tables): null too, with its own reason.
    assert metrics["lpips_vgg"] is None and metrics["lpips_vgg_head"] is None and metrics["lpips_vgg_network"] is None
    assert "vgg16-397923af.pth" in metrics["lpips_vgg_note"] or "not installed" in metrics["lpips_vgg_note"]
    assert set(metrics["psnr_regions"]) == set(regions) and metrics["psnr_regions"]["absent"] is None
    assert metrics["regions"]["hair"]["labels"] == list(regions["hair"])
    assert {"train_seconds", "iterations"} <= set(metrics) and metrics["iterations"] == 2


def test_lpips_weights_and_regions_are_checked_before_training(video, tmp_path):
    train_frames, eval_frames = video
    config = TrainingConfig(max_iterations=2, rays_per_batch=64, eval_every=0, checkpoint_every=0)
    missing = dataclasses.replace(config, lpips_weights=str(tmp_path / "nowhere.pth"))
    with pytest.raises(FileNotFoundError, match="^lpips_weights:"):
        train(_model(train_frames), train_frames, eval_frames, tmp_path / "a", missing)
    assert not (tmp_path / "a" / "checkpoint.pt").exists()  # it failed before any step
    missing_vgg = dataclasses.replace(config, lpips_vgg_weights=str(tmp_path / "nowhere.pth"))
    with pytest.raises(FileNotFoundError, match="^lpips_vgg_weights:.*VGG16"):
        train(_model(train_frames), train_frames, eval_frames, tmp_path / "c", missing_vgg)
    if importlib.util.find_spec("lpips") is not None:  # without it no trunk is read: LPIPS is unavailable
        garbage = tmp_path / "garbage.pth"
        garbage.write_bytes(b"<html>not found</html>")  # a failed download saved as the weights
        corrupt = dataclasses.replace(config, lpips_vgg_weights=str(garbage))
        with pytest.raises(ValueError, match=r"^lpips_vgg_weights: could not read .*garbage\.pth.*vgg16-397923af\.pth"):
            train(_model(train_frames), train_frames, eval_frames, tmp_path / "d", corrupt)
        assert not (tmp_path / "d" / "checkpoint.pt").exists()
    no_labels = dataclasses.replace(eval_frames, segmentation=None)
    with pytest.raises(ValueError, match="^eval_regions:"):
        regions = dataclasses.replace(config, eval_regions=(("hair", (6,)),))
        train(_model(train_frames), train_frames, no_labels, tmp_path / "b", regions)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"eval_regions": (("hair", ()),)},
        {"eval_regions": (("hair", (256,)),)},
        {"eval_regions": (("hair", (-1,)),)},
        {"eval_regions": (("", (6,)),)},
        {"eval_regions": (("hair", (6,)), ("hair", (7,)))},
        {"eval_regions": {"hair": (6,)}},  # pairs, not a dict: the config stays hashable
        {"eval_regions": (("hair",),)},
        {"lpips_weights": 5},
        {"lpips_vgg_weights": ["vgg16.pth"]},
        {"flush_denormals": "yes"},
        {"tune_malloc": 1},
    ],
)
def test_training_config_checks_the_metric_settings(kwargs):
    with raises_naming(next(iter(kwargs))):
        TrainingConfig(**kwargs)


@pytest.mark.skipif(platform.machine().lower() not in ("x86_64", "amd64"), reason="the FTZ / DAZ modes are x86's")
def test_training_on_the_cpu_flushes_denormals_for_its_run_only(video, tmp_path):
    """A sharp Softplus makes denormal floats, many times slower on x86: the loop flushes them on every thread
    while it trains, and restores the mode after (headfields.backends.cpu.denormals)."""
    from headfields.backends.cpu.denormals import set_flush_denormal
    from headfields.kernels import flushing_denormals

    set_flush_denormal(False)
    train_frames, eval_frames = video
    model = _model(train_frames)
    seen = []
    step = model.training_step

    def recording_step(batch, i):
        seen.append(flushing_denormals())
        return step(batch, i)

    model.training_step = recording_step
    config = TrainingConfig(max_iterations=2, rays_per_batch=64, eval_every=0, checkpoint_every=0, eval_frames=1)
    train(model, train_frames, eval_frames, tmp_path, config)
    assert seen == [True, True] and not flushing_denormals()
    seen.clear()  # asked not to: the mode stays the caller's
    config = dataclasses.replace(config, flush_denormals=False)
    train(model, train_frames, eval_frames, tmp_path / "off", config)
    assert seen == [False, False] and not flushing_denormals()


@given(seed=st.integers(0, 2**31 - 1), rays=st.integers(1, 64), grey=st.floats(0.0, 1.0))
def test_random_backgrounds_draw_only_where_a_pixel_saw_nothing_but_the_background(seed, rays, grey):
    """Outside the mask and the frames' background in 8 bits: the drawn colour as both the background and the
    target; every other pixel (in the mask, or a blend with the background at the silhouette) keeps the frames'
    background and its own colour."""
    g = torch.Generator().manual_seed(seed)
    rgb = torch.rand(rays, 3, generator=g).round()  # many pixels exactly white (or black)
    mask = torch.rand(rays, generator=g) < 0.5
    background = torch.tensor([1.0, 1.0, grey])
    drawn = torch.rand(rays, 3, generator=torch.Generator().manual_seed(seed + 1))
    bg, target = random_backgrounds(rgb, mask, background, drawn)
    empty = ~mask & (torch.round(rgb * 255) == torch.round(background * 255)).all(-1)  # as 8 bits hold the colours
    assert torch.equal(bg[empty], drawn[empty]) and torch.equal(target[empty], drawn[empty])
    assert torch.equal(bg[~empty], background.expand(rays, 3)[~empty]) and torch.equal(target[~empty], rgb[~empty])


def test_random_backgrounds_name_the_argument_that_is_wrong():
    rgb, mask, white, drawn = torch.rand(4, 3), torch.zeros(4, dtype=torch.bool), torch.ones(3), torch.rand(4, 3)
    for name, args in (
        ("rgb", (torch.rand(4, 4), mask, white, drawn)),
        ("mask", (rgb, torch.zeros(5, dtype=torch.bool), white, drawn)),
        ("mask", (rgb, torch.zeros(4), white, drawn)),
        ("background", (rgb, mask, torch.ones(4), drawn)),
        ("drawn", (rgb, mask, white, torch.rand(3, 3))),
    ):
        with raises_naming(name):
            random_backgrounds(*args)
    # A background the 8 bits store rounded (0.5 is 128 / 255) still finds the pixels of that colour.
    grey = torch.full((4, 3), 128 / 255)
    background, target = random_backgrounds(grey, mask, torch.full((3,), 0.5), drawn)
    assert torch.equal(background, drawn) and torch.equal(target, drawn)


def test_a_checkpoint_s_pixel_generator_of_another_kind_resumes(capsys):
    """The sampler draws on the frames' device (a GPU's generator where they fit there). A CPU state (a run saved
    before that, or on the CPU) continues on a CPU generator, draw for draw; a state no generator here can take
    (a GPU's, resumed on the CPU) restarts the batches from the seed and the step, and says so."""
    from headfields.training.batches import restored_generator

    saved = torch.Generator().manual_seed(7)
    torch.rand(5, generator=saved)
    expected = torch.rand(3, generator=torch.Generator().set_state(saved.get_state()))
    same = restored_generator(torch.Generator().manual_seed(0), saved.get_state(), 99, None)
    assert torch.equal(torch.rand(3, generator=same), expected)
    cuda_like = torch.zeros(16, dtype=torch.uint8)  # a CUDA generator's state: seed and offset
    fresh = restored_generator(torch.Generator().manual_seed(0), cuda_like, 99, None)
    assert torch.equal(torch.rand(3, generator=fresh), torch.rand(3, generator=torch.Generator().manual_seed(99)))
    assert "batches go on from seed 99" in capsys.readouterr().out


def test_a_step_strategy_is_checked_and_refuses_the_fields_it_names():
    """Issue 76: a model with its own steps (training.strategy) trains in the one loop; a field its strategy has no
    use for is refused by name, before anything is written, only when set to anything but its default."""
    from headfields.training.strategy import RAY_FIELDS, step_strategy
    from headfields.training.unused import check_unused

    assert step_strategy(AvatarModel()) is None  # a model that trains on rays

    class NotAStrategy(AvatarModel):
        def step_strategy(self):
            return object()

    with raises_naming("model"):
        step_strategy(NotAStrategy())
    check_unused(TrainingConfig(eval_every=7, checkpoint_every=3), RAY_FIELDS, "a rasteriser")  # not ray fields
    with pytest.raises(ValueError, match=r"a rasteriser does not use rays_per_batch=64, early_stop=0\.5: leave them"):
        check_unused(TrainingConfig(rays_per_batch=64, early_stop=0.5), RAY_FIELDS, "a rasteriser")


def test_an_unread_recipe_setting_is_refused_against_the_closest_recipe_naming_its_flag_and_value():
    """Issue 96: a setting a recipe's mode leaves unread is refused when no recipe gives it its value; the message
    names the leaf that differs from the closest recipe, the mode, the flag and that recipe's value."""
    from headfields.encoders import UVCodeDecoderConfig
    from headfields.models.monoavatar import cpu_config, paper_config, unread_recipe_fields
    from headfields.training.unused import check_unread_settings

    recipes = [paper_config(), cpu_config()]  # code decoders of 256 and 128 texels
    same = cpu_config(features="displacement", uv_resolution=64)  # the decoder at the CPU recipe's: not changed
    check_unread_settings(same, unread_recipe_fields(same), recipes, "monoavatar")
    changed = cpu_config(code_decoder=UVCodeDecoderConfig(resolution=128, negative_slope=0.1))
    message = (
        r"^code_decoder\.negative_slope: monoavatar does not read it with features='displacement'; got 0\.1: "
        r"leave --monoavatar\.code-decoder\.negative-slope at the recipe's 0\.2$"
    )
    with pytest.raises(ValueError, match=message):  # against the CPU recipe's decoder (one leaf apart), not the paper's
        check_unread_settings(changed, unread_recipe_fields(changed), recipes, "monoavatar")
    code_cnn = cpu_config(features="code_cnn", code_decoder=UVCodeDecoderConfig(resolution=128, negative_slope=0.1))
    check_unread_settings(code_cnn, unread_recipe_fields(code_cnn), recipes, "monoavatar")  # read there
