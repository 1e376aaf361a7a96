"""Pictures: sample grids, progressive-denoising and interpolation strips, loss and sweep plots."""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torchvision.utils import make_grid

from .files import atomic_output
from .pixels import to_uint8
from .samplers import StepInfo

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from .sweep import SweepRow

MIN_DISPLAY_PIXELS = 64  # small images (8x8 digits) are enlarged with nearest-neighbour to this


def _enlarge(images: torch.Tensor) -> torch.Tensor:
    scale = max(1, MIN_DISPLAY_PIXELS // images.shape[-1])
    return (
        F.interpolate(images.float(), scale_factor=scale, mode="nearest") if scale > 1 else images
    )


def save_image(grid: torch.Tensor, path: str | Path) -> Path:
    """Save a [C, H, W] image in [-1, 1] as PNG, atomically (a full disk is one DDPMError and
    leaves any earlier file at `path` intact)."""
    path = Path(path)
    array = to_uint8(grid).permute(1, 2, 0).numpy()
    with atomic_output(path) as tmp:
        Image.fromarray(array[..., 0] if array.shape[2] == 1 else array).save(tmp)
    return path


def save_images(
    images: torch.Tensor, folder: str | Path, *, names: list[str] | None = None
) -> list[Path]:
    """Save images [N, C, H, W] in [-1, 1] as one PNG each, at their own size, named by index
    (folder/000000.png, 000001.png, ...) or by `names` (N stems), each atomically; the folder is
    made if absent."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    stems = names or [f"{i:06d}" for i in range(images.shape[0])]
    return [save_image(image, folder / f"{stem}.png") for image, stem in zip(images, stems)]


def save_grid(images: torch.Tensor, path: str | Path, *, nrow: int | None = None) -> Path:
    """Save images [N, C, H, W] in [-1, 1] as one PNG grid, nrow per row (default: square)."""
    nrow = nrow or math.ceil(math.sqrt(images.shape[0]))
    grid = make_grid(_enlarge(images), nrow=nrow, padding=2, pad_value=1.0)
    return save_image(grid if images.shape[1] != 1 else grid[:1], path)


class TrajectoryRecorder:
    """A sampler callback that keeps x_t and x0_hat of the first `num_images` images at
    `num_frames` evenly spaced steps (always including the first and the last)."""

    def __init__(self, num_steps: int, *, num_frames: int = 10, num_images: int = 4):
        count = min(num_frames, num_steps)
        self.keep = {round(i * (num_steps - 1) / max(1, count - 1)) for i in range(count)}
        self.num_images = num_images
        self.x_t: list[torch.Tensor] = []
        self.x0_hat: list[torch.Tensor] = []
        self.timesteps: list[int] = []

    def __call__(self, info: StepInfo) -> None:
        if info.i in self.keep and len(self.x_t) < len(self.keep):
            self.x_t.append(info.x_t[: self.num_images].float().cpu())
            self.x0_hat.append(info.x0_hat[: self.num_images].float().cpu())
            self.timesteps.append(info.t)


def save_progressive(recorder: TrajectoryRecorder, final: torch.Tensor, path: str | Path) -> Path:
    """A strip per image: top row x_t from pure noise to the final image, bottom row the predicted
    x0 at the same steps (as in Ho et al. 2020, Fig. 6)."""
    rows = []
    for i in range(recorder.x_t[0].shape[0]):
        rows.append(torch.stack([x[i] for x in recorder.x_t] + [final[i].float()]))
        rows.append(torch.stack([x[i] for x in recorder.x0_hat] + [final[i].float()]))
    images = torch.cat(rows).clamp(-1, 1)
    return save_grid(images, path, nrow=len(recorder.x_t) + 1)


def moving_average(values: Sequence[float], window: int) -> np.ndarray:
    """Trailing mean over up to `window` values (shorter at the start): float64 [len(values)]."""
    x = np.asarray(values, dtype=np.float64)
    sums = np.cumsum(np.insert(x, 0, 0.0))
    index = np.arange(1, len(x) + 1)
    start = np.maximum(0, index - window)
    result: np.ndarray = (sums[index] - sums[start]) / (index - start)
    return result


def _save_figure(fig: Figure, path: str | Path) -> Path:
    """Write a matplotlib figure atomically (format from the suffix, PNG without one) and close it."""
    import matplotlib.pyplot as plt

    path = Path(path)
    try:
        with atomic_output(path) as tmp:
            fig.savefig(tmp, format=path.suffix[1:] or "png")
    finally:
        plt.close(fig)
    return path


def plot_loss(log_csv: str | Path, path: str | Path) -> Path | None:
    """Plot the loss column of a training log (raw and smoothed) against the step; None if empty."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with open(log_csv, newline="") as f:
        rows = [(int(r["step"]), float(r["loss"])) for r in csv.DictReader(f)]
    if not rows:
        return None
    steps, losses = zip(*rows)
    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=120)
    ax.plot(steps, losses, lw=0.8, alpha=0.5, label="loss (per log interval)")
    window = max(1, len(losses) // 20)
    smooth = moving_average(losses, window)
    ax.plot(steps, smooth, lw=1.5, label=f"moving average ({window})")
    ax.set(xlabel="step", ylabel="training loss", yscale="log", title="Training loss")
    ax.legend()
    fig.tight_layout()
    return _save_figure(fig, path)


def plot_quality(csv_path: str | Path, path: str | Path) -> Path | None:
    """FID (with its bootstrap standard deviation) against training minutes and against images
    seen, from RUN/eval/during_training.csv; None if it has no rows."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points = []
    with open(csv_path, newline="", errors="replace") as f:
        for r in csv.DictReader(f):
            try:  # a row torn by a kill is left out of the picture
                points.append((float(r["fid"]), float(r["fid_std"] or 0),
                               float(r["train_seconds"]) / 60, int(r["images_seen"]), r))  # fmt: skip
            except (KeyError, TypeError, ValueError):
                continue
    if not points:
        return None
    fid, spread, minutes, seen, rows = (list(column) for column in zip(*points))
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.5), dpi=120, sharey=True)
    for ax, x, label in ((axes[0], minutes, "training minutes"), (axes[1], seen, "images seen")):
        ax.errorbar(x, fid, yerr=spread, marker="o", ms=3, lw=1.2, capsize=2)
        ax.set(xlabel=label)
        ax.grid(True, lw=0.3)
    axes[0].set(ylabel=f"FID ({rows[-1]['feature_space']})")
    fig.suptitle(f"Sample quality while training (n = {rows[-1]['n']}, {rows[-1]['sampler']}, "
                 f"{rows[-1]['nfe']} NFE)")  # fmt: skip
    fig.tight_layout()
    return _save_figure(fig, path)


def plot_sweep(rows: Sequence[SweepRow], path: str | Path) -> Path:
    """Two panels against NFE (log x): the quality score per sampler, and images/s. A sampler
    measured at one NFE only (a DDPM-1000 reference) is also drawn as a dashed level."""
    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    by_sampler: dict[str, list[SweepRow]] = {}
    for row in sorted(rows, key=lambda r: r.nfe):
        by_sampler.setdefault(row.sampler, []).append(row)
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4), dpi=110)
    for name, points in by_sampler.items():
        nfe = [p.nfe for p in points]
        (line,) = left.plot(nfe, [p.score for p in points], "o-", label=name)
        if len(points) == 1:
            left.axhline(points[0].score, ls="--", lw=0.8, color=line.get_color())
        right.plot(nfe, [p.images_per_s for p in points], "o-", label=name)
    metric, n = rows[0].metric, rows[0].n
    left.set(xscale="log", yscale="log", xlabel="NFE (network evaluations)",
             ylabel=f"{metric} (lower is better)",
             title=f"{metric} vs test split, n={n}")  # fmt: skip
    right.set(xscale="log", yscale="log", xlabel="NFE (network evaluations)", ylabel="images/s",
              title="sampling speed")  # fmt: skip
    lo, hi = min(r.nfe for r in rows), max(r.nfe for r in rows)
    ticks = [v for v in (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000) if lo / 2 < v < hi * 2]
    for ax in (left, right):
        ax.set_xticks(ticks, [str(t) for t in ticks], minor=False)
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        for axis_formatter in (ax.yaxis.set_major_formatter, ax.yaxis.set_minor_formatter):
            axis_formatter(matplotlib.ticker.LogFormatter(labelOnlyBase=False))
        ax.grid(True, which="both", lw=0.3)
        ax.legend()
    fig.tight_layout()
    return _save_figure(fig, path)
