"""Every file ddpm writes besides checkpoints (grids, plots, .npz files, CSVs, the decode cache) is
written atomically: a full disk is one DDPMError line and leaves no torn, empty or temporary file
and any earlier file intact; a damaged decode cache is rebuilt with a warning.

The full-disk tests use a real tiny tmpfs (they need root and are skipped where mounting is not
allowed): a read-only folder does not stop root, and only a real file system fails the way a full
disk does (inside PIL's, matplotlib's or numpy's writer, or on close)."""

from __future__ import annotations

import errno
import logging
import os
import subprocess
import sys
import traceback
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from tiny import TINY_RUN, sets

from ddpm.cli import main
from ddpm.config import DataConfig
from ddpm.data import load_dataset
from ddpm.errors import DDPMError
from ddpm.eval_csv import EvalRow, write_rows
from ddpm.files import atomic_output
from ddpm.metrics.sample_files import save_npz
from ddpm.sweep import SweepRow, write_csv
from ddpm.viz import plot_loss, plot_sweep, save_grid


def fill(disk: Path, *, leave: int = 0) -> None:
    """Use up every free byte of `disk` but `leave` (a multiple of the 4 KiB page) with a filler."""
    reserve = disk / "reserve"
    reserve.write_bytes(b"\0" * leave)
    with open(disk / "filler", "wb", buffering=0) as f:
        for chunk in (4096, 1):
            try:
                while True:
                    f.write(b"\0" * chunk)
            except OSError as error:
                assert error.errno == errno.ENOSPC
    reserve.unlink()


def files_on(disk: Path) -> dict[str, bytes]:
    """Every file on `disk` but the filler, with its content."""
    return {p.name: p.read_bytes() for p in disk.iterdir() if p.name != "filler"}


def assert_one_line(error: DDPMError, path: Path) -> None:
    message = str(error)
    assert len(message.splitlines()) == 1, message
    assert f"could not write {path}" in message and "No space left on device" in message
    assert error.__cause__ is None and error.__suppress_context__  # printed alone


def noise(n: int = 16, channels: int = 3, size: int = 32) -> torch.Tensor:
    return torch.rand(n, channels, size, size, generator=torch.Generator().manual_seed(0)) * 2 - 1


def sweep_rows() -> list[SweepRow]:
    return [SweepRow("ddim", s, s, 16, "pixel-FD", 10.0 / s, 5.0 * s, 1.0) for s in (2, 4, 8)]


def eval_rows(count: int) -> list[EvalRow]:
    return [
        EvalRow("fid", 1.5 + i, None, "inception-v3", "samples.npz", "ddim", 10, 10, 100,
                "fashion-mnist:test:10000", 0, 100)
        for i in range(count)
    ]  # fmt: skip


def write_loss_plot(path: Path) -> Path | None:
    log = path.parent.parent / "log.csv"  # the log is read from the (roomy) test folder
    log.write_text("step,loss\n" + "".join(f"{s},{1 / s}\n" for s in range(1, 50)))
    return plot_loss(log, path)


WRITERS = {
    "grid.png": lambda path: save_grid(noise(), path),
    "samples.npz": lambda path: save_npz((noise() * 127 + 128).to(torch.uint8), path),
    "loss.png": write_loss_plot,
    "sweep.png": lambda path: plot_sweep(sweep_rows(), path),
    "sweep.csv": lambda path: write_csv(sweep_rows() * 400, path),
}


# Guards: save_grid (PIL), save_npz (np.savez), plot_loss / plot_sweep (matplotlib) and the sweep
# CSV wrote straight to the target: a full disk raised a bare OSError (a traceback) and left a
# 0-byte or torn file in place of the earlier one.
@pytest.mark.parametrize("name", list(WRITERS))
def test_a_full_disk_is_one_error_and_keeps_the_earlier_file(tiny_fs, name):
    disk = tiny_fs(512)
    target = disk / name
    target.write_bytes(b"an earlier file")  # smaller than the new one: overwriting it needs room
    before = files_on(disk)
    fill(disk)
    with pytest.raises(DDPMError) as caught:
        WRITERS[name](target)
    assert_one_line(caught.value, target)
    assert files_on(disk) == before  # the earlier file intact, no temporary or empty file


# Guards: write_rows appended to metrics.csv unguarded: a full disk raised a bare OSError and left
# a torn last row (which a CSV reader takes for a row of empty fields).
def test_a_full_disk_while_appending_metrics_keeps_the_earlier_rows(tiny_fs):
    disk = tiny_fs(512)
    target = disk / "metrics.csv"
    write_rows(eval_rows(2), target)
    before = files_on(disk)
    fill(disk)
    with pytest.raises(DDPMError) as caught:
        write_rows(eval_rows(200), target)  # more than the free rest of the file's last page
    assert_one_line(caught.value, target)
    assert files_on(disk) == before


# Guards: files.atomic_output's cleanup: an error while removing the temporary file must not add a
# second traceback ("During handling of the above exception, another exception occurred").
def test_an_error_while_cleaning_up_does_not_chain(tmp_path, monkeypatch):
    target = tmp_path / "grid.png"
    target.write_bytes(b"earlier")

    def refuse(self, missing_ok=False):
        raise OSError(errno.EIO, "Input/output error", str(self))

    monkeypatch.setattr(Path, "unlink", refuse)
    with pytest.raises(DDPMError) as caught:
        with atomic_output(target) as tmp:
            tmp.write_bytes(b"half")
            raise OSError(errno.ENOSPC, "No space left on device", str(tmp))
    assert_one_line(caught.value, target)
    printed = "".join(traceback.format_exception(caught.value))
    assert printed.count("Traceback") == 1 and "During handling" not in printed, printed
    assert target.read_bytes() == b"earlier"


def sample(run: Path, *outputs: str) -> int:
    return main(["sample", "--run", str(run), "--n", "4", "--steps", "2", "--quiet", *outputs])


# Guards: `ddpm sample` on a full disk ended in an OSError traceback (main raised instead of
# returning 2) and left a 0-byte grid or a truncated .npz.
@pytest.mark.slow
@pytest.mark.parametrize("flag", ["--out", "--npz"])
def test_sample_on_a_full_disk_exits_2_with_one_line(tiny_run, tiny_fs, tmp_path, capsys, flag):
    disk = tiny_fs(256)
    target = disk / ("grid.png" if flag == "--out" else "samples.npz")
    roomy = ["--out", str(tmp_path / "grid.png")] if flag == "--npz" else []
    fill(disk)
    capsys.readouterr()
    assert sample(tiny_run, flag, str(target), *roomy) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert err.startswith(f"ddpm: error: could not write {target}") and "No space left" in err
    assert files_on(disk) == {}


# Guards: np.savez appends .npz to a name without it, so `--npz samples` wrote samples.npz and
# printed a file name that did not exist.
def test_sample_npz_is_written_under_the_name_given(tiny_run, tmp_path, capsys):
    target = tmp_path / "samples"
    assert sample(tiny_run, "--out", str(tmp_path / "grid.png"), "--npz", str(target)) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["grid.png", "samples"]
    with np.load(target) as archive:
        assert archive["arr_0"].shape == (4, 8, 8, 1) and archive["arr_0"].dtype == np.uint8
    assert f"npz: {target} " in capsys.readouterr().out


def image_folder(root: Path) -> Path:
    """13 small grey PNGs and one broken file (so the cache keeps a subset of the files)."""
    root.mkdir()
    for i in range(13):
        Image.fromarray(np.full((12, 12), i * 19, dtype=np.uint8)).save(root / f"{i}.png")
    (root / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    return root


# Guards: a damaged decode cache (a truncated or overwritten .images.npy / .kept.npy) raised a
# numpy ValueError/EOFError traceback on every later load instead of being decoded again.
@pytest.mark.parametrize("which", ["images", "kept"])
@pytest.mark.parametrize("damage", ["truncated", "garbage"])
def test_a_damaged_decode_cache_is_rebuilt_with_a_warning(
    tmp_path, monkeypatch, caplog, which, damage
):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    config = DataConfig(
        dataset="folder", data_dir=str(image_folder(tmp_path / "images")), image_size=8,
        channels=1,
    )  # fmt: skip
    first = load_dataset(config, "train").images.clone()
    (cached,) = (tmp_path / "cache" / "ddpm" / "decoded").glob(f"*.{which}.npy")
    good = cached.read_bytes()
    damaged = good[: len(good) // 2] if damage == "truncated" else os.urandom(len(good))
    cached.write_bytes(damaged)
    with caplog.at_level(logging.WARNING):
        again = load_dataset(config, "train").images
    assert torch.equal(again, first)
    warnings = [r.getMessage() for r in caplog.records if str(cached) in r.getMessage()]
    assert len(warnings) == 1 and "again" in warnings[0], caplog.text
    assert cached.read_bytes() == good  # rebuilt
    assert sorted(p.name for p in cached.parent.iterdir() if p.name.startswith(".")) == []


# Guards: the decode cache is a sparse memory map: on a disk with room for its first and last page
# but not the ones between, writing the pixels killed the process with SIGBUS (no message at all);
# with less room numpy's OSError was a traceback. In a subprocess, so a SIGBUS cannot take pytest
# down with it.
@pytest.mark.slow
def test_a_full_cache_disk_is_one_error_line(tiny_fs, tmp_path):
    disk = tiny_fs(256)
    fill(disk, leave=8192)  # 2 pages; the 13 x 32 x 32 pixels and the header need 4
    data_dir = image_folder(tmp_path / "images")
    env = {**os.environ, "XDG_CACHE_HOME": str(disk)}
    args = ["train", "--dataset", "folder", "--out", str(tmp_path / "run"), "--quiet",
            *sets([*TINY_RUN, f"data.data_dir={data_dir}", "data.image_size=32",
                   "data.channels=1", "model.attention_resolutions=[16]"])]  # fmt: skip
    result = subprocess.run(
        [sys.executable, "-m", "ddpm", *args], env=env, capture_output=True, text=True
    )
    err = result.stderr.strip()
    assert result.returncode == 2 and len(err.splitlines()) == 1, (result.returncode, err)
    assert "could not write" in err and "No space left on device" in err and "XDG_CACHE_HOME" in err
    assert not [p for p in disk.rglob("*") if p.is_file() and p.name != "filler"]


# Guards: a metrics.csv of an older version is rewritten with the new columns; on a full disk that
# must leave the old file as it was, not a torn or emptied one.
def test_a_full_disk_while_adding_columns_keeps_the_older_metrics_file(tiny_fs):
    disk = tiny_fs(512)
    target = disk / "metrics.csv"
    target.write_text("metric,value,n\nfid,1.5,100\n")
    before = files_on(disk)
    fill(disk)
    with pytest.raises(DDPMError) as caught:
        write_rows(eval_rows(200), target)
    assert_one_line(caught.value, target)
    assert files_on(disk) == before
