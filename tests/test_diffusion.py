import math

import pytest
import torch

from ddpm.diffusion import (
    eps_from_x0,
    gather,
    per_example_loss,
    prediction_target,
    q_posterior,
    q_sample,
    training_loss,
    v_from_x0_eps,
    x0_from_eps,
    x0_from_prediction,
    x0_from_v,
)
from ddpm.errors import DDPMError
from ddpm.schedules import make_schedule

F64 = torch.float64


@pytest.fixture(scope="module")
def schedule():
    return make_schedule("linear", 1000)


def test_gather_shape():
    values = torch.arange(10, dtype=F64) * 0.5
    out = gather(values, torch.tensor([3, 0, 9]), 4)
    assert out.shape == (3, 1, 1, 1)
    assert out.flatten().tolist() == [1.5, 0.0, 4.5]


def test_q_sample_formula(generator):
    x0 = torch.randn(4, 1, 3, 3, generator=generator, dtype=F64)
    eps = torch.randn(4, 1, 3, 3, generator=generator, dtype=F64)
    ab = torch.tensor([0.9, 0.5, 0.1, 1e-3], dtype=F64).view(4, 1, 1, 1)
    expected = torch.sqrt(ab) * x0 + torch.sqrt(1 - ab) * eps
    assert torch.allclose(q_sample(x0, eps, ab), expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("ab", [0.9, 0.3, 0.01])
def test_q_sample_moments(generator, ab):
    n, x0_value = 200_000, 0.7
    x0 = torch.full((n,), x0_value, dtype=F64)
    eps = torch.randn(n, generator=generator, dtype=F64)
    x_t = q_sample(x0, eps, ab)
    mean, var = x_t.mean().item(), x_t.var().item()
    # Standard errors: sqrt(var / n) for the mean, var * sqrt(2 / (n - 1)) for the variance.
    true_var = 1 - ab
    assert abs(mean - math.sqrt(ab) * x0_value) < 5 * math.sqrt(true_var / n)
    assert abs(var - true_var) < 5 * true_var * math.sqrt(2 / (n - 1))


@pytest.mark.parametrize("t", [1, 2, 10, 500, 999])
def test_q_posterior_adjacent_matches_ho_eq7(schedule, generator, t):
    beta_t = schedule.betas[t].item()
    alpha_t = 1 - beta_t
    ab_t, ab_prev = schedule.alpha_bar[t].item(), schedule.alpha_bar[t - 1].item()
    x0 = torch.randn(3, 2, 4, 4, generator=generator, dtype=F64)
    x_t = torch.randn(3, 2, 4, 4, generator=generator, dtype=F64)
    # Ho et al. 2020, Eq. 7.
    mean_expected = (
        math.sqrt(ab_prev) * beta_t / (1 - ab_t) * x0
        + math.sqrt(alpha_t) * (1 - ab_prev) / (1 - ab_t) * x_t
    )
    var_expected = (1 - ab_prev) / (1 - ab_t) * beta_t
    mean, var = q_posterior(x0, x_t, schedule.alpha_bar[t], schedule.alpha_bar[t - 1])
    assert torch.allclose(mean, mean_expected, rtol=1e-9, atol=1e-12)
    assert float(var) == pytest.approx(var_expected, rel=1e-9)


def bayes_posterior(x0, x_t, ab_t, ab_s):
    """x_s | x0 ~ N(sqrt(ab_s) x0, 1 - ab_s); x_t | x_s ~ N(sqrt(r) x_s, 1 - r), r = ab_t / ab_s."""
    r = ab_t / ab_s
    precision = 1 / (1 - ab_s) + r / (1 - r)
    var = 1 / precision
    mean = var * (math.sqrt(ab_s) * x0 / (1 - ab_s) + math.sqrt(r) * x_t / (1 - r))
    return mean, var


@pytest.mark.parametrize("t,s", [(999, 0), (999, 500), (500, 250), (100, 97), (20, 1)])
def test_q_posterior_skipped_pairs_match_bayes(schedule, generator, t, s):
    ab_t, ab_s = schedule.alpha_bar[t].item(), schedule.alpha_bar[s].item()
    x0 = torch.randn(5, 1, 2, 2, generator=generator, dtype=F64)
    x_t = torch.randn(5, 1, 2, 2, generator=generator, dtype=F64)
    mean_expected, var_expected = bayes_posterior(x0, x_t, ab_t, ab_s)
    mean, var = q_posterior(x0, x_t, ab_t, ab_s)
    assert torch.allclose(mean, mean_expected, rtol=1e-9, atol=1e-12)
    assert float(var) == pytest.approx(var_expected, rel=1e-9)


def test_q_posterior_with_per_example_alpha_bars(schedule, generator):
    t, s = torch.tensor([999, 300, 5]), torch.tensor([600, 299, 0])
    ab_t, ab_s = gather(schedule.alpha_bar, t, 4), gather(schedule.alpha_bar, s, 4)
    x0 = torch.randn(3, 1, 2, 2, generator=generator, dtype=F64)
    x_t = torch.randn(3, 1, 2, 2, generator=generator, dtype=F64)
    mean, var = q_posterior(x0, x_t, ab_t, ab_s)
    for i in range(3):
        m, v = bayes_posterior(x0[i], x_t[i], ab_t[i].item(), ab_s[i].item())
        assert torch.allclose(mean[i], m, rtol=1e-9, atol=1e-12)
        assert var[i].item() == pytest.approx(v, rel=1e-9)


@pytest.mark.parametrize("t", [0, 10, 999])
def test_q_posterior_to_x0_is_exact(schedule, generator, t):
    x0 = torch.randn(2, 1, 3, 3, generator=generator, dtype=F64)
    x_t = torch.randn(2, 1, 3, 3, generator=generator, dtype=F64)
    mean, var = q_posterior(x0, x_t, schedule.alpha_bar[t].item(), 1.0)
    assert torch.allclose(mean, x0, rtol=0, atol=1e-12)
    assert float(var) == 0.0


@pytest.fixture
def noised(generator):
    x0 = torch.rand(4, 1, 3, 3, generator=generator, dtype=F64) * 2 - 1
    eps = torch.randn(4, 1, 3, 3, generator=generator, dtype=F64)
    ab = torch.tensor([0.9999, 0.7, 0.05, 4e-5], dtype=F64).view(4, 1, 1, 1)
    x_t = torch.sqrt(ab) * x0 + torch.sqrt(1 - ab) * eps
    v = torch.sqrt(ab) * eps - torch.sqrt(1 - ab) * x0  # Salimans & Ho 2022
    return x0, eps, ab, x_t, v


def test_eps_x0_round_trips(noised):
    x0, eps, ab, x_t, _ = noised
    assert torch.allclose(x0_from_eps(q_sample(x0, eps, ab), eps, ab), x0, atol=1e-9)
    assert torch.allclose(x0_from_eps(x_t, eps, ab), x0, atol=1e-9)
    assert torch.allclose(eps_from_x0(x_t, x0, ab), eps, atol=1e-9)


def test_v_round_trip(noised):
    x0, eps, ab, x_t, v = noised
    assert torch.allclose(v_from_x0_eps(x0, eps, ab), v, atol=1e-12)
    assert torch.allclose(x0_from_v(x_t, v_from_x0_eps(x0, eps, ab), ab), x0, atol=1e-9)


@pytest.mark.parametrize("prediction", ["eps", "x0", "v"])
def test_x0_from_prediction_and_target(noised, prediction):
    x0, eps, ab, x_t, v = noised
    expected_target = {"eps": eps, "x0": x0, "v": v}[prediction]
    target = prediction_target(x0, eps, ab, prediction)
    assert torch.allclose(target, expected_target, atol=1e-12)
    assert torch.allclose(x0_from_prediction(expected_target, x_t, ab, prediction), x0, atol=1e-9)


def test_unknown_prediction_raises(noised):
    x0, eps, ab, x_t, _ = noised
    with pytest.raises(DDPMError):
        x0_from_prediction(eps, x_t, ab, "score")
    with pytest.raises(DDPMError):
        prediction_target(x0, eps, ab, "score")


def test_per_example_loss_values():
    output = torch.tensor([[0.0, 0.5, 3.0, -2.0], [1.0, 1.0, 1.0, 1.0]]).view(2, 1, 2, 2)
    target = torch.tensor([[0.0, 0.0, 0.0, 0.0], [1.0, 2.0, 0.5, 1.0]]).view(2, 1, 2, 2)
    # Differences: [0, .5, 3, -2] and [0, -1, .5, 0].
    l2 = per_example_loss(output, target, "l2")
    l1 = per_example_loss(output, target, "l1")
    huber = per_example_loss(output, target, "huber")
    for loss in (l2, l1, huber):
        assert loss.shape == (2,)
    assert l2.tolist() == pytest.approx([(0 + 0.25 + 9 + 4) / 4, (0 + 1 + 0.25 + 0) / 4])
    assert l1.tolist() == pytest.approx([(0 + 0.5 + 3 + 2) / 4, (0 + 1 + 0.5 + 0) / 4])
    # smooth L1 with threshold 1: d^2 / 2 below 1, |d| - 1/2 above.
    assert huber.tolist() == pytest.approx([(0 + 0.125 + 2.5 + 1.5) / 4, (0 + 0.5 + 0.125 + 0) / 4])
    with pytest.raises(DDPMError):
        per_example_loss(output, target, "l3")


def test_per_example_loss_shape_for_images(generator):
    output = torch.randn(5, 3, 4, 4, generator=generator)
    loss = per_example_loss(output, torch.zeros_like(output))
    assert loss.shape == (5,)
    assert torch.allclose(loss, (output**2).mean(dim=(1, 2, 3)))


def perfect_net(x0, ab, prediction):
    """A network that knows x0 and answers with the exact target computed from x_t."""
    seen = {}

    def net(x_t, t, labels):
        seen["t"], seen["labels"] = t, labels
        eps = (x_t - torch.sqrt(ab) * x0) / torch.sqrt(1 - ab)
        return {"eps": eps, "x0": x0, "v": torch.sqrt(ab) * eps - torch.sqrt(1 - ab) * x0}[
            prediction
        ]

    return net, seen


@pytest.mark.parametrize("prediction", ["eps", "x0", "v"])
@pytest.mark.parametrize("loss_type", ["l2", "l1", "huber"])
def test_training_loss_perfect_net_is_zero(schedule, generator, prediction, loss_type):
    x0 = torch.rand(6, 1, 4, 4, generator=generator, dtype=F64) * 2 - 1
    eps = torch.randn(6, 1, 4, 4, generator=generator, dtype=F64)
    t = torch.tensor([0, 1, 100, 500, 900, 999])
    ab = gather(schedule.alpha_bar, t, 4)
    labels = torch.arange(6)
    net, seen = perfect_net(x0, ab, prediction)
    loss = training_loss(
        net, x0, t, eps, ab, prediction=prediction, loss_type=loss_type, labels=labels
    )
    assert loss.shape == (6,)
    assert loss.abs().max().item() < 1e-5
    assert torch.equal(seen["t"], t) and torch.equal(seen["labels"], labels)


def test_training_loss_of_zero_net_is_target_energy(schedule, generator):
    x0 = torch.rand(3, 1, 4, 4, generator=generator, dtype=F64) * 2 - 1
    eps = torch.randn(3, 1, 4, 4, generator=generator, dtype=F64)
    t = torch.tensor([10, 400, 990])
    ab = gather(schedule.alpha_bar, t, 4)
    loss = training_loss(lambda x, t, y: torch.zeros_like(x), x0, t, eps, ab)
    assert torch.allclose(loss.double(), (eps**2).mean(dim=(1, 2, 3)), rtol=1e-5)
