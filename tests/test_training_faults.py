"""Training that stops cleanly: divergence, SIGTERM/SIGINT, precision options."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from tiny import TINY_RUN, sets

from ddpm.cli import main
from ddpm.config import from_dict
from ddpm.config_yaml import parse_overrides

TINY = [*TINY_RUN, "train.log_every=5"]
SETS = sets(TINY)


@pytest.mark.slow
def test_divergence_skips_bad_steps_then_stops_with_one_line(tmp_path, capsys):
    out = tmp_path / "nan"
    code = main(["train", "--dataset", "digits", "--out", str(out), "--quiet", *SETS,
                 "--set", "train.lr=1e12", "--set", "train.warmup_steps=0",
                 "--set", "train.grad_clip=0", "--set", "train.num_steps=30",
                 "--set", "train.checkpoint_every=5"])  # fmt: skip
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert "training diverged: 5 non-finite steps in a row from step" in err
    assert "(they were skipped)" in err
    # non-finite steps are skipped on the device, so whatever was saved holds finite weights
    from safetensors.torch import load_file

    for path in (out / "checkpoints").glob("*.safetensors"):
        assert all(t.isfinite().all() for k, t in load_file(path).items() if k.startswith("model."))


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_saves_a_checkpoint_and_the_run_resumes(tmp_path, signum):
    out = tmp_path / "stopped"
    args = [sys.executable, "-m", "ddpm", "train", "--dataset", "digits", "--out", str(out),
            "--quiet", *SETS, "--set", "train.num_steps=100000", "--set",
            "train.checkpoint_every=100000"]  # fmt: skip
    process = subprocess.Popen(args, stderr=subprocess.PIPE, text=True)
    log = out / "log.csv"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and (
        not log.exists() or len(log.read_text().splitlines()) < 2
    ):
        time.sleep(0.1)
    process.send_signal(signum)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 130, err
    assert f"stopped by {signal.Signals(signum).name} at step" in err
    step = int(err.split(" at step ")[1].split(";")[0])
    assert (out / "checkpoints" / f"step_{step:08d}.safetensors").is_file()
    assert main(["train", "--resume", str(out), "--quiet", "--set",
                 f"train.num_steps={step + 3}"]) == 0  # fmt: skip
    assert (out / "checkpoints" / f"step_{step + 3:08d}.safetensors").is_file()


def test_bf16_autocast_trains_on_the_cpu(tmp_path):
    out = tmp_path / "bf16"
    assert main(["train", "--dataset", "digits", "--out", str(out), "--quiet", *SETS,
                 "--set", "train.precision=bf16", "--set", "train.num_steps=5"]) == 0  # fmt: skip
    assert (out / "checkpoints" / "step_00000005.safetensors").is_file()


def test_fp16_needs_cuda(tmp_path, capsys):
    code = main(["train", "--dataset", "digits", "--out", str(tmp_path / "fp16"), "--quiet",
                 "--device", "cpu", *SETS, "--set", "train.precision=fp16",
                 "--set", "train.num_steps=5"])  # fmt: skip
    assert code == 2 and "fp16 needs a CUDA device" in capsys.readouterr().err


def test_numbers_without_a_dot_are_floats():
    config = from_dict(parse_overrides(["train.lr=1e-4", "train.ema_decay=0.99"]))
    assert config.train.lr == 1e-4 and isinstance(config.train.lr, float)


def test_unavailable_cuda_is_one_line(tmp_path, capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    code = main(["sample", "--run", str(tmp_path), "--device", "cuda"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1


def test_resume_of_a_finished_run_says_how_to_continue(tmp_path, capsys):
    out = tmp_path / "done"
    assert main(["train", "--dataset", "digits", "--out", str(out), "--quiet", *SETS,
                 "--set", "train.num_steps=2"]) == 0  # fmt: skip
    assert main(["train", "--resume", str(out)]) == 2
    assert "train.num_steps" in capsys.readouterr().err


def test_run_folder_paths_are_created(tmp_path):
    out = Path(tmp_path) / "deep" / "er" / "run"
    assert main(["train", "--dataset", "digits", "--out", str(out), "--quiet", *SETS,
                 "--set", "train.num_steps=1"]) == 0  # fmt: skip
    assert (out / "config.json").is_file()
