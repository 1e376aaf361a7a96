"""Hostile data files (issue 15): decompression and allocation bombs in every format the loaders
read, and file names that would act on the terminal. Each test writes its hostile file itself,
small on disk, runs the real loader (and, once per format, `ddpm train` in a subprocess), and
checks for the package's one-line user error naming the file, in little memory and time.

Memory is measured with tracemalloc in-process where the allocations are numpy's or Python's,
and as the peak resident size of a `ddpm train` subprocess (os.wait4) where they are PIL's,
against the same command on a missing data set (importing torch alone takes ~800 MB).
"""

from __future__ import annotations

import gzip
import logging
import os
import pickle
import struct
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
from hostile_files import (
    GIB,
    MB,
    Allocates,
    assert_one_error_line,
    black_png,
    idx_header,
    run_train,
    traced,
    zeros_gzip,
)
from PIL import Image, JpegImagePlugin
from tiny import TINY_MODEL, sets

from ddpm.config import DataConfig
from ddpm.data import load_dataset
from ddpm.data.idx import read_idx
from ddpm.errors import DDPMError
from ddpm.safe_text import printable

IDX_IMAGES = "train-images-idx3-ubyte"


pytestmark = pytest.mark.usefixtures("isolated")  # tests/conftest.py


@pytest.fixture(scope="module")
def baseline_rss(tmp_path_factory) -> int:
    """Peak resident bytes of `ddpm train` stopping at a missing data set: imports and all."""
    cwd = tmp_path_factory.mktemp("baseline")
    code, err, rss, _ = run_train(["--dataset", "mnist", "--set", f"data.data_dir={cwd}"], cwd)
    assert code == 2 and "not found" in err, err
    return rss


CLI_MODEL = ["data.image_size=8", *TINY_MODEL]  # the data fail to load before any training


# ---- IDX (MNIST, Fashion-MNIST) -------------------------------------------------------------


def write_labels(folder: Path, count: int) -> None:
    blob = idx_header(count) + bytes(count)
    (folder / "train-labels-idx1-ubyte.gz").write_bytes(gzip.compress(blob))


def mnist_config(folder: Path) -> DataConfig:
    return DataConfig(dataset="mnist", data_dir=str(folder), image_size=28)


def four_gib_bomb(folder: Path) -> Path:
    """The issue's bomb: 4.2 MB on disk, its header declaring 5,478,274 images = 4 GiB."""
    folder.mkdir(parents=True, exist_ok=True)
    count = 4 * GIB // 784 + 1
    path = folder / f"{IDX_IMAGES}.gz"
    path.write_bytes(gzip.compress(idx_header(count, 28, 28)) + zeros_gzip(count * 784))
    write_labels(folder, count)
    return path


def test_idx_gzip_declaring_4_gib_is_refused_at_its_header(tmp_path):
    bomb = four_gib_bomb(tmp_path / "d")
    assert bomb.stat().st_size < 5 * MB
    error, peak, seconds = traced(lambda: load_dataset(mnist_config(tmp_path / "d")))
    assert str(bomb) in str(error) and "[5478275, 28, 28]" in str(error) and "60,000" in str(error)
    assert peak < 16 * MB and seconds < 10, (peak, seconds)
    # read_idx alone, with no expected shape, still refuses it: over its limit
    error, peak, seconds = traced(lambda: read_idx(bomb))
    assert str(bomb) in str(error) and "over the limit" in str(error)
    assert peak < 16 * MB and seconds < 10, (peak, seconds)


@pytest.mark.parametrize("extra", ["4 GiB", "1 byte"])
def test_idx_gzip_longer_than_its_header_stops_one_byte_past_it(tmp_path, extra):
    folder = tmp_path / "d"
    folder.mkdir()
    bomb = folder / f"{IDX_IMAGES}.gz"
    legit = gzip.compress(idx_header(12, 28, 28) + bytes(12 * 784))
    bomb.write_bytes(legit + (zeros_gzip(4 * GIB) if extra == "4 GiB" else gzip.compress(b"x")))
    write_labels(folder, 12)
    error, peak, seconds = traced(lambda: load_dataset(mnist_config(folder)))
    assert str(error).startswith(f"{bomb} is truncated or padded") and "holds more" in str(error)
    assert peak < 16 * MB and seconds < 10, (peak, seconds)


def test_idx_gzip_shorter_than_its_header_is_refused(tmp_path):
    folder = tmp_path / "d"
    folder.mkdir()
    short = folder / f"{IDX_IMAGES}.gz"
    short.write_bytes(gzip.compress(idx_header(12, 28, 28) + bytes(5 * 784)))
    write_labels(folder, 12)
    with pytest.raises(DDPMError, match="holds 3,920$") as caught:
        load_dataset(mnist_config(folder))
    assert str(caught.value).startswith(f"{short} is truncated or padded")
    # a header promising more than deflate can inflate from the file is refused unread
    short.write_bytes(gzip.compress(idx_header(60000, 28, 28)))
    write_labels(folder, 60000)
    with pytest.raises(DDPMError, match="more than a gzip of .* bytes can hold"):
        load_dataset(mnist_config(folder))


@pytest.mark.parametrize(
    "shape",
    [(1 << 22, 1 << 21, 1 << 21), (0xFFFFFFFF,) * 3, (0xFFFFFFFF,) * 255],
    ids=["product-2**64", "3x(2**32-1)", "255x(2**32-1)"],
)
def test_idx_header_whose_size_overflows_int64(tmp_path, shape):
    """2**22 * 2**21 * 2**21 = 2**64 wraps to 0 in int64, the size of the (empty) data: numpy's
    reshape raised a traceback."""
    folder = tmp_path / "d"
    folder.mkdir()
    bad = folder / IDX_IMAGES
    bad.write_bytes(idx_header(*shape))
    write_labels(folder, 12)
    error, peak, _ = traced(lambda: load_dataset(mnist_config(folder)))
    assert str(error).startswith(f"{bad} declares [{shape[0]}, ") and peak < 4 * MB
    error, peak, _ = traced(lambda: read_idx(bad))
    assert str(error).startswith(f"{bad} declares") and "over the limit" in str(error)
    assert peak < 4 * MB


@pytest.mark.slow
def test_idx_bomb_through_the_cli(tmp_path, baseline_rss):
    bomb = four_gib_bomb(tmp_path / "d")
    args = ["--dataset", "mnist", *sets([f"data.data_dir={tmp_path / 'd'}", *CLI_MODEL])]
    code, err, rss, seconds = run_train(args, tmp_path)
    assert_one_error_line(code, err, str(bomb))
    assert rss - baseline_rss < 256 * MB and seconds < 120, (rss / MB, baseline_rss / MB, seconds)


# ---- CIFAR-10 python batches ----------------------------------------------------------------


def cifar_folder(root: Path, train_batch_1: dict | bytes) -> Path:
    """cifar-10-batches-py/ with five legit 5-image batches, data_batch_1 replaced."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(2, 6)] + ["test_batch"]:
        batch = {b"data": rng.integers(0, 256, (5, 3072), dtype=np.uint8), b"labels": [1] * 5}
        (folder / name).write_bytes(pickle.dumps(batch, protocol=2))
    blob = train_batch_1 if isinstance(train_batch_1, bytes) else pickle.dumps(train_batch_1, 2)
    (folder / "data_batch_1").write_bytes(blob)
    return folder / "data_batch_1"


def cifar_config(root: Path) -> DataConfig:
    return DataConfig(dataset="cifar10", data_dir=str(root), image_size=32, channels=3)


@pytest.mark.parametrize("call", ["ndarray", "_reconstruct"])
def test_cifar_batch_declaring_200000_uninitialised_images(tmp_path, call):
    """The issue's file: 400 KB, 200,000 labels and a [200000, 3072] array with no data."""
    batch = {b"data": Allocates(call, (200_000, 3072)), b"labels": [0] * 200_000}
    bad = cifar_folder(tmp_path / "c", batch)
    assert bad.stat().st_size < 500_000
    error, peak, seconds = traced(lambda: load_dataset(cifar_config(tmp_path / "c")))
    assert str(error).startswith(f"{bad} is not a valid CIFAR-10 batch")
    assert peak < 32 * MB and seconds < 10, (peak, seconds)


row = list(range(3072))
BAD_CONTENTS = {
    # pickle shares one list by reference: np.asarray made [1000, 3072, 1000] = 3 GB of it
    "nested-list": ({b"data": [[row] * 1000] * 1000, b"labels": [0] * 1000}, "data is list"),
    "floats": ({b"data": np.zeros((2, 3072)), b"labels": [0, 1]}, "data is float64 [2, 3072]"),
    "10001-images": (
        {b"data": np.zeros((10001, 3072), np.uint8), b"labels": [0] * 10001},
        "1 <= N <= 10,000",
    ),
    "3071-columns": ({b"data": np.zeros((2, 3071), np.uint8), b"labels": [0, 1]}, "[2, 3071]"),
    "label-10": ({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 10]}, "in 0..9"),
    "label-count": ({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0]}, "2 ints"),
    "label-huge": ({b"data": np.zeros((1, 3072), np.uint8), b"labels": [10**400]}, "in 0..9"),
    "not-a-dict": ([1, 2], "a list, not a dict"),
}


@pytest.mark.parametrize("case", BAD_CONTENTS)
def test_cifar_batch_contents_are_checked_against_the_format(tmp_path, case):
    contents, reason = BAD_CONTENTS[case]
    bad = cifar_folder(tmp_path / "c", contents)
    error, peak, seconds = traced(lambda: load_dataset(cifar_config(tmp_path / "c")))
    assert str(error).startswith(f"{bad} is not a valid CIFAR-10 batch") and reason in str(error)
    assert peak < 256 * MB and seconds < 20, (peak, seconds)


def test_cifar_batch_larger_than_the_format_is_refused_unread(tmp_path):
    """A pickle whose first opcode is a 2 GiB bytes object (BINBYTES8): pickle read it all."""
    opcode = b"\x80\x04\x8e" + struct.pack("<Q", 2 * GIB)
    bad = cifar_folder(tmp_path / "c", opcode)
    with open(bad, "r+b") as f:
        f.truncate(len(opcode) + 2 * GIB)  # sparse: no disk used
    error, peak, seconds = traced(lambda: load_dataset(cifar_config(tmp_path / "c")))
    assert str(bad) in str(error) and "2,147,483,659 bytes, over the 40,000,000" in str(error)
    assert peak < 4 * MB and seconds < 5


@pytest.mark.slow
def test_cifar_bomb_through_the_cli(tmp_path, baseline_rss):
    batch = {b"data": Allocates("ndarray", (200_000, 3072)), b"labels": [0] * 200_000}
    bad = cifar_folder(tmp_path / "c", batch)
    args = ["--dataset", "cifar10", *sets([f"data.data_dir={tmp_path / 'c'}", *CLI_MODEL])]
    code, err, rss, seconds = run_train(args, tmp_path)
    assert_one_error_line(code, err, str(bad))
    assert rss - baseline_rss < 256 * MB and seconds < 120, (rss / MB, baseline_rss / MB, seconds)


# ---- image folders and CelebA ---------------------------------------------------------------


def folder_config(root: Path, size: int = 8) -> DataConfig:
    return DataConfig(dataset="folder", data_dir=str(root), image_size=size, channels=3)


def write_pngs(root: Path, count: int, size: tuple[int, int] = (16, 16)) -> None:
    rng = np.random.default_rng(0)
    root.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        pixels = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
        Image.fromarray(pixels).save(root / f"{i:03d}.png")


def test_png_of_10000x10000_is_refused_from_its_header(tmp_path, caplog, recwarn):
    root = tmp_path / "pngs"
    root.mkdir()
    big = root / "big.png"
    big.write_bytes(black_png(10000, 10000))
    assert big.stat().st_size < 400_000
    start = time.monotonic()
    with pytest.raises(DDPMError) as caught:  # the only file: nothing is left to train on
        load_dataset(folder_config(root))
    message = str(caught.value)
    assert f"none of the 1 files in {root} (train) is a usable image" in message
    assert f"{big}: 10000x10000 pixels (100.0 megapixels) is over the limit of 16.8" in message
    assert time.monotonic() - start < 5
    # beside ordinary images it is skipped with a warning naming it; the others load
    write_pngs(root, 30)
    with caplog.at_level(logging.WARNING):
        data = load_dataset(folder_config(root), "train")
        test = load_dataset(folder_config(root), "test")
    assert len(data) + len(test) == 30
    assert any(f"skipping {big}: 10000x10000" in r.getMessage() for r in caplog.records)
    # PIL's own DecompressionBombWarning (over 89 MP) would print a second, raw message
    assert not [w for w in recwarn if issubclass(w.category, Image.DecompressionBombWarning)]


@pytest.mark.slow
def test_eight_9400x9400_pngs_through_the_cli(tmp_path, baseline_rss):
    """Eight images under PIL's own bomb limit: together they decoded to 2.1 GB."""
    root = tmp_path / "pngs"
    root.mkdir()
    blob = black_png(9400, 9400)
    for i in range(8):
        (root / f"{i}.png").write_bytes(blob)
    args = ["--dataset", "folder", *sets([f"data.data_dir={root}", "data.channels=3", *CLI_MODEL])]
    code, err, rss, seconds = run_train(args, tmp_path)
    line = assert_one_error_line(code, err, "9400x9400 pixels")
    # 7: a folder this small lends one file to its test split
    assert f"none of the 7 files in {root} (train) is a usable image" in line
    assert rss - baseline_rss < 256 * MB and seconds < 120, (rss / MB, baseline_rss / MB, seconds)


def test_celeba_png_of_10000x10000_is_refused(tmp_path):
    folder = tmp_path / "celeba" / "img_align_celeba"
    folder.mkdir(parents=True)
    big = folder / "000001.jpg"  # PIL goes by the content, not the name
    big.write_bytes(black_png(10000, 10000))
    config = DataConfig(dataset="celeba64", data_dir=str(tmp_path / "celeba"), image_size=64,
                        channels=3)  # fmt: skip
    split = "train" if zlib.crc32(b"000001.jpg") % 20 else "test"
    with pytest.raises(DDPMError, match=f"{big}: 10000x10000 pixels"):
        load_dataset(config, split)


def test_huge_jpeg_is_decoded_downscaled_never_at_full_size(tmp_path, monkeypatch):
    """Policy: a JPEG over the limit is decoded at 1/2, 1/4 or 1/8 scale (PIL's draft)."""
    root = tmp_path / "photos"
    root.mkdir()
    photo = Image.new("RGB", (6000, 4000), (255, 255, 255))  # 24 MP, left half black
    photo.paste((0, 0, 0), (0, 0, 3000, 4000))
    for name in ("a", "b"):
        photo.save(root / f"{name}.jpg", quality=90)
    loaded_sizes = []
    original_load = JpegImagePlugin.JpegImageFile.load

    def spy(self):
        loaded_sizes.append(self.size)
        return original_load(self)

    monkeypatch.setattr(JpegImagePlugin.JpegImageFile, "load", spy)
    train = load_dataset(folder_config(root, size=8), "train")
    assert len(train) == 1  # the other one is the test image a folder of two lends
    assert set(loaded_sizes) == {(3000, 2000)}  # 1/2 scale: 6 MP, under the 16.8 MP limit
    image = train.images[0].float()
    assert image[:, :, :3].mean() < 10 and image[:, :, 5:].mean() > 245


# ---- small images, file names on the terminal -----------------------------------------------


def test_images_much_smaller_than_the_training_size_are_counted_in_one_warning(tmp_path, caplog):
    root = tmp_path / "mixed"
    write_pngs(root, 25, size=(32, 32))
    for i in range(5):
        Image.new("RGB", (1, 1), (i, i, i)).save(root / f"dot{i}.png")
    Image.new("RGB", (15, 40)).save(root / "narrow.png")  # 15 < 32 / 2
    Image.new("RGB", (16, 16)).save(root / "half.png")  # exactly 2x: not counted
    for attempt in ("decoded", "cached"):
        caplog.clear()
        with caplog.at_level(logging.WARNING):
            train = load_dataset(folder_config(root, size=32), "train")
        names = {p.name for p in sorted(root.iterdir())}
        expected = sum(1 for n in names if (n.startswith("dot") or n == "narrow.png")
                       and zlib.crc32(n.encode()) % 20)  # fmt: skip
        warnings = [r.getMessage() for r in caplog.records if "upscaled" in r.getMessage()]
        assert len(warnings) == 1, (attempt, caplog.text)
        assert warnings[0].startswith(
            f"{expected} of {len(train)} images are upscaled more than 2x"
        )
        assert "to 32x32" in warnings[0] and "1x1" in warnings[0], warnings[0]


HOSTILE_NAMES = ["\x1b[31mred.png", "two\nlines.png", "\u202egnp.exe.png", "bell\x07.png"]


def test_file_names_are_shown_escaped(tmp_path, caplog, capsys):
    root = tmp_path / "names"
    write_pngs(root, 25)
    for name in HOSTILE_NAMES:
        (root / name).write_bytes(b"\x89PNG\r\n\x1a\n not really")
    with caplog.at_level(logging.WARNING):
        load_dataset(folder_config(root), "train")
        load_dataset(folder_config(root), "test")
    shown = "\n".join(r.getMessage() for r in caplog.records)
    for name in HOSTILE_NAMES:
        assert f"skipping {root / printable(name)}: not a readable image" in shown
    assert not any(c in shown for c in "\x1b\x07\u202e")
    assert all(r.getMessage().count("\n") == 0 for r in caplog.records)
    # an error names a folder the same way
    with pytest.raises(DDPMError) as caught:
        load_dataset(mnist_config(tmp_path / "\x1b]0;title\x07"))
    assert "\\x1b]0;title\\x07" in str(caught.value) and "\x1b" not in str(caught.value)


def test_a_file_name_that_is_not_utf8_loads_and_is_shown_escaped(tmp_path, caplog):
    """A name of bytes that are not UTF-8 (Python holds it with lone surrogates) raised
    UnicodeEncodeError while hashing it for the split and the cache."""
    root = tmp_path / "latin1"
    write_pngs(root, 25)
    raw = os.fsencode(root) + b"/caf\xe9.png"
    Image.new("RGB", (16, 16)).save(raw.decode(errors="surrogateescape"), format="PNG")
    broken = os.fsencode(root) + b"/br\xffken.png"
    with open(broken, "wb") as f:
        f.write(b"not a png")
    with caplog.at_level(logging.WARNING):
        train = load_dataset(folder_config(root), "train")
        test = load_dataset(folder_config(root), "test")
    assert len(train) + len(test) == 26
    assert any("br\\xffken.png" in r.getMessage() for r in caplog.records), caplog.text
    for record in caplog.records:
        record.getMessage().encode("utf-8")  # printable on any UTF-8 terminal


def test_printable():
    assert printable("plain name.png") == "plain name.png"
    assert printable(Path("a/\x1b[2Jb")) == "a/\\x1b[2Jb"
    assert printable("a\nb\rc\td") == "a\\nb\\rc\\td"
    assert printable("\u202e\u200b\x7f\x85") == "\\u202e\\u200b\\x7f\\x85"
    assert printable("caf\xe9 \u00e9t\u00e9 \u4e2d") == "caf\xe9 \u00e9t\u00e9 \u4e2d"
    assert printable(b"\xff.png") == printable("\udcff.png") == "\\xff.png"
