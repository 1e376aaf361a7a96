"""Shared settings for tests that train: a U-Net small enough to train in seconds on digits, and a
run that writes little besides what a test checks. Files extend TINY_RUN with what they test (a
later `--set` of the same key wins)."""

from __future__ import annotations

from pathlib import Path

TINY_MODEL = [
    "model.base_channels=8",
    "model.channel_mult=[1,2]",
    "model.num_res_blocks=1",
    "model.attention_resolutions=[4]",
    "model.num_groups=4",
]

TINY_RUN = [
    *TINY_MODEL,
    "model.dropout=0.0",
    "train.num_steps=4",
    "train.batch_size=8",
    "train.log_every=2",
    "train.warmup_steps=2",
    "train.lr_schedule=constant",  # a 4-step cosine would end at a rate of 0
    "train.checkpoint_every=4",
    "train.sample_every=100000",
    "train.num_sample_images=2",
    "sample.steps=2",
]


def sets(pairs: list[str]) -> list[str]:
    """['a.b=1', ...] -> ['--set', 'a.b=1', ...] for ddpm.cli.main."""
    return [arg for pair in pairs for arg in ("--set", pair)]


def train_tiny(out: Path, *pairs: str, dataset: str = "digits") -> Path:
    """Train TINY_RUN (plus `pairs`) on `dataset` into `out` through the CLI; returns `out`."""
    from ddpm.cli import main

    args = ["train", "--dataset", dataset, "--out", str(out), "--quiet", *sets([*TINY_RUN, *pairs])]
    assert main(args) == 0, f"training {out} failed"
    return out
