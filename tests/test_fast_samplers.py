"""Every sampler against closed forms: a 1-D Gaussian mixture whose ideal denoiser E[x0 | x_t] is
known exactly, so sampler error is measured with no training and no network error."""

import math

import pytest
import torch

from ddpm.denoiser import make_denoiser
from ddpm.samplers import (
    DEFAULT_SPACING,
    SAMPLERS,
    StepInfo,
    num_function_evals,
    sample_ddim,
    sample_heun,
)
from ddpm.schedules import karras_timesteps, make_schedule, sampling_timesteps

T = 1000
# The data: p(x0) = sum_k w_k N(m_k, s_k^2), two well-separated modes.
W = torch.tensor([0.3, 0.7], dtype=torch.float64)
M = torch.tensor([-0.4, 0.9], dtype=torch.float64)
S = torch.tensor([0.3, 0.25], dtype=torch.float64)
MEAN = float((W * M).sum())  # 0.51
VAR = float((W * (S**2 + M**2)).sum()) - MEAN**2  # 0.42565
N = 100_000


@pytest.fixture(scope="module")
def schedules():
    return {kind: make_schedule(kind, T) for kind in ("linear", "cosine", "quadratic", "sigmoid")}


def mixture_x0(x_t: torch.Tensor, ab: float) -> torch.Tensor:
    """E[x0 | x_t] in float64: under q(x_t | x0) = N(sqrt(ab) x0, (1 - ab)), component k gives
    x_t ~ N(sqrt(ab) m_k, v_k) with v_k = ab s_k^2 + 1 - ab, posterior responsibilities
    r_k ~ w_k N(x_t; sqrt(ab) m_k, v_k), and the Gaussian posterior mean
    m_k + sqrt(ab) s_k^2 / v_k (x_t - sqrt(ab) m_k); E[x0 | x_t] = sum_k r_k (that mean)."""
    a, x = math.sqrt(ab), x_t.double()
    v = a * a * S**2 + 1 - ab
    d0, d1 = x - a * M[0], x - a * M[1]
    log_odds = (
        math.log(W[1] / W[0]) - 0.5 * math.log(v[1] / v[0]) - 0.5 * (d1**2 / v[1] - d0**2 / v[0])
    )
    r1 = torch.sigmoid(log_odds)
    mean0, mean1 = M[0] + a * S[0] ** 2 / v[0] * d0, M[1] + a * S[1] ** 2 / v[1] * d1
    return mean0 + r1 * (mean1 - mean0)


def ideal_denoiser(schedule):
    ab = schedule.alpha_bar.tolist()

    def denoise(x_t, t):
        assert (t == t[0]).all()
        return mixture_x0(x_t, ab[int(t[0])]).to(x_t.dtype)

    return denoise


def stratified_noise(n: int = N) -> torch.Tensor:
    """x_T [n, 1] at the standard normal's quantiles (i + 0.5) / n: a deterministic sampler's output
    is then free of sampling noise from x_T, leaving only its own discretisation error."""
    u = (torch.arange(n, dtype=torch.float64) + 0.5) / n
    return (math.sqrt(2) * torch.erfinv(2 * u - 1)).float().reshape(n, 1)


def mixture_cdf(x: torch.Tensor) -> torch.Tensor:
    return (W * 0.5 * (1 + torch.erf((x[:, None] - M) / (S * math.sqrt(2))))).sum(dim=1)


def wasserstein_to_truth(samples: torch.Tensor) -> float:
    """1-D Wasserstein-1 distance between the samples and the exact mixture:
    integral of |F_n(x) - F(x)| dx, on a fine grid."""
    grid = torch.linspace(-3, 3, 30_001, dtype=torch.float64)
    empirical = torch.searchsorted(samples.double().flatten().sort().values, grid, right=True) / (
        samples.numel()
    )
    return float((empirical - mixture_cdf(grid)).abs().sum() * (grid[1] - grid[0]))


def run(name, schedule, K, *, spacing="uniform", x_T=None, seed=0, **options):
    ts = sampling_timesteps(schedule, K, spacing)
    x_T = stratified_noise() if x_T is None else x_T
    g = torch.Generator().manual_seed(seed)
    return SAMPLERS[name](ideal_denoiser(schedule), x_T, schedule, ts, generator=g, **options)


# (1) Every sampler reproduces the mixture's mean and variance within 2% at its intended NFE.
# Intended NFE: where each sampler is used in practice, and large enough for 2% on this toy;
# the errors measured at these settings (N = 100,000) are in the comments. Standard errors: the
# injected noise of a stochastic sampler moves the variance by ~0.4% (sqrt(2 / N) relative), the
# mean by ~0.3%; a deterministic sampler starting from stratified x_T has no sampling noise.
# Heun runs on the linear schedule: the cosine schedule's last beta is clipped at 0.999, which
# makes its sigma_max ~2e4, and a trapezoid step from there is poor (see karras_timesteps).
CASES = [
    ("ddpm", "cosine", 1000, {}),  # var -0.6%
    ("ddpm", "cosine", 500, {}),  # respaced; var -1.1%
    ("ddim", "cosine", 200, {"eta": 0.0}),  # var -1.0%
    ("ddim", "cosine", 500, {"eta": 1.0}),  # var -1.1%
    ("dpmpp-2m", "cosine", 20, {}),  # var -0.3%
    ("dpmpp-2m-sde", "cosine", 100, {}),  # var +0.5%
    ("heun", "linear", 50, {"spacing": "karras"}),  # 99 NFE; var +1.1%
]


@pytest.mark.slow
@pytest.mark.parametrize("name,kind,K,options", CASES, ids=[f"{c[0]}-{c[2]}-{c[1]}" for c in CASES])
def test_sampler_matches_mixture_moments(schedules, name, kind, K, options):
    out = run(name, schedules[kind], K, **options).double()
    assert out.shape == (N, 1) and torch.isfinite(out).all()
    assert abs(out.mean().item() / MEAN - 1) < 0.02
    assert abs(out.var().item() / VAR - 1) < 0.02


# (2) At 20 NFE, DPM-Solver++(2M) is closer to the truth than DDIM (Lu et al. 2022, Fig. 3).


@pytest.mark.parametrize("kind", ["cosine", "linear"])
def test_dpmpp_2m_beats_ddim_at_20_nfe(schedules, kind):
    dpmpp = run("dpmpp-2m", schedules[kind], 20)
    ddim = run("ddim", schedules[kind], 20, eta=0.0)
    w_dpmpp, w_ddim = wasserstein_to_truth(dpmpp), wasserstein_to_truth(ddim)
    # measured: cosine 0.011 vs 0.030, linear 0.030 vs 0.050
    assert w_dpmpp < 0.75 * w_ddim, (w_dpmpp, w_ddim)
    assert abs(dpmpp.double().var().item() / VAR - 1) < abs(ddim.double().var().item() / VAR - 1)


def test_second_order_samplers_converge_faster_than_first_order(schedules):
    """Doubling the steps: DDIM's error roughly halves (order 1), DPM-Solver++'s drops more."""
    s = schedules["cosine"]
    ddim = [wasserstein_to_truth(run("ddim", s, k, x_T=stratified_noise(20_000))) for k in (10, 20)]
    dpmpp = [
        wasserstein_to_truth(run("dpmpp-2m", s, k, x_T=stratified_noise(20_000))) for k in (10, 20)
    ]
    assert ddim[1] / ddim[0] > 0.4 and dpmpp[1] / dpmpp[0] < 0.4, (ddim, dpmpp)


# (3) Each prediction target through make_denoiser: a fake "network" outputs eps, x0 or v of the
# ideal denoiser, computed here from the definitions (Ho et al. 2020 Eq. 4; Salimans & Ho 2022).


def fake_network(schedule, prediction):
    ab_table = schedule.alpha_bar.tolist()

    def net(x_t, t, labels=None):
        ab = ab_table[int(t[0])]
        x0 = mixture_x0(x_t, ab)
        eps = (x_t.double() - math.sqrt(ab) * x0) / math.sqrt(1 - ab)
        out = {"eps": eps, "x0": x0, "v": math.sqrt(ab) * eps - math.sqrt(1 - ab) * x0}
        return out[prediction].float()

    return net


@pytest.mark.parametrize("prediction", ["eps", "x0", "v"])
@pytest.mark.parametrize("name", ["dpmpp-2m", "heun"])
def test_every_prediction_target_through_make_denoiser(schedules, prediction, name):
    s = schedules["linear"]
    denoiser = make_denoiser(fake_network(s, prediction), s, prediction=prediction, clip=False)
    ts = sampling_timesteps(s, 20, "karras" if name == "heun" else "uniform")
    x_T = stratified_noise(20_000)
    out = SAMPLERS[name](denoiser, x_T, s, ts)
    exact = SAMPLERS[name](ideal_denoiser(s), x_T, s, ts)
    assert torch.isfinite(out).all()
    assert (out - exact).abs().max().item() < 2e-3
    assert abs(out.double().mean().item() / MEAN - 1) < 0.02


# (4) Every sampler runs on every schedule (with its default spacing: heun's trapezoid step is
# poor across the sigma ratio of uniform spacing's first step on the cosine schedule, 2e4 -> ~5),
# reports its NFE, and calls back once per step.


@pytest.mark.parametrize("name", list(SAMPLERS))
@pytest.mark.parametrize("kind", ["linear", "cosine", "quadratic", "sigmoid"])
def test_every_sampler_on_every_schedule(schedules, name, kind):
    s, K = schedules[kind], 10
    calls, infos = [], []
    denoiser = ideal_denoiser(s)

    def counted(x_t, t):
        calls.append(int(t[0]))
        return denoiser(x_t, t)

    ts = sampling_timesteps(s, K, DEFAULT_SPACING.get(name, "uniform"))
    out = SAMPLERS[name](
        counted, torch.randn(256, 1, generator=torch.Generator().manual_seed(0)), s, ts,
        generator=torch.Generator().manual_seed(1), callback=infos.append,
    )  # fmt: skip
    assert out.shape == (256, 1) and torch.isfinite(out).all()
    assert len(calls) == num_function_evals(name, K)
    assert set(calls) == set(ts)  # only the visited timesteps are evaluated
    assert [info.i for info in infos] == list(range(K)) and [info.t for info in infos] == ts
    assert all(isinstance(i, StepInfo) and i.x0_hat.shape == (256, 1) for i in infos)
    # loose: 10 steps of a first-order sampler are far from exact, but not wrong
    assert abs(out.double().mean().item() - MEAN) < 0.15


@pytest.mark.parametrize("name", list(SAMPLERS))
@pytest.mark.parametrize("K", [1, 2, 7])
def test_point_mass_data_returns_the_point(schedules, name, K):
    """The denoiser of data at one point c returns c; every sampler must land on c exactly."""
    c = 0.37
    x_T = torch.randn(8, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    s = schedules["cosine"]
    out = SAMPLERS[name](
        lambda x_t, t: torch.full_like(x_t, c), x_T, s, sampling_timesteps(s, K, "uniform"),
        generator=torch.Generator().manual_seed(1),
    )  # fmt: skip
    assert torch.allclose(out, torch.full_like(out, c), rtol=0, atol=1e-5)


# (5) Determinism and RNG hygiene, for every sampler.


@pytest.mark.parametrize("name", list(SAMPLERS))
def test_same_seed_bit_identical_and_global_rng_untouched(schedules, name):
    s = schedules["linear"]
    x_T = torch.randn(64, 1, 2, 2, generator=torch.Generator().manual_seed(0))
    before = torch.get_rng_state()
    a, b, c = (run(name, s, 10, x_T=x_T, seed=seed) for seed in (1, 1, 2))
    gens = [torch.Generator().manual_seed(i) for i in range(64)]
    per_image = SAMPLERS[name](
        ideal_denoiser(s), x_T, s, sampling_timesteps(s, 10, "uniform"), generator=gens
    )
    assert torch.equal(before, torch.get_rng_state())
    assert torch.equal(a, b) and torch.isfinite(per_image).all()
    stochastic = name in ("ddpm", "dpmpp-2m-sde")
    assert (not torch.equal(a, c)) == stochastic


# (6) The Karras et al. 2022 time grid.


def test_karras_timesteps_follow_eq_5(schedules):
    for kind, s in schedules.items():
        for K in (2, 3, 5, 10, 20, 50, 200, 1000):
            ts = karras_timesteps(s, K)
            assert len(ts) == K and ts[0] == T - 1 and ts[-1] == 0, (kind, K)
            assert all(a > b for a, b in zip(ts, ts[1:])), (kind, K)
        assert karras_timesteps(s, 1) == [T - 1]
    # linear: sigma_{T-1} = 157 > 80, so T - 1 and then rho = 7 targets from sigma_max = 80 down
    # to sigma_0 = 0.01, each snapped to the timestep nearest in log-sigma
    s = schedules["linear"]
    sigma = ((1 - s.alpha_bar) / s.alpha_bar).sqrt()
    ts = karras_timesteps(s, 10)
    hi, lo = 80 ** (1 / 7), sigma[0].item() ** (1 / 7)
    for i, t in enumerate(ts[1:]):
        target = (hi + i / 8 * (lo - hi)) ** 7
        gaps = [abs(math.log(sigma[u].item() / target)) for u in (t - 1, t, t + 1) if 0 <= u < T]
        assert abs(math.log(sigma[t].item() / target)) == min(gaps)
    # cosine (sigma_{T-1} ~ 2e4): the second step is already at sigma ~ 80
    cosine = schedules["cosine"]
    t1 = karras_timesteps(cosine, 20)[1]
    assert 60 < ((1 - cosine.alpha_bar[t1]) / cosine.alpha_bar[t1]).sqrt() < 110


def test_heun_euler_part_is_ddim():
    """Each Heun step's predictor (the Euler step, which the corrector evaluates the denoiser at)
    equals DDIM's step from the same x_t, on every step to a nonzero sigma; the corrector then
    moves it (the Gaussian mixture's denoiser is not linear, so the correction is not zero)."""
    s = make_schedule("linear", T)
    x_T = torch.randn(64, 1, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    ts = [T - 1, 700, 400, 120, 0]
    den, inputs, states = ideal_denoiser(s), [], []

    def recording(x_t, t):
        inputs.append((int(t[0]), x_t.clone()))
        return den(x_t, t)

    sample_heun(recording, x_T, s, ts, callback=states.append)
    assert [t for t, _ in inputs] == [ts[0]] + [t for t in ts[1:] for _ in (0, 1)]
    assert num_function_evals("heun", len(ts)) == len(inputs) == 2 * len(ts) - 1
    for i in range(len(ts) - 1):  # the corrector's input at ts[i + 1], then the next x_t
        predictor, corrected = inputs[2 * i + 1][1], states[i + 1].x_t
        ddim = []
        sample_ddim(den, states[i].x_t, s, ts[i : i + 2], callback=ddim.append)
        assert torch.allclose(predictor, ddim[1].x_t, rtol=0, atol=1e-9), i
        assert (corrected - predictor).abs().max() > 1e-3, i
    assert num_function_evals("dpmpp-2m", 20) == 20


def test_first_order_steps_of_dpmpp_are_ddim_and_ddpm():
    """With K = 3 every DPM-Solver++ step is first order (the first, and the last two): the ODE
    form is then DDIM(eta = 0) and the SDE form the ancestral step with beta~, draw for draw."""
    s = make_schedule("linear", T)
    x_T = torch.randn(512, 1, generator=torch.Generator().manual_seed(0))
    ts = [999, 500, 120]
    den = ideal_denoiser(s)

    def gen():
        return torch.Generator().manual_seed(5)

    ddim = SAMPLERS["ddim"](den, x_T, s, ts, eta=0.0)
    assert torch.allclose(SAMPLERS["dpmpp-2m"](den, x_T, s, ts), ddim, atol=1e-5)
    ancestral = SAMPLERS["ddpm"](den, x_T, s, ts, generator=gen())
    assert torch.allclose(
        SAMPLERS["dpmpp-2m-sde"](den, x_T, s, ts, generator=gen()), ancestral, atol=1e-5
    )
    # with K = 4 the second step is second order and differs
    ts4 = [999, 700, 400, 120]
    assert not torch.allclose(
        SAMPLERS["dpmpp-2m"](den, x_T, s, ts4), SAMPLERS["ddim"](den, x_T, s, ts4), atol=1e-3
    )
