"""The pixel Frechet distance against its closed forms."""

import numpy as np
import pytest
import torch

from ddpm.metrics import frechet_distance, gaussian_fit, pixel_fd


def random_covariance(rng: np.random.Generator, d: int, rank: int | None = None) -> np.ndarray:
    a = rng.standard_normal((d, rank or d))
    return a @ a.T / d


def test_identical_sets_give_zero():
    images = torch.randint(0, 256, (300, 1, 6, 6), generator=torch.Generator().manual_seed(0))
    images = images.to(torch.uint8)
    assert pixel_fd(images, images) == pytest.approx(0.0, abs=1e-8)
    rng = np.random.default_rng(0)
    cov = random_covariance(rng, 20, rank=5)  # rank-deficient, as with fewer images than pixels
    assert frechet_distance(np.ones(20), cov, np.ones(20), cov) == pytest.approx(0.0, abs=1e-8)


def test_equal_covariances_give_squared_mean_distance():
    rng = np.random.default_rng(1)
    d = 30
    cov = random_covariance(rng, d)
    mu1, mu2 = rng.standard_normal(d), rng.standard_normal(d)
    expected = float(((mu1 - mu2) ** 2).sum())
    assert frechet_distance(mu1, cov, mu2, cov) == pytest.approx(expected, rel=1e-9, abs=1e-9)


def test_shifted_image_set_gives_squared_shift_per_pixel():
    """Adding c to every pixel moves the mean by c and keeps the covariance: FD = D c^2."""
    gen = torch.Generator().manual_seed(2)
    images = torch.rand(500, 1, 4, 4, generator=gen) * 1.2 - 0.9  # in [-0.9, 0.3]: no clamping
    shift = 0.4  # in [-1, 1] units: 0.2 in the [0, 1] pixel scale of the metric
    assert pixel_fd(images, images + shift) == pytest.approx(16 * 0.2**2, rel=1e-6)


def test_commuting_covariances_match_the_diagonal_formula():
    """For diagonal covariances, tr((S1 S2)^1/2) = sum sqrt(a_i b_i): FD = |mu|^2 + sum (sqrt a -
    sqrt b)^2 (the 2-Wasserstein distance between the Gaussians, per coordinate)."""
    rng = np.random.default_rng(3)
    a, b = rng.uniform(0.1, 2, 12), rng.uniform(0.1, 2, 12)
    mu = rng.standard_normal(12)
    expected = float((mu**2).sum() + ((np.sqrt(a) - np.sqrt(b)) ** 2).sum())
    assert frechet_distance(mu, np.diag(a), np.zeros(12), np.diag(b)) == pytest.approx(expected)


def test_gaussian_fit_is_mean_and_unbiased_covariance():
    x = np.array([[0.0, 1.0], [2.0, 1.0], [4.0, 4.0]])
    mu, cov = gaussian_fit(x)
    assert np.allclose(mu, [2.0, 2.0])
    assert np.allclose(cov, [[4.0, 3.0], [3.0, 3.0]])
    with pytest.raises(ValueError):
        gaussian_fit(x[:1])
