import math

import pytest
import torch

from ddpm.errors import DDPMError
from ddpm.schedules import SPACINGS, karras_timesteps, make_schedule, sampling_timesteps

KINDS = ["linear", "cosine", "quadratic", "sigmoid"]


def spaced(T: int, K: int, spacing: str = "uniform") -> list[int]:
    """sampling_timesteps on a T-step schedule (cosine: valid for every T >= 2; the uniform,
    quadratic and trailing grids depend on T only)."""
    return sampling_timesteps(make_schedule("cosine", T), K, spacing)


def test_linear_endpoints_at_T1000():
    schedule = make_schedule("linear", 1000)
    assert schedule.betas.dtype == torch.float64
    assert schedule.alpha_bar.dtype == torch.float64
    assert schedule.betas.shape == (1000,)
    assert schedule.num_timesteps == 1000
    assert schedule.betas[0].item() == pytest.approx(1e-4, rel=1e-12)
    assert schedule.betas[-1].item() == pytest.approx(0.02, rel=1e-12)
    # Evenly spaced in between.
    diffs = schedule.betas.diff()
    assert torch.allclose(diffs, torch.full_like(diffs, (0.02 - 1e-4) / 999), rtol=1e-9, atol=0)


def test_alpha_bar_is_cumulative_product_of_one_minus_beta():
    schedule = make_schedule("linear", 1000)
    expected = 1.0
    for t in [0, 1, 2]:
        expected *= 1 - schedule.betas[t].item()
        assert schedule.alpha_bar[t].item() == pytest.approx(expected, rel=1e-12)
    # Ho et al. report alpha_bar_T ~ 4e-5 for this schedule.
    expected_last = math.prod(1 - (1e-4 + i * (0.02 - 1e-4) / 999) for i in range(1000))
    assert schedule.alpha_bar[-1].item() == pytest.approx(expected_last, rel=1e-9)
    assert 1e-5 < expected_last < 1e-4


@pytest.mark.parametrize("T", [10, 100, 1000])
def test_cosine_alpha_bar_matches_formula(T):
    s = 0.008
    schedule = make_schedule("cosine", T)
    assert schedule.betas.dtype == torch.float64

    def f(t):
        return math.cos(((t / T + s) / (1 + s)) * math.pi / 2) ** 2

    expected = [f(t + 1) / f(0) for t in range(T)]  # 0-based t: alpha_bar_t = f(t+1) / f(0)
    betas = schedule.betas.tolist()
    assert max(betas) <= 0.999
    assert min(betas) > 0
    # The 0.999 clip only bites at the very end; compare every step before the first clipped beta.
    unclipped = next((i for i, b in enumerate(betas) if b >= 0.999), T)
    assert unclipped >= T - 2
    for t in range(unclipped):
        assert schedule.alpha_bar[t].item() == pytest.approx(expected[t], rel=1e-9, abs=1e-15)
    # The last beta is clipped: f(T) = 0 would otherwise give beta = 1.
    assert betas[-1] == pytest.approx(0.999)


@pytest.mark.parametrize("T", [1000, 500])
def test_quadratic_betas_follow_ho_et_al(T):
    # Ho et al.'s code (diffusion_utils_2.get_beta_schedule, "quad"):
    # linspace(sqrt(beta_start), sqrt(beta_end), T) ** 2, here rescaled by 1000 / T like linear
    lo, hi, scale = math.sqrt(1e-4), math.sqrt(0.02), 1000 / T
    expected = [scale * (lo + i * (hi - lo) / (T - 1)) ** 2 for i in range(T)]
    betas = make_schedule("quadratic", T).betas.tolist()
    assert betas == pytest.approx(expected, rel=1e-12)
    if T == 1000:
        assert betas[0] == pytest.approx(1e-4, rel=1e-12)
        assert betas[-1] == pytest.approx(0.02, rel=1e-12)


@pytest.mark.parametrize("T", [1000, 500])
def test_sigmoid_betas_follow_geodiff(T):
    # Xu et al. 2022 (GeoDiff) code, get_beta_schedule "sigmoid":
    # sigmoid(linspace(-6, 6, T)) * (beta_end - beta_start) + beta_start, rescaled by 1000 / T
    def sigmoid(z):
        return 1 / (1 + math.exp(-z))

    scale = 1000 / T
    expected = [scale * (sigmoid(-6 + 12 * i / (T - 1)) * (0.02 - 1e-4) + 1e-4) for i in range(T)]
    betas = make_schedule("sigmoid", T).betas.tolist()
    assert betas == pytest.approx(expected, rel=1e-12)
    # symmetric about the middle: beta_t + beta_{T-1-t} = scale (beta_start + beta_end)
    assert betas[0] + betas[-1] == pytest.approx(scale * (0.02 + 1e-4), rel=1e-12)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("T", [10, 25, 100, 1000])
def test_alpha_bar_strictly_decreasing_in_unit_interval(kind, T):
    if T == 10 and kind != "cosine":
        # betas are rescaled by 1000/T, so these kinds need T > ~20 (beta_end * 1000 / T < 1).
        with pytest.raises(DDPMError, match="beta >= 1"):
            make_schedule(kind, T)
        return
    schedule = make_schedule(kind, T)
    ab = schedule.alpha_bar
    assert ab.shape == (T,)
    assert ab.dtype == torch.float64
    assert bool((ab > 0).all()) and bool((ab < 1).all())
    assert bool((ab[1:] < ab[:-1]).all())
    assert bool((schedule.betas > 0).all()) and bool((schedule.betas <= 0.999).all())


def test_make_schedule_errors():
    with pytest.raises(DDPMError, match="unknown schedule"):
        make_schedule("exponential", 1000)
    for T in [1, 0, -5]:
        with pytest.raises(DDPMError, match="at least 2"):
            make_schedule("cosine", T)
    with pytest.raises(DDPMError):
        make_schedule("linear", 1000, beta_start=0.02, beta_end=1e-4)


@pytest.mark.parametrize("T,K", [(1000, 50), (1000, 2), (1000, 999), (100, 7), (10, 3)])
def test_uniform_subsequence(T, K):
    steps = spaced(T, K, "uniform")
    assert len(steps) == K
    assert len(set(steps)) == K
    assert steps[0] == T - 1
    assert steps[-1] == 0
    assert all(a > b for a, b in zip(steps, steps[1:]))
    assert all(isinstance(s, int) and 0 <= s < T for s in steps)


def test_uniform_subsequence_is_evenly_spaced():
    # T-1 = 999 over K-1 = 9 gaps: 111 each.
    assert spaced(1000, 10) == [999 - 111 * i for i in range(10)]


@pytest.mark.parametrize("T,K", [(1000, 50), (1000, 3), (100, 100), (1000, 1)])
def test_trailing_subsequence(T, K):
    steps = spaced(T, K, "trailing")
    assert len(steps) == K
    assert steps[0] == T - 1
    assert len(set(steps)) == K
    assert all(a > b for a, b in zip(steps, steps[1:]))
    assert steps[-1] >= 0
    # Lin et al.: T-1, T-1-T/K, ... (rounded).
    assert steps == [round(T - i * T / K) - 1 for i in range(K)]


@pytest.mark.parametrize("spacing", ["uniform", "trailing"])
@pytest.mark.parametrize("T", [10, 1000])
def test_all_steps_when_K_equals_T(spacing, T):
    assert spaced(T, T, spacing) == list(range(T - 1, -1, -1))


@pytest.mark.parametrize("spacing", SPACINGS)
@pytest.mark.parametrize("T", [10, 37, 1000])
def test_every_spacing_starts_at_the_last_timestep(spacing, T):
    # A sampler takes x_T ~ N(0, I) as the sample at timesteps[0]: that must be T - 1 for every
    # spacing and K (quadratic spacing gave [0] for K = 1: pure noise denoised as if at t = 0).
    schedule = make_schedule("cosine", T)
    for K in [1, 2, 3, 4, 5, T // 2, T - 1, T]:
        steps = sampling_timesteps(schedule, K, spacing)
        assert len(steps) == K and steps[0] == T - 1, (K, steps)
        assert all(a > b for a, b in zip(steps, steps[1:])), (K, steps)
        assert all(isinstance(t, int) and 0 <= t < T for t in steps), (K, steps)
        if K >= 2 and spacing != "trailing":  # trailing ends at T/K - 1 (Lin et al.)
            assert steps[-1] == 0, (K, steps)
    assert sampling_timesteps(schedule, 1, spacing) == [T - 1]
    assert sampling_timesteps(schedule, T, spacing) == list(range(T - 1, -1, -1))


@pytest.mark.parametrize("T,K", [(1000, 20), (1000, 45), (100, 5), (10, 3)])
def test_quadratic_subsequence_is_c_i_squared_up_to_T_minus_1(T, K):
    # Song et al. 2020 (DDIM), Appendix D.2: t_i = c i^2, c chosen so that the top is T - 1.
    c = (T - 1) / (K - 1) ** 2
    expected = sorted({round(c * i * i) for i in range(K)}, reverse=True)
    assert len(expected) == K  # no collisions below K ~ sqrt(2 T)
    assert spaced(T, K, "quadratic") == expected


def test_quadratic_subsequence_is_denser_near_zero():
    steps = spaced(1000, 20, "quadratic")
    assert len(steps) == 20 and steps[-1] == 0
    gaps = [a - b for a, b in zip(steps, steps[1:])]
    assert gaps[0] > gaps[-1]
    assert all(a > b for a, b in zip(steps, steps[1:]))


@pytest.mark.parametrize("K", [0, -1, 1001])
def test_bad_number_of_steps(K):
    with pytest.raises(DDPMError):
        spaced(1000, K)


@pytest.mark.parametrize("spacing", SPACINGS)
def test_bad_number_of_steps_names_the_parameter_not_a_cli_flag(spacing):
    schedule = make_schedule("linear", 1000)
    message = r"^num_steps must be between 1 and the schedule's num_timesteps \(1000\), got "
    with pytest.raises(DDPMError, match=message + "1001$"):
        sampling_timesteps(schedule, 1001, spacing)
    with pytest.raises(DDPMError, match=message + "0$"):
        karras_timesteps(schedule, 0)


def test_unknown_spacing():
    with pytest.raises(DDPMError, match="spacing"):
        spaced(1000, 10, "geometric")


def test_single_uniform_step_starts_from_pure_noise():
    # A 1-step sampler starts from x_T ~ N(0, I), so its only step must be the last timestep;
    # a regression test: torch.linspace with one point gives its start, which was 0.
    assert spaced(1000, 1, "uniform") == [999]
