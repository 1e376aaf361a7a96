"""Decoding folders of image files once into a cached uint8 array.

Each file is opened with PIL, converted to RGB or grayscale, centre-cropped and resized by a
caller-given function; a file that cannot be decoded is skipped with a warning naming it. The
result is cached under the user's cache folder (never beside the data), keyed by the file list,
sizes, modification times and the preprocessing, and memory-mapped on later runs, so a large
dataset is decoded once and then read from the page cache without filling memory.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError
from tqdm.auto import tqdm

from ..errors import DDPMError
from .cache import cache_dir

log = logging.getLogger(__name__)
EXTENSIONS = {".png", ".jpg", ".jpeg", ".webp", ".bmp"}
Preprocess = Callable[[Image.Image], Image.Image]


def list_images(root: Path) -> list[Path]:
    """Image files below `root`, recursively, in a stable (sorted) order."""
    if not root.is_dir():
        raise DDPMError(f"image folder not found: {root}")
    return sorted(p for p in root.rglob("*") if p.suffix.lower() in EXTENSIONS and p.is_file())


def _decode(path: Path, preprocess: Preprocess, mode: str) -> np.ndarray | None:
    try:
        with Image.open(path) as image:
            image.load()
            array = np.asarray(preprocess(image.convert(mode)), dtype=np.uint8)
    except (OSError, UnidentifiedImageError, ValueError, Image.DecompressionBombError) as error:
        log.warning("skipping %s: not a readable image (%s)", path, str(error)[:80])
        return None
    return array[None] if array.ndim == 2 else array.transpose(2, 0, 1)


def _report_skipped(total: int, kept: int) -> None:
    if total - kept:
        log.warning("skipped %d of %d files that are not readable images", total - kept, total)


def _cache_key(paths: Sequence[Path], recipe: dict) -> str:
    digest = hashlib.sha256(json.dumps(recipe, sort_keys=True).encode())
    for path in paths:
        stat = path.stat()
        digest.update(f"{path.resolve()}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:24]


def decode_images(
    paths: Sequence[Path], *, preprocess: Preprocess, channels: int, size: int, recipe: dict,
    progress: bool = True,
) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """Decode `paths` -> (uint8 [N, C, size, size] (memory-mapped copy-on-write from the cache), kept index [N]).

    `recipe` names the preprocessing (dataset, crop, size, ...) so different recipes never share
    a cache entry. Files that fail to decode are left out; `kept` indexes the ones that remain.
    """
    folder = cache_dir() / "decoded"
    key = _cache_key(paths, {**recipe, "size": size, "channels": channels})
    images_file, kept_file = folder / f"{key}.images.npy", folder / f"{key}.kept.npy"
    if images_file.exists() and kept_file.exists():
        kept = np.load(kept_file)
        _report_skipped(len(paths), len(kept))
        return np.load(images_file, mmap_mode="c"), kept
    mode = "L" if channels == 1 else "RGB"
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".{key}.{os.getpid()}.tmp.npy"
    out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8,
                                    shape=(len(paths), channels, size, size))  # fmt: skip
    kept = []
    with ThreadPoolExecutor(max_workers=min(8, (os.cpu_count() or 1) * 2)) as pool:
        decoded = pool.map(lambda p: _decode(p, preprocess, mode), paths, chunksize=64)
        for i, array in enumerate(tqdm(decoded, total=len(paths), desc="decoding images",
                                       disable=not progress or len(paths) < 2000)):  # fmt: skip
            if array is None:
                continue
            if array.shape != (channels, size, size):
                raise DDPMError(
                    f"{paths[i]} decoded to {array.shape}, expected {(channels, size, size)}"
                )
            out[len(kept)] = array
            kept.append(i)
    _report_skipped(len(paths), len(kept))
    images = np.array(out[: len(kept)]) if len(kept) < len(paths) else None
    del out
    if images is not None:
        np.save(tmp, images)
    np.save(kept_file, np.asarray(kept, dtype=np.int64))
    os.replace(tmp, images_file)
    return np.load(images_file, mmap_mode="c"), np.asarray(kept, dtype=np.int64)
