"""The training loop: a run folder in, checkpoints, sample grids and a CSV log out.

A run folder holds config.json, checkpoints/, samples/, log.csv and loss.png, and is all a user
needs to resume, sample or evaluate.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from ..builders import build_schedule
from ..checkpoint import (
    atomic_write,
    checkpoint_path,
    list_checkpoints,
    load_latest,
    prune_checkpoints,
    save_checkpoint,
)
from ..config import RunConfig, TrainConfig, to_dict
from ..data import InMemoryBatches, check_labels, check_matches, load_dataset
from ..errors import DDPMError
from ..generate import generate
from ..viz import plot_loss, save_grid
from .signals import StopRequest, TrainingStopped
from .step import Trainer, lr_at, make_trainer

log = logging.getLogger(__name__)
LOG_FIELDS = ["step", "loss", "lr", "grad_norm", "images_per_s", "elapsed_s"]


@dataclass(frozen=True)
class TrainResult:
    run_dir: Path
    step: int
    last_loss: float
    checkpoint: Path
    samples: Path | None


def write_config(run_dir: Path, config: RunConfig) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write(run_dir / "config.json", (json.dumps(to_dict(config), indent=2) + "\n").encode())


def _restore(trainer: Trainer, run_dir: Path) -> int:
    checkpoint = load_latest(run_dir / "checkpoints")
    trainer.model.load_state_dict(checkpoint.state_dict("model"))
    trainer.ema.load_state_dict(checkpoint.state_dict("ema"))
    trainer.optimizer.load_state_dict(checkpoint.optimizer_state())
    torch.set_rng_state(checkpoint.tensors["rng.cpu"])
    log.info("resumed %s at step %d", run_dir, checkpoint.step)
    return checkpoint.step


def _open_log(path: Path, start: int) -> None:
    """Create the CSV log, or on resume drop rows past the checkpoint's step (they will be redone)."""
    rows = []
    if start and path.exists():
        with open(path, newline="") as f:
            rows = [r for r in csv.DictReader(f) if int(r["step"]) <= start]
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=LOG_FIELDS)
        writer.writeheader()
        writer.writerows(rows)


def _all_finite(module: torch.nn.Module) -> bool:
    return bool(torch.stack([p.isfinite().all() for p in module.parameters()]).all())


def _last_good(run_dir: Path) -> str:
    paths = list_checkpoints(run_dir / "checkpoints")
    return (
        f"the last good checkpoint {paths[-1]} is intact" if paths else "no checkpoint was written"
    )


def _save(trainer: Trainer, config: RunConfig, run_dir: Path, step: int) -> Path:
    if not (_all_finite(trainer.model) and _all_finite(trainer.ema)):
        raise DDPMError(f"non-finite weights at step {step}, not saved; {_last_good(run_dir)}")
    path = checkpoint_path(run_dir / "checkpoints", step)
    save_checkpoint(
        path,
        step=step,
        config=to_dict(config),
        model=trainer.model,
        ema=trainer.ema,
        optimizer=trainer.optimizer,
    )
    prune_checkpoints(run_dir / "checkpoints", config.train.keep_checkpoints)
    return path


def _samples(trainer: Trainer, config: RunConfig, run_dir: Path, step: int) -> Path:
    images = generate(
        trainer.ema,
        build_schedule(config),
        config,
        n=config.train.num_sample_images,
        seed=config.train.seed,
        progress=False,
    )
    return save_grid(images, run_dir / "samples" / f"step_{step:08d}.png")


def train(
    config: RunConfig,
    run_dir: str | Path,
    *,
    device: torch.device,
    resume: bool = False,
    progress: bool = True,
) -> TrainResult:
    """Train (or, with resume=True, continue) the run in `run_dir` up to config.train.num_steps.

    The caller's global RNG state is restored afterwards; inside, it is seeded with train.seed (it
    drives weight initialisation and dropout). SIGINT or SIGTERM finishes the current step, saves a
    checkpoint and raises TrainingStopped; a second SIGINT interrupts at once.
    """
    run_dir, cfg = Path(run_dir), config.train
    data = load_dataset(config.data, "train")
    check_matches(data, image_size=config.data.image_size, channels=config.data.channels)
    check_labels(data, config.model.num_classes)
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(cfg.seed)
        trainer = make_trainer(config, device)
        start = _restore(trainer, run_dir) if resume else 0
        write_config(run_dir, config)
        _open_log(run_dir / "log.csv", start)
        batches = InMemoryBatches(
            data.images,
            data.labels,
            batch_size=cfg.batch_size,
            seed=cfg.seed,
            random_flip=config.data.random_flip,
            device=device,
        )
        return _loop(trainer, batches, config, run_dir, start=start, progress=progress)


class _LogWindow:
    """Sums loss and grad norm on the device between log lines, so there is one host sync per
    log interval, not per step."""

    def __init__(self, device: torch.device, start: int):
        self.loss = torch.zeros((), device=device)
        self.norm = torch.zeros((), device=device)
        self.start, self.time, self.t0 = start, time.perf_counter(), time.perf_counter()

    def add(self, loss: torch.Tensor, grad_norm: torch.Tensor) -> None:
        self.loss += loss
        self.norm += grad_norm

    def flush(self, done: int, config: TrainConfig, run_dir: Path) -> tuple[float, float]:
        """Append a log row for steps start+1..done; return (mean loss, images/s)."""
        count, now = done - self.start, time.perf_counter()
        loss, norm = (self.loss / count).item(), (self.norm / count).item()
        rate = count * config.batch_size / (now - self.time)
        if not math.isfinite(loss):
            raise DDPMError(
                f"training diverged: non-finite loss in steps {self.start + 1}-{done}; "
                f"{_last_good(run_dir)} (try a lower train.lr or train.grad_clip)"
            )
        with open(run_dir / "log.csv", "a", newline="") as f:
            csv.writer(f).writerow(
                [
                    done,
                    f"{loss:.6g}",
                    f"{lr_at(done - 1, config):.6g}",
                    f"{norm:.6g}",
                    f"{rate:.2f}",
                    f"{now - self.t0:.1f}",
                ]
            )
        self.loss.zero_(), self.norm.zero_()
        self.start, self.time = done, now
        return loss, rate


def _loop(
    trainer: Trainer,
    batches: InMemoryBatches,
    config: RunConfig,
    run_dir: Path,
    *,
    start: int,
    progress: bool,
) -> TrainResult:
    cfg = config.train
    if start >= cfg.num_steps:
        raise DDPMError(
            f"the run is already at step {start} >= train.num_steps={cfg.num_steps}; "
            f"raise it with --set train.num_steps=N"
        )
    window = _LogWindow(next(trainer.model.parameters()).device, start)
    last_loss, checkpoint, samples = math.nan, None, None
    bar = tqdm(total=cfg.num_steps, initial=start, desc="train", disable=not progress, unit="step")
    with StopRequest() as stop, bar:
        for step in range(start, cfg.num_steps):
            window.add(*trainer.step(step, *batches.batch(step)))
            bar.update(1)
            done = step + 1
            if done % cfg.log_every == 0 or done == cfg.num_steps:
                last_loss, rate = window.flush(done, cfg, run_dir)
                bar.set_postfix(loss=f"{last_loss:.4f}", img_s=f"{rate:.0f}")
            if done % cfg.checkpoint_every == 0 or done == cfg.num_steps:
                checkpoint = _save(trainer, config, run_dir, done)
            if done % cfg.sample_every == 0 or done == cfg.num_steps:
                samples = _samples(trainer, config, run_dir, done)
            if stop.requested:
                path = _save(trainer, config, run_dir, done)
                raise TrainingStopped(
                    f"stopped by {stop.requested} at step {done}; saved {path}; "
                    f"continue with: ddpm train --resume {run_dir}"
                )
    plot_loss(run_dir / "log.csv", run_dir / "loss.png")
    return TrainResult(
        run_dir=run_dir,
        step=cfg.num_steps,
        last_loss=last_loss,
        checkpoint=checkpoint,
        samples=samples,
    )
