"""Real PyTorch distributed training (torchrun, gloo, 2 processes on the CPU) against one process
with the same global batch; and a training process killed with SIGKILL, then resumed."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from tiny import TINY_MODEL, sets

from ddpm.cli import main

TINY = [
    *TINY_MODEL,
    # dropout masks are drawn for the global batch and sliced per process, like the noise: with
    # every process drawing the same masks for its rows this test failed
    "model.dropout=0.1",
    # non-leaky augmentation draws for the global batch too (ddpm.augment)
    "data.augment_p=0.5",
    "model.augment_dim=6",
    # fp32: one process and two must agree to float rounding; bf16 rounds the two halves of a
    # batch differently from the whole, far beyond the tolerance below
    "train.precision=fp32",
    "train.log_every=1",
    "train.warmup_steps=2",
    "train.lr_schedule=constant",
    "train.checkpoint_every=6",
    "train.sample_every=100000",
    "train.num_sample_images=2",
    "sample.steps=2",
    "train.val_images=32",
    "data.random_flip=true",
]


def torchrun(*args: str) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        "-m",
        "ddpm",
        *args,
    ]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]


def losses(run: Path) -> list[float]:
    with open(run / "log.csv", newline="") as f:
        return [float(row["loss"]) for row in csv.DictReader(f)]


def weights(path: Path) -> dict[str, torch.Tensor]:
    return {k: v for k, v in load_file(path).items() if k.startswith(("model.", "ema."))}


def assert_close(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.allclose(a[key], b[key], rtol=1e-4, atol=1e-5), key


@pytest.mark.slow
def test_two_process_ddp_matches_one_process_and_resumes_either_way(tmp_path):
    single, ddp = tmp_path / "single", tmp_path / "ddp"
    base = ["train", "--dataset", "digits", "--quiet", *sets(TINY)]
    assert (
        main([*base, "--out", str(single), *sets(["train.batch_size=16", "train.num_steps=12"])])
        == 0
    )
    torchrun(*base, "--out", str(ddp), *sets(["train.batch_size=8", "train.num_steps=6"]))
    # the same global batches and noise: the same loss curve up to summation order
    assert losses(ddp) == pytest.approx(losses(single)[:6], rel=1e-4)
    assert_close(
        weights(ddp / "checkpoints" / "step_00000006.safetensors"),
        weights(single / "checkpoints" / "step_00000006.safetensors"),
    )
    # DDP checkpoint -> one process with the same global batch
    assert (
        main(
            [
                "train",
                "--resume",
                str(ddp),
                "--quiet",
                *sets(["train.batch_size=16", "train.num_steps=12"]),
            ]
        )
        == 0
    )
    assert_close(
        weights(ddp / "checkpoints" / "step_00000012.safetensors"),
        weights(single / "checkpoints" / "step_00000012.safetensors"),
    )
    # one-process checkpoint -> two processes
    back = tmp_path / "back"
    assert (
        main([*base, "--out", str(back), *sets(["train.batch_size=16", "train.num_steps=6"])]) == 0
    )
    torchrun(
        "train",
        "--resume",
        str(back),
        "--quiet",
        *sets(["train.batch_size=8", "train.num_steps=12"]),
    )
    assert_close(
        weights(back / "checkpoints" / "step_00000012.safetensors"),
        weights(single / "checkpoints" / "step_00000012.safetensors"),
    )
    assert losses(back) == pytest.approx(losses(single), rel=1e-4)


@pytest.mark.slow
def test_sigkill_then_resume_gives_the_uninterrupted_weights(tmp_path):
    args = [
        "--quiet",
        "--deterministic",
        *sets(
            [
                *TINY,
                "train.batch_size=16",
                "train.num_steps=60",
                "train.log_every=5",
                "train.checkpoint_every=5",
                "model.dropout=0.1",
            ]
        ),
    ]
    reference, killed = tmp_path / "reference", tmp_path / "killed"
    assert main(["train", "--dataset", "digits", "--out", str(reference), *args]) == 0
    command = [
        sys.executable,
        "-m",
        "ddpm",
        "train",
        "--dataset",
        "digits",
        "--out",
        str(killed),
        *args,
    ]
    process = subprocess.Popen(command)
    deadline = time.monotonic() + 120
    log = killed / "log.csv"
    while time.monotonic() < deadline and (
        not log.exists() or len(log.read_text().splitlines()) < 4
    ):
        time.sleep(0.05)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL
    assert main(["train", "--resume", str(killed), *args]) == 0
    final = "step_00000060.safetensors"
    a, b = weights(reference / "checkpoints" / final), weights(killed / "checkpoints" / final)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert [r.split(",")[0] for r in log.read_text().splitlines()] == [
        r.split(",")[0] for r in (reference / "log.csv").read_text().splitlines()
    ]


@pytest.mark.slow
def test_sigterm_under_torchrun_stops_every_process_at_the_same_step(tmp_path):
    """torchrun forwards SIGTERM to its workers; they agree (one vote per step) on the step to
    stop after, the main process saves it, and the run resumes from it."""
    out = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               "--nproc_per_node=2", "-m", "ddpm", "train", "--dataset", "digits", "--quiet",
               "--out", str(out), *sets([*TINY, "train.batch_size=8", "train.num_steps=1000000",
                                         "train.log_every=100000",
                                         "train.checkpoint_every=100000"])]  # fmt: skip
    process = subprocess.Popen(command, env=env, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not (out / "log.csv").exists():
        time.sleep(0.1)
    time.sleep(4)
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=60)
    stops = [line for line in err.splitlines() if "stopped by SIGTERM at step" in line]
    assert len(stops) == 2, err[-3000:]  # both workers, at one step
    steps = {int(line.split(" at step ")[1].split(";")[0]) for line in stops}
    assert len(steps) == 1, stops
    step = steps.pop()
    assert (out / "checkpoints" / f"step_{step:08d}.safetensors").is_file()
    assert (
        main(
            [
                "train",
                "--resume",
                str(out),
                "--quiet",
                *sets(["train.batch_size=16", f"train.num_steps={step + 2}"]),
            ]
        )  # fmt: skip
        == 0
    )
