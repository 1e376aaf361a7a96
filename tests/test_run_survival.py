"""Runs that cannot lose work (issue 13): pre-emption inside a log interval, one writer per run
folder, no overwritten runs, resume before the first and after the final checkpoint, a cosine
schedule that cannot jump, and damaged side files. Each test names what failed before the fix."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from tiny import TINY_RUN, sets

from ddpm.checkpoint import list_checkpoints, load_checkpoint
from ddpm.cli import main

TINY = [*TINY_RUN, "model.dropout=0.1", "train.checkpoint_every=4", "train.val_images=16"]


def command(out: Path, *extra: str, resume: bool = False) -> list[str]:
    head = ["--resume", str(out)] if resume else ["--dataset", "digits", "--out", str(out)]
    return [sys.executable, "-m", "ddpm", "train", *head, "--quiet", *sets(TINY), *extra]


def train(out: Path, *extra: str, resume: bool = False) -> int:
    return main(command(out, *extra, resume=resume)[3:])


def wait_for(condition, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def weights(out: Path, step: int) -> dict[str, torch.Tensor]:
    tensors = load_checkpoint(out / "checkpoints" / f"step_{step:08d}.safetensors").tensors
    return {k: v for k, v in tensors.items() if k.startswith(("model.", "ema."))}


def assert_same_weights(a: Path, b: Path, step: int) -> None:
    wa, wb = weights(a, step), weights(b, step)
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


@pytest.mark.slow
def test_sigterm_saves_at_once_whatever_log_every_is(tmp_path):
    """Before: the stop waited for the next log line (here 100,000 steps away), so a SIGKILL a
    few seconds after SIGTERM (a cluster's grace period) left no checkpoint at all."""
    out = tmp_path / "run"
    process = subprocess.Popen(
        command(
            out,
            *sets(
                [
                    "train.num_steps=1000000",
                    "train.log_every=100000",
                    "train.checkpoint_every=100000",
                ]
            ),
        ),  # fmt: skip
        stderr=subprocess.PIPE,
        text=True,
    )
    wait_for(lambda: (out / "log.csv").exists())
    time.sleep(3)  # a few steps into training
    process.send_signal(signal.SIGTERM)
    try:
        _, err = process.communicate(timeout=10)  # then the scheduler's SIGKILL
    except subprocess.TimeoutExpired:
        process.kill()
        pytest.fail("still running 10 s after SIGTERM")
    assert process.returncode == 130, err
    step = int(err.split(" at step ")[1].split(";")[0])
    assert step > 0 and "saved" in err
    assert [load_checkpoint(p).step for p in list_checkpoints(out / "checkpoints")] == [step]
    rows = (out / "log.csv").read_text().splitlines()
    assert rows[-1].split(",")[0] == str(step)  # the partial log interval is logged too


@pytest.mark.slow
def test_a_second_writer_is_refused_naming_the_first(tmp_path, capsys):
    """Before: two `train --resume` on one folder both ran and interleaved their checkpoints."""
    out = tmp_path / "run"
    assert train(out, *sets(["train.num_steps=2"])) == 0
    first = subprocess.Popen(
        command(out, *sets(["train.num_steps=1000000"]), resume=True), stderr=subprocess.DEVNULL
    )
    try:
        lock = out / ".lock"
        wait_for(lambda: lock.exists() and f"process {first.pid}" in lock.read_text())
        capsys.readouterr()
        assert train(out, *sets(["train.num_steps=1000000"]), resume=True) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and f"in use by process {first.pid}" in err
        # --overwrite must not delete the files of a run that is training
        assert train(out, "--overwrite", *sets(["train.num_steps=1"])) == 2
        assert "in use by" in capsys.readouterr().err
        assert (out / "checkpoints" / "step_00000002.safetensors").is_file()
    finally:
        first.kill()
        first.wait()
    # the OS released the killed holder's lock: the run goes on
    assert train(out, *sets(["train.num_steps=6"]), resume=True) == 0


def test_a_new_run_never_overwrites_another(tmp_path, capsys):
    """Before: only checkpoints/step_* was looked for; config.json, logs, samples and
    best.safetensors of an earlier run were overwritten."""
    out = tmp_path / "run"
    out.mkdir()
    (out / "config.json").write_text("{}")
    (out / "notes.txt").write_text("mine")
    assert train(out, *sets(["train.num_steps=2"])) == 2
    err = capsys.readouterr().err
    assert "is not empty" in err and "--overwrite" in err and "--resume" in err
    assert (out / "config.json").read_text() == "{}"
    (out / "quality.png").write_bytes(b"old plot")
    (out / "log.csv.damaged-20260101-000000").write_text("old")
    assert train(out, "--overwrite", *sets(["train.num_steps=2"])) == 0
    assert (out / "notes.txt").read_text() == "mine"  # only the run's own files are replaced
    assert not (out / "quality.png").exists() and not list(out.glob("*.damaged-*"))
    assert load_checkpoint(out / "checkpoints" / "step_00000002.safetensors").step == 2
    (tmp_path / "file").write_text("x")
    capsys.readouterr()
    assert train(tmp_path / "file", *sets(["train.num_steps=2"])) == 2
    assert "is a file" in capsys.readouterr().err


@pytest.mark.slow
def test_killed_before_the_first_checkpoint_resumes_from_step_0(tmp_path):
    """Before: `--resume` refused with "no checkpoint"."""
    reference, killed = tmp_path / "reference", tmp_path / "killed"
    extra = sets(["train.num_steps=8", "train.checkpoint_every=100000", "train.log_every=1"])
    assert train(reference, *extra) == 0
    process = subprocess.Popen(
        command(
            killed,
            *sets(
                ["train.num_steps=1000000", "train.checkpoint_every=100000", "train.log_every=1"]
            ),
        ),  # fmt: skip
    )
    log = killed / "log.csv"
    wait_for(lambda: log.exists() and len(log.read_text().splitlines()) > 2)
    process.kill()
    process.wait()
    assert not list_checkpoints(killed / "checkpoints")
    assert train(killed, *extra, resume=True) == 0
    assert_same_weights(reference, killed, 8)
    assert [r.split(",")[0] for r in (killed / "log.csv").read_text().splitlines()] == [
        "step",
        *map(str, range(1, 9)),
    ]


def test_killed_after_the_final_checkpoint_resume_finishes_the_run(tmp_path, capsys):
    """Before: the final grid and loss.png were never written and --resume refused."""
    out = tmp_path / "run"
    assert train(out, *sets(["train.num_steps=4", "train.sample_every=4"])) == 0
    grid = out / "samples" / "step_00000004.png"
    grid_bytes = grid.read_bytes()
    grid.unlink()
    (out / "loss.png").unlink()
    assert train(out, resume=True) == 0
    assert grid.read_bytes() == grid_bytes and (out / "loss.png").is_file()
    capsys.readouterr()
    assert train(out, resume=True) == 2  # nothing left to do: say how to train further
    assert "train.num_steps" in capsys.readouterr().err


@pytest.mark.slow
def test_extending_a_cosine_run_is_refused_unless_the_rate_stays_continuous(tmp_path, capsys):
    """Before: a longer train.num_steps silently re-stretched the cosine decay (an LR jump)."""
    out = tmp_path / "run"
    cosine = ["train.lr_schedule=cosine", "train.lr=1e-3"]  # warm-up: TINY_RUN's 2 steps
    assert train(out, *sets([*cosine, "train.num_steps=6"])) == 0
    (out / "checkpoints" / "step_00000006.safetensors").unlink()  # as if killed after step 4
    capsys.readouterr()
    assert train(out, *sets([*cosine, "train.num_steps=12"]), resume=True) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "would make the cosine learning rate jump" in err
    recipe = err.split("add ")[1].split()
    assert train(out, *recipe, *sets(["train.num_steps=10"]), resume=True) == 0
    rows = [r.split(",") for r in (out / "log.csv").read_text().splitlines()[1:]]
    # the 6-step cosine's rate at step 4 (0-based; 2 warm-up steps), 1e-3 * (1 + cos(pi / 2)) / 2,
    # held on
    assert [float(r[2]) for r in rows if int(r[0]) > 4] == pytest.approx([5e-4] * 3)


def test_damaged_side_files_do_not_brick_a_run(tmp_path, capsys, caplog):
    """Before: a binary config.json, a binary log.csv or `60,abc` in val_loss.csv each gave a
    traceback on every resume."""
    out = tmp_path / "run"
    assert train(out, *sets(["train.num_steps=4"])) == 0
    good_log = (out / "log.csv").read_text()
    (out / "config.json").write_bytes(b"\x89PNG\r\n\x1a\n\x00\xff" * 20)
    (out / "log.csv").write_bytes(good_log.encode() + b"\x00\xff\xfe garbage\n")
    with open(out / "val_loss.csv", "a") as f:
        f.write("3,abc\n")
    assert train(out, *sets(["train.num_steps=6"]), resume=True) == 0
    assert '"model"' in (out / "config.json").read_text()  # rebuilt from the checkpoint's config
    kept = list(out.glob("config.json.damaged-*"))  # and the damaged one kept, not overwritten
    assert len(kept) == 1 and kept[0].read_bytes() == b"\x89PNG\r\n\x1a\n\x00\xff" * 20
    aside = list(out.glob("log.csv.damaged-*"))
    assert len(aside) == 1 and b"garbage" in aside[0].read_bytes()
    assert list(out.glob("val_loss.csv.damaged-*"))
    assert (out / "log.csv").read_text().startswith(good_log)
    # without a checkpoint to fall back on, a damaged config is one line
    (out / "config.json").write_bytes(b"\xff\xfe")
    for path in list_checkpoints(out / "checkpoints"):
        path.unlink()
    (out / "checkpoints" / "best.safetensors").unlink()
    capsys.readouterr()
    assert train(out, resume=True) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "config.json" in err and "Traceback" not in err


def test_the_best_loss_survives_a_lost_log(tmp_path):
    """Before: the best validation loss came from val_loss.csv only; without it (or with it
    damaged) the next checkpoint replaced best.safetensors whatever its loss."""
    from ddpm.train.run_files import best_val_loss

    out = tmp_path / "run"
    assert train(out, *sets(["train.num_steps=4"])) == 0
    best = load_checkpoint(out / "checkpoints" / "best.safetensors")
    assert best.val_loss is not None and best.step == 4
    (out / "val_loss.csv").unlink()
    assert best_val_loss(out, 4) == best.val_loss


@pytest.mark.slow
def test_resume_is_exact_with_dropout(tmp_path):
    """Dropout masks are a function of (seed, step): stop at 4, resume to 8, same weights as an
    uninterrupted run (train.precision fp32, dropout 0.1). Exact on CPU before too, since the
    global CPU RNG was restored; the gpu-marked twin below is the one that failed."""
    reference, resumed = tmp_path / "reference", tmp_path / "resumed"
    fp32 = ["train.precision=fp32"]
    assert train(reference, *sets([*fp32, "train.num_steps=8"])) == 0
    assert train(resumed, *sets([*fp32, "train.num_steps=4"])) == 0
    torch.manual_seed(12345)  # the caller's global RNG must not matter
    assert train(resumed, *sets(["train.num_steps=8"]), resume=True) == 0
    assert_same_weights(reference, resumed, 8)


@pytest.mark.gpu
def test_resume_is_exact_with_dropout_on_cuda(tmp_path):
    """Before: resume restored the CPU RNG only and reseeded CUDA with train.seed, so dropout
    masks replayed from step 0."""
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    reference, resumed = tmp_path / "reference", tmp_path / "resumed"
    cuda = ["--device", "cuda", "--deterministic", *sets(["train.precision=fp32"])]
    assert train(reference, *cuda, *sets(["train.num_steps=8"])) == 0
    assert train(resumed, *cuda, *sets(["train.num_steps=4"])) == 0
    assert train(resumed, *cuda, *sets(["train.num_steps=8"]), resume=True) == 0
    assert_same_weights(reference, resumed, 8)


@pytest.mark.slow
def test_the_lock_file_names_its_holder_and_goes_with_the_process(tmp_path):
    from ddpm.errors import DDPMError
    from ddpm.train.run_lock import RunLock

    with RunLock(tmp_path):
        assert f"process {os.getpid()}" in (tmp_path / ".lock").read_text()
        child = subprocess.run(
            [
                sys.executable,
                "-c",
                "import sys; from ddpm.train.run_lock import RunLock; "
                f"RunLock({str(tmp_path)!r}).__enter__()",
            ],  # fmt: skip
            capture_output=True,
            text=True,
        )
        assert child.returncode != 0 and f"in use by process {os.getpid()}" in child.stderr
    with RunLock(tmp_path), pytest.raises(DDPMError, match="in use by"):
        RunLock(tmp_path).__enter__()  # a second lock in the same process is refused too


def test_a_path_that_cannot_be_written_is_one_line(tmp_path, capsys):
    """A run folder or a sample grid under a regular file: one line, exit 2, before any work."""
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert train(blocker / "run", *sets(["train.num_steps=2"])) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "cannot write to the run folder" in err
    out = tmp_path / "run"
    assert train(out, *sets(["train.num_steps=2"])) == 0
    capsys.readouterr()
    assert main(["sample", "--run", str(out), "--n", "2", "--steps", "2", "--quiet",
                 "--out", str(blocker / "grid.png")]) == 2  # fmt: skip
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "could not write" in err and "Traceback" not in err


@pytest.mark.slow
def test_sigterm_while_a_sample_grid_is_drawn_drops_the_grid(tmp_path):
    """A pre-empted run does not spend its grace period drawing pictures."""
    out = tmp_path / "run"
    slow_grids = ["train.num_steps=1000000", "train.sample_every=2", "train.num_sample_images=64",
                  "sample.steps=1000", "sample.sampler=ddpm"]  # fmt: skip
    process = subprocess.Popen(command(out, *sets(slow_grids)), stderr=subprocess.PIPE, text=True)
    # log.csv's row of step 2 is written just before step 2's grid (64 images x 1000 steps)
    wait_for(lambda: (out / "log.csv").exists() and "\n2," in (out / "log.csv").read_text())
    time.sleep(1)
    process.send_signal(signal.SIGTERM)
    try:
        _, err = process.communicate(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        pytest.fail("the sample grid was not dropped")
    assert process.returncode == 130 and "sample grid at step 2 skipped" in err, err
    assert not (out / "samples" / "step_00000002.png").exists()
    assert "at step 2;" in err or "at step 3;" in err
