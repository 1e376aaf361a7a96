"""Scoring a run (or a set of samples from any tool), as `ddpm eval` does: FID, IS, KID and
precision/recall of samples against a reference split, bits/dim and validation loss of the
network. `evaluate()` returns one `EvalRow` per number with where it came from: sampler, steps,
number of samples, feature space, reference split and seed, and for a run's own samples
everything else that made them (EMA or raw weights, spacing, eta, class, guidance, precision,
compile, device, checkpoint file). `ddpm.eval_csv` records them in metrics.csv.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, NoReturn

import torch
from tqdm import tqdm

from .config import DataConfig
from .data import ImageData, load_dataset
from .errors import DDPMError
from .eval_csv import EvalRow
from .eval_samples import GenerationKey, SampleRequest, generated_samples
from .generate import sample_config
from .loaded_run import LoadedRun
from .metrics.extractors import resolve_feature_space
from .metrics.fidelity import (
    SAMPLE_METRICS,
    MetricValue,
    cached_reference_features,
    extract_features,
    fidelity_metrics,
    layers_for,
)
from .metrics.sample_files import load_samples, match_channels
from .samplers import num_function_evals

MODEL_METRICS = ("bpd", "val-loss")
METRICS = SAMPLE_METRICS + MODEL_METRICS
_NEEDS_SAMPLES = "without a run, evaluate needs samples: a .npz file or image folder"


def parse_metrics(text: str) -> tuple[str, ...]:
    """ "fid, kid,bpd" -> ("fid", "kid", "bpd"): each known, in order, once."""
    return _known_metrics(m.strip() for m in text.split(",") if m.strip())


def _known_metrics(names: Iterable[str]) -> tuple[str, ...]:
    names = tuple(dict.fromkeys(names))
    unknown = [m for m in names if m not in METRICS]
    if unknown or not names:
        raise DDPMError(
            f"unknown metric {', '.join(unknown) or '(none)'}; known: {', '.join(METRICS)}"
        )
    return names


def _bar(total: int, desc: str, quiet: bool) -> tqdm[NoReturn]:  # a bar without an iterable
    return tqdm(total=total, desc=desc, unit="img", disable=quiet, leave=False)


def sample_metrics(
    samples: torch.Tensor,
    reference: ImageData,
    reference_name: str,
    metrics: Sequence[str],
    *,
    features: str,
    inception_weights: str | None = None,
    seed: int = 2020,
    device: torch.device | str = "cpu",
    quiet: bool = False,
    log: Callable[[str], None] = print,
) -> tuple[list[MetricValue], str]:
    """FID/IS/KID/PR of uint8 samples [N, C, H, W] against a reference split -> (values, space)."""
    metrics = [m for m in metrics if m in SAMPLE_METRICS]
    space = resolve_feature_space(features, inception_weights=inception_weights)
    samples = match_channels(samples, reference.images.shape[1])
    if samples.shape[1:] != reference.images.shape[1:]:
        raise DDPMError(
            f"samples are {'x'.join(map(str, samples.shape[1:]))} but the reference images are "
            f"{'x'.join(map(str, reference.images.shape[1:]))} (C x H x W)"
        )
    if "kid" in metrics and min(len(samples), len(reference)) < 2:
        raise DDPMError("KID needs at least 2 images in each set")
    layers = layers_for(metrics, space)
    started = time.perf_counter()
    with _bar(len(reference), "reference features", quiet) as bar:
        ref_features, cached = cached_reference_features(
            reference_name, reference.images, space, layers, device=device, progress=bar.update
        )
    log(
        f"reference: {reference_name}, {len(reference)} images, "
        f"{'read from the cache' if cached else 'features computed and cached'} "
        f"({time.perf_counter() - started:.1f} s)"
    )
    started = time.perf_counter()
    with _bar(len(samples), "sample features", quiet) as bar:
        sample_features = extract_features(
            samples, space, layers, device=device, progress=bar.update
        )
    values = fidelity_metrics(sample_features, ref_features, metrics, space, seed=seed)
    log(f"{len(samples)} samples scored in {space.label} ({time.perf_counter() - started:.1f} s)")
    return values, space.label


@dataclass(frozen=True)
class Reference:
    """The real images samples are scored against (and bits/dim and the validation loss are
    measured on): a split of a dataset, its first `limit` images (None: all)."""

    split: Literal["test", "train"] = "test"
    limit: int | None = None
    data: DataConfig | None = None  # None: the run's config.data


@dataclass(frozen=True)
class BpdSettings:
    """How bits/dim is measured (ddpm.metrics.likelihood.bits_per_dim)."""

    num_images: int = 256  # the first reference images
    num_timesteps: int | None = None  # K stratified terms per image; None: all T (exact)
    batch_size: int = 256
    precision: str = "fp32"  # a measurement: fp32 unless asked otherwise


def evaluate(
    metrics: Sequence[str],
    *,
    run: LoadedRun | None = None,
    samples: str | Path | SampleRequest | None = None,
    reference: Reference = Reference(),
    features: str = "inception",
    inception_weights: str | None = None,
    bpd: BpdSettings = BpdSettings(),
    out_dir: str | Path = "eval",
    device: torch.device | str | None = None,
    quiet: bool = False,
) -> list[EvalRow]:
    """Score `run` and/or `samples` -> one EvalRow per metric (record them with
    ddpm.eval_csv.write_rows).

    metrics: any of METRICS; bpd and val-loss need a run. samples: a .npz file or image folder
    to score, or a SampleRequest to generate them from the run (cached in out_dir/samples/,
    ddpm.eval_samples); None with a run: generate(run) of 10,000 images. features: "inception"
    (weights from inception_weights, else torch hub's cache) or a feature network's name or
    .safetensors file. device: where features are computed (None: the run's, else the CPU).
    Progress lines are printed; quiet hides the progress bars.
    """
    metrics = _known_metrics(metrics)
    sample_list = [m for m in metrics if m not in MODEL_METRICS]
    if run is not None:
        data = reference.data or run.config.data
    elif len(sample_list) < len(metrics) or reference.data is None:
        raise DDPMError("without a run, evaluate scores samples only, against reference.data")
    elif sample_list and not isinstance(samples, (str, Path)):
        raise DDPMError(_NEEDS_SAMPLES)
    else:
        data = reference.data
    images = load_dataset(data, reference.split, limit=reference.limit)
    ref_label = f"{data.dataset}:{reference.split}:{len(images)}"
    rows: list[EvalRow] = []
    if sample_list:
        scored, source, made = _samples_to_score(run, samples, Path(out_dir), quiet=quiet)
        if device is None:
            device = next(run.net.parameters()).device if run is not None else "cpu"
        values, space = sample_metrics(
            scored, images, f"{data.dataset}-{reference.split}", sample_list, features=features,
            inception_weights=inception_weights, device=device, quiet=quiet,
        )  # fmt: skip
        step = run.step if run else None
        rows += [
            EvalRow(v.metric, v.value, v.spread, feature_space=space, samples=str(source),
                    n=len(scored), reference=ref_label, **made, checkpoint_step=step)
            for v in values
        ]  # fmt: skip
    if run is not None:  # the model metrics (refused above without a run)
        if "bpd" in metrics:
            rows.append(_bpd_row(run, images, reference.split, ref_label, bpd, quiet=quiet))
        if "val-loss" in metrics:
            rows.append(_val_loss_row(run, images, reference.split, ref_label))
    return rows


def _samples_to_score(
    run: LoadedRun | None,
    samples: str | Path | SampleRequest | None,
    out_dir: Path,
    *,
    quiet: bool,
) -> tuple[torch.Tensor, str | Path, dict[str, Any]]:
    """(uint8 images [N, C, H, W], where they are, metrics.csv's columns saying how they were
    made): a file or folder as it is; a run's own samples generated, or read from the cache."""
    if isinstance(samples, (str, Path)):
        return load_samples(samples), samples, dict(sampler=None, steps=None, nfe=None, seed=None)
    if run is None:  # evaluate() refuses this before any work
        raise DDPMError(_NEEDS_SAMPLES)
    request = samples or SampleRequest(sample_config(run.config))
    images, path, key = generated_samples(run, request, out_dir / "samples", quiet=quiet)
    return images, path, _sample_columns(run, key)


def _network_columns(run: LoadedRun, precision: str) -> dict[str, Any]:
    """metrics.csv's columns for a number computed with the run's network."""
    device = next(run.net.parameters()).device.type
    checkpoint = str(run.checkpoint) if run.checkpoint else None
    return dict(ema=run.use_ema, precision=precision, device=device, checkpoint=checkpoint)


def _sample_columns(run: LoadedRun, key: GenerationKey) -> dict[str, Any]:
    """metrics.csv's columns for the run's own samples: every part of their key."""
    return _network_columns(run, key.precision) | dict(
        sampler=key.sampler, steps=key.steps, nfe=num_function_evals(key.sampler, key.steps),
        seed=key.seed, spacing=key.spacing, eta=key.eta, guidance=key.guidance,
        class_label=key.class_label, compile=key.compile,
    )  # fmt: skip


def _bpd_row(
    run: LoadedRun,
    reference: ImageData,
    split: str,
    ref_label: str,
    settings: BpdSettings,
    *,
    quiet: bool,
) -> EvalRow:
    """Bits/dim of the first reference images under the run's model, printed with its parts."""
    from .metrics.likelihood import bits_per_dim
    from .precision import resolve_precision

    images = reference.images[: settings.num_images]
    T = run.schedule.num_timesteps
    K = settings.num_timesteps
    per_image = T if K is None else min(K, T - 1) + 1
    started = time.perf_counter()
    total = len(images) * per_image
    with tqdm(total=total, desc="bits/dim", unit="img-step", disable=quiet, leave=False) as bar:
        result = bits_per_dim(
            run, images, num_timesteps=K, batch_size=settings.batch_size,
            precision=settings.precision, progress=bar.update,
        )  # fmt: skip
    how = (
        f"all {T} terms"
        if result.exhaustive
        else f"{result.num_timesteps} of {T} terms per image (stratified estimate of the sum)"
    )
    print(
        f"bits/dim: {result.mean:.4f} +- {result.std_error:.4f} (standard error) over "
        f"{result.num_images} images, {how}; prior {result.prior:.2e}, decoder "
        f"{result.decoder:.4f}, KL terms {result.kl_terms:.4f} ({time.perf_counter() - started:.0f} s)"
    )
    terms = "" if result.exhaustive else f", {result.num_timesteps}/{T} t"
    device = next(run.net.parameters()).device
    return EvalRow(
        "bpd", result.mean, result.std_error, feature_space="-",
        samples=f"{split} split{terms}", sampler=None, steps=None, nfe=None,
        n=result.num_images, reference=ref_label, seed=None, checkpoint_step=run.step,
        **_network_columns(run, resolve_precision(settings.precision, device)),
    )  # fmt: skip


def _val_loss_row(run: LoadedRun, reference: ImageData, split: str, ref_label: str) -> EvalRow:
    """The training objective of the run's network on the reference images."""
    from .train.validation import validation_loss

    loss = validation_loss(run.net, reference, run.config, num_images=len(reference))
    return EvalRow(
        "val-loss", loss, None, feature_space="-", samples=f"{split} split",
        sampler=None, steps=None, nfe=None, n=len(reference), reference=ref_label, seed=None,
        checkpoint_step=run.step, **_network_columns(run, "fp32"),  # validation runs in fp32
    )  # fmt: skip
