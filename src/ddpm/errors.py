"""The one exception type for errors a user can cause (bad option, missing file, corrupt checkpoint).

The CLI catches it and prints its message as a single line with exit code 2; anything else is a bug.
"""

from __future__ import annotations

import reprlib
from typing import Any


class DDPMError(Exception):
    """An error caused by user input, reported as one line without a traceback."""


class _ShortRepr(reprlib.Repr):
    def __init__(self) -> None:
        super().__init__()
        self.maxstring = self.maxother = 60
        self.maxlist = self.maxtuple = self.maxset = 6
        self.maxdict, self.maxlevel = 4, 3

    def repr_int(self, x: int, level: int) -> str:
        # repr() itself refuses ints of over 4300 digits; say how long it is instead
        if x.bit_length() > 200:
            return f"<an integer of about {int(x.bit_length() * 0.30103) + 1} digits>"
        return super().repr_int(x, level)


_SHORT = _ShortRepr()


def shorten(value: Any, limit: int = 80) -> str:
    """repr(value) for an error message, at most `limit` characters: a user's value may be a
    megabyte of YAML or a 5000-digit integer, and the message must stay one readable line."""
    text = _SHORT.repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
