"""The training loop: a run folder in, checkpoints, sample grids and CSV logs out.

A run folder holds config.json, checkpoints/, samples/, log.csv, val_loss.csv and loss.png, and
is all a user needs to resume, sample or evaluate. Under torchrun every process runs this loop on
its shard of each global batch; only the main process writes files, and it holds the folder's
lock (ddpm.train.run_lock) for as long as it trains.

A stop request (SIGINT, SIGTERM) is looked at before every step: the step in flight finishes, no
new one starts, a checkpoint of the last finished step is written (without the validation loss,
to stay inside a cluster's grace period) and TrainingStopped says at which step.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from ..builders import build_schedule
from ..checkpoint import Checkpoint
from ..config import RunConfig, from_dict
from ..data import ImageData, InMemoryBatches, check_labels, load_dataset
from ..errors import DDPMError
from ..generate import generate
from ..loaded_run import LoadedRun
from ..machine import machine_info
from ..precision import resolve_precision
from ..sessions import record_session
from ..viz import plot_loss, save_grid
from . import board, distributed, quality, run_files
from .budget import TimeBudget, TrainingClock
from .log_window import LogWindow
from .quality import BEST_FID, QualityMonitor
from .run_lock import RunLock
from .side_outputs import SideOutputs
from .signals import StopRequest, TrainingStopped
from .step import Trainer, check_lr_continuity, lr_at, make_trainer
from .validation import validation_loss

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainResult:
    run_dir: Path
    step: int
    last_loss: float
    checkpoint: Path | None
    samples: Path | None


def train(
    config: RunConfig,
    run_dir: str | Path,
    *,
    device: torch.device | str = "auto",
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    command: Sequence[str] | None = None,
) -> TrainResult:
    """Train (or, with resume=True, continue) the run in `run_dir` up to config.train.num_steps.

    A new run needs an empty or new folder (overwrite=True deletes an earlier run's files first);
    resume=True continues from the newest good checkpoint, or from step 0 when the run was
    stopped before its first one, and a run whose last checkpoint is final only gets its missing
    final sample grid and loss plot. Under torchrun, joins the process group (gloo on CPU, NCCL
    on GPU) and trains with DDP; train.batch_size is per process. `command`: the command line
    that started this session, recorded in RUN/sessions.jsonl. The caller's global RNG state
    is restored afterwards; inside, it is seeded with train.seed (weight initialisation). SIGINT
    or SIGTERM finishes the step in flight, saves a checkpoint and raises TrainingStopped.
    """
    run_dir, cfg = Path(run_dir), config.train
    if cfg.tensorboard:
        board.check_available()  # before anything is written
    ctx = distributed.setup(device if isinstance(device, str) else device.type)
    try:
        with contextlib.ExitStack() as held:
            distributed.on_main(ctx, lambda: _claim(held, run_dir, resume, overwrite))
            bar = progress and ctx.is_main  # decoding a large folder the first time
            data = load_dataset(config.data, "train", progress=bar)
            check_labels(data, config.model.num_classes)
            val_data = load_dataset(config.data, "test", progress=bar) if cfg.val_images else None
            with torch.random.fork_rng(devices=[ctx.device] if ctx.device.type == "cuda" else []):
                torch.manual_seed(cfg.seed)
                trainer = make_trainer(config, ctx.device, rank=ctx.rank, world_size=ctx.world_size)
                checkpoint = run_files.latest_checkpoint(run_dir) if resume else None
                start = _restore(trainer, checkpoint, config, run_dir)
                distributed.on_main(
                    ctx, lambda: _open_files(run_dir, config, start, ctx=ctx, command=command)
                )
                spent = (checkpoint.train_seconds or 0.0) if checkpoint is not None else 0.0
                budget = (
                    TimeBudget.start(cfg.time_budget, spent=spent, step=start)
                    if cfg.time_budget
                    else None
                )
                if start >= cfg.num_steps or (budget is not None and budget.exhausted(start)):
                    return _finish(trainer, config, run_dir, checkpoint, ctx=ctx)
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
                    spent_before=spent,
                    budget=budget,
                    progress=progress and ctx.is_main,
                )
    finally:
        distributed.teardown(ctx)


def _claim(held: contextlib.ExitStack, run_dir: Path, resume: bool, overwrite: bool) -> None:
    """Main process: lock the folder for this process's lifetime, then check it is ours to write
    (under the lock, so --overwrite never deletes the files of a run that is training)."""
    if run_dir.exists() and not run_dir.is_dir():
        raise DDPMError(f"{run_dir} is a file, not a run folder")
    held.enter_context(RunLock(run_dir))
    if not resume:
        run_files.claim_new_run(run_dir, overwrite=overwrite)


def _restore(
    trainer: Trainer, checkpoint: Checkpoint | None, config: RunConfig, run_dir: Path
) -> int:
    if checkpoint is None:
        if (run_dir / "config.json").exists():
            log.warning("%s has no checkpoint yet: training from step 0", run_dir)
        return 0
    start = run_files.restore(trainer, checkpoint)
    check_lr_continuity(from_dict(checkpoint.config).train, config.train, start)
    return start


def _tick(
    budget: TimeBudget, clock: TrainingClock, ctx: distributed.Distributed, done: int, at_log: bool
) -> None:
    """Anchor the budget on the clock: one process at every step; under DDP at log lines, on the
    main process's reading, so every process computes the same learning rate and end step."""
    if not ctx.active:
        budget.anchor(done, clock())
    elif at_log:
        budget.anchor(done, distributed.from_main(ctx, clock()))


def _open_files(
    run_dir: Path,
    config: RunConfig,
    start: int,
    *,
    ctx: distributed.Distributed,
    command: Sequence[str] | None,
) -> None:
    run_files.write_config(run_dir, config)
    precision = resolve_precision(config.train.precision, ctx.device)
    record_session(run_dir, command=command, start_step=start, machine=machine_info(ctx.device),
                   precision=precision, world_size=ctx.world_size)  # fmt: skip
    run_files.clean_temporaries(run_dir)
    run_files.open_csv(run_dir / "log.csv", run_files.LOG_FIELDS, start)
    run_files.open_csv(run_dir / "val_loss.csv", run_files.VAL_FIELDS, start)
    quality.open_log(run_dir, start)


def _finish(
    trainer: Trainer,
    config: RunConfig,
    run_dir: Path,
    checkpoint: Checkpoint | None,
    *,
    ctx: distributed.Distributed,
) -> TrainResult:
    """A resumed run at (or past) train.num_steps: write what a kill after the final checkpoint
    left out (the final grid, loss.png), or say how to train further."""
    step, cfg = checkpoint.step if checkpoint else 0, config.train
    grid = _grid_path(run_dir, step)
    missing = [p for p in (grid, run_dir / "loss.png") if not p.exists()]
    if step < cfg.num_steps and not missing:
        raise DDPMError(
            f"the run has spent its train.time_budget={cfg.time_budget} at step {step} (its "
            f"learning rate has decayed); for longer training start a new run with a longer budget"
        )
    if step > cfg.num_steps or not missing:
        raise DDPMError(
            f"the run is already at step {step} >= train.num_steps={cfg.num_steps}; "
            f"raise it with --set train.num_steps=N"
        )
    if ctx.is_main:
        log.warning("finishing the run at step %d: writing %s", step, ", ".join(map(str, missing)))
        if not grid.exists():
            _sample_grid(trainer, config, run_dir, step, stop=None)
        plot_loss(run_dir / "log.csv", run_dir / "loss.png")
    return TrainResult(
        run_dir=run_dir,
        step=step,
        last_loss=_last_logged_loss(run_dir),
        checkpoint=checkpoint.path if checkpoint else None,
        samples=grid if grid.exists() else None,
    )


def _last_logged_loss(run_dir: Path) -> float:
    rows = run_files.read_rows(run_dir / "log.csv", run_files.LOG_FIELDS, start=2**62)
    return float(rows[-1]["loss"]) if rows else math.nan


def _grid_path(run_dir: Path, step: int) -> Path:
    return run_dir / "samples" / f"step_{step:08d}.png"


class _SamplingStopped(Exception):
    """Raised from the sampler's callback to abandon sampling when a stop is requested."""


def _interrupt_on(stop: StopRequest | None) -> Callable[[object], None]:
    """A sampler callback that abandons sampling (grids, evaluations) once a stop is requested,
    so a pre-empted run does not spend its grace period drawing pictures."""

    def interrupt(_: object) -> None:
        if stop is not None and stop.requested:
            raise _SamplingStopped

    return interrupt


def _sample_grid(
    trainer: Trainer, config: RunConfig, run_dir: Path, step: int, *, stop: StopRequest | None
) -> Path | None:
    """The EMA's sample grid at a step; None if a stop request arrives meanwhile."""
    try:
        images = generate(
            LoadedRun(trainer.ema, build_schedule(config), config, step),
            n=config.train.num_sample_images,
            seed=config.train.seed,
            callback=_interrupt_on(stop),
            progress=False,
        )
    except _SamplingStopped:
        assert stop is not None  # only a stop request raises it
        log.warning("sample grid at step %d skipped: %s requested a stop", step, stop.requested)
        return None
    return save_grid(images, _grid_path(run_dir, step))


def _checkpoint(
    trainer: Trainer,
    config: RunConfig,
    run_dir: Path,
    step: int,
    *,
    ctx: distributed.Distributed,
    val_data: ImageData | None,
    best: list[float],
    train_seconds: float | None,
    outputs: SideOutputs | None,
) -> Path:
    """Save the step's checkpoint; with validation data, log the EMA's validation loss, record it
    in the checkpoint and also save best.safetensors when it is the lowest so far."""
    loss, is_best = None, False
    if val_data is not None and ctx.is_main:
        loss = validation_loss(trainer.ema, val_data, config, num_images=config.train.val_images)
        run_files.append_csv(run_dir / "val_loss.csv", [step, f"{loss:.6g}"])
        if outputs is not None:
            outputs.validated(step, loss)
        is_best = math.isfinite(loss) and loss < best[0]
        best[0] = min(best[0], loss)
    return run_files.save(
        trainer,
        config,
        run_dir,
        step,
        write=ctx.is_main,
        val_loss=loss,
        train_seconds=train_seconds,
        best=is_best,
    )


def _measure_quality(
    monitor: QualityMonitor,
    trainer: Trainer,
    config: RunConfig,
    run_dir: Path,
    step: int,
    *,
    seconds: float,
    stop: StopRequest,
) -> None:
    """One point of the quality curve (abandoned on a stop request); the lowest FID's weights go
    to best_fid.safetensors."""
    try:
        fid = monitor.evaluate(trainer.ema, step, seconds, callback=_interrupt_on(stop))
    except _SamplingStopped:
        log.warning("evaluation at step %d skipped: %s requested a stop", step, stop.requested)
        return
    if fid is not None and fid < monitor.best_fid:
        monitor.best_fid = fid
        run_files.save(trainer, config, run_dir, step, write=True, train_seconds=seconds,
                       name=BEST_FID)  # fmt: skip


def _loop(
    trainer: Trainer,
    batches: InMemoryBatches,
    config: RunConfig,
    run_dir: Path,
    *,
    ctx: distributed.Distributed,
    val_data: ImageData | None,
    start: int,
    spent_before: float,
    budget: TimeBudget | None,
    progress: bool,
) -> TrainResult:
    cfg = config.train
    monitor = distributed.on_main(
        ctx,
        lambda: QualityMonitor.create(config, run_dir, start=start, seconds=spent_before,
                                      world_size=ctx.world_size, device=ctx.device),
    )  # fmt: skip
    outputs = distributed.on_main(ctx, lambda: SideOutputs.create(config, run_dir, start))
    clock = TrainingClock(spent_before)  # after the monitor's reference features: not training
    window = LogWindow(ctx, start, cfg.max_nonfinite_steps)
    best = [run_files.best_val_loss(run_dir, start) if ctx.is_main else math.inf]
    last_loss, checkpoint, samples, saved_at, done = math.nan, None, None, start, start

    def spent(n: int) -> float:
        """Training seconds to record at step n: under DDP with a budget, the agreed reading."""
        return budget.spent(n) if budget is not None and ctx.active else clock()

    vote = distributed.StopVote(ctx)
    bar = tqdm(total=cfg.num_steps, initial=start, desc="train", disable=not progress, unit="step")
    closing = contextlib.closing(outputs) if outputs is not None else contextlib.nullcontext()
    with StopRequest() as stop, bar, contextlib.closing(vote), closing:
        for step in range(start, cfg.num_steps):
            if vote(stop.requested is not None):  # before a step: none starts after a signal
                if window.start < step:
                    window.flush(step, cfg, run_dir)
                if step > saved_at:
                    checkpoint = run_files.save(
                        trainer, config, run_dir, step, write=ctx.is_main, train_seconds=spent(step)
                    )
                saved = f"saved {checkpoint}" if step > saved_at else "nothing new to save"
                raise TrainingStopped(
                    f"stopped by {stop.requested or 'another process'} at step {step}; "
                    f"{saved}; continue with: ddpm train --resume {run_dir}"
                )
            lr = lr_at(step, cfg, fraction=budget.fraction(step) if budget else None)
            window.add(step, *trainer.step(step, *batches.batch(step), lr=lr), lr=lr)
            bar.update(1)
            done, at_log = step + 1, (step + 1) % cfg.log_every == 0
            # read before this step's checkpoint and grid, whose time the next row counts
            trained = clock() if monitor is not None else 0.0
            if budget is not None:
                _tick(budget, clock, ctx, done, at_log)
            out_of_time = budget is not None and budget.exhausted(done)
            last = done == cfg.num_steps or out_of_time
            if at_log or last:
                last_loss, rate = window.flush(done, cfg, run_dir)
                bar.set_postfix(loss=f"{last_loss:.4f}", img_s=f"{rate:.0f}")
                if outputs is not None:
                    outputs.logged(done, loss=last_loss, images_per_s=rate, lr=window.lr)
            if done % cfg.checkpoint_every == 0 or last:
                checkpoint = _checkpoint(trainer, config, run_dir, done, ctx=ctx,
                                         val_data=val_data, best=best, train_seconds=spent(done),
                                         outputs=outputs)  # fmt: skip
                saved_at = done
            if ctx.is_main and (done % cfg.sample_every == 0 or last):
                samples = _sample_grid(trainer, config, run_dir, done, stop=stop)
                if outputs is not None and samples is not None:
                    outputs.sampled(done, samples)
            if monitor is not None and (monitor.due(done, trained) or last):
                evaluating = time.perf_counter()
                _measure_quality(
                    monitor, trainer, config, run_dir, done, seconds=trained, stop=stop
                )
                if outputs is not None and monitor.last_scores:
                    outputs.scored(done, monitor.last_scores)
                clock.exclude(time.perf_counter() - evaluating)  # not training time
            if outputs is not None and saved_at == done:
                outputs.checkpointed(done)  # after the step's grid and quality point
            if out_of_time:
                log.warning("train.time_budget=%s spent at step %d", cfg.time_budget, done)
                break
    if ctx.is_main:
        plot_loss(run_dir / "log.csv", run_dir / "loss.png")
    return TrainResult(
        run_dir=run_dir,
        step=done,
        last_loss=last_loss,
        checkpoint=checkpoint,
        samples=samples,
    )
