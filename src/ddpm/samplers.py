"""Samplers: small stateless functions over a denoiser `(x_t, t) -> x0_hat`.

Each takes the starting noise x_T, the schedule and the descending timesteps to visit, and returns
x0. Randomness comes only from `generator` (one torch.Generator, or one per image so that image i
depends only on its own generator, whatever the batch size). A `callback` receives a `StepInfo`
per step, for progressive-denoising pictures. Add a sampler: one function and one `SAMPLERS` entry.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import torch

from .denoiser import Denoiser
from .diffusion import eps_from_x0, q_posterior
from .schedules import Schedule

Generators = torch.Generator | Sequence[torch.Generator] | None
VarianceType = Literal["beta_tilde", "beta"]


@dataclass(frozen=True)
class StepInfo:
    """One sampler step: index i of num_steps, timestep t, the current x_t and the predicted x0."""

    i: int
    num_steps: int
    t: int
    x_t: torch.Tensor
    x0_hat: torch.Tensor


Callback = Callable[[StepInfo], None]


def randn_like(x: torch.Tensor, generator: Generators) -> torch.Tensor:
    """Standard normal noise shaped like x; with a list of generators, row i comes from generator i."""
    if generator is None or isinstance(generator, torch.Generator):
        return torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    if len(generator) != x.shape[0]:
        raise ValueError(f"{len(generator)} generators for a batch of {x.shape[0]}")
    rows = [
        torch.randn(x.shape[1:], generator=g, device=g.device, dtype=x.dtype) for g in generator
    ]
    return torch.stack(rows).to(x.device)


def _alpha_bars(schedule: Schedule, timesteps: Sequence[int]) -> list[tuple[int, float, float]]:
    """(t, ab_t, ab_s) per step as Python floats, with ab_s = 1 after the last step."""
    ab = schedule.alpha_bar.tolist()
    following = [ab[s] for s in timesteps[1:]] + [1.0]
    return [(t, ab[t], ab_s) for t, ab_s in zip(timesteps, following)]


def sample_ancestral(
    denoiser: Denoiser,
    x_T: torch.Tensor,
    schedule: Schedule,
    timesteps: Sequence[int],
    *,
    variance: VarianceType = "beta_tilde",
    generator: Generators = None,
    callback: Callback | None = None,
) -> torch.Tensor:
    """DDPM ancestral sampling (Ho et al. 2020, Algorithm 2), respaced to any descending subsequence
    of timesteps (Nichol & Dhariwal 2021, Sec. 4): x_s ~ N(mu~(x0_hat, x_t), sigma^2) with sigma^2
    the posterior variance beta~ (default) or the step's beta' = 1 - ab_t / ab_s. No noise is added
    on the last step."""
    x = x_T.float()
    t_batch = torch.empty(x.shape[0], dtype=torch.long, device=x.device)
    for i, (t, ab_t, ab_s) in enumerate(_alpha_bars(schedule, timesteps)):
        x0_hat = denoiser(x, t_batch.fill_(t))
        if callback is not None:
            callback(StepInfo(i, len(timesteps), t, x, x0_hat))
        mean, posterior_var = q_posterior(x0_hat, x, ab_t, ab_s)
        if ab_s == 1.0:
            x = mean
            continue
        var = posterior_var if variance == "beta_tilde" else 1 - ab_t / ab_s
        x = mean + var**0.5 * randn_like(x, generator)
    return x


def sample_ddim(
    denoiser: Denoiser,
    x_T: torch.Tensor,
    schedule: Schedule,
    timesteps: Sequence[int],
    *,
    eta: float = 0.0,
    generator: Generators = None,
    callback: Callback | None = None,
) -> torch.Tensor:
    """DDIM (Song et al. 2020, Eq. 12): x_s = sqrt(ab_s) x0_hat + sqrt(1 - ab_s - sigma^2) eps_hat
    + sigma z, with sigma = eta sqrt((1 - ab_s)/(1 - ab_t)) sqrt(1 - ab_t/ab_s) (Eq. 16).
    eta = 0 is deterministic; eta = 1 equals the ancestral step with beta~."""
    if not 0.0 <= eta <= 1.0:
        raise ValueError(f"eta must be in [0, 1], got {eta}")
    x = x_T.float()
    t_batch = torch.empty(x.shape[0], dtype=torch.long, device=x.device)
    for i, (t, ab_t, ab_s) in enumerate(_alpha_bars(schedule, timesteps)):
        x0_hat = denoiser(x, t_batch.fill_(t))
        if callback is not None:
            callback(StepInfo(i, len(timesteps), t, x, x0_hat))
        eps_hat = eps_from_x0(x, x0_hat, ab_t)
        sigma = eta * ((1 - ab_s) / (1 - ab_t) * (1 - ab_t / ab_s)) ** 0.5
        x = ab_s**0.5 * x0_hat + max(1 - ab_s - sigma**2, 0.0) ** 0.5 * eps_hat
        if sigma > 0:
            x = x + sigma * randn_like(x, generator)
    return x


SAMPLERS: dict[str, Callable[..., torch.Tensor]] = {
    "ddpm": sample_ancestral,
    "ddim": sample_ddim,
}
