"""Karras et al. 2022 ("Elucidating the Design Space of Diffusion-Based Generative Models"):
Heun's second-order method on the probability-flow ODE, run on a VP schedule."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..denoiser import Denoiser
from ..schedules import Schedule
from .common import Callback, Condition, Generators, StepInfo, initial_state, timestep_batch


def sample_heun(
    denoiser: Denoiser,
    x_T: torch.Tensor,
    schedule: Schedule,
    timesteps: Sequence[int],
    *,
    generator: Generators = None,
    callback: Callback | None = None,
    condition: Condition | None = None,
) -> torch.Tensor:
    """Karras et al. 2022, Algorithm 1 (deterministic, S_churn = 0): Heun's method on the
    probability-flow ODE dx/dsigma = (x - D(x; sigma)) / sigma (Eq. 3 with sigma(t) = t).

    The VP model is written in their parametrisation: sigma_t = sqrt((1 - ab_t) / ab_t) and
    x = x_t / sqrt(ab_t); D(x; sigma_t) = denoiser(sqrt(ab_t) x, t). The sigma grid is the
    schedule's sigmas at `timesteps` (so the network only ever sees the discrete timesteps it was
    trained on) followed by sigma = 0; Karras et al.'s rho = 7 grid is `karras_timesteps`, which
    `generate` uses for heun by default. Each step is an Euler step (equal to DDIM's) corrected with
    a second evaluation at the next sigma, except the last, an Euler step to sigma = 0: K timesteps,
    2K - 1 NFE. `generator` is accepted and unused. The trapezoid step needs moderate ratios
    sigma_i / sigma_{i+1}: a grid whose first step crosses orders of magnitude (uniform spacing on
    the cosine schedule, sigma_{T-1} ~ 2e4) is inaccurate; the Karras grid avoids that.
    x_T [B, C, H, W] -> x0 [B, C, H, W].
    """
    ab: list[float] = schedule.alpha_bar.tolist()
    sigmas: list[float] = [((1 - ab[t]) / ab[t]) ** 0.5 for t in timesteps] + [0.0]
    scales: list[float] = [ab[t] ** 0.5 for t in timesteps]  # x_t = scale * x

    def D(x: torch.Tensor, i: int) -> torch.Tensor:
        return denoiser(x * scales[i], timestep_batch(x, timesteps[i]))

    x = initial_state(x_T) / scales[0]
    for i, (t, sigma, sigma_next) in enumerate(zip(timesteps, sigmas, sigmas[1:])):
        if condition is not None:  # written as a difference: pixels it leaves alone stay exact
            x_t = x * scales[i]
            x = x + (condition(x_t, t) - x_t) / scales[i]
        x0_hat = D(x, i)
        if callback is not None:
            callback(StepInfo(i, len(timesteps), t, x * scales[i], x0_hat))
        # Euler: x + (sigma_next - sigma) d with the slope d = (x - x0_hat) / sigma, written so
        # that sigma_next = 0 gives x0_hat exactly (x can be ~1e4 on the first step, and float32
        # would cancel badly)
        x_next = x0_hat + sigma_next / sigma * (x - x0_hat)
        if sigma_next > 0:  # Heun: the trapezoid rule with the slope at x_next too
            d, d_next = (x - x0_hat) / sigma, (x_next - D(x_next, i + 1)) / sigma_next
            x_next = x + (sigma_next - sigma) * (d + d_next) / 2
        x = x_next
    return x
