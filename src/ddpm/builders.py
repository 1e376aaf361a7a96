"""Build the schedule and the network a RunConfig describes."""

from __future__ import annotations

from .config import RunConfig
from .models import UNet, build_unet
from .schedules import Schedule, make_schedule


def build_schedule(config: RunConfig) -> Schedule:
    d = config.diffusion
    return make_schedule(
        d.schedule,
        d.num_timesteps,
        beta_start=d.beta_start,
        beta_end=d.beta_end,
        cosine_s=d.cosine_s,
    )


def build_model(config: RunConfig) -> UNet:
    return build_unet(
        config.model, image_size=config.data.image_size, in_channels=config.data.channels
    )
