"""The files of a run folder, written by the main process only: config.json, log.csv,
val_loss.csv, checkpoints/ (the last K plus best.safetensors) and samples/."""

from __future__ import annotations

import csv
import json
import logging
from pathlib import Path

import torch

from ..checkpoint import (
    atomic_write,
    checkpoint_path,
    list_checkpoints,
    load_latest,
    prune_checkpoints,
    save_checkpoint,
)
from ..config import RunConfig, to_dict
from ..errors import DDPMError
from .step import Trainer

log = logging.getLogger(__name__)
LOG_FIELDS = ["step", "loss", "lr", "grad_norm", "images_per_s", "elapsed_s", "skipped_steps"]
BEST = "best.safetensors"


def write_config(run_dir: Path, config: RunConfig) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write(run_dir / "config.json", (json.dumps(to_dict(config), indent=2) + "\n").encode())


def restore(trainer: Trainer, run_dir: Path) -> int:
    """Load the newest good checkpoint into the trainer (and the CPU RNG); return its step."""
    checkpoint = load_latest(run_dir / "checkpoints")
    trainer.model.load_state_dict(checkpoint.state_dict("model"))
    trainer.ema.load_state_dict(checkpoint.state_dict("ema"))
    trainer.optimizer.load_state_dict(checkpoint.optimizer_state())
    torch.set_rng_state(checkpoint.tensors["rng.cpu"])
    log.info("resumed %s at step %d", run_dir, checkpoint.step)
    return checkpoint.step


def remove_stale_temporaries(run_dir: Path) -> None:
    """Temporary files a killed save left behind (never a complete checkpoint)."""
    for tmp in (run_dir / "checkpoints").glob(".*.tmp*"):
        tmp.unlink(missing_ok=True)


def _rows_up_to(path: Path, start: int) -> list[dict[str, str]]:
    """Complete rows with step <= start; a line cut short by a kill is dropped."""
    if not start or not path.exists():
        return []
    rows = []
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            try:
                if int(row["step"]) <= start and None not in row.values():
                    rows.append(row)
            except (TypeError, ValueError):
                continue
    return rows


def open_csv(path: Path, fields: list[str], start: int) -> None:
    """Create a CSV log, or on resume keep only rows up to the checkpoint's step (later ones are
    redone)."""
    rows = _rows_up_to(path, start)
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields, restval="", extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


def append_csv(path: Path, row: list) -> None:
    with open(path, "a", newline="") as f:
        csv.writer(f).writerow(row)


def best_val_loss(run_dir: Path, start: int) -> float:
    rows = _rows_up_to(run_dir / "val_loss.csv", start)
    return min((float(r["val_loss"]) for r in rows), default=float("inf"))


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
    best: bool = False,
) -> Path:
    """Check the weights (on every process, so all agree), then let the main process write the
    step's checkpoint (and best.safetensors), and prune old ones."""
    if not (all_finite(trainer.model) and all_finite(trainer.ema)):
        raise DDPMError(f"non-finite weights at step {step}, not saved; {last_good(run_dir)}")
    path = checkpoint_path(run_dir / "checkpoints", step)
    if write:
        save_checkpoint(
            path,
            step=step,
            config=to_dict(config),
            model=trainer.model,
            ema=trainer.ema,
            optimizer=trainer.optimizer,
        )
        if best:  # the same bytes, not a second serialisation of the same tensors
            atomic_write(run_dir / "checkpoints" / BEST, path.read_bytes())
        prune_checkpoints(run_dir / "checkpoints", config.train.keep_checkpoints)
    return path
