"""Using a trained run on existing images: `inpaint` (fill what a mask leaves out) and `edit`
(SDEdit image-to-image), both generate() with a Conditioning (ddpm.conditioning), so every
sampler, guidance, per-image seeds, batching, precision and compile work as in `ddpm sample`.

Results are image-major: input image i's n results are rows i n ... i n + n - 1, and result k
has the seeds of image k of `generate(run, n=N n, seed=seed)`.
"""

from __future__ import annotations

import torch

from .conditioning import Editing, Inpainting, edit_timestep
from .config import SampleConfig
from .errors import DDPMError
from .generate import generate, sample_config
from .loaded_run import LoadedRun


def _check_images(run: LoadedRun, images: torch.Tensor, what: str = "images") -> None:
    data = run.config.data
    expected = (data.channels, data.image_size, data.image_size)
    if images.ndim != 4 or tuple(images.shape[1:]) != expected:
        raise DDPMError(
            f"{what} must be [N, {', '.join(map(str, expected))}] for this run, got "
            f"{list(images.shape)}"
        )
    if images.shape[0] < 1:
        raise DDPMError(f"no {what}")
    if not torch.isfinite(images).all() or images.abs().max() > 1:
        raise DDPMError(f"{what} must be finite and in [-1, 1] (ddpm.from_uint8 makes them so)")


def _repeat(x: torch.Tensor, n: int) -> torch.Tensor:
    return x.repeat_interleave(n, dim=0)


def inpaint(
    run: LoadedRun,
    images: torch.Tensor,
    keep: torch.Tensor,
    *,
    n: int = 1,
    seed: int = 0,
    sample: SampleConfig | None = None,
    resample: int = 1,
    jump: int = 10,
    labels: torch.Tensor | None = None,
    guidance: float | None = None,
    progress: bool = True,
) -> torch.Tensor:
    """Fill the pixels `keep` leaves out, n times per image -> float32 [N n, C, H, W] in [-1, 1].

    images: [N, C, H, W] in [-1, 1] at the run's size; keep: bool [N or 1, 1 or C, H, W], True
    where the pixel is kept (a mask's white). The kept pixels are the input's exactly. Every
    sampler works by replacement (the known pixels of x_t drawn from q(x_t | x_0) before each
    step); resample > 1 adds RePaint's resampling (the ddpm sampler only; resample - 1 jumps back
    of `jump` timesteps at every jump-th step; about resample x the evaluations). labels: [N n]
    for a class-conditional run, guided by `guidance` (None: sample.guidance). An all-keep mask
    returns the images without sampling; an all-generate one gives exactly `generate(run, sample,
    n=N n, seed=seed)`, with or without resampling (nothing to resample towards).
    """
    _check_images(run, images)
    if keep.dtype != torch.bool or keep.ndim != 4 or keep.shape[0] not in (1, images.shape[0]):
        raise DDPMError(f"keep must be a bool [N or 1, 1 or C, H, W] mask, got {keep.dtype} "
                        f"{list(keep.shape)}")  # fmt: skip
    if keep.shape[2:] != images.shape[2:] or keep.shape[1] not in (1, images.shape[1]):
        raise DDPMError(f"mask {list(keep.shape)} and images {list(images.shape)} differ in size")
    if n < 1:
        raise DDPMError(f"n must be >= 1, got {n}")
    keep = keep.expand(images.shape[0], *keep.shape[1:])
    known = _repeat(images.float(), n)
    if bool(keep.all()):  # nothing to generate
        return known
    sample = sample_config(run.config) if sample is None else sample
    if not bool(keep.any()):  # nothing kept: plain sampling (RePaint would only add noise)
        return generate(
            run, sample, n=known.shape[0], seed=seed, labels=labels, guidance=guidance,
            progress=progress,
        )  # fmt: skip
    conditioning = Inpainting(known, _repeat(keep, n), resample=resample, jump=jump)
    return generate(
        run, sample, n=known.shape[0], seed=seed, labels=labels, guidance=guidance,
        progress=progress, conditioning=conditioning,
    )  # fmt: skip


def edit(
    run: LoadedRun,
    images: torch.Tensor,
    *,
    strength: float,
    n: int = 1,
    seed: int = 0,
    sample: SampleConfig | None = None,
    labels: torch.Tensor | None = None,
    guidance: float | None = None,
    progress: bool = True,
) -> torch.Tensor:
    """SDEdit (Meng et al. 2022): n variations per image -> float32 [N n, C, H, W] in [-1, 1].

    Each image is noised to timestep round(strength T) - 1 with its result's seeded noise and
    denoised by the sampler in sample.steps steps spread from there to 0 (ddpm.conditioning.
    Editing): strength 0 returns the images, 1 ignores them (exactly `generate` with the same
    seed), in between keeps more of the image's layout the lower it is. labels: [N n] for a
    class-conditional run (guide the edit towards a class)."""
    _check_images(run, images)
    if n < 1:
        raise DDPMError(f"n must be >= 1, got {n}")
    # refuses a strength outside [0, 1]; -1 below 1/T: no noise, nothing to denoise
    start = edit_timestep(run.schedule, strength)
    repeated = _repeat(images.float(), n)
    if start < 0:
        return repeated
    sample = sample_config(run.config) if sample is None else sample
    return generate(
        run, sample, n=repeated.shape[0], seed=seed, labels=labels, guidance=guidance,
        progress=progress, conditioning=Editing(repeated, strength),
    )  # fmt: skip
