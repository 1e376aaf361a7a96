"""Every user error gets one clear line on stderr and exit code 2, never a traceback, and loses no data."""

from __future__ import annotations

import pickle
import shutil
from pathlib import Path

import pytest
import torch
from tiny import TINY_MODEL, sets

from ddpm.cli import main

TINY = [
    *TINY_MODEL,
    "train.num_steps=4",
    "train.batch_size=8",
    "train.log_every=2",
    "train.checkpoint_every=2",
    "train.sample_every=4",
    "train.num_sample_images=2",
    "sample.steps=2",
]
SETS = sets(TINY)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("bad") / "run"
    assert main(["train", "--dataset", "digits", "--out", str(out), "--quiet", *SETS]) == 0
    return out


def fails_with(capsys, args: list[str], *fragments: str) -> str:
    code = main(args)
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert len(err.splitlines()) == 1, err
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in err, err
    return err


def test_unknown_dataset(capsys, tmp_path):
    fails_with(
        capsys, ["train", "--dataset", "nope", "--out", str(tmp_path / "x")], "unknown dataset"
    )


def test_unknown_preset(capsys, tmp_path):
    fails_with(
        capsys, ["train", "--preset", "nope", "--out", str(tmp_path / "x")], "unknown preset"
    )


def test_unknown_option(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--frobnicate"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "unrecognized arguments" in err


@pytest.mark.parametrize(
    "pair, fragment",
    [
        ("train.nope=1", "unknown config key"),
        ("nosection.lr=1", "unknown config section"),
        ("train.num_steps=abc", "train.num_steps must be an integer"),
        ("train.lr=fast", "train.lr must be of type float"),
        ("diffusion.schedule=zigzag", "diffusion.schedule must be one of"),
        ("train.compile=maybe", "train.compile must be true or false"),
        ("trainlr", "--set expects section.key=value"),
    ],
)
def test_bad_set(capsys, tmp_path, pair, fragment):
    fails_with(
        capsys,
        ["train", "--dataset", "digits", "--out", str(tmp_path / "x"), "--set", pair, "--dry-run"],
        fragment,
    )


def test_image_size_the_unet_cannot_take(capsys, tmp_path):
    fails_with(
        capsys,
        [
            "train",
            "--dataset",
            "digits",
            "--out",
            str(tmp_path / "x"),
            "--set",
            "model.channel_mult=[1,2,2,2,2]",
        ],
        "cannot be halved",
    )
    fails_with(
        capsys,
        ["train", "--dataset", "digits", "--out", str(tmp_path / "y"), "--set",
         "data.image_size=9"],
        "image size 9 cannot be halved",
    )  # fmt: skip


def test_bad_config_file(capsys, tmp_path):
    missing = tmp_path / "missing.yaml"
    fails_with(
        capsys,
        ["train", "--dataset", "digits", "--out", str(tmp_path / "x"), "--config", str(missing)],
        "config file not found",
    )
    broken = tmp_path / "broken.yaml"
    broken.write_text("train: [unclosed\n")
    fails_with(
        capsys,
        ["train", "--dataset", "digits", "--out", str(tmp_path / "x"), "--config", str(broken)],
        "not valid YAML",
    )


def test_run_folder_missing_or_without_checkpoint(capsys, tmp_path):
    fails_with(capsys, ["sample", "--run", str(tmp_path / "nowhere")], "run folder not found")
    (tmp_path / "empty").mkdir()
    fails_with(capsys, ["sample", "--run", str(tmp_path / "empty")], "no checkpoint in")
    fails_with(capsys, ["train", "--resume", str(tmp_path / "empty")], "not a run folder")


def test_existing_run_is_not_overwritten(capsys, run_dir):
    before = sorted(p.name for p in (run_dir / "checkpoints").iterdir())
    fails_with(
        capsys,
        ["train", "--dataset", "digits", "--out", str(run_dir), *SETS],
        "is not empty",
        "--resume",
    )
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == before


def test_resume_with_a_different_model_names_the_keys(capsys, run_dir):
    fails_with(
        capsys,
        ["train", "--resume", str(run_dir), "--set", "model.base_channels=16"],
        "cannot change model.base_channels",
    )


def test_bad_sample_options(capsys, run_dir, tmp_path):
    fails_with(capsys, ["sample", "--run", str(run_dir), "--steps", "5000"], "--steps must be")
    with pytest.raises(SystemExit) as exit_info:  # argparse's own one-line error
        main(["sample", "--run", str(run_dir), "--n", "0"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "argument --n: must be an integer >= 1" in err, err


def test_corrupt_checkpoint_is_refused_and_the_previous_one_offered(capsys, run_dir, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(run_dir, copy)
    newest = sorted((copy / "checkpoints").iterdir())[-1]
    newest.write_bytes(newest.read_bytes()[:-100])  # truncated
    err = fails_with(
        capsys, ["sample", "--run", str(copy)], "is corrupt", "previous good checkpoint"
    )
    assert "step_00000002" in err
    fails_with(capsys, ["sample", "--run", str(newest)], "is corrupt")
    blob = bytearray((run_dir / "checkpoints" / newest.name).read_bytes())
    blob[-5] ^= 0xFF  # one flipped bit in the tensor data
    newest.write_bytes(bytes(blob))
    fails_with(capsys, ["sample", "--run", str(newest)], "checksum mismatch")


def test_a_pickle_is_never_executed(capsys, tmp_path):
    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self):
            return (Path.touch, (marker,))

    folder = tmp_path / "evil" / "checkpoints"
    folder.mkdir(parents=True)
    (folder / "step_00000001.safetensors").write_bytes(pickle.dumps(Exploit()))
    fails_with(
        capsys, ["sample", "--run", str(tmp_path / "evil")], "corrupt or not a ddpm checkpoint"
    )
    assert not marker.exists()


def test_checkpoint_that_does_not_match_its_config(capsys, run_dir, tmp_path):
    import json

    from safetensors.torch import load, save

    source = sorted((run_dir / "checkpoints").iterdir())[-1]
    blob = source.read_bytes()
    header_len = int.from_bytes(blob[:8], "little")
    metadata = json.loads(blob[8 : 8 + header_len])["__metadata__"]
    config = json.loads(metadata["config"])
    config["model"]["base_channels"] = 16
    metadata["config"] = json.dumps(config)
    metadata["sha256"] = "0" * 64
    data = save(load(blob), metadata)  # a consistent version-2 file: digest of it with zeros
    import hashlib

    digest = hashlib.sha256(data).hexdigest().encode()
    bad = tmp_path / "mismatch.safetensors"
    bad.write_bytes(data.replace(b'"sha256":"' + b"0" * 64, b'"sha256":"' + digest))
    fails_with(capsys, ["sample", "--run", str(bad)], "does not match its model config")


@pytest.mark.skipif(torch.cuda.is_available(), reason="the refusal needs a machine without CUDA")
def test_cuda_without_a_cuda_device_is_one_line_naming_the_parameter(capsys):
    from ddpm.devices import resolve_device
    from ddpm.errors import DDPMError

    with pytest.raises(DDPMError, match="^device 'cuda' was asked for, but no CUDA device"):
        resolve_device("cuda")
    assert main(["bench", "--preset", "digits", "--device", "cuda"]) == 2
    assert "no CUDA device" in capsys.readouterr().err
