"""A wall-clock training budget: parsing, the learning rate it drives, and a run that stops at it."""

from __future__ import annotations

import csv
import math

import pytest
from tiny import TINY_MODEL, sets

from ddpm.checkpoint import list_checkpoints, load_checkpoint
from ddpm.cli import main
from ddpm.config import TrainConfig, parse_duration
from ddpm.errors import DDPMError
from ddpm.train import lr_at
from ddpm.train.budget import TimeBudget


@pytest.mark.parametrize(
    "text, seconds", [("90s", 90), ("20m", 1200), ("2h", 7200), ("1h30m", 5400), ("0.5m", 30)]
)
def test_durations(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["20", "m", "20 minutes", "-5m", "0s", "1d"])
def test_bad_durations_name_the_key(text):
    with pytest.raises(DDPMError, match="train.time_budget"):
        TrainConfig(time_budget=text)


def test_the_cosine_follows_the_budget_fraction_without_a_jump_after_warm_up():
    train = TrainConfig(lr=1e-3, warmup_steps=10, lr_schedule="cosine", time_budget="10m")
    assert lr_at(4, train, fraction=0.0) == pytest.approx(1e-3 * 5 / 10)
    assert lr_at(500, train, fraction=0.5) == pytest.approx(0.5e-3)
    assert lr_at(500, train, fraction=1.0) == pytest.approx(0.0, abs=1e-18)
    # continuous where warm-up ends, whatever fraction of the budget it took
    assert lr_at(9, train, fraction=0.2) == pytest.approx(lr_at(10, train, fraction=0.2))
    assert lr_at(9, train, fraction=0.2) == pytest.approx(
        1e-3 * 0.5 * (1 + math.cos(0.2 * math.pi))
    )


def test_the_budget_extrapolates_from_its_last_agreed_reading():
    budget = TimeBudget(100.0, spent_at_anchor=10.0, anchor_step=0)
    budget.anchor(10, 30.0)  # 2 s per step
    assert budget.spent(15) == pytest.approx(40.0) and budget.fraction(15) == pytest.approx(0.4)
    assert not budget.exhausted(44) and budget.exhausted(45)  # 30 + 35 x 2 = 100


@pytest.mark.slow
def test_a_run_stops_at_its_budget_saves_and_resumes_nothing_more(tmp_path, capsys):
    out = tmp_path / "run"
    args = ["train", "--dataset", "digits", "--out", str(out), "--quiet",
            *sets([*TINY_MODEL, "train.batch_size=8", "train.num_steps=1000000",
                   "train.log_every=5", "train.checkpoint_every=100000", "train.val_images=0",
                   "train.sample_every=100000", "train.num_sample_images=2", "sample.steps=2",
                   "train.time_budget=4s", "train.warmup_steps=0", "train.lr_schedule=cosine"])]  # fmt: skip
    assert main(args) == 0
    (final,) = list_checkpoints(out / "checkpoints")
    checkpoint = load_checkpoint(final)
    with open(out / "log.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    seconds_per_step = float(rows[-1]["elapsed_s"]) / checkpoint.step
    # stopped within about a step of the budget, and the checkpoint says what it spent
    assert 4.0 <= checkpoint.train_seconds <= 4.0 + 3 * seconds_per_step + 0.5
    assert int(rows[-1]["step"]) == checkpoint.step
    assert (out / "samples" / f"step_{checkpoint.step:08d}.png").is_file()
    # the rate decayed with the budget: from 1e-4 towards 0 at the end
    lrs = [float(r["lr"]) for r in rows]
    assert lrs == sorted(lrs, reverse=True) and lrs[-1] < 0.1 * lrs[0]
    capsys.readouterr()
    assert main(["train", "--resume", str(out)]) == 2
    assert "spent its train.time_budget=4s" in capsys.readouterr().err
