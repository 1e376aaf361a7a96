"""The files of a run folder, written by the main process only: config.json, log.csv,
val_loss.csv, checkpoints/ (the last K plus best.safetensors), samples/ and loss.png (and, by
other modules, sessions.jsonl, report.html, progressive/ and tensorboard/).

Everything but the two CSV logs is replaced atomically (ddpm.files). The logs are appended a row
at a time; when a run resumes they are read back leniently: rows after the checkpoint are dropped
(they are redone), a line torn by a kill is dropped, and anything else unreadable (binary junk, a
`60,abc` row) is set aside in `NAME.damaged-TIMESTAMP` with a warning, never a traceback.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import shutil
import time
from pathlib import Path

import torch

from ..checkpoint import (
    Checkpoint,
    checkpoint_path,
    list_checkpoints,
    load_checkpoint,
    load_latest,
    prune_checkpoints,
    save_checkpoint,
)
from ..config import RunConfig, from_dict, to_dict
from ..errors import DDPMError
from ..files import atomic_write, remove_temporaries
from .run_lock import LOCK_NAME
from .step import Trainer

log = logging.getLogger(__name__)
LOG_FIELDS = ["step", "loss", "lr", "grad_norm", "images_per_s", "elapsed_s", "skipped_steps"]
VAL_FIELDS = ["step", "val_loss"]
BEST = "best.safetensors"
# what a run writes; `--overwrite` removes exactly these and nothing else in the folder
RUN_ENTRIES = (
    "config.json",
    "log.csv",
    "val_loss.csv",
    "loss.png",
    "quality.png",
    "checkpoints",
    "samples",
    "eval",
    "sessions.jsonl",  # ddpm.sessions
    "report.html",  # ddpm.report
    "progressive",
    "tensorboard",
    "*.damaged-*",  # logs set aside as damaged
)


def write_config(run_dir: Path, config: RunConfig) -> None:
    """Write config.json; one that exists but does not read as a config (a hand edit gone wrong)
    is first set aside as config.json.damaged-TIMESTAMP, with a warning: never lost."""
    path = run_dir / "config.json"
    try:
        from_dict(json.loads(path.read_bytes().decode()))
    except FileNotFoundError:
        pass
    except (OSError, ValueError, DDPMError):
        aside = path.with_name(f"{path.name}.damaged-{time.strftime('%Y%m%d-%H%M%S')}")
        try:
            shutil.copyfile(path, aside)
        except OSError as error:
            raise DDPMError(f"cannot set aside {path}: {error.strerror or error}") from None
        log.warning("%s did not read as a config; it is kept as %s", path, aside)
    atomic_write(path, (json.dumps(to_dict(config), indent=2) + "\n").encode())


def read_config(run_dir: Path) -> RunConfig:
    """The run's config.json; if it is missing or damaged, the newest good checkpoint's config
    (a checkpoint alone rebuilds its run), with a warning; else one DDPMError line."""
    path = run_dir / "config.json"
    try:
        return from_dict(json.loads(path.read_bytes().decode()))
    except (OSError, ValueError, DDPMError) as error:  # UnicodeDecodeError is a ValueError
        reason = "missing" if isinstance(error, FileNotFoundError) else f"unreadable ({error})"
    if not list_checkpoints(run_dir / "checkpoints"):
        raise DDPMError(
            f"{run_dir} is not a run folder: {path} is {reason[:120]} and there is no checkpoint"
        )
    checkpoint = load_latest(run_dir / "checkpoints")
    log.warning("%s is %s; using the config of %s", path, reason[:120], checkpoint.path)
    return from_dict(checkpoint.config)


def claim_new_run(run_dir: Path, *, overwrite: bool) -> None:
    """A new run needs an empty (or new) folder: another run's config, logs or best checkpoint
    are never overwritten. With overwrite=True the earlier run's files (RUN_ENTRIES) are deleted."""
    present = (
        sorted(p.name for p in run_dir.iterdir() if p.name != LOCK_NAME) if run_dir.is_dir() else []
    )
    if not present:
        return
    if not overwrite:
        shown = ", ".join(present[:4]) + (", ..." if len(present) > 4 else "")
        raise DDPMError(
            f"{run_dir} is not empty ({shown}); continue that run with --resume {run_dir}, "
            f"choose a new folder, or replace it with --overwrite"
        )
    try:
        for path in (p for pattern in RUN_ENTRIES for p in run_dir.glob(pattern)):
            if path.is_dir():
                shutil.rmtree(path)
            else:
                path.unlink()
    except OSError as error:
        raise DDPMError(
            f"--overwrite could not remove {error.filename}: {error.strerror or error}"
        ) from None
    log.warning("--overwrite: removed the earlier run's files from %s", run_dir)


def latest_checkpoint(run_dir: Path) -> Checkpoint | None:
    """The newest good checkpoint, or None when the run was stopped before its first one."""
    if not list_checkpoints(run_dir / "checkpoints"):
        return None
    return load_latest(run_dir / "checkpoints")


def restore(trainer: Trainer, checkpoint: Checkpoint) -> int:
    """Load a checkpoint into the trainer; return its step. No RNG state is needed: every draw
    of step n is a function of (train.seed, n)."""
    trainer.model.load_state_dict(checkpoint.state_dict("model"))
    trainer.ema.load_state_dict(checkpoint.state_dict("ema"))
    if checkpoint.optimizer_groups:
        trainer.optimizer.load_state_dict(checkpoint.optimizer_state())
    else:  # weights alone (`ddpm import`): fine-tuning starts the optimizer's moments afresh
        log.warning("%s holds no optimizer state (an imported network): AdamW starts afresh",
                    checkpoint.path)  # fmt: skip
    if trainer.importance is not None:  # train.t_sampling=importance: its history
        trainer.importance.load_state(checkpoint.state_dict("importance"))
    log.info("resumed at step %d from %s", checkpoint.step, checkpoint.path)
    return checkpoint.step


def _parse_rows(
    path: Path, fields: list[str], text_fields: set[str]
) -> tuple[list[dict[str, str]], int]:
    """(rows whose every field but `text_fields` is a number, count of damaged lines) of a CSV
    log; a last line without its newline (torn by a kill) is dropped without counting as damage."""
    text = path.read_bytes().decode("utf-8", errors="replace")
    lines = text.splitlines(keepends=True)
    if lines and not lines[-1].endswith("\n"):
        lines.pop()  # torn by a kill while it was written
    lines = [line.rstrip("\r\n") for line in lines]
    rows, damaged = [], 0
    for line in lines[1:]:
        values = next(csv.reader([line]), []) if "\0" not in line else []
        try:
            if len(values) != len(fields) or "\ufffd" in line:
                raise ValueError(line)
            [float(v) for f, v in zip(fields, values) if v != "" and f not in text_fields]
            int(values[0])
        except (ValueError, IndexError):
            damaged += bool(line.strip())
            continue
        rows.append(dict(zip(fields, values)))
    header_ok = bool(lines) and lines[0].strip() == ",".join(fields)
    return rows, damaged + (not header_ok and bool(text))


def read_rows(
    path: Path, fields: list[str], start: int, *, text_fields: set[str] | None = None
) -> list[dict[str, str]]:
    """Rows of a CSV log with step <= start; damage is set aside with a warning."""
    if not path.exists():
        return []
    try:
        rows, damaged = _parse_rows(path, fields, text_fields or set())
        aside = path.with_name(f"{path.name}.damaged-{time.strftime('%Y%m%d-%H%M%S')}")
        if damaged:
            shutil.copyfile(path, aside)
    except OSError as error:
        raise DDPMError(f"cannot read or set aside {path}: {error.strerror or error}") from None
    if damaged:
        log.warning(
            "%s had %d damaged line(s); kept its %d readable rows, the original is in %s",
            path,
            damaged,
            len(rows),
            aside,
        )
    return [r for r in rows if int(r["step"]) <= start]


def open_csv(
    path: Path, fields: list[str], start: int, *, text_fields: set[str] | None = None
) -> None:
    """Create a CSV log, or on resume keep only rows up to the checkpoint's step (later ones are
    redone)."""
    rows = read_rows(path, fields, start, text_fields=text_fields) if start else []
    buffer = io.StringIO(newline="")
    writer = csv.DictWriter(buffer, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write(path, buffer.getvalue().encode())


def append_csv(path: Path, row: list[object]) -> None:
    """Append one row; a full disk is one DDPMError line."""
    try:
        with open(path, "a", newline="") as f:
            csv.writer(f, lineterminator="\n").writerow(row)
    except OSError as error:
        raise DDPMError(
            f"could not write {path}: {error.strerror or error}; {last_good(path.parent)}"
        ) from None


def best_val_loss(run_dir: Path, start: int) -> float:
    """The lowest validation loss so far: of the log rows up to `start` and of best.safetensors
    itself (whose header records it), so a lost or damaged log never lets a worse checkpoint
    replace the best one."""
    rows = read_rows(run_dir / "val_loss.csv", VAL_FIELDS, start)
    lowest = min((float(r["val_loss"]) for r in rows), default=math.inf)
    best = run_dir / "checkpoints" / BEST
    if best.is_file():
        try:
            recorded = load_checkpoint(best).val_loss
        except DDPMError as error:
            log.warning("%s; it will be replaced by the next best checkpoint", error)
            return lowest
        if recorded is not None and math.isfinite(recorded):
            lowest = min(lowest, recorded)
    return lowest


def all_finite(module: torch.nn.Module) -> bool:
    return bool(torch.stack([p.isfinite().all() for p in module.parameters()]).all())


def last_good(run_dir: Path) -> str:
    paths = list_checkpoints(run_dir / "checkpoints")
    return (
        f"the last good checkpoint {paths[-1]} is intact" if paths else "no checkpoint was written"
    )


def save(
    trainer: Trainer,
    config: RunConfig,
    run_dir: Path,
    step: int,
    *,
    write: bool,
    val_loss: float | None = None,
    train_seconds: float | None = None,
    best: bool = False,
    name: str | None = None,
) -> Path:
    """Check the weights (on every process, so all agree), then let the main process write the
    step's checkpoint (and best.safetensors), and prune old ones. With `name` (e.g.
    best_fid.safetensors) the checkpoint is written under that name instead, and nothing is
    pruned."""
    if not (all_finite(trainer.model) and all_finite(trainer.ema)):
        raise DDPMError(f"non-finite weights at step {step}, not saved; {last_good(run_dir)}")
    folder = run_dir / "checkpoints"
    path = folder / name if name else checkpoint_path(folder, step)
    if write:
        save_checkpoint(
            path,
            step=step,
            config=to_dict(config),
            model=trainer.model,
            ema=trainer.ema,
            optimizer=trainer.optimizer,
            val_loss=val_loss,
            train_seconds=train_seconds,
            extra=trainer.importance.state_tensors() if trainer.importance else None,
        )
        if best:  # the same bytes, not a second serialisation of the same tensors
            atomic_write(folder / BEST, path.read_bytes())
        if not name:
            prune_checkpoints(folder, config.train.keep_checkpoints)
    return path


def clean_temporaries(run_dir: Path) -> None:
    """Temporary files that a killed writer left in the run folder."""
    for folder in (run_dir, run_dir / "checkpoints", run_dir / "samples"):
        remove_temporaries(folder)
