"""What every sampler shares: the per-step record for callbacks, noise from explicit generators,
the dtype x_t is kept in, and the (t, alpha_bar_t, alpha_bar_s) pairs a sampler's loop walks."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from ..schedules import Schedule

Generators = torch.Generator | Sequence[torch.Generator] | None


@dataclass(frozen=True)
class StepInfo:
    """One sampler step: index i of num_steps, timestep t, the current x_t and the predicted x0
    (both [B, C, H, W])."""

    i: int
    num_steps: int
    t: int
    x_t: torch.Tensor
    x0_hat: torch.Tensor


Callback = Callable[[StepInfo], None]
# A conditioning hook `(x_t, t) -> x_t`: rewrites the state before each step's denoiser
# evaluation at timestep t (heun: before its first; its corrector evaluation at the next sigma is
# not hooked, the next step's first is) (inpainting puts a draw of q(x_t | x_0) in the known
# pixels: ddpm.conditioning).
Condition = Callable[[torch.Tensor, int], torch.Tensor]


def randn_like(x: torch.Tensor, generator: Generators) -> torch.Tensor:
    """Standard normal noise shaped like x, contiguous and in x's dtype; with a list of
    generators, row i comes from generator i (so image i's noise does not depend on the batch)."""
    if generator is None or isinstance(generator, torch.Generator):
        return torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    if len(generator) != x.shape[0]:
        raise ValueError(f"{len(generator)} generators for a batch of {x.shape[0]}")
    rows = [
        torch.randn(x.shape[1:], generator=g, device=g.device, dtype=x.dtype) for g in generator
    ]
    return torch.stack(rows).to(x.device)


def initial_state(x_T: torch.Tensor) -> torch.Tensor:
    """x_T in the dtype a sampler keeps x_t in: x_T's, at least float32 (float64 stays float64).
    The samplers never write into it, so the caller's x_T is not copied and stays unchanged."""
    return x_T.to(torch.promote_types(x_T.dtype, torch.float32))


def timestep_batch(x: torch.Tensor, t: int) -> torch.Tensor:
    """The timestep t as the LongTensor [B] a denoiser takes for x [B, ...]."""
    return torch.full((x.shape[0],), t, dtype=torch.long, device=x.device)


def alpha_bar_pairs(schedule: Schedule, timesteps: Sequence[int]) -> list[tuple[int, float, float]]:
    """(t, ab_t, ab_s) per step, with s the next timestep and ab_s = 1 after the last one (the
    step to x0), as Python floats from the float64 table."""
    ab: list[float] = schedule.alpha_bar.tolist()
    following = [ab[s] for s in timesteps[1:]] + [1.0]
    return [(t, ab[t], ab_s) for t, ab_s in zip(timesteps, following)]
