"""RePaint's resampling (Lugmayr et al. 2022, "RePaint: Inpainting using Denoising Diffusion
Probabilistic Models", Sec. 4.2): the ancestral sampler walks back up the noise levels now and
then, so that what it generated and what a conditioning hook imposed (the known pixels) have
steps in which to agree.

States are indexed by position in the K descending sampling timesteps: state i is x at
timesteps[i], state K is x0. A denoising move goes from i to i + 1; a jump goes back from i to
i - jump with a draw of the forward process q(x_{t_{i-jump}} | x_{t_i}).
"""

from __future__ import annotations

import math

import torch

from .common import Generators, randn_like


def repaint_walk(num_steps: int, *, jump: int = 1, resample: int = 1) -> list[int]:
    """The states visited, from 0 (x_T) to num_steps (x0). Jump points are the states i >= jump
    whose remaining step count K - i is 1 more than a multiple of `jump` (RePaint's t = 0, j,
    2j, ... counted from the end); arriving at one by a denoising move jumps back `jump` states,
    `resample - 1` times in all, as their Algorithm 1 with U = resample and jump length j.
    resample = 1 is [0, 1, ..., K]: plain sampling. Denoiser evaluations: len - 1 minus the jumps
    (`walk_evaluations`)."""
    if num_steps < 1 or jump < 1 or resample < 1:
        raise ValueError(
            f"need num_steps, jump, resample >= 1, got {num_steps}, {jump}, {resample}"
        )
    left = {i: resample - 1 for i in range(jump, num_steps) if (num_steps - 1 - i) % jump == 0}
    walk, i = [0], 0
    while i < num_steps:
        i += 1
        walk.append(i)
        if left.get(i, 0) > 0:
            left[i] -= 1
            i -= jump
            walk.append(i)
    return walk


def walk_evaluations(walk: list[int]) -> int:
    """Denoising moves (one denoiser evaluation each) in a walk."""
    return sum(b > a for a, b in zip(walk, walk[1:]))


def forward_jump(
    x: torch.Tensor, ab_from: float, ab_to: float, generator: Generators
) -> torch.Tensor:
    """A draw of q(x_to | x_from) = N(sqrt(ab_to / ab_from) x, (1 - ab_to / ab_from) I) for a
    noisier ab_to <= ab_from: the forward process over several steps at once."""
    ratio = ab_to / ab_from
    return x * math.sqrt(ratio) + randn_like(x, generator) * math.sqrt(1 - ratio)
