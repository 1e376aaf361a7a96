"""Diffusion math as pure functions over tensors (Ho et al. 2020; Song et al. 2020; Salimans & Ho 2022).

Glossary (names follow the papers):
    x0          clean data in [-1, 1], shape [B, C, H, W]
    x_t         noised data at timestep t, same shape
    eps         standard Gaussian noise, same shape
    t           LongTensor [B], 0-based: t = 0 is the first noising step, T - 1 the last
    beta_t      per-step noise variance of q(x_t | x_{t-1})
    alpha_bar   prod_{i<=t} (1 - beta_i): signal fraction of q(x_t | x_0)
    ab_t, ab_s  alpha_bar at a step t and an earlier step s < t, already gathered and broadcastable
                to x (a tensor [B, 1, 1, 1] or a Python float). s = -1 means "before any noise":
                ab_s = 1.
    v           Salimans & Ho 2022 velocity: sqrt(ab) eps - sqrt(1 - ab) x0
    prediction  what the network outputs: "eps" (Ho et al.), "x0", "v", or "edm" (Karras et al.
                2022's preconditioned F: the network sees c_in y and D = c_skip y + c_out F,
                with y = x_t / sqrt(ab); ddpm.edm)
    sigma_data  EDM's data standard deviation (used by prediction "edm" only)

Every formula takes the pair (ab_t, ab_s), so respaced DDPM and DDIM share them: the one-step
variance between s and t is beta'_t = 1 - ab_t / ab_s (Nichol & Dhariwal 2021, Eq. 19).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable
from typing import Literal

import torch
import torch.nn.functional as F

from .edm import edm_input_scale, edm_target, x0_from_edm
from .errors import DDPMError

Prediction = Literal["eps", "x0", "v", "edm"]
LossType = Literal["l2", "l1", "huber"]
Coefficient = torch.Tensor | float


def gather(values: torch.Tensor, t: torch.Tensor, ndim: int) -> torch.Tensor:
    """values[t] reshaped to [B, 1, ..., 1] with `ndim` dimensions in total, for broadcasting."""
    return values[t].reshape(-1, *([1] * (ndim - 1)))


def q_sample(x0: torch.Tensor, eps: torch.Tensor, ab_t: Coefficient) -> torch.Tensor:
    """Sample q(x_t | x_0) = N(sqrt(ab_t) x0, (1 - ab_t) I) (Ho et al. 2020, Eq. 4)."""
    return x0 * ab_t**0.5 + eps * (1 - ab_t) ** 0.5


def q_posterior(
    x0: torch.Tensor, x_t: torch.Tensor, ab_t: Coefficient, ab_s: Coefficient
) -> tuple[torch.Tensor, Coefficient]:
    """Mean and variance of q(x_s | x_t, x_0) for s < t (Ho et al. 2020, Eq. 6-7, on a pair of steps).

    With alpha'_t = ab_t / ab_s and beta'_t = 1 - alpha'_t:
        mean = sqrt(ab_s) beta'_t / (1 - ab_t) x0 + sqrt(alpha'_t) (1 - ab_s) / (1 - ab_t) x_t
        var  = (1 - ab_s) / (1 - ab_t) beta'_t
    At ab_s = 1 (the step to x_0) the mean is x0 and the variance 0.
    """
    alpha_step = ab_t / ab_s
    beta_step = 1 - alpha_step
    coef_x0 = ab_s**0.5 * beta_step / (1 - ab_t)
    coef_xt = alpha_step**0.5 * (1 - ab_s) / (1 - ab_t)
    variance = (1 - ab_s) / (1 - ab_t) * beta_step
    return coef_x0 * x0 + coef_xt * x_t, variance


def x0_from_eps(x_t: torch.Tensor, eps: torch.Tensor, ab_t: Coefficient) -> torch.Tensor:
    """Invert q_sample for x0 given the noise: (x_t - sqrt(1 - ab) eps) / sqrt(ab) (Eq. 15)."""
    return (x_t - (1 - ab_t) ** 0.5 * eps) / ab_t**0.5


def eps_from_x0(x_t: torch.Tensor, x0: torch.Tensor, ab_t: Coefficient) -> torch.Tensor:
    """Invert q_sample for the noise given x0: (x_t - sqrt(ab) x0) / sqrt(1 - ab)."""
    return (x_t - ab_t**0.5 * x0) / (1 - ab_t) ** 0.5


def v_from_x0_eps(x0: torch.Tensor, eps: torch.Tensor, ab_t: Coefficient) -> torch.Tensor:
    """Velocity target v = sqrt(ab) eps - sqrt(1 - ab) x0 (Salimans & Ho 2022, Sec. 4)."""
    return ab_t**0.5 * eps - (1 - ab_t) ** 0.5 * x0


def x0_from_v(x_t: torch.Tensor, v: torch.Tensor, ab_t: Coefficient) -> torch.Tensor:
    """x0 = sqrt(ab) x_t - sqrt(1 - ab) v (Salimans & Ho 2022, Appendix D)."""
    return ab_t**0.5 * x_t - (1 - ab_t) ** 0.5 * v


def network_input_scale(
    ab_t: Coefficient, prediction: Prediction, sigma_data: float = 0.5
) -> Coefficient:
    """The factor applied to x_t before the network sees it: EDM's c_in / sqrt(ab) for "edm"
    (ddpm.edm.edm_input_scale), 1 for eps, x0 and v (the network sees x_t itself)."""
    if prediction == "edm":
        return edm_input_scale(ab_t, sigma_data)
    if prediction in ("eps", "x0", "v"):
        return 1.0
    raise DDPMError(f"unknown prediction type {prediction!r}; known: eps, x0, v, edm")


def network_input(
    x_t: torch.Tensor, ab_t: Coefficient, prediction: Prediction, sigma_data: float = 0.5
) -> torch.Tensor:
    """What the network sees of x_t [B, C, H, W]: x_t * network_input_scale; x_t itself (no
    copy, no extra kernel) for the prediction types whose scale is 1."""
    scale = network_input_scale(ab_t, prediction, sigma_data)
    return x_t if prediction != "edm" else x_t * scale


def x0_from_prediction(
    output: torch.Tensor,
    x_t: torch.Tensor,
    ab_t: Coefficient,
    prediction: Prediction,
    *,
    sigma_data: float = 0.5,
) -> torch.Tensor:
    """Turn a network's raw output of the given prediction type into an estimate of x0."""
    if prediction == "eps":
        return x0_from_eps(x_t, output, ab_t)
    if prediction == "x0":
        return output
    if prediction == "v":
        return x0_from_v(x_t, output, ab_t)
    if prediction == "edm":
        return x0_from_edm(x_t, output, ab_t, sigma_data)
    raise DDPMError(f"unknown prediction type {prediction!r}; known: eps, x0, v, edm")


def prediction_target(
    x0: torch.Tensor,
    eps: torch.Tensor,
    ab_t: Coefficient,
    prediction: Prediction,
    *,
    sigma_data: float = 0.5,
) -> torch.Tensor:
    """What a network of the given prediction type should output for (x0, eps) at ab_t."""
    if prediction == "eps":
        return eps
    if prediction == "x0":
        return x0
    if prediction == "v":
        return v_from_x0_eps(x0, eps, ab_t)
    if prediction == "edm":
        return edm_target(x0, eps, ab_t, sigma_data)
    raise DDPMError(f"unknown prediction type {prediction!r}; known: eps, x0, v, edm")


def per_example_loss(
    output: torch.Tensor, target: torch.Tensor, loss_type: LossType = "l2"
) -> torch.Tensor:
    """Mean over all but the batch dimension of the elementwise loss: [B, ...] -> [B].

    l2 is L_simple (Ho et al. 2020, Eq. 14); huber is smooth-L1 with threshold 1.
    """
    output = output.float()
    if loss_type == "l2":
        elementwise = F.mse_loss(output, target, reduction="none")
    elif loss_type == "l1":
        elementwise = F.l1_loss(output, target, reduction="none")
    elif loss_type == "huber":
        elementwise = F.smooth_l1_loss(output, target, reduction="none", beta=1.0)
    else:
        raise DDPMError(f"unknown loss {loss_type!r}; known: l2, l1, huber")
    return elementwise.flatten(1).mean(dim=1)


def training_loss(
    net: Callable[..., torch.Tensor],
    x0: torch.Tensor,
    t: torch.Tensor,
    eps: torch.Tensor,
    ab_t: torch.Tensor,
    *,
    prediction: Prediction = "eps",
    loss_type: LossType = "l2",
    labels: torch.Tensor | None = None,
    sigma_data: float = 0.5,
) -> torch.Tensor:
    """The denoising objective per example [B]: noise x0 to x_t, ask `net(network_input(x_t), t,
    labels)` (x_t itself except for "edm": c_in y) for the prediction target, compare with
    `loss_type`. `ab_t` is alpha_bar[t] broadcast to x0's shape.

    Called inside the caller's autocast: the input scaling, the target and the loss run with
    autocast disabled, in x0's dtype (float32), so only the network runs in bf16/fp16."""
    with _without_autocast(x0.device):
        x_t = q_sample(x0, eps, ab_t)
        x_in = network_input(x_t, ab_t, prediction, sigma_data)
        target = prediction_target(x0, eps, ab_t, prediction, sigma_data=sigma_data)
    output = net(x_in, t, labels)
    with _without_autocast(x0.device):
        return per_example_loss(output, target, loss_type)


def _without_autocast(device: torch.device) -> contextlib.AbstractContextManager[None]:
    """Leave the caller's autocast region (if any) for float32 elementwise math."""
    if torch.is_autocast_enabled(device.type):
        return torch.autocast(device.type, enabled=False)
    return contextlib.nullcontext()


# --- The variational bound (Ho et al. 2020, Eq. 5 and 13), in nats, for bits/dim ---------------

BINS = 256  # uint8 data: x0 in [-1, 1] on the grid of 256 values 2/255 apart


def normal_kl(
    mean1: torch.Tensor, var1: Coefficient, mean2: torch.Tensor, var2: Coefficient
) -> torch.Tensor:
    """Elementwise KL(N(mean1, var1) || N(mean2, var2)) in nats (variances, not log-variances):
    0.5 (log(var2 / var1) + (var1 + (mean1 - mean2)^2) / var2 - 1)."""
    var1 = torch.as_tensor(var1, dtype=mean1.dtype, device=mean1.device)
    var2 = torch.as_tensor(var2, dtype=mean1.dtype, device=mean1.device)
    return 0.5 * (torch.log(var2 / var1) + (var1 + (mean1 - mean2) ** 2) / var2 - 1)


def discretized_gaussian_log_likelihood(
    x0: torch.Tensor, mean: torch.Tensor, std: Coefficient
) -> torch.Tensor:
    """Elementwise log p(x0) in nats of the decoder of Ho et al. 2020, Eq. 13: the mass of
    N(mean, std^2) over x0's bin [x0 - 1/255, x0 + 1/255], the edge bins extended to -inf and
    +inf. x0 must lie on the uint8 grid in [-1, 1]. Exact normal CDFs in log space (log_ndtr),
    so bins far in a tail give a finite log-mass instead of log(0)."""
    std = torch.as_tensor(std, dtype=mean.dtype, device=mean.device)
    half_bin = 1.0 / (BINS - 1)
    upper = (x0 + half_bin - mean) / std
    lower = (x0 - half_bin - mean) / std
    below_upper = torch.special.log_ndtr(upper)  # log P(z < upper)
    above_lower = torch.special.log_ndtr(-lower)  # log P(z > lower)
    # log(P(z < u) - P(z < l)), written from whichever side of the bell the bin lies on
    from_left = below_upper + _log1mexp(torch.special.log_ndtr(lower) - below_upper)
    from_right = above_lower + _log1mexp(torch.special.log_ndtr(-upper) - above_lower)
    middle = torch.where(lower + upper > 0, from_right, from_left)
    edge = 1 - half_bin  # halfway between the two outermost grid values and the edges
    return torch.where(x0 < -edge, below_upper, torch.where(x0 > edge, above_lower, middle))


def _log1mexp(a: torch.Tensor) -> torch.Tensor:
    """log(1 - exp(a)) for a <= 0: log(-expm1(a)) above -ln 2, log1p(-exp(a)) below (Maechler
    2012). `a` is clamped just below 0 and each branch kept in its own range, so value and gradient
    stay finite everywhere: a training loss (the hybrid loss's decoder term) would otherwise get
    NaN gradients from torch.where's unused branch (0 * inf)."""
    a = a.clamp(max=-1e-30)
    near = torch.log(-torch.expm1(a))
    far = torch.log1p(-torch.exp(a.clamp(max=-math.log(2))))
    return torch.where(a > -math.log(2), near, far)


def prior_kl(x0: torch.Tensor, ab_last: float) -> torch.Tensor:
    """L_T per example [B] in nats: KL(q(x_T | x_0) || N(0, I)), summed over dimensions."""
    mean = x0 * ab_last**0.5
    return normal_kl(mean, 1 - ab_last, torch.zeros_like(mean), 1.0).flatten(1).sum(1)
