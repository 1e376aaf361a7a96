"""MNIST and Fashion-MNIST from their official IDX files.

Looked for, in order: --data-dir itself and its torchvision-style sub-folders, ./data, and the
system folder where Debian's `dataset-fashion-mnist` installs the real files. Nothing is written
to those folders; a download (opt-in, `data.download=true`) goes to the user's cache.
"""

from __future__ import annotations

from pathlib import Path
from typing import TypedDict

import torch

from ..errors import DDPMError
from ..safe_text import printable
from .cache import cache_dir
from .idx import idx_shape, read_idx, shown_shape
from .image_data import ImageData, Split
from .roots import search_roots

FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
         "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}  # fmt: skip
COUNTS = {"train": 60000, "test": 10000}  # images in the official files of both data sets
SIDE = 28


class _Source(TypedDict):
    torchvision: str  # torchvision's class name (and its folder under data_dir)
    system: list[str]  # folders a system package installs the files in
    howto: str  # how to get the files, for the error when none are found


SOURCES: dict[str, _Source] = {
    "mnist": {"torchvision": "MNIST", "system": [], "howto": "download the four IDX files from "
              "the MNIST page, or pass --set data.download=true where the network is reachable"},
    "fashion-mnist": {"torchvision": "FashionMNIST", "system": ["/usr/share/datasets/fashion-mnist"],
                      "howto": "apt-get install dataset-fashion-mnist, or pass --set "
                      "data.download=true where the network is reachable"},
}  # fmt: skip


def candidate_folders(name: str, data_dir: str | None) -> list[Path]:
    """Where the IDX files of `name` are looked for, in order."""
    tv = SOURCES[name]["torchvision"]
    roots = search_roots(data_dir, Path("data"), cache_dir() / "datasets")
    folders = [f for root in roots for f in (root, root / name, root / tv / "raw")]
    return folders + [Path(p) for p in SOURCES[name]["system"]]


def _find(folder: Path, stem: str) -> Path | None:
    for candidate in (folder / stem, folder / f"{stem}.gz"):
        if candidate.is_file():
            return candidate
    return None


def locate(name: str, split: Split, data_dir: str | None) -> tuple[Path, Path] | None:
    images_stem, labels_stem = FILES[split]
    for folder in candidate_folders(name, data_dir):
        images, labels = _find(folder, images_stem), _find(folder, labels_stem)
        if images and labels:
            return images, labels
    return None


def _download(name: str) -> None:
    from torchvision import datasets

    root = cache_dir() / "datasets"
    cls = datasets.MNIST if name == "mnist" else datasets.FashionMNIST
    try:
        cls(str(root), train=True, download=True)
        cls(str(root), train=False, download=True)
    except Exception as error:  # any network or HTTP failure means "not downloadable here"
        raise DDPMError(f"could not download {name} ({str(error).splitlines()[0][:120]})") from None


def check_shapes(
    name: str, split: Split, images: Path, labels: Path
) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """The shapes the two headers declare, refused unless they are [N, 28, 28] and [N] with
    1 <= N <= the official count: checked before any data is read or memory allocated."""
    image_shape, label_shape = idx_shape(images), idx_shape(labels)
    count = COUNTS[split]
    if len(image_shape) != 3 or image_shape[1:] != (SIDE, SIDE) or not 1 <= image_shape[0] <= count:
        raise DDPMError(f"{printable(images)} declares {shown_shape(image_shape)}; {name} {split} "
                        f"images are [N, {SIDE}, {SIDE}] with 1 <= N <= {count:,}")  # fmt: skip
    if label_shape != image_shape[:1]:
        raise DDPMError(
            f"{printable(images)} and {printable(labels)} do not form an image/label pair "
            f"(shapes {shown_shape(image_shape)} and {shown_shape(label_shape)})"
        )
    return image_shape, label_shape


def load_mnist_like(name: str, split: Split, data_dir: str | None, download: bool) -> ImageData:
    """images uint8 [N, 1, 28, 28] and labels int64 [N] of MNIST or Fashion-MNIST."""
    found = locate(name, split, data_dir)
    if found is None and download:
        _download(name)
        found = locate(name, split, data_dir)
    if found is None:
        looked = ", ".join(printable(p) for p in candidate_folders(name, data_dir))
        raise DDPMError(f"{name} {split} files ({FILES[split][0]}[.gz]) not found in: {looked}; "
                        f"{SOURCES[name]['howto']}")  # fmt: skip
    image_shape, label_shape = check_shapes(name, split, *found)
    images = read_idx(found[0], shape=image_shape)
    labels = read_idx(found[1], shape=label_shape)
    if labels.max() > 9:
        raise DDPMError(f"{printable(found[1])} holds labels above 9")
    return ImageData(images=torch.from_numpy(images)[:, None],
                     labels=torch.from_numpy(labels.astype("int64")), num_classes=10, name=name)  # fmt: skip
