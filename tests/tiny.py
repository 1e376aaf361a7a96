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


def untrained_featnet(path: Path) -> Path:
    """A small feature network with seeded random weights, saved as a real featnet file: a
    feature space for tests that need a quality curve but not a meaningful one (training one
    takes half a minute)."""
    import torch

    from ddpm.metrics.featnet import FeatNetInfo, FeatureNet, save_featnet

    torch.manual_seed(0)
    net = FeatureNet(1, 10, widths=(8, 16)).eval()
    info = FeatNetInfo(name="digits-random", dataset="digits", image_size=8, channels=1,
                       num_classes=10, widths=(8, 16), test_accuracy=0.0, epochs=0,
                       train_images=0)  # fmt: skip
    return save_featnet(net, info, path)


def quality_pairs(featnet: Path) -> list[str]:
    """--set pairs for a quality point at every 4th step, scored cheaply in `featnet`."""
    return ["train.eval_every=4", "train.eval_n=32", "train.eval_steps=2",
            "train.eval_max_fraction=1000", f"train.eval_features={featnet}"]  # fmt: skip
