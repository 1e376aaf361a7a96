"""The report's progressive-denoising strip: 4 images from the newest checkpoint with the run's
own sampler (config.sample), x_t and the predicted x0 at 10 steps each, saved as
RUN/progressive/step_NNNNNNNN.png. Only `ddpm report` samples; the refresh during training
reuses the newest strip (ddpm.report.collect.newest_strip)."""

from __future__ import annotations

from pathlib import Path

import torch

from ..checkpoint import list_checkpoints
from ..generate import generate, sample_config
from ..loaded_run import load_run
from .collect import STRIPS

NUM_IMAGES, NUM_FRAMES, SEED = 4, 10, 0


def strip_path(run_dir: Path, step: int) -> Path:
    return run_dir / STRIPS / f"step_{step:08d}.png"


def make_strip(run_dir: str | Path, *, device: torch.device | str = "cpu") -> Path | None:
    """Sample the strip of the newest good checkpoint (kept if that step's strip exists);
    None when the run has no checkpoint yet. A damaged newest checkpoint is a DDPMError."""
    from ..viz import TrajectoryRecorder, save_progressive

    run_dir = Path(run_dir)
    if not list_checkpoints(run_dir / "checkpoints"):
        return None
    run = load_run(run_dir, device=device)
    path = strip_path(run_dir, run.step)
    if path.is_file():
        return path
    sample = sample_config(run.config)
    recorder = TrajectoryRecorder(sample.steps, num_frames=NUM_FRAMES, num_images=NUM_IMAGES)
    images = generate(run, sample, n=NUM_IMAGES, seed=SEED, callback=recorder, progress=False)
    return save_progressive(recorder, images, path)
