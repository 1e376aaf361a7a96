"""Dropout whose masks are a function of (seed, step, row of the global batch).

nn.Dropout draws from the global RNG: a resumed run replays other masks than the uninterrupted
one would have drawn (on a GPU the global state is not even restored), and under DDP every
process draws the same masks for its rows. Here the training step hands every dropout layer one
generator seeded by (train.seed, step) on the step's device; each layer draws the masks of the
whole global batch from it and keeps this process's rows, just as the step's noise is drawn. So
N processes apply the masks one process with the global batch would, and a resumed step applies
the masks the uninterrupted step would have.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..rng import global_batch_rows


@dataclass(eq=False)
class DropoutNoise:
    """The current training step's source of dropout masks, shared by every SeededDropout."""

    generator: torch.Generator
    rank: int = 0
    world_size: int = 1


class SeededDropout(nn.Module):
    """nn.Dropout(p) that draws its masks from `noise` when it is set (the training step sets it);
    without it, it is plain dropout on the global RNG (a U-Net used on its own)."""

    def __init__(self, p: float):
        super().__init__()
        self.p = p
        self.noise: DropoutNoise | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0:
            return x
        if self.noise is None:
            return F.dropout(x, self.p, training=True)
        noise = self.noise
        u = global_batch_rows(torch.rand, tuple(x.shape), noise.generator, rank=noise.rank,
                              world_size=noise.world_size)  # fmt: skip
        return x * ((u >= self.p).to(x.dtype) / (1 - self.p))

    def extra_repr(self) -> str:
        return f"p={self.p}"


def set_dropout_noise(module: nn.Module, noise: DropoutNoise | None) -> int:
    """Point every SeededDropout in `module` at `noise`; returns how many there are."""
    layers = [m for m in module.modules() if isinstance(m, SeededDropout)]
    for layer in layers:
        layer.noise = noise
    return len(layers)
