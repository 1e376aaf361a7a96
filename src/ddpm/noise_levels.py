"""Which noise levels a training step visits, and how much each one counts.

Ho et al. 2020 draw t uniformly and weight every t alike in eps space (L_simple). Faster recipes
spend the steps where learning happens:

- `lognormal` (Karras et al. 2022, EDM, Sec. 5): ln sigma ~ N(P_mean, P_std^2), with
  sigma_t = sqrt((1 - alpha_bar_t) / alpha_bar_t); each draw is mapped to the trained timestep
  whose ln sigma is nearest.
- `laplace` (Hang et al. 2024, "Improved noise schedule for diffusion training"): the log-SNR
  lambda = ln(alpha_bar / (1 - alpha_bar)) ~ Laplace(mu, b), concentrated around lambda = 0, where
  the prediction is hardest; mapped to the nearest trained timestep the same way (lambda_t =
  -2 ln sigma_t).
- `min_snr` weighting (Hang et al. 2023, "Efficient diffusion training via Min-SNR weighting
  strategy", Eq. 7-8): in x0 space the weight is min(SNR_t, gamma); the same objective in eps space
  is min(SNR_t, gamma) / SNR_t and in v space min(SNR_t, gamma) / (SNR_t + 1), since
  ||eps - eps_hat||^2 = SNR ||x0 - x0_hat||^2 and ||v - v_hat||^2 = (SNR + 1) ||x0 - x0_hat||^2.
- `edm` weighting (Karras et al. 2022, Table 1 and Sec. 5): in x0 space the weight is
  lambda(sigma) = 1 / c_out^2 = (sigma^2 + sigma_data^2) / (sigma sigma_data)^2 with
  sigma^2 = 1 / SNR; in eps space lambda / SNR, in v space lambda / (SNR + 1), and 1 for the
  "edm" prediction, whose loss on F already is lambda ||x0 - x0_hat||^2 (ddpm.edm).

All functions are pure: tensors in, tensors out; generators are passed in.
"""

from __future__ import annotations

from typing import Literal

import torch

from .edm import edm_lambda

TSampling = Literal["uniform", "lognormal", "laplace", "importance"]  # importance: ddpm.train
LossWeight = Literal["none", "min_snr", "edm"]


def log_sigmas(alpha_bar: torch.Tensor) -> torch.Tensor:
    """ln sigma_t = 0.5 ln((1 - alpha_bar_t) / alpha_bar_t), [T], increasing in t."""
    alpha_bar = alpha_bar.double()
    return 0.5 * (torch.log1p(-alpha_bar) - torch.log(alpha_bar))


def nearest_timesteps(table: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """Index of the entry of an increasing `table` [T] nearest to each of `values` [B] -> long [B]."""
    table = table.to(values.device, values.dtype)
    upper = torch.searchsorted(table, values).clamp(1, len(table) - 1)
    lower = upper - 1
    pick_upper = (table[upper] - values).abs() < (values - table[lower]).abs()
    return torch.where(pick_upper, upper, lower)


def lognormal_timesteps(
    z: torch.Tensor, alpha_bar: torch.Tensor, *, p_mean: float, p_std: float
) -> torch.Tensor:
    """EDM's ln sigma = p_mean + p_std z for standard normal draws z [B] -> nearest t, long [B]."""
    return nearest_timesteps(log_sigmas(alpha_bar), p_mean + p_std * z.double())


def laplace_timesteps(
    u: torch.Tensor, alpha_bar: torch.Tensor, *, mu: float, b: float
) -> torch.Tensor:
    """Laplace(mu, b) log-SNR by inverse CDF of uniform draws u [B] in [0, 1) -> nearest t [B].

    lambda = mu - b sign(u - 1/2) ln(1 - 2 |u - 1/2|); ln sigma = -lambda / 2."""
    centred = u.double() - 0.5
    lam = mu - b * torch.sign(centred) * torch.log1p(-2 * centred.abs()).clamp(min=-700)
    return nearest_timesteps(log_sigmas(alpha_bar), -0.5 * lam)


def snr(alpha_bar_t: torch.Tensor) -> torch.Tensor:
    """Signal-to-noise ratio alpha_bar / (1 - alpha_bar) (any shape)."""
    return alpha_bar_t / (1 - alpha_bar_t)


def min_snr_weight(
    alpha_bar_t: torch.Tensor, *, gamma: float, prediction: str, sigma_data: float = 0.5
) -> torch.Tensor:
    """Min-SNR-gamma loss weight for the given prediction type's loss (see the module docstring);
    alpha_bar_t of any shape, the weight has its shape. For "edm" (whose loss on F is
    1 / c_out^2 ||x0 - x0_hat||^2) it is min(SNR, gamma) c_out^2."""
    ratio = snr(alpha_bar_t)
    clipped = ratio.clamp(max=gamma)
    if prediction == "edm":
        return clipped / edm_lambda(alpha_bar_t, sigma_data)
    if prediction == "eps":
        return clipped / ratio
    if prediction == "v":
        return clipped / (ratio + 1)
    if prediction == "x0":
        return clipped
    raise ValueError(f"unknown prediction {prediction!r}")


def edm_weight(alpha_bar_t: torch.Tensor, *, sigma_data: float, prediction: str) -> torch.Tensor:
    """EDM's loss weight lambda(sigma) = 1 / c_out^2 on ||x0 - x0_hat||^2, carried to the given
    prediction type's loss (see the module docstring); alpha_bar_t of any shape, the weight has
    its shape."""
    if prediction == "edm":
        return torch.ones_like(alpha_bar_t)
    lam = edm_lambda(alpha_bar_t, sigma_data)
    if prediction == "eps":
        return lam / snr(alpha_bar_t)
    if prediction == "v":
        return lam / (snr(alpha_bar_t) + 1)
    if prediction == "x0":
        return lam
    raise ValueError(f"unknown prediction {prediction!r}")


def loss_weights(
    alpha_bar_t: torch.Tensor,
    *,
    loss_weight: str,
    gamma: float,
    prediction: str,
    sigma_data: float = 0.5,
) -> torch.Tensor | None:
    """Per-example weights [B] for `diffusion.loss_weight` at alpha_bar_t [B]; None for "none"."""
    if loss_weight == "none":
        return None
    if loss_weight == "min_snr":
        return min_snr_weight(
            alpha_bar_t, gamma=gamma, prediction=prediction, sigma_data=sigma_data
        )
    if loss_weight == "edm":
        return edm_weight(alpha_bar_t, sigma_data=sigma_data, prediction=prediction)
    raise ValueError(f"unknown loss weight {loss_weight!r}")
