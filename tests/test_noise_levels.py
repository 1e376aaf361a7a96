"""Noise-level sampling (lognormal, Laplace) and Min-SNR weighting against their definitions."""

from __future__ import annotations

import pytest
import torch

from ddpm.config import from_dict, load_preset
from ddpm.diffusion import x0_from_eps, x0_from_v
from ddpm.noise_levels import (
    laplace_timesteps,
    lognormal_timesteps,
    min_snr_weight,
    nearest_timesteps,
)
from ddpm.schedules import make_schedule
from ddpm.train import make_trainer

ALPHA_BAR = make_schedule("linear", 1000, beta_start=1e-4, beta_end=0.02).alpha_bar


def test_nearest_timesteps_is_the_argmin_of_the_distance(generator):
    table = torch.sort(torch.randn(50, generator=generator, dtype=torch.float64)).values
    values = torch.randn(500, generator=generator, dtype=torch.float64) * 2
    expected = (table[None, :] - values[:, None]).abs().argmin(dim=1)
    assert torch.equal(nearest_timesteps(table, values), expected)


def test_lognormal_timesteps_follow_ln_sigma_normal(generator):
    z = torch.randn(200_000, generator=generator)
    t = lognormal_timesteps(z, ALPHA_BAR, p_mean=-1.2, p_std=1.2)
    ab = ALPHA_BAR[t]
    ln_sigma = 0.5 * torch.log((1 - ab) / ab)  # written out, not through the module
    assert ln_sigma.mean().item() == pytest.approx(-1.2, abs=0.02)
    assert ln_sigma.std().item() == pytest.approx(1.2, abs=0.02)
    assert t.dtype == torch.long and 0 <= t.min() and t.max() < 1000


def test_laplace_timesteps_follow_a_laplace_log_snr(generator):
    u = torch.rand(200_000, generator=generator)
    t = laplace_timesteps(u, ALPHA_BAR, mu=0.5, b=0.5)
    lam = torch.log(ALPHA_BAR[t] / (1 - ALPHA_BAR[t]))
    assert lam.median().item() == pytest.approx(0.5, abs=0.03)
    assert (lam - 0.5).abs().mean().item() == pytest.approx(0.5, abs=0.03)  # E|X - mu| = b


@pytest.mark.parametrize("prediction", ["eps", "x0", "v"])
def test_min_snr_weights_give_min_snr_gamma_times_the_x0_error(prediction, generator):
    """Hang et al. 2023, Eq. 7-8: whatever the network predicts, the weighted loss equals
    min(SNR, gamma) ||x0 - x0_hat||^2."""
    t = torch.tensor([0, 50, 200, 500, 999])
    ab = ALPHA_BAR[t][:, None]
    x0, eps = (
        torch.randn(5, 16, generator=generator, dtype=torch.float64),
        torch.randn(5, 16, generator=generator, dtype=torch.float64),
    )
    x_t = ab.sqrt() * x0 + (1 - ab).sqrt() * eps
    target = {"eps": eps, "x0": x0, "v": ab.sqrt() * eps - (1 - ab).sqrt() * x0}[prediction]
    guess = target + 0.1 * torch.randn(5, 16, generator=generator, dtype=torch.float64)
    x0_hat = {"eps": lambda g: x0_from_eps(x_t, g, ab), "x0": lambda g: g,
              "v": lambda g: x0_from_v(x_t, g, ab)}[prediction](guess)  # fmt: skip
    weight = min_snr_weight(ab[:, 0], gamma=5.0, prediction=prediction)
    weighted = weight * ((guess - target) ** 2).sum(dim=1)
    snr = ab[:, 0] / (1 - ab[:, 0])
    expected = torch.minimum(snr, torch.tensor(5.0, dtype=torch.float64)) * (
        (x0_hat - x0) ** 2
    ).sum(dim=1)
    assert torch.allclose(weighted, expected, rtol=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize("t_sampling", ["uniform", "lognormal", "laplace"])
def test_every_recipe_trains(t_sampling):
    config = from_dict(
        {
            "model": {"base_channels": 8, "channel_mult": [1, 2], "num_res_blocks": 1,
                      "attention_resolutions": [4], "num_groups": 4, "dropout": 0.0},
            "diffusion": {"loss_weight": "min_snr", "prediction": "v"},
            "train": {"t_sampling": t_sampling, "precision": "fp32"},
        },
        base=load_preset("digits"),
    )  # fmt: skip
    torch.manual_seed(0)
    trainer = make_trainer(config, torch.device("cpu"))
    x0 = torch.rand(8, 1, 8, 8) * 2 - 1
    losses = [trainer.step(n, x0, None)[0].item() for n in range(3)]
    assert all(0 < loss < 10 for loss in losses)


def test_the_validation_loss_carries_the_min_snr_weights():
    """A network that predicts eps = 0 has per-example l2 loss mean(eps^2); with min_snr each is
    weighted by min(SNR_t, 5) / SNR_t at the validation grid's t."""
    from ddpm.data import load_dataset
    from ddpm.rng import seeded_generator
    from ddpm.train.validation import VALIDATION_SEED, validation_loss

    class Zero(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.unused = torch.nn.Parameter(torch.zeros(1))

        def forward(self, x, t, y=None):
            return torch.zeros_like(x)

    base = load_preset("digits")
    data = load_dataset(base.data, "test")
    n = 64
    t = torch.linspace(0, 999, n).round().long()
    eps = torch.randn((n, *data.images.shape[1:]), generator=seeded_generator(VALIDATION_SEED))
    per_example = (eps.double() ** 2).flatten(1).mean(dim=1)
    ab = ALPHA_BAR[t]
    snr = ab / (1 - ab)
    expected = (per_example * torch.clamp(snr, max=5.0) / snr).mean().item()
    config = from_dict({"diffusion": {"loss_weight": "min_snr"}}, base=base)
    assert validation_loss(Zero(), data, config, num_images=n) == pytest.approx(expected, rel=1e-5)
    plain = validation_loss(Zero(), data, base, num_images=n)
    assert plain == pytest.approx(per_example.mean().item(), rel=1e-5)
