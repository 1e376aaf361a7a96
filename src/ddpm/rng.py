"""Randomness as explicit arguments: generators keyed by integers, and draws for a global batch.

Every random draw of a training step is a function of (seed, step, purpose) through
`step_generator`, and is drawn for the whole global batch (batch_size x processes rows) and then
sliced to this process's rows by `global_batch_rows`, so N processes draw exactly what one process
with the global batch would, and a resumed step what the uninterrupted one did.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch


def seeded_generator(*key: int, device: torch.device | str = "cpu") -> torch.Generator:
    """A generator whose seed is a hash of the integer `key` (e.g. (seed, step, stream) or
    (seed, image index)), so distinct keys give independent streams."""
    state = np.random.SeedSequence([abs(k) for k in key]).generate_state(2, dtype=np.uint32)
    generator = torch.Generator(device=device)
    generator.manual_seed(int(state[0]) << 31 | int(state[1]) >> 1)
    return generator


def step_generator(
    seed: int, step: int, stream: int, *, device: torch.device | str = "cpu"
) -> torch.Generator:
    """The generator on `device` for one purpose (`stream`) of one training step: 0 data order
    (per epoch), 1 flips, 2 t / noise / label dropout, 3 dropout masks, 4 augmentation."""
    return seeded_generator(seed, step, stream, device=device)


def global_batch_rows(
    draw: Callable[..., torch.Tensor],
    shape: tuple[int, ...],
    generator: torch.Generator,
    *,
    rank: int = 0,
    world_size: int = 1,
) -> torch.Tensor:
    """`draw((shape[0] * world_size, *shape[1:]), generator=..., device=...)` on the generator's
    device, sliced to rows rank * shape[0] ... (rank + 1) * shape[0] -> shape."""
    rows = shape[0]
    values = draw((rows * world_size, *shape[1:]), generator=generator, device=generator.device)
    return values[rank * rows : (rank + 1) * rows]
