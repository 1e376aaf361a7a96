"""Showing untrusted text (file names, folder names) on a terminal without letting it act there.

A file name may hold an escape sequence ("\\x1b[2J" clears the screen, "\\x1b]8;;" makes a link),
a newline that forges a second log line, a right-to-left override that reverses what follows, or
bytes that are not UTF-8 (Python keeps them as lone surrogates, and printing one raises
UnicodeEncodeError). `printable` escapes all of these, as repr() would, and leaves the rest as is.
"""

from __future__ import annotations

import os
import unicodedata

_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape(char: str) -> str:
    code = ord(char)
    if char in _NAMED:
        return _NAMED[char]
    if 0xDC80 <= code <= 0xDCFF:  # a byte of a non-UTF-8 name, kept by surrogateescape
        return f"\\x{code - 0xDC00:02x}"
    if code <= 0xFF:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}"


def printable(value: object) -> str:
    """`value` as text with every control, format, surrogate, private-use or unassigned character
    (Unicode category C*) and every separator but the space (Z*) escaped as repr() escapes it:
    the ESC character becomes the four characters backslash, x, 1, b; a newline becomes backslash,
    n; a non-UTF-8 byte 0xff of a file name becomes backslash, x, f, f. Printable text, which is
    what str.isprintable() accepts, is returned unchanged."""
    text = os.fspath(value) if isinstance(value, os.PathLike) else value
    text = os.fsdecode(text) if isinstance(text, bytes) else str(text)
    if text.isprintable():  # the common case, and a fast one
        return text
    return "".join(
        _escape(c) if c != " " and unicodedata.category(c)[0] in "CZ" else c for c in text
    )
