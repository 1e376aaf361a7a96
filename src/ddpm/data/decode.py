"""Decoding one image file within a pixel budget, for the folder and CelebA loaders.

Policy for large images. PIL reads an image's size from its header without decoding it, so the
size is checked first. An image of more than `pixel_limit(size)` pixels (16.8 megapixels, i.e.
4096x4096, or (4 x image_size)^2 when that is larger) is
- a JPEG: decoded downscaled by libjpeg's DCT scaling (1/2, 1/4 or 1/8, PIL's `draft`) to under
  the limit, never materialised at full size; the resize to image_size follows as for any image;
- anything else (PNG, WebP, BMP), or a JPEG still over the limit at 1/8 scale, or any image over
  PIL's own decompression-bomb limit (Image.MAX_IMAGE_PIXELS x 2, 179 megapixels): refused,
  with a reason naming its size and the limit; the loader skips it with a warning naming the file.
Decoding runs in several threads, so this bounds peak memory at a few hundred MB whatever the files
declare. An image whose shorter side is under half of image_size is upscaled more than 2x;
the loader counts those and warns once per load (see `is_small`).
"""

from __future__ import annotations

import contextlib
import math
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, JpegImagePlugin, UnidentifiedImageError

MAX_PIXELS = 4096 * 4096  # 16.8 MP: a 12 MP phone photo or a 4K frame decodes as it is
TRAINING_SIZE_FACTOR = 4  # images up to 4x the training size per side are always allowed
SMALL_FACTOR = 2  # upscaled by more than this: warned about
Preprocess = Callable[[Image.Image], Image.Image]


class Unusable(Exception):
    """A file that is skipped: not a readable image, or over the pixel limit (the message)."""


@dataclass(frozen=True)
class Decoded:
    """array: uint8 [C, size, size]; width, height: the file's own size in pixels (header)."""

    array: np.ndarray
    width: int
    height: int


def pixel_limit(size: int) -> int:
    """The most pixels an image may have (after JPEG draft scaling) when training at `size`."""
    return max(MAX_PIXELS, (TRAINING_SIZE_FACTOR * size) ** 2)


def is_small(width: int, height: int, size: int) -> bool:
    """True when an image's shorter side is under size / SMALL_FACTOR: upscaled more than 2x."""
    return min(width, height) * SMALL_FACTOR < size


def _megapixels(pixels: int) -> str:
    return f"{pixels / 1e6:.1f} megapixels"


def _within_limit(image: Image.Image, mode: str, limit: int) -> None:
    """Draft a JPEG that is over `limit` down to under it; raise Unusable if that cannot be."""
    width, height = image.size
    if width * height <= limit:
        return
    if isinstance(image, JpegImagePlugin.JpegImageFile):  # MPO, many cameras' JPEGs, too
        # draft picks the largest scale 1/s (s in 1, 2, 4, 8) keeping the result at least the
        # requested size; asking for 1/(2k) of each side, k = sqrt(pixels / limit), gives
        # k < s <= 2k, so the result holds under `limit` pixels and at least a quarter of them
        shrink = 2 * math.sqrt(width * height / limit)
        image.draft(mode, (max(1, int(width / shrink)), max(1, int(height / shrink))))
    if image.size[0] * image.size[1] > limit:
        raise Unusable(f"{width}x{height} pixels ({_megapixels(width * height)}) is over the "
                       f"limit of {_megapixels(limit)} for data.image_size")  # fmt: skip


def decode_file(path: Path, preprocess: Preprocess, mode: str, *, size: int) -> Decoded:
    """Decode `path` in `mode` ("L" or "RGB") through `preprocess` (crop and resize to size);
    raises Unusable when it is not a readable image or is over the pixel limit."""
    try:
        with Image.open(path) as image:
            width, height = image.size
            _within_limit(image, mode, pixel_limit(size))
            image.load()
            array = np.asarray(preprocess(_eight_bit(image).convert(mode)), dtype=np.uint8)
    except Image.DecompressionBombError:
        raise Unusable(f"over PIL's decompression-bomb limit of "
                       f"{_megapixels(2 * (Image.MAX_IMAGE_PIXELS or 0))}") from None  # fmt: skip
    except (OSError, UnidentifiedImageError, ValueError) as error:
        raise Unusable(f"not a readable image ({str(error)[:80]})") from None
    array = array[None] if array.ndim == 2 else array.transpose(2, 0, 1)
    return Decoded(array=array, width=width, height=height)


def _eight_bit(image: Image.Image) -> Image.Image:
    """16- and 32-bit grey images (PNG's 16-bit grey opens as I;16) scaled to 8 bits, assuming
    the 16-bit range (0..65535 -> 0..255; a 32-bit "I" image holding 8-bit values comes out
    dark): PIL's own convert("L") clips them, turning everything above 255 white."""
    if image.mode not in ("I;16", "I;16B", "I;16L", "I"):
        return image
    wide = np.asarray(image, dtype=np.float64)
    return Image.fromarray(np.clip(np.round(wide / 257), 0, 255).astype(np.uint8), "L")


@contextlib.contextmanager
def pil_bomb_warnings_silenced() -> Iterator[None]:
    """Silence PIL's DecompressionBombWarning (images over 89 megapixels) while decoding: the
    stricter pixel_limit refuses or drafts those images with a message of its own. The warnings
    filter is process-wide: enter this in the thread that starts the decoding threads."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        yield
