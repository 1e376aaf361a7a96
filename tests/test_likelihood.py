"""The variational bound in bits/dim against closed forms computed here independently."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.stats import norm

from ddpm.diffusion import discretized_gaussian_log_likelihood, normal_kl, prior_kl
from ddpm.errors import DDPMError
from ddpm.metrics.likelihood import bits_per_dim
from ddpm.schedules import Schedule, linear_betas

GRID = torch.arange(256, dtype=torch.float64) / 127.5 - 1


def schedule_of(betas: torch.Tensor) -> Schedule:
    return Schedule(betas=betas, alpha_bar=torch.cumprod(1 - betas, 0))


class ZeroNoise(torch.nn.Module):
    """Predicts eps = 0 everywhere: x0_hat = x_t / sqrt(ab_t)."""

    def __init__(self) -> None:
        super().__init__()
        self.unused = torch.nn.Parameter(torch.zeros(1))

    def forward(self, x, t, y=None):
        return torch.zeros_like(x)


def test_normal_kl_matches_torch_distributions(generator):
    m1, m2 = torch.randn(50, generator=generator), torch.randn(50, generator=generator)
    v1, v2 = torch.rand(50, generator=generator) + 0.1, torch.rand(50, generator=generator) + 0.1
    expected = torch.distributions.kl_divergence(
        torch.distributions.Normal(m1, v1.sqrt()), torch.distributions.Normal(m2, v2.sqrt())
    )
    torch.testing.assert_close(normal_kl(m1, v1, m2, v2), expected)


@pytest.mark.parametrize("mean, std", [(0.0, 0.01), (0.3, 0.2), (-0.97, 0.004), (0.999, 1e-3)])
def test_decoder_probabilities_over_the_256_bins_sum_to_one(mean, std):
    log_p = discretized_gaussian_log_likelihood(GRID, torch.full_like(GRID, mean), std)
    assert float(log_p.exp().sum()) == pytest.approx(1.0, abs=1e-9)


def test_decoder_bin_mass_matches_scipy():
    mean, std = 0.1, 0.05
    log_p = discretized_gaussian_log_likelihood(GRID, torch.full_like(GRID, mean), std).numpy()
    x = GRID.numpy()
    upper = np.where(x > 0.999, np.inf, x + 1 / 255)
    lower = np.where(x < -0.999, -np.inf, x - 1 / 255)
    expected = norm.cdf(upper, mean, std) - norm.cdf(lower, mean, std)
    big = expected > 1e-300
    np.testing.assert_allclose(np.exp(log_p[big]), expected[big], rtol=1e-7, atol=1e-12)
    assert np.isfinite(log_p).all()  # far-tail bins: tiny but finite log-mass


def test_prior_kl_closed_form():
    x0 = torch.tensor([[[[0.5, -1.0]]]], dtype=torch.float64)
    ab = 0.01
    # KL(N(m, 1 - ab) || N(0, 1)) = 0.5 (m^2 + (1 - ab) - 1 - log(1 - ab)) per dimension
    expected = sum(0.5 * (ab * v**2 - ab - math.log(1 - ab)) for v in (0.5, -1.0))
    assert float(prior_kl(x0, ab)) == pytest.approx(expected, rel=1e-12)


def _zero_noise_expected_bpd(betas: torch.Tensor, variance: str, pixels: np.ndarray) -> float:
    """E over the noise of the bound for the eps = 0 model, from Ho et al.'s Eq. 12 weights.

    Step k >= 1: model and true posterior means differ by coef_x0 (x0_hat - x0), with
    x0_hat - x0 = sqrt((1 - ab_k) / ab_k) eps, so E[KL] per dimension is
    0.5 (log(s2 / bt) + bt / s2 - 1) + beta_k^2 / (2 s2 alpha_k (1 - ab_k)).
    Step 0: the decoder mean is x0 + sqrt(beta_0 / (1 - beta_0)) eps; its expected NLL is an
    integral over eps, done by Gauss-Hermite quadrature; its variance is beta~_1 in both modes.
    """
    b = betas.double().numpy()
    ab = np.cumprod(1 - b)
    ab_prev = np.concatenate([[1.0], ab[:-1]])
    bt = (1 - ab_prev) / (1 - ab) * b  # beta~
    s2 = b.copy() if variance == "beta" else bt.copy()
    s2[0] = bt[1]  # the decoder: Ho et al.'s posterior_variance[1] in both modes
    k = np.arange(1, len(b))
    kl = 0.5 * (np.log(s2[k] / bt[k]) + bt[k] / s2[k] - 1)
    kl += b[k] ** 2 / (2 * s2[k] * (1 - b[k]) * (1 - ab[k]))
    nodes, weights = np.polynomial.hermite_e.hermegauss(80)
    weights = weights / weights.sum()
    decoder = 0.0
    for x in pixels:
        mean = x + math.sqrt(b[0] / (1 - b[0])) * nodes
        up = np.inf if x > 0.999 else x + 1 / 255
        lo = -np.inf if x < -0.999 else x - 1 / 255
        std = math.sqrt(s2[0])
        # whichever side of the bell avoids cancellation
        mass = np.maximum(
            norm.cdf(up, mean, std) - norm.cdf(lo, mean, std),
            norm.sf(lo, mean, std) - norm.sf(up, mean, std),
        )
        decoder += -(weights * np.log(mass)).sum()
    prior = sum(0.5 * (ab[-1] * x**2 - ab[-1] - math.log(1 - ab[-1])) for x in pixels)
    dims = len(pixels)
    return (prior + decoder + dims * kl.sum()) / (dims * math.log(2))


@pytest.mark.slow
@pytest.mark.parametrize("variance", ["beta_tilde", "beta"])
def test_zero_noise_model_matches_closed_form_bound(variance):
    betas = linear_betas(40)
    pixels = np.array([0, 64, 200, 255])
    images = torch.tensor(pixels, dtype=torch.uint8).view(1, 1, 2, 2).repeat(3000, 1, 1, 1)
    result = bits_per_dim(
        ZeroNoise(),
        schedule_of(betas),
        images,
        prediction="eps",
        variance=variance,
        clip=False,
        batch_size=1000,
    )
    expected = _zero_noise_expected_bpd(betas, variance, pixels / 127.5 - 1)
    assert result.exhaustive and result.num_timesteps == 40
    assert result.mean > 0
    assert abs(result.mean - expected) < 4 * result.std_error, (result, expected)
    assert result.std_error < 0.01 * expected  # the check is tight, not vacuous


def test_stratified_estimate_agrees_with_the_full_sum_and_repeats():
    schedule = schedule_of(linear_betas(200))
    images = torch.randint(0, 256, (400, 1, 2, 2), generator=torch.Generator().manual_seed(1))
    images = images.to(torch.uint8)
    full = bits_per_dim(ZeroNoise(), schedule, images, prediction="eps", clip=False)
    partial = bits_per_dim(
        ZeroNoise(), schedule, images, prediction="eps", clip=False, num_timesteps=10
    )
    again = bits_per_dim(
        ZeroNoise(), schedule, images, prediction="eps", clip=False, num_timesteps=10
    )
    assert not partial.exhaustive and partial.num_timesteps == 11
    assert partial.mean == again.mean  # fixed seed: repeatable to the last digit
    bound = 4 * math.hypot(full.std_error, partial.std_error)
    assert abs(partial.mean - full.mean) < bound
    assert partial.prior == pytest.approx(full.prior)  # the prior term is exact in both


def test_a_bad_number_of_terms_names_the_parameter_not_a_cli_flag():
    schedule = schedule_of(linear_betas(20))
    images = torch.zeros(2, 1, 2, 2, dtype=torch.uint8)
    with pytest.raises(DDPMError, match=r"^num_timesteps must be >= 1, got 0$"):
        bits_per_dim(ZeroNoise(), schedule, images, prediction="eps", num_timesteps=0)


def test_a_better_denoiser_has_a_lower_bound():
    """An oracle that knows x0 (for a one-image data set) beats the eps = 0 model by far."""

    class Oracle(ZeroNoise):
        def __init__(self, x0, alpha_bar):
            super().__init__()
            self.x0, self.alpha_bar = x0, alpha_bar

        def forward(self, x, t, y=None):  # the exact eps given that x0 is known
            ab = self.alpha_bar[t].float().view(-1, 1, 1, 1)
            return (x - ab.sqrt() * self.x0) / (1 - ab).sqrt()

    schedule = schedule_of(linear_betas(100))
    image = torch.tensor([0, 100, 180, 255], dtype=torch.uint8).view(1, 1, 2, 2)
    images = image.repeat(64, 1, 1, 1)
    x0 = image.float() / 127.5 - 1
    oracle = bits_per_dim(Oracle(x0, schedule.alpha_bar), schedule, images, prediction="eps")
    zero = bits_per_dim(ZeroNoise(), schedule, images, prediction="eps")
    assert 0 < oracle.mean < zero.mean / 3


class KnowsX0(ZeroNoise):
    """An x0-predicting network that returns the one training image: the decoder's mean is then
    x0 exactly (the posterior mean at step 0 is x0_hat), so L_0 has a closed form."""

    def __init__(self, x0: torch.Tensor) -> None:
        super().__init__()
        self.x0 = x0

    def forward(self, x, t, y=None):
        return self.x0.expand_as(x)


@pytest.mark.parametrize("variance", ["beta_tilde", "beta"])
def test_decoder_std_is_the_first_nonzero_posterior_std_in_both_fixed_modes(variance):
    """Ho et al.'s reference code (diffusion_utils_2.py, p_mean_variance) gives the decoder
    log(posterior_variance[1]) for 'fixedsmall' and 'fixedlarge' alike, with
    posterior_variance[1] = beta_1 (1 - abar_0) / (1 - abar_1): L_0 = -log of the N(x0, that)
    mass over x0's bin, an edge bin reaching to infinity."""
    betas = np.linspace(1e-4, 0.02, 1000)[:20]  # Ho et al.'s first 20 betas
    abar = np.cumprod(1 - betas)
    std = math.sqrt(betas[1] * (1 - abar[0]) / (1 - abar[1]))
    pixels = np.array([0, 1, 128, 254, 255])
    half = norm.cdf(1 / 255, 0, std) - 0.5  # N(0, std) mass in [0, 1/255]
    nats = [-math.log(0.5 + half if p in (0, 255) else 2 * half) for p in pixels]
    expected = sum(nats) / (len(pixels) * math.log(2))
    image = torch.tensor(pixels, dtype=torch.uint8).view(1, 1, 1, 5)
    schedule = schedule_of(torch.tensor(betas))
    result = bits_per_dim(
        KnowsX0(image.double() / 127.5 - 1), schedule, image, prediction="x0",
        variance=variance, clip=False, num_timesteps=1,
    )  # fmt: skip
    assert result.decoder == pytest.approx(expected, rel=1e-9)
