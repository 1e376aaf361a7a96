"""Interpolating between starting noises: a strip of images that morphs from one seed's image to
another's when sampled with a deterministic sampler (`ddpm interpolate`)."""

from __future__ import annotations

import torch

from .initial_noise import initial_noise


def slerp(z0: torch.Tensor, z1: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Spherical interpolation between two noises [C, H, W] at weights [F] in [0, 1] -> [F, C, H, W]:
    sin((1 - w) theta) / sin(theta) z0 + sin(w theta) / sin(theta) z1, theta the angle between them
    (Shoemake 1985; as in Song et al. 2020, DDIM, Sec. 5.3). Keeps the norm typical of Gaussian noise,
    which linear interpolation would shrink."""
    a, b = z0.double().flatten(), z1.double().flatten()
    theta = torch.arccos((a @ b / (a.norm() * b.norm())).clamp(-1, 1))
    w = weights.double().reshape(-1, 1)
    if float(theta) < 1e-6:  # (nearly) parallel: linear interpolation is the limit
        rows = (1 - w) * a + w * b
    else:
        rows = (torch.sin((1 - w) * theta) * a + torch.sin(w * theta) * b) / torch.sin(theta)
    return rows.reshape(-1, *z0.shape).to(z0.dtype)


def interpolation_noise(
    seeds: tuple[int, int], num_frames: int, shape: tuple[int, int, int]
) -> torch.Tensor:
    """x_T [num_frames, C, H, W] from the starting noise of seed a's first image to seed b's
    (shape = (C, H, W)), slerped at num_frames evenly spaced weights; pass it to generate() as
    `noise`, so the strip's ends are the images generate(seed=a) and generate(seed=b) make."""
    z0, z1 = (initial_noise(1, shape, seed=seed)[0] for seed in seeds)
    return slerp(z0, z1, torch.linspace(0, 1, num_frames))
