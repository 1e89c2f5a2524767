"""The distillation run's learning-rate schedule and its loss-spike guard (plain Python, no torch).

Owns:
  Schedule    linear warm-up, then cosine decay to `floor` x peak at `total` steps; `total` can be
              set from a time budget once the step time is known (`fit_to_time`), and only shrinks
              afterwards, so a run that is cut by its time cap still ends its decay.
  SpikeGuard  a running average of the loss (exponential, skipped steps left out); a step whose
              loss is non-finite, or above `ratio` x the average (and at least `min_jump` above
              it), is skipped (no optimizer update); after `rewind_after` skips in a row the run
              rewinds to its last good snapshot and its learning rate is scaled by `lr_cut`.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass


@dataclass
class Schedule:
    peak: float
    warmup: int
    total: int
    floor: float = 0.1

    def lr(self, step: int) -> float:
        if step < self.warmup:
            return self.peak * (step + 1) / self.warmup
        p = min(1.0, (step - self.warmup) / max(1, self.total - self.warmup))
        return self.peak * (self.floor + (1 - self.floor) * 0.5 * (1 + math.cos(math.pi * p)))

    def fit_to_time(self, step: int, sec_per_step: float, seconds_left: float) -> int:
        """Shrink `total` so that the steps still to run fit `seconds_left`; returns the new total."""
        fits = step + int(seconds_left / max(sec_per_step, 1e-9))
        self.total = max(min(self.total, fits), step + 1, self.warmup + 1)
        return self.total

    def state(self) -> dict:
        return asdict(self)


@dataclass
class SpikeGuard:
    ratio: float = 1.5
    min_jump: float = 0.05
    beta: float = 0.95
    settle: int = 10  # steps before the average is trusted
    rewind_after: int = 3
    lr_cut: float = 0.5
    average: float = 0.0
    seen: int = 0
    in_a_row: int = 0
    skipped: int = 0
    rewinds: int = 0
    lr_scale: float = 1.0

    def is_spike(self, loss: float) -> bool:
        if not math.isfinite(loss):
            return True
        if self.seen < self.settle:
            return False
        return loss > self.average * self.ratio and loss - self.average > self.min_jump

    def observe(self, loss: float) -> str:
        """'ok' (apply the step), 'skip' (drop it) or 'rewind' (drop it and restore the snapshot)."""
        if self.is_spike(loss):
            self.in_a_row += 1
            self.skipped += 1
            if self.in_a_row >= self.rewind_after:
                self.in_a_row = 0
                self.rewinds += 1
                self.lr_scale *= self.lr_cut
                return "rewind"
            return "skip"
        self.in_a_row = 0
        self.seen += 1
        # The first steps set the average directly (bias-corrected exponential average).
        w = 1.0 / self.seen if self.seen < self.settle else 1.0 - self.beta
        self.average += w * (loss - self.average)
        return "ok"

    def state(self) -> dict:
        return asdict(self)
