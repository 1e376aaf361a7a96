"""The dataset registry: each dataset's loader by name, loading a split fitted to the configured
size and channel count, and checking its labels against the model. The loaders import only
ImageData (image_data.py), never this registry."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from ..errors import DDPMError
from .celeba import load_celeba64
from .cifar import load_cifar10
from .digits import load_digits
from .folder import load_folder
from .image_data import ImageData, Split
from .mnist import load_mnist_like
from .resize import fit

if TYPE_CHECKING:
    from ..config import DataConfig


# each loader: (config, split, progress) -> the split; progress: a bar while images are decoded
def _digits(config: DataConfig, split: Split, progress: bool) -> ImageData:
    return load_digits(split)


def _mnist(config: DataConfig, split: Split, progress: bool) -> ImageData:
    return load_mnist_like("mnist", split, config.data_dir, config.download)


def _fashion_mnist(config: DataConfig, split: Split, progress: bool) -> ImageData:
    return load_mnist_like("fashion-mnist", split, config.data_dir, config.download)


def _cifar10(config: DataConfig, split: Split, progress: bool) -> ImageData:
    return load_cifar10(split, config.data_dir)


def _celeba64(config: DataConfig, split: Split, progress: bool) -> ImageData:
    return load_celeba64(config.data_dir, split, image_size=config.image_size, progress=progress)


def _folder(config: DataConfig, split: Split, progress: bool) -> ImageData:
    return load_folder(
        config.data_dir, split, image_size=config.image_size, channels=config.channels,
        labels_from_subfolders=config.labels_from_subfolders, progress=progress,
    )  # fmt: skip


DATASETS: dict[str, Callable[[DataConfig, Split, bool], ImageData]] = {
    "digits": _digits, "mnist": _mnist, "fashion-mnist": _fashion_mnist, "cifar10": _cifar10,
    "celeba64": _celeba64, "folder": _folder,
}  # fmt: skip


def load_dataset(
    config: DataConfig, split: Split = "train", *, limit: int | None = None, progress: bool = True
) -> ImageData:
    """Load a split of config.dataset and fit it to config.image_size and config.channels;
    limit: keep only its first `limit` images (an evaluation's reference set); progress: a bar
    while a large folder is decoded the first time."""
    if config.dataset not in DATASETS:
        raise DDPMError(f"unknown dataset {config.dataset!r}; known: {', '.join(sorted(DATASETS))}")
    data = DATASETS[config.dataset](config, split, progress)
    if limit is not None and limit < len(data):
        labels = None if data.labels is None else data.labels[:limit]
        data = ImageData(data.images[:limit], labels, data.num_classes, data.name)
    return fit(data, image_size=config.image_size, channels=config.channels, mode=config.fit)


def check_labels(data: ImageData, num_classes: int) -> None:
    """A class-conditional model (num_classes > 0) needs labels that fit its label embedding."""
    if not num_classes:
        return
    if data.labels is None:
        raise DDPMError(
            f"model.num_classes={num_classes}, but dataset {data.name} has no labels "
            f"(for a folder: put each class's images in its own sub-folder and set "
            f"data.labels_from_subfolders=true)"
        )
    if data.num_classes > num_classes:
        raise DDPMError(
            f"dataset {data.name} has {data.num_classes} classes but "
            f"model.num_classes={num_classes}"
        )
