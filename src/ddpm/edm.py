"""EDM preconditioning (Karras et al. 2022, "Elucidating the Design Space of Diffusion-Based
Generative Models", Table 1 and Sec. 5) on ddpm's variance-preserving process.

EDM works with the variance-exploding variable y = x0 + sigma eps. A VP state
x_t = sqrt(ab) x0 + sqrt(1 - ab) eps is that variable scaled: y = x_t / sqrt(ab), with
sigma = sqrt((1 - ab) / ab) (the sigma of ddpm.noise_levels.log_sigmas). EDM's denoiser is

    D(y; sigma) = c_skip(sigma) y + c_out(sigma) F(c_in(sigma) y, c_noise(sigma))
    c_skip = sigma_data^2 / (sigma^2 + sigma_data^2)
    c_out  = sigma sigma_data / sqrt(sigma^2 + sigma_data^2)
    c_in   = 1 / sqrt(sigma^2 + sigma_data^2)

chosen so that, on data of standard deviation sigma_data, the network's input c_in y and its
training target (x0 - c_skip y) / c_out both have unit variance at every sigma, and the loss
lambda(sigma) ||D - x0||^2 with lambda = 1 / c_out^2 equals the unit-weight loss on F (Sec. 5,
Appendix B.6). sigma_data is the standard deviation of the training data in the model's range
[-1, 1]; EDM uses 0.5 for every image dataset it trains.

c_noise: EDM feeds the network c_noise = ln(sigma) / 4. ddpm's networks keep their embedding of
the integer timestep t. On the trained grid sigma_t is strictly increasing in t, so t and c_noise
determine each other through a fixed bijection: the embedding of t is an embedding of c_noise
composed with that bijection, a reparametrisation of the embedding's input that its learned
layers absorb. (EDM's choice of c_noise matters for continuous sigma, where it spaces the
embedding's frequencies; on T fixed levels every injective map carries the same information.)

Everything here is a pure function of alpha_bar (ab_t, broadcastable to x) and sigma_data.
"""

from __future__ import annotations

from typing import TypeVar

import torch

Coefficient = torch.Tensor | float
# a weight keeps its argument's type: a tensor in, a tensor out; a float in, a float out
Weight = TypeVar("Weight", torch.Tensor, float)


def sigma_from_alpha_bar(ab_t: Coefficient) -> Coefficient:
    """EDM's noise level of a VP step: sigma = sqrt((1 - ab) / ab)."""
    return ((1 - ab_t) / ab_t) ** 0.5


def edm_coefficients(
    sigma: Coefficient, sigma_data: float
) -> tuple[Coefficient, Coefficient, Coefficient]:
    """(c_skip, c_out, c_in) at noise level sigma (Karras et al. 2022, Table 1, "Ours")."""
    total = sigma**2 + sigma_data**2
    return sigma_data**2 / total, sigma * sigma_data / total**0.5, 1 / total**0.5


def edm_input_scale(ab_t: Coefficient, sigma_data: float) -> Coefficient:
    """The factor that takes x_t to the network input c_in y = c_in x_t / sqrt(ab).

    sqrt(ab) sqrt(sigma^2 + sigma_data^2) = sqrt(1 - ab + ab sigma_data^2), so the factor is
    1 / sqrt(1 - ab + ab sigma_data^2): 1 at sigma_data = 1, where x_t already has unit variance."""
    return (1 - ab_t + ab_t * sigma_data**2) ** -0.5


def x0_from_edm(
    x_t: torch.Tensor, output: torch.Tensor, ab_t: Coefficient, sigma_data: float
) -> torch.Tensor:
    """D = c_skip y + c_out F with y = x_t / sqrt(ab): the x0 estimate of a raw network output F
    [B, C, H, W] (Karras et al. 2022, Eq. 7)."""
    c_skip, c_out, _ = edm_coefficients(sigma_from_alpha_bar(ab_t), sigma_data)
    return c_skip * (x_t / ab_t**0.5) + c_out * output


def edm_target(
    x0: torch.Tensor, eps: torch.Tensor, ab_t: Coefficient, sigma_data: float
) -> torch.Tensor:
    """F's training target (x0 - c_skip y) / c_out with y = x0 + sigma eps (Karras et al. 2022,
    Eq. 8), for x0, eps [B, C, H, W]."""
    sigma = sigma_from_alpha_bar(ab_t)
    c_skip, c_out, _ = edm_coefficients(sigma, sigma_data)
    return (x0 - c_skip * (x0 + sigma * eps)) / c_out


def edm_lambda(ab_t: Weight, sigma_data: float) -> Weight:
    """EDM's loss weight lambda(sigma) = 1 / c_out^2 = (sigma^2 + sigma_data^2) / (sigma sigma_data)^2
    on ||x0 - x0_hat||^2 (Karras et al. 2022, Table 1)."""
    sigma2 = (1 - ab_t) / ab_t
    return (sigma2 + sigma_data**2) / (sigma2 * sigma_data**2)
