"""RUN/sessions.jsonl: one JSON line per `ddpm train` session of a run (its start and each
resume): when, the command line, the working folder, the step it started from, the machine, the
device, the resolved precision and the number of processes. The report shows the first line as
the command that made the run. Runs trained before this file existed have none ("not recorded").
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .files import atomic_write

log = logging.getLogger(__name__)
SESSIONS = "sessions.jsonl"
MAX_BYTES = 1 << 20  # a run resumed thousands of times still reads in a moment


def record_session(
    run_dir: Path,
    *,
    command: Sequence[str] | None,
    start_step: int,
    machine: dict[str, str],
    precision: str,
    world_size: int,
) -> Path:
    """Append this session's line (the file is rewritten atomically: a kill leaves the old one).
    command: argv as typed, e.g. ["ddpm", "train", "--dataset", "digits", ...]; None when the
    run was started from Python (the line then says so)."""
    path = run_dir / SESSIONS
    entry: dict[str, Any] = {
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "command": list(command) if command is not None else None,
        "cwd": str(Path.cwd()),
        "start_step": start_step,
        "machine": machine,
        "precision": precision,
        "world_size": world_size,
    }
    old = path.read_bytes()[-MAX_BYTES:] if path.is_file() else b""
    if old and not old.endswith(b"\n"):
        old += b"\n"
    return atomic_write(path, old + (json.dumps(entry) + "\n").encode())


def read_sessions(run_dir: Path) -> list[dict[str, Any]]:
    """The run's sessions, oldest first; lines that are not JSON objects are skipped (a hand edit
    or damage never stops a report)."""
    path = run_dir / SESSIONS
    try:
        text = path.read_bytes()[-MAX_BYTES:].decode("utf-8", errors="replace")
    except OSError:
        return []
    sessions = []
    for line in text.splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict):
            sessions.append(entry)
    return sessions
