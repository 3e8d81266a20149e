"""The NPHM prior on tiny sizes, each loss term against an analytic case: a sphere scan read by the prior's initial
sphere (surface, normals, eikonal, near-surface and free-space terms), anchors and codes set by hand (anchor,
symmetry and code terms), a translated copy as the expression (correspondence term); training lowers the loss;
a saved prior loads back to the same function; bad input raises."""

import json
import math
from dataclasses import replace

import pytest
import torch

from headfields.data import ScanSet, sample_scans
from headfields.fields import padded_box
from headfields.geometry import uv_sphere
from headfields.models.mononphm.prior import NPHM_UNIT, Nphm, load_prior, save_prior
from headfields.models.mononphm.prior_training import (
    CPU_ANCHOR_WEIGHT,
    SPACE_SHARPNESS,
    PriorLossWeights,
    PriorTrainingConfig,
    cpu_prior_training,
    prior_losses,
    train_prior,
)

from helpers import raises_naming, tiny_nphm_config

CENTER = torch.tensor([0.01, 0.02, -0.01])
RADIUS = 0.5 * NPHM_UNIT  # the members' initial sphere: radius 0.5 in the prior's units, at the origin
TINY = tiny_nphm_config(sdf_width=64)
# Two mirror pairs and two anchors on the plane x = 0 (the head space's), on the initial sphere.
ANCHORS = CENTER + RADIUS * torch.tensor(
    [[0.6, 0.0, 0.8], [-0.6, 0.0, 0.8], [0.6, 0.8, 0.0], [-0.6, 0.8, 0.0], [0.0, -1.0, 0.0], [0.0, 0.0, -1.0]]
)
MIRROR = torch.tensor([1, 0, 3, 2, 4, 5])


def sphere_scans(shift: torch.Tensor | None = None, identities: int = 1) -> ScanSet:
    """The initial sphere as each identity's neutral scan; with ``shift``, also an expression scan moved by it."""
    v, f = uv_sphere(24, 48, radius=RADIUS, dtype=torch.float32)
    vertices, identity, expression = [], [], []
    for i in range(identities):
        vertices.append(v + CENTER)
        identity.append(i)
        expression.append(0)
        if shift is not None:
            vertices.append(v + CENTER + shift)
            identity.append(i)
            expression.append(1)
    n = len(vertices)
    colours = [torch.full_like(x, 0.5) for x in vertices]
    anchors = ANCHORS.expand(identities, -1, -1).clone()
    return ScanSet(vertices, [f] * n, colours, torch.tensor(identity), torch.tensor(expression), True, anchors)


def tiny_prior(scans: ScanSet, seed: int = 0) -> Nphm:
    torch.manual_seed(seed)
    prior = Nphm(ANCHORS, MIRROR, CENTER, scans.num_identities, scans.num_scans, TINY)
    with torch.no_grad():  # the anchor predictor at zero: the anchors are the template's
        prior.anchor_offsets[-1].weight.zero_()
        prior.anchor_offsets[-1].bias.zero_()
    return prior


def samples_of(scans: ScanSet, index, seed: int = 0, near_std: float = 0.002):
    box = padded_box(torch.cat(scans.vertices), 0.05)
    return sample_scans(scans, torch.tensor(index), 400, 200, 200, near_std, box, torch.Generator().manual_seed(seed))


def test_geometry_terms_vanish_on_the_initial_sphere_and_space_matches_its_formula():
    scans = sphere_scans()
    prior = tiny_prior(scans)
    samples = samples_of(scans, [0])
    _, terms = prior_losses(prior, scans, samples, PriorLossWeights(near=1.0))
    # The SDF init is the sphere within ~1.7% of the radius at width 64; the 24 x 48 mesh's facets tilt its normals
    # by up to half a facet's angle (3.75 degrees, 0.065) from the sphere's.
    assert terms["surface"] < 0.017 * 0.5
    assert terms["normals"] < 0.1 and terms["eikonal"] < 0.01
    assert terms["near"] < 0.017 * 0.5
    unit = (samples.space.reshape(-1, 3) - CENTER) / NPHM_UNIT
    expected = torch.exp(-SPACE_SHARPNESS * (unit.norm(dim=-1) - 0.5).abs()).mean()
    assert terms["space"] == pytest.approx(float(expected), rel=0.05, abs=1e-3)
    assert terms["zero_offset"] == pytest.approx(0.0, abs=1e-12)  # the backward offsets start at zero exactly
    assert terms["neutral_offset"] == pytest.approx(0.0, abs=1e-12)


def test_anchor_symmetry_and_code_terms_match_hand_values():
    scans = sphere_scans()
    delta = torch.tensor([0.01, -0.02, 0.005])
    scans.anchors[:] = ANCHORS + delta  # the scan's anchors off the template's by delta
    prior = tiny_prior(scans)
    with torch.no_grad():
        codes = prior.identity_codes.codes
        codes.zero_()
        local = codes[0, TINY.global_dim :].view(6, TINY.local_dim)
        local[0] = torch.tensor([0.3, 0.0])  # pair (0, 1) differs by 0.3, pair (2, 3) by 0.4
        local[3] = torch.tensor([0.0, 0.4])
        prior.expression_codes.codes.fill_(0.1)
        prior.appearance_codes.codes.fill_(0.2)
    _, terms = prior_losses(prior, scans, samples_of(scans, [0]))
    assert terms["anchors"] == pytest.approx(float((delta / NPHM_UNIT).square().mean()), rel=1e-4)
    assert terms["symmetry"] == pytest.approx((0.3 + 0.4) / 2, rel=1e-5)
    assert terms["identity_code"] == pytest.approx(0.3**2 + 0.4**2, rel=1e-5)
    assert terms["expression_code"] == pytest.approx(3 * 0.1**2, rel=1e-5)
    assert terms["appearance_code"] == pytest.approx(2 * 0.2**2, rel=1e-5)


def test_correspondence_term_is_the_shift_of_a_translated_expression():
    shift = torch.tensor([0.004, -0.002, 0.006])
    scans = sphere_scans(shift)
    prior = tiny_prior(scans)
    _, terms = prior_losses(prior, scans, samples_of(scans, [1]))
    # Zero offsets: x + dx = x, the same point on the neutral scan is x - shift.
    assert terms["correspondence"] == pytest.approx(float((shift / NPHM_UNIT).square().mean()), rel=1e-3)
    _, neutral = prior_losses(prior, scans, samples_of(scans, [0]))
    assert neutral["correspondence"] == pytest.approx(0.0, abs=1e-10)


def test_grouped_queries_match_one_identity_at_a_time():
    scans = sphere_scans(identities=2)
    prior = tiny_prior(scans)
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        prior.identity_codes.codes.copy_(0.3 * torch.randn(prior.identity_codes.codes.shape, generator=g))
        for p in prior.anchor_offsets.parameters():
            p.copy_(0.1 * torch.randn(p.shape, generator=g))
    identity = prior.identity_codes.codes
    expression = 0.2 * torch.randn(2, TINY.expression_dim, generator=g)
    x = (torch.rand(40, 3, generator=g) - 0.5) * 1.2
    group = torch.arange(40) % 2
    both = prior.geometry(x, group, identity, expression).sdf
    for k in (0, 1):
        rows = group == k
        alone = prior.geometry(
            x[rows], torch.zeros(int(rows.sum()), dtype=torch.long), identity[k : k + 1], expression[k : k + 1]
        )
        torch.testing.assert_close(both[rows], alone.sdf, rtol=1e-5, atol=1e-6)
    # The predicted anchors differ per identity (the predictor reads each global code).
    anchors = prior.anchors(identity)
    assert float((anchors[0] - anchors[1]).detach().abs().max()) > 1e-3


def test_training_lowers_the_loss_and_the_saved_prior_loads_back(tmp_path):
    shift = torch.tensor([0.0, 0.0, 0.01])
    scans = sphere_scans(shift, identities=2)
    prior = tiny_prior(scans)
    config = PriorTrainingConfig(steps=40, scans_per_step=4, surface_points=200, near_points=50, space_points=50, log_every=39)
    history = train_prior(prior, scans, config)
    assert history.steps == 40 and len(history.logs) == 2
    assert history.logs[-1]["loss"] < history.logs[0]["loss"]
    assert all(math.isfinite(v) for v in history.logs[-1].values())
    assert float(prior.identity_codes.codes.detach().norm(dim=1).max()) <= 1.0 + 1e-6  # MonoNPHM's max_norm 1
    save_prior(prior, tmp_path / "prior.pt")
    loaded = load_prior(tmp_path / "prior.pt")
    x = torch.rand(30, 3) - 0.5
    group = torch.zeros(30, dtype=torch.long)
    codes = prior.identity_codes.codes[:1], prior.expression_codes.codes[:1]
    assert torch.equal(prior.geometry(x, group, *codes).sdf, loaded.geometry(x, group, *codes).sdf)
    assert not any(p.requires_grad for p in loaded.parameters())


def test_the_cpu_training_weighs_the_anchors_more_and_keeps_every_other_paper_weight():
    assert PriorTrainingConfig().weights.anchors == 7.5  # mononphm.yaml's lambdas.anchors
    cpu = cpu_prior_training(steps=5)
    assert cpu.steps == 5 and cpu.scans_per_step == 8 and cpu.weights.anchors == CPU_ANCHOR_WEIGHT == 750.0
    assert replace(cpu.weights, anchors=7.5) == PriorLossWeights()
    assert cpu_prior_training(weights=PriorLossWeights()).weights == PriorLossWeights()  # overrides win


def test_bad_input_raises():
    scans = sphere_scans()
    prior = tiny_prior(scans)
    with raises_naming("identity"):
        prior.anchors(torch.zeros(1, 5))
    with raises_naming("expression"):
        prior.geometry(torch.zeros(2, 3), torch.zeros(2, dtype=torch.long), prior.identity_codes.codes, torch.zeros(1, 7))
    with raises_naming("mirror"):
        Nphm(ANCHORS, torch.tensor([0, 1, 2]), CENTER, 1, 1, TINY)
    with raises_naming("surface"):
        PriorLossWeights(surface=-1.0)
    with raises_naming("scans_per_step"):
        PriorTrainingConfig(scans_per_step=0)
    with raises_naming("scans"):
        train_prior(prior, sphere_scans(torch.zeros(3)), PriorTrainingConfig(steps=1))


# The prior as a run: python -m headfields train nphm_prior, on tiny sizes.
PRIOR_RUN_FLAGS = [
    "--max-iterations", "2", "--log-every", "1", "--nphm-prior.scans.num-identities", "2",
    "--nphm-prior.scans.expressions", "2", "--nphm-prior.training.scans-per-step", "2",
    "--nphm-prior.training.surface-points", "64", "--nphm-prior.training.near-points", "32",
    "--nphm-prior.training.space-points", "16",
]  # fmt: skip


def test_the_train_command_trains_a_prior_and_refuses_what_it_does_not_read(tmp_path):
    """``train nphm_prior`` writes config.json, prior.pt (which loads, with a code a synthetic identity and scan),
    log.jsonl (a line a step) and metrics.json; run again it returns the finished run's metrics. A training field
    it does not read, the recipe's own steps and a capture are refused by name, before the folder is made."""
    from headfields.apps.commands.train import train
    from headfields.apps.runs import read_run_config
    from headfields.training import LOG_NAME

    out = tmp_path / "prior"
    flags = ["--out", str(out), *PRIOR_RUN_FLAGS]
    with pytest.raises(ValueError, match="does not use eval_every=5"):
        train("nphm_prior", [*flags, "--eval-every", "5"])
    with pytest.raises(ValueError, match="training.steps: set by the run's --max-iterations"):
        train("nphm_prior", [*flags, "--nphm-prior.training.steps", "3"])
    with raises_naming("data"):  # refused by the command: the prior reads no subject flag
        train("nphm_prior", [*flags, "--data", str(tmp_path)])
    assert not out.exists()
    metrics, folder, _ = train("nphm_prior", flags)
    assert metrics["steps"] == 2 and metrics["identities"] == 2 and metrics["scans"] == 4
    prior = load_prior(folder / "prior.pt")
    assert prior.identity_codes.count == 2 and prior.expression_codes.count == 4
    logged = [json.loads(line) for line in (folder / LOG_NAME).read_text().splitlines()]
    assert [line["step"] for line in logged] == [0, 1] and all(math.isfinite(line["loss"]) for line in logged)
    assert read_run_config(folder).recipe.training.scans_per_step == 2
    assert train("nphm_prior", flags)[0] == metrics  # finished: not trained again
