"""The IDX format of MNIST and Fashion-MNIST (LeCun et al.), gzipped or not.

Header: two zero bytes, a type code (0x08 = unsigned byte), the number of dimensions, then one
big-endian uint32 per dimension; the data follow row-major.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np

from ..errors import DDPMError

UBYTE = 0x08


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file of unsigned bytes into a uint8 array of the shape its header gives."""
    path = Path(path)
    try:
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rb") as f:
            blob = f.read()
    except (OSError, EOFError) as error:
        raise DDPMError(f"cannot read {path}: {error}") from None
    if len(blob) < 4 or blob[0] != 0 or blob[1] != 0 or blob[2] != UBYTE:
        raise DDPMError(f"{path} is not an IDX file of unsigned bytes (wrong magic number "
                        f"{blob[:4].hex() or 'none'})")  # fmt: skip
    ndim = blob[3]
    header = 4 + 4 * ndim
    if ndim == 0 or len(blob) < header:
        raise DDPMError(f"{path} has a truncated IDX header")
    shape = tuple(int.from_bytes(blob[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    expected = int(np.prod(shape))
    if len(blob) - header != expected:
        raise DDPMError(f"{path} is truncated or padded: header says {shape} = {expected} bytes, "
                        f"file holds {len(blob) - header}")  # fmt: skip
    return np.frombuffer(blob, dtype=np.uint8, offset=header).reshape(shape)


def write_idx(path: str | Path, array: np.ndarray) -> None:
    """Write a uint8 array as IDX (gzipped if the name ends in .gz); for tests and conversions."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = bytes([0, 0, UBYTE, array.ndim]) + b"".join(
        int(n).to_bytes(4, "big") for n in array.shape
    )
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "wb") as f:
        f.write(header + array.tobytes())
