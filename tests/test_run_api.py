"""A loaded run's denoiser and metrics follow the run's own config (prediction type, clipping,
sigma_data, learned variance); the bare-network forms must be told the prediction type."""

from __future__ import annotations

import pytest
import torch
from tiny import TINY_MODEL

from ddpm.builders import build_model, build_schedule
from ddpm.config import from_dict, load_preset
from ddpm.config_yaml import parse_overrides
from ddpm.denoiser import make_denoiser, make_variance_denoiser
from ddpm.loaded_run import LoadedRun
from ddpm.metrics.likelihood import bits_per_dim

# each run config, and the same settings spelled out for the bare-network form
RUNS = {
    "v": ({"prediction": "v"}, dict(prediction="v", variance="beta_tilde", clip=True)),
    "edm": (
        {"prediction": "edm", "sigma_data": 0.3, "clip_denoised": False},
        dict(prediction="edm", variance="beta_tilde", clip=False, sigma_data=0.3),
    ),
    "x0-learned": (
        {"prediction": "x0", "variance": "learned_range", "loss": "hybrid"},
        dict(prediction="x0", variance="learned_range", clip=True),
    ),
}


def random_run(diffusion: dict) -> LoadedRun:
    """A digits-sized tiny run with every weight random (the zero-initialised output layer would
    make every prediction type output 0), T = 50."""
    overrides = parse_overrides(TINY_MODEL)
    overrides["diffusion"] = {**diffusion, "num_timesteps": 50}
    config = from_dict(overrides, base=load_preset("digits"))
    torch.manual_seed(0)
    net = build_model(config)
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn_like(p) * 0.2)
    return LoadedRun(net.eval(), build_schedule(config), config, step=0)


def images(n: int = 6) -> torch.Tensor:
    generator = torch.Generator().manual_seed(1)
    return torch.randint(0, 256, (n, 1, 8, 8), generator=generator, dtype=torch.uint8)


@pytest.mark.slow
@pytest.mark.parametrize("name", RUNS)
def test_bits_per_dim_of_a_run_equals_the_explicit_settings(name):
    diffusion, explicit = RUNS[name]
    run = random_run(diffusion)
    kw = dict(num_timesteps=3, precision="fp32")
    from_run = bits_per_dim(run, images(), **kw)
    spelled_out = bits_per_dim(run.net, run.schedule, images(), **explicit, **kw)
    assert from_run == spelled_out
    if explicit["variance"] != "learned_range":  # the eps default it replaces scores otherwise
        as_eps = bits_per_dim(
            run.net, run.schedule, images(), **{**explicit, "prediction": "eps"}, **kw
        )
        assert abs(as_eps.mean - from_run.mean) > 0.01 * from_run.mean


@pytest.mark.parametrize("name", RUNS)
def test_the_denoiser_of_a_run_uses_its_config(name):
    diffusion, explicit = RUNS[name]
    run = random_run(diffusion)
    x_t = torch.randn(3, 1, 8, 8, generator=torch.Generator().manual_seed(2))
    t = torch.tensor([3, 20, 49])
    options = dict(
        prediction=explicit["prediction"], clip=explicit["clip"],
        sigma_data=explicit.get("sigma_data", 0.5), precision="fp32",
    )  # fmt: skip
    learned = explicit["variance"] == "learned_range"
    expected = make_denoiser(run.net, run.schedule, learned_variance=learned, **options)(x_t, t)
    assert torch.equal(run.denoiser(precision="fp32")(x_t, t), expected)
    if learned:
        pair = make_variance_denoiser(run.net, run.schedule, **options)(x_t, t)
        got = run.denoiser(precision="fp32", with_variance=True)(x_t, t)
        assert all(torch.equal(a, b) for a, b in zip(got, pair))


def test_the_bare_network_forms_need_the_prediction_type():
    run = random_run({"prediction": "v"})
    with pytest.raises(TypeError, match="prediction"):
        bits_per_dim(run.net, run.schedule, images(), num_timesteps=1)
    with pytest.raises(TypeError, match="prediction"):
        make_denoiser(run.net, run.schedule)
    with pytest.raises(TypeError, match="prediction"):
        make_variance_denoiser(run.net, run.schedule)
    with pytest.raises(TypeError):  # a run brings its own: no contradicting it
        bits_per_dim(run, images(), prediction="eps")
