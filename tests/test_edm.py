"""EDM preconditioning and loss weighting (Karras et al. 2022, Table 1 and Sec. 5).

Every expectation is written out here from the paper's formulas, with sigma = sqrt((1 - ab) / ab)
and y = x_t / sqrt(ab) = x0 + sigma eps, never computed through ddpm.edm.
"""

from __future__ import annotations

import copy
import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from tiny import TINY_MODEL, sets

from ddpm.cli import main
from ddpm.config import from_dict, load_preset
from ddpm.denoiser import make_denoiser
from ddpm.diffusion import (
    gather,
    network_input,
    prediction_target,
    training_loss,
    x0_from_prediction,
)
from ddpm.edm import edm_coefficients, edm_input_scale
from ddpm.errors import DDPMError
from ddpm.generate import generate, sample_config
from ddpm.loaded_run import LoadedRun
from ddpm.metrics.likelihood import bits_per_dim
from ddpm.noise_levels import loss_weights
from ddpm.rng import seeded_generator
from ddpm.samplers import SAMPLERS
from ddpm.schedules import make_schedule, sampling_timesteps
from ddpm.train import make_trainer

SCHEDULE = make_schedule("linear", 1000, beta_start=1e-4, beta_end=0.02)
AB64 = SCHEDULE.alpha_bar.double()


def paper(sigma, sd):
    """(c_skip, c_out, c_in, lambda) of Karras et al. 2022, Table 1, written out."""
    c_skip = sd**2 / (sigma**2 + sd**2)
    c_out = sigma * sd / (sigma**2 + sd**2) ** 0.5
    c_in = 1 / (sigma**2 + sd**2) ** 0.5
    return c_skip, c_out, c_in, (sigma**2 + sd**2) / (sigma * sd) ** 2


def sigma_of(ab):
    return ((1 - ab) / ab) ** 0.5


@pytest.mark.parametrize("sd", [0.5, 1.0, 0.2])
def test_coefficients_are_table_1(sd):
    for sigma in (0.002, 0.1, 0.5, 1.0, 5.0, 80.0):
        c_skip, c_out, c_in, _ = paper(sigma, sd)
        assert edm_coefficients(sigma, sd) == pytest.approx((c_skip, c_out, c_in), rel=1e-12)
        ab = 1 / (1 + sigma**2)  # the VP step with this sigma; x_t = sqrt(ab) y
        assert edm_input_scale(ab, sd) == pytest.approx(c_in / math.sqrt(ab), rel=1e-12)


def test_the_edm_denoiser_is_c_skip_y_plus_c_out_F(generator):
    """make_denoiser(prediction="edm") feeds the network c_in y and returns c_skip y + c_out F."""
    sd, t = 0.3, torch.tensor([0, 100, 500, 999])
    x_t = torch.randn(4, 1, 8, 8, generator=generator)
    seen = []

    def net(x, t, labels=None):
        seen.append(x)
        return torch.sin(3 * x) + 0.1 * t.view(-1, 1, 1, 1)  # some F of its input and t

    x0_hat = make_denoiser(net, SCHEDULE, prediction="edm", clip=False, precision="fp32",
                           sigma_data=sd)(x_t, t)  # fmt: skip
    ab = AB64[t].view(-1, 1, 1, 1)
    c_skip, c_out, c_in, _ = paper(sigma_of(ab), sd)
    y = x_t.double() / ab.sqrt()
    assert torch.allclose(seen[0].double(), c_in * y, rtol=1e-5, atol=1e-6)
    F = torch.sin(3 * c_in * y) + 0.1 * t.view(-1, 1, 1, 1)
    assert torch.allclose(x0_hat.double(), c_skip * y + c_out * F, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("sd", [0.5, 0.3])
def test_input_and_target_have_unit_variance_on_data_of_std_sigma_data(sd, generator):
    """On Gaussian x0 of std sigma_data, c_in y and (x0 - c_skip y) / c_out have variance 1 at
    every sigma (EDM, Appendix B.6). 400,000 draws: the sample variance's standard deviation is
    sqrt(2 / n) = 0.0022, so 0.015 is about 7 of them; a wrong c_in or c_out at these sigmas
    moves the variance by far more (e.g. by 1 / c_out^2 - 1 > 0.3 for a missing 1 / c_out)."""
    n = 400_000
    x0 = sd * torch.randn(n, generator=generator, dtype=torch.float64)
    eps = torch.randn(n, generator=generator, dtype=torch.float64)
    for sigma in (0.02, 0.2, sd, 1.0, 3.0, 50.0):
        ab = 1 / (1 + sigma**2)
        x_t = ab**0.5 * x0 + (1 - ab) ** 0.5 * eps
        assert network_input(x_t, ab, "edm", sd).var().item() == pytest.approx(1, abs=0.015)
        target = prediction_target(x0, eps, ab, "edm", sigma_data=sd)
        assert target.var().item() == pytest.approx(1, abs=0.015)


def test_a_perfect_F_gives_x0_exactly(generator):
    x0 = torch.rand(5, 3, 4, 4, generator=generator, dtype=torch.float64) * 2 - 1
    eps = torch.randn(5, 3, 4, 4, generator=generator, dtype=torch.float64)
    ab = AB64[torch.tensor([0, 10, 300, 700, 999])].view(-1, 1, 1, 1)
    x_t = ab.sqrt() * x0 + (1 - ab).sqrt() * eps
    sigma = sigma_of(ab)
    c_skip, c_out, _, _ = paper(sigma, 0.5)
    F = (x0 - c_skip * (x0 + sigma * eps)) / c_out  # the paper's Eq. 8 target, written out
    assert torch.allclose(prediction_target(x0, eps, ab, "edm", sigma_data=0.5), F, atol=1e-9)
    assert torch.allclose(x0_from_prediction(F, x_t, ab, "edm", sigma_data=0.5), x0, atol=1e-9)


class PointMassEDM(torch.nn.Module):
    """The ideal F for data that is one image `point`: F = (point - c_skip y) / c_out, with y
    recovered from its input c_in y and sigma from t (float64 tables written out here)."""

    def __init__(self, point: torch.Tensor, sd: float) -> None:
        super().__init__()
        self.unused = torch.nn.Parameter(torch.zeros(1))
        self.point, self.sd = point.double(), sd
        self.config, self.null_label = SimpleNamespace(num_classes=0), None

    def forward(self, x, t, labels=None):
        c_skip, c_out, c_in, _ = paper(sigma_of(AB64[t].view(-1, 1, 1, 1)), self.sd)
        y = x.double() / c_in
        return ((self.point - c_skip * y) / c_out).float()


@pytest.mark.parametrize("name", list(SAMPLERS))
def test_every_sampler_returns_the_point_with_the_ideal_F(name, generator):
    point = torch.rand(1, 1, 8, 8, generator=generator) * 1.6 - 0.8
    denoiser = make_denoiser(PointMassEDM(point, 0.3), SCHEDULE, prediction="edm", clip=False,
                             precision="fp32", sigma_data=0.3)  # fmt: skip
    x_T = torch.randn(3, 1, 8, 8, generator=generator)
    one_step = SAMPLERS["ddim"](denoiser, x_T, SCHEDULE, [600])  # DDIM from t = 600 to -1
    assert torch.allclose(one_step, point.expand_as(one_step), atol=1e-4)
    ts = sampling_timesteps(SCHEDULE, 8, "karras" if name == "heun" else "uniform")
    out = SAMPLERS[name](denoiser, x_T, SCHEDULE, ts, generator=generator)
    assert torch.allclose(out.float(), point.expand_as(out), atol=1e-3)


def test_generate_passes_sigma_data_to_the_denoiser(generator):
    point = torch.rand(1, 1, 8, 8, generator=generator) * 1.6 - 0.8
    config = from_dict({"diffusion": {"prediction": "edm", "sigma_data": 0.3}},
                       base=load_preset("digits"))  # fmt: skip
    run = LoadedRun(PointMassEDM(point, 0.3), SCHEDULE, config, step=0)
    sample = sample_config(config, sampler="ddim", steps=5, precision="fp32")
    images = generate(run, sample, n=2, progress=False)
    assert torch.allclose(images, point.expand_as(images), atol=1e-3)


@pytest.mark.parametrize("prediction", ["eps", "x0", "v", "edm"])
@pytest.mark.parametrize("sd", [0.5, 0.3])
def test_edm_weight_gives_lambda_times_the_x0_error(prediction, sd, generator):
    """Whatever the network predicts, loss_weight=edm makes the l2 loss
    (sigma^2 + sd^2) / (sigma sd)^2 ||x0 - x0_hat||^2 = ||x0 - x0_hat||^2 / c_out^2; and
    min_snr on the edm prediction gives min(SNR, gamma) ||x0 - x0_hat||^2."""
    t = torch.tensor([0, 50, 200, 500, 999])
    ab = AB64[t][:, None]
    x0 = torch.randn(5, 16, generator=generator, dtype=torch.float64)
    eps = torch.randn(5, 16, generator=generator, dtype=torch.float64)
    x_t = ab.sqrt() * x0 + (1 - ab).sqrt() * eps
    sigma = sigma_of(ab)
    c_skip, c_out, _, lam = paper(sigma, sd)
    target = {"eps": eps, "x0": x0, "v": ab.sqrt() * eps - (1 - ab).sqrt() * x0,
              "edm": (x0 - c_skip * (x0 + sigma * eps)) / c_out}[prediction]  # fmt: skip
    guess = target + 0.1 * torch.randn(5, 16, generator=generator, dtype=torch.float64)
    x0_hat = {"eps": (x_t - (1 - ab).sqrt() * guess) / ab.sqrt(), "x0": guess,
              "v": ab.sqrt() * x_t - (1 - ab).sqrt() * guess,
              "edm": c_skip * x_t / ab.sqrt() + c_out * guess}[prediction]  # fmt: skip
    error = ((guess - target) ** 2).sum(dim=1)
    x0_error = ((x0_hat - x0) ** 2).sum(dim=1)
    weight = loss_weights(ab[:, 0], loss_weight="edm", gamma=5.0, prediction=prediction,
                          sigma_data=sd)  # fmt: skip
    assert torch.allclose(weight * error, lam[:, 0] * x0_error, rtol=1e-6)
    if prediction == "edm":
        snr = ab[:, 0] / (1 - ab[:, 0])
        weight = loss_weights(ab[:, 0], loss_weight="min_snr", gamma=5.0, prediction="edm",
                              sigma_data=sd)  # fmt: skip
        assert torch.allclose(weight * error, snr.clamp(max=5.0) * x0_error, rtol=1e-6)


def test_training_loss_scales_the_input_in_float32_outside_autocast(generator):
    """Under bf16 autocast the network gets the float32 c_in y, and the target and the loss are
    float32: the loss equals the float64 one written out here to float32 rounding (a bf16
    target would be off by ~1e-3)."""
    sd, t = 0.4, torch.tensor([3, 250, 800])
    x0 = torch.rand(3, 1, 8, 8, generator=generator) * 2 - 1
    eps = torch.randn(3, 1, 8, 8, generator=generator)
    seen = []

    def net(x, t, labels=None):
        seen.append(x)
        return torch.zeros_like(x, dtype=torch.bfloat16)

    ab32 = gather(SCHEDULE.alpha_bar.float(), t, 4)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = training_loss(net, x0, t, eps, ab32, prediction="edm", sigma_data=sd)
    ab = AB64[t].view(-1, 1, 1, 1)
    sigma = sigma_of(ab)
    c_skip, c_out, c_in, _ = paper(sigma, sd)
    y = x0.double() + sigma * eps.double()
    assert seen[0].dtype == torch.float32 and loss.dtype == torch.float32
    assert torch.allclose(seen[0].double(), c_in * y, rtol=1e-5, atol=1e-6)
    expected = (((x0 - c_skip * y) / c_out) ** 2).flatten(1).mean(1)
    assert torch.allclose(loss.double(), expected, rtol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("prediction", ["edm", "v"])
def test_the_training_step_uses_the_preconditioning_and_the_edm_weight(prediction):
    """One step of make_trainer with sigma_data 0.3 against the loss written out here."""
    sd = 0.3
    cfg = from_dict(
        {"model": {"base_channels": 8, "channel_mult": [1, 2], "num_res_blocks": 1,
                   "attention_resolutions": [4], "num_groups": 4, "dropout": 0.0},
         "diffusion": {"prediction": prediction, "loss_weight": "edm", "sigma_data": sd},
         "train": {"precision": "fp32", "seed": 7, "t_sampling": "uniform"}},
        base=load_preset("digits"),
    )  # fmt: skip
    trainer = make_trainer(cfg, torch.device("cpu"))
    perturb = torch.Generator().manual_seed(1)
    with torch.no_grad():  # off the zero-initialised output layer, so the input matters
        for p in trainer.model.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=perturb))
    before = copy.deepcopy(trainer.model)
    x0 = torch.rand(6, 1, 8, 8, generator=torch.Generator().manual_seed(2)) * 2 - 1
    loss, _, _ = trainer.step(5, x0, None)
    g = seeded_generator(7, 5, 2)
    t = torch.randint(1000, (6,), generator=g)
    eps = torch.randn(x0.shape, generator=g)
    ab = AB64[t].view(-1, 1, 1, 1)
    sigma = sigma_of(ab)
    c_skip, c_out, c_in, lam = paper(sigma, sd)
    y = x0.double() + sigma * eps.double()
    x_in = (c_in * y) if prediction == "edm" else ab.sqrt() * y
    with torch.no_grad():
        out = before(x_in.float(), t).double()
    if prediction == "edm":
        target, weight = (x0 - c_skip * y) / c_out, 1.0
    else:
        target = ab.sqrt() * eps - (1 - ab).sqrt() * x0
        weight = (lam / (ab / (1 - ab) + 1)).flatten()
    expected = (weight * ((out - target) ** 2).flatten(1).mean(1)).mean()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-4)


class LinearEDM(torch.nn.Module):
    """F = 0.7 * input: x0_hat = (c_skip + 0.7 c_out c_in) y."""

    def __init__(self) -> None:
        super().__init__()
        self.unused = torch.nn.Parameter(torch.zeros(1))

    def forward(self, x, t, labels=None):
        return 0.7 * x


class SameAsX0(torch.nn.Module):
    """The same x0_hat as LinearEDM at sigma_data sd, as an x0-prediction network on x_t."""

    def __init__(self, sd: float) -> None:
        super().__init__()
        self.unused, self.sd = torch.nn.Parameter(torch.zeros(1)), sd

    def forward(self, x, t, labels=None):
        ab = AB64[t].view(-1, 1, 1, 1)
        c_skip, c_out, c_in, _ = paper(sigma_of(ab), self.sd)
        return ((c_skip + 0.7 * c_out * c_in) * x.double() / ab.sqrt()).float()


def test_bits_per_dim_uses_the_preconditioning():
    images = torch.randint(0, 256, (4, 1, 4, 4), generator=torch.Generator().manual_seed(3))
    images = images.to(torch.uint8)
    kw = {"clip": False, "num_timesteps": 20}
    edm = bits_per_dim(LinearEDM(), SCHEDULE, images, prediction="edm", sigma_data=0.3, **kw)
    x0 = bits_per_dim(SameAsX0(0.3), SCHEDULE, images, prediction="x0", **kw)
    assert edm.mean == pytest.approx(x0.mean, rel=1e-4)


def test_the_validation_loss_uses_the_preconditioning():
    """F = 0 has loss mean(target^2), target = (x0 - c_skip y) / c_out, on the validation grid."""
    from ddpm.data import load_dataset
    from ddpm.train.validation import VALIDATION_SEED, validation_loss

    class Zero(LinearEDM):
        def forward(self, x, t, labels=None):
            return torch.zeros_like(x)

    base = load_preset("digits")
    data = load_dataset(base.data, "test")
    n, sd = 32, 0.3
    t = torch.linspace(0, 999, n).round().long()
    eps = torch.randn((n, *data.images.shape[1:]), generator=seeded_generator(VALIDATION_SEED))
    x0 = data.images[:n].double() / 127.5 - 1
    ab = AB64[t].view(-1, 1, 1, 1)
    sigma = sigma_of(ab)
    c_skip, c_out, _, _ = paper(sigma, sd)
    target = (x0 - c_skip * (x0 + sigma * eps.double())) / c_out
    expected = (target**2).flatten(1).mean(1).mean().item()
    config = from_dict({"diffusion": {"prediction": "edm", "loss_weight": "edm",
                                      "sigma_data": sd}}, base=base)  # fmt: skip
    assert validation_loss(Zero(), data, config, num_images=n) == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("value", [0, -0.5, float("inf"), float("nan")])
def test_sigma_data_must_be_positive_and_finite(value):
    with pytest.raises(DDPMError, match=r"^diffusion\.sigma_data must be a finite number > 0"):
        from_dict({"diffusion": {"sigma_data": value}})


@pytest.mark.slow
def test_edm_trains_and_samples_end_to_end_on_digits(tmp_path: Path):
    out = tmp_path / "edm"
    settings = [*TINY_MODEL, "model.dropout=0.0", "train.num_steps=20", "train.batch_size=16",
                "train.log_every=5", "train.warmup_steps=5", "train.checkpoint_every=20",
                "train.sample_every=20", "train.num_sample_images=4", "sample.steps=5",
                "diffusion.prediction=edm", "diffusion.loss_weight=edm",
                "train.t_sampling=lognormal", "train.precision=fp32"]  # fmt: skip
    assert (
        main(["train", "--dataset", "digits", "--out", str(out), "--quiet", *sets(settings)]) == 0
    )
    rows = (out / "log.csv").read_text().strip().splitlines()[1:]
    losses = [float(r.split(",")[1]) for r in rows]
    assert all(0 < loss < 10 for loss in losses), losses  # F's target has unit variance
    val = (out / "val_loss.csv").read_text().strip().splitlines()[1:]
    assert 0 < float(val[-1].split(",")[1]) < 10
    npz = tmp_path / "s.npz"
    code = main(["sample", "--run", str(out), "--n", "6", "--sampler", "dpmpp-2m", "--steps",
                 "5", "--out", str(tmp_path / "g.png"), "--npz", str(npz), "--quiet"])  # fmt: skip
    assert code == 0
    arr = np.load(npz)["arr_0"]
    assert arr.dtype == np.uint8 and arr.shape == (6, 8, 8, 1) and arr.std() > 0
