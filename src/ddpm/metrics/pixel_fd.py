"""Pixel Frechet distance: the Frechet (2-Wasserstein) distance between Gaussian fits of two image
sets' raw pixels, the FID formula (Heusel et al. 2017, Eq. 6) without a feature network.

    FD = ||mu_1 - mu_2||^2 + tr(S_1) + tr(S_2) - 2 tr((S_1^{1/2} S_2 S_1^{1/2})^{1/2})

It sees means and pixel covariances only, so it tracks sample statistics (contrast, blur, mean
shape), not perceptual quality. It is biased upwards for small sets (about tr(S) / n per set);
compare values computed with the same n. Pixels are scaled to [0, 1].
"""

from __future__ import annotations

import numpy as np
import torch

METRIC_NAME = "pixel-FD"


def gaussian_fit(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean [D] and covariance [D, D] (unbiased, float64) of features [N, D], N >= 2."""
    x = np.asarray(features, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] < 2:
        raise ValueError(f"need features [N >= 2, D], got shape {x.shape}")
    return x.mean(axis=0), np.cov(x, rowvar=False).reshape(x.shape[1], x.shape[1])


def _sqrt_psd(matrix: np.ndarray) -> np.ndarray:
    """Symmetric square root of a symmetric positive semi-definite matrix, through eigh."""
    values, vectors = np.linalg.eigh((matrix + matrix.T) / 2)
    root: np.ndarray = (vectors * np.sqrt(values.clip(min=0))) @ vectors.T  # `@` is typed Any
    return root


def frechet_distance(mu1: np.ndarray, cov1: np.ndarray, mu2: np.ndarray, cov2: np.ndarray) -> float:
    """Frechet distance between N(mu1, cov1) and N(mu2, cov2) (the formula in the module docstring).

    tr((S_1 S_2)^{1/2}) is computed as the sum of the square roots of the eigenvalues of the
    symmetric PSD matrix S_1^{1/2} S_2 S_1^{1/2}, which avoids the complex output and the
    instability of a general matrix square root (scipy.linalg.sqrtm) on rank-deficient covariances.
    """
    root1 = _sqrt_psd(cov1)
    cross = np.linalg.eigvalsh(root1 @ cov2 @ root1).clip(min=0)
    diff = np.asarray(mu1, dtype=np.float64) - np.asarray(mu2, dtype=np.float64)
    value = diff @ diff + np.trace(cov1) + np.trace(cov2) - 2 * np.sqrt(cross).sum()
    return float(max(value, 0.0))


def pixel_features(images: torch.Tensor) -> np.ndarray:
    """Images [N, C, H, W], uint8 in [0, 255] or float in [-1, 1] -> float64 [N, C*H*W] in [0, 1]."""
    if images.dtype == torch.uint8:
        x = images.double() / 255
    else:
        x = (images.double().clamp(-1, 1) + 1) / 2
    return x.flatten(1).numpy()


def pixel_fd(images_a: torch.Tensor, images_b: torch.Tensor) -> float:
    """Pixel Frechet distance between two image sets [N, C, H, W] (uint8 or [-1, 1] floats)."""
    return frechet_distance(
        *gaussian_fit(pixel_features(images_a)), *gaussian_fit(pixel_features(images_b))
    )
