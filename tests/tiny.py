"""Shared settings for tests that train: a U-Net small enough to train in seconds on digits."""

from __future__ import annotations

TINY_MODEL = [
    "model.base_channels=8",
    "model.channel_mult=[1,2]",
    "model.num_res_blocks=1",
    "model.attention_resolutions=[4]",
    "model.num_groups=4",
]


def sets(pairs: list[str]) -> list[str]:
    """['a.b=1', ...] -> ['--set', 'a.b=1', ...] for ddpm.cli.main."""
    return [arg for pair in pairs for arg in ("--set", pair)]
