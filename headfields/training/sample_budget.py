"""The rays a step draws and the samples it trains: a fixed ``rays_per_batch``, or as many rays as fill a budget of
trained samples (instant-ngp's rule, ``TrainingConfig.samples_per_batch``), with the counts ``log.jsonl`` and
``metrics.json`` report."""

from __future__ import annotations

from dataclasses import dataclass, field

from .contract import SampleCount

__all__ = ["SampleBudget", "next_rays"]


def next_rays(rays: int, trained: int, budget: int, ranks: int, max_rays: int) -> int:
    """The rays of the next step: this step's ``rays`` scaled by ``budget`` over the samples they ``trained``
    (instant-ngp's ``rays_per_batch * target_batch_size / measured_batch_size``), a multiple of ``ranks`` between
    one a rank and ``max_rays``. A step that trained nothing (an empty field) draws the most."""
    wanted = rays * budget / max(trained, 1)
    return min(max(round(wanted / ranks), 1) * ranks, max_rays // ranks * ranks)


@dataclass
class SampleBudget:
    """One run's rays and sample counts: ``rays`` for the next step, the totals of every step so far (a resumed
    run's earlier ones included) and the last step's counts (None until a model counted one)."""

    rays: int
    budget: int | None = None  # trained samples a step (None: ``rays`` stays fixed)
    max_rays: int = 1 << 16
    ranks: int = 1
    drawn: int = 0  # rays over every step
    counted: SampleCount = field(default_factory=lambda: SampleCount(0, 0))
    last: SampleCount | None = None

    def after_step(self, samples: SampleCount | None, model: str) -> None:
        """Count a step of ``rays`` rays and its ``samples`` (every rank's) and set the next step's rays."""
        self.drawn += self.rays
        if samples is None:
            if self.budget is not None:
                raise ValueError(
                    f"samples_per_batch: expected a model whose training_step counts its samples (StepOutput.samples), "
                    f"got {model}, which does not"
                )
            return
        self.counted, self.last = self.counted + samples, samples
        if self.budget is not None:
            self.rays = next_rays(self.rays, samples.trained, self.budget, self.ranks, self.max_rays)

    def means(self, steps: int) -> dict[str, float | None]:
        """Rays, samples marched and samples trained a step, on average over ``steps`` (None: nothing counted)."""
        counted = self.last is not None or self.counted.marched > 0
        steps = max(steps, 1)
        return {
            "rays_per_step": self.drawn / steps,
            "samples_marched_per_step": self.counted.marched / steps if counted else None,
            "samples_trained_per_step": self.counted.trained / steps if counted else None,
        }

    def state(self) -> dict:
        return {"rays": self.rays, "samples": [self.counted.marched, self.counted.trained], "drawn": self.drawn}

    def load_state(self, state: dict, steps: int) -> None:
        """A checkpoint's counts; one from before the sample budget had fixed rays and counted nothing."""
        self.rays = state.get("rays", self.rays)
        self.counted = SampleCount(*state.get("samples", (0, 0)))
        self.drawn = state.get("drawn", steps * self.rays)
