"""NeRF positional encoding (Mildenhall et al. 2020): sines and cosines of the input at octave frequencies,
with Nerfies' coarse-to-fine window (Park et al. 2021) that fades the bands in one by one during training."""

from __future__ import annotations

import math
import numbers

import torch
from jaxtyping import Float
from torch import Tensor, nn

from ..checks import check_count, check_float

MAX_FREQUENCIES = 32  # 2^31 pi x already aliases for any float32 x


def _check_window(window: object, num_frequencies: int) -> float:
    if isinstance(window, bool) or not isinstance(window, numbers.Real):
        raise TypeError(f"window: expected a number in [0, {num_frequencies}] or None, got {window!r}")
    if not 0 <= window <= num_frequencies:  # also rejects NaN
        raise ValueError(f"window: expected a number in [0, {num_frequencies}] or None, got {window}")
    return float(window)


def window_weights(window: float, num_frequencies: int) -> list[float]:
    """Nerfies' coarse-to-fine weights ``w_k(α) = (1 − cos(π · clamp(α − k, 0, 1))) / 2`` of bands
    ``k = 0 .. K−1`` for ``α = window`` in ``[0, K]``: band k is off for ``α ≤ k``, on for ``α ≥ k + 1``."""
    return window_bands(window, num_frequencies).tolist()


def window_bands(window: float, num_frequencies: int, device: torch.device | str = "cpu") -> Float[Tensor, " K"]:
    """:func:`window_weights` as a float64 tensor, computed on ``device`` (nothing copied from the host): for a
    module that keeps them in a buffer, set once a step, which :meth:`FrequencyEncoding.forward` then reads."""
    num_frequencies = check_count("num_frequencies", num_frequencies, 0, MAX_FREQUENCIES)
    alpha = _check_window(window, num_frequencies)
    k = torch.arange(num_frequencies, dtype=torch.float64, device=device)
    return (1.0 - torch.cos(math.pi * (alpha - k).clamp(0.0, 1.0))) / 2.0


def frequency_window(step: int, num_frequencies: int, ramp_steps: int, start_step: int = 0) -> float:
    """The window ``α`` at training ``step``: 0 until ``start_step``, then growing linearly to
    ``num_frequencies`` over ``ramp_steps`` steps, then held (Nerfies' schedule; MonoAvatar: 0 → 6 bands over
    80k iterations). ``ramp_steps = 0`` switches every band on at ``start_step``."""
    step = check_count("step", step, 0)
    num_frequencies = check_count("num_frequencies", num_frequencies, 0, MAX_FREQUENCIES)
    ramp_steps = check_count("ramp_steps", ramp_steps, 0)
    start_step = check_count("start_step", start_step, 0)
    if step < start_step:
        return 0.0
    if ramp_steps == 0:
        return float(num_frequencies)
    return num_frequencies * min((step - start_step) / ramp_steps, 1.0)


class FrequencyEncoding(nn.Module):
    """``[x, sin(2^0 pi x), cos(2^0 pi x), ..., sin(2^(K-1) pi x), cos(2^(K-1) pi x)]`` for ``K = num_frequencies``.

    Each block holds all ``in_dim`` coordinates; ``x`` itself comes first when ``include_input``.
    ``out_dim = in_dim * (include_input + 2 K)``. ``forward(x, window=α)`` multiplies band k's sines and
    cosines by :func:`window_weights` (Nerfies' coarse-to-fine); ``x`` itself is never windowed, and
    ``window=None`` keeps every band fully on.
    """

    def __init__(self, in_dim: int, num_frequencies: int, include_input: bool = True):
        super().__init__()
        self.in_dim = check_count("in_dim", in_dim, 1)
        self.num_frequencies = check_count("num_frequencies", num_frequencies, 0, MAX_FREQUENCIES)
        self.include_input = bool(include_input)
        if self.num_frequencies == 0 and not self.include_input:
            raise ValueError("num_frequencies: expected at least 1 when include_input is False, got 0")
        self.out_dim = self.in_dim * (int(self.include_input) + 2 * self.num_frequencies)
        frequencies = math.pi * 2.0 ** torch.arange(self.num_frequencies, dtype=torch.float64)
        self.register_buffer("frequencies", frequencies, persistent=False)
        # Every wave's phase as x_d f_k (+ pi/2), in the output's [K, 2, D] order: the cosines as sines a quarter turn on
        # (nerfstudio's NeRFEncoding), so one sine pass and no stacking. Elementwise, not a product by a matrix of the
        # frequencies, which TF32 or bfloat16 matmul modes would round to 10 or 8 bits.
        rates = frequencies[:, None, None].expand(self.num_frequencies, 2, self.in_dim)
        shift = torch.zeros(self.num_frequencies, 2, self.in_dim, dtype=torch.float64)
        shift[:, 1] = math.pi / 2
        self.register_buffer("phase_rates", rates.reshape(-1).clone(), persistent=False)
        self.register_buffer("phase_shift", shift.reshape(-1), persistent=False)

    def forward(
        self, x: Float[Tensor, "N D"], window: float | None = None, bands: Float[Tensor, " K"] | None = None
    ) -> Float[Tensor, "N E"]:
        """``bands``: the window's weights already on the device (:func:`window_bands`), in place of ``window``."""
        check_float("x", x, [None, self.in_dim], device=self.frequencies.device)
        if bands is not None:
            if window is not None:
                raise ValueError("bands: expected None when a window is given (one or the other), got both")
            check_float("bands", bands, [self.num_frequencies], device=x.device)
        n, d, waves_per_axis = *x.shape, 2 * self.num_frequencies
        rates = self.phase_rates.to(x.dtype).view(waves_per_axis, d)  # each wave's rate and shift, broadcast over x
        shift = self.phase_shift.to(x.dtype).view(waves_per_axis, d)
        if not torch.is_grad_enabled() and window is None and bands is None:
            # Without autograd the phases are written where the output wants them and turned into waves in place:
            # one fresh tensor, not four (x repeated 2K times, the phases, the waves, the concatenation), each
            # page-faulted as it is first written. MonoAvatar's 4,096 offsets a block: 2.4 -> 0.7 ms, the same values.
            out = x.new_empty(n, self.out_dim)
            first = d if self.include_input else 0
            if self.include_input:
                out[:, :d] = x
            waves = out[:, first:].view(n, waves_per_axis, d)
            torch.addcmul(shift, x[:, None, :], rates, out=waves)
            waves.sin_()
            return out
        waves = torch.sin(torch.addcmul(shift, x[:, None, :], rates))  # [N, 2K, D]
        if window is not None:
            bands = window_bands(window, self.num_frequencies, x.device)
        if bands is not None:
            waves = waves * bands.to(x.dtype).repeat_interleave(2)[:, None]
        waves = waves.reshape(n, waves_per_axis * d)
        return torch.cat([x, waves], dim=1) if self.include_input else waves

    def extra_repr(self) -> str:
        return f"in_dim={self.in_dim}, num_frequencies={self.num_frequencies}, include_input={self.include_input}"
