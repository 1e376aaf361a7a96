"""A wall-clock training budget (`train.time_budget`, e.g. "20m", "2h", "1h30m").

A CPU user knows how long they can wait, not how many steps fit in it. With a budget, the cosine
decay of the learning rate follows the fraction of the budget spent instead of the step count,
and the run ends (final checkpoint, grid and plot, as at train.num_steps, which stays a cap) at
the first step that reaches the budget. The budget counts training seconds, checkpoints and
sample grids included, start-up and quality evaluations (train.eval_every) excluded; checkpoints record them, so a resumed run goes on
spending the same budget.

Under DDP every process must use the same learning rate, so the clock is agreed at log lines
(the main process's reading) and extrapolated in between by the seconds per step measured over
the last interval; one process reads its own clock at every step.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from ..config import parse_duration


class TrainingClock:
    """Training seconds spent so far: those of earlier sessions (from the checkpoint) plus this
    process's since the loop started, less the seconds `exclude`d (quality evaluations)."""

    def __init__(self, spent_before: float = 0.0):
        self.spent_before, self._zero = spent_before, time.perf_counter()

    def __call__(self) -> float:
        return self.spent_before + time.perf_counter() - self._zero

    def exclude(self, seconds: float) -> None:
        """Do not count `seconds` just spent (an evaluation) as training."""
        self._zero += seconds


@dataclass
class TimeBudget:
    """Seconds of a budget spent at a step: anchored at the last agreed reading, extrapolated."""

    seconds: float
    spent_at_anchor: float
    anchor_step: int
    seconds_per_step: float = 0.0

    @classmethod
    def start(cls, text: str, *, spent: float, step: int) -> TimeBudget:
        """A budget of `text` of which `spent` seconds were used before `step` (a resume)."""
        return cls(parse_duration(text), spent_at_anchor=spent, anchor_step=step)

    def anchor(self, step: int, spent: float) -> None:
        """Agree that `spent` seconds were used after `step` steps; re-estimate seconds/step."""
        if step > self.anchor_step:
            self.seconds_per_step = (spent - self.spent_at_anchor) / (step - self.anchor_step)
        self.spent_at_anchor, self.anchor_step = spent, step

    def spent(self, step: int) -> float:
        return self.spent_at_anchor + (step - self.anchor_step) * self.seconds_per_step

    def fraction(self, step: int) -> float:
        """Fraction of the budget spent after `step` steps, in [0, 1]."""
        return min(1.0, max(0.0, self.spent(step) / self.seconds))

    def exhausted(self, step: int) -> bool:
        return self.spent(step) >= self.seconds
