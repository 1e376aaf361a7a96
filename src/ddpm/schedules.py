"""Noise schedules: betas and alpha-bar in float64, and timestep subsequences for fast sampling.

A schedule is fixed by its betas; `alpha_bar[t] = prod_{i<=t} (1 - beta_i)`, with 0-based t
(t = 0 is the first noising step, t = T - 1 the last).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch

from .errors import DDPMError

ScheduleKind = Literal["linear", "cosine", "quadratic", "sigmoid"]
Spacing = Literal["uniform", "quadratic", "trailing", "karras"]
SPACINGS = ("uniform", "quadratic", "trailing", "karras")
MAX_BETA = 0.999  # Nichol & Dhariwal 2021, Sec. 3.2: avoids singularities near t = T


@dataclass(frozen=True, eq=False)
class Schedule:
    """A discrete forward process. `betas` and `alpha_bar` are float64 tensors of shape [T] on CPU."""

    betas: torch.Tensor
    alpha_bar: torch.Tensor

    @property
    def num_timesteps(self) -> int:
        return int(self.betas.shape[0])


def linear_betas(
    num_timesteps: int, beta_start: float = 1e-4, beta_end: float = 0.02
) -> torch.Tensor:
    """Ho et al. 2020: betas linear from 1e-4 to 0.02 at T = 1000, rescaled by 1000/T for other T."""
    scale = 1000.0 / num_timesteps
    return torch.linspace(beta_start * scale, beta_end * scale, num_timesteps, dtype=torch.float64)


def quadratic_betas(
    num_timesteps: int, beta_start: float = 1e-4, beta_end: float = 0.02
) -> torch.Tensor:
    """sqrt(beta) linear between sqrt(beta_start) and sqrt(beta_end), rescaled like `linear_betas`."""
    scale = 1000.0 / num_timesteps
    root = torch.linspace(
        math.sqrt(beta_start * scale),
        math.sqrt(beta_end * scale),
        num_timesteps,
        dtype=torch.float64,
    )
    return root**2


def sigmoid_betas(
    num_timesteps: int, beta_start: float = 1e-4, beta_end: float = 0.02
) -> torch.Tensor:
    """Betas following a sigmoid over [-6, 6] between beta_start and beta_end (Xu et al. 2022, GeoDiff)."""
    scale = 1000.0 / num_timesteps
    ramp = torch.sigmoid(torch.linspace(-6.0, 6.0, num_timesteps, dtype=torch.float64))
    return (ramp * (beta_end - beta_start) + beta_start) * scale


def cosine_betas(num_timesteps: int, s: float = 0.008) -> torch.Tensor:
    """Nichol & Dhariwal 2021, Eq. 17: alpha_bar(t) = f(t)/f(0), f(t) = cos^2(((t/T + s)/(1 + s)) pi/2).

    beta_t = 1 - alpha_bar(t+1)/alpha_bar(t), clipped at 0.999.
    """
    steps = torch.arange(num_timesteps + 1, dtype=torch.float64) / num_timesteps
    f = torch.cos((steps + s) / (1 + s) * math.pi / 2) ** 2
    alpha_bar = f / f[0]
    return (1 - alpha_bar[1:] / alpha_bar[:-1]).clamp(max=MAX_BETA)


def make_schedule(
    kind: ScheduleKind = "linear",
    num_timesteps: int = 1000,
    *,
    beta_start: float = 1e-4,
    beta_end: float = 0.02,
    cosine_s: float = 0.008,
) -> Schedule:
    """Build a schedule by name; alpha_bar is the float64 cumulative product of (1 - beta)."""
    if num_timesteps < 2:
        raise DDPMError(f"diffusion.num_timesteps must be at least 2, got {num_timesteps}")
    if kind == "cosine":
        betas = cosine_betas(num_timesteps, cosine_s)
    elif kind in _BETA_FUNCTIONS:
        if not 0 < beta_start < beta_end < 1:
            raise DDPMError(f"need 0 < beta_start < beta_end < 1, got {beta_start}, {beta_end}")
        betas = _BETA_FUNCTIONS[kind](num_timesteps, beta_start, beta_end)
    else:
        known = ", ".join(sorted([*_BETA_FUNCTIONS, "cosine"]))
        raise DDPMError(f"unknown schedule {kind!r}; known: {known}")
    if float(betas.max()) >= 1:
        raise DDPMError(f"schedule {kind!r} with T={num_timesteps} has a beta >= 1; raise T")
    return Schedule(betas=betas, alpha_bar=torch.cumprod(1 - betas, dim=0))


_BETA_FUNCTIONS = {"linear": linear_betas, "quadratic": quadratic_betas, "sigmoid": sigmoid_betas}


def _distinct_descending(targets: list[int]) -> list[int]:
    """Descending targets (the first T - 1) made K strictly descending timesteps >= 0: a target
    landing on or above the step before moves just below it, and step i stays >= K - 1 - i so the
    rest still fit above 0. Targets already distinct and >= 0 come back unchanged."""
    steps = targets[:1]
    for t in targets[1:]:
        steps.append(min(t, steps[-1] - 1))
    return [max(t, len(targets) - 1 - i) for i, t in enumerate(steps)]


def karras_timesteps(
    schedule: Schedule, num_steps: int, *, rho: float = 7.0, sigma_max: float = 80.0
) -> list[int]:
    """Karras et al. 2022's time discretisation (Eq. 5) snapped to the schedule's timesteps.

    With sigma_t = sqrt((1 - ab_t) / ab_t), the targets are sigma_i = (s_max^(1/rho) + i / (n - 1)
    (s_min^(1/rho) - s_max^(1/rho)))^rho, i = 0..n-1, from s_max = min(sigma_max, sigma_{T-1}) down
    to s_min = sigma_0. Karras et al. use sigma_max = 80 for every model, including discrete
    1000-step ones (their Table 1); the samplers' x_T lives at t = T - 1, so when the schedule's
    sigma_{T-1} is larger (linear: 157; cosine, whose last beta is clipped at 0.999: ~2e4) the
    grid is T - 1 followed by n = K - 1 points from sigma_max; otherwise n = K. Without the cap, a
    cosine grid would spend most steps above sigma = 100, and Heun's trapezoid step across such
    sigma ratios is poor. Each target goes to the timestep nearest in log-sigma, so the network
    only sees trained timesteps; targets landing on one timestep are moved to its neighbours,
    keeping K distinct descending steps from T - 1 (to 0 when K >= 2).
    """
    T, K = schedule.num_timesteps, num_steps
    if not 1 <= K <= T:
        raise DDPMError(
            f"num_steps must be between 1 and the schedule's num_timesteps ({T}), got {K}"
        )
    log_sigma = 0.5 * torch.log((1 - schedule.alpha_bar) / schedule.alpha_bar)
    top = min(float(log_sigma[-1]), math.log(sigma_max))
    capped = top < float(log_sigma[-1])
    n = K - 1 if capped else K
    ramp = (
        torch.linspace(0, 1, n, dtype=torch.float64)
        if n > 1
        else torch.ones(n, dtype=torch.float64)
    )
    hi, lo = math.exp(top / rho), math.exp(float(log_sigma[0]) / rho)
    targets = rho * torch.log(hi + ramp * (lo - hi))  # log sigma_i
    nearest = (targets[:, None] - log_sigma[None, :]).abs().argmin(dim=1).tolist()
    return _distinct_descending([T - 1, *nearest[1 - int(capped) :]])


def sampling_timesteps(
    schedule: Schedule, num_steps: int, spacing: Spacing = "uniform"
) -> list[int]:
    """The K = num_steps distinct descending timesteps a K-step sampler visits, the first always
    T - 1 (the samplers take x_T ~ N(0, I) as the sample at timesteps[0], which only t = T - 1
    matches).

    uniform: K evenly spaced steps from T-1 down to 0 (improved-DDPM respacing).
    quadratic: t_i = c i^2, i = 0..K-1, denser near 0, with c such that the top is T - 1 (Song et
        al. 2020, DDIM, Appendix D.2, pick c so that the top is close to T; their code stops at
        0.8 T, where N(0, I) is not the marginal: cosine alpha_bar_800 = 0.09).
    trailing: T-1, T-1-T/K, ... (Lin et al. 2024), ending at T/K - 1.
    karras: Karras et al. 2022's rho = 7 grid in sigma, snapped to the timesteps
        (`karras_timesteps`).
    K = 1 gives [T - 1] for every spacing. Where rounding lands two targets on one timestep
    (quadratic near 0 for K > sqrt(2T)), the lower one moves down, so K = T gives every step.
    """
    T, K = schedule.num_timesteps, num_steps
    if not 1 <= K <= T:
        raise DDPMError(
            f"num_steps must be between 1 and the schedule's num_timesteps ({T}), got {K}"
        )
    # every grid is listed from its top, so that torch.linspace's single point (K = 1) is T - 1
    if spacing == "uniform":
        steps = torch.linspace(T - 1, 0, K, dtype=torch.float64).round()
    elif spacing == "quadratic":
        steps = (torch.linspace(math.sqrt(T - 1), 0, K, dtype=torch.float64) ** 2).round()
    elif spacing == "trailing":
        steps = (torch.arange(T, 0, -T / K, dtype=torch.float64)[:K]).round() - 1
    elif spacing == "karras":
        return karras_timesteps(schedule, K)
    else:
        raise DDPMError(f"unknown timestep spacing {spacing!r}; known: {', '.join(SPACINGS)}")
    return _distinct_descending([int(t) for t in steps.tolist()])
