"""The report's figures, drawn with matplotlib's object API (no pyplot: no global state, safe to
call from inside a training run) and returned as PNG bytes, or None when there is nothing to draw.
"""

from __future__ import annotations

import io
from collections.abc import Sequence

import numpy as np
from matplotlib.figure import Figure

from ..viz import moving_average
from .collect import LogPoint

DPI = 100
VAL_COLOR, TRAIN_COLOR = "#d62728", "#1f77b4"


def _png(fig: Figure) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI)
    return buffer.getvalue()


def val_minutes(log: Sequence[LogPoint], val: Sequence[tuple[int, float]]) -> list[float]:
    """The minute of each validation step, interpolated on the log's (step, minutes)."""
    if not log:
        return []
    steps = np.array([p.step for p in log], dtype=np.float64)
    minutes = np.array([p.minutes for p in log], dtype=np.float64)
    return [float(m) for m in np.interp([s for s, _ in val], steps, minutes)]


def loss_figure(log: Sequence[LogPoint], val: Sequence[tuple[int, float]]) -> bytes | None:
    """Training loss (per log row, and its moving average) and validation loss, against steps
    (left) and minutes (right), log y."""
    if not log and not val:
        return None
    fig = Figure(figsize=(11, 3.8))
    left, right = fig.subplots(1, 2, sharey=True)
    window = max(1, len(log) // 20)
    smooth = moving_average([p.loss for p in log], window) if log else np.array([])
    x_val = {"step": [s for s, _ in val], "minutes": val_minutes(log, val)}
    for ax, key in ((left, "step"), (right, "minutes")):
        x = [getattr(p, key) for p in log]
        if log:
            ax.plot(x, [p.loss for p in log], lw=0.8, alpha=0.35, color=TRAIN_COLOR)
            label = f"training (mean of {window} log rows)" if window > 1 else "training"
            ax.plot(x, smooth, lw=1.6, color=TRAIN_COLOR, label=label)
        if val and (key == "step" or log):
            ax.plot(x_val[key], [v for _, v in val], "o-", ms=4, lw=1.2, color=VAL_COLOR,
                    label="validation (EMA)")  # fmt: skip
        ax.set_xlabel("step" if key == "step" else "minutes (wall clock)")
        ax.grid(True, lw=0.3)
    left.set_ylabel("loss")
    left.set_yscale("log")
    left.legend(loc="upper right")
    left.set_title("Loss against steps")
    right.set_title("Loss against minutes")
    fig.tight_layout()
    return _png(fig)


def speed_figure(log: Sequence[LogPoint]) -> bytes | None:
    """Training images/s against minutes (each log interval's rate)."""
    if not log:
        return None
    fig = Figure(figsize=(11, 2.8))
    ax = fig.subplots()
    ax.plot([p.minutes for p in log], [p.images_per_s for p in log], lw=1.0, color="#2ca02c")
    ax.set(xlabel="minutes (wall clock)", ylabel="images/s", title="Training speed")
    ax.set_ylim(bottom=0)
    ax.grid(True, lw=0.3)
    fig.tight_layout()
    return _png(fig)


def _column(rows: Sequence[dict[str, str]], key: str) -> list[float]:
    values = []
    for row in rows:
        try:
            values.append(float(row.get(key) or "nan"))
        except ValueError:
            values.append(float("nan"))
    return values


def quality_figure(rows: Sequence[dict[str, str]]) -> bytes | None:
    """From eval/during_training.csv: FID with its bootstrap standard deviation, KID, and
    precision/recall, against training minutes (evaluations excluded)."""
    if not rows:
        return None
    minutes = [m / 60 for m in _column(rows, "train_seconds")]
    fig = Figure(figsize=(11, 3.4))
    fid_ax, kid_ax, pr_ax = fig.subplots(1, 3)
    fid_ax.errorbar(minutes, _column(rows, "fid"), yerr=np.nan_to_num(_column(rows, "fid_std")),
                    marker="o", ms=4, lw=1.2, capsize=2)  # fmt: skip
    fid_ax.set(ylabel="FID (lower is better)", title=f"FID in {rows[-1].get('feature_space')}")
    kid_ax.errorbar(minutes, _column(rows, "kid"), yerr=np.nan_to_num(_column(rows, "kid_std")),
                    marker="o", ms=4, lw=1.2, capsize=2, color="#9467bd")  # fmt: skip
    kid_ax.set(ylabel="KID", title="KID")
    pr_ax.plot(minutes, _column(rows, "precision"), "o-", ms=4, label="precision")
    pr_ax.plot(minutes, _column(rows, "recall"), "s-", ms=4, label="recall")
    pr_ax.set(ylabel="fraction", ylim=(0, 1.02), title="Precision / recall")
    pr_ax.legend()
    for ax in (fid_ax, kid_ax, pr_ax):
        ax.set_xlabel("training minutes")
        ax.grid(True, lw=0.3)
    fig.tight_layout()
    return _png(fig)
