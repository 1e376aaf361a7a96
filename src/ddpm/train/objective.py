"""The per-example training objective of a run's `diffusion.*` config, shared by the training step
and the validation loss so the two always measure the same thing."""

from __future__ import annotations

from collections.abc import Callable

import torch

from ..config import DiffusionConfig
from ..diffusion import gather, training_loss
from ..learned_variance import hybrid_loss
from ..noise_levels import loss_weights


def objective(
    net: Callable[..., torch.Tensor],
    x0: torch.Tensor,
    t: torch.Tensor,
    eps: torch.Tensor,
    alpha_bar_64: torch.Tensor,
    diffusion: DiffusionConfig,
    *,
    labels: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(loss [B], L_vlb [B] or None) for x0, eps [B, C, H, W] at timesteps t [B], with the
    schedule's alpha_bar [T] in float64 on x0's device.

    loss is diffusion.loss on the prediction target (Ho et al. 2020's L_simple for l2) times the
    per-t diffusion.loss_weight (ddpm.noise_levels), plus diffusion.vlb_weight L_vlb for the hybrid
    loss (Nichol & Dhariwal 2021, ddpm.learned_variance); L_vlb is returned unweighted too (the
    importance sampler's history). No host synchronisation."""
    d, vlb = diffusion, None
    ab_t = gather(alpha_bar_64, t, 1).float()  # [B]; the cast commutes with the indexing
    if d.loss == "hybrid":
        losses, vlb = hybrid_loss(net, x0, t, eps, alpha_bar_64, prediction=d.prediction,
                                  labels=labels, sigma_data=d.sigma_data)  # fmt: skip
    else:
        losses = training_loss(net, x0, t, eps, ab_t.view(-1, *([1] * (x0.ndim - 1))),
                               prediction=d.prediction, loss_type=d.loss, labels=labels,
                               sigma_data=d.sigma_data)  # fmt: skip
    weights = loss_weights(ab_t, loss_weight=d.loss_weight,
                           gamma=d.min_snr_gamma, prediction=d.prediction,
                           sigma_data=d.sigma_data)  # fmt: skip
    losses = losses if weights is None else losses * weights
    return (losses if vlb is None else losses + d.vlb_weight * vlb), vlb
