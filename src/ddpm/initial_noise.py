"""The starting noise x_T of generated images, keyed so image i depends only on (seed, i)."""

from __future__ import annotations

import torch

from .rng import seeded_generator


def initial_noise(
    n: int,
    shape: tuple[int, int, int],
    *,
    seed: int,
    start: int = 0,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """x_T [n, C, H, W] ~ N(0, I) for images start..start+n-1 of a seed (shape = (C, H, W)):
    image i's noise depends only on (seed, i), not on the batch it is drawn in."""
    rows = [torch.randn(shape, generator=seeded_generator(seed, start + i)) for i in range(n)]
    return torch.stack(rows).to(device)
