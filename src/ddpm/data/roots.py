"""Where a dataset's files are looked for: data.data_dir when set, then default folders such as
./data, each folder itself and then the sub-folders that the dataset's download unpacks to.

Only the search lives here; each loader says in its own error what it looked for and where.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path


def search_roots(data_dir: str | None, *defaults: Path) -> list[Path]:
    """data.data_dir (when set) and then `defaults`, in the order they are searched."""
    return [Path(data_dir), *defaults] if data_dir else list(defaults)


def find_root(
    roots: Sequence[Path], subfolders: Sequence[str], holds: Callable[[Path], bool]
) -> Path | None:
    """The first folder that `holds` the dataset, trying each root itself and then its
    `subfolders` before the next root; None when no folder does."""
    for root in roots:
        for folder in (root, *(root / name for name in subfolders)):
            if holds(folder):
                return folder
    return None
