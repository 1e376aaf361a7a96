"""train.tensorboard=true: scalars and sample grids in RUN/tensorboard/, read back with
TensorBoard's own EventAccumulator; without the package, one line before anything is written."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from tiny import TINY_RUN, quality_pairs, train_tiny, untrained_featnet

pytestmark = pytest.mark.slow
SRC = Path(__file__).resolve().parents[1] / "src"


def test_scalars_and_grids_are_logged_and_read_back(tmp_path):
    pytest.importorskip("tensorboard", reason="the tensorboard package (the dev extra)")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    featnet = untrained_featnet(tmp_path / "featnet.safetensors")
    run = train_tiny(tmp_path / "run", "train.num_steps=8", "train.sample_every=4",
                     "train.tensorboard=true", *quality_pairs(featnet))  # fmt: skip
    events = EventAccumulator(str(run / "tensorboard"), size_guidance={"images": 0}).Reload()
    tags = events.Tags()
    assert {"train/loss", "train/images_per_s", "train/lr", "train/val_loss", "quality/fid",
            "quality/kid", "quality/precision", "quality/recall"} <= set(tags["scalars"])  # fmt: skip
    assert [e.step for e in events.Scalars("train/loss")] == [2, 4, 6, 8]  # log_every=2
    assert [e.step for e in events.Scalars("quality/fid")] == [4, 8]
    assert [e.step for e in events.Scalars("train/val_loss")] == [4, 8]  # checkpoint_every=4
    images = events.Images("samples")
    assert [e.step for e in images] == [4, 8] and images[0].width > 0


def test_without_the_package_the_run_is_refused_in_one_line(tmp_path):
    out = tmp_path / "run"
    args = ["train", "--dataset", "digits", "--out", str(out), "--quiet",
            "--set", "train.tensorboard=true", *[a for p in TINY_RUN for a in ("--set", p)]]  # fmt: skip
    code = ("import sys; sys.modules['tensorboard'] = None\n"  # as if it were not installed
            f"from ddpm.cli import main; sys.exit(main({args!r}))")  # fmt: skip
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            env={"PYTHONPATH": str(SRC), "PATH": "/usr/bin:/bin"})  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert result.stderr == (
        "ddpm: error: train.tensorboard=true needs the tensorboard package: "
        "pip install tensorboard\n"
    )
    assert not out.exists()
