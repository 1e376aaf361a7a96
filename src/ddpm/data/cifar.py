"""CIFAR-10 from the official python batches (cifar-10-batches-py/data_batch_1..5, test_batch).

The batches are pickles, read with an unpickler that admits only plain containers and the numpy
calls that rebuild an array from the bytes in the file, so a crafted file can neither run code
nor make an array of a size it merely declares (numpy.ndarray(shape) would allocate it: it is
not admitted, and _reconstruct only makes the empty array that pickle fills). The file's size is
bounded before it is read, and its contents are checked against the format (uint8 data
[N <= 10,000, 3072], N int labels in 0..9) before anything is converted, so a nested list
standing in for the data cannot inflate into gigabytes either.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import DDPMError
from ..safe_text import printable
from .image_data import ImageData, Split
from .roots import find_root, search_roots

FOLDER = "cifar-10-batches-py"
BATCHES = {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]}
MAX_IMAGES = 10_000  # per batch file
ROW = 3 * 32 * 32  # one image: 1024 red, 1024 green, 1024 blue values, each row-major 32x32
MAX_FILE_BYTES = 40_000_000  # the official batches hold 31.0 MB


class _ArrayType:
    """Stands for numpy.ndarray inside a pickle: accepted by _reconstruct, not callable."""

    def __init__(self) -> None:
        raise pickle.UnpicklingError("refusing to call numpy.ndarray")


def _reconstruct(subtype: object, shape: object, dtype: object) -> np.ndarray:
    """numpy's pickle helper, limited to the empty array that the pickle's state then fills
    (numpy checks that the state's bytes match the shape it gives)."""
    if subtype is not _ArrayType or shape != (0,):
        raise pickle.UnpicklingError("refusing an array not built from the file's own bytes")
    return np.empty(0, dtype=np.int8)


CLASSES = {("numpy.core.multiarray", "_reconstruct"): _reconstruct,
           ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
           ("numpy", "ndarray"): _ArrayType, ("numpy", "dtype"): np.dtype}  # fmt: skip


class _SafeUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:  # as pickle.Unpickler.find_class
        if (module, name) == ("_codecs", "encode"):  # Python 2's byte strings
            return super().find_class(module, name)
        if (module, name) not in CLASSES:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}")
        return CLASSES[module, name]


def _describe(value: object) -> str:
    if isinstance(value, np.ndarray):
        return f"{value.dtype} {list(value.shape)}"
    return type(value).__name__


def _check_contents(batch: object) -> tuple[np.ndarray, np.ndarray]:
    """(images uint8 [N, 3, 32, 32], labels int64 [N]) of an unpickled batch; ValueError unless
    it has the official format. Nothing larger than the batch is allocated before the checks."""
    if not isinstance(batch, dict):
        raise ValueError(f"a {type(batch).__name__}, not a dict")
    data, labels = batch.get(b"data"), batch.get(b"labels")
    if not (isinstance(data, np.ndarray) and data.dtype == np.uint8 and data.ndim == 2
            and data.shape[1] == ROW and 1 <= len(data) <= MAX_IMAGES):  # fmt: skip
        raise ValueError(f"data is {_describe(data)}, expected uint8 [N, {ROW}], "
                         f"1 <= N <= {MAX_IMAGES:,}")  # fmt: skip
    if isinstance(labels, np.ndarray) and labels.dtype.kind in "iu" and labels.ndim == 1:
        labels = labels.tolist()
    if not (isinstance(labels, list) and len(labels) == len(data)
            and all(type(v) is int and 0 <= v <= 9 for v in labels)):  # fmt: skip
        raise ValueError(f"labels are not {len(data):,} ints in 0..9 (one per image)")
    return data.reshape(-1, 3, 32, 32), np.array(labels, dtype=np.int64)


def read_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """One batch file -> (images uint8 [N, 3, 32, 32], labels int64 [N])."""
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size > MAX_FILE_BYTES:
                raise ValueError(f"{size:,} bytes, over the {MAX_FILE_BYTES:,} of a batch")
            return _check_contents(_SafeUnpickler(f, encoding="bytes").load())
    except FileNotFoundError:
        raise DDPMError(f"CIFAR-10 batch not found: {printable(path)}") from None
    except Exception as error:  # truncated, not a pickle, wrong keys, shapes or types
        reason = printable(str(error)[:120])
        raise DDPMError(f"{printable(path)} is not a valid CIFAR-10 batch "
                        f"({type(error).__name__}: {reason})") from None  # fmt: skip


def locate(data_dir: str | None) -> Path:
    """The folder holding the batch files."""
    roots = search_roots(data_dir, Path("data"))
    root = find_root(roots, [FOLDER], lambda folder: (folder / "test_batch").is_file())
    if root is None:
        looked = ", ".join(f"{printable(r)} and {printable(r / FOLDER)}" for r in roots)
        raise DDPMError(f"CIFAR-10 python batches not found in {looked}; download and unpack "
                        f"cifar-10-python.tar.gz and set data.data_dir")  # fmt: skip
    return root


def load_cifar10(split: Split, data_dir: str | None) -> ImageData:
    root = locate(data_dir)
    parts = [read_batch(root / name) for name in BATCHES[split]]
    images = np.concatenate([p[0] for p in parts])
    labels = np.concatenate([p[1] for p in parts])
    return ImageData(images=torch.from_numpy(images), labels=torch.from_numpy(labels),
                     num_classes=10, name="cifar10")  # fmt: skip
