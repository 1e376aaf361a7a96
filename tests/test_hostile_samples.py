"""`ddpm eval --samples` reads files from anywhere: an .npz whose header declares more than it
holds, a folder with a huge image or escape sequences in a name each get one line, before
anything large is decompressed or decoded."""

from __future__ import annotations

import io
import tracemalloc
import zipfile

import numpy as np
import pytest
from PIL import Image

from ddpm.errors import DDPMError
from ddpm.metrics.sample_files import load_samples


def npz_declaring(path, shape: tuple[int, ...], payload: bytes = b"") -> None:
    """An .npz whose arr_0.npy header says `shape` uint8 but which holds only `payload`."""
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        header, {"descr": "|u1", "fortran_order": False, "shape": shape}
    )
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("arr_0.npy", header.getvalue() + payload)  # magic included


def refused(path) -> str:
    tracemalloc.start()
    try:
        with pytest.raises(DDPMError) as caught:
            load_samples(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    message = str(caught.value)
    assert len(message.splitlines()) == 1 and peak < 64 << 20, (message, peak)
    return message


def test_an_npz_declaring_more_than_it_holds_is_refused_unread(tmp_path):
    path = tmp_path / "bomb.npz"
    npz_declaring(path, (10**6, 256, 256, 3), b"\0" * 1000)
    assert "declares [1000000, 256, 256, 3]" in refused(path)


def test_an_npz_larger_than_memory_is_refused_unread(tmp_path, monkeypatch):
    import ddpm.metrics.sample_files as sample_files

    path = tmp_path / "big.npz"
    npz_declaring(path, (4, 8, 8, 1), b"\0" * 256)
    monkeypatch.setattr(sample_files, "_ram_bytes", lambda: 300)  # as if the machine had 300 B
    assert "more than half of this machine's memory" in refused(path)


def test_a_huge_image_among_samples_is_refused_by_its_header(tmp_path):
    folder = tmp_path / "samples"
    folder.mkdir()
    Image.new("1", (10_000, 10_000)).save(folder / "huge.png", optimize=True)  # a few KB
    assert "huge.png is 10000x10000" in refused(folder)


def test_sample_file_names_are_shown_escaped(tmp_path):
    folder = tmp_path / "samples"
    folder.mkdir()
    (folder / "\x1b[31mred.png").write_bytes(b"not a png")
    message = refused(folder)
    assert "\x1b" not in message and "\\x1b[31mred.png" in message
