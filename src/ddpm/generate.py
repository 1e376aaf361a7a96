"""Generating images from a trained network: batching, per-image seeds, progress, uint8 output."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from .builders import build_model, build_schedule
from .checkpoint import Checkpoint, load_checkpoint, load_latest
from .config import RunConfig, from_dict
from .data import seeded_generator
from .denoiser import make_denoiser
from .errors import DDPMError
from .models import UNet
from .samplers import SAMPLERS, StepInfo
from .schedules import Schedule, timestep_subsequence


@dataclass(frozen=True, eq=False)
class LoadedRun:
    net: UNet
    schedule: Schedule
    config: RunConfig
    step: int


def model_from_checkpoint(
    checkpoint: Checkpoint, *, use_ema: bool, device: torch.device
) -> LoadedRun:
    """Rebuild the network from the config stored in the checkpoint and load its weights."""
    config = from_dict(checkpoint.config)
    net = build_model(config)
    state = checkpoint.state_dict("ema" if use_ema else "model")
    try:
        net.load_state_dict(state)
    except RuntimeError as error:
        first = str(error).splitlines()[0]
        raise DDPMError(
            f"checkpoint {checkpoint.path} does not match its model config ({first})"
        ) from None
    net = net.to(device).eval().requires_grad_(False)
    return LoadedRun(net=net, schedule=build_schedule(config), config=config, step=checkpoint.step)


def load_run(
    run: str | Path, *, use_ema: bool = True, device: torch.device | str = "cpu"
) -> LoadedRun:
    """Load a run folder's newest checkpoint (or a checkpoint file) for sampling."""
    run = Path(run)
    if not run.exists():
        raise DDPMError(f"run folder not found: {run}")
    checkpoint = load_checkpoint(run) if run.is_file() else load_latest(run / "checkpoints")
    return model_from_checkpoint(checkpoint, use_ema=use_ema, device=torch.device(device))


def initial_noise(
    n: int,
    shape: tuple[int, int, int],
    *,
    seed: int,
    start: int = 0,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """x_T for images start..start+n-1 of a seed: image i's noise depends only on (seed, i)."""
    rows = [torch.randn(shape, generator=seeded_generator(seed, start + i)) for i in range(n)]
    return torch.stack(rows).to(device)


@torch.inference_mode()
def generate(
    net: UNet,
    schedule: Schedule,
    config: RunConfig,
    *,
    n: int,
    seed: int = 0,
    sampler: str | None = None,
    steps: int | None = None,
    eta: float | None = None,
    batch_size: int | None = None,
    labels: torch.Tensor | None = None,
    guidance: float = 1.0,
    callback: Callable[[StepInfo], None] | None = None,
    progress: bool = True,
) -> torch.Tensor:
    """Sample n images -> float32 [n, C, H, W] in [-1, 1] on the CPU.

    Image i depends only on (seed, i), not on the batch size: its starting noise and any noise a
    stochastic sampler adds come from generators keyed by (seed, i). Defaults come from config.sample.
    """
    s, d = config.sample, config.diffusion
    sampler, steps = sampler or s.sampler, steps or s.steps
    if sampler not in SAMPLERS:
        raise DDPMError(f"unknown sampler {sampler!r}; known: {', '.join(SAMPLERS)}")
    if n < 1:
        raise DDPMError(f"--n must be >= 1, got {n}")
    timesteps = timestep_subsequence(schedule.num_timesteps, steps, s.spacing)
    options = (
        {"eta": s.eta if eta is None else eta} if sampler == "ddim" else {"variance": d.variance}
    )
    device = next(net.parameters()).device
    shape = (config.data.channels, config.data.image_size, config.data.image_size)
    batch_size = batch_size or s.batch_size
    out = []
    for start in tqdm(range(0, n, batch_size), desc=f"{sampler}-{steps}", disable=not progress):
        count = min(batch_size, n - start)
        batch_labels = labels[start : start + count].to(device) if labels is not None else None
        denoiser = make_denoiser(
            net,
            schedule,
            prediction=d.prediction,
            clip=d.clip_denoised,
            labels=batch_labels,
            null_label=net.null_label,
            guidance=guidance,
        )
        x_T = initial_noise(count, shape, seed=seed, start=start, device=device)
        generators = [seeded_generator(seed, start + i, 1, device=device) for i in range(count)]
        x0 = SAMPLERS[sampler](
            denoiser, x_T, schedule, timesteps, generator=generators, callback=callback, **options
        )
        out.append(x0.clamp(-1, 1).cpu())
    return torch.cat(out)


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """[-1, 1] float -> uint8 [0, 255], rounding to nearest."""
    return ((images.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
