"""Image datasets as uint8 [N, C, H, W] plus optional labels, the dataset registry, and fitting a
dataset to the configured size and channel count."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Literal

import torch
import torch.nn.functional as F

from ..errors import DDPMError

if TYPE_CHECKING:
    from ..config import DataConfig

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


def _digits(config: DataConfig, split: Split) -> ImageData:
    from .digits import load_digits

    return load_digits(split)


def _mnist(config: DataConfig, split: Split) -> ImageData:
    from .mnist import load_mnist_like

    return load_mnist_like("mnist", split, config.data_dir, config.download)


def _fashion_mnist(config: DataConfig, split: Split) -> ImageData:
    from .mnist import load_mnist_like

    return load_mnist_like("fashion-mnist", split, config.data_dir, config.download)


def _cifar10(config: DataConfig, split: Split) -> ImageData:
    from .cifar import load_cifar10

    return load_cifar10(split, config.data_dir)


def _celeba64(config: DataConfig, split: Split) -> ImageData:
    from .celeba import load_celeba64

    return load_celeba64(config.data_dir, split, image_size=config.image_size)


def _folder(config: DataConfig, split: Split) -> ImageData:
    from .folder import load_folder

    return load_folder(
        config.data_dir, split, image_size=config.image_size, channels=config.channels
    )


DATASETS: dict[str, Callable[[DataConfig, Split], ImageData]] = {
    "digits": _digits, "mnist": _mnist, "fashion-mnist": _fashion_mnist, "cifar10": _cifar10,
    "celeba64": _celeba64, "folder": _folder,
}  # fmt: skip


def load_dataset(config: DataConfig, split: Split = "train") -> ImageData:
    """Load a split of config.dataset and fit it to config.image_size and config.channels."""
    if config.dataset not in DATASETS:
        raise DDPMError(f"unknown dataset {config.dataset!r}; known: {', '.join(sorted(DATASETS))}")
    data = DATASETS[config.dataset](config, split)
    return fit(data, image_size=config.image_size, channels=config.channels, mode=config.fit)


def fit(data: ImageData, *, image_size: int, channels: int, mode: str = "resize") -> ImageData:
    """Convert channels (grey <-> RGB) and size: "pad" centres the images on a zero border when
    the target is larger by an even margin (MNIST 28 -> 32); otherwise antialiased resizing."""
    images = data.images
    c, h, w = images.shape[1:]
    if (c, h, w) == (channels, image_size, image_size):
        return data
    if c not in (1, 3) or channels not in (1, 3):
        raise DDPMError(f"cannot convert {c} channels to {channels} (data.channels)")
    x = images.float()
    if c == 1 and channels == 3:
        x = x.expand(-1, 3, -1, -1)
    elif c == 3 and channels == 1:
        x = (x * torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)).sum(1, keepdim=True)
    margin_h, margin_w = image_size - h, image_size - w
    if (
        mode == "pad"
        and margin_h >= 0
        and margin_w >= 0
        and margin_h % 2 == 0
        and margin_w % 2 == 0
    ):
        x = F.pad(x, (margin_w // 2, margin_w // 2, margin_h // 2, margin_h // 2))
    elif (h, w) != (image_size, image_size):
        x = F.interpolate(x, size=(image_size, image_size), mode="bilinear", antialias=True,
                          align_corners=False)  # fmt: skip
    return replace(data, images=x.round().clamp(0, 255).to(torch.uint8))


def check_labels(data: ImageData, num_classes: int) -> None:
    """A class-conditional model (num_classes > 0) needs labels that fit its label embedding."""
    if not num_classes:
        return
    if data.labels is None:
        raise DDPMError(
            f"model.num_classes={num_classes}, but dataset {data.name} has no labels "
            f"(for a folder: put each class's images in its own sub-folder)"
        )
    if data.num_classes > num_classes:
        raise DDPMError(
            f"dataset {data.name} has {data.num_classes} classes but "
            f"model.num_classes={num_classes}"
        )
