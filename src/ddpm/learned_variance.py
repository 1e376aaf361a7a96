"""Learned reverse variance and the hybrid objective (Nichol & Dhariwal 2021, "Improved Denoising
Diffusion Probabilistic Models", Sec. 3.1).

With diffusion.variance=learned_range the network outputs 2C channels: the first C are the usual
prediction (eps, x0 or v), the other C a raw value r per dimension, mapped to the interpolation
weight v = (r + 1) / 2. The reverse step's variance is, for a pair of steps s < t (glossary of
ddpm.diffusion),

    Sigma = exp(v log beta'_t + (1 - v) log beta~'_t)                          (Eq. 15)
    beta'_t = 1 - ab_t / ab_s,   beta~'_t = (1 - ab_s) / (1 - ab_t) beta'_t     (Eq. 19)

so v = 0 is the posterior variance beta~ and v = 1 is beta, the two fixed choices of Ho et al.
Why (r + 1) / 2: the output layer is zero-initialised, so training starts at v = 1/2, the geometric
mean of the two bounds, and r's natural range [-1, 1] (the scale of the eps/x0 targets) spans the
whole interval; like the paper, v is not constrained to [0, 1]. On the step to x0 (ab_s = 1)
beta~' is 0 and its log is -inf: as the paper does, log beta~ is clipped there with beta~ of
step 1 (0-based: the posterior variance of x_0 given x_1), `first_posterior_variance`. Samplers
add no noise on that step, so the clip matters for the decoder term L_0 only.

The hybrid loss is L_simple + lambda L_vlb (Sec. 3.1, lambda = diffusion.vlb_weight = 0.001). L_vlb
is the drawn t's term of the bound, with p's mean computed from the stop-gradient (detached)
prediction, so L_vlb trains only the variance and L_simple only the mean:
    t >= 1: KL(q(x_{t-1} | x_t, x0) || N(mu(x0_hat.detach(), x_t), Sigma))
    t = 0:  -log p(x0 | x_1), the discretised Gaussian decoder with variance Sigma (Ho et al. Eq. 13)
in bits per dimension (the mean over C H W of the elementwise nats, divided by ln 2), times T:
L_vlb is the bound's sum over all T terms (Eq. 4-5), and T L_t is its one-sample estimate with
uniform t (with importance sampling, ddpm.train.importance, the step weights it by 1 / (T p_t),
giving L_t / p_t as in Sec. 3.3). The step adds lambda T L_t, which is the authors' released
code's L_t T / 1000 at lambda = 0.001.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from .diffusion import (
    Coefficient,
    Prediction,
    discretized_gaussian_log_likelihood,
    network_input,
    per_example_loss,
    prediction_target,
    q_posterior,
    q_sample,
    x0_from_prediction,
)


def split_output(output: torch.Tensor, channels: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A learned-variance network's output [B, 2C, H, W] -> (the prediction [B, C, H, W], the
    interpolation weight v = (r + 1) / 2 [B, C, H, W]) with r the last C channels."""
    return output[:, :channels], (output[:, channels:] + 1) / 2


def first_posterior_variance(alpha_bar: torch.Tensor) -> torch.Tensor:
    """beta~ of step 1 (0-based), (1 - ab_0) / (1 - ab_1) (1 - ab_1 / ab_0): the clip of log beta~
    on the step to x0. alpha_bar [T] (T >= 2) -> a 0-dim tensor of its dtype and device."""
    return (1 - alpha_bar[0]) / (1 - alpha_bar[1]) * (1 - alpha_bar[1] / alpha_bar[0])


def learned_range_log_variance(
    v: torch.Tensor, ab_t: Coefficient, ab_s: Coefficient, *, first_variance: Coefficient
) -> torch.Tensor:
    """log Sigma = v log beta'_t + (1 - v) log beta~'_t (Eq. 15) on the pair (s, t), with beta~'
    replaced by `first_variance` where ab_s = 1 (the step to x0). v [B, C, H, W]; ab_t, ab_s
    broadcastable tensors or floats; the bounds are computed in their precision (float64 tables
    give float64 bounds) and the result has v's dtype."""

    def tensor(value: Coefficient) -> torch.Tensor:
        dtype = value.dtype if isinstance(value, torch.Tensor) else torch.float64
        return torch.as_tensor(value, dtype=dtype, device=v.device)

    ab_t, ab_s, first_variance = tensor(ab_t), tensor(ab_s), tensor(first_variance)
    beta_step = 1 - ab_t / ab_s
    beta_tilde = torch.where(ab_s == 1, first_variance, (1 - ab_s) / (1 - ab_t) * beta_step)
    log_beta, log_beta_tilde = torch.log(beta_step).to(v.dtype), torch.log(beta_tilde).to(v.dtype)
    return v * log_beta + (1 - v) * log_beta_tilde


def normal_kl_log_variance(
    mean1: torch.Tensor, log_var1: torch.Tensor, mean2: torch.Tensor, log_var2: torch.Tensor
) -> torch.Tensor:
    """Elementwise KL(N(mean1, e^log_var1) || N(mean2, e^log_var2)) in nats:
    0.5 (log_var2 - log_var1 + e^(log_var1 - log_var2) + (mean1 - mean2)^2 e^-log_var2 - 1)."""
    return 0.5 * (
        log_var2
        - log_var1
        + torch.exp(log_var1 - log_var2)
        + (mean1 - mean2) ** 2 * torch.exp(-log_var2)
        - 1
    )


def vlb_bits_per_dim(
    x0: torch.Tensor,
    x_t: torch.Tensor,
    x0_hat: torch.Tensor,
    log_var: torch.Tensor,
    ab_t: torch.Tensor,
    ab_s: torch.Tensor,
) -> torch.Tensor:
    """The bound's term for each example's pair (s, t) in bits/dim [B]: KL(q(x_s | x_t, x0) ||
    N(mu(x0_hat, x_t), e^log_var)) where ab_s < 1, the decoder NLL -log p(x0 | x_t) where ab_s = 1.
    x0 (on the uint8 grid), x_t, x0_hat, log_var [B, C, H, W]; ab_t, ab_s [B, 1, 1, 1]."""
    is_decoder = ab_s == 1
    true_mean, true_var = q_posterior(x0, x_t, ab_t, ab_s)
    model_mean, _ = q_posterior(x0_hat, x_t, ab_t, ab_s)
    # the decoder's true variance is 0; its KL is not used, so give it a harmless log-variance
    true_log_var = torch.log(torch.where(is_decoder, 1.0, true_var)).to(log_var.dtype)
    kl = normal_kl_log_variance(true_mean, true_log_var, model_mean, log_var)
    nll = -discretized_gaussian_log_likelihood(x0, model_mean, torch.exp(0.5 * log_var))
    return torch.where(is_decoder, nll, kl).flatten(1).mean(1) / math.log(2)


def hybrid_loss(
    net: Callable[..., torch.Tensor],
    x0: torch.Tensor,
    t: torch.Tensor,
    eps: torch.Tensor,
    alpha_bar: torch.Tensor,
    *,
    prediction: Prediction = "eps",
    labels: torch.Tensor | None = None,
    sigma_data: float = 0.5,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(L_simple [B], L_vlb [B]) of a learned-variance network at timesteps t [B] for x0, eps
    [B, C, H, W] and the schedule's alpha_bar [T] (float64 for exact bounds): L_simple is the l2
    loss of the first C output channels against the prediction target; L_vlb (module docstring) is
    in bits/dim times T (the bound's one-sample estimate), with the mean from the detached
    prediction. The hybrid loss is
    L_simple + diffusion.vlb_weight L_vlb. sigma_data: for prediction "edm" (ddpm.edm). No host
    synchronisation."""
    shape = (-1,) + (1,) * (x0.ndim - 1)
    ab_t64 = alpha_bar[t].view(shape)
    ab_s64 = torch.where(t > 0, alpha_bar[(t - 1).clamp(min=0)], 1.0).view(shape)
    ab_t, ab_s = ab_t64.to(x0.dtype), ab_s64.to(x0.dtype)
    x_t = q_sample(x0, eps, ab_t)
    x_in = network_input(x_t, ab_t, prediction, sigma_data)
    prediction_out, v = split_output(net(x_in, t, labels).float(), x0.shape[1])
    target = prediction_target(x0, eps, ab_t, prediction, sigma_data=sigma_data)
    simple = per_example_loss(prediction_out, target, "l2")
    x0_hat = x0_from_prediction(
        prediction_out.detach(), x_t, ab_t, prediction, sigma_data=sigma_data
    )
    first = first_posterior_variance(alpha_bar)
    log_var = learned_range_log_variance(v, ab_t64, ab_s64, first_variance=first)
    vlb = vlb_bits_per_dim(x0, x_t, x0_hat, log_var, ab_t, ab_s)
    return simple, vlb * len(alpha_bar)
