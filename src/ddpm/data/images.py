"""Decoding folders of image files once into a cached uint8 array.

Each file is opened with PIL, converted to RGB or grayscale, and centre-cropped and resized by a
caller-given function (from ddpm.data.resize) in ddpm.data.decode, which also holds the policy for
huge images; a file that cannot be decoded, or is over the pixel limit, is skipped with a warning
naming it, and images upscaled more than 2x are counted in one warning per load. The result is
cached under the user's cache folder (never beside the data), keyed by the file list,
sizes, modification times and the preprocessing, and memory-mapped on later runs, so a large
dataset is decoded once and then read from the page cache without filling memory.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from ..errors import DDPMError
from ..files import atomic_output
from ..safe_text import printable
from .cache import cache_dir
from .decode import (
    SMALL_FACTOR,
    Decoded,
    Preprocess,
    Unusable,
    decode_file,
    is_small,
    pil_bomb_warnings_silenced,
)

log = logging.getLogger(__name__)
EXTENSIONS = {".png", ".jpg", ".jpeg", ".webp", ".bmp"}
CACHE_FORMAT = 3  # kept file [N, 3]: file index, width, height; 3: 16-bit grey scaled, not clipped


def list_images(root: Path) -> list[Path]:
    """Image files below `root`, recursively, in a stable (sorted) order."""
    if not root.is_dir():
        raise DDPMError(f"image folder not found: {printable(root)}")
    return sorted(p for p in root.rglob("*") if p.suffix.lower() in EXTENSIONS and p.is_file())


def _decode(path: Path, preprocess: Preprocess, mode: str, size: int) -> Decoded | str:
    """The decoded file, or why it is skipped (logged as a warning naming the file)."""
    try:
        return decode_file(path, preprocess, mode, size=size)
    except Unusable as error:
        log.warning("skipping %s: %s", printable(path), printable(error))
        return str(error)


def _report(paths: Sequence[Path], kept: np.ndarray, size: int) -> None:
    """One warning for the skipped files and one for the images upscaled more than 2x."""
    if len(paths) - len(kept):
        log.warning("skipped %d of %d files that are not readable images or are over the pixel "
                    "limit", len(paths) - len(kept), len(paths))  # fmt: skip
    small = [(i, w, h) for i, w, h in kept.tolist() if is_small(w, h, size)]
    if small:
        i, w, h = min(small, key=lambda row: min(row[1:]))
        log.warning("%d of %d images are upscaled more than %dx to %dx%d (shorter side under "
                    "%d pixels; the smallest: %s, %dx%d)", len(small), len(kept), SMALL_FACTOR,
                    size, size, -(-size // SMALL_FACTOR), printable(paths[i]), w, h)  # fmt: skip


def _cache_key(paths: Sequence[Path], recipe: dict[str, object]) -> str:
    digest = hashlib.sha256(json.dumps(recipe, sort_keys=True).encode())
    for path in paths:
        stat = path.stat()
        # fsencode: a name that is not UTF-8 hashes as its own bytes instead of raising
        digest.update(
            os.fsencode(path.resolve()) + f"\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode()
        )
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
        if (kept.dtype != np.int64 or kept.ndim != 2 or kept.shape[1] != 3
                or (len(kept) and (kept.min() < 0 or kept[:, 0].max() >= num_files))):  # fmt: skip
            raise ValueError(f"{kept.dtype} {list(kept.shape)} is no index into {num_files} files")
        file = images_file
        images = np.load(images_file, mmap_mode="c", allow_pickle=False)
        if images.dtype != np.uint8 or images.shape != (len(kept), *shape):
            raise ValueError(
                f"{images.dtype} {list(images.shape)}, not uint8 {[len(kept), *shape]}"
            )
    except (OSError, ValueError, EOFError) as error:
        reason = str(error).splitlines()[0][:100] if str(error) else type(error).__name__
        log.warning("decoding the images again: the cached %s is unreadable (%s)",
                    printable(file), printable(reason))  # fmt: skip
        for stale in (images_file, kept_file):
            with contextlib.suppress(OSError):
                stale.unlink(missing_ok=True)
        return None
    return images, kept


def _decode_into(
    file: Path, paths: Sequence[Path], *, preprocess: Preprocess, shape: tuple[int, int, int],
    where: str, progress: bool,
) -> np.ndarray:  # fmt: skip
    """Decode `paths` into a new .npy `file` of uint8 [N, C, H, W], N = the usable ones; returns
    int64 [N, 3]: each one's index into `paths`, width and height. None usable: a DDPMError."""
    mode = "L" if shape[0] == 1 else "RGB"
    out = np.lib.format.open_memmap(file, mode="w+", dtype=np.uint8, shape=(len(paths), *shape))
    if hasattr(os, "posix_fallocate"):  # a full disk: an OSError now, not a SIGBUS mid-write
        with open(file, "rb+") as f:
            os.posix_fallocate(f.fileno(), 0, os.fstat(f.fileno()).st_size)
    kept: list[tuple[int, int, int]] = []  # (index into paths, width, height)
    first_skipped = None
    with (
        pil_bomb_warnings_silenced(),
        ThreadPoolExecutor(max_workers=min(8, (os.cpu_count() or 1) * 2)) as pool,
    ):
        decoded = pool.map(lambda p: _decode(p, preprocess, mode, shape[1]), paths)
        for i, result in enumerate(tqdm(decoded, total=len(paths), desc="decoding images",
                                        disable=not progress or len(paths) < 2000)):  # fmt: skip
            if isinstance(result, str):
                first_skipped = first_skipped or f"{printable(paths[i])}: {printable(result)}"
                continue
            if result.array.shape != shape:
                raise DDPMError(f"{printable(paths[i])} decoded to {result.array.shape}, "
                                f"expected {shape}")  # fmt: skip
            out[len(kept)] = result.array
            kept.append((i, result.width, result.height))
    if not kept:
        raise DDPMError(f"none of the {len(paths)} files in {where} is a usable image "
                        f"(first: {first_skipped})")  # fmt: skip
    images = np.array(out[: len(kept)]) if len(kept) < len(paths) else None
    out.flush()
    del out
    if images is not None:
        np.save(file, images)
    return np.asarray(kept, dtype=np.int64)


def decode_images(
    paths: Sequence[Path], *, preprocess: Preprocess, channels: int, size: int,
    recipe: dict[str, object], where: str, progress: bool = True,
) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """Decode `paths` -> (uint8 [N, C, size, size], memory-mapped copy-on-write from the cache;
    kept index [N]).

    `recipe` names the preprocessing (dataset, crop, size, ...) so different recipes never share
    a cache entry. Files that fail to decode or are over the pixel limit are left out; `kept`
    indexes the ones that remain; none usable is a DDPMError naming `where` (e.g. the folder and
    split) and the first file skipped. Both cache files are written atomically, the kept index
    last, so a pair whose index exists is complete; a damaged pair is decoded again (see
    _load_cache). The warnings (skipped files, images upscaled more than 2x) repeat on every load,
    from the cache too.
    """
    folder = cache_dir() / "decoded"
    key = _cache_key(paths, {**recipe, "size": size, "channels": channels, "format": CACHE_FORMAT})
    images_file, kept_file = folder / f"{key}.images.npy", folder / f"{key}.kept.npy"
    shape = (channels, size, size)
    cached = _load_cache(images_file, kept_file, num_files=len(paths), shape=shape)
    if cached is None:
        note = "the decode cache lives in $XDG_CACHE_HOME/ddpm (default ~/.cache/ddpm)"
        with atomic_output(images_file, note=note) as tmp:
            kept = _decode_into(tmp, paths, preprocess=preprocess, shape=shape, where=where,
                                progress=progress)  # fmt: skip
        with atomic_output(kept_file, note=note) as tmp:
            np.save(tmp, kept)
        cached = np.load(images_file, mmap_mode="c"), kept
    images, kept = cached
    _report(paths, kept, size)
    return images, kept[:, 0]
