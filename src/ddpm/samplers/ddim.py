"""DDIM (Song et al. 2020): deterministic at eta = 0, DDPM's ancestral step at eta = 1."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..denoiser import Denoiser
from ..diffusion import eps_from_x0
from ..schedules import Schedule
from .common import (
    Callback,
    Condition,
    Generators,
    StepInfo,
    alpha_bar_pairs,
    initial_state,
    randn_like,
    timestep_batch,
)


def sample_ddim(
    denoiser: Denoiser,
    x_T: torch.Tensor,
    schedule: Schedule,
    timesteps: Sequence[int],
    *,
    eta: float = 0.0,
    generator: Generators = None,
    callback: Callback | None = None,
    condition: Condition | None = None,
) -> torch.Tensor:
    """DDIM (Song et al. 2020, Eq. 12). From t to the next timestep s, with eps_hat the noise
    that x0_hat implies and z ~ N(0, I):
        x_s = sqrt(ab_s) x0_hat + sqrt(1 - ab_s - sigma^2) eps_hat + sigma z
        sigma = eta sqrt((1 - ab_s) / (1 - ab_t)) sqrt(1 - ab_t / ab_s)          (Eq. 16)
    eta = 0 is deterministic (the probability-flow ODE's Euler step); eta = 1 is the ancestral
    step with beta~. x_T [B, C, H, W] -> x0 [B, C, H, W].

    The step is written in (x0_hat, eps_hat), as Eq. 12 is, not as x_s = a x_t + b x0_hat: that
    form would carry x_t's rounding from step to step, amplified by up to 1/sqrt(ab) ~ 160.
    """
    if not 0.0 <= eta <= 1.0:
        raise ValueError(f"eta must be in [0, 1], got {eta}")
    x = initial_state(x_T)
    for i, (t, ab_t, ab_s) in enumerate(alpha_bar_pairs(schedule, timesteps)):
        x = x if condition is None else condition(x, t)
        x0_hat = denoiser(x, timestep_batch(x, t))
        if callback is not None:
            callback(StepInfo(i, len(timesteps), t, x, x0_hat))
        eps_hat = eps_from_x0(x, x0_hat, ab_t)
        sigma = eta * ((1 - ab_s) / (1 - ab_t) * (1 - ab_t / ab_s)) ** 0.5
        c = max(1 - ab_s - sigma**2, 0.0) ** 0.5
        z = randn_like(x, generator) if sigma > 0 else 0.0  # eta = 0 draws nothing
        x = x0_hat * ab_s**0.5 + eps_hat * c + sigma * z
    return x
