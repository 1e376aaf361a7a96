"""`ddpm report`: a run folder as one self-contained HTML page (RUN/report.html)."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import DDPMError
from ..output_paths import check_output_file
from .args import add_device_option

# what makes a folder a run folder (any of them: a run killed early has only some)
RUN_MARKERS = ("config.json", "log.csv", "checkpoints", "sessions.jsonl")


def cmd_report(args: argparse.Namespace) -> int:
    from ..devices import resolve_device
    from ..report import REPORT, write_report

    run_dir = Path(args.run)
    if not run_dir.is_dir():
        raise DDPMError(f"run folder not found: {run_dir}")
    if not any((run_dir / marker).exists() for marker in RUN_MARKERS):
        raise DDPMError(
            f"{run_dir} is not a run folder (none of {', '.join(RUN_MARKERS)}); "
            f"give --run the folder that ddpm train --out wrote"
        )
    out = Path(args.out) if args.out else run_dir / REPORT
    check_output_file(out, "report (--out)")
    device = resolve_device(args.device)
    path = write_report(run_dir, out, strip=not args.no_strip, device=device)
    print(f"report: {path}")
    return 0


def add_command(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register `ddpm report`."""
    report = sub.add_parser("report", help="write a run's report.html (curves, samples, config)")
    report.add_argument("--run", required=True, metavar="DIR", help="the run folder")
    report.add_argument(
        "--out", metavar="FILE.html", help="where to write (default RUN/report.html)"
    )
    report.add_argument(
        "--no-strip",
        action="store_true",
        help="do not sample the progressive-denoising strip (reuse the newest one, if any)",
    )
    add_device_option(report)
    report.set_defaults(func=cmd_report)
