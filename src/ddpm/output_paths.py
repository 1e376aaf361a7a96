"""Checking, before any training or sampling, that a command can write where it was told to.

Every file is written atomically at the end (ddpm.files), so a bad output path used to cost the
whole job: `sample --out some_folder` or `--out grid.txt` failed after sampling, `train --out` on a
read-only mount after loading the data. These checks run first and name the problem in one line:
the path is a folder (or a file where a folder is needed), its image extension is one PIL cannot
write, or its nearest existing folder cannot be written (a real probe file is created and deleted
there, which also catches read-only mounts that permission bits do not show). Nothing is created:
folders that do not exist yet are made by the writer, once there is something to write.
"""

from __future__ import annotations

import functools
import io
import os
import tempfile
from pathlib import Path

from .errors import DDPMError


@functools.cache
def _pil_writes(extension: str) -> bool:
    """Whether PIL saves grey and RGB images under `extension` (".png"); a trial save into memory,
    since some registered formats cannot write (BUFR, WMF: no handler; XBM: one bit per pixel)."""
    from PIL import Image

    Image.init()
    fmt = Image.registered_extensions().get(extension)
    if fmt is None or fmt not in Image.SAVE:
        return False
    for mode in ("L", "RGB"):
        try:
            Image.new(mode, (4, 4)).save(io.BytesIO(), format=fmt)
        except Exception:  # any plugin's refusal (OSError, ValueError, KeyError) means no
            return False
    return True


def _nearest_existing(path: Path) -> Path:
    path = path.absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _check_can_create(folder: Path, failure: str) -> None:
    """DDPMError starting with `failure` unless `folder` exists as a writable folder or can be
    made in one."""
    existing = _nearest_existing(folder)
    if not existing.is_dir():
        raise DDPMError(f"{failure}: {existing} is a file, not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        read_only = os.statvfs(existing).f_flag & os.ST_RDONLY
        reason = "Read-only file system" if read_only else "permission denied"
        raise DDPMError(f"{failure}: {existing} is not writable ({reason})")
    try:  # os.access can pass where writing fails (some read-only or network mounts)
        fd, probe = tempfile.mkstemp(prefix=".ddpm-probe-", dir=existing)
        os.close(fd)
        os.unlink(probe)
    except OSError as error:
        reason = error.strerror or str(error)
        raise DDPMError(f"{failure}: {existing} is not writable ({reason})") from None


def check_output_folder(path: str | Path, kind: str) -> Path:
    """A folder that a command will write into (e.g. kind "run folder"): it is a folder or does
    not exist yet, and it or its nearest existing parent is writable."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise DDPMError(f"the {kind} {path} is a file, not a folder")
    _check_can_create(path, f"cannot write to the {kind} {path}")  # RunLock's words, later
    return path


def check_output_file(path: str | Path, kind: str, *, image: bool = False) -> Path:
    """A file that a command will write (e.g. kind "sample grid"): not a folder, with an
    extension PIL can write when `image`, in a folder that exists or can be made, writably."""
    path = Path(path)
    if path.is_dir():
        example = path / ("samples.png" if image else "out")
        raise DDPMError(f"the {kind} {path} is a folder; give a file name such as {example}")
    if image and not _pil_writes(path.suffix.lower()):
        raise DDPMError(
            f"the {kind} {path} needs an image extension that PIL can write, such as .png or "
            f".jpg (got {path.suffix or 'none'})"
        )
    _check_can_create(path.parent, f"could not write {path}")  # as ddpm.files says, later
    return path


def check_distinct(paths: dict[str, Path | None]) -> None:
    """DDPMError if two outputs of one command (by option name) are the same file."""
    seen: dict[Path, str] = {}
    for option, path in paths.items():
        if path is None:
            continue
        key = Path(os.path.abspath(path))
        if key in seen:
            raise DDPMError(f"{seen[key]} and {option} name the same file {path}; one would "
                            f"overwrite the other")  # fmt: skip
        seen[key] = option
