"""Writing files so that a kill, a full disk or a read-only folder never leaves half of one.

Every file ddpm writes (checkpoints, config.json, sample grids, plots, .npz files, caches) goes
through `atomic_write` (bytes) or `atomic_output` (a path to hand to a library's own writer): the
data goes to a temporary file beside the target, is fsynced and renamed over it, so a reader sees
the old file or the new one, never a torn one. A failure is one DDPMError naming the file and the
reason; cleaning up the temporary file never adds a second error. Append-only CSV logs are the one
exception (see ddpm.train.run_files): their torn last line is dropped when they are read.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

from .errors import DDPMError


def _temporary(path: Path) -> Path:
    # keeps the suffix last, so libraries that choose a format by extension (PIL, matplotlib,
    # numpy) still see it
    return path.with_name(f".{path.stem}.tmp{os.getpid()}{path.suffix}")


def _fsync_folder(folder: Path) -> None:
    """Make the rename durable; not every platform or file system can open a folder for it."""
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _failure(path: Path, error: BaseException, note: str) -> DDPMError:
    reason = error.strerror if isinstance(error, OSError) and error.strerror else str(error)
    return DDPMError(f"could not write {path}: {reason}{'; ' + note if note else ''}")


@contextlib.contextmanager
def atomic_output(path: str | Path, *, note: str = "") -> Iterator[Path]:
    """Yield a temporary path to write `path`'s content to; on success it is fsynced and renamed
    over `path`. Any error (an OSError, or the writer's own) is raised as one DDPMError whose
    message ends with `note` (e.g. "earlier checkpoints are intact"); the temporary is removed."""
    path = Path(path)
    tmp = _temporary(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except (OSError, ValueError) as error:
        _discard(tmp)
        raise _failure(path, error, note) from None
    except BaseException:  # the writer's own error or Ctrl-C: no temporary left behind either
        _discard(tmp)
        raise
    _fsync_folder(path.parent)


def _discard(tmp: Path) -> None:
    with contextlib.suppress(OSError):
        tmp.unlink(missing_ok=True)


def atomic_write(path: str | Path, blob: bytes, *, note: str = "") -> Path:
    """Write `blob` to `path` atomically (see atomic_output); returns `path`."""
    with atomic_output(path, note=note) as tmp, open(tmp, "wb") as f:
        f.write(blob)
    return Path(path)


def remove_temporaries(folder: Path) -> None:
    """Delete temporary files that a killed writer left in `folder` (never a complete file)."""
    if folder.is_dir():
        for tmp in folder.glob(".*.tmp*"):
            with contextlib.suppress(OSError):
                tmp.unlink()
