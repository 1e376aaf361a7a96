"""What a run folder holds, read for its report without ever failing on a missing or damaged
piece: each part is empty (and the page says "none yet") or carries a note saying what is wrong.

Minutes are the run's wall-clock minutes as log.csv records them (`elapsed_s`, which restarts at
each `ddpm train` session: the sessions are laid end to end); the quality curve's minutes are
training minutes without its evaluations (eval/during_training.csv's `train_seconds`).
"""

from __future__ import annotations

import csv
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image, UnidentifiedImageError

from ..checkpoint import CheckpointStatus, inspect_checkpoint, list_checkpoints
from ..sessions import read_sessions

GRID = re.compile(r"^step_(\d{1,12})\.png$")
STRIPS = "progressive"  # RUN/progressive/step_NNNNNNNN.png: the report's denoising strips
QUALITY_CSV = Path("eval") / "during_training.csv"  # ddpm.train.quality writes it
METRICS_CSV = Path("eval") / "metrics.csv"  # ddpm eval's record (ddpm.eval_csv)
EXTRA_CHECKPOINTS = ("best.safetensors", "best_fid.safetensors")
MAX_CSV_BYTES = 64 << 20  # a log this long is read from its end (the newest rows)


@dataclass(frozen=True)
class LogPoint:
    """One log.csv row: the mean loss of the steps since the previous row, at `minutes`."""

    step: int
    loss: float
    lr: float
    images_per_s: float
    minutes: float  # wall clock since the run started, sessions laid end to end


@dataclass(frozen=True)
class Picture:
    """A PNG of the run (a sample grid, a strip) at a step; `problem` when it does not decode."""

    step: int
    path: Path
    problem: str = ""


@dataclass
class RunData:
    run_dir: Path
    config: dict[str, Any] | None = None  # config.json as saved
    sessions: list[dict[str, Any]] = field(default_factory=list)
    log: list[LogPoint] = field(default_factory=list)
    val: list[tuple[int, float]] = field(default_factory=list)  # (step, validation loss)
    quality: list[dict[str, str]] = field(default_factory=list)  # during_training.csv rows
    metrics: list[dict[str, str]] = field(default_factory=list)  # eval/metrics.csv rows
    grids: list[Picture] = field(default_factory=list)  # samples/step_*.png, by step
    strip: Picture | None = None  # the newest progressive strip
    checkpoints: list[CheckpointStatus] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # what could not be read, said once each

    @property
    def step(self) -> int:
        """The furthest step any record reaches (0 for a run with none)."""
        steps = [p.step for p in self.log] + [s for s, _ in self.val]
        steps += [c.step for c in self.checkpoints if c.step is not None]
        return max(steps, default=0)


def _rows(path: Path, notes: list[str]) -> list[dict[str, str]]:
    """A CSV file's rows as dicts ([] when absent); undecodable bytes are replaced."""
    if not path.is_file():
        return []
    try:
        with path.open("rb") as f:
            size = f.seek(0, 2)
            f.seek(max(0, size - MAX_CSV_BYTES))
            text = f.read().decode("utf-8", errors="replace")
        if size > MAX_CSV_BYTES:  # keep the header, drop the partial first line
            header = path.open(errors="replace").readline()
            text = header + text.split("\n", 1)[-1]
        return [dict(r) for r in csv.DictReader(text.splitlines())]
    except (OSError, csv.Error) as error:
        notes.append(f"{path.name} could not be read ({error})")
        return []


def _number(row: dict[str, str], key: str) -> float:
    """float(row[key]); ValueError for a missing or non-numeric value."""
    value = row.get(key)
    if value is None:
        raise ValueError(key)
    return float(value)


def read_log(run_dir: Path, session_starts: list[int], notes: list[str]) -> list[LogPoint]:
    """log.csv as points; rows that do not parse (a torn line) are left out, counted in a note.
    A session restarts elapsed_s: a new one is seen where elapsed_s goes down or a recorded
    session starts, and is laid after the previous one's last row."""
    points, bad, offset, last_elapsed, last_step = [], 0, 0.0, 0.0, 0
    for row in _rows(run_dir / "log.csv", notes):
        try:
            step, elapsed = int(row.get("step") or ""), _number(row, "elapsed_s")
            values = [_number(row, k) for k in ("loss", "lr", "images_per_s")]
        except ValueError:
            bad += 1
            continue
        if elapsed < last_elapsed or any(last_step <= s < step for s in session_starts[1:]):
            offset += last_elapsed
        last_elapsed, last_step = elapsed, step
        loss, lr, rate = values
        points.append(LogPoint(step, loss, lr, rate, (offset + elapsed) / 60))
    if bad:
        notes.append(f"log.csv: {bad} row(s) that do not parse were left out")
    return points


def read_val(run_dir: Path, notes: list[str]) -> list[tuple[int, float]]:
    val = []
    for row in _rows(run_dir / "val_loss.csv", notes):
        try:
            val.append((int(row.get("step") or ""), _number(row, "val_loss")))
        except ValueError:
            continue
    return val


def read_quality(run_dir: Path, notes: list[str]) -> list[dict[str, str]]:
    """during_training.csv rows with a numeric step, minutes and FID (others are left out)."""
    good = []
    for row in _rows(run_dir / QUALITY_CSV, notes):
        try:
            int(row.get("step") or ""), _number(row, "train_seconds"), _number(row, "fid")
        except ValueError:
            continue
        good.append(row)
    return good


def _picture(step: int, path: Path) -> Picture:
    """A PNG that PIL can read whole; otherwise the problem (the page shows it as text)."""
    try:
        with Image.open(path) as image:
            if image.format != "PNG":
                return Picture(step, path, f"not a PNG ({image.format})")
            image.load()
    except (OSError, UnidentifiedImageError, ValueError) as error:
        return Picture(step, path, f"does not decode ({error})")
    return Picture(step, path)


def stepped_pictures(folder: Path) -> list[Picture]:
    """folder/step_N.png files, oldest step first."""
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := GRID.match(p.name))]
    return [_picture(step, path) for step, path in sorted(found)]


def newest_strip(run_dir: Path) -> Picture | None:
    """The newest progressive-denoising strip the report made (RUN/progressive/step_N.png)."""
    strips = stepped_pictures(run_dir / STRIPS)
    return strips[-1] if strips else None


def read_config(run_dir: Path, notes: list[str]) -> dict[str, Any] | None:
    path = run_dir / "config.json"
    try:
        config = json.loads(path.read_bytes().decode("utf-8", errors="replace"))
    except FileNotFoundError:
        notes.append("config.json is missing")
        return None
    except (OSError, ValueError) as error:
        notes.append(f"config.json does not read as JSON ({error})")
        return None
    if not isinstance(config, dict):
        notes.append("config.json is not a JSON object")
        return None
    return config


# a checkpoint file as last verified: (path, size, mtime_ns, inode) -> its status
VerifiedCache = dict[tuple[str, int, int, int], CheckpointStatus]


def checkpoint_statuses(paths: list[Path], cache: VerifiedCache | None) -> list[CheckpointStatus]:
    """inspect_checkpoint for each file; with `cache` (the training loop's, across refreshes), a
    file unchanged since it was last verified (same size, mtime and inode) is not hashed again."""
    statuses = []
    for path in paths:
        try:
            stat = path.stat()
        except OSError:
            continue  # pruned meanwhile
        key = (str(path), stat.st_size, stat.st_mtime_ns, stat.st_ino)
        status = cache.get(key) if cache is not None else None
        if status is None:
            status = inspect_checkpoint(path)
            if cache is not None:
                cache[key] = status
        statuses.append(status)
    return statuses


def collect(run_dir: str | Path, *, verified: VerifiedCache | None = None) -> RunData:
    """Read everything the report shows from `run_dir`; never raises for its content.
    verified: a cache of checkpoint checksums kept across calls (see checkpoint_statuses)."""
    run_dir = Path(run_dir)
    data = RunData(run_dir)
    notes = data.notes
    data.config = read_config(run_dir, notes)
    data.sessions = read_sessions(run_dir)
    starts = [s["start_step"] for s in data.sessions if isinstance(s.get("start_step"), int)]
    data.log = read_log(run_dir, starts, notes)
    data.val = read_val(run_dir, notes)
    data.quality = read_quality(run_dir, notes)
    data.metrics = _rows(run_dir / METRICS_CSV, notes)
    data.grids = stepped_pictures(run_dir / "samples")
    data.strip = newest_strip(run_dir)
    folder = run_dir / "checkpoints"
    paths = list_checkpoints(folder) + [folder / n for n in EXTRA_CHECKPOINTS]
    data.checkpoints = checkpoint_statuses([p for p in paths if p.is_file()], verified)
    return data
