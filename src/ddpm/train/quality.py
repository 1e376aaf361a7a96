"""Sample quality measured while training: the curve of FID against training minutes.

Every `train.eval_every` (steps, or training time as "10m") the main process draws `train.eval_n`
images from the EMA weights with a fast sampler and a fixed seed, scores FID (with a bootstrap
standard deviation), KID and precision/recall against the test split in a feature space
(`train.eval_features`: a `ddpm featnet` name, a .safetensors file, or "inception"; by default
the feature network named after the dataset), appends a row to RUN/eval/during_training.csv,
redraws RUN/quality.png and keeps the lowest-FID weights as checkpoints/best_fid.safetensors.
Evaluations are skipped, saying so, while they would exceed `train.eval_max_fraction` of the
training time. Without a feature space, training goes on with a one-line notice.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..builders import build_schedule
from ..config import RunConfig, parse_duration
from ..data import load_dataset
from ..errors import DDPMError
from ..generate import generate, sample_config
from ..loaded_run import LoadedRun
from ..metrics import (
    FeatureSpace,
    MetricValue,
    cached_reference_features,
    extract_features,
    fidelity_metrics,
    resolve_feature_space,
)
from ..metrics.fidelity import layers_for
from ..models import UNet
from ..pixels import to_uint8
from ..samplers import num_function_evals
from ..viz import plot_quality
from . import run_files

log = logging.getLogger(__name__)
EVAL_SEED = 31_415  # fixed: the samples of every evaluation start from the same noise
METRICS = ("fid", "kid", "pr")
BOOTSTRAP_DRAWS = 10
FIELDS = ["step", "images_seen", "train_seconds", "eval_seconds", "n", "sampler", "nfe",
          "feature_space", "fid", "fid_std", "kid", "kid_std", "precision", "recall"]  # fmt: skip
TEXT_FIELDS = {"sampler", "feature_space"}
BEST_FID, CSV_NAME = "best_fid.safetensors", "during_training.csv"


def open_log(run_dir: Path, start: int) -> None:
    """On resume, keep only the rows up to the checkpoint's step (later ones are redone)."""
    path = run_dir / "eval" / CSV_NAME
    if path.exists():
        run_files.open_csv(path, FIELDS, start, text_fields=TEXT_FIELDS)


def parse_interval(text: str) -> tuple[int | None, float | None]:
    """train.eval_every: "500" -> (500 steps, None); "10m" -> (None, 600 s); "" -> (None, None)."""
    if not text:
        return None, None
    if text.strip().isdigit():  # TrainConfig has checked it is >= 1
        return int(text), None
    return None, parse_duration(text, key="train.eval_every (steps, or a duration)")


def fid_with_spread(
    samples: torch.Tensor, reference: torch.Tensor, *, seed: int
) -> tuple[float, float]:
    """FID of sample features [N, D] against reference features, and the standard deviation of
    FID over bootstrap resamples of the samples (the part of its noise that n controls). The
    reference statistics are computed once for all of them (torch-fidelity's FID functions)."""
    from torch_fidelity.metric_fid import fid_features_to_statistics, fid_statistics_to_metric

    reference_stats = fid_features_to_statistics(reference)

    def fid_of(features: torch.Tensor) -> float:
        stats = fid_features_to_statistics(features)
        metric = fid_statistics_to_metric(stats, reference_stats, verbose=False)
        return float(metric["frechet_inception_distance"])  # a float already, typed Any

    generator = torch.Generator().manual_seed(seed)
    draws = [
        fid_of(samples[torch.randint(len(samples), (len(samples),), generator=generator)])
        for _ in range(BOOTSTRAP_DRAWS)
    ]
    return fid_of(samples), float(torch.tensor(draws).std())


@dataclass
class QualityMonitor:
    config: RunConfig
    run_dir: Path
    space: FeatureSpace
    reference: dict[str, torch.Tensor]
    world_size: int
    every_steps: int | None
    every_seconds: float | None
    last_step: int
    last_seconds: float
    eval_seconds: float = 0.0
    best_fid: float = math.inf
    last_scores: dict[str, float] = field(default_factory=dict)  # the last row's numbers

    @classmethod
    def create(
        cls,
        config: RunConfig,
        run_dir: Path,
        *,
        start: int,
        seconds: float,
        world_size: int,
        device: torch.device,
    ) -> QualityMonitor | None:
        """The run's monitor, or None (with a one-line notice) without train.eval_every or a
        feature space to score in."""
        cfg = config.train
        every_steps, every_seconds = parse_interval(cfg.eval_every)
        if every_steps is None and every_seconds is None:
            return None
        features = cfg.eval_features or config.data.dataset
        try:
            space = resolve_feature_space(features)
        except DDPMError as error:
            log.warning("no evaluation during training (train.eval_every): %s", error)
            return None
        reference = load_dataset(config.data, "test")
        name = f"{config.data.dataset}-test"
        features_of_reference, _ = cached_reference_features(
            name, reference.images, space, layers_for(METRICS, space), device=device
        )
        return cls(config, run_dir, space, features_of_reference, world_size, every_steps,
                   every_seconds, start, seconds, best_fid=_best_recorded(run_dir, start))  # fmt: skip

    def due(self, step: int, seconds: float) -> bool:
        if self.every_steps is not None:
            return step // self.every_steps > self.last_step // self.every_steps
        assert self.every_seconds is not None  # create() sets one of the two intervals
        return seconds - self.last_seconds >= self.every_seconds

    def evaluate(
        self,
        net: UNet,
        step: int,
        seconds: float,
        *,
        callback: Callable[[object], None] | None = None,
    ) -> float | None:
        """Score the EMA at `step` (training seconds `seconds`); the FID, or None if skipped.
        `callback` is the sampler's per-step callback (it may raise to abandon the evaluation)."""
        self.last_step, self.last_seconds = step, seconds
        self.last_scores = {}  # until this evaluation's row is written
        cap = self.config.train.eval_max_fraction
        if self.eval_seconds > cap * max(seconds, 1e-9):
            log.warning(
                "evaluation at step %d skipped: evaluations took %.0f s of %.0f s of training, "
                "over train.eval_max_fraction=%g",
                step, self.eval_seconds, seconds, cap,
            )  # fmt: skip
            return None
        started = time.perf_counter()
        cfg = self.config.train
        run = LoadedRun(net, build_schedule(self.config), self.config, step)
        sample = sample_config(self.config, sampler=cfg.eval_sampler, steps=cfg.eval_steps)
        images = generate(run, sample, n=cfg.eval_n, seed=EVAL_SEED, callback=callback,
                          progress=False)  # fmt: skip
        device = next(net.parameters()).device
        features = extract_features(
            to_uint8(images), self.space, layers_for(METRICS, self.space), device=device
        )
        values = {v.metric: v for v in fidelity_metrics(features, self.reference, ["kid", "pr"],
                                                        self.space)}  # fmt: skip
        layer = self.space.layer("fid")
        fid, fid_std = fid_with_spread(features[layer], self.reference[layer], seed=EVAL_SEED)
        spent = time.perf_counter() - started
        self.eval_seconds += spent
        self._write_row(step, seconds, spent, fid, fid_std, values)
        log.info("step %d: FID %.2f +- %.2f in %s (%.0f s)", step, fid, fid_std,
                 self.space.label, spent)  # fmt: skip
        return fid

    def _write_row(
        self,
        step: int,
        seconds: float,
        spent: float,
        fid: float,
        fid_std: float,
        values: dict[str, MetricValue],
    ) -> None:
        cfg, path = self.config.train, self.run_dir / "eval" / CSV_NAME
        if not path.exists():
            run_files.open_csv(path, FIELDS, 0)
        row = [step, step * cfg.batch_size * self.world_size, f"{seconds:.1f}", f"{spent:.1f}",
               cfg.eval_n, cfg.eval_sampler, num_function_evals(cfg.eval_sampler, cfg.eval_steps),
               self.space.label, f"{fid:.6g}", f"{fid_std:.3g}", f"{values['kid'].value:.6g}",
               f"{values['kid'].spread:.3g}", f"{values['precision'].value:.4f}",
               f"{values['recall'].value:.4f}"]  # fmt: skip
        run_files.append_csv(path, row)
        self.last_scores = {"fid": fid, "fid_std": fid_std, "kid": values["kid"].value,
                            "precision": values["precision"].value,
                            "recall": values["recall"].value}  # fmt: skip
        plot_quality(path, self.run_dir / "quality.png")


def _best_recorded(run_dir: Path, start: int) -> float:
    """The lowest FID logged up to `start` (a resumed run keeps its best_fid checkpoint)."""
    path = run_dir / "eval" / CSV_NAME
    rows = run_files.read_rows(path, FIELDS, start, text_fields=TEXT_FIELDS)
    return min((float(r["fid"]) for r in rows), default=math.inf)
