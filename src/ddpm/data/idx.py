"""The IDX format of MNIST and Fashion-MNIST (LeCun et al.), gzipped or not.

Header: two zero bytes, a type code (0x08 = unsigned byte), the number of dimensions, then one
big-endian uint32 per dimension; the data follow row-major.

The header is a promise the file may not keep, so nothing is allocated on its word alone: the
declared size (a Python int, so no product of dimensions overflows) is checked against a limit
(the caller's expected shape, e.g. MNIST's [60000, 28, 28], and `max_bytes`) and against what the
file on disk can hold, and a gzip is decompressed chunk by chunk into an array of the declared
size, stopping one byte past it. So a small gzip that inflates to gigabytes costs at most the
declared size in memory and time, and a file whose content is shorter or longer than its header
is refused in one line naming it.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import math
import os
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from ..errors import DDPMError
from ..safe_text import printable

UBYTE = 0x08
MAX_BYTES = 1 << 30  # no IDX data set ddpm reads comes near: MNIST's largest file holds 47 MB
DEFLATE_MAX_RATIO = 1032  # deflate inflates at most ~1032:1 (zlib's technical details)
CHUNK = 1 << 20  # bytes decompressed per read


@contextlib.contextmanager
def _reading(path: Path) -> Iterator[io.BufferedIOBase]:
    """Open `path` (gunzipping a .gz); read errors become one DDPMError naming the file."""
    try:
        with (gzip.open if path.suffix == ".gz" else open)(path, "rb") as f:
            yield f
    except (OSError, EOFError, zlib.error) as error:  # gzip.BadGzipFile is an OSError
        reason = getattr(error, "strerror", None) or str(error) or type(error).__name__
        raise DDPMError(f"cannot read {printable(path)}: {printable(reason)}") from None


def _header(f: io.BufferedIOBase, path: Path) -> tuple[int, ...]:
    """The shape an IDX header declares; f is left at the first data byte."""
    head = f.read(4)
    if len(head) < 4 or head[0] != 0 or head[1] != 0 or head[2] != UBYTE:
        raise DDPMError(f"{printable(path)} is not an IDX file of unsigned bytes (wrong magic "
                        f"number {head.hex() or 'none'})")  # fmt: skip
    ndim = head[3]
    dims = f.read(4 * ndim)
    if ndim == 0 or len(dims) < 4 * ndim:
        raise DDPMError(f"{printable(path)} has a truncated IDX header")
    return struct.unpack(f">{ndim}I", dims)


def idx_shape(path: str | Path) -> tuple[int, ...]:
    """The shape the header of an IDX file declares, read without touching its data."""
    path = Path(path)
    with _reading(path) as f:
        return _header(f, path)


def shown_shape(shape: tuple[int, ...]) -> str:
    """A shape for a message: [60000, 28, 28]; a long one abridged."""
    if len(shape) <= 4:
        return str(list(shape))
    return f"[{shape[0]}, {shape[1]}, ..., {shape[-1]}] ({len(shape)} dimensions)"


def _bytes(size: int) -> str:
    """A byte count for a message; one too long for int's str() (limited to 4,300 digits) as a
    power of two."""
    return f"{size:,} bytes" if size.bit_length() <= 64 else f"over 2^{size.bit_length() - 1} bytes"


def _check_size(
    path: Path, f: io.BufferedIOBase, shape: tuple[int, ...], size: int, max_bytes: int
) -> None:
    """Refuse a declared size over max_bytes, or more than the file on disk can hold."""
    if size > max_bytes:
        raise DDPMError(f"{printable(path)} declares {shown_shape(shape)} = {_bytes(size)}, "
                        f"over the limit of {max_bytes:,}: not a data set ddpm reads")  # fmt: skip
    on_disk = os.fstat(f.fileno()).st_size
    header = 4 + 4 * len(shape)
    if path.suffix != ".gz" and on_disk - header != size:
        raise DDPMError(f"{printable(path)} is truncated or padded: header says {list(shape)} = "
                        f"{size:,} bytes, file holds {on_disk - header:,}")  # fmt: skip
    if path.suffix == ".gz" and size > DEFLATE_MAX_RATIO * on_disk:
        raise DDPMError(f"{printable(path)} is truncated: header says {list(shape)} = {size:,} "
                        f"bytes, more than a gzip of {on_disk:,} bytes can hold")  # fmt: skip


def _read_exactly(
    f: io.BufferedIOBase, path: Path, shape: tuple[int, ...], size: int
) -> np.ndarray:
    """The next `size` bytes of f as uint8 `shape`; refused when f ends sooner or goes on."""
    data = np.empty(size, dtype=np.uint8)
    view, filled = data.data, 0  # the array's buffer as a memoryview
    while filled < size:
        got = f.readinto(view[filled : filled + CHUNK])
        if not got:
            break
        filled += got
    if filled < size or f.read(1):
        held = f"{filled:,}" if filled < size else "more"
        raise DDPMError(f"{printable(path)} is truncated or padded: header says {list(shape)} = "
                        f"{size:,} bytes, file holds {held}")  # fmt: skip
    return data.reshape(shape)


def read_idx(
    path: str | Path, *, shape: tuple[int, ...] | None = None, max_bytes: int = MAX_BYTES
) -> np.ndarray:
    """Read an IDX file of unsigned bytes into a writable uint8 array of its header's shape.

    `shape`, when given, is the shape the header must declare (checked before any allocation);
    max_bytes bounds the declared size of any file. Peak memory is the declared size plus one
    decompression chunk.
    """
    path = Path(path)
    with _reading(path) as f:
        found = _header(f, path)
        if shape is not None and found != shape:
            raise DDPMError(
                f"{printable(path)} declares {shown_shape(found)}, expected {shown_shape(shape)}"
            )
        size = math.prod(found)
        _check_size(path, f, found, size, max_bytes)
        return _read_exactly(f, path, found, size)


def write_idx(path: str | Path, array: np.ndarray) -> None:
    """Write a uint8 array as IDX (gzipped if the name ends in .gz); for tests and conversions."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = bytes([0, 0, UBYTE, array.ndim]) + b"".join(
        int(n).to_bytes(4, "big") for n in array.shape
    )
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "wb") as f:
        f.write(header + array.tobytes())
