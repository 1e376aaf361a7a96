"""Real image and mask files for the `ddpm inpaint` / `ddpm edit` tests, and the commands run on
them through ddpm.cli.main (outputs into the test's own folder, never the run's)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from ddpm.cli import main

SIZE = 8  # the tiny digits run's images: 8x8 grey


def write_png(path: Path, pixels: np.ndarray) -> Path:
    """Write uint8 [H, W] (grey) or [H, W, 3] (RGB) with PIL; the format from the suffix."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(pixels, dtype=np.uint8)).save(path)
    return path


def picture(seed: int, size: int = SIZE) -> np.ndarray:
    """A grey uint8 [size, size] of random levels (no two tests' inputs alike)."""
    return np.random.default_rng(seed).integers(0, 256, (size, size), dtype=np.uint8)


def half_mask(size: int = SIZE) -> np.ndarray:
    """uint8 [size, size]: the left half white (kept), the right half black (generated)."""
    mask = np.zeros((size, size), dtype=np.uint8)
    mask[:, : size // 2] = 255
    return mask


def run_command(command: str, run: Path, out: Path, *extra: str) -> np.ndarray:
    """`ddpm COMMAND --run RUN ... --npz` into folder `out` -> arr_0 as int [N, H, W, C]."""
    out.mkdir(parents=True, exist_ok=True)
    files = ["--out", str(out / "grid.png"), "--npz", str(out / "r.npz"), "--quiet"]
    assert main([command, "--run", str(run), *files, *extra]) == 0
    return np.load(out / "r.npz")["arr_0"].astype(int)


def one_error_line(capsys, args: list[str], *fragments: str) -> str:
    """main(args) fails with exit code 2 and one stderr line holding every fragment."""
    code = main(args)
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert len(err.splitlines()) == 1 and err.startswith("ddpm: error:"), err
    for fragment in fragments:
        assert fragment in err, err
    return err
