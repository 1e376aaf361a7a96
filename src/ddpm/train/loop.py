"""The training loop: a run folder in, checkpoints, sample grids and CSV logs out.

A run folder holds config.json, checkpoints/, samples/, log.csv, val_loss.csv and loss.png, and
is all a user needs to resume, sample or evaluate. Under torchrun every process runs this loop on
its shard of each global batch; only the main process writes files.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from ..builders import build_schedule
from ..config import RunConfig, TrainConfig
from ..data import ImageData, InMemoryBatches, check_labels, load_dataset
from ..errors import DDPMError
from ..generate import generate
from ..viz import plot_loss, save_grid
from . import distributed, run_files
from .signals import StopRequest, TrainingStopped
from .step import Trainer, lr_at, make_trainer
from .validation import validation_loss

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainResult:
    run_dir: Path
    step: int
    last_loss: float
    checkpoint: Path
    samples: Path | None


class _LogWindow:
    """Sums loss, grad norm and skipped steps on the device between log lines, so there is one
    host sync per log interval, not per step; tracks runs of consecutive non-finite steps."""

    def __init__(self, ctx: distributed.Distributed, start: int, max_bad: int):
        zeros = lambda: torch.zeros((), device=ctx.device)  # noqa: E731
        self.ctx, self.max_bad = ctx, max_bad
        self.loss, self.norm, self.good, self.bad_run = zeros(), zeros(), zeros(), zeros()
        self.stop_step = torch.full((), -1.0, device=ctx.device)
        self.start, self.time, self.t0 = start, time.perf_counter(), time.perf_counter()

    def add(
        self, step: int, loss: torch.Tensor, grad_norm: torch.Tensor, finite: torch.Tensor
    ) -> None:
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
                    f"{lr_at(done - 1, config):.6g}",
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


def train(
    config: RunConfig,
    run_dir: str | Path,
    *,
    device: torch.device | str = "auto",
    resume: bool = False,
    progress: bool = True,
) -> TrainResult:
    """Train (or, with resume=True, continue) the run in `run_dir` up to config.train.num_steps.

    Under torchrun, joins the process group (gloo on CPU, NCCL on GPU) and trains with DDP;
    train.batch_size is per process. The caller's global RNG state is restored afterwards; inside,
    it is seeded with train.seed (weight initialisation and dropout). SIGINT or SIGTERM finishes
    the current log interval, saves a checkpoint and raises TrainingStopped.
    """
    run_dir, cfg = Path(run_dir), config.train
    ctx = distributed.setup(device if isinstance(device, str) else device.type)
    try:
        data = load_dataset(config.data, "train")
        check_labels(data, config.model.num_classes)
        val_data = load_dataset(config.data, "test") if cfg.val_images else None
        with torch.random.fork_rng(devices=[ctx.device] if ctx.device.type == "cuda" else []):
            torch.manual_seed(cfg.seed)
            trainer = make_trainer(config, ctx.device, rank=ctx.rank, world_size=ctx.world_size)
            start = run_files.restore(trainer, run_dir) if resume else 0
            if ctx.is_main:
                run_files.write_config(run_dir, config)
                run_files.remove_stale_temporaries(run_dir)
                run_files.open_csv(run_dir / "log.csv", run_files.LOG_FIELDS, start)
                run_files.open_csv(run_dir / "val_loss.csv", ["step", "val_loss"], start)
            distributed.barrier(ctx)
            batches = InMemoryBatches(
                data.images,
                data.labels,
                batch_size=cfg.batch_size,
                seed=cfg.seed,
                random_flip=config.data.random_flip,
                device=ctx.device,
                rank=ctx.rank,
                world_size=ctx.world_size,
            )
            return _loop(
                trainer,
                batches,
                config,
                run_dir,
                ctx=ctx,
                val_data=val_data,
                start=start,
                progress=progress and ctx.is_main,
            )
    finally:
        distributed.teardown(ctx)


def _checkpoint(
    trainer: Trainer,
    config: RunConfig,
    run_dir: Path,
    step: int,
    *,
    ctx: distributed.Distributed,
    val_data: ImageData | None,
    best: list[float],
) -> Path:
    """Save the step's checkpoint; with validation data, log the EMA's validation loss and also
    save best.safetensors when it is the lowest so far."""
    is_best = False
    if val_data is not None and ctx.is_main:
        loss = validation_loss(trainer.ema, val_data, config, num_images=config.train.val_images)
        run_files.append_csv(run_dir / "val_loss.csv", [step, f"{loss:.6g}"])
        is_best = math.isfinite(loss) and loss < best[0]
        best[0] = min(best[0], loss)
    return run_files.save(trainer, config, run_dir, step, write=ctx.is_main, best=is_best)


def _loop(
    trainer: Trainer,
    batches: InMemoryBatches,
    config: RunConfig,
    run_dir: Path,
    *,
    ctx: distributed.Distributed,
    val_data: ImageData | None,
    start: int,
    progress: bool,
) -> TrainResult:
    cfg = config.train
    if start >= cfg.num_steps:
        raise DDPMError(
            f"the run is already at step {start} >= train.num_steps={cfg.num_steps}; "
            f"raise it with --set train.num_steps=N"
        )
    window = _LogWindow(ctx, start, cfg.max_nonfinite_steps)
    best = [run_files.best_val_loss(run_dir, start)]
    last_loss, checkpoint, samples = math.nan, None, None
    bar = tqdm(total=cfg.num_steps, initial=start, desc="train", disable=not progress, unit="step")
    with StopRequest() as stop, bar:
        for step in range(start, cfg.num_steps):
            window.add(step, *trainer.step(step, *batches.batch(step)))
            bar.update(1)
            done = step + 1
            at_log = done % cfg.log_every == 0 or done == cfg.num_steps
            if at_log:
                last_loss, rate = window.flush(done, cfg, run_dir)
                bar.set_postfix(loss=f"{last_loss:.4f}", img_s=f"{rate:.0f}")
            # processes agree on a stop only at log lines: one collective per interval
            stopping = at_log and distributed.any_process(ctx, stop.requested is not None)
            if done % cfg.checkpoint_every == 0 or done == cfg.num_steps or stopping:
                checkpoint = _checkpoint(
                    trainer, config, run_dir, done, ctx=ctx, val_data=val_data, best=best
                )
            if ctx.is_main and (done % cfg.sample_every == 0 or done == cfg.num_steps):
                images = generate(
                    trainer.ema,
                    build_schedule(config),
                    config,
                    n=cfg.num_sample_images,
                    seed=cfg.seed,
                    progress=False,
                )
                samples = save_grid(images, run_dir / "samples" / f"step_{done:08d}.png")
            if stopping:
                raise TrainingStopped(
                    f"stopped by {stop.requested or 'another process'} at step "
                    f"{done}; saved {checkpoint}; continue with: ddpm train "
                    f"--resume {run_dir}"
                )
    if ctx.is_main:
        plot_loss(run_dir / "log.csv", run_dir / "loss.png")
    return TrainResult(
        run_dir=run_dir,
        step=cfg.num_steps,
        last_loss=last_loss,
        checkpoint=checkpoint,
        samples=samples,
    )
