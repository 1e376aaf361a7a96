"""DDPM's ancestral sampler (Ho et al. 2020, Algorithm 2), respaced, with a fixed or learned
reverse variance."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch

from ..denoiser import Denoiser, VarianceDenoiser
from ..diffusion import q_posterior
from ..learned_variance import first_posterior_variance, learned_range_log_variance
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
from .resampling import forward_jump, repaint_walk, walk_evaluations

VarianceType = Literal["beta_tilde", "beta", "learned_range"]


def sample_ancestral(
    denoiser: Denoiser | VarianceDenoiser,
    x_T: torch.Tensor,
    schedule: Schedule,
    timesteps: Sequence[int],
    *,
    variance: VarianceType = "beta_tilde",
    generator: Generators = None,
    callback: Callback | None = None,
    condition: Condition | None = None,
    resample: int = 1,
    jump: int = 1,
) -> torch.Tensor:
    """DDPM ancestral sampling (Ho et al. 2020, Algorithm 2), respaced to any descending
    subsequence of timesteps (Nichol & Dhariwal 2021, Sec. 4). From t to the next timestep s:
        x_s = mu~(x0_hat, x_t) + sigma z,   z ~ N(0, I)
    with mu~ the posterior mean of Ho et al.'s Eq. 7 on the pair (s, t) (ddpm.diffusion.q_posterior)
    and sigma^2 the posterior variance beta~ (default), the step's beta' = 1 - ab_t / ab_s, or
    with variance="learned_range" the network's own exp(v log beta' + (1 - v) log beta~')
    (Nichol & Dhariwal 2021, Eq. 15, ddpm.learned_variance), for which `denoiser` is a
    VarianceDenoiser `(x_t, t) -> (x0_hat, v)` (ddpm.denoiser.make_variance_denoiser). No noise
    is added on the last step, to x0. x_T [B, C, H, W] -> x0 [B, C, H, W].

    resample > 1 walks RePaint's schedule (ddpm.samplers.resampling.repaint_walk): every `jump`
    steps it goes back `jump` timesteps through the forward process, resample - 1 times, so a
    `condition` hook and the generated pixels can agree; callbacks then count evaluations.
    """
    x = initial_state(x_T)
    learned = variance == "learned_range"
    first_variance = (
        float(first_posterior_variance(schedule.alpha_bar.double())) if learned else 0.0
    )
    pairs = alpha_bar_pairs(schedule, timesteps)
    walk = repaint_walk(len(timesteps), jump=jump, resample=resample)
    num_evals, i = walk_evaluations(walk), 0
    for here, there in zip(walk, walk[1:]):
        if there < here:  # RePaint: back up to the noisier state `there`
            x = forward_jump(x, pairs[here][1], pairs[there][1], generator)
            continue
        t, ab_t, ab_s = pairs[here]
        x = x if condition is None else condition(x, t)
        if learned:
            x0_hat, v = denoiser(x, timestep_batch(x, t))
        else:
            x0_hat = denoiser(x, timestep_batch(x, t))
        if callback is not None:
            callback(StepInfo(i, num_evals, t, x, x0_hat))
        i += 1
        mean, beta_tilde = q_posterior(x0_hat, x, ab_t, ab_s)
        if ab_s == 1.0:
            x = mean
            continue
        sigma: torch.Tensor | float
        if learned:
            log_var = learned_range_log_variance(v, ab_t, ab_s, first_variance=first_variance)
            sigma = torch.exp(0.5 * log_var)
        else:
            sigma = (beta_tilde if variance == "beta_tilde" else 1 - ab_t / ab_s) ** 0.5
        x = mean + sigma * randn_like(x, generator)
    return x
