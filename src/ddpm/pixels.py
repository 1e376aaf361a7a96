"""The one conversion between stored pixels and the model's data: uint8 [0, 255] <-> [-1, 1].

Data lives in [-1, 1] inside the model and in uint8 at the edges (datasets, sample files, PNGs).
"""

from __future__ import annotations

import torch


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """Float images in [-1, 1] (any shape) -> uint8 [0, 255], clamped, rounding to nearest."""
    return ((images.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)


def from_uint8(pixels: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """uint8 [0, 255] (or floats on that scale, e.g. resized pixels), any shape -> `dtype` in
    [-1, 1], on the input's device. One new tensor, scaled in place: the training loop calls this
    on every batch, so no temporaries; the input is never modified."""
    return pixels.to(dtype, copy=True).div_(127.5).sub_(1.0)
