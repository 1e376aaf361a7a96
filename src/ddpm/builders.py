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
    """The U-Net; with diffusion.variance=learned_range it outputs 2C channels (prediction, then
    the variance interpolation), else C, with the state-dict keys and shapes of earlier versions."""
    channels = config.data.channels
    learned = config.diffusion.variance == "learned_range"
    return build_unet(
        config.model,
        image_size=config.data.image_size,
        in_channels=channels,
        out_channels=2 * channels if learned else channels,
    )
