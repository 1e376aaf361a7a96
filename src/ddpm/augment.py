"""Non-leaky geometric augmentation (Karras et al. 2022, "EDM", Appendix: augmentation
regularization, config F; the idea of Karras et al. 2020's adaptive discriminator augmentation
carried to diffusion).

Each training image gets, each with probability p independently, a horizontal flip, a vertical
flip, a rotation by 90, 180 or 270 degrees and an integer translation of up to 1/8 of the image
size (borders filled by reflection, as EDM's pipeline pads: a constant border would add straight
edges that no data image has). The image is noised after it is augmented, and the parameters of
what was done form a vector [B, AUGMENT_DIM] given to the network as conditioning:

    [xflip, yflip, cos(theta) - 1, sin(theta), tx / m, ty / m]

(theta = k pi / 2 the rotation, (tx, ty) the shift in pixels, m = image_size // 8 the largest),
which is exactly zero for an image that was not augmented. Sampling passes no vector (zeros), so
the network generates un-augmented images: the augmentation does not leak into the samples, unlike
`data.random_flip`, which trains on flipped images as if they were data.

Order, as EDM's pipeline applies them: x-flip, y-flip, rotation, translation. Images are square
(data.image_size), which rotations by 90 degrees need.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .errors import DDPMError
from .rng import global_batch_rows

AUGMENT_DIM = 6  # [xflip, yflip, cos - 1, sin, tx / m, ty / m]


@dataclass(frozen=True)
class AugmentDraws:
    """The random numbers of one batch's augmentation.

    gates: [B, 4] uniform in [0, 1): transform j (x-flip, y-flip, rotation, translation) is
        applied where gates[:, j] < p.
    quarter_turns: LongTensor [B] in {1, 2, 3}: the rotation, counter-clockwise, if applied.
    shift: LongTensor [B, 2] (tx, ty) in [-m, m], not both 0: the translation, if applied.
    """

    gates: torch.Tensor
    quarter_turns: torch.Tensor
    shift: torch.Tensor


def max_shift(size: int) -> int:
    """The largest translation in pixels for images of side `size`: size // 8 (EDM's 1/8)."""
    return size // 8


def draw_augment(
    generator: torch.Generator, batch: int, *, size: int, rank: int = 0, world_size: int = 1
) -> AugmentDraws:
    """This process's rows of the global batch's draws (ddpm.rng.global_batch_rows), on the
    generator's device: gates, then quarter turns, then shifts. A shift is one of the
    (2m + 1)^2 - 1 non-zero offsets, uniformly; with m = 0 (images under 8 pixels) all zeros."""

    def mine(draw: Callable[..., torch.Tensor], shape: tuple[int, ...]) -> torch.Tensor:
        return global_batch_rows(draw, shape, generator, rank=rank, world_size=world_size)

    m = max_shift(size)
    gates = mine(torch.rand, (batch, 4))
    turns = mine(lambda shape, **kw: torch.randint(1, 4, shape, **kw), (batch,))
    side = 2 * m + 1
    # index into the side x side grid of offsets, skipping the centre (0, 0)
    index = mine(lambda shape, **kw: torch.randint(side * side - 1, shape, **kw), (batch,))
    index = index + (index >= side * side // 2).long()
    shift = torch.stack([index % side - m, index // side - m], dim=1)
    return AugmentDraws(gates=gates, quarter_turns=turns, shift=shift)


def _where(mask: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.where(mask[:, None, None, None], a, b)


def translate_reflect(x: torch.Tensor, shift: torch.Tensor, m: int) -> torch.Tensor:
    """x [B, C, H, W] moved by shift [B, 2] = (tx, ty) pixels (right, down), |tx|, |ty| <= m:
    out[b, :, i, j] = x[b, :, i - ty, j - tx], the borders reflected (without repeating the edge
    pixel, torch's "reflect")."""
    if m == 0:
        return x
    batch, _, height, width = x.shape
    padded = F.pad(x, (m, m, m, m), mode="reflect")
    rows = torch.arange(height, device=x.device)[None] + (m - shift[:, 1:2])  # [B, H]
    cols = torch.arange(width, device=x.device)[None] + (m - shift[:, 0:1])  # [B, W]
    b = torch.arange(batch, device=x.device)[:, None, None]
    # advanced indices around a slice: the result is [B, H, W, C]
    return padded[b, :, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)


def augment(
    x0: torch.Tensor, draws: AugmentDraws, *, p: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """x0 [B, C, H, W] (H == W) -> (augmented x0 [B, C, H, W], parameters [B, AUGMENT_DIM] in
    x0's dtype, zero exactly for the rows left as they were). Pure: the randomness is `draws`."""
    if x0.shape[-1] != x0.shape[-2]:
        raise DDPMError(
            f"data.augment_p needs square images (rotations by 90 degrees), got "
            f"{x0.shape[-2]}x{x0.shape[-1]}"
        )
    m = max_shift(x0.shape[-1])
    on = draws.gates < p  # [B, 4]
    xflip, yflip, rotate = on[:, 0], on[:, 1], on[:, 2]
    translate = on[:, 3] & (m > 0)
    x = _where(xflip, x0.flip(-1), x0)
    x = _where(yflip, x.flip(-2), x)
    k = torch.where(rotate, draws.quarter_turns, torch.zeros_like(draws.quarter_turns))
    for turns in (1, 2, 3):
        x = _where(k == turns, x.rot90(turns, dims=(-2, -1)), x)
    shift = torch.where(translate[:, None], draws.shift, torch.zeros_like(draws.shift))
    x = translate_reflect(x, shift, m)
    # cos(k pi / 2) - 1 and sin(k pi / 2), exact, in integers first (no -0.0)
    cos_minus_1 = (-(k == 1).long() - 2 * (k == 2).long() - (k == 3).long()).to(x0.dtype)
    sin = ((k == 1).long() - (k == 3).long()).to(x0.dtype)
    scaled_shift = shift.to(x0.dtype) / max(m, 1)
    params = torch.stack(
        [xflip.to(x0.dtype), yflip.to(x0.dtype), cos_minus_1, sin, *scaled_shift.unbind(1)], dim=1
    )
    return x, params
