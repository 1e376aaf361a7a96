"""Read and write sets of samples: an .npz with arr_0 uint8 [N, H, W, C] (the layout of OpenAI's
evaluation suite) or a folder of PNG/JPEG files, so that samples from any tool are scored alike."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from ..errors import DDPMError
from ..files import atomic_output

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".webp"}


def save_npz(images: torch.Tensor, path: str | Path) -> Path:
    """uint8 [N, C, H, W] -> `path` (exactly; .npz is not appended) with arr_0 uint8 [N, H, W, C],
    written atomically: a full disk is one DDPMError and leaves an earlier file intact."""
    path = Path(path)
    with atomic_output(path) as tmp, open(tmp, "wb") as f:  # a file object: numpy adds no suffix
        np.savez(f, arr_0=images.permute(0, 2, 3, 1).contiguous().numpy())
    return path


def _read_npz(path: Path) -> np.ndarray:
    try:
        with np.load(path, allow_pickle=False) as archive:
            if "arr_0" not in archive.files:
                raise DDPMError(
                    f"{path} has no arr_0 (found: {', '.join(archive.files) or 'none'})"
                )
            array = archive["arr_0"]
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as error:
        raise DDPMError(f"{path} is not a readable .npz ({str(error).splitlines()[0]})") from None
    if array.dtype != np.uint8 or array.ndim != 4 or array.shape[-1] not in (1, 3):
        raise DDPMError(
            f"{path}: arr_0 must be uint8 [N, H, W, C] with C = 1 or 3, got {array.dtype} "
            f"{list(array.shape)}"
        )
    return array


def _read_folder(path: Path) -> np.ndarray:
    files = sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise DDPMError(f"no image files ({', '.join(sorted(IMAGE_SUFFIXES))}) in {path}")
    arrays = []
    for file in files:
        try:
            with Image.open(file) as image:
                grey = image.mode in ("L", "I;16", "1", "LA")
                arrays.append(np.asarray(image.convert("L" if grey else "RGB")))
        except (OSError, UnidentifiedImageError) as error:
            raise DDPMError(f"cannot read image {file} ({error})") from None
    shapes = {a.shape for a in arrays}
    if len(shapes) > 1:
        raise DDPMError(f"images in {path} differ in size or channels: {sorted(shapes)[:3]}")
    stacked = np.stack(arrays)
    return stacked[..., None] if stacked.ndim == 3 else stacked


def load_samples(path: str | Path) -> torch.Tensor:
    """An .npz or an image folder -> uint8 [N, C, H, W]."""
    path = Path(path)
    if not path.exists():
        raise DDPMError(f"samples not found: {path}")
    array = _read_folder(path) if path.is_dir() else _read_npz(path)
    return torch.from_numpy(np.ascontiguousarray(array)).permute(0, 3, 1, 2).contiguous()


def match_channels(samples: torch.Tensor, channels: int) -> torch.Tensor:
    """Grey samples stored as RGB (equal channels) -> 1 channel, grey -> RGB; else unchanged."""
    if samples.shape[1] == channels:
        return samples
    if samples.shape[1] == 3 and channels == 1:
        if not torch.equal(samples[:, :1].expand_as(samples), samples):
            raise DDPMError("samples are colour images but the reference set is grey")
        return samples[:, :1].contiguous()
    return samples.expand(-1, 3, -1, -1).contiguous()
