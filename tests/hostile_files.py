"""Making hostile data files cheaply, and measuring what reading them costs (for
test_hostile_data.py): small on disk, they declare or inflate to gigabytes."""

from __future__ import annotations

import gzip
import os
import resource
import struct
import subprocess
import sys
import time
import tracemalloc
import zlib
from pathlib import Path

import numpy as np
import pytest

import ddpm
from ddpm.errors import DDPMError

GIB = 1 << 30
MB = 1 << 20
CHILD_ADDRESS_SPACE = 8 * GIB  # importing torch maps ~3.2 GB of address space


def traced(function):
    """(the DDPMError `function` raised, peak bytes traced, seconds); fails if none is raised."""
    tracemalloc.start()
    start = time.monotonic()
    try:
        with pytest.raises(DDPMError) as caught:
            function()
        return caught.value, tracemalloc.get_traced_memory()[1], time.monotonic() - start
    finally:
        tracemalloc.stop()


def limit_address_space() -> None:
    """In the child: a regression fails with MemoryError, not by filling the machine."""
    resource.setrlimit(resource.RLIMIT_AS, (CHILD_ADDRESS_SPACE, CHILD_ADDRESS_SPACE))


def run_train(args: list[str], cwd: Path, timeout: float = 240) -> tuple[int, str, int, float]:
    """`python -m ddpm train ...` -> (exit code, stderr, peak resident bytes, seconds), run on
    the ddpm package this test imports, whatever the working directory."""
    command = [sys.executable, "-m", "ddpm", "train", "--out", str(cwd / "run"), "--quiet", *args]
    err_file = cwd / "stderr.txt"
    source = str(Path(ddpm.__file__).resolve().parents[1])
    env = {**os.environ, "XDG_CACHE_HOME": str(cwd / "cache"),
           "PYTHONPATH": os.pathsep.join([source, os.environ.get("PYTHONPATH", "")])}  # fmt: skip
    start = time.monotonic()
    with open(err_file, "w") as err:
        process = subprocess.Popen(
            command, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=err,
            preexec_fn=limit_address_space,
        )  # fmt: skip
    while True:  # os.wait4 gives this child's own rusage (RUSAGE_CHILDREN mixes in all others)
        pid, status, usage = os.wait4(process.pid, os.WNOHANG)
        if pid:
            break
        if time.monotonic() - start > timeout:
            process.kill()
            pid, status, usage = os.wait4(process.pid, 0)
            break
        time.sleep(0.05)
    process.returncode = os.waitstatus_to_exitcode(status)
    seconds = time.monotonic() - start
    return process.returncode, err_file.read_text(), usage.ru_maxrss * 1024, seconds


def assert_one_error_line(code: int, stderr: str, name: str) -> str:
    """Exit 2; every line a ddpm message (warnings, then the error), no traceback."""
    lines = stderr.strip().splitlines()
    assert code == 2 and lines and lines[-1].startswith("ddpm: error: "), (code, stderr[-2000:])
    assert all(line.startswith("ddpm: ") for line in lines), stderr[-2000:]
    assert name in lines[-1], lines[-1]
    return lines[-1]


def idx_header(*shape: int) -> bytes:
    return bytes([0, 0, 8, len(shape)]) + struct.pack(f">{len(shape)}I", *shape)


def zeros_gzip(num_bytes: int) -> bytes:
    """A gzip of `num_bytes` zeros, made of 64 MiB members compressed once (4 GiB: 4.2 MB)."""
    block = 64 * MB
    member = gzip.compress(bytes(block), compresslevel=9)
    tail = gzip.compress(bytes(num_bytes % block), compresslevel=9)
    return member * (num_bytes // block) + tail


class Allocates:
    """Pickles as a call of an admitted numpy constructor that allocates the shape it is given,
    with no data behind it."""

    def __init__(self, call: str, shape: tuple[int, ...]):
        self.call, self.shape = call, shape

    def __reduce__(self):
        if self.call == "ndarray":
            return np.ndarray, (self.shape, np.dtype(np.uint8))
        return np._core.multiarray._reconstruct, (np.ndarray, self.shape, np.dtype(np.uint8))


def png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def black_png(width: int, height: int) -> bytes:
    """A valid 8-bit RGB PNG of zeros, written by hand: 10000x10000 (300 MB decoded) is ~300 KB."""
    compressor = zlib.compressobj(9)
    line = bytes(1 + 3 * width)  # filter type 0, then the pixels
    data = b"".join(compressor.compress(line) for _ in range(height)) + compressor.flush()
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", header)
        + png_chunk(b"IDAT", data)
        + png_chunk(b"IEND", b"")
    )
