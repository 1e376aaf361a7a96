"""The log window: loss, gradient norm and skipped steps summed on the device between log lines,
so training makes one host sync per log interval, not one per step."""

from __future__ import annotations

import math
import time
from pathlib import Path

import torch

from ..config import TrainConfig
from ..errors import DDPMError
from . import distributed, run_files


class LogWindow:
    """Sums loss, grad norm and skipped steps on the device between log lines, so there is one
    host sync per log interval, not per step; tracks runs of consecutive non-finite steps."""

    def __init__(self, ctx: distributed.Distributed, start: int, max_bad: int) -> None:
        def zeros() -> torch.Tensor:
            return torch.zeros((), device=ctx.device)

        self.ctx, self.max_bad = ctx, max_bad
        self.loss, self.norm, self.good, self.bad_run = zeros(), zeros(), zeros(), zeros()
        self.stop_step = torch.full((), -1.0, device=ctx.device)
        self.start, self.time, self.t0 = start, time.perf_counter(), time.perf_counter()
        self.lr = math.nan  # the rate of the last step added, for the log row

    def add(
        self,
        step: int,
        loss: torch.Tensor,
        grad_norm: torch.Tensor,
        finite: torch.Tensor,
        *,
        lr: float,
    ) -> None:
        self.lr = lr
        self.loss += torch.where(finite, loss, 0.0)
        self.norm += torch.where(finite, grad_norm, 0.0)
        self.good += finite
        self.bad_run = torch.where(finite, 0.0, self.bad_run + 1)
        first = (self.bad_run >= self.max_bad) & (self.stop_step < 0)
        self.stop_step = torch.where(first, float(step + 2 - self.max_bad), self.stop_step)

    def flush(self, done: int, config: TrainConfig, run_dir: Path) -> tuple[float, float]:
        """Append a log row for steps start+1..done; return (mean loss, images/s)."""
        stats = torch.stack([self.loss, self.good])
        stats = distributed.all_reduce_sum(self.ctx, stats) / self.ctx.world_size
        loss_sum, good, norm, stop = (*stats.tolist(), self.norm.item(), self.stop_step.item())
        count, now = done - self.start, time.perf_counter()
        if stop >= 0:
            raise DDPMError(
                f"training diverged: {self.max_bad} non-finite steps in a row from step "
                f"{int(stop)} (they were skipped); {run_files.last_good(run_dir)} "
                f"(try a lower train.lr or train.grad_clip)"
            )
        loss, rate = (
            loss_sum / max(good, 1),
            count * config.batch_size * self.ctx.world_size / (now - self.time),
        )
        if self.ctx.is_main:
            run_files.append_csv(
                run_dir / "log.csv",
                [
                    done,
                    f"{loss:.6g}",
                    f"{self.lr:.6g}",
                    f"{norm / max(good, 1):.6g}",
                    f"{rate:.2f}",
                    f"{now - self.t0:.1f}",
                    int(count - good),
                ],
            )
        for total in (self.loss, self.norm, self.good):
            total.zero_()
        self.start, self.time = done, now
        return loss, rate
