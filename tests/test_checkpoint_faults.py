"""A full disk, the best checkpoint and a repeatable validation loss."""

from __future__ import annotations

import pytest
import torch
from tiny import TINY_RUN, sets

from ddpm.checkpoint import list_checkpoints, load_checkpoint
from ddpm.cli import main
from ddpm.config import from_dict, load_preset
from ddpm.data import load_dataset
from ddpm.train import make_trainer
from ddpm.train.validation import validation_loss

TINY = [*TINY_RUN, "train.log_every=5", "train.checkpoint_every=5"]
SETS = sets(TINY)


def test_a_full_disk_stops_with_one_line_and_keeps_the_previous_checkpoint(
    tmp_path, tiny_fs, capsys
):
    probe = tmp_path / "probe"
    assert (
        main(
            [
                "train",
                "--dataset",
                "digits",
                "--out",
                str(probe),
                "--quiet",
                *SETS,
                "--set",
                "train.num_steps=5",
                "--set",
                "train.val_images=0",
            ]
        )
        == 0
    )
    size = (probe / "checkpoints" / "step_00000005.safetensors").stat().st_size
    disk = tiny_fs(int(size * 1.6) // 1024)  # room for one checkpoint, not for a second beside it
    capsys.readouterr()
    code = main(
        [
            "train",
            "--dataset",
            "digits",
            "--out",
            str(disk / "run"),
            "--quiet",
            *SETS,
            "--set",
            "train.num_steps=20",
            "--set",
            "train.val_images=0",
        ]
    )
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1, err
    assert "No space left on device" in err and "earlier checkpoints are intact" in err
    kept = list_checkpoints(disk / "run" / "checkpoints")
    assert [p.name for p in kept] == ["step_00000005.safetensors"]
    assert load_checkpoint(kept[0]).step == 5
    assert not list((disk / "run" / "checkpoints").glob(".*tmp*"))  # no half-written file left


def test_best_checkpoint_follows_the_lowest_validation_loss(tmp_path):
    out = tmp_path / "run"
    assert (
        main(
            [
                "train",
                "--dataset",
                "digits",
                "--out",
                str(out),
                "--quiet",
                *SETS,
                "--set",
                "train.num_steps=15",
                "--set",
                "train.val_images=64",
            ]
        )
        == 0
    )
    rows = [line.split(",") for line in (out / "val_loss.csv").read_text().strip().splitlines()[1:]]
    best_step = min(rows, key=lambda r: float(r[1]))[0]
    assert load_checkpoint(out / "checkpoints" / "best.safetensors").step == int(best_step)


def test_validation_loss_is_repeatable_and_depends_on_the_weights():
    config = from_dict({"model": {"base_channels": 8, "num_groups": 4}}, base=load_preset("digits"))
    torch.manual_seed(0)
    trainer = make_trainer(config, torch.device("cpu"))
    data = load_dataset(config.data, "test")
    first = validation_loss(trainer.ema, data, config, num_images=100, batch_size=32)
    again = validation_loss(trainer.ema, data, config, num_images=100, batch_size=64)
    assert first == pytest.approx(again, rel=1e-6) and first > 0
    with torch.no_grad():
        for p in trainer.ema.parameters():
            p.add_(0.05)
    assert validation_loss(trainer.ema, data, config, num_images=100) != pytest.approx(
        first, rel=1e-3
    )
