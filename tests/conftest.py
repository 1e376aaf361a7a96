import subprocess
from pathlib import Path

import pytest
import torch


def pytest_collection_modifyitems(config, items):
    """`gpu` tests skip, saying why, where no CUDA device is present (they run wherever one is)."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="gpu: needs a CUDA device; none is present")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def generator():
    """A fresh CPU generator with a fixed seed, for reproducible random tensors in a test."""
    return torch.Generator().manual_seed(0)


@pytest.fixture
def tiny_fs(tmp_path):
    """A real, tiny tmpfs file system (needs root; skipped where mounting is not allowed)."""
    mount = tmp_path / "disk"
    mount.mkdir()

    def make(size_kib: int) -> Path:
        result = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size_kib}k", "tmpfs", str(mount)],
            capture_output=True,
            text=True,
        )
        if result.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {result.stderr.strip()}")
        return mount

    yield make
    subprocess.run(["umount", str(mount)], capture_output=True)
