"""CIFAR-10 from the official python batches (cifar-10-batches-py/data_batch_1..5, test_batch).

The batches are pickles; they are read with an unpickler that admits only the numpy array
constructors and plain containers, so a crafted file cannot run code.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import torch

from ..errors import DDPMError
from .dataset import ImageData, Split

FOLDER = "cifar-10-batches-py"
BATCHES = {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]}
ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
           ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode")}  # fmt: skip


class _SafeUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if (module, name) not in ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}")
        return super().find_class(module, name)


def read_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """One batch file -> (images uint8 [N, 3, 32, 32], labels int64 [N])."""
    try:
        with open(path, "rb") as f:
            batch = _SafeUnpickler(f, encoding="bytes").load()
        data = np.asarray(batch[b"data"], dtype=np.uint8)
        labels = np.asarray(batch[b"labels"], dtype=np.int64)
        images = data.reshape(-1, 3, 32, 32)
    except FileNotFoundError:
        raise DDPMError(f"CIFAR-10 batch not found: {path}") from None
    except Exception as error:  # truncated, not a pickle, wrong keys or shapes: a damaged file
        raise DDPMError(f"{path} is not a valid CIFAR-10 batch ({type(error).__name__}: "
                        f"{str(error)[:100]})") from None  # fmt: skip
    if len(images) != len(labels) or (labels.size and (labels.min() < 0 or labels.max() > 9)):
        raise DDPMError(f"{path} has {len(images)} images but {len(labels)} labels in 0..9")
    return images, labels


def find_root(data_dir: str | None) -> Path:
    roots = [Path(data_dir)] if data_dir else []
    roots.append(Path("data"))
    for root in roots:
        for folder in (root, root / FOLDER):
            if (folder / "test_batch").is_file():
                return folder
    looked = ", ".join(f"{r} and {r / FOLDER}" for r in roots)
    raise DDPMError(f"CIFAR-10 python batches not found in {looked}; download and unpack "
                    f"cifar-10-python.tar.gz and pass --data-dir")  # fmt: skip


def load_cifar10(split: Split, data_dir: str | None) -> ImageData:
    root = find_root(data_dir)
    parts = [read_batch(root / name) for name in BATCHES[split]]
    images = np.concatenate([p[0] for p in parts])
    labels = np.concatenate([p[1] for p in parts])
    return ImageData(images=torch.from_numpy(images), labels=torch.from_numpy(labels),
                     num_classes=10, name="cifar10")  # fmt: skip
