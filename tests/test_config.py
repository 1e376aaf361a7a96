"""The configuration's own promises: its defaults form a valid run, the U-Net is checked against
the data at config time, the keys --resume may change are the fields marked RESUMABLE, and its
name literals are the registries' names."""

from __future__ import annotations

import dataclasses
import typing

import pytest
import torch

from ddpm.builders import build_model
from ddpm.config import (
    RESUMABLE,
    RESUMABLE_KEYS,
    SECTIONS,
    Precision,
    RunConfig,
    SamplerName,
    from_dict,
    load_preset,
    to_dict,
)
from ddpm.errors import DDPMError
from ddpm.precision import PRECISIONS
from ddpm.samplers import SAMPLERS, is_sampler_name


def test_the_defaults_are_the_digits_run_and_build():
    config, digits = to_dict(RunConfig()), to_dict(load_preset("digits"))
    assert config["data"] == digits["data"] and config["model"] == digits["model"]
    net = build_model(RunConfig())
    assert net(torch.zeros(2, 1, 8, 8), torch.tensor([0, 999])).shape == (2, 1, 8, 8)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"model": {"attention_resolutions": [16]}}, "model.attention_resolutions [16] are not"),
        ({"data": {"image_size": 7}}, "image size 7 cannot be halved 1 times"),
        ({"model": {"num_groups": 5}}, "must be divisible by model.num_groups (5)"),
    ],
)
def test_a_unet_that_cannot_take_the_data_is_refused_at_config_time(overrides, message):
    with pytest.raises(DDPMError) as error:
        from_dict(overrides)
    assert message in str(error.value)


def test_the_resumable_keys_are_the_fields_marked_resumable():
    marked = {
        f"{name}.{f.name}"
        for name, cls in SECTIONS.items()
        for f in dataclasses.fields(cls)
        if f.metadata == RESUMABLE
    }
    assert RESUMABLE_KEYS == marked and "train.num_steps" in marked
    assert "train.seed" not in RESUMABLE_KEYS and "model.base_channels" not in RESUMABLE_KEYS


def test_the_precision_names_are_the_autocast_s_and_sampler_names_are_recognised():
    assert set(typing.get_args(Precision)) == set(PRECISIONS)
    assert [name for name in SAMPLERS if is_sampler_name(name)] == list(SAMPLERS)
    assert set(typing.get_args(SamplerName)) == set(SAMPLERS)  # so the guard is exact
    assert not is_sampler_name("DDIM") and not is_sampler_name("")


def test_a_config_built_in_python_is_checked_against_its_literal_choices():
    from ddpm.config import SampleConfig
    from ddpm.generate import sample_config

    with pytest.raises(DDPMError, match=r"^sample.sampler must be one of \['ddpm', .*got 'bogus'"):
        SampleConfig(sampler="bogus")  # type: ignore[arg-type]
    with pytest.raises(DDPMError, match="^sample.precision must be one of"):
        sample_config(RunConfig(), precision="fp64")  # type: ignore[arg-type]
    assert sample_config(RunConfig(), sampler="heun").spacing == "karras"
