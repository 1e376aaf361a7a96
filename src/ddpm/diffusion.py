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
    prediction  what the network outputs: "eps" (Ho et al.), "x0", or "v"

Every formula takes the pair (ab_t, ab_s), so respaced DDPM and DDIM share them: the one-step
variance between s and t is beta'_t = 1 - ab_t / ab_s (Nichol & Dhariwal 2021, Eq. 19).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch
import torch.nn.functional as F

from .errors import DDPMError

Prediction = Literal["eps", "x0", "v"]
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


def x0_from_prediction(
    output: torch.Tensor, x_t: torch.Tensor, ab_t: Coefficient, prediction: Prediction
) -> torch.Tensor:
    """Turn a network's raw output of the given prediction type into an estimate of x0."""
    if prediction == "eps":
        return x0_from_eps(x_t, output, ab_t)
    if prediction == "x0":
        return output
    if prediction == "v":
        return x0_from_v(x_t, output, ab_t)
    raise DDPMError(f"unknown prediction type {prediction!r}; known: eps, x0, v")


def prediction_target(
    x0: torch.Tensor, eps: torch.Tensor, ab_t: Coefficient, prediction: Prediction
) -> torch.Tensor:
    """What a network of the given prediction type should output for (x0, eps) at ab_t."""
    if prediction == "eps":
        return eps
    if prediction == "x0":
        return x0
    if prediction == "v":
        return v_from_x0_eps(x0, eps, ab_t)
    raise DDPMError(f"unknown prediction type {prediction!r}; known: eps, x0, v")


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
) -> torch.Tensor:
    """The denoising objective per example [B]: noise x0 to x_t, ask `net(x_t, t, labels)` for the
    prediction target, compare with `loss_type`. `ab_t` is alpha_bar[t] broadcast to x0's shape."""
    x_t = q_sample(x0, eps, ab_t)
    output = net(x_t, t, labels)
    return per_example_loss(output, prediction_target(x0, eps, ab_t, prediction), loss_type)
