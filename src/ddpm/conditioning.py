"""Conditioning an unconditional model at sampling time: inpainting and image-to-image editing.

Both are `Conditioning`s that `ddpm.generate.generate` applies around any sampler, through the
samplers' `condition` hook, their starting state and their timesteps, never a copy of a sampler:

- `Inpainting` (keep some pixels, generate the rest): before every denoiser evaluation at t the
  known pixels of x_t are replaced by a fresh draw of q(x_t | x_0) (the replacement method of Song
  et al. 2021, Sec. 5, "Score-Based Generative Modeling through SDEs"), and the final image takes
  them exactly. With resample > 1 the ancestral sampler also walks RePaint's schedule (Lugmayr et
  al. 2022), which is what makes the generated pixels agree with the kept ones: replacement alone
  is biased (measured in tests/test_conditioning_gaussian.py and docs/editing.md).
- `Editing` (SDEdit, Meng et al. 2022): the image is noised to the timestep that `strength`
  names, t = round(strength T) - 1, and the sampler runs its `steps` from there down to 0;
  strength 1 starts from the noise alone (exactly `ddpm sample`), strength 0 returns the image.

Tensors are float in [-1, 1], [N, C, H, W], one row per output image (an input image asked for
n results appears n times); `rows` slices a batch of them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import torch

from .diffusion import q_sample
from .errors import DDPMError
from .samplers import SAMPLERS, Callback, Condition, Generators, randn_like
from .schedules import Schedule, Spacing, sampling_timesteps


class Conditioning(Protocol):
    """How generate() conditions its samples; rows are output images (see the module)."""

    @property
    def num_images(self) -> int: ...

    def timesteps(self, schedule: Schedule, steps: int, spacing: Spacing) -> list[int]:
        """The descending timesteps the sampler visits."""
        ...

    def start(self, x_T: torch.Tensor, rows: slice, schedule: Schedule, t: int) -> torch.Tensor:
        """The sampler's starting state at timestep t from the seeded noise x_T of these rows."""
        ...

    def hook(self, rows: slice, schedule: Schedule, generators: Generators) -> Condition | None:
        """The samplers' `condition` for these rows (its noise from `generators`), or None."""
        ...

    def finish(self, x0: torch.Tensor, rows: slice) -> torch.Tensor:
        """The final images of these rows from the sampler's output."""
        ...


def replacement_hook(
    known: torch.Tensor, keep: torch.Tensor, schedule: Schedule, generator: Generators
) -> Condition:
    """`(x_t, t) -> x_t` with the kept pixels replaced by a draw of q(x_t | x_0 = known):
    sqrt(ab_t) known + sqrt(1 - ab_t) z, a fresh z per call. known [B, C, H, W]; keep: bool,
    broadcastable to it (True = keep); the other pixels are returned bit for bit."""
    ab: list[float] = schedule.alpha_bar.tolist()
    placed: dict[tuple[torch.device, torch.dtype], tuple[torch.Tensor, torch.Tensor]] = {}

    def condition(x_t: torch.Tensor, t: int) -> torch.Tensor:
        where = (x_t.device, x_t.dtype)
        if where not in placed:  # moved to the state's device and dtype once, not every step
            placed[where] = known.to(x_t), keep.to(x_t.device)
        x0, kept = placed[where]
        return torch.where(kept, q_sample(x0, randn_like(x_t, generator), ab[t]), x_t)

    return condition


@dataclass(frozen=True)
class Inpainting:
    """Keep the pixels of `known` [N, C, H, W] where `keep` [N, 1 or C, H, W] (bool) is True and
    generate the others; resample > 1 (the ancestral sampler only) walks RePaint's schedule,
    going back `jump` timesteps resample - 1 times at every jump-th step."""

    known: torch.Tensor
    keep: torch.Tensor
    resample: int = 1
    jump: int = 10

    def __post_init__(self) -> None:
        if self.known.ndim != 4 or self.keep.ndim != 4:
            raise ValueError("known and keep must be [N, C, H, W]")
        if self.keep.dtype != torch.bool:
            raise ValueError(f"keep must be a bool tensor, got {self.keep.dtype}")
        if self.keep.shape[0] != self.known.shape[0] or self.keep.shape[2:] != self.known.shape[2:]:
            raise DDPMError(
                f"mask {tuple(self.keep.shape)} and images {tuple(self.known.shape)} differ in size"
            )
        if self.resample < 1 or self.jump < 1:
            raise DDPMError(f"resample and jump must be >= 1, got {self.resample}, {self.jump}")

    @property
    def num_images(self) -> int:
        return int(self.known.shape[0])

    def timesteps(self, schedule: Schedule, steps: int, spacing: Spacing) -> list[int]:
        return sampling_timesteps(schedule, steps, spacing)

    def start(self, x_T: torch.Tensor, rows: slice, schedule: Schedule, t: int) -> torch.Tensor:
        return x_T

    def hook(self, rows: slice, schedule: Schedule, generators: Generators) -> Condition | None:
        keep = self.keep[rows]
        if not bool(keep.any()):  # nothing known: plain sampling, bit for bit
            return None
        return replacement_hook(self.known[rows], keep, schedule, generators)

    def finish(self, x0: torch.Tensor, rows: slice) -> torch.Tensor:
        known = self.known[rows].to(x0)
        return torch.where(self.keep[rows].to(x0.device), known, x0)


def check_strength(strength: float) -> None:
    """DDPMError unless 0 <= strength <= 1 (NaN included)."""
    if not 0.0 <= strength <= 1.0:
        raise DDPMError(f"strength must be in [0, 1], got {strength}")


def edit_timestep(schedule: Schedule, strength: float) -> int:
    """The timestep SDEdit noises to: round(strength T) - 1, -1 (no noise) for small strengths."""
    check_strength(strength)
    return round(strength * schedule.num_timesteps) - 1


@dataclass(frozen=True)
class Editing:
    """SDEdit: noise `images` [N, C, H, W] to edit_timestep(strength) and denoise from there."""

    images: torch.Tensor
    strength: float

    def __post_init__(self) -> None:
        if self.images.ndim != 4:
            raise ValueError("images must be [N, C, H, W]")
        check_strength(self.strength)

    @property
    def num_images(self) -> int:
        return int(self.images.shape[0])

    def timesteps(self, schedule: Schedule, steps: int, spacing: Spacing) -> list[int]:
        """`steps` timesteps (at most top + 1) spaced over 0..top, top = edit_timestep: the grid
        `spacing` makes on the schedule cut at top, so the sampler starts at the noise level the
        image was given."""
        top = edit_timestep(schedule, self.strength)
        if top < 0:
            raise DDPMError("strength is 0: nothing to denoise (the images are the result)")
        cut = Schedule(betas=schedule.betas[: top + 1], alpha_bar=schedule.alpha_bar[: top + 1])
        return sampling_timesteps(cut, min(steps, top + 1), spacing)

    def start(self, x_T: torch.Tensor, rows: slice, schedule: Schedule, t: int) -> torch.Tensor:
        if t == schedule.num_timesteps - 1:  # strength 1: the noise alone, as `ddpm sample`
            return x_T
        images = self.images[rows].to(x_T)
        return q_sample(images, x_T, float(schedule.alpha_bar[t]))

    def hook(self, rows: slice, schedule: Schedule, generators: Generators) -> Condition | None:
        return None

    def finish(self, x0: torch.Tensor, rows: slice) -> torch.Tensor:
        return x0


def sample_conditioned(
    sampler: str,
    denoiser: Callable[..., Any],
    x_T: torch.Tensor,
    schedule: Schedule,
    timesteps: list[int],
    *,
    conditioning: Conditioning | None = None,
    rows: slice = slice(None),
    generator: Generators = None,
    hook_generator: Generators = None,
    callback: Callback | None = None,
    **options: Any,
) -> torch.Tensor:
    """One batch: SAMPLERS[sampler] from the seeded noise x_T [B, C, H, W] over `timesteps`
    (conditioning.timesteps' for a conditioning), conditioned on rows `rows` of `conditioning`
    (its start, hook with noise from hook_generator, and finish) -> x0 [B, C, H, W]. generate()
    runs every batch through this; the closed-form tests run it with an ideal denoiser."""
    condition = None
    if conditioning is not None:
        x_T = conditioning.start(x_T, rows, schedule, timesteps[0])
        condition = conditioning.hook(rows, schedule, hook_generator)
    x0 = SAMPLERS[sampler](
        denoiser, x_T, schedule, timesteps, generator=generator, callback=callback,
        condition=condition, **options,
    )  # fmt: skip
    return x0 if conditioning is None else conditioning.finish(x0, rows)
