"""compact_in_front (early termination into fixed slots in two Warp launches) against the torch path it replaces:
the transmittance's mask (:func:`~headfields.renderers.compositing.transmittance`, a float64 exclusive sum) then
:meth:`SlotSamples.compact`, itself checked against a loop over the rays (tests/unit/training/test_fixed_shapes.py)."""

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from headfields.device_paths import cuda_paths
from headfields.renderers import EARLY_STOP_TRANSMITTANCE
from headfields.renderers.compositing import transmittance
from headfields.renderers.early_stop import compact_in_front

from helpers import raises_naming, slot_samples


def _by_mask(fixed, density, early_stop, slots):
    s = fixed.samples
    return fixed.compact(transmittance(s, density * s.deltas) >= early_stop, slots)


def _assert_same(ours, theirs):
    assert torch.equal(ours.count, theirs.count) and torch.equal(ours.wanted, theirs.wanted)
    assert torch.equal(ours.fits, theirs.fits)
    for name in ("ray", "t_start", "t_end"):
        assert torch.equal(getattr(ours.samples, name), getattr(theirs.samples, name)), name
    assert torch.equal(ours.source, theirs.source)
    # The kernel's midpoints (padding's too): the torch expression's, to the bit.
    assert torch.equal(ours.samples.t_mid, (theirs.samples.t_start + theirs.samples.t_end) / 2)
    # And each sample's ray's first slot: where a binary search of the rays finds it.
    ray = theirs.samples.ray
    assert torch.equal(ours.samples.ray_first(), torch.searchsorted(ray, torch.arange(theirs.samples.num_rays))[ray])


@settings(max_examples=80, deadline=None)
@given(
    per_ray=st.lists(st.integers(0, 7), min_size=1, max_size=9),
    extra=st.integers(0, 5),
    slots=st.integers(1, 40),
    dense=st.sampled_from([0.0, 30.0, 300.0, 1e30]),  # from none stopping to every ray stopping after one sample
    early_stop=st.sampled_from([EARLY_STOP_TRANSMITTANCE, 0.5]),
    dtype=st.sampled_from([torch.float32, torch.float64]),
    data=st.data(),
)
def test_keeps_what_the_transmittance_s_mask_keeps(per_ray, extra, slots, dense, early_stop, dtype, data):
    total = sum(per_ray)
    first_out = data.draw(st.integers(0, len(per_ray)))  # the rays past it did not fit the march
    fixed = slot_samples(per_ray, max(total + extra, 1), [r < first_out for r in range(len(per_ray))])
    s = fixed.samples
    fixed.samples = type(s)(s.ray, s.t_start.to(dtype), s.t_end.to(dtype), s.num_rays)
    seed = data.draw(st.integers(0, 2**16))
    density = torch.rand(fixed.slots, generator=torch.Generator().manual_seed(seed), dtype=dtype) * dense
    _assert_same(compact_in_front(fixed, density, early_stop, slots), _by_mask(fixed, density, early_stop, slots))


def test_many_rays_on_cuda_s_paths_keep_the_same_samples():
    """Thousands of rays of up to 64 samples, one launch on CUDA's paths, the CPU's chunks outside them."""
    g = torch.Generator().manual_seed(3)
    per_ray = torch.randint(0, 64, (3000,), generator=g).tolist()
    total = sum(per_ray)
    fits = [True] * 2900 + [False] * 100
    fixed = slot_samples(per_ray, total + 100, fits)
    density = torch.rand(fixed.slots, generator=g, dtype=torch.float64) * 200
    want = _by_mask(fixed, density, EARLY_STOP_TRANSMITTANCE, total // 3)
    assert 0 < int(want.count) < total // 3 and not bool(want.fits.all())  # some rays stop early, some do not fit
    _assert_same(compact_in_front(fixed, density, EARLY_STOP_TRANSMITTANCE, total // 3), want)
    with cuda_paths():
        _assert_same(compact_in_front(fixed, density, EARLY_STOP_TRANSMITTANCE, total // 3), want)


def test_bad_input():
    fixed = slot_samples([2, 3], 6, [True, True])
    density = torch.ones(6, dtype=torch.float64)
    with raises_naming("slots"):
        compact_in_front(fixed, density, 0.5, 0)
    with raises_naming("density"):
        compact_in_front(fixed, density[:5], 0.5, 4)
    with raises_naming("early_stop"):
        compact_in_front(fixed, density, 1.0, 4)
