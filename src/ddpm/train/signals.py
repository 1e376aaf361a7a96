"""Graceful stops: SIGINT (Ctrl-C) and SIGTERM (a cluster's pre-emption) ask the loop to stop after
the current step, so it can save a checkpoint; a second SIGINT interrupts at once."""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from types import FrameType
from typing import Any

from ..errors import DDPMError


class TrainingStopped(DDPMError):
    """Training stopped on request after saving a checkpoint."""


class StopRequest:
    """Context manager; `requested` becomes the signal's name once one arrives."""

    def __init__(self) -> None:
        self.requested: str | None = None
        # what signal.signal returns and takes: a handler, SIG_DFL/SIG_IGN, or None (not set
        # from Python)
        self._previous: dict[
            int, Callable[[int, FrameType | None], Any] | int | signal.Handlers | None
        ] = {}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested = signal.Signals(signum).name

    def __enter__(self) -> StopRequest:
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGINT, signal.SIGTERM):
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
