"""generate()'s Python interface: a LoadedRun and a SampleConfig built with sample_config; the
library's errors name parameters and config keys, never the CLI's flags."""

from __future__ import annotations

import pytest
import torch

import ddpm
from ddpm.errors import DDPMError
from ddpm.generate import generate, sample_config
from ddpm.initial_noise import initial_noise
from ddpm.interpolate import interpolation_noise
from ddpm.loaded_run import load_run


@pytest.fixture(scope="module")
def run(tiny_run):
    return load_run(tiny_run)


def test_sample_config_replaces_fields_and_picks_the_samplers_own_spacing(run):
    config = run.config
    assert sample_config(config) == config.sample  # digits: ddim, its uniform spacing
    heun = sample_config(config, sampler="heun", steps=7)
    assert (heun.sampler, heun.steps, heun.spacing) == ("heun", 7, "karras")
    assert sample_config(config, sampler="heun", spacing="uniform").spacing == "uniform"
    assert sample_config(config, batch_size=3).batch_size == 3
    assert sample_config(config, eta=0.0).eta == 0.0  # 0 replaces, None keeps


@pytest.mark.parametrize(
    "changes, key",
    [({"eta": 1.5}, "sample.eta"), ({"steps": 0}, "sample.steps"),
     ({"batch_size": -1}, "sample.batch_size")],
)  # fmt: skip
def test_sample_config_refuses_a_bad_value_naming_its_key(run, changes, key):
    with pytest.raises(DDPMError, match=key.replace(".", r"\.")):
        sample_config(run.config, **changes)


@pytest.mark.parametrize(
    "kwargs, message",
    [(dict(labels=torch.zeros(2, dtype=torch.long)), "labels need a class-conditional model"),
     (dict(guidance=2.0), "guidance needs labels"),
     (dict(n=0), "n must be >= 1, got 0")],
)  # fmt: skip
def test_library_errors_name_parameters_not_flags(run, kwargs, message):
    with pytest.raises(DDPMError) as error:
        generate(run, **{"n": 2, **kwargs, "progress": False})
    assert message in str(error.value) and "--" not in str(error.value)


def test_generate_defaults_to_the_runs_config_and_is_exported(run):
    images = ddpm.generate(run, n=2, progress=False)  # the run's own config.sample
    again = generate(run, sample_config(run.config), n=2, progress=False)
    assert images.shape == (2, 1, 8, 8) and torch.equal(images, again)


def test_interpolation_noise_runs_from_one_seeds_noise_to_the_others():
    noise = interpolation_noise((1, 2), 5, (1, 8, 8))
    assert noise.shape == (5, 1, 8, 8)
    assert torch.allclose(noise[0], initial_noise(1, (1, 8, 8), seed=1)[0], atol=1e-6)
    assert torch.allclose(noise[-1], initial_noise(1, (1, 8, 8), seed=2)[0], atol=1e-6)
