"""In-memory image datasets: uint8 [N, C, H, W] plus optional labels, and the dataset registry."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch

from ..errors import DDPMError

Split = Literal["train", "test"]


@dataclass(frozen=True, eq=False)
class ImageData:
    """A dataset split held in memory. images: uint8 [N, C, H, W]; labels: int64 [N] or None."""

    images: torch.Tensor
    labels: torch.Tensor | None
    num_classes: int
    name: str

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.ndim != 4:
            raise ValueError(
                f"images must be uint8 [N, C, H, W], got {self.images.dtype} "
                f"{tuple(self.images.shape)}"
            )
        if self.labels is not None and self.labels.shape != (self.images.shape[0],):
            raise ValueError("labels must be [N]")

    def __len__(self) -> int:
        return int(self.images.shape[0])


Loader = Callable[[Split, str | None], ImageData]


def _digits(split: Split, data_dir: str | None) -> ImageData:
    from .digits import load_digits

    return load_digits(split)


DATASETS: dict[str, Loader] = {"digits": _digits}


def load_dataset(name: str, split: Split = "train", data_dir: str | None = None) -> ImageData:
    """Load a dataset split by name (see `DATASETS`)."""
    if name not in DATASETS:
        raise DDPMError(f"unknown dataset {name!r}; known: {', '.join(sorted(DATASETS))}")
    return DATASETS[name](split, data_dir)


def check_matches(data: ImageData, *, image_size: int, channels: int) -> None:
    """Raise DDPMError if the images are not channels x image_size x image_size."""
    _, c, h, w = data.images.shape
    if (c, h, w) != (channels, image_size, image_size):
        raise DDPMError(
            f"dataset {data.name} has images {c}x{h}x{w}, but the config asks for "
            f"{channels}x{image_size}x{image_size} (data.channels, data.image_size)"
        )
