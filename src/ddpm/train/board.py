"""TensorBoard logging of a run (train.tensorboard=true): scalars and sample grids written with
torch.utils.tensorboard's SummaryWriter into RUN/tensorboard/. The tensorboard package is
optional; a run that asks for it without it is refused before anything is written."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ..errors import DDPMError

FOLDER = "tensorboard"
MISSING = "train.tensorboard=true needs the tensorboard package: pip install tensorboard"


def check_available() -> None:
    """One DDPMError line when torch.utils.tensorboard cannot be imported."""
    try:
        import torch.utils.tensorboard  # noqa: F401  (imports tensorboard itself)
    except ImportError:
        raise DDPMError(MISSING) from None


class Board:
    """The run's SummaryWriter. A resumed run passes its start step: events logged after it by
    the interrupted session are purged (they are redone)."""

    def __init__(self, run_dir: Path, start: int) -> None:
        check_available()
        from torch.utils.tensorboard import SummaryWriter

        self.writer: Any = SummaryWriter(str(run_dir / FOLDER), purge_step=start or None)

    def scalars(self, step: int, values: dict[str, float]) -> None:
        for tag, value in values.items():
            self.writer.add_scalar(tag, value, step)

    def image(self, tag: str, step: int, path: Path) -> None:
        """A PNG written by the run (a sample grid), as [H, W, C] uint8."""
        with Image.open(path) as image:
            array = np.asarray(image.convert("RGB"))
        self.writer.add_image(tag, array, step, dataformats="HWC")

    def flush(self) -> None:
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()
