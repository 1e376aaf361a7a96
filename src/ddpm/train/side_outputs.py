"""What the main process writes beside a run's own files, each optional: RUN/report.html
refreshed at each checkpoint (train.report) and TensorBoard events (train.tensorboard). Neither
may stop training: the report refresh logs a warning when it fails (ddpm.report)."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from ..config import RunConfig
from .board import Board

if TYPE_CHECKING:
    from ..report.collect import VerifiedCache

log = logging.getLogger(__name__)


@dataclass
class SideOutputs:
    run_dir: Path
    report: bool
    board: Board | None
    # checkpoints verified by earlier refreshes (ddpm.report.collect.VerifiedCache)
    verified: VerifiedCache = field(default_factory=dict)

    @classmethod
    def create(cls, config: RunConfig, run_dir: Path, start: int) -> SideOutputs:
        board = Board(run_dir, start) if config.train.tensorboard else None
        return cls(run_dir, config.train.report, board)

    def logged(self, step: int, *, loss: float, images_per_s: float, lr: float) -> None:
        if self.board is not None:
            self.board.scalars(
                step, {"train/loss": loss, "train/images_per_s": images_per_s, "train/lr": lr}
            )

    def validated(self, step: int, loss: float) -> None:
        if self.board is not None and math.isfinite(loss):
            self.board.scalars(step, {"train/val_loss": loss})

    def sampled(self, step: int, grid: Path) -> None:
        if self.board is not None:
            self.board.image("samples", step, grid)

    def scored(self, step: int, scores: dict[str, float]) -> None:
        """The quality curve's numbers at `step` (fid, fid_std, kid, precision, recall)."""
        if self.board is not None:
            self.board.scalars(step, {f"quality/{k}": v for k, v in scores.items()})

    def checkpointed(self, step: int) -> None:
        """After a checkpoint and its grid: flush the events, refresh the report."""
        if self.board is not None:
            self.board.flush()
        if self.report:
            from ..report import refresh_report

            seconds = refresh_report(self.run_dir, self.verified)
            if seconds is not None:
                log.info("step %d: %s refreshed in %.2f s", step, self.run_dir / "report.html",
                         seconds)  # fmt: skip

    def close(self) -> None:
        if self.board is not None:
            self.board.close()
