"""Learned variance and the hybrid loss (Nichol & Dhariwal 2021) against closed forms computed here."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
from scipy.stats import norm
from tiny import TINY_MODEL, sets

from ddpm.builders import build_model
from ddpm.cli import main
from ddpm.config import from_dict
from ddpm.data import load_dataset
from ddpm.denoiser import make_denoiser, make_variance_denoiser
from ddpm.errors import DDPMError
from ddpm.learned_variance import (
    hybrid_loss,
    learned_range_log_variance,
    split_output,
    vlb_bits_per_dim,
)
from ddpm.metrics.likelihood import bits_per_dim
from ddpm.rng import step_generator
from ddpm.samplers import sample_ancestral
from ddpm.schedules import Schedule, linear_betas
from ddpm.train import make_trainer
from ddpm.train.validation import validation_loss

BETAS = linear_betas(100, 1e-4, 0.02).double()
ALPHA_BAR = torch.cumprod(1 - BETAS, 0)
SCHEDULE = Schedule(betas=BETAS, alpha_bar=ALPHA_BAR)
ALPHA_BAR_1000 = torch.cumprod(1 - linear_betas(1000).double(), 0)
GRID = torch.arange(256, dtype=torch.float64) / 127.5 - 1


def pair_betas(s: int, t: int) -> tuple[float, float]:
    """(beta', beta~') of the pair s < t from the betas alone: 1 - prod_{s < i <= t} (1 - beta_i)
    and (1 - prod_{i <= s}) / (1 - prod_{i <= t}) beta' (Ho et al. Eq. 7 on the pair)."""
    b = BETAS.numpy()
    beta = 1 - np.prod(1 - b[s + 1 : t + 1])
    return float(beta), float((1 - np.prod(1 - b[: s + 1])) / (1 - np.prod(1 - b[: t + 1])) * beta)


# (s, t): adjacent, respaced, and the step to x0 (s = -1), whose beta~ is clipped with beta~_1
PAIRS = [(49, 50), (10, 60), (0, 1), (-1, 0)]


@pytest.mark.parametrize("s, t", PAIRS)
def test_learned_range_is_beta_tilde_at_v0_beta_at_v1_and_geometric_between(s, t):
    beta, beta_tilde = pair_betas(s, t)
    if s < 0:
        beta_tilde = pair_betas(0, 1)[1]  # the paper's clip: the posterior variance of step 1
    ab_s = 1.0 if s < 0 else ALPHA_BAR[s]
    first = pair_betas(0, 1)[1]
    v = torch.tensor([0.0, 1.0, 0.25], dtype=torch.float64)
    variance = learned_range_log_variance(v, ALPHA_BAR[t], ab_s, first_variance=first).exp()
    expected = [beta_tilde, beta, beta**0.25 * beta_tilde**0.75]
    np.testing.assert_allclose(variance.numpy(), expected, rtol=1e-9)


def test_v_is_the_raw_output_plus_one_over_two():
    raw = torch.tensor([[[[0.3]], [[-0.5]], [[1.0]], [[-1.0]]]])  # [1, 2C = 4, 1, 1]
    prediction, v = split_output(raw, 2)
    assert prediction.flatten().tolist() == pytest.approx([0.3, -0.5])
    assert v.flatten().tolist() == pytest.approx([1.0, 0.0])


def posterior(x0, x_t, t):
    """Ho et al. 2020, Eq. 7 with 0-based t >= 1: mean and variance of q(x_{t-1} | x_t, x0)."""
    ab_t, ab_prev, beta = float(ALPHA_BAR[t]), float(ALPHA_BAR[t - 1]), float(BETAS[t])
    mean = (
        ab_prev**0.5 * beta / (1 - ab_t) * x0 + (1 - beta) ** 0.5 * (1 - ab_prev) / (1 - ab_t) * x_t
    )
    return mean, (1 - ab_prev) / (1 - ab_t) * beta


def test_kl_term_is_the_closed_form_gaussian_kl_in_bits_per_dim(generator):
    t = 30
    x0, x_t, x0_hat = (
        torch.randn(2, 3, 4, 4, generator=generator, dtype=torch.float64) for _ in "abc"
    )
    log_var = torch.randn(2, 3, 4, 4, generator=generator, dtype=torch.float64) - 6
    ab_t = torch.full((2, 1, 1, 1), float(ALPHA_BAR[t]), dtype=torch.float64)
    ab_s = torch.full((2, 1, 1, 1), float(ALPHA_BAR[t - 1]), dtype=torch.float64)
    got = vlb_bits_per_dim(x0, x_t, x0_hat, log_var, ab_t, ab_s)
    (m1, v1), (m2, _) = posterior(x0, x_t, t), posterior(x0_hat, x_t, t)
    std2 = (0.5 * log_var).exp()
    kl = 0.5 * (torch.log(std2**2 / v1) + (v1 + (m1 - m2) ** 2) / std2**2 - 1)
    torch.testing.assert_close(got, kl.flatten(1).mean(1) / math.log(2), rtol=1e-10, atol=0)


def test_decoder_term_is_the_discretized_gaussian_nll_in_bits_per_dim():
    x0 = GRID[[3, 100, 128, 200]].reshape(1, 1, 2, 2)
    x0_hat = x0 + torch.tensor([0.01, -0.02, 0.0, 0.03], dtype=torch.float64).reshape(1, 1, 2, 2)
    log_var = torch.full_like(x0, math.log(4e-4))
    one = torch.ones(1, 1, 1, 1, dtype=torch.float64)
    got = vlb_bits_per_dim(x0, x0 + 0.5, x0_hat, log_var, ALPHA_BAR[0] * one, one)
    x, mean = x0.flatten().numpy(), x0_hat.flatten().numpy()
    mass = norm.cdf(x + 1 / 255, mean, 0.02) - norm.cdf(x - 1 / 255, mean, 0.02)
    assert float(got) == pytest.approx(-np.log(mass).mean() / math.log(2), rel=1e-9)


class Constant(torch.nn.Module):
    """A 'network' whose output is one trainable tensor [B, 2C, H, W], whatever its input."""

    def __init__(self, output: torch.Tensor) -> None:
        super().__init__()
        self.output = torch.nn.Parameter(output.clone())

    def forward(self, x, t, labels=None):
        return self.output


def test_hybrid_loss_terms_and_gradients(generator):
    T, C = len(ALPHA_BAR), 2
    t = torch.tensor([0, 1, 37, 99])
    x0 = GRID[torch.randint(256, (4, C, 3, 3), generator=generator)].float()
    eps = torch.randn(4, C, 3, 3, generator=generator)
    net = Constant(0.5 * torch.randn(4, 2 * C, 3, 3, generator=generator))
    simple, vlb = hybrid_loss(net, x0, t, eps, ALPHA_BAR, prediction="eps")
    out = net.output.detach().double()
    torch.testing.assert_close(simple.double(), ((out[:, :C] - eps) ** 2).flatten(1).mean(1))
    # independently: Eq. 15 log-variance and the KL / decoder NLL of each example, in bits/dim
    x0d, epsd = x0.double(), eps.double()
    v = (out[:, C:] + 1) / 2
    for i, ti in enumerate(t.tolist()):
        ab = float(ALPHA_BAR[ti])
        x_t = ab**0.5 * x0d[i] + (1 - ab) ** 0.5 * epsd[i]
        x0_hat = (x_t - (1 - ab) ** 0.5 * out[i, :C]) / ab**0.5
        if ti == 0:
            var = torch.exp(v[i] * math.log(BETAS[0]) + (1 - v[i]) * math.log(pair_betas(0, 1)[1]))
            std, x = var.sqrt().numpy(), x0d[i].numpy()
            upper = np.where(x > 0.999, np.inf, x + 1 / 255)
            lower = np.where(x < -0.999, -np.inf, x - 1 / 255)
            mass = norm.cdf(upper, x0_hat.numpy(), std) - norm.cdf(lower, x0_hat.numpy(), std)
            expected = -np.log(mass).mean()
        else:
            beta, beta_tilde = pair_betas(ti - 1, ti)
            var = torch.exp(v[i] * math.log(beta) + (1 - v[i]) * math.log(beta_tilde))
            (m1, v1), (m2, _) = posterior(x0d[i], x_t, ti), posterior(x0_hat, x_t, ti)
            expected = float((0.5 * (torch.log(var / v1) + (v1 + (m1 - m2) ** 2) / var - 1)).mean())
        assert float(vlb[i].detach()) == pytest.approx(expected / math.log(2) * T, rel=1e-4)
    # L_vlb trains only the variance channels; L_simple only the prediction channels
    (grad_vlb,) = torch.autograd.grad(vlb.sum(), net.output)
    assert torch.equal(grad_vlb[:, :C], torch.zeros_like(grad_vlb[:, :C]))
    assert (grad_vlb[:, C:].abs() > 0).all()
    (grad_simple,) = torch.autograd.grad(simple.sum(), net.output)
    assert torch.equal(grad_simple[:, C:], torch.zeros_like(grad_simple[:, C:]))


TINY_HYBRID = [
    *TINY_MODEL,
    "model.dropout=0.0",
    "diffusion.variance=learned_range",
    "diffusion.loss=hybrid",
    "train.precision=fp32",
]


def tiny_config(vlb_weight: float = 0.001):
    """The tiny U-Net with a learned variance and the hybrid loss, fp32, no dropout."""
    return from_dict(
        {
            "model": {"base_channels": 8, "channel_mult": [1, 2], "num_res_blocks": 1,
                      "attention_resolutions": [4], "num_groups": 4, "dropout": 0.0},
            "diffusion": {"variance": "learned_range", "loss": "hybrid", "vlb_weight": vlb_weight},
            "train": {"precision": "fp32", "batch_size": 8, "seed": 3},
        }
    )  # fmt: skip


@pytest.mark.slow
def test_training_step_minimises_l2_plus_vlb_weight_times_vlb(generator):
    config = tiny_config(0.5)
    trainer = make_trainer(config, torch.device("cpu"))
    before = copy.deepcopy(trainer.model)
    x0 = GRID[torch.randint(256, (8, 1, 8, 8), generator=generator)].float()
    loss, _, finite = trainer.step(0, x0, None)
    # the step's draws: t then eps from the (seed, step, 2) generator
    draws = step_generator(3, 0, 2)
    t = torch.randint(1000, (8,), generator=draws)
    eps = torch.randn(x0.shape, generator=draws)
    with torch.no_grad():
        simple, vlb = hybrid_loss(before.train(), x0, t, eps, ALPHA_BAR_1000, prediction="eps")
    assert bool(finite) and float(vlb.mean()) > 0
    assert float(loss) == pytest.approx(float((simple + 0.5 * vlb).mean()), rel=1e-5)


@pytest.mark.slow
def test_validation_loss_adds_vlb_weight_times_vlb():
    data = load_dataset(tiny_config().data, "test")
    net = build_model(tiny_config())
    with torch.no_grad():  # a non-zero variance output, so L_vlb depends on it
        net.conv_out.bias.copy_(torch.tensor([0.0, 0.3]))
    values = [validation_loss(net, data, tiny_config(w), num_images=16) for w in (0.0, 0.5, 1.0)]
    assert values[1] - values[0] > 0
    assert values[2] - values[1] == pytest.approx(values[1] - values[0], rel=1e-6)


def test_ancestral_step_adds_noise_of_exactly_the_learned_variance():
    C, t, s = 2, 60, 10
    raw_v = torch.tensor([-0.6, 0.4]).reshape(1, C, 1, 1).expand(3, C, 2, 2)
    output = torch.cat([torch.zeros(3, C, 2, 2), raw_v], dim=1)  # x0 prediction 0
    denoiser = make_variance_denoiser(Constant(output), SCHEDULE, prediction="x0", clip=True)
    states = []
    sample_ancestral(
        denoiser,
        torch.zeros(3, C, 2, 2),
        SCHEDULE,
        [t, s],
        variance="learned_range",
        generator=torch.Generator().manual_seed(7),
        callback=lambda info: states.append(info.x_t),
    )
    z = torch.randn((3, C, 2, 2), generator=torch.Generator().manual_seed(7))
    beta, beta_tilde = pair_betas(s, t)
    v = torch.tensor([0.2, 0.7]).reshape(1, C, 1, 1)  # (raw + 1) / 2
    variance = torch.exp(v * math.log(beta) + (1 - v) * math.log(beta_tilde))
    torch.testing.assert_close(states[1], variance.sqrt() * z, rtol=1e-5, atol=0)


def test_guidance_and_clipping_act_on_the_prediction_channels_only():
    class TwoClass(torch.nn.Module):
        def forward(self, x, t, labels):
            rows = torch.where(labels.view(-1, 1, 1, 1) == 0, 1.0, -3.0)  # null class: 1
            out = torch.cat([rows.expand(-1, 1, 2, 2), 0.8 * rows.expand(-1, 1, 2, 2)], dim=1)
            return out

    labels = torch.zeros(2, dtype=torch.long)
    kwargs = dict(prediction="x0", labels=labels, null_label=1, guidance=0.1, clip=True)
    x0_hat, v = make_variance_denoiser(TwoClass(), SCHEDULE, **kwargs)(
        torch.zeros(2, 1, 2, 2), torch.tensor([5, 5])
    )
    # guided x0 = -3 + 0.1 (1 - (-3)) = -2.6, clipped to -1; v from the conditional output
    assert torch.equal(x0_hat, torch.full((2, 1, 2, 2), -1.0))
    torch.testing.assert_close(v, torch.full((2, 1, 2, 2), 0.9))
    only_x0 = make_denoiser(TwoClass(), SCHEDULE, learned_variance=True, **kwargs)
    assert torch.equal(only_x0(torch.zeros(2, 1, 2, 2), torch.tensor([5, 5])), x0_hat)
    with pytest.raises(ValueError, match="learned_variance=False expects C"):
        make_denoiser(TwoClass(), SCHEDULE, **kwargs)(torch.zeros(2, 1, 2, 2), torch.tensor([5, 5]))


class ZeroNoise(torch.nn.Module):
    """eps = 0 everywhere, and a constant raw variance output r: v = (r + 1) / 2."""

    def __init__(self, raw_v: float | None) -> None:
        super().__init__()
        self.raw_v = raw_v
        self.unused = torch.nn.Parameter(torch.zeros(1))

    def forward(self, x, t, y=None):
        if self.raw_v is None:
            return torch.zeros_like(x)
        return torch.cat([torch.zeros_like(x), torch.full_like(x, self.raw_v)], dim=1)


@pytest.mark.parametrize("raw_v, fixed", [(-1.0, "beta_tilde"), (1.0, "beta")])
def test_bits_per_dim_uses_the_learned_variance(raw_v, fixed, generator):
    schedule = Schedule(betas=BETAS[:20], alpha_bar=ALPHA_BAR[:20])
    images = torch.randint(0, 256, (6, 1, 2, 2), generator=generator, dtype=torch.uint8)
    learned = bits_per_dim(
        ZeroNoise(raw_v), schedule, images, prediction="eps", variance="learned_range", clip=False
    )
    reference = bits_per_dim(
        ZeroNoise(None), schedule, images, prediction="eps", variance=fixed, clip=False
    )
    assert learned.kl_terms == pytest.approx(reference.kl_terms, rel=1e-9)
    assert learned.prior == pytest.approx(reference.prior, rel=1e-9)
    if fixed == "beta_tilde":
        assert learned.mean == pytest.approx(reference.mean, rel=1e-9)
        assert learned.decoder == pytest.approx(reference.decoder, rel=1e-9)
    else:  # at k = 0, v = 1 is beta_0 (improved-diffusion's max_log = log beta_t), where Ho et
        # al.'s fixedlarge decoder takes beta~_1: only the decoder terms differ
        assert learned.decoder != pytest.approx(reference.decoder, rel=1e-3)
        assert learned.mean - learned.decoder == pytest.approx(
            reference.mean - reference.decoder, rel=1e-9
        )


def test_hybrid_and_learned_range_go_together():
    for bad in ({"loss": "hybrid"}, {"variance": "learned_range"}):
        with pytest.raises(DDPMError, match="diffusion.loss=hybrid and diffusion.variance"):
            from_dict({"diffusion": bad})
    with pytest.raises(DDPMError, match="diffusion.vlb_weight"):
        from_dict({"diffusion": {"loss": "hybrid", "variance": "learned_range", "vlb_weight": -1}})


@pytest.mark.slow
def test_only_a_learned_variance_network_has_2c_outputs():
    rgb = {"data": {"channels": 3, "image_size": 16}, "model": {"attention_resolutions": [8]}}
    plain = build_model(from_dict(rgb))
    hybrid = {"variance": "learned_range", "loss": "hybrid"}
    learned = build_model(from_dict({**rgb, "diffusion": hybrid}))
    # the same keys, the same shapes but the output layer's (so old checkpoints load unchanged)
    shapes = {k: v.shape for k, v in plain.state_dict().items()}
    different = {k for k, v in learned.state_dict().items() if shapes[k] != v.shape}
    assert shapes.keys() == learned.state_dict().keys()
    assert different == {"conv_out.weight", "conv_out.bias"}
    assert plain.conv_out.weight.shape[0] == 3 and learned.conv_out.weight.shape[0] == 6
    assert learned(torch.zeros(2, 3, 16, 16), torch.tensor([0, 5])).shape == (2, 6, 16, 16)


@pytest.mark.slow
def test_train_sample_and_bits_per_dim_end_to_end(tmp_path, capsys):
    run = tmp_path / "hybrid"
    args = ["train", "--dataset", "digits", "--out", str(run), "--quiet"]
    args += sets([*TINY_HYBRID, "train.num_steps=6", "train.batch_size=8", "train.log_every=3"])
    args += sets(["train.checkpoint_every=6", "train.sample_every=6", "train.num_sample_images=2"])
    args += sets(["sample.steps=4", "train.warmup_steps=2", "train.val_images=16"])
    assert main(args) == 0
    for sampler in ("ddpm", "ddim"):
        out = tmp_path / f"{sampler}.npz"
        assert main(["sample", "--run", str(run), "--n", "3", "--sampler", sampler, "--steps",
                     "4", "--out", str(tmp_path / "grid.png"), "--npz", str(out), "--quiet"]) == 0  # fmt: skip
        images = np.load(out)["arr_0"]
        assert images.shape == (3, 8, 8, 1) and images.dtype == np.uint8
    args = ["eval", "--run", str(run), "--metrics", "bpd", "--bpd-n", "4", "--bpd-timesteps", "3"]
    assert main([*args, "--precision", "fp32", "--quiet"]) == 0
    assert "bits/dim:" in capsys.readouterr().out


def test_the_hybrid_loss_applies_edm_preconditioning():
    """prediction=edm with the hybrid loss: the network sees c_in y and a perfect F gives
    L_simple = 0 (Karras et al. 2022, Table 1, written out here)."""
    from ddpm.learned_variance import hybrid_loss
    from ddpm.schedules import make_schedule

    generator = torch.Generator().manual_seed(0)
    alpha_bar = make_schedule("linear", 1000).alpha_bar.double()
    x0 = (torch.rand(4, 1, 8, 8, generator=generator) * 2 - 1).double()
    eps = torch.randn(4, 1, 8, 8, generator=generator, dtype=torch.float64)
    t = torch.tensor([1, 10, 300, 999])
    sd = 0.7
    ab = alpha_bar[t].view(-1, 1, 1, 1)
    sigma = ((1 - ab) / ab).sqrt()
    y = x0 + sigma * eps
    c_skip, c_out = sd**2 / (sigma**2 + sd**2), sigma * sd / (sigma**2 + sd**2).sqrt()
    c_in = 1 / (sigma**2 + sd**2).sqrt()
    seen = []

    def net(x_in, t_in, labels):
        seen.append(x_in)
        return torch.cat([(x0 - c_skip * y) / c_out, torch.zeros_like(x0)], dim=1)

    simple, vlb = hybrid_loss(net, x0, t, eps, alpha_bar, prediction="edm", sigma_data=sd)
    torch.testing.assert_close(seen[0], c_in * y)
    assert simple.abs().max() < 1e-10 and vlb.isfinite().all()
