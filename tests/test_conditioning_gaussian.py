"""Inpainting and SDEdit against closed forms: data from a known correlated Gaussian, whose ideal
denoiser is exact (tests/gaussian_data.py), so the distribution a method samples can be compared
with the exact one, and no network is trained.

- RePaint with enough resampling reproduces the conditional Gaussian of the generated pixels given
  the kept ones (Schur complement); plain replacement does not (its bias is measured and stated).
- SDEdit with a deterministic sampler reproduces "noise to t(s), then the probability-flow ODE
  back" (a linear map for Gaussian data), with the ancestral sampler the posterior p(x0 | x_t).
"""

from __future__ import annotations

import pytest
import torch
from gaussian_data import correlated_gaussian, moments

from ddpm.conditioning import Editing, Inpainting, edit_timestep, sample_conditioned
from ddpm.samplers import SAMPLERS
from ddpm.schedules import make_schedule

GAUSSIAN = correlated_gaussian((1, 2, 2))  # 4 pixels, neighbours correlated 0.9
SCHEDULE = make_schedule("linear", 1000)
KEEP = torch.tensor([True, True, False, False])  # the top row is kept, the bottom generated
KNOWN = torch.tensor([0.6, 0.5, 0.0, 0.0], dtype=torch.float64)  # kept values, off the mean


def _inpainted(
    sampler: str, steps: int, n: int, *, resample: int = 1, jump: int = 10
) -> torch.Tensor:
    """n inpaintings of KNOWN -> the whole images [n, 4] (float64)."""
    generator = torch.Generator().manual_seed(0)
    x_T = torch.randn(n, 1, 2, 2, generator=generator, dtype=torch.float64)
    conditioning = Inpainting(
        KNOWN.reshape(1, 1, 2, 2).expand(n, 1, 2, 2),
        KEEP.reshape(1, 1, 2, 2).expand(n, 1, 2, 2),
        resample=resample, jump=jump,
    )  # fmt: skip
    options = {"resample": resample, "jump": jump} if resample > 1 else {}
    x0 = sample_conditioned(
        sampler, GAUSSIAN.denoiser(SCHEDULE), x_T, SCHEDULE,
        conditioning.timesteps(SCHEDULE, steps, "uniform"), conditioning=conditioning,
        generator=generator, hook_generator=generator, **options,
    )  # fmt: skip
    return x0.reshape(n, 4)


def _distance(samples: torch.Tensor, mean: torch.Tensor, cov: torch.Tensor) -> tuple[float, float]:
    """(largest |mean error| in standard errors, largest |covariance error| / largest variance)."""
    m, c = moments(samples)
    standard_error = (cov.diagonal() / samples.shape[0]).sqrt()
    return float(((m - mean).abs() / standard_error).max()), float(
        (c - cov).abs().max() / cov.diagonal().max()
    )


def test_conditional_of_the_test_gaussian_is_far_from_its_marginal():
    """The test has teeth: knowing the top row moves the bottom row's mean by several of its
    conditional standard deviations and shrinks its variance."""
    mean, cov = GAUSSIAN.conditional(KEEP, KNOWN)
    marginal_mean = GAUSSIAN.mu[~KEEP]
    assert ((mean - marginal_mean).abs() / cov.diagonal().sqrt()).min() > 2
    assert (cov.diagonal() < 0.6 * GAUSSIAN.cov.diagonal()[~KEEP]).all()


def test_known_pixels_are_kept_exactly():
    x0 = _inpainted("dpmpp-2m", 10, 64)
    assert torch.equal(x0[:, KEEP], KNOWN[KEEP].expand(64, 2))


@pytest.mark.slow
def test_repaint_reproduces_the_conditional_gaussian():
    """RePaint (ancestral, 1000 steps, resample 20, jump 10) on 4,000 draws: the generated pixels'
    mean within sampling error of the Schur-complement mean; covariance within 10%. Measured on
    20,000 draws: mean within 0.5 standard errors, standard deviations 3% low (0.134, 0.199 for
    0.138, 0.205) and correlation 0.69 for 0.67, the same with resample 40 or jump 5: a residual
    bias of the method, not sampling error (docs/editing.md)."""
    mean, cov = GAUSSIAN.conditional(KEEP, KNOWN)
    mean_error, cov_error = _distance(
        _inpainted("ddpm", 1000, 4000, resample=20)[:, ~KEEP], mean, cov
    )
    assert mean_error < 4, mean_error
    assert cov_error < 0.10, cov_error


@pytest.mark.parametrize("sampler, steps", [("ddpm", 1000), ("ddim", 100), ("dpmpp-2m", 20)])
def test_plain_replacement_is_biased_by_the_measured_amount(sampler, steps):
    """Replacement alone (every sampler) misses the conditional by far more than sampling error:
    measured mean errors 0.20 (ddpm-1000), 0.29 (ddim-100), 0.28 (dpmpp-2m-20) against the
    conditional standard deviations 0.14 and 0.21; RePaint above: 0.002 (docs/editing.md)."""
    mean, cov = GAUSSIAN.conditional(KEEP, KNOWN)
    generated = _inpainted(sampler, steps, 4000)[:, ~KEEP]
    error = float((generated.mean(0) - mean).abs().max())
    assert 0.15 < error < 0.35, error
    assert _distance(generated, mean, cov)[0] > 40


def _edited(sampler: str, steps: int, strength: float, n: int, image: torch.Tensor) -> torch.Tensor:
    generator = torch.Generator().manual_seed(1)
    x_T = torch.randn(n, 1, 2, 2, generator=generator, dtype=torch.float64)
    editing = Editing(image.reshape(1, 1, 2, 2).expand(n, 1, 2, 2), strength)
    spacing = "karras" if sampler == "heun" else "uniform"
    x0 = sample_conditioned(
        sampler, GAUSSIAN.denoiser(SCHEDULE), x_T, SCHEDULE,
        editing.timesteps(SCHEDULE, steps, spacing), conditioning=editing, generator=generator,
    )  # fmt: skip
    return x0.reshape(n, 4)


IMAGE = torch.tensor([0.9, -0.5, 0.7, -0.2], dtype=torch.float64)  # an image unlike the data


@pytest.mark.parametrize("strength", [0.3, 0.5, 0.8])
@pytest.mark.parametrize("sampler, steps", [("ddim", 200), ("heun", 20)])
def test_sdedit_is_noise_to_t_then_the_probability_flow_back(sampler, steps, strength):
    """x_t = sqrt(ab) y + sqrt(1 - ab) z, then the ODE's exact map x0 = mu + A (x_t - sqrt(ab) mu):
    x0 ~ N(mu + sqrt(ab) A (y - mu), (1 - ab) A A^T)."""
    ab = float(SCHEDULE.alpha_bar[edit_timestep(SCHEDULE, strength)])
    A = GAUSSIAN.flow_map(ab)
    mean = GAUSSIAN.mu + ab**0.5 * A @ (IMAGE - GAUSSIAN.mu)
    cov = (1 - ab) * A @ A.T
    mean_error, cov_error = _distance(_edited(sampler, steps, strength, 8000, IMAGE), mean, cov)
    assert mean_error < 4, mean_error
    assert cov_error < 0.06, cov_error


def test_sdedit_with_the_ancestral_sampler_draws_the_posterior():
    """The ancestral sampler from x_t draws p(x0 | x_t) in the limit of many steps (each step's
    beta~ variance ignores Var(x0 | x_t), which vanishes as the steps shrink): with
    G = S sqrt(ab) (ab S + (1 - ab) I)^-1, x0 ~ N(mu + sqrt(ab) G (y - mu),
    (1 - ab) G G^T + S - sqrt(ab) G S)."""
    strength, S, mu = 0.5, GAUSSIAN.cov, GAUSSIAN.mu
    ab = float(SCHEDULE.alpha_bar[edit_timestep(SCHEDULE, strength)])
    G = S @ torch.linalg.inv(ab * S + (1 - ab) * torch.eye(4, dtype=torch.float64)) * ab**0.5
    mean = mu + ab**0.5 * G @ (IMAGE - mu)
    cov = (1 - ab) * G @ G.T + S - ab**0.5 * G @ S
    mean_error, cov_error = _distance(_edited("ddpm", 500, strength, 8000, IMAGE), mean, cov)
    assert mean_error < 4, mean_error
    assert cov_error < 0.06, cov_error


def test_sdedit_strength_sets_how_much_of_the_image_survives():
    """The output mean moves from the image (low strength) to the data mean (high strength)."""
    distances = [
        float((_edited("ddim", 50, s, 2000, IMAGE).mean(0) - IMAGE).norm()) for s in (0.1, 0.4, 0.9)
    ]
    assert distances[0] < distances[1] < distances[2]


def test_replacement_draws_the_known_pixels_from_q_xt_given_x0():
    """The hook's kept pixels at t are N(sqrt(ab_t) x0, (1 - ab_t) I), fresh on every call; the
    other pixels come back bit for bit."""
    from ddpm.conditioning import replacement_hook

    n, t = 20000, 300
    ab = float(SCHEDULE.alpha_bar[t])
    known = KNOWN.reshape(1, 1, 2, 2).expand(n, 1, 2, 2)
    hook = replacement_hook(
        known, KEEP.reshape(1, 1, 2, 2), SCHEDULE, torch.Generator().manual_seed(3)
    )
    x_t = torch.randn(n, 1, 2, 2, dtype=torch.float64)
    first, second = hook(x_t, t).reshape(n, 4), hook(x_t, t).reshape(n, 4)
    assert torch.equal(first[:, ~KEEP], x_t.reshape(n, 4)[:, ~KEEP])
    mean, cov = moments(first[:, KEEP])
    assert torch.allclose(mean, ab**0.5 * KNOWN[KEEP], atol=4 * ((1 - ab) / n) ** 0.5)
    assert torch.allclose(cov, (1 - ab) * torch.eye(2, dtype=torch.float64), atol=0.03 * (1 - ab))
    assert not torch.equal(first, second)


def test_repaint_walk_is_the_papers_schedule():
    """resample 1 is plain sampling; RePaint's T = 250, jump 10, resample 10 setting: 24 jump
    points, each jumped from 9 times, so 250 + 24 x 9 x 10 = 2,410 evaluations; every move is one
    step down or `jump` back up, and the walk ends at x0."""
    from ddpm.samplers import num_function_evals, repaint_walk

    assert repaint_walk(7) == list(range(8))
    walk = repaint_walk(250, jump=10, resample=10)
    moves = [b - a for a, b in zip(walk, walk[1:])]
    assert set(moves) == {1, -10} and walk[0] == 0 and walk[-1] == 250
    assert moves.count(-10) == 24 * 9
    assert num_function_evals("ddpm", 250, resample=10, jump=10) == 2410 == moves.count(1)
    assert min(walk[1:]) >= 0 and all(walk[i] < 250 for i in range(len(walk) - 1))


@pytest.mark.parametrize("sampler", ["ddpm", "ddim", "dpmpp-2m", "dpmpp-2m-sde", "heun"])
def test_a_hook_that_changes_nothing_changes_nothing(sampler):
    """Every sampler applies the hook so that pixels it leaves alone stay bit for bit (heun
    works in x / sqrt(ab) and applies it as a difference): an identity hook is no hook."""
    x_T = torch.randn(16, 1, 2, 2, generator=torch.Generator().manual_seed(5))
    timesteps = [999, 700, 400, 200, 50, 0]

    def run(condition):
        generator = torch.Generator().manual_seed(6)
        return SAMPLERS[sampler](GAUSSIAN.denoiser(SCHEDULE), x_T, SCHEDULE, timesteps,
                                 generator=generator, condition=condition)  # fmt: skip

    assert torch.equal(run(None), run(lambda x, t: x))
