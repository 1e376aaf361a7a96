"""An image dataset split in memory: uint8 [N, C, H, W] plus optional labels.

Every loader returns one; the registry (dataset.py) imports the loaders, so this type lives
apart from it and the loaders never import the registry.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

Split = Literal["train", "test"]


@dataclass(frozen=True, eq=False)
class ImageData:
    """A dataset split. images: uint8 [N, C, H, W] (possibly memory-mapped); labels: int64 [N]
    or None; num_classes: 0 when unlabelled."""

    images: torch.Tensor
    labels: torch.Tensor | None
    num_classes: int
    name: str

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.ndim != 4:
            raise ValueError(
                f"images must be uint8 [N, C, H, W], got {self.images.dtype} {tuple(self.images.shape)}"
            )
        if self.labels is not None and self.labels.shape != (self.images.shape[0],):
            raise ValueError("labels must be [N]")

    def __len__(self) -> int:
        return int(self.images.shape[0])
