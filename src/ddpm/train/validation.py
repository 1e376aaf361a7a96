"""Validation loss: the training objective on the test split, made repeatable.

The first `num_images` test images, timesteps on a fixed evenly spaced grid over [0, T) (image i
gets t_i), and noise from a fixed seed: two evaluations of the same weights agree to the last
digit, and the number is comparable across checkpoints of a run.
"""

from __future__ import annotations

import torch

from ..builders import build_schedule
from ..config import RunConfig
from ..data import ImageData
from ..pixels import from_uint8
from ..rng import seeded_generator
from .objective import objective

VALIDATION_SEED = 20_200_619  # fixed: the validation noise never depends on the run's seed


@torch.inference_mode()
def validation_loss(
    net: torch.nn.Module,
    data: ImageData,
    config: RunConfig,
    *,
    num_images: int,
    batch_size: int = 256,
) -> float:
    """Mean per-example loss (config.diffusion.loss, prediction and loss_weight: the training
    objective, with diffusion.loss=hybrid L_simple + vlb_weight L_vlb) of `net` on test images."""
    device = next(net.parameters()).device
    n = min(num_images, len(data))
    T = config.diffusion.num_timesteps
    t_all = torch.linspace(0, T - 1, n).round().long()
    alpha_bar_64 = build_schedule(config).alpha_bar.to(device=device, dtype=torch.float64)
    # all the noise from one generator, so the number does not depend on batch_size
    eps_all = torch.randn((n, *data.images.shape[1:]), generator=seeded_generator(VALIDATION_SEED))
    was_training = net.training
    net.eval()
    total = torch.zeros((), dtype=torch.float64, device=device)
    for start in range(0, n, batch_size):
        x0 = from_uint8(data.images[start : min(start + batch_size, n)].to(device))
        t = t_all[start : start + len(x0)].to(device)
        eps = eps_all[start : start + len(x0)].to(device)
        losses, _ = objective(net, x0, t, eps, alpha_bar_64, config.diffusion)
        total += losses.double().sum()
    net.train(was_training)
    return float(total) / n
