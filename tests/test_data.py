"""Datasets in their real on-disk formats, written here in small files and read through the same
code path as the real ones; and the real Fashion-MNIST when Debian's package is installed."""

from __future__ import annotations

import gzip
import logging
import pickle
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ddpm.config import DataConfig
from ddpm.data import load_dataset
from ddpm.data.resize import crop_and_resize
from ddpm.data.roots import find_root, search_roots
from ddpm.errors import DDPMError

SYSTEM_FMNIST = Path("/usr/share/datasets/fashion-mnist")


pytestmark = pytest.mark.usefixtures("isolated")  # tests/conftest.py


def idx_bytes(array: np.ndarray) -> bytes:
    """The IDX encoding, written out by hand: 0, 0, type 0x08, ndim, big-endian dims, data."""
    return (
        bytes([0, 0, 8, array.ndim])
        + struct.pack(f">{array.ndim}I", *array.shape)
        + array.tobytes()
    )


def write_mnist(folder: Path, n: int = 12, *, gz: bool = True, seed: int = 0):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, n, dtype=np.uint8)
    for stem, array in [("train-images-idx3-ubyte", images), ("train-labels-idx1-ubyte", labels),
                        ("t10k-images-idx3-ubyte", images[:4]), ("t10k-labels-idx1-ubyte", labels[:4])]:  # fmt: skip
        blob = idx_bytes(array)
        if gz:
            (folder / f"{stem}.gz").write_bytes(gzip.compress(blob))
        else:
            (folder / stem).write_bytes(blob)
    return images, labels


@pytest.mark.parametrize("gz", [True, False])
def test_idx_files_load_gzipped_or_not(tmp_path, gz):
    images, labels = write_mnist(tmp_path / "d", gz=gz)
    data = load_dataset(
        DataConfig(dataset="mnist", data_dir=str(tmp_path / "d"), image_size=28), "train"
    )
    assert data.images.shape == (12, 1, 28, 28) and data.images.dtype == torch.uint8
    assert np.array_equal(data.images[:, 0].numpy(), images)
    assert np.array_equal(data.labels.numpy(), labels.astype(np.int64))
    test = load_dataset(
        DataConfig(dataset="mnist", data_dir=str(tmp_path / "d"), image_size=28), "test"
    )
    assert len(test) == 4


def test_torchvision_layout_and_padding_to_32(tmp_path):
    images, _ = write_mnist(tmp_path / "root" / "FashionMNIST" / "raw")
    config = DataConfig(
        dataset="fashion-mnist", data_dir=str(tmp_path / "root"), image_size=32, fit="pad"
    )
    data = load_dataset(config, "train")
    assert data.images.shape == (12, 1, 32, 32)
    assert np.array_equal(data.images[:, 0, 2:30, 2:30].numpy(), images)
    assert int(data.images[:, :, :2].max()) == 0 and int(data.images[:, :, :, 30:].max()) == 0


def test_resize_and_channel_conversion(tmp_path):
    write_mnist(tmp_path / "d")
    data = load_dataset(
        DataConfig(dataset="mnist", data_dir=str(tmp_path / "d"), image_size=16, channels=3)
    )
    assert data.images.shape == (12, 3, 16, 16)
    assert torch.equal(data.images[:, 0], data.images[:, 1])


def test_wrong_magic_and_truncated_idx_name_the_file(tmp_path):
    write_mnist(tmp_path / "d", gz=False)
    bad = tmp_path / "d" / "train-images-idx3-ubyte"
    blob = bad.read_bytes()
    bad.write_bytes(b"\x00\x00\x0d\x03" + blob[4:])  # type code 0x0d (float) instead of 0x08
    with pytest.raises(DDPMError, match="train-images-idx3-ubyte.*wrong magic"):
        load_dataset(DataConfig(dataset="mnist", data_dir=str(tmp_path / "d"), image_size=28))
    bad.write_bytes(blob[:-10])
    with pytest.raises(DDPMError, match="train-images-idx3-ubyte is truncated"):
        load_dataset(DataConfig(dataset="mnist", data_dir=str(tmp_path / "d"), image_size=28))


def test_missing_mnist_says_where_it_looked(tmp_path):
    with pytest.raises(DDPMError) as error:
        load_dataset(DataConfig(dataset="mnist", data_dir=str(tmp_path / "empty"), image_size=28))
    message = str(error.value)
    assert "not found in" in message and str(tmp_path / "empty") in message
    assert "data.download=true" in message and "\n" not in message


def write_cifar_batch(path: Path, n: int, seed: int):
    rng = np.random.default_rng(seed)
    data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
    labels = [int(v) for v in rng.integers(0, 10, n)]
    batch = {b"batch_label": b"training batch", b"labels": labels, b"data": data,
             b"filenames": [b"x.png"] * n}  # fmt: skip
    path.write_bytes(pickle.dumps(batch, protocol=2))
    return data, labels


def make_cifar(root: Path) -> dict:
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    written = {name: write_cifar_batch(folder / name, 5, i) for i, name in
               enumerate([f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"])}  # fmt: skip
    return written


def test_cifar_batches(tmp_path):
    written = make_cifar(tmp_path / "c")
    config = DataConfig(dataset="cifar10", data_dir=str(tmp_path / "c"), image_size=32, channels=3)
    train, test = load_dataset(config, "train"), load_dataset(config, "test")
    assert train.images.shape == (25, 3, 32, 32) and test.images.shape == (5, 3, 32, 32)
    data, labels = written["data_batch_1"]
    # row layout: 1024 red values, then green, then blue, each row-major 32x32
    assert np.array_equal(train.images[0, 0].numpy().ravel(), data[0, :1024])
    assert np.array_equal(train.images[0, 2].numpy().ravel(), data[0, 2048:])
    assert train.labels[:5].tolist() == labels


def test_truncated_or_malicious_cifar_batch_is_refused(tmp_path):
    make_cifar(tmp_path / "c")
    batch = tmp_path / "c" / "cifar-10-batches-py" / "data_batch_3"
    batch.write_bytes(batch.read_bytes()[:2000])
    config = DataConfig(dataset="cifar10", data_dir=str(tmp_path / "c"), image_size=32, channels=3)
    with pytest.raises(DDPMError, match="data_batch_3 is not a valid CIFAR-10 batch"):
        load_dataset(config, "train")
    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self):
            return (Path.touch, (marker,))

    batch.write_bytes(pickle.dumps(Exploit()))
    with pytest.raises(DDPMError, match="data_batch_3"):
        load_dataset(config, "train")
    assert not marker.exists()


def write_image(path: Path, array: np.ndarray, fmt: str | None = None):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, format=fmt)


def test_celeba_layout_crop_and_official_split(tmp_path):
    root = tmp_path / "celeba"
    face = np.zeros((218, 178, 3), dtype=np.uint8)
    face[39:179, 19:159] = 255  # the centre 140x140 crop is white, the rest black
    lines = []
    for i in range(1, 7):
        name = f"{i:06d}.jpg"
        write_image(root / "img_align_celeba" / name, face, "JPEG")
        lines.append(f"{name} {0 if i <= 4 else 2}")
    (root / "list_eval_partition.txt").write_text("\n".join(lines) + "\n")
    config = DataConfig(dataset="celeba64", data_dir=str(root), image_size=64, channels=3)
    train, test = load_dataset(config, "train"), load_dataset(config, "test")
    assert train.images.shape == (4, 3, 64, 64) and test.images.shape == (2, 3, 64, 64)
    assert float(train.images.float().mean()) > 245  # only the white crop survives


@pytest.mark.parametrize(
    "shape", [(218, 178), (100, 301), (301, 100), (17, 33), (64, 65), (139, 141)]
)
def test_crop_and_resize_is_pils_centred_crop_and_bicubic_resize(shape):
    """Both recipes against PIL called directly: the corner of a centred box rounds half to even
    (as torchvision's center_crop), the resize is PIL's bicubic, antialiased at any scale."""
    h, w = shape
    pixels = np.random.default_rng(h * w).integers(0, 256, (h, w, 3), dtype=np.uint8)
    image = Image.fromarray(pixels)
    for size in (8, 16, 64):
        # a folder: the shorter side scaled to `size`, then the centred square
        scaled = (size, size * h // w) if w <= h else (size * w // h, size)
        left, top = round((scaled[0] - size) / 2), round((scaled[1] - size) / 2)
        resized = image.resize(scaled, Image.Resampling.BICUBIC)
        expected = resized.crop((left, top, left + size, top + size))
        assert np.array_equal(np.asarray(crop_and_resize(size)(image)), np.asarray(expected))
        # CelebA: the centred square of side min(140, w, h), then resized to size x size
        side = min(140, w, h)
        left, top = round((w - side) / 2), round((h - side) / 2)
        square = image.crop((left, top, left + side, top + side))
        expected = square.resize((size, size), Image.Resampling.BICUBIC)
        found = crop_and_resize(size, crop=140)(image)
        assert np.array_equal(np.asarray(found), np.asarray(expected))


def test_find_root_tries_each_root_then_its_subfolders(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    for folder in (a / "x", b, b / "x"):
        folder.mkdir(parents=True)
        (folder / "marker").touch()
    roots = search_roots(str(a), b)
    assert roots == [a, b] and search_roots(None, b) == [b] and search_roots("", b) == [b]
    holds = lambda folder: (folder / "marker").is_file()  # noqa: E731
    assert find_root(roots, ["x"], holds) == a / "x"  # data_dir's sub-folder before ./data
    assert find_root([b, a], ["x"], holds) == b  # a root before its own sub-folders
    assert find_root(roots, [], holds) == b
    assert find_root(roots, ["x"], lambda folder: False) is None


def test_folder_with_classes_mixed_sizes_and_a_corrupt_file(tmp_path, caplog):
    root = tmp_path / "pets"
    rng = np.random.default_rng(0)
    for cls in ("cats", "dogs"):
        for i in range(30):
            size = (40, 60) if i % 2 else (64, 48)  # mixed sizes and aspect ratios
            write_image(root / cls / f"{i}.png", rng.integers(0, 256, (*size, 3), dtype=np.uint8))
    (root / "dogs" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    (root / "cats" / "notes.txt").write_text("not an image")
    before = sorted(p.relative_to(root) for p in root.rglob("*"))
    config = DataConfig(
        dataset="folder", data_dir=str(root), image_size=16, channels=3, labels_from_subfolders=True
    )
    with caplog.at_level(logging.WARNING):
        train = load_dataset(config, "train")
        test = load_dataset(config, "test")
    # the fixed split puts 1 in 20 files in test, by a CRC-32 of the relative path
    broken_split = "test" if zlib.crc32(b"dogs/broken.png") % 20 == 0 else "train"
    messages = [r.getMessage() for r in caplog.records]
    assert any("broken.png" in m and "skipping" in m for m in messages), messages
    assert any("skipped 1 of" in m for m in messages), messages
    assert len(train if broken_split == "train" else test) >= 1
    assert len(train) + len(test) == 60 and len(test) > 0
    assert train.images.shape[1:] == (3, 16, 16) and train.num_classes == 2
    assert set(train.labels.tolist()) == {0, 1}
    assert sorted(p.relative_to(root) for p in root.rglob("*")) == before  # nothing written there
    again = load_dataset(config, "train")  # from the cache
    assert torch.equal(again.images, train.images) and torch.equal(again.labels, train.labels)


def test_folder_grayscale_without_classes(tmp_path):
    root = tmp_path / "flat"
    for i in range(25):
        write_image(root / f"{i}.jpg", np.full((20, 20, 3), i * 10, dtype=np.uint8), "JPEG")
    data = load_dataset(DataConfig(dataset="folder", data_dir=str(root), image_size=8, channels=1))
    assert data.images.shape[1:] == (1, 8, 8) and data.labels is None and data.num_classes == 0


def test_empty_or_unreadable_folder(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DDPMError, match="no images"):
        load_dataset(DataConfig(dataset="folder", data_dir=str(tmp_path / "empty"), image_size=8))
    with pytest.raises(DDPMError, match="image folder not found"):
        load_dataset(DataConfig(dataset="folder", data_dir=str(tmp_path / "nowhere"), image_size=8))
    with pytest.raises(DDPMError, match="needs data.data_dir"):
        load_dataset(DataConfig(dataset="folder", image_size=8))


@pytest.mark.skipif(not SYSTEM_FMNIST.is_dir(), reason="apt-get install dataset-fashion-mnist")
def test_real_fashion_mnist():
    config = DataConfig(dataset="fashion-mnist", image_size=28)
    train, test = load_dataset(config, "train"), load_dataset(config, "test")
    assert train.images.shape == (60000, 1, 28, 28) and test.images.shape == (10000, 1, 28, 28)
    assert torch.bincount(train.labels).tolist() == [6000] * 10
    # the published per-pixel mean of the training set is 0.2860 (of 255)
    assert abs(float(train.images.float().mean()) / 255 - 0.2860) < 5e-4


def test_presets_build_and_ho2020_has_35_7m_parameters(capsys):
    from ddpm.bench import model_size
    from ddpm.cli import main
    from ddpm.config import load_preset, preset_names

    assert {
        "digits",
        "fashion-mnist",
        "mnist",
        "cifar10-ho2020",
        "cifar10-cosine",
        "celeba64",
    } <= set(preset_names())
    size = model_size(load_preset("cifar10-ho2020"))
    print(f"cifar10-ho2020: {size.parameters:,} parameters")
    assert abs(size.parameters - 35.7e6) / 35.7e6 < 0.01  # Ho et al. 2020, Table 1 / Appendix B
    capsys.readouterr()
    assert main(["presets"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == len(preset_names())
    assert any(line.startswith("cifar10-ho2020") and "35.7M" in line for line in lines)


def test_class_conditional_training_needs_labels(tmp_path, capsys):
    from tiny import TINY_MODEL, sets

    from ddpm.cli import main

    root = tmp_path / "flat"
    for i in range(25):
        write_image(root / f"{i}.png", np.full((8, 8), i * 10, dtype=np.uint8))
    code = main(["train", "--dataset", "folder", "--out", str(tmp_path / "run"), "--quiet",
                 *sets([*TINY_MODEL, f"data.data_dir={root}", "data.image_size=8",
                        "model.num_classes=10", "train.batch_size=4"])])  # fmt: skip
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "model.num_classes=10, but dataset" in err and "has no labels" in err
