"""metrics.csv, the record `ddpm eval` keeps: one row per number with where it came from.

Rows are appended (one per metric) and printed as a table. A metrics.csv from an older version,
without some of today's columns, is rewritten once with them (its rows leave them empty: unknown)
and then appended to; columns it has that we do not know are kept.
"""

from __future__ import annotations

import contextlib
import csv
import io
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from datetime import datetime, timezone
from pathlib import Path

from .errors import DDPMError
from .files import atomic_write

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EvalRow:
    """One line of metrics.csv."""

    metric: str
    value: float
    spread: float | None  # IS/KID: std over splits/subsets; bpd: standard error; else empty
    feature_space: str  # "inception-v3", "featnet:NAME@HASH", or "-" for bpd / val-loss
    samples: str  # the scored samples file or folder, or "test split" for bpd and val-loss
    sampler: str | None  # for generated samples: sampler name and its steps
    steps: int | None
    nfe: int | None  # network evaluations per generated image
    n: int  # images scored
    reference: str  # e.g. "fashion-mnist:test:10000"
    seed: int | None
    checkpoint_step: int | None
    # how a run's images were made (empty where it does not apply, e.g. a --samples file);
    # ema, precision, device and checkpoint also for bpd and val-loss, which score the network
    ema: bool | None = None  # True: the EMA weights, False: the raw ones
    spacing: str | None = None
    eta: float | None = None  # DDIM's
    guidance: float | None = None
    class_label: int | None = None
    precision: str | None = None
    compile: bool | None = None
    device: str | None = None
    checkpoint: str | None = None  # the checkpoint file
    time: str = ""


CSV_FIELDS = [f.name for f in fields(EvalRow)]


def read_metrics(path: Path) -> tuple[list[str], list[dict[str, str]]] | None:
    """An existing metrics.csv's columns and rows; None when there is none (or it is empty).
    DDPMError when the file is not a readable metrics.csv, so `ddpm eval` can refuse before
    any work rather than after it."""
    if not path.is_file() or path.stat().st_size == 0:
        return None
    try:
        with path.open(newline="") as f:
            reader = csv.DictReader(f)
            rows = list(reader)
            header = list(reader.fieldnames or [])
    except (OSError, csv.Error, UnicodeDecodeError) as error:
        raise DDPMError(f"cannot read {path} ({error}); move it away to write a new one") from None
    if not {"metric", "value"} <= set(header) or any(None in row for row in rows):
        raise DDPMError(
            f"{path} is not a metrics.csv of ddpm eval (columns: {', '.join(header)[:80]}, or a "
            f"row with more fields); move it away to write a new one"
        )
    return header, rows


def write_rows(rows: Sequence[EvalRow], path: Path) -> Path:
    """Append rows to metrics.csv, writing the header when the file is new. A failed append (a
    full disk) is one DDPMError and is cut back off, so the rows written before stay readable.
    A file with other columns (an older version's) is rewritten atomically with ours first, then
    its own others; its rows leave our new columns empty."""
    stamp = datetime.now(timezone.utc).isoformat(timespec="seconds")
    records = [asdict(row) | {"time": row.time or stamp} for row in rows]
    records = [{k: "" if v is None else v for k, v in r.items()} for r in records]
    existing = read_metrics(path)
    if existing is not None and existing[0] != CSV_FIELDS:
        header, old_rows = existing
        fields = CSV_FIELDS + [c for c in header if c not in CSV_FIELDS]
        new = [c for c in CSV_FIELDS if c not in header]
        if new:
            log.warning(
                "%s: adding the columns %s (empty in its earlier rows)", path, ", ".join(new)
            )
        atomic_write(path, _csv_text(fields, [*old_rows, *records], header=True).encode())
        return path
    return _append(path, _csv_text(CSV_FIELDS, records, header=existing is None))


def _csv_text(fields: list[str], records: Sequence[Mapping[str, object]], *, header: bool) -> str:
    text = io.StringIO(newline="")
    writer = csv.DictWriter(text, fieldnames=fields, restval="")
    if header:
        writer.writeheader()
    writer.writerows(records)
    return text.getvalue()


def _append(path: Path, text: str) -> Path:
    existed = path.is_file()
    size = path.stat().st_size if existed else 0
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a", newline="") as f:
            f.write(text)
    except OSError as error:
        with contextlib.suppress(OSError):
            if existed:
                os.truncate(path, size)
            else:
                path.unlink(missing_ok=True)
        raise DDPMError(f"could not write {path}: {error.strerror or error}") from None
    return path


def format_table(rows: Sequence[EvalRow]) -> str:
    """A fixed-width table of the rows for the terminal."""
    header = ("metric", "value", "+-", "feature space", "samples", "NFE", "n", "reference")
    # the table names generated samples by sampler and steps, files by name; the CSV has both
    lines = [header]
    for r in rows:
        spread = "" if r.spread is None else f"{r.spread:.4g}"
        nfe = "" if r.nfe is None else str(r.nfe)
        lines.append(
            (
                r.metric,
                f"{r.value:.5g}",
                spread,
                r.feature_space,
                (f"{r.sampler}-{r.steps}" if r.sampler else Path(r.samples).name or r.samples)
                + (" (raw weights)" if r.ema is False else ""),
                nfe,
                str(r.n),
                r.reference,
            )
        )
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(line, widths)).rstrip() for line in lines)
