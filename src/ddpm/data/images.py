"""Decoding folders of image files once into a cached uint8 array.

Each file is opened with PIL, converted to RGB or grayscale, centre-cropped and resized by a
caller-given function; a file that cannot be decoded is skipped with a warning naming it. The
result is cached under the user's cache folder (never beside the data), keyed by the file list,
sizes, modification times and the preprocessing, and memory-mapped on later runs, so a large
dataset is decoded once and then read from the page cache without filling memory.
"""

from __future__ import annotations

import contextlib
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
from ..files import atomic_output
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


def _load_cache(
    images_file: Path, kept_file: Path, *, num_files: int, shape: tuple[int, int, int]
) -> tuple[np.ndarray, np.ndarray] | None:
    """The cached (images, kept) pair; None when there is none, or when a file of it cannot be
    read or does not fit (truncated, garbage): that pair is deleted with a warning naming the file."""
    if not (images_file.exists() and kept_file.exists()):
        return None
    file = kept_file
    try:
        kept = np.load(kept_file, allow_pickle=False)
        if kept.dtype != np.int64 or kept.ndim != 1 or (len(kept) and kept.max() >= num_files):
            raise ValueError(f"{kept.dtype} {list(kept.shape)} is no index into {num_files} files")
        file = images_file
        images = np.load(images_file, mmap_mode="c", allow_pickle=False)
        if images.dtype != np.uint8 or images.shape != (len(kept), *shape):
            raise ValueError(
                f"{images.dtype} {list(images.shape)}, not uint8 {[len(kept), *shape]}"
            )
    except (OSError, ValueError, EOFError) as error:
        reason = str(error).splitlines()[0][:100] if str(error) else type(error).__name__
        log.warning("decoding the images again: the cached %s is unreadable (%s)", file, reason)
        for stale in (images_file, kept_file):
            with contextlib.suppress(OSError):
                stale.unlink(missing_ok=True)
        return None
    return images, kept


def _decode_into(
    file: Path, paths: Sequence[Path], *, preprocess: Preprocess, shape: tuple[int, int, int],
    progress: bool,
) -> np.ndarray:  # fmt: skip
    """Decode `paths` into a new .npy `file` of uint8 [N, C, H, W], N = the readable ones; returns
    the kept index [N]."""
    mode = "L" if shape[0] == 1 else "RGB"
    out = np.lib.format.open_memmap(file, mode="w+", dtype=np.uint8, shape=(len(paths), *shape))
    if hasattr(os, "posix_fallocate"):  # a full disk: an OSError now, not a SIGBUS mid-write
        with open(file, "rb+") as f:
            os.posix_fallocate(f.fileno(), 0, os.fstat(f.fileno()).st_size)
    kept = []
    with ThreadPoolExecutor(max_workers=min(8, (os.cpu_count() or 1) * 2)) as pool:
        decoded = pool.map(lambda p: _decode(p, preprocess, mode), paths, chunksize=64)
        for i, array in enumerate(tqdm(decoded, total=len(paths), desc="decoding images",
                                       disable=not progress or len(paths) < 2000)):  # fmt: skip
            if array is None:
                continue
            if array.shape != shape:
                raise DDPMError(f"{paths[i]} decoded to {array.shape}, expected {shape}")
            out[len(kept)] = array
            kept.append(i)
    images = np.array(out[: len(kept)]) if len(kept) < len(paths) else None
    out.flush()
    del out
    if images is not None:
        np.save(file, images)
    return np.asarray(kept, dtype=np.int64)


def decode_images(
    paths: Sequence[Path], *, preprocess: Preprocess, channels: int, size: int, recipe: dict,
    progress: bool = True,
) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """Decode `paths` -> (uint8 [N, C, size, size] (memory-mapped copy-on-write from the cache), kept index [N]).

    `recipe` names the preprocessing (dataset, crop, size, ...) so different recipes never share
    a cache entry. Files that fail to decode are left out; `kept` indexes the ones that remain.
    Both cache files are written atomically, the kept index last, so a pair whose index exists
    is complete; a damaged pair is decoded again (see _load_cache).
    """
    folder = cache_dir() / "decoded"
    key = _cache_key(paths, {**recipe, "size": size, "channels": channels})
    images_file, kept_file = folder / f"{key}.images.npy", folder / f"{key}.kept.npy"
    shape = (channels, size, size)
    cached = _load_cache(images_file, kept_file, num_files=len(paths), shape=shape)
    if cached is None:
        note = "the decode cache lives in $XDG_CACHE_HOME/ddpm (default ~/.cache/ddpm)"
        with atomic_output(images_file, note=note) as tmp:
            kept = _decode_into(tmp, paths, preprocess=preprocess, shape=shape, progress=progress)
        with atomic_output(kept_file, note=note) as tmp:
            np.save(tmp, kept)
        cached = np.load(images_file, mmap_mode="c"), kept
    _report_skipped(len(paths), len(cached[1]))
    return cached
