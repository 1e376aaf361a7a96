"""Sample quality measured while training: the CSV, the plot, best_fid.safetensors, the cost cap
and the notice when there is no feature space."""

from __future__ import annotations

import csv
import logging
from pathlib import Path

import pytest
import torch
from tiny import TINY_RUN, sets

from ddpm.checkpoint import load_checkpoint
from ddpm.cli import main
from ddpm.config import load_preset
from ddpm.data import load_dataset
from ddpm.metrics.featnet import FeatNetInfo, save_featnet, train_featnet
from ddpm.train.quality import fid_with_spread

TINY = [*TINY_RUN, "train.log_every=4", "train.checkpoint_every=100", "train.val_images=0",
        "train.eval_n=48", "train.eval_steps=4"]  # fmt: skip


@pytest.fixture(scope="module")
def featnet_file(tmp_path_factory) -> Path:
    data = load_preset("digits").data
    train = load_dataset(data, "train")
    net = train_featnet(train, epochs=2, batch_size=64, seed=0)
    info = FeatNetInfo(name="digits-q", dataset="digits", image_size=8, channels=1,
                       num_classes=10, widths=(32, 64, 128), test_accuracy=0.0, epochs=2,
                       train_images=len(train))  # fmt: skip
    return save_featnet(net, info, tmp_path_factory.mktemp("featnet") / "digits.safetensors")


def train(out: Path, *pairs: str) -> int:
    return main(["train", "--dataset", "digits", "--out", str(out), "--quiet",
                 *sets([*TINY, *pairs])])  # fmt: skip


def rows(out: Path) -> list[dict[str, str]]:
    with open(out / "eval" / "during_training.csv", newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.slow
def test_the_quality_curve_is_written_while_training(tmp_path, featnet_file, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))  # reference features cached here
    out = tmp_path / "run"
    assert train(out, "train.num_steps=12", "train.eval_every=4", "train.eval_max_fraction=1000",
                 f"train.eval_features={featnet_file}") == 0  # fmt: skip
    table = rows(out)
    assert [int(r["step"]) for r in table] == [4, 8, 12]
    assert [int(r["images_seen"]) for r in table] == [32, 64, 96]
    assert all(float(r["fid"]) > 0 and float(r["fid_std"]) > 0 for r in table)
    assert all(0 <= float(r["precision"]) <= 1 and r["sampler"] == "dpmpp-2m" for r in table)
    assert table[0]["feature_space"].startswith("featnet:digits-q@") and table[0]["nfe"] == "4"
    assert (out / "quality.png").stat().st_size > 0
    best = load_checkpoint(out / "checkpoints" / "best_fid.safetensors")
    assert best.step == int(min(table, key=lambda r: float(r["fid"]))["step"])


@pytest.mark.slow
def test_evaluations_over_their_share_of_the_time_are_skipped(
    tmp_path, featnet_file, monkeypatch, caplog
):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    out = tmp_path / "run"
    with caplog.at_level(logging.WARNING):
        assert train(out, "train.num_steps=12", "train.eval_every=2",
                     "train.eval_max_fraction=0.001", f"train.eval_features={featnet_file}") == 0  # fmt: skip
    assert len(rows(out)) == 1  # the first one, then the cap
    assert "over train.eval_max_fraction=0.001" in caplog.text


@pytest.mark.slow
def test_without_a_feature_space_training_goes_on_with_a_notice(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "empty-cache"))
    out = tmp_path / "run"
    with caplog.at_level(logging.WARNING):
        assert train(out, "train.num_steps=4", "train.eval_every=2") == 0
    assert "no evaluation during training" in caplog.text and "featnet train" in caplog.text
    assert not (out / "eval" / "during_training.csv").exists()


def test_bad_eval_options_are_one_line(tmp_path, capsys):
    for pair, fragment in [("train.eval_every=often", "train.eval_every"),
                           ("train.eval_every=0", "train.eval_every"),
                           ("train.eval_sampler=euler", "train.eval_sampler"),
                           ("train.eval_max_fraction=0", "eval_max_fraction")]:  # fmt: skip
        assert train(tmp_path / pair, "train.num_steps=2", pair) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and fragment in err


def test_fid_spread_shrinks_with_more_samples(generator):
    reference = torch.randn(2000, 8, generator=generator, dtype=torch.float64)
    spreads = []
    for n in (100, 1600):
        samples = torch.randn(n, 8, generator=generator, dtype=torch.float64) + 0.3
        spreads.append(fid_with_spread(samples, reference, seed=0)[1])
    assert spreads[1] < spreads[0]


def test_the_sampler_names_of_the_config_are_the_registry_s():
    import typing

    from ddpm.config import SamplerName
    from ddpm.samplers import SAMPLERS

    assert set(typing.get_args(SamplerName)) == set(SAMPLERS)


@pytest.mark.slow
def test_a_resume_drops_quality_rows_past_its_checkpoint(tmp_path, featnet_file, monkeypatch):
    """Rows written after the checkpoint a run resumes from are redone, not duplicated."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    out = tmp_path / "run"
    common = ["train.eval_every=2", "train.eval_max_fraction=1000", "train.checkpoint_every=4",
              "train.keep_checkpoints=5", f"train.eval_features={featnet_file}"]  # fmt: skip
    assert train(out, "train.num_steps=6", *common) == 0
    assert [int(r["step"]) for r in rows(out)] == [2, 4, 6]
    (out / "checkpoints" / "step_00000006.safetensors").unlink()  # as if killed after step 6's row
    with open(out / "eval" / "during_training.csv", "a") as f:
        f.write("8,64,1.0,0.5,48,dpmpp-2m,4,featnet")  # and a row torn by the kill
    assert main(["train", "--resume", str(out), "--quiet", *sets(["train.num_steps=8"])]) == 0
    assert [int(r["step"]) for r in rows(out)] == [2, 4, 6, 8]


@pytest.mark.slow
def test_evaluations_are_not_counted_as_training_time(tmp_path, featnet_file, monkeypatch):
    """train_seconds (checkpoint and CSV) leave the evaluations out: with evaluations taking most
    of the run, training seconds plus evaluation seconds still fit in the run's wall time."""
    import time

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    out = tmp_path / "run"
    started = time.perf_counter()
    assert train(out, "train.num_steps=12", "train.eval_every=4", "train.eval_n=2000",
                 "train.eval_max_fraction=1000", f"train.eval_features={featnet_file}") == 0  # fmt: skip
    wall = time.perf_counter() - started
    table = rows(out)
    evaluating = sum(float(r["eval_seconds"]) for r in table)
    final = load_checkpoint(out / "checkpoints" / "step_00000012.safetensors")
    assert evaluating > 0.5 * wall  # the evaluations dominate, so double counting would show
    assert final.train_seconds + evaluating <= wall
    assert float(table[-1]["train_seconds"]) <= final.train_seconds + 0.05  # rounded to 0.1 s
