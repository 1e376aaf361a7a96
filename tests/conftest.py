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


def _snapshot(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(root.rglob("*")) if p.is_file()}  # fmt: skip


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> Path:
    """One tiny trained digits run (tests/tiny.py: TINY_RUN, 4 steps, one sample grid) shared by
    every test that only reads a run (sample, interpolate, sweep into their own paths). Tests
    must not write into it: the session fails at the end if any file in it changed."""
    from tiny import train_tiny

    run = train_tiny(tmp_path_factory.mktemp("shared") / "tiny", "train.sample_every=4")
    before = _snapshot(run)
    yield run
    assert _snapshot(run) == before, f"a test wrote into the shared run {run}"


@pytest.fixture
def isolated(tmp_path, monkeypatch):
    """A private cache and working directory, so no test sees another's files or ./data."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
