"""Sample-quality and likelihood metrics: FID/IS/KID/precision-recall through torch-fidelity in
Inception's or an offline feature network's space, bits/dim from the variational bound, and the
pixel-space Frechet distance."""

from .extractors import FeatureSpace, register, resolve_feature_space
from .featnet import FeatNetInfo, FeatureNet, load_featnet, train_featnet
from .fidelity import MetricValue, cached_reference_features, extract_features, fidelity_metrics
from .likelihood import BitsPerDim, bits_per_dim
from .pixel_fd import frechet_distance, gaussian_fit, pixel_fd
from .sample_files import load_samples, save_npz

__all__ = [
    "BitsPerDim",
    "FeatNetInfo",
    "FeatureNet",
    "FeatureSpace",
    "MetricValue",
    "bits_per_dim",
    "cached_reference_features",
    "extract_features",
    "fidelity_metrics",
    "frechet_distance",
    "gaussian_fit",
    "load_featnet",
    "load_samples",
    "pixel_fd",
    "register",
    "resolve_feature_space",
    "save_npz",
    "train_featnet",
]
