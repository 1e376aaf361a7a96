"""End to end on the real digits data: train, resume, sample, through the CLI and the Python API."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file
from tiny import TINY_MODEL, TINY_RUN, sets

from ddpm.cli import main
from ddpm.config import from_dict, load_preset
from ddpm.train import make_trainer

TINY = [
    *TINY_RUN,
    "train.num_steps=20",
    "train.batch_size=16",
    "train.log_every=5",
    "train.warmup_steps=5",
    "train.checkpoint_every=10",
    "train.sample_every=20",
    "train.num_sample_images=4",
    "sample.steps=5",
]


def train_tiny(out: Path, *extra: str) -> int:
    return main(["train", "--dataset", "digits", "--out", str(out), "--quiet", *sets(TINY), *extra])


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("runs") / "tiny"
    assert train_tiny(out) == 0
    return out


@pytest.mark.slow
def test_train_writes_a_complete_run_folder(run_dir: Path):
    assert (run_dir / "config.json").is_file()
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == [
        "best.safetensors",
        "step_00000010.safetensors",
        "step_00000020.safetensors",
    ]
    rows = (run_dir / "log.csv").read_text().strip().splitlines()
    assert rows[0] == "step,loss,lr,grad_norm,images_per_s,elapsed_s,skipped_steps"
    assert [int(r.split(",")[0]) for r in rows[1:]] == [5, 10, 15, 20]
    val = (run_dir / "val_loss.csv").read_text().strip().splitlines()
    assert val[0] == "step,val_loss" and [int(r.split(",")[0]) for r in val[1:]] == [10, 20]
    assert all(float(r.split(",")[1]) > 0 for r in val[1:])
    assert (run_dir / "samples" / "step_00000020.png").is_file()
    assert (run_dir / "loss.png").is_file()
    config = json.loads((run_dir / "config.json").read_text())
    assert config["train"]["num_steps"] == 20 and config["model"]["base_channels"] == 8


@pytest.mark.slow
def test_sample_writes_grid_npz_and_progressive_strip(run_dir: Path, tmp_path: Path):
    grid, npz, strip = tmp_path / "grid.png", tmp_path / "s.npz", tmp_path / "strip.png"
    code = main(
        [
            "sample",
            "--run",
            str(run_dir),
            "--n",
            "6",
            "--sampler",
            "ddim",
            "--steps",
            "5",
            "--seed",
            "3",
            "--out",
            str(grid),
            "--npz",
            str(npz),
            "--progressive",
            str(strip),
            "--quiet",
        ]
    )
    assert code == 0
    arr = np.load(npz)["arr_0"]
    assert arr.dtype == np.uint8 and arr.shape == (6, 8, 8, 1)
    assert Image.open(grid).size[0] > 64 and Image.open(strip).size[0] > 64
    # the same seed gives the same images, through the ancestral sampler too
    for sampler in ("ddim", "ddpm"):
        a, b = tmp_path / f"{sampler}_a.npz", tmp_path / f"{sampler}_b.npz"
        for path, batch in ((a, "6"), (b, "4")):
            assert (
                main(
                    [
                        "sample",
                        "--run",
                        str(run_dir),
                        "--n",
                        "6",
                        "--sampler",
                        sampler,
                        "--steps",
                        "5",
                        "--seed",
                        "3",
                        "--out",
                        str(tmp_path / "g.png"),
                        "--npz",
                        str(path),
                        "--batch-size",
                        batch,
                        "--quiet",
                    ]
                )
                == 0
            )
        # equal up to float rounding: convolutions may sum in another order at another batch size
        diff = np.abs(np.load(a)["arr_0"].astype(int) - np.load(b)["arr_0"].astype(int))
        assert diff.max() <= 1 and diff.mean() < 0.01


@pytest.mark.slow
def test_resume_reaches_the_same_weights_as_an_uninterrupted_run(run_dir: Path, tmp_path: Path):
    half = tmp_path / "half"
    # constant LR: with a cosine schedule, changing num_steps on resume changes later LRs (by design)
    assert train_tiny(half, "--set", "train.num_steps=10") == 0
    assert main(["train", "--resume", str(half), "--set", "train.num_steps=20", "--quiet"]) == 0
    full = load_file(run_dir / "checkpoints" / "step_00000020.safetensors")
    resumed = load_file(half / "checkpoints" / "step_00000020.safetensors")
    for key in full:
        if key.startswith(("model.", "ema.")):
            assert torch.equal(full[key], resumed[key]), key
    rows = (half / "log.csv").read_text().strip().splitlines()
    assert [int(r.split(",")[0]) for r in rows[1:]] == [5, 10, 15, 20]


@pytest.mark.slow
def test_a_tiny_model_overfits_a_single_batch():
    config = from_dict(
        {
            "model": {
                "base_channels": 8,
                "channel_mult": [1, 2],
                "num_res_blocks": 1,
                "attention_resolutions": [],
                "num_groups": 4,
                "dropout": 0.0,
            },
            "train": {"lr": 2e-3, "warmup_steps": 0, "grad_clip": 0.0},
        }
    )
    torch.manual_seed(0)
    trainer = make_trainer(config, torch.device("cpu"))
    x0 = torch.rand(8, 1, 8, 8, generator=torch.Generator().manual_seed(1)) * 2 - 1
    # step index 0 every time: the same t and noise, so the batch can be memorised
    losses = [float(trainer.step(0, x0, None)[0]) for _ in range(300)]
    assert losses[-1] < losses[0] / 10, (losses[0], losses[-1])


@pytest.mark.slow
def test_python_api_trains_and_samples(tmp_path: Path):
    import ddpm

    config = from_dict(
        {
            "train": {
                "num_steps": 4,
                "batch_size": 8,
                "log_every": 2,
                "checkpoint_every": 4,
                "sample_every": 4,
                "num_sample_images": 2,
            },
            "sample": {"steps": 3},
            "model": {"base_channels": 8, "num_groups": 4},
        },
        base=load_preset("digits"),
    )
    result = ddpm.train(config, tmp_path / "api", device=ddpm.resolve_device("cpu"), progress=False)
    assert result.step == 4
    run = ddpm.load_run(tmp_path / "api")
    images = ddpm.generate(run, ddpm.sample_config(run.config, steps=3), n=3, progress=False)
    assert images.shape == (3, 1, 8, 8) and images.abs().max() <= 1


@pytest.mark.slow
def test_python_m_ddpm_and_dry_run():
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "ddpm",
            "train",
            "--dataset",
            "digits",
            "--out",
            "unused",
            "--set",
            "train.num_steps=7",
            "--dry-run",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "num_steps: 7" in out.stdout and "dataset: digits" in out.stdout


@pytest.mark.slow
def test_bench_prints_figures_and_json(capsys):
    args = [
        "bench",
        "--preset",
        "digits",
        "--batch",
        "4",
        "--train-steps",
        "2",
        "--sample-steps",
        "2",
        *sets(TINY_MODEL),
    ]
    assert main(args) == 0
    text = capsys.readouterr().out
    for label in (
        "parameters:",
        "GFLOP/image",
        "train:",
        "images/s",
        "sample ddim-2:",
        "peak memory",
    ):
        assert label in text
    assert main([*args, "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["parameters"] > 0 and result["train_images_per_s"] > 0
    assert result["forward_gflop_per_image"] > 0 and result["sample_images_per_s"] > 0
