"""Quality and speed against the number of network evaluations (NFE), for several samplers.

For each (sampler, steps) pair, generate n images with the same seed, time it, and score them
against the test split: FID in a feature space (`features`: "inception" or a feature network, see
`ddpm.metrics.extractors`), or pixel-FD when none is given (`ddpm.metrics.pixel_fd`, a crude
score that needs no network). Rows go to a CSV and a two-panel plot (`viz.plot_sweep`).
"""

from __future__ import annotations

import csv
import dataclasses
import io
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from .config import Precision, SamplerName
from .data import load_dataset
from .errors import DDPMError
from .files import atomic_write
from .generate import generate, sample_config
from .loaded_run import LoadedRun
from .metrics.pixel_fd import METRIC_NAME, frechet_distance, gaussian_fit, pixel_features
from .pixels import to_uint8
from .samplers import num_function_evals


@dataclass(frozen=True)
class SweepRow:
    sampler: str
    steps: int
    nfe: int
    n: int
    metric: str
    score: float
    images_per_s: float
    seconds: float


def make_scorer(
    run: LoadedRun, features: str | None
) -> tuple[str, Callable[[torch.Tensor], float]]:
    """(metric name, score(uint8 images [N, C, H, W]) -> float) against the run's test split."""
    data = load_dataset(run.config.data, "test")
    if features is None:
        mu_ref, cov_ref = gaussian_fit(pixel_features(data.images))
        return METRIC_NAME, lambda images: frechet_distance(
            *gaussian_fit(pixel_features(images)), mu_ref, cov_ref
        )
    from .metrics.extractors import resolve_feature_space
    from .metrics.fidelity import cached_reference_features, extract_features, fidelity_metrics

    space = resolve_feature_space(features)
    layers = [space.layer("fid")]
    name = f"{run.config.data.dataset}-test"
    reference, _ = cached_reference_features(name, data.images, space, layers)

    def fid(images: torch.Tensor) -> float:
        values = fidelity_metrics(
            extract_features(images, space, layers), reference, ["fid"], space
        )
        return values[0].value

    return f"FID ({space.label})", fid


def run_sweep(
    run: LoadedRun,
    plan: Sequence[tuple[SamplerName, int]],
    *,
    n: int,
    seed: int = 0,
    batch_size: int | None = None,
    precision: Precision | None = None,
    compile: bool | None = None,
    progress: bool = True,
    features: str | None = None,
    on_row: Callable[[list[SweepRow]], None] | None = None,
) -> list[SweepRow]:
    """Generate n images per (sampler, steps) of the plan and score them; `on_row` receives the
    rows so far after each one (to write partial results). batch_size, precision and compile
    apply to every point (None: the run's config.sample); each sampler samples on its own grid
    (`sample_config`)."""
    if n < 2:
        raise DDPMError(f"n must be >= 2 to fit a covariance, got {n}")
    metric, score_of = make_scorer(run, features)
    if run.config.sample.compile if compile is None else compile:
        # compile before the clock starts, at the largest batch, so no row's images/s pays for it
        largest = min(n, batch_size or run.config.sample.batch_size)
        warm_up = sample_config(run.config, sampler="ddim", steps=1, batch_size=largest,
                                precision=precision, compile=True)  # fmt: skip
        generate(run, warm_up, n=largest, progress=False)
    rows: list[SweepRow] = []
    for sampler, steps in plan:
        start = time.perf_counter()
        sample = sample_config(run.config, sampler=sampler, steps=steps, batch_size=batch_size,
                               precision=precision, compile=compile)  # fmt: skip
        images = generate(run, sample, n=n, seed=seed, progress=progress)
        seconds = time.perf_counter() - start
        score = score_of(to_uint8(images))
        rows.append(
            SweepRow(sampler, steps, num_function_evals(sampler, steps), n, metric, score,
                     n / seconds, seconds)
        )  # fmt: skip
        if on_row is not None:
            on_row(rows)
    return rows


def write_csv(rows: Sequence[SweepRow], path: str | Path) -> Path:
    """One line per row, columns as in SweepRow."""
    text = io.StringIO(newline="")
    writer = csv.writer(text)
    writer.writerow([field.name for field in dataclasses.fields(SweepRow)])
    for r in rows:
        writer.writerow([r.sampler, r.steps, r.nfe, r.n, r.metric, f"{r.score:.6g}",
                         f"{r.images_per_s:.4g}", f"{r.seconds:.2f}"])  # fmt: skip
    return atomic_write(path, text.getvalue().encode())
