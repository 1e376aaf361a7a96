"""Read and write sets of samples: an .npz with arr_0 uint8 [N, H, W, C] (the layout of OpenAI's
evaluation suite) or a folder of PNG/JPEG files, so that samples from any tool are scored alike."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from ..data.decode import MAX_PIXELS, pil_bomb_warnings_silenced
from ..errors import DDPMError
from ..files import atomic_output
from ..resources import device_memory
from ..safe_text import printable

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".webp"}


def save_npz(images: torch.Tensor, path: str | Path) -> Path:
    """uint8 [N, C, H, W] -> `path` (exactly; .npz is not appended) with arr_0 uint8 [N, H, W, C],
    written atomically: a full disk is one DDPMError and leaves an earlier file intact."""
    path = Path(path)
    with atomic_output(path) as tmp, open(tmp, "wb") as f:  # a file object: numpy adds no suffix
        np.savez(f, arr_0=images.permute(0, 2, 3, 1).contiguous().numpy())
    return path


def _ram_bytes() -> int:
    return device_memory(torch.device("cpu")).total


def _check_npz_header(path: Path) -> None:
    """Refuse an .npz whose arr_0 declares more bytes than its archive member holds or than this
    machine's memory, from the .npy header alone: nothing is decompressed or allocated first."""
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
            if "arr_0.npy" not in names:
                shown = ", ".join(n.removesuffix(".npy") for n in names[:5]) or "none"
                raise DDPMError(f"{printable(path)} has no arr_0 (found: {shown})")
            info = archive.getinfo("arr_0.npy")
            with archive.open(info) as member:
                version = np.lib.format.read_magic(member)
                read_header = (
                    np.lib.format.read_array_header_1_0
                    if version == (1, 0)
                    else np.lib.format.read_array_header_2_0
                )
                shape, _, dtype = read_header(member)
    except (OSError, ValueError, zipfile.BadZipFile, EOFError, KeyError) as error:
        reason = str(error).splitlines()[0][:200] if str(error) else type(error).__name__
        raise DDPMError(f"{printable(path)} is not a readable .npz ({reason})") from None
    declared = int(np.prod(shape, dtype=object)) * dtype.itemsize  # Python ints: no overflow
    if declared > info.file_size:
        raise DDPMError(
            f"{printable(path)}: arr_0 declares {list(shape)} {dtype} ({declared:,} bytes) but "
            f"holds {info.file_size:,}"
        )
    if declared > _ram_bytes() // 2:
        raise DDPMError(
            f"{printable(path)}: arr_0 of {list(shape)} {dtype} needs {declared / 1e9:.1f} GB, "
            f"more than half of this machine's memory"
        )


def _read_npz(path: Path) -> np.ndarray:
    _check_npz_header(path)
    try:
        with np.load(path, allow_pickle=False) as archive:
            array: np.ndarray = archive["arr_0"]
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as error:
        reason = str(error).splitlines()[0][:200]
        raise DDPMError(f"{printable(path)} is not a readable .npz ({reason})") from None
    if array.dtype != np.uint8 or array.ndim != 4 or array.shape[-1] not in (1, 3):
        raise DDPMError(
            f"{printable(path)}: arr_0 must be uint8 [N, H, W, C] with C = 1 or 3, got "
            f"{array.dtype} {list(array.shape)}"
        )
    return array


def _read_folder(path: Path) -> np.ndarray:
    """Every image under `path`, decoded after its header is checked: each at most MAX_PIXELS,
    all together within half of this machine's memory (samples are scored at their own size)."""
    files = sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise DDPMError(
            f"no image files ({', '.join(sorted(IMAGE_SUFFIXES))}) in {printable(path)}"
        )
    budget, total, arrays = _ram_bytes() // 2, 0, []
    for file in files:
        try:
            with pil_bomb_warnings_silenced():  # the limit below is stricter, in one line
                opened = Image.open(file)
            with opened as image:
                width, height = image.size
                if width * height > MAX_PIXELS:
                    raise DDPMError(
                        f"sample image {printable(file)} is {width}x{height}, over the "
                        f"{MAX_PIXELS / 1e6:.1f}-megapixel limit"
                    )
                total += width * height * 3
                if total > budget:
                    raise DDPMError(
                        f"the images in {printable(path)} need over {budget / 1e9:.1f} GB, half "
                        f"of this machine's memory; score fewer or smaller samples"
                    )
                grey = image.mode in ("L", "I;16", "1", "LA")
                arrays.append(np.asarray(image.convert("L" if grey else "RGB")))
        except (OSError, UnidentifiedImageError, Image.DecompressionBombError) as error:
            reason = str(error).splitlines()[0][:200]
            raise DDPMError(f"cannot read image {printable(file)} ({reason})") from None
    shapes = {a.shape for a in arrays}
    if len(shapes) > 1:
        raise DDPMError(
            f"images in {printable(path)} differ in size or channels: {sorted(shapes)[:3]}"
        )
    stacked = np.stack(arrays)
    return stacked[..., None] if stacked.ndim == 3 else stacked


def load_samples(path: str | Path) -> torch.Tensor:
    """An .npz or an image folder -> uint8 [N, C, H, W]."""
    path = Path(path)
    if not path.exists():
        raise DDPMError(f"samples not found: {printable(path)}")
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
