"""The hostile files of benchmarks/hostile_inputs.py, each small on disk and written from scratch
with the standard library, numpy and PIL (never with ddpm, whose loaders are what is tested)."""

from __future__ import annotations

import gzip
import pickle
from pathlib import Path

import numpy as np
from PIL import Image

IDX_UBYTE = 0x08
MIB = 1 << 20


def idx_header(shape: tuple[int, ...]) -> bytes:
    """The IDX header of unsigned bytes: 0, 0, type 0x08, ndim, one big-endian uint32 per dim."""
    return bytes([0, 0, IDX_UBYTE, len(shape)]) + b"".join(n.to_bytes(4, "big") for n in shape)


def idx_file(path: Path, array: np.ndarray) -> None:
    """A well-formed IDX file (gzipped when the name ends in .gz)."""
    blob = idx_header(array.shape) + np.ascontiguousarray(array, dtype=np.uint8).tobytes()
    path.write_bytes(gzip.compress(blob, mtime=0) if path.suffix == ".gz" else blob)


def idx_gzip_bomb(folder: Path) -> None:
    """train-images-idx3-ubyte.gz of 4.2 MB declaring 65536 x 256 x 256 = 4 GiB, and all 4 GiB
    present: a header member, then one 64 MiB member of zeros written 64 times (gzip readers
    concatenate members); 65536 labels beside it, so only the size tells it from a dataset."""
    folder.mkdir(parents=True, exist_ok=True)
    zeros = gzip.compress(bytes(64 * MIB), compresslevel=9, mtime=0)
    with open(folder / "train-images-idx3-ubyte.gz", "wb") as f:
        f.write(gzip.compress(idx_header((65536, 256, 256)), mtime=0))
        for _ in range(64):
            f.write(zeros)
    idx_file(folder / "train-labels-idx1-ubyte.gz", np.zeros(65536, np.uint8))


def idx_overflow(folder: Path) -> None:
    """An IDX header 2^22 x 2^21 x 2^21: the product is 2^64, 0 in int64 arithmetic, so a reader
    that multiplies in numpy sees a file of exactly the declared (empty) size."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "train-images-idx3-ubyte").write_bytes(idx_header((1 << 22, 1 << 21, 1 << 21)))
    idx_file(folder / "train-labels-idx1-ubyte", np.zeros(10, np.uint8))


def yaml_alias_bomb(path: Path) -> None:
    """'Billion laughs' in 362 bytes: 9^9 strings through nine levels of aliases, the last level
    given as data.dataset (a string key, so a type error would repr the whole expansion)."""
    lines = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for prev, name in zip("abcdefgh", "bcdefghi"):
        lines.append(f"{name}: &{name} [" + ",".join([f"*{prev}"] * 9) + "]")
    lines.append("data: {dataset: *i}")
    path.write_text("\n".join(lines) + "\n")


def normal_images(folder: Path, count: int = 60, *, size: int = 8) -> None:
    """`count` small grey PNGs of noise, img_00.png... (enough that both splits get some)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(count):
        pixels = rng.integers(0, 256, (size, size), dtype=np.uint8)
        Image.fromarray(pixels, "L").save(folder / f"img_{i:02d}.png")


def huge_png(path: Path, side: int) -> None:
    """A side x side PNG in mode '1' (1 bit per pixel, a diagonal line over white): tens of KB on
    disk, side^2 bytes as grey and 3 side^2 as RGB once decoded."""
    image = Image.new("1", (side, side), 1)
    for i in range(0, side, 7):
        image.putpixel((i, i), 0)
    image.save(path, optimize=True)


def unreadable_png(path: Path) -> None:
    """A text file with a .png name."""
    path.write_text("not an image: a note someone saved with the wrong extension\n")


def one_pixel_png(path: Path) -> None:
    Image.fromarray(np.full((1, 1), 128, np.uint8), "L").save(path)


def _global(module: str, name: str) -> bytes:
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"


def _empty_array(shape: tuple[int, ...], dtype: str) -> bytes:
    """Pickle opcodes for numpy.ndarray(shape, numpy.dtype(dtype)): an uninitialised array of any
    size from a few bytes of file, through two constructors CIFAR's unpickler allows."""
    dims = b"".join(b"J" + n.to_bytes(4, "little", signed=True) for n in shape)
    code = dtype.encode()
    dtype_call = _global("numpy", "dtype") + b"(X" + len(code).to_bytes(4, "little") + code + b"tR"
    return _global("numpy", "ndarray") + b"((" + dims + b"t" + dtype_call + b"tR"


def cifar_batch_bomb(folder: Path) -> None:
    """cifar-10-batches-py whose five training batches each declare 200,000 uninitialised images
    (uint8 [200000, 3072], 614 MB) with 200,000 valid labels (a 400 KB list); a valid test batch."""
    root = folder / "cifar-10-batches-py"
    root.mkdir(parents=True, exist_ok=True)
    labels = b"]" + (b"(" + b"K\x00" * 1000 + b"e") * 200  # [0] * 200000 in APPENDS of 1000
    blob = (b"\x80\x03}" + b"C\x04data" + _empty_array((200000, 3072), "u1") + b"s"
            + b"C\x06labels" + labels + b"s.")  # fmt: skip
    for i in range(1, 6):
        (root / f"data_batch_{i}").write_bytes(blob)
    test = {b"data": np.zeros((10, 3072), np.uint8), b"labels": [0] * 10}
    (root / "test_batch").write_bytes(pickle.dumps(test, protocol=2))


class _Payload:
    """Unpickling this creates pwned.txt in the working folder (harmless proof of execution)."""

    def __reduce__(self):
        return (open, ("pwned.txt", "w"))


def pickle_checkpoint(path: Path) -> None:
    """A 'checkpoint' that is a pickle with a payload, as torch.save-era files were."""
    path.write_bytes(pickle.dumps({"state_dict": {}, "payload": _Payload()}))


def truncate(path: Path) -> None:
    """Cut a file to half its length (a copy interrupted mid-way)."""
    with open(path, "rb+") as f:
        f.truncate(path.stat().st_size // 2)
