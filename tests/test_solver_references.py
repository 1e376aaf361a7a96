"""The higher-order samplers against references: the exact probability-flow ODE solution for
Gaussian data, update rules re-written here from the papers in float64, and diffusers'
DPMSolverMultistepScheduler (when diffusers is installed) on the same model, grid and noise."""

import math

import pytest
import torch

from ddpm.samplers import sample_ddim, sample_dpmpp_2m, sample_dpmpp_2m_sde, sample_heun
from ddpm.schedules import make_schedule, sampling_timesteps

T = 1000
MU, S = 0.3, 0.5  # the data: x0 ~ N(MU, S^2) per dimension


@pytest.fixture(scope="module")
def schedules():
    return {kind: make_schedule(kind, T) for kind in ("linear", "cosine")}


def gaussian_x0(x_t: torch.Tensor, ab: float) -> torch.Tensor:
    """E[x0 | x_t] for x0 ~ N(MU, S^2) and x_t = sqrt(ab) x0 + sqrt(1 - ab) eps, in x_t's dtype."""
    a = math.sqrt(ab)
    return MU + a * S**2 / (ab * S**2 + 1 - ab) * (x_t - a * MU)


def gaussian_denoiser(schedule):
    ab = schedule.alpha_bar.tolist()
    return lambda x_t, t: gaussian_x0(x_t, ab[int(t[0])])


def exact_ode_x0(x_T: torch.Tensor, ab_T: float) -> torch.Tensor:
    """Where the probability-flow ODE started at x_T (timestep with alpha_bar ab_T) lands at
    sigma = 0. In Karras et al.'s variables y = x_t / sqrt(ab), sigma^2 = (1 - ab) / ab the ODE is
    dy/dsigma = (y - D(y; sigma)) / sigma, and this data's D = MU + S^2 / (S^2 + sigma^2) (y - MU)
    makes it dy/dsigma = (y - MU) sigma / (S^2 + sigma^2): (y - MU) / sqrt(S^2 + sigma^2) is
    constant along a path. At sigma = 0, with y_T = x_T / sqrt(ab_T):
        x0 = MU + S (x_T - sqrt(ab_T) MU) / sqrt(ab_T S^2 + 1 - ab_T).
    """
    return MU + S * (x_T - math.sqrt(ab_T) * MU) / math.sqrt(ab_T * S**2 + 1 - ab_T)


def normal(n: int = 4096, seed: int = 0, dtype=torch.float64) -> torch.Tensor:
    return torch.randn(n, 1, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def rms_error(out: torch.Tensor, exact: torch.Tensor) -> float:
    return float((out.double() - exact).pow(2).mean().sqrt())


def reference_dpmpp_2m(denoise, x_T, schedule, timesteps, *, lower_final, noises=None):
    """DPM-Solver++(2M) (Lu et al. 2022b, Algorithm 2) and, with `noises`, its SDE form (Lu et al.
    2022b, Appendix; diffusers' "sde-dpmsolver++" midpoint update), in float64, one line per
    equation: D = (1 + 1/(2r)) x0_hat_i - 1/(2r) x0_hat_{i-1}, r = h_{i-1} / h_i. The grid is the
    timesteps followed by sigma = 0; x0_hat at the last timestep is the answer."""
    ab = [schedule.alpha_bar[t].item() for t in timesteps]
    alpha = [math.sqrt(a) for a in ab]
    sigma = [math.sqrt(1 - a) for a in ab]
    lam = [math.log(a / s) for a, s in zip(alpha, sigma)]
    x, previous, K = x_T.double(), None, len(timesteps)
    for i, t in enumerate(timesteps):
        x0_hat = denoise(x, torch.full((x.shape[0],), t))
        if i == K - 1:
            return x0_hat
        h = lam[i + 1] - lam[i]
        if previous is None or (lower_final and i == K - 2):
            D = x0_hat
        else:
            r = previous[1] / h
            D = (1 + 1 / (2 * r)) * x0_hat - 1 / (2 * r) * previous[0]
        if noises is None:
            x = sigma[i + 1] / sigma[i] * x - alpha[i + 1] * (math.exp(-h) - 1) * D
        else:
            x = (
                sigma[i + 1] / sigma[i] * math.exp(-h) * x
                + alpha[i + 1] * (1 - math.exp(-2 * h)) * D
                + sigma[i + 1] * math.sqrt(1 - math.exp(-2 * h)) * noises[i]
            )
        previous = (x0_hat, h)
    raise AssertionError("unreachable")


def seeded_noises(K: int, shape, seed: int) -> list[torch.Tensor]:
    """The K - 1 draws a stochastic sampler takes from a generator seeded with `seed`, in order."""
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(shape, generator=g, dtype=torch.float64) for _ in range(K - 1)]


# (1) The closed-form solution is the fine-step limit of the samplers (a check of the derivation).


@pytest.mark.parametrize("kind", ["linear", "cosine"])
def test_exact_solution_is_the_limit_of_many_steps(schedules, kind):
    s, x_T = schedules[kind], normal()
    exact = exact_ode_x0(x_T, s.alpha_bar[T - 1].item())
    ts = sampling_timesteps(s, T, "uniform")
    assert rms_error(sample_dpmpp_2m(gaussian_denoiser(s), x_T, s, ts), exact) < 1e-4
    assert rms_error(sample_ddim(gaussian_denoiser(s), x_T, s, ts), exact) < 1e-2


# (2) The lower-order final step: our default against Lu et al.'s and diffusers' rules, measured
# against the exact ODE. RMS error of x0 over x_T ~ N(0, 1), float64 (sample_dpmpp_2m's table):
MEASURED = {  # (kind, spacing, K): (lowered, second order, DDIM)
    ("linear", "uniform", 5): (0.270, 0.00803, 0.274),
    ("linear", "uniform", 10): (0.107, 0.192, 0.138),
    ("linear", "uniform", 20): (0.0234, 0.120, 0.0693),
    ("cosine", "uniform", 5): (0.145, 0.189, 0.165),
    ("cosine", "uniform", 10): (0.0305, 0.144, 0.0787),
    ("cosine", "uniform", 20): (0.00163, 0.0498, 0.0387),
    ("linear", "trailing", 20): (0.0449, 0.0217, 0.0684),
    ("cosine", "trailing", 20): (0.0119, 0.00149, 0.0378),
}


@pytest.mark.parametrize("case", list(MEASURED), ids=["-".join(map(str, c)) for c in MEASURED])
def test_dpmpp_2m_error_against_the_exact_ode(schedules, case):
    kind, spacing, K = case
    s, x_T = schedules[kind], normal()
    ts = sampling_timesteps(s, K, spacing)
    exact = exact_ode_x0(x_T, s.alpha_bar[ts[0]].item())
    den = gaussian_denoiser(s)
    measured = (
        rms_error(sample_dpmpp_2m(den, x_T, s, ts), exact),
        rms_error(sample_dpmpp_2m(den, x_T, s, ts, lower_order_final=False), exact),
        rms_error(sample_ddim(den, x_T, s, ts), exact),
    )
    for got, table in zip(measured, MEASURED[case]):
        assert got == pytest.approx(table, rel=0.05), (measured, MEASURED[case])


@pytest.mark.parametrize("stochastic", [False, True], ids=["2m", "2m-sde"])
@pytest.mark.parametrize("lower_final", [True, False])
@pytest.mark.parametrize("K", [2, 3, 4, 5, 10, 20])
def test_dpmpp_2m_matches_the_float64_reference(schedules, stochastic, lower_final, K):
    s, x_T = schedules["cosine"], normal(256)
    ts = sampling_timesteps(s, K, "uniform")
    noises = seeded_noises(K, x_T.shape, seed=3) if stochastic else None
    expected = reference_dpmpp_2m(
        gaussian_denoiser(s), x_T, s, ts, lower_final=lower_final, noises=noises
    )
    sampler = sample_dpmpp_2m_sde if stochastic else sample_dpmpp_2m
    out = sampler(
        gaussian_denoiser(s), x_T, s, ts, lower_order_final=lower_final,
        generator=torch.Generator().manual_seed(3),
    )  # fmt: skip
    assert out.dtype == torch.float64
    assert torch.allclose(out, expected, rtol=0, atol=1e-10)


def diffusers_dpmpp_2m(schedule, timesteps, x_T, *, noises=None) -> torch.Tensor:
    """diffusers' DPMSolverMultistepScheduler (solver_order=2, midpoint, data prediction) on the
    Gaussian model, our betas and timesteps, final sigma 0; with `noises`, "sde-dpmsolver++" fed
    our sampler's draws (diffusers also draws on its last step, to sigma = 0, scaled by 0)."""
    diffusers = pytest.importorskip("diffusers")
    scheduler = diffusers.DPMSolverMultistepScheduler(
        num_train_timesteps=T, trained_betas=schedule.betas.numpy(), solver_order=2,
        algorithm_type="dpmsolver++" if noises is None else "sde-dpmsolver++",
        solver_type="midpoint", prediction_type="sample", final_sigmas_type="zero",
    )  # fmt: skip
    # the same alpha_bar: theirs, a float32 cumprod of float32 betas (1.3e-5 relative error at
    # t = T - 1 on the cosine schedule), moves the samples by up to 1e-4
    scheduler.alphas_cumprod = schedule.alpha_bar.clone()
    scheduler.set_timesteps(timesteps=timesteps)
    assert scheduler.timesteps.tolist() == timesteps
    ab = schedule.alpha_bar.tolist()
    x = x_T
    for i, t in enumerate(scheduler.timesteps.tolist()):
        x0_hat = gaussian_x0(x, ab[t])
        z = None if noises is None else (noises + [torch.zeros_like(x)])[i]
        x = scheduler.step(x0_hat, t, x, variance_noise=z).prev_sample
    return x


@pytest.mark.parametrize("K", [5, 10, 20])
@pytest.mark.parametrize("kind", ["linear", "cosine"])
def test_dpmpp_2m_matches_diffusers(schedules, kind, K):
    """diffusers (solver_order=2) never lowers the step into the last timestep, for any K: it
    agrees with lower_order_final=False and, from K = 4 on, not with our default."""
    s, x_T = schedules[kind], normal(512, dtype=torch.float32)
    ts = sampling_timesteps(s, K, "uniform")
    theirs = diffusers_dpmpp_2m(s, ts, x_T)
    ours = sample_dpmpp_2m(gaussian_denoiser(s), x_T, s, ts, lower_order_final=False)
    # float32 on both sides (diffusers computes in float32): measured up to 2.4e-6 apart
    assert torch.allclose(ours, theirs, rtol=0, atol=1e-5), (ours - theirs).abs().max()
    default = sample_dpmpp_2m(gaussian_denoiser(s), x_T, s, ts)
    assert (default - theirs).abs().max() > 1e-2


@pytest.mark.parametrize("K", [5, 10, 20])
def test_dpmpp_2m_sde_matches_diffusers_with_the_same_noise(schedules, K):
    s, x_T = schedules["cosine"], normal(512, dtype=torch.float32)
    ts = sampling_timesteps(s, K, "uniform")
    g = torch.Generator().manual_seed(11)
    noises = [torch.randn(x_T.shape, generator=g) for _ in range(K - 1)]  # float32, like ours
    theirs = diffusers_dpmpp_2m(s, ts, x_T, noises=noises)
    ours = sample_dpmpp_2m_sde(
        gaussian_denoiser(s), x_T, s, ts, lower_order_final=False,
        generator=torch.Generator().manual_seed(11),
    )  # fmt: skip
    assert torch.allclose(ours, theirs, rtol=0, atol=1e-5), (ours - theirs).abs().max()


# (3) Heun: Karras et al. 2022, Algorithm 1 (S_churn = 0; Algorithm 2 with no churn is the same).


def reference_heun(denoise, x_T, schedule, timesteps):
    """Algorithm 1 in float64 on the VP model written in Karras et al.'s variables:
    sigma_i = sqrt((1 - ab) / ab) at the timesteps then 0, x = x_t / sqrt(ab),
    D(x; sigma_i) = denoise(sqrt(ab_i) x, t_i)."""
    ab = [schedule.alpha_bar[t].item() for t in timesteps]
    sigmas = [math.sqrt((1 - a) / a) for a in ab] + [0.0]

    def D(x, i):
        return denoise(math.sqrt(ab[i]) * x, torch.full((x.shape[0],), timesteps[i]))

    x = x_T.double() / math.sqrt(ab[0])
    for i in range(len(timesteps)):
        d = (x - D(x, i)) / sigmas[i]
        x_next = x + (sigmas[i + 1] - sigmas[i]) * d
        if sigmas[i + 1] != 0:
            d_prime = (x_next - D(x_next, i + 1)) / sigmas[i + 1]
            x_next = x + (sigmas[i + 1] - sigmas[i]) * (0.5 * d + 0.5 * d_prime)
        x = x_next
    return x


@pytest.mark.parametrize("K", [1, 2, 3, 10])
@pytest.mark.parametrize("kind", ["linear", "cosine"])
def test_heun_matches_karras_algorithm_1(schedules, kind, K):
    s, x_T = schedules[kind], normal(256)
    ts = sampling_timesteps(s, K, "karras")
    expected = reference_heun(gaussian_denoiser(s), x_T, s, ts)
    out = sample_heun(gaussian_denoiser(s), x_T, s, ts)
    assert torch.allclose(out, expected, rtol=1e-10, atol=1e-10)
