"""FID, IS, KID and precision/recall through torch-fidelity, with cached reference features.

Features come from a torch-fidelity feature extractor (see `extractors`); the metrics are
torch-fidelity's own functions on them, with its defaults (IS over 10 splits, KID over 100
subsets of 1000 with the cubic polynomial kernel, precision/recall of Kynkaanniemi et al. 2019
with k = 3). Reference features are cached under `<cache>/fidelity/` as safetensors, keyed by the
feature space and a hash of the reference images, so the second evaluation reads them.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save

from ..data.cache import cache_dir
from ..files import atomic_write
from .extractors import FeatureSpace

SAMPLE_METRICS = ("fid", "is", "kid", "pr")
_LAYER_METRIC = {"fid": "fid", "kid": "kid", "pr": "prc", "is": "isc"}  # ours -> torch-fidelity's
KID_SUBSETS, KID_SUBSET_SIZE, PRC_NEIGHBORHOOD = 100, 1000, 3


@dataclass(frozen=True)
class MetricValue:
    """One number: its name ("fid", "is", "kid", "precision", "recall", "bpd", "val-loss"), and
    its spread where the metric has one (IS/KID: std over splits/subsets; bpd: standard error)."""

    metric: str
    value: float
    spread: float | None = None


def layers_for(metrics: Sequence[str], space: FeatureSpace) -> list[str]:
    """The distinct feature layers the metrics need, in a stable order."""
    layers = [space.layer(_LAYER_METRIC[m]) for m in metrics if m in _LAYER_METRIC]
    return list(dict.fromkeys(layers))


@torch.inference_mode()
def extract_features(
    images: torch.Tensor,
    space: FeatureSpace,
    layers: Sequence[str],
    *,
    batch_size: int = 500,
    device: torch.device | str = "cpu",
    progress: Callable[[int], object] | None = None,
) -> dict[str, torch.Tensor]:
    """uint8 [N, C, H, W] -> {layer: float32 [N, D]} through torch-fidelity's extractor."""
    from torch_fidelity.utils import create_feature_extractor

    device = torch.device(device)
    extractor = create_feature_extractor(
        space.extractor,
        list(layers),
        cuda=device.type == "cuda",
        feature_extractor_weights_path=str(space.weights_path),
        verbose=False,
    )
    out: dict[str, list[torch.Tensor]] = {layer: [] for layer in layers}
    for start in range(0, images.shape[0], batch_size):
        batch = images[start : start + batch_size].to(device)
        if batch.shape[1] == 1:  # as torch-fidelity reads grey image files: RGB, equal channels
            batch = batch.expand(-1, 3, -1, -1)
        features = extractor.convert_features_tuple_to_dict(extractor(batch))
        for layer in layers:
            out[layer].append(features[layer].float().cpu())
        if progress is not None:
            progress(batch.shape[0])
    return {layer: torch.cat(chunks) for layer, chunks in out.items()}


def images_digest(images: torch.Tensor) -> str:
    """SHA-256 of uint8 images [N, C, H, W] with their shape, as a cache key."""
    h = hashlib.sha256(str(tuple(images.shape)).encode())
    h.update(images.contiguous().numpy().tobytes())
    return h.hexdigest()


def reference_cache_path(name: str, images: torch.Tensor, space: FeatureSpace) -> Path:
    safe_label = space.label.replace(":", "-").replace("@", "-").replace("/", "-")
    key = f"{name}-{safe_label}-{images_digest(images)[:16]}"
    return cache_dir() / "fidelity" / f"{key}.safetensors"


def cached_reference_features(
    name: str,
    images: torch.Tensor,
    space: FeatureSpace,
    layers: Sequence[str],
    **extract_options: Any,  # extract_features's keywords, passed on as they are
) -> tuple[dict[str, torch.Tensor], bool]:
    """Reference features, read from the cache when present -> (features, were_cached).
    `name` ("fashion-mnist-test") makes the cache file recognisable."""
    path = reference_cache_path(name, images, space)
    cached: dict[str, torch.Tensor] = {}
    if path.is_file():
        try:
            cached = load_file(path)
        except (SafetensorError, OSError):
            cached = {}  # a damaged cache file is recomputed and replaced
    missing = [layer for layer in layers if layer not in cached]
    if not missing:
        return {layer: cached[layer] for layer in layers}, True
    cached.update(extract_features(images, space, missing, **extract_options))
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, save({k: v.contiguous() for k, v in cached.items()}))
    return {layer: cached[layer] for layer in layers}, False


def fidelity_metrics(
    samples: dict[str, torch.Tensor],
    reference: dict[str, torch.Tensor],
    metrics: Sequence[str],
    space: FeatureSpace,
    *,
    seed: int = 2020,
) -> list[MetricValue]:
    """torch-fidelity's metrics from features of generated samples and of the reference set."""
    from torch_fidelity.metric_fid import fid_features_to_statistics, fid_statistics_to_metric
    from torch_fidelity.metric_isc import isc_features_to_metric
    from torch_fidelity.metric_kid import kid_features_to_metric
    from torch_fidelity.metric_prc import prc_features_to_metric

    out: list[MetricValue] = []
    for metric in metrics:
        layer = space.layer(_LAYER_METRIC[metric])
        a, b = samples[layer], reference[layer]
        if metric == "fid":
            stats_a, stats_b = fid_features_to_statistics(a), fid_features_to_statistics(b)
            value = fid_statistics_to_metric(stats_a, stats_b, verbose=False)
            out.append(MetricValue("fid", value["frechet_inception_distance"]))
        elif metric == "is":
            value = isc_features_to_metric(a, splits=10, shuffle=True, rng_seed=seed)
            out.append(
                MetricValue("is", value["inception_score_mean"], value["inception_score_std"])
            )
        elif metric == "kid":
            value = kid_features_to_metric(
                a, b, kid_subsets=KID_SUBSETS, rng_seed=seed, verbose=False,
                kid_subset_size=min(KID_SUBSET_SIZE, len(a), len(b)),
            )  # fmt: skip
            out.append(
                MetricValue(
                    "kid",
                    value["kernel_inception_distance_mean"],
                    value["kernel_inception_distance_std"],
                )
            )
        elif metric == "pr":
            value = prc_features_to_metric(
                a, b, prc_neighborhood=PRC_NEIGHBORHOOD, save_cpu_ram=True, verbose=False
            )
            out.append(MetricValue("precision", value["precision"]))
            out.append(MetricValue("recall", value["recall"]))
    return out
