"""`ddpm report`: a run folder as one self-contained HTML page (RUN/report.html).

`write_report(run_dir)` is a function of the run folder alone: collect.py reads it (never
failing on a missing or damaged piece), plots.py draws the curves, page.py renders the page, and
the page is written atomically. `strip=True` (what `ddpm report` does) first samples a
progressive-denoising strip (strip.py); without it the newest strip already in the folder is
shown, or a line saying how to make one. `refresh_report` is the training loop's cheap,
never-failing call at each checkpoint.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from ..errors import DDPMError
from ..files import atomic_write
from .collect import RunData, VerifiedCache, collect
from .page import render
from .plots import loss_figure, quality_figure, speed_figure

log = logging.getLogger(__name__)
REPORT = "report.html"

__all__ = ["REPORT", "RunData", "collect", "refresh_report", "write_report"]


def write_report(
    run_dir: str | Path,
    out: str | Path | None = None,
    *,
    strip: bool = False,
    device: torch.device | str = "cpu",
    verified: VerifiedCache | None = None,
) -> Path:
    """Write the run's report to `out` (default RUN/report.html) atomically; returns its path.
    strip=True samples the progressive strip first (4 images, the run's sampler, on `device`).
    verified: a checksum cache kept across calls (collect.checkpoint_statuses): the training
    loop's refreshes hash each checkpoint once; without it every checkpoint is verified."""
    run_dir = Path(run_dir)
    problem = ""
    if strip:
        from .strip import make_strip

        try:
            make_strip(run_dir, device=device)
        except DDPMError as error:  # a damaged newest checkpoint: the page says so
            log.warning("no progressive strip: %s", error)
            problem = f"not made: {error}"
    data = collect(run_dir, verified=verified)
    figures = {
        "loss": loss_figure(data.log, data.val),
        "speed": speed_figure(data.log),
        "quality": quality_figure(data.quality),
    }
    hint = problem or (
        f"none yet: `ddpm report --run {run_dir}` samples one"
        if data.checkpoints
        else "none yet: the run has no checkpoint to sample from"
    )
    path = Path(out) if out is not None else run_dir / REPORT
    atomic_write(path, render(data, figures, strip_hint=hint).encode("utf-8"))
    return path


def refresh_report(run_dir: Path, verified: VerifiedCache | None = None) -> float | None:
    """Rewrite RUN/report.html without sampling; the seconds it took, or None when it failed
    (logged as a warning: a report is never worth stopping a training run for)."""
    import time

    started = time.perf_counter()
    try:
        write_report(run_dir, verified=verified)
    except Exception as error:  # anything at all: training goes on
        log.warning("could not refresh %s: %s", run_dir / REPORT, error)
        return None
    return time.perf_counter() - started
