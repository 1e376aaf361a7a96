"""The user's cache folder for ddpm: downloads and preprocessed datasets, never the data folders."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """$XDG_CACHE_HOME/ddpm, else ~/.cache/ddpm (the XDG base-directory convention)."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "ddpm"
