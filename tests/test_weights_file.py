"""`ddpm export --format safetensors`: the EMA weights and config alone, a fraction of a
checkpoint, sampled with `ddpm sample --weights` exactly as the run; damaged, foreign and
misused files are one line each."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

from ddpm.checkpoint import list_checkpoints, load_checkpoint
from ddpm.cli import main
from ddpm.errors import DDPMError
from ddpm.loaded_run import load_run
from ddpm.weights_file import FORMAT, load_weights


@pytest.fixture
def weights(tiny_run, tmp_path):
    path = tmp_path / "tiny.safetensors"
    assert (
        main(["export", "--run", str(tiny_run), "--format", "safetensors", "--out", str(path)]) == 0
    )
    return path


def test_the_weights_file_holds_the_ema_and_config_only(tiny_run, weights, capsys):
    checkpoint = load_checkpoint(list_checkpoints(tiny_run / "checkpoints")[-1])
    tensors = load_file(weights)
    assert tensors.keys() == checkpoint.state_dict("ema").keys()  # the U-Net's own names
    assert all(torch.equal(tensors[k], v) for k, v in checkpoint.state_dict("ema").items())
    loaded = load_weights(weights)
    assert loaded.config == checkpoint.config and loaded.step == checkpoint.step
    assert not loaded.state_dict("model") and not loaded.state_dict("optim")
    # raw weights, EMA and AdamW's two moments against the EMA alone: about a quarter
    fraction = weights.stat().st_size / checkpoint.path.stat().st_size
    assert fraction < 0.3, fraction
    again = ["export", "--run", str(tiny_run), "--format", "safetensors", "--out"]
    assert main([*again, str(weights.with_name("again.safetensors"))]) == 0
    assert "the checkpoint" in capsys.readouterr().out  # both sizes, as measured


def test_sample_with_weights_makes_the_runs_grid(tiny_run, weights, tmp_path):
    common = ["--n", "4", "--steps", "3", "--quiet", "--precision", "fp32"]
    by_run, by_weights = tmp_path / "run.png", tmp_path / "weights.png"
    assert main(["sample", "--run", str(tiny_run), "--out", str(by_run), *common]) == 0
    assert main(["sample", "--weights", str(weights), "--out", str(by_weights), *common]) == 0
    assert np.array_equal(np.asarray(Image.open(by_run)), np.asarray(Image.open(by_weights)))
    assert main(["sample", "--run", str(weights), "--out", str(by_run), *common]) == 0  # a file
    run, exported = load_run(tiny_run), load_run(weights)
    assert exported.step == run.step and exported.config == run.config
    assert all(torch.equal(a, b) for a, b in zip(run.net.state_dict().values(),
                                                 exported.net.state_dict().values()))  # fmt: skip


def test_eval_with_weights_writes_beside_the_file(weights, capsys):
    args = ["eval", "--weights", str(weights), "--metrics", "val-loss", "--quiet"]
    assert main([*args, "--bpd-n", "8", "--precision", "fp32"]) == 0
    assert (weights.parent / "eval" / "metrics.csv").is_file()


def _one_line_error(args: list[str], capsys) -> str:
    code = main(args)
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    return err


def test_damaged_foreign_and_misused_files_are_one_line(tiny_run, weights, tmp_path, capsys):
    sample = ["sample", "--out", str(tmp_path / "g.png"), "--n", "2", "--steps", "2", "--quiet"]
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(weights.read_bytes()[:-100])
    assert "corrupt" in _one_line_error([*sample, "--weights", str(truncated)], capsys)
    flipped = bytearray(weights.read_bytes())
    flipped[-5] ^= 1  # one bit of one weight
    (tmp_path / "flipped.safetensors").write_bytes(bytes(flipped))
    err = _one_line_error([*sample, "--weights", str(tmp_path / "flipped.safetensors")], capsys)
    assert "checksum mismatch" in err
    foreign = tmp_path / "foreign.safetensors"
    save_file({"w": torch.zeros(2)}, foreign, metadata={"format": "pt"})
    assert "not a ddpm weights file" in _one_line_error(
        [*sample, "--weights", str(foreign)], capsys
    )
    err = _one_line_error([*sample, "--weights", str(weights), "--no-ema"], capsys)
    assert "no raw (non-EMA) weights" in err
    with pytest.raises(SystemExit):  # argparse: not both, and a folder is a run
        main([*sample, "--weights", str(weights), "--run", str(tiny_run)])
    assert "not allowed with" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main([*sample, "--weights", str(tiny_run)])
    assert "is a folder" in capsys.readouterr().err


def test_a_weights_file_whose_config_does_not_check_is_refused(weights, tmp_path):
    """The config is checked by ddpm.config.from_dict, after the checksum (a file written with a
    valid digest around a bad config: another writer's, or a hand edit re-sealed)."""
    from ddpm.checkpoint import sealed

    metadata = {"format": FORMAT, "config": json.dumps({"model": {"block": "mlp"}}), "step": "4"}
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(sealed(load_file(weights), metadata))
    with pytest.raises(DDPMError, match="model.block"):
        load_weights(bad)


def test_export_to_a_name_that_is_not_safetensors_is_refused(tiny_run, tmp_path, capsys):
    args = ["export", "--run", str(tiny_run), "--format", "safetensors"]
    assert ".safetensors" in _one_line_error([*args, "--out", str(tmp_path / "w.pt")], capsys)
