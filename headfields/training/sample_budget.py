"""The rays a step draws and the samples it trains: a fixed ``rays_per_batch``, or as many rays as fill a budget of
trained samples (instant-ngp's rule, ``TrainingConfig.samples_per_batch``), with the counts ``log.jsonl`` and
``metrics.json`` report. With fixed shapes (``TrainingConfig.fixed_shapes``) the counts stay on the device and are
read ``READ_LAG`` steps later (:class:`~headfields.training.host_copy.HostCopy`), and the budget sizes the slots."""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field

import torch

from ..renderers.samples import SampleCount, SampleSlots
from . import distributed
from .contract import AvatarModel
from .host_copy import READ_LAG, HostCopy

__all__ = [
    "MARCH_HEADROOM",
    "MAX_MARCH_SLOTS",
    "RAYS_KEPT_OVER",
    "RAYS_KEPT_UNDER",
    "RATE_JUMP",
    "RATE_SMOOTHING",
    "SLOTS_KEPT",
    "SLOT_GRANULE",
    "SampleBudget",
    "check_fixed_shapes",
    "next_rays",
    "over_ranks",
]

# Fixed shapes: the march's slots are the samples the next step's rays are expected to march (at the last counted
# rate a ray) times this, in multiples of SLOT_GRANULE, between the trained budget and MAX_MARCH_SLOTS times it
# (also the first steps', before any count). Too few slots drop rays from the loss; too many evaluate padding.
MARCH_HEADROOM = 1.25
MAX_MARCH_SLOTS = 16
SLOT_GRANULE = 4096
# Fixed shapes also keep a step's shapes from one step to the next, so that its kernels see one shape signature (a
# CUDA graph replays one): the rays stay while the budget asks for at most RAYS_KEPT_UNDER more of them (the step
# trains a few samples under budget) or at most RAYS_KEPT_OVER fewer (a few rays past the slots dropped), and the
# march's slots stay while what it is expected to need is at least SLOTS_KEPT of them (never fewer: rays would drop).
RAYS_KEPT_UNDER = 1 / 8
RAYS_KEPT_OVER = 1 / 16
SLOTS_KEPT = 0.8
# ... and size them from the samples a ray marched and trained averaged over the steps (an exponential moving average
# of this weight): with a few hundred rays a step, one step's rates wander by a third, past either band. The march's
# slots still grow at once to hold the last counted step's samples (too few would drop rays), and a step whose rate
# is more than RATE_JUMP off the average (the occupancy grid refreshed) starts the average afresh.
RATE_SMOOTHING = 1 / 16
RATE_JUMP = 1 / 2


def check_fixed_shapes(model: AvatarModel, samples_per_batch: int | None, frames_per_batch: int | None) -> None:
    """Refuse ``TrainingConfig.fixed_shapes`` without a sample budget to size the slots from, unless the model's
    step has shapes that follow from its rays alone (``model.renders_every_ray``: NeuS keeps the rays that miss), and
    without ``frames_per_batch`` for a model that reads the batch's frames (``model.steps_on_frames``)."""
    if samples_per_batch is None and not model.renders_every_ray:
        raise ValueError(
            f"fixed_shapes: expected samples_per_batch too (the slots are sized from it), got None for "
            f"{type(model).__name__}, whose shapes do not follow from its rays alone (renders_every_ray)"
        )
    if frames_per_batch is None and model.steps_on_frames:
        raise ValueError(
            f"frames_per_batch: expected a number of frames with fixed_shapes ({type(model).__name__}'s step works on "
            f"the batch's drawn frames, which it reads without a read-back), got None"
        )


def over_ranks(samples: SampleCount | None, ranks: int, device: torch.device) -> SampleCount | None:
    """A step's samples on every rank together (each rank then takes the same next batch size); device tensors
    stay on the device."""
    if samples is None or ranks == 1:
        return samples
    counts = (samples.marched, samples.trained, samples.dropped)
    each = torch.stack([torch.as_tensor(v, dtype=torch.float64, device=device) for v in counts])
    total = (distributed.mean_over_ranks(each) * ranks).round()
    if isinstance(samples.trained, torch.Tensor):
        return SampleCount(*total.long())
    return SampleCount(*(int(v) for v in total.tolist()))


def next_rays(rays: int, trained: float, budget: int, ranks: int, max_rays: int) -> int:
    """The rays of the next step: this step's ``rays`` scaled by ``budget`` over the samples they ``trained``
    (instant-ngp's ``rays_per_batch * target_batch_size / measured_batch_size``), a multiple of ``ranks`` between
    one a rank and ``max_rays``. A step that trained nothing (an empty field) draws the most."""
    wanted = rays * budget / max(trained, 1)
    return min(max(round(wanted / ranks), 1) * ranks, max_rays // ranks * ranks)


@dataclass
class SampleBudget:
    """One run's rays and sample counts: ``rays`` for the next step, the totals of every step counted so far (a
    resumed run's earlier ones included) and the last counted step's counts (None until a model counted one).
    ``fixed``: the steps' counts are device tensors, counted ``READ_LAG`` steps later (``pending`` until then)."""

    rays: int
    budget: int | None = None  # trained samples a step (None: ``rays`` stays fixed)
    max_rays: int = 1 << 16
    ranks: int = 1
    fixed: bool = False
    drawn: int = 0  # rays over every step
    counted: SampleCount = field(default_factory=lambda: SampleCount(0, 0))
    last: SampleCount | None = None
    marched_per_ray: float | None = None  # at the last counted step: sizes the march's slots
    smoothed: tuple[float, float] | None = None  # samples marched and trained a fitted ray, averaged (fixed shapes)
    march_slots: int | None = None  # the last step's (fixed shapes)
    pending: deque[tuple[int, HostCopy | SampleCount]] = field(default_factory=deque)  # (rays, counts) a step

    def slots(self) -> SampleSlots | None:
        """The next step's slots (fixed shapes), from the budget and the rate a ray marched at the last count."""
        if not self.fixed or self.budget is None:
            return None
        most = MAX_MARCH_SLOTS * self.budget
        if self.marched_per_ray is None:
            return SampleSlots(most, self.budget)
        average = self.marched_per_ray if self.smoothed is None else self.smoothed[0]
        expected = max(MARCH_HEADROOM * average, self.marched_per_ray) * self.rays  # the last step's samples fit
        march = min(max(math.ceil(expected / SLOT_GRANULE) * SLOT_GRANULE, self.budget), most)
        if self.march_slots is not None and SLOTS_KEPT * self.march_slots <= march <= self.march_slots:
            march = self.march_slots  # the last step's shape
        self.march_slots = march
        return SampleSlots(march, self.budget)

    def after_step(self, samples: SampleCount | None, model: str) -> None:
        """A step of ``rays`` rays and its ``samples`` (every rank's): counted now, or ``READ_LAG`` steps later."""
        self.drawn += self.rays
        if samples is None:
            if self.budget is not None:
                raise ValueError(
                    f"samples_per_batch: expected a model whose training_step counts its samples (StepOutput.samples), "
                    f"got {model}, which does not"
                )
            return
        if not self.fixed:
            self._count(self.rays, samples)
            return
        if not isinstance(samples.trained, torch.Tensor):  # counted on the host: the step did not take the slots
            raise ValueError(
                f"fixed_shapes: expected a model whose training_step takes the slots (RayBatch.slots: INSTA, the portrait, "
                f"MonoAvatar), got {model}, whose samples were counted on the host"
            )
        self.pending.append((self.rays, HostCopy([samples.marched, samples.trained, samples.dropped])))
        while len(self.pending) > READ_LAG:
            self._count(*self._read(self.pending.popleft()))

    @staticmethod
    def _read(entry: tuple[int, HostCopy | SampleCount]) -> tuple[int, SampleCount]:
        rays, counts = entry
        return rays, counts if isinstance(counts, SampleCount) else SampleCount(*counts.read())

    def _count(self, rays: int, samples: SampleCount) -> None:
        """Count a step of ``rays`` rays and set the next step's: the rays that fit scaled to the budget."""
        self.counted, self.last = self.counted + samples, samples
        self.marched_per_ray = samples.marched / max(rays, 1)
        fitted, trained = rays - samples.dropped, samples.trained
        if self.fixed:
            now = (self.marched_per_ray, trained / max(fitted, 1))
            old = self.smoothed
            if old is None or any(abs(b - a) > RATE_JUMP * a for a, b in zip(old, now, strict=True)):
                self.smoothed = now
            else:
                self.smoothed = tuple(a + RATE_SMOOTHING * (b - a) for a, b in zip(old, now, strict=True))
            trained = self.smoothed[1] * max(fitted, 1)
        if self.budget is not None:
            wanted = next_rays(fitted, trained, self.budget, self.ranks, self.max_rays)
            kept = (1 - RAYS_KEPT_OVER) * self.rays <= wanted <= (1 + RAYS_KEPT_UNDER) * self.rays
            self.rays = self.rays if self.fixed and kept else wanted

    def _all_counted(self) -> SampleCount:
        """Every step's counts, the pending ones read (a wait on CUDA: at a log line or a checkpoint)."""
        total = self.counted
        for entry in self.pending:
            total = total + self._read(entry)[1]
        return total

    def means(self, steps: int) -> dict[str, float | None]:
        """Rays, samples marched and trained and rays dropped a step, on average over ``steps`` (None: nothing
        counted)."""
        total = self._all_counted()
        counted = self.last is not None or bool(self.pending) or total.marched > 0
        steps = max(steps, 1)
        means: dict[str, float | None] = {
            "rays_per_step": self.drawn / steps,
            "samples_marched_per_step": total.marched / steps if counted else None,
            "samples_trained_per_step": total.trained / steps if counted else None,
        }
        if self.fixed:
            means["rays_dropped_per_step"] = total.dropped / steps
        return means

    def state(self) -> dict:
        """What a checkpoint keeps, the pending steps' counts read (a resumed run counts them when this one would)."""
        pending = [[rays, *_numbers(counts)] for rays, counts in map(self._read, self.pending)]
        return {
            "rays": self.rays,
            "samples": _numbers(self.counted),
            "drawn": self.drawn,
            "pending": pending,
            "marched_per_ray": self.marched_per_ray,
            "smoothed": self.smoothed,
            "march_slots": self.march_slots,
        }

    def load_state(self, state: dict, steps: int) -> None:
        """A checkpoint's counts; one from before the sample budget had fixed rays and counted nothing."""
        self.rays = state.get("rays", self.rays)
        self.counted = SampleCount(*state.get("samples", (0, 0)))
        self.drawn = state.get("drawn", steps * self.rays)
        self.marched_per_ray = state.get("marched_per_ray")
        self.march_slots = state.get("march_slots")  # (none before shapes were kept from step to step)
        smoothed = state.get("smoothed")  # (none before the rates were averaged)
        self.smoothed = None if smoothed is None else (float(smoothed[0]), float(smoothed[1]))
        self.pending = deque((rays, SampleCount(*counts)) for rays, *counts in state.get("pending", ()))


def _numbers(counts: SampleCount) -> list[int]:
    return [counts.marched, counts.trained, counts.dropped]
