import copy

import pytest
import torch
from torch import nn

from ddpm.train.ema import ema_decay_at, update_ema


@pytest.mark.parametrize(
    "n,decay,expected",
    [
        (0, 0.9999, 0.1),  # (1 + 0) / (10 + 0)
        (1, 0.9999, 2 / 11),
        (10, 0.9999, 11 / 20),
        (90, 0.9999, 91 / 100),
        (10**6, 0.9999, 0.9999),  # warm-up over: the configured decay
        (10**6, 0.999, 0.999),
        (5, 0.3, 0.3),  # the configured decay caps the warm-up value
    ],
)
def test_ema_decay_at(n, decay, expected):
    assert ema_decay_at(n, decay) == pytest.approx(expected, rel=1e-12)


def test_ema_decay_warm_up_is_increasing():
    values = [ema_decay_at(n, 0.999) for n in range(0, 20_000, 7)]  # reaches 0.999 at n = 8991
    assert all(a <= b for a, b in zip(values, values[1:]))
    assert values[-1] == 0.999


@pytest.mark.parametrize("decay", [0.9, 0.5, 0.0, 1.0])
def test_update_ema_is_lerp(generator, decay):
    model = nn.Linear(3, 2)
    ema = copy.deepcopy(model)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=generator))
        for p in ema.parameters():
            p.copy_(torch.randn(p.shape, generator=generator))
    old_ema = {k: v.clone() for k, v in ema.state_dict().items()}
    old_model = {k: v.clone() for k, v in model.state_dict().items()}
    update_ema(ema, model, decay)
    for name, value in ema.state_dict().items():
        expected = decay * old_ema[name] + (1 - decay) * old_model[name]
        assert torch.allclose(value, expected, rtol=0, atol=1e-6), name
        assert torch.equal(model.state_dict()[name], old_model[name])  # model untouched


def test_update_ema_twice_by_hand():
    model, ema = nn.Linear(1, 1), nn.Linear(1, 1)
    with torch.no_grad():
        ema.weight.fill_(1.0)
        ema.bias.fill_(0.0)
        model.weight.fill_(3.0)
        model.bias.fill_(-2.0)
    update_ema(ema, model, 0.75)  # 0.75 * 1 + 0.25 * 3 = 1.5; 0.75 * 0 + 0.25 * -2 = -0.5
    assert ema.weight.item() == pytest.approx(1.5)
    assert ema.bias.item() == pytest.approx(-0.5)
    update_ema(ema, model, 0.5)  # 0.5 * 1.5 + 0.5 * 3 = 2.25; 0.5 * -0.5 + 0.5 * -2 = -1.25
    assert ema.weight.item() == pytest.approx(2.25)
    assert ema.bias.item() == pytest.approx(-1.25)
    assert not ema.weight.requires_grad or ema.weight.grad is None


def test_update_ema_includes_float_buffers_and_skips_integer_ones():
    model, ema = nn.BatchNorm1d(2), nn.BatchNorm1d(2)
    with torch.no_grad():
        model.running_mean.fill_(4.0)
        model.num_batches_tracked.fill_(7)
    update_ema(ema, model, 0.5)
    assert torch.allclose(ema.running_mean, torch.full((2,), 2.0))  # 0.5 * 0 + 0.5 * 4
    assert ema.num_batches_tracked.item() == 0


def test_power_ema_gamma_matches_karras_et_al_2024():
    """EDM2's published pairs: sigma_rel 0.05 <-> gamma 16.97, 0.10 <-> 6.94."""
    from ddpm.train.ema import gamma_from_sigma_rel

    assert gamma_from_sigma_rel(0.05) == pytest.approx(16.97, abs=0.01)
    assert gamma_from_sigma_rel(0.10) == pytest.approx(6.94, abs=0.01)


def test_power_ema_weighs_update_tau_by_its_closed_form():
    """After t updates, x_tau's weight is (tau^(g+1) - (tau-1)^(g+1)) / t^(g+1)."""
    from ddpm.train.ema import lerp_ema, power_ema_decay_at

    gamma, t = 3.5, 12
    values = torch.arange(1, t + 1, dtype=torch.float64) ** 2  # x_tau = tau^2
    ema, model = [torch.zeros((), dtype=torch.float64)], [torch.zeros((), dtype=torch.float64)]
    for n in range(t):
        model[0].fill_(values[n])
        lerp_ema((ema, model), power_ema_decay_at(n, gamma))
    tau = torch.arange(1, t + 1, dtype=torch.float64)
    weights = (tau ** (gamma + 1) - (tau - 1) ** (gamma + 1)) / t ** (gamma + 1)
    assert weights.sum().item() == pytest.approx(1.0)
    assert ema[0].item() == pytest.approx((weights * values).sum().item(), rel=1e-12)
