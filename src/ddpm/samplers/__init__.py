"""Samplers: small stateless functions over a denoiser `(x_t, t) -> x0_hat`.

Each takes the starting noise x_T [B, C, H, W], the schedule and the K descending timesteps to
visit, evaluates the denoiser at each of them, takes a last step to x0 after the final one, and
returns x0. Randomness comes only from `generator` (one torch.Generator, or one per image so that
image i depends only on its own generator, whatever the batch size). A `callback` receives a
`StepInfo` per step, for progressive-denoising pictures. Add a sampler: one function and one
`SAMPLERS` entry (plus `num_function_evals` if it does not evaluate once per step).

Samplers by order and noise:
    ddpm          ancestral, stochastic, first order; K NFE
    ddim          eta = 0 deterministic (the probability-flow ODE's Euler step), eta > 0 stochastic
    dpmpp-2m      DPM-Solver++(2M), deterministic, second-order multistep; K NFE
    dpmpp-2m-sde  its SDE variant, stochastic, second order; K NFE
    heun          Karras et al.'s second-order Heun on the probability-flow ODE; 2K - 1 NFE
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import torch

from ..denoiser import Denoiser, VarianceDenoiser
from ..diffusion import q_posterior
from ..learned_variance import first_posterior_variance, learned_range_log_variance
from ..schedules import Schedule

Generators = torch.Generator | Sequence[torch.Generator] | None
VarianceType = Literal["beta_tilde", "beta", "learned_range"]


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


def add_noise_(
    x: torch.Tensor, std: float | torch.Tensor, generator: Generators, buffer: torch.Tensor
) -> None:
    """x += std * z with z ~ N(0, I) drawn into `buffer` (shaped like x), so a sampler's step
    allocates nothing; the same numbers as `randn_like(x, generator)`. std: a float, or a tensor
    broadcastable to x (a learned per-dimension standard deviation)."""
    if isinstance(generator, torch.Generator) or generator is None:
        torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device, out=buffer)
    elif len(generator) == x.shape[0] and all(g.device == x.device for g in generator):
        for row, g in zip(buffer, generator):
            torch.randn(x.shape[1:], generator=g, dtype=x.dtype, device=x.device, out=row)
    else:
        buffer.copy_(randn_like(x, generator))
    if isinstance(std, torch.Tensor):
        x.addcmul_(buffer, std)
    else:
        x.add_(buffer, alpha=std)


def _noise_buffer(x: torch.Tensor) -> torch.Tensor:
    """add_noise_'s buffer: contiguous whatever x's layout, since randn(out=) fills in memory
    order, and the same seed must give the same noise for a channels_last x_T."""
    return torch.empty_like(x, memory_format=torch.contiguous_format)


def _state_dtype(x_T: torch.Tensor) -> torch.dtype:
    """The dtype a sampler keeps x_t in: x_T's, at least float32 (float64 stays float64)."""
    return torch.promote_types(x_T.dtype, torch.float32)


def _info(i: int, timesteps: Sequence[int], x: torch.Tensor, x0_hat: torch.Tensor) -> StepInfo:
    """A callback's record; x_t is copied, since the sampler updates x in place afterwards."""
    return StepInfo(i, len(timesteps), timesteps[i], x.clone(), x0_hat)


def _alpha_bars(schedule: Schedule, timesteps: Sequence[int]) -> list[tuple[int, float, float]]:
    """(t, ab_t, ab_s) per step as Python floats, with ab_s = 1 after the last step."""
    ab = schedule.alpha_bar.tolist()
    following = [ab[s] for s in timesteps[1:]] + [1.0]
    return [(t, ab[t], ab_s) for t, ab_s in zip(timesteps, following)]


def sample_ancestral(
    denoiser: Denoiser | VarianceDenoiser,
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
    the posterior variance beta~ (default) or the step's beta' = 1 - ab_t / ab_s, or with
    variance="learned_range" the network's own exp(v log beta' + (1 - v) log beta~') (Nichol &
    Dhariwal 2021, Eq. 15, ddpm.learned_variance), for which `denoiser` is a VarianceDenoiser
    `(x_t, t) -> (x0_hat, v)` (ddpm.denoiser.make_variance_denoiser). No noise is added on the last
    step. The update runs in place on one buffer: a step allocates nothing but what the denoiser
    (and a learned variance's standard deviation) does."""
    x = x_T.to(_state_dtype(x_T), copy=True)
    t_batch = torch.empty(x.shape[0], dtype=torch.long, device=x.device)
    noise = _noise_buffer(x)
    learned = variance == "learned_range"
    first_variance = (
        float(first_posterior_variance(schedule.alpha_bar.double())) if learned else 0.0
    )
    for i, (t, ab_t, ab_s) in enumerate(_alpha_bars(schedule, timesteps)):
        if learned:
            x0_hat, v = denoiser(x, t_batch.fill_(t))
        else:
            x0_hat = denoiser(x, t_batch.fill_(t))
        if callback is not None:
            callback(_info(i, timesteps, x, x0_hat))
        # the posterior mean's coefficients (q_posterior is linear in x0 and x_t)
        coef_x0, posterior_var = q_posterior(1.0, 0.0, ab_t, ab_s)
        coef_xt = q_posterior(0.0, 1.0, ab_t, ab_s)[0]
        x.mul_(coef_xt).add_(x0_hat, alpha=coef_x0)
        if ab_s != 1.0 and learned:
            log_var = learned_range_log_variance(v, ab_t, ab_s, first_variance=first_variance)
            add_noise_(x, torch.exp(0.5 * log_var), generator, noise)
        elif ab_s != 1.0:
            var = posterior_var if variance == "beta_tilde" else 1 - ab_t / ab_s
            add_noise_(x, var**0.5, generator, noise)
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
    eta = 0 is deterministic; eta = 1 equals the ancestral step with beta~.

    The step runs in place on two buffers (x and eps_hat): a step allocates nothing but what the
    denoiser does. It keeps the (x0_hat, eps_hat) form, which does not carry x_t's rounding from
    step to step (x_t = a x_t + b x0_hat would, amplified by up to 1/sqrt(ab) ~ 160)."""
    if not 0.0 <= eta <= 1.0:
        raise ValueError(f"eta must be in [0, 1], got {eta}")
    x = x_T.to(_state_dtype(x_T), copy=True)
    t_batch = torch.empty(x.shape[0], dtype=torch.long, device=x.device)
    noise, eps_hat = _noise_buffer(x), torch.empty_like(x)
    for i, (t, ab_t, ab_s) in enumerate(_alpha_bars(schedule, timesteps)):
        x0_hat = denoiser(x, t_batch.fill_(t))
        if callback is not None:
            callback(_info(i, timesteps, x, x0_hat))
        # eps_from_x0 in place: (x_t - sqrt(ab_t) x0_hat) / sqrt(1 - ab_t)
        torch.add(x, x0_hat, alpha=-(ab_t**0.5), out=eps_hat).div_((1 - ab_t) ** 0.5)
        sigma = eta * ((1 - ab_s) / (1 - ab_t) * (1 - ab_t / ab_s)) ** 0.5
        c = max(1 - ab_s - sigma**2, 0.0) ** 0.5
        torch.mul(x0_hat, ab_s**0.5, out=x).add_(eps_hat, alpha=c)
        if sigma > 0:
            add_noise_(x, sigma, generator, noise)
    return x


def _log_snr(ab: float) -> float:
    """lambda = log(alpha / sigma) with alpha = sqrt(ab), sigma = sqrt(1 - ab) (Lu et al. 2022)."""
    return 0.5 * math.log(ab / (1 - ab))


def _dpmpp_2m(
    denoiser: Denoiser,
    x_T: torch.Tensor,
    schedule: Schedule,
    timesteps: Sequence[int],
    *,
    stochastic: bool,
    lower_order_final: bool,
    generator: Generators,
    callback: Callback | None,
) -> torch.Tensor:
    """DPM-Solver++(2M) and its SDE variant in one loop; see the two public functions. The step
    runs in place on x and two buffers (D, noise); the previous x0_hat is the denoiser's own
    output, kept by reference."""
    x = x_T.to(_state_dtype(x_T), copy=True)
    t_batch = torch.empty(x.shape[0], dtype=torch.long, device=x.device)
    d, noise = torch.empty_like(x), _noise_buffer(x)
    previous: tuple[torch.Tensor, float] | None = None  # (x0_hat, h) of the step before
    for i, (t, ab_t, ab_s) in enumerate(_alpha_bars(schedule, timesteps)):
        x0_hat = denoiser(x, t_batch.fill_(t))
        if callback is not None:
            callback(_info(i, timesteps, x, x0_hat))
        if ab_s == 1.0:  # to sigma = 0: lambda = inf, the first-order step lands on x0_hat
            return x0_hat.to(x.dtype)
        h = _log_snr(ab_s) - _log_snr(ab_t)
        # second order, extrapolating with the previous x0_hat (r = h_prev / h), except on the
        # first step and, with lower_order_final, on the step into the last timestep
        into_last = i == len(timesteps) - 2
        if previous is not None and not (lower_order_final and into_last):
            # D = x0_hat + (x0_hat - x0_hat_prev) h / (2 h_prev)
            torch.sub(x0_hat, previous[0], out=d).mul_(h / (2 * previous[1])).add_(x0_hat)
        else:
            d.copy_(x0_hat)
        sigma_ratio, alpha_s = ((1 - ab_s) / (1 - ab_t)) ** 0.5, ab_s**0.5
        if stochastic:
            weight = -math.expm1(-2 * h)  # 1 - exp(-2h)
            x.mul_(sigma_ratio * math.exp(-h)).add_(d, alpha=alpha_s * weight)
            add_noise_(x, (1 - ab_s) ** 0.5 * weight**0.5, generator, noise)
        else:
            x.mul_(sigma_ratio).add_(d, alpha=-alpha_s * math.expm1(-h))
        previous = (x0_hat, h)
    return x


def sample_dpmpp_2m(
    denoiser: Denoiser,
    x_T: torch.Tensor,
    schedule: Schedule,
    timesteps: Sequence[int],
    *,
    lower_order_final: bool = True,
    generator: Generators = None,
    callback: Callback | None = None,
) -> torch.Tensor:
    """DPM-Solver++(2M) (Lu et al. 2022, Algorithm 2), deterministic, in the data-prediction form.

    With alpha = sqrt(ab), sigma = sqrt(1 - ab), lambda = log(alpha / sigma), h = lambda_s - lambda_t
    and r = h_prev / h, a step from t to the next timestep s is
        D   = (1 + 1/(2r)) x0_hat_t - 1/(2r) x0_hat_prev
        x_s = (sigma_s / sigma_t) x_t - alpha_s (exp(-h) - 1) D
    The first step has no previous x0_hat and is first order (D = x0_hat_t, the DDIM step); so is
    the last, from the last timestep to sigma = 0 (lambda = inf), which returns x0_hat. K
    timesteps, K NFE. `generator` is accepted and unused.

    lower_order_final (default True): the step into the last timestep is first order too, for
    every K. Neither reference does that: Lu et al.'s dpm_solver_pytorch.py lowers it only when
    `steps < 10` (its grid of steps + 1 time points is our K timesteps, our last step its
    `denoise_to_zero`: so for K <= 10), and diffusers' DPMSolverMultistepScheduler with
    solver_order=2 never (its `lower_order_final` lowers only the step to sigma = 0). We lower it
    for every K because uniform spacing, the default, ends at t = 0 (sigma = 0.01), a log-SNR
    interval 3.5-5x the one before (r = 0.2-0.28), and extrapolating across it overshoots. RMS error
    of x0 against the exact probability-flow ODE on Gaussian data N(0.3, 0.5^2), x_T ~ N(0, I),
    uniform spacing (tests/test_solver_references.py), lowered / second order / DDIM:
        linear  K = 5:  0.27  / 0.008 / 0.27     cosine  K = 5:  0.15   / 0.19  / 0.17
                K = 10: 0.11  / 0.19  / 0.14             K = 10: 0.031  / 0.14  / 0.079
                K = 20: 0.023 / 0.12  / 0.069            K = 20: 0.0016 / 0.050 / 0.039
    With Lu et al.'s rule K = 20 would be 5x (linear) to 30x (cosine) worse, and worse than DDIM;
    at K = 5, where their rule lowers too, second order happens to win on the linear schedule.
    Trailing spacing (r ~ 0.6-1) favours second order (K = 20, lowered / second order: linear
    0.045 / 0.022, cosine 0.012 / 0.0015): pass lower_order_final=False there, or to match
    diffusers.
    """
    return _dpmpp_2m(
        denoiser, x_T, schedule, timesteps, stochastic=False,
        lower_order_final=lower_order_final, generator=None, callback=callback,
    )  # fmt: skip


def sample_dpmpp_2m_sde(
    denoiser: Denoiser,
    x_T: torch.Tensor,
    schedule: Schedule,
    timesteps: Sequence[int],
    *,
    lower_order_final: bool = True,
    generator: Generators = None,
    callback: Callback | None = None,
) -> torch.Tensor:
    """SDE-DPM-Solver++(2M) (Lu et al. 2022, Appendix; the "midpoint" form of k-diffusion and
    diffusers), stochastic. With the symbols of `sample_dpmpp_2m` and z ~ N(0, I):
        x_s = (sigma_s / sigma_t) e^{-h} x_t + alpha_s (1 - e^{-2h}) (x0_hat_t + (x0_hat_t -
              x0_hat_prev) / (2r)) + sigma_s sqrt(1 - e^{-2h}) z
    Its first-order step (the first, the last, and with lower_order_final the step into the last
    timestep, as in `sample_dpmpp_2m`) is exactly the DDPM ancestral step with beta~. K
    timesteps, K NFE.
    """
    return _dpmpp_2m(
        denoiser, x_T, schedule, timesteps, stochastic=True,
        lower_order_final=lower_order_final, generator=generator, callback=callback,
    )  # fmt: skip


def sample_heun(
    denoiser: Denoiser,
    x_T: torch.Tensor,
    schedule: Schedule,
    timesteps: Sequence[int],
    *,
    generator: Generators = None,
    callback: Callback | None = None,
) -> torch.Tensor:
    """Karras et al. 2022, Algorithm 1 (deterministic, S_churn = 0): Heun's method on the
    probability-flow ODE dx/dsigma = (x - D(x; sigma)) / sigma.

    The VP model is written in their parametrisation: sigma_t = sqrt((1 - ab_t) / ab_t) and
    x = x_t / sqrt(ab_t); D(x; sigma_t) = denoiser(sqrt(ab_t) x, t). The sigma grid is the
    schedule's sigmas at `timesteps` (so the network only ever sees the discrete timesteps it was
    trained on) followed by sigma = 0; Karras et al.'s rho = 7 grid is `karras_timesteps`, which
    `generate` uses for heun by default. Each step is an Euler step (equal to DDIM's) corrected with
    a second evaluation at the next sigma, except the last, an Euler step to sigma = 0: K timesteps,
    2K - 1 NFE. `generator` is accepted and unused. The trapezoid step needs moderate ratios
    sigma_i / sigma_{i+1}: a grid whose first step crosses orders of magnitude (uniform spacing on
    the cosine schedule, sigma_{T-1} ~ 2e4) is inaccurate; the Karras grid avoids that.
    """
    ab = schedule.alpha_bar.tolist()
    sigmas = [((1 - ab[t]) / ab[t]) ** 0.5 for t in timesteps] + [0.0]
    scales = [ab[t] ** 0.5 for t in timesteps]  # x_t = scale * x
    x = x_T.to(_state_dtype(x_T), copy=True).div_(scales[0])
    t_batch = torch.empty(x.shape[0], dtype=torch.long, device=x.device)
    # in place on x and four buffers: a step allocates nothing but what the denoiser does
    x_in, x_next, slope, correction = (torch.empty_like(x) for _ in range(4))

    def denoise(x: torch.Tensor, i: int) -> torch.Tensor:
        return denoiser(torch.mul(x, scales[i], out=x_in), t_batch.fill_(timesteps[i]))

    for i, t in enumerate(timesteps):
        x0_hat = denoise(x, i)
        if callback is not None:
            callback(StepInfo(i, len(timesteps), t, x * scales[i], x0_hat))
        # Euler x + (sigma' - sigma) slope, written x0_hat + (sigma' / sigma) (x - x0_hat) so that
        # sigma' = 0 gives x0_hat exactly (x itself can be ~1e4 on the first step, and float32
        # would cancel badly)
        torch.sub(x, x0_hat, out=x_next).mul_(sigmas[i + 1] / sigmas[i]).add_(x0_hat)
        if sigmas[i + 1] > 0:
            torch.sub(x, x0_hat, out=slope).div_(sigmas[i])
            x0_next = denoise(x_next, i + 1)
            # x_next += (sigma' - sigma) / 2 (slope' - slope), slope' = (x_next - x0_next) / sigma'
            torch.sub(x_next, x0_next, out=correction).div_(sigmas[i + 1]).sub_(slope)
            x_next.add_(correction, alpha=(sigmas[i + 1] - sigmas[i]) * 0.5)
        x, x_next = x_next, x
    return x


SAMPLERS: dict[str, Callable[..., torch.Tensor]] = {
    "ddpm": sample_ancestral,
    "ddim": sample_ddim,
    "dpmpp-2m": sample_dpmpp_2m,
    "dpmpp-2m-sde": sample_dpmpp_2m_sde,
    "heun": sample_heun,
}
# Samplers whose output is a deterministic function of x_T (ddim with eta = 0).
DETERMINISTIC_SAMPLERS = ("ddim", "dpmpp-2m", "heun")
# Timestep spacing a sampler uses unless one is asked for (others: config.sample.spacing).
DEFAULT_SPACING = {"heun": "karras"}


def num_function_evals(sampler: str, steps: int) -> int:
    """Denoiser evaluations (NFE) of `sampler` over `steps` timesteps. A guided evaluation runs
    the conditional and the null class in one batched network call and counts once."""
    return 2 * steps - 1 if sampler == "heun" else steps
