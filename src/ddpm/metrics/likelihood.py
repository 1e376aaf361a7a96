"""Negative log-likelihood in bits/dim from the variational bound (Ho et al. 2020, Eq. 5).

    -log p(x0) <= L_T + sum_{t >= 1} L_{t-1} + L_0
    L_T     = KL(q(x_T | x0) || N(0, I))                               (prior_kl)
    L_{t-1} = KL(q(x_{t-1} | x_t, x0) || p(x_{t-1} | x_t))  for t >= 1  (normal_kl, Eq. 6-8)
    L_0     = -log p(x0 | x_1), the discretised Gaussian decoder       (Eq. 13)

With 0-based steps, step k = 0 is the decoder term and k = 1..T-1 are KL terms. The reverse
variance is the run's choice (diffusion.variance): beta~_k or beta_k; the decoder's variance is
beta~_1 = beta_1 (1 - ab_0) / (1 - ab_1), the first nonzero posterior variance, in both modes, as
in Ho et al.'s reference code (diffusion_utils_2.py, p_mean_variance: 'fixedsmall' clips log beta~
with it, and 'fixedlarge' uses log(append(posterior_variance[1], betas[1:])), "to get a better
decoder log likelihood"); beta~_0 is zero. With learned_range it is the network's own
exp(v log beta_k + (1 - v) log beta~_k) (ddpm.learned_variance, the same clip at k = 0), for the
KL terms and the decoder alike. The bound is reported in bits per dimension: nats / (C H W ln 2).
The x0 estimate is clipped to [-1, 1] when the run clips.

`num_timesteps` < T estimates the sum over k = 1..T-1 by stratified sampling: the steps are cut
into that many equal strata and each image draws one step per stratum, weighted by the stratum's
size, which is unbiased. Each image's estimate is independent, so the standard error is the
spread across images over sqrt(n); it includes the variance of the step sampling.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, overload

import torch

from ..denoiser import Denoiser, VarianceDenoiser, make_denoiser, make_variance_denoiser
from ..diffusion import (
    Prediction,
    discretized_gaussian_log_likelihood,
    normal_kl,
    prior_kl,
    q_posterior,
    q_sample,
)
from ..errors import DDPMError
from ..learned_variance import learned_range_log_variance
from ..loaded_run import LoadedRun
from ..pixels import from_uint8
from ..rng import seeded_generator
from ..schedules import Schedule

BPD_SEED = 20_200_619  # the noise and the sampled steps never depend on the caller's seed


@dataclass(frozen=True)
class BitsPerDim:
    """The bound averaged over images; per-term means are in bits/dim too."""

    mean: float
    std_error: float
    num_images: int
    num_timesteps: int  # steps evaluated per image (T when exhaustive)
    exhaustive: bool
    prior: float  # L_T
    decoder: float  # L_0
    kl_terms: float  # sum of L_1 .. L_{T-1}


def reverse_variances(schedule: Schedule, variance: str) -> torch.Tensor:
    """sigma_k^2 [T] float64 of p(x_{k-1} | x_k) for a fixed variance ("beta_tilde" or "beta");
    entry 0 is the decoder's variance, beta~_1 in both modes (see the module docstring)."""
    if variance not in ("beta_tilde", "beta"):
        raise ValueError(f"{variance!r} is not a fixed variance (beta_tilde, beta)")
    betas = schedule.betas.double()
    alpha_bar = schedule.alpha_bar.double()
    previous = torch.cat([torch.ones(1, dtype=torch.float64), alpha_bar[:-1]])
    beta_tilde = (1 - previous) / (1 - alpha_bar) * betas
    sigma2 = betas.clone() if variance == "beta" else beta_tilde
    sigma2[0] = beta_tilde[1]  # beta~_0 is 0 and beta_0 would be a worse decoder (Ho et al.)
    return sigma2


def vlb_term(
    denoiser: Denoiser | VarianceDenoiser,
    x0: torch.Tensor,
    k: torch.Tensor,
    eps: torch.Tensor,
    alpha_bar: torch.Tensor,
    sigma2: torch.Tensor,
) -> torch.Tensor:
    """Per-image L_k in nats [B] for steps k [B] (0 = decoder, >= 1 = KL). x0, eps: float64
    [B, C, H, W]; alpha_bar, sigma2: float64 [T] on x0's device. The network runs in float32.
    A VarianceDenoiser (make_variance_denoiser, returning (x0_hat, v)) brings the learned
    variance; sigma2 is then beta~ clipped (reverse_variances), whose entry 0 is the clip."""
    shape = (-1,) + (1,) * (x0.ndim - 1)
    ab_t = alpha_bar[k].view(shape)
    ab_s = torch.where(k > 0, alpha_bar[(k - 1).clamp(min=0)], 1.0).view(shape)
    x_t = q_sample(x0, eps, ab_t)
    out = denoiser(x_t.float(), k)
    if isinstance(out, tuple):  # (x0_hat, v): the learned variance
        x0_hat, v = out
        log_var = learned_range_log_variance(v.double(), ab_t, ab_s, first_variance=sigma2[0])
        var = torch.exp(log_var)
    else:
        x0_hat, var = out, sigma2[k].view(shape)
    model_mean, _ = q_posterior(x0_hat.double(), x_t, ab_t, ab_s)
    decoder_nll = -discretized_gaussian_log_likelihood(x0, model_mean, var.sqrt())
    true_mean, true_var = q_posterior(x0, x_t, ab_t, ab_s)
    # at k = 0 true_var is 0; the KL is not used there, so give it a harmless variance
    kl = normal_kl(true_mean, torch.where(k.view(shape) > 0, true_var, var), model_mean, var)
    is_decoder = (k == 0).view(shape)
    return torch.where(is_decoder, decoder_nll, kl).flatten(1).sum(1)


def _stratified_steps(
    T: int, num_strata: int, n: int, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Steps [n, S] and weights [S]: S equal strata of 1..T-1, one uniform draw per image each."""
    edges = torch.linspace(1, T, num_strata + 1).round().long()
    sizes = edges[1:] - edges[:-1]
    u = torch.rand((n, num_strata), generator=generator, dtype=torch.float64)
    steps = edges[:-1] + (u * sizes).floor().long().clamp(max=sizes - 1)
    return steps, sizes.double()


@overload
def bits_per_dim(
    run: LoadedRun,
    images: torch.Tensor,
    /,
    *,
    num_timesteps: int | None = None,
    batch_size: int = 256,
    precision: str = "fp32",
    progress: Callable[[int], object] | None = None,
) -> BitsPerDim: ...


@overload
def bits_per_dim(
    net: torch.nn.Module,
    schedule: Schedule,
    images: torch.Tensor,
    /,
    *,
    prediction: Prediction,
    variance: str = "beta_tilde",
    clip: bool = True,
    num_timesteps: int | None = None,
    batch_size: int = 256,
    precision: str = "fp32",
    sigma_data: float = 0.5,
    progress: Callable[[int], object] | None = None,
) -> BitsPerDim: ...


def bits_per_dim(net: torch.nn.Module | LoadedRun, /, *args: Any, **kwargs: Any) -> BitsPerDim:
    """The variational bound of uint8 images [N, C, H, W] under `net`, in bits/dim.

    A loaded run takes its prediction type, variance, clipping and sigma_data from its config:
    `bits_per_dim(run, images, num_timesteps=..., batch_size=..., precision=..., progress=...)`.
    The bare network form needs them given: prediction (required: "eps", "x0", "v" or "edm"),
    variance (diffusion.variance), clip (diffusion.clip_denoised), sigma_data (for "edm").
    num_timesteps: None (or T) evaluates every step; fewer uses stratified sampling over 1..T-1
    (the decoder and prior terms are always exact). `progress(n)` is called per network batch.
    precision: the network's autocast (make_denoiser); fp32 by default, since a likelihood is a
    measurement and bf16 rounding would move it.
    """
    if isinstance(net, LoadedRun):
        return _bits_per_dim_of_run(net, *args, **kwargs)
    return _bits_per_dim_of_net(net, *args, **kwargs)


def _bits_per_dim_of_net(
    net: torch.nn.Module,
    schedule: Schedule,
    images: torch.Tensor,
    *,
    prediction: Prediction,
    variance: str = "beta_tilde",
    clip: bool = True,
    num_timesteps: int | None = None,
    batch_size: int = 256,
    precision: str = "fp32",
    sigma_data: float = 0.5,
    progress: Callable[[int], object] | None = None,
) -> BitsPerDim:
    """`bits_per_dim(net, schedule, images, prediction=..., ...)`: the bound under a bare network."""
    make = make_variance_denoiser if variance == "learned_range" else make_denoiser
    denoiser = make(
        net, schedule, prediction=prediction, clip=clip, precision=precision, sigma_data=sigma_data
    )
    device = next(net.parameters()).device
    return _bound(
        denoiser, schedule, images, variance=variance, device=device,
        num_timesteps=num_timesteps, batch_size=batch_size, progress=progress,
    )  # fmt: skip


def _bits_per_dim_of_run(
    run: LoadedRun,
    images: torch.Tensor,
    *,
    num_timesteps: int | None = None,
    batch_size: int = 256,
    precision: str = "fp32",
    progress: Callable[[int], object] | None = None,
) -> BitsPerDim:
    """`bits_per_dim(run, images, ...)`: the bound under a loaded run's own denoiser."""
    variance = run.config.diffusion.variance
    denoiser = run.denoiser(precision=precision, with_variance=variance == "learned_range")
    device = next(run.net.parameters()).device
    return _bound(
        denoiser, run.schedule, images, variance=variance, device=device,
        num_timesteps=num_timesteps, batch_size=batch_size, progress=progress,
    )  # fmt: skip


@torch.inference_mode()
def _bound(
    denoiser: Denoiser | VarianceDenoiser,
    schedule: Schedule,
    images: torch.Tensor,
    *,
    variance: str,
    device: torch.device,
    num_timesteps: int | None,
    batch_size: int,
    progress: Callable[[int], object] | None,
) -> BitsPerDim:
    """bits_per_dim's sum over the steps, for a denoiser (a VarianceDenoiser when learned)."""
    T = schedule.num_timesteps
    if num_timesteps is None or num_timesteps >= T:
        exhaustive, num_kl = True, T - 1
    else:
        exhaustive, num_kl = False, num_timesteps
    if num_kl < 1:
        raise DDPMError(f"num_timesteps must be >= 1, got {num_timesteps}")
    n, dims = images.shape[0], images[0].numel()
    alpha_bar = schedule.alpha_bar.double().to(device)
    learned = variance == "learned_range"
    sigma2 = reverse_variances(schedule, "beta_tilde" if learned else variance).to(device)
    generator = seeded_generator(BPD_SEED)
    if exhaustive:
        steps = torch.arange(1, T).expand(n, -1)
        weights = torch.ones(T - 1, dtype=torch.float64)
    else:
        steps, weights = _stratified_steps(T, num_kl, n, generator)
    totals = torch.zeros(n, 3, dtype=torch.float64)  # prior, decoder, kl
    for start in range(0, n, batch_size):
        stop = min(start + batch_size, n)
        x0 = from_uint8(images[start:stop].to(device), torch.float64)
        totals[start:stop, 0] = prior_kl(x0, float(alpha_bar[-1])).cpu()
        for column in range(-1, num_kl):  # -1: the decoder step k = 0
            eps = torch.randn(x0.shape, generator=generator, dtype=torch.float64).to(device)
            if column < 0:
                k, weight = torch.zeros(stop - start, dtype=torch.long), 1.0
            else:
                k, weight = steps[start:stop, column], float(weights[column])
            term = vlb_term(denoiser, x0, k.to(device), eps, alpha_bar, sigma2).cpu()
            totals[start:stop, 1 if column < 0 else 2] += weight * term
            if progress is not None:
                progress(stop - start)
    return _summary(totals / (dims * math.log(2)), num_kl + 1, exhaustive)


def _summary(per_image: torch.Tensor, num_timesteps: int, exhaustive: bool) -> BitsPerDim:
    """per_image [N, 3] bits/dim (prior, decoder, KL terms) -> the means and standard error."""
    n = per_image.shape[0]
    total = per_image.sum(1)
    std_error = float(total.std(unbiased=True)) / math.sqrt(n) if n > 1 else float("nan")
    prior, decoder, kl = (float(v) for v in per_image.mean(0))
    return BitsPerDim(
        mean=float(total.mean()),
        std_error=std_error,
        num_images=n,
        num_timesteps=num_timesteps,
        exhaustive=exhaustive,
        prior=prior,
        decoder=decoder,
        kl_terms=kl,
    )
