"""One writer per run folder: an exclusive lock on `RUN/.lock`, held while a run trains.

The lock is an OS advisory lock (fcntl.flock on POSIX, msvcrt.locking on Windows) on an open file
descriptor, so the operating system releases it when the process ends, however it ends (a SIGKILL
included): a stale lock file never blocks a later run. The file holds the holder's PID and command
line, which the refusal names.
"""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path

from ..errors import DDPMError

LOCK_NAME = ".lock"

if sys.platform == "win32":  # pragma: no cover - exercised on Windows only
    import msvcrt

    def _try_lock(fd: int) -> bool:
        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        except OSError:
            return False
        return True

else:
    import fcntl

    def _try_lock(fd: int) -> bool:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True


class RunLock:
    """Context manager: holds the run folder's lock, or raises DDPMError naming the holder."""

    def __init__(self, run_dir: Path):
        self.path = Path(run_dir) / LOCK_NAME
        self._fd: int | None = None

    def __enter__(self) -> RunLock:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as error:
            raise DDPMError(
                f"cannot write to the run folder {self.path.parent}: {error.strerror or error}"
            ) from None
        if not _try_lock(fd):
            os.lseek(fd, 0, os.SEEK_SET)
            holder = os.read(fd, 4096).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise DDPMError(
                f"{self.path.parent} is in use by {holder.splitlines()[0]}; wait for it to "
                f"finish or stop it (one writer per run folder)"
            )
        with contextlib.suppress(OSError):  # who holds it is a courtesy, not a requirement
            os.ftruncate(fd, 0)
            os.lseek(fd, 0, os.SEEK_SET)
            os.write(fd, f"process {os.getpid()} ({' '.join(sys.argv)[:200]})\n".encode())
        self._fd = fd
        return self

    def __exit__(self, *exc: object) -> None:
        if self._fd is not None:
            os.close(self._fd)  # releases the lock; the file stays (removing it would race)
            self._fd = None
