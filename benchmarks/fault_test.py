"""Kill-and-resume fault test (issue 6): train a short digits run, SIGKILL it at random moments,
resume each time, and compare the final weights with an uninterrupted run.

    python benchmarks/fault_test.py [--cycles 20] [--steps 400] [--seed 0]

Prints: cycles survived, checkpoints lost (a checkpoint file that no longer loads after a kill),
and whether the final model and EMA weights equal the uninterrupted run's bit for bit.
"""

from __future__ import annotations

import argparse
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from ddpm.checkpoint import list_checkpoints, load_checkpoint
from ddpm.errors import DDPMError

TINY = [
    "model.base_channels=16",
    "model.channel_mult=[1,2]",
    "model.num_res_blocks=1",
    "model.attention_resolutions=[4]",
    "model.num_groups=8",
    "model.dropout=0.1",
    "train.batch_size=32",
    "train.log_every=5",
    "train.checkpoint_every=10",
    "train.sample_every=100000",
    "train.num_sample_images=4",
    "sample.steps=5",
    "train.val_images=64",
]


def command(out: Path, steps: int, resume: bool) -> list[str]:
    sets = [a for pair in [*TINY, f"train.num_steps={steps}"] for a in ("--set", pair)]
    head = ["--resume", str(out)] if resume else ["--dataset", "digits", "--out", str(out)]
    return [sys.executable, "-m", "ddpm", "train", *head, "--deterministic", "--quiet", *sets]


def final_weights(out: Path, steps: int) -> dict[str, torch.Tensor]:
    tensors = load_checkpoint(out / "checkpoints" / f"step_{steps:08d}.safetensors").tensors
    return {k: v for k, v in tensors.items() if k.startswith(("model.", "ema."))}


def wait_until_training(process: subprocess.Popen, log: Path, launched: float) -> None:
    """Until the process has (re)opened its log, i.e. it is past start-up and training."""
    while process.poll() is None:
        if log.exists() and log.stat().st_mtime >= launched:
            return
        time.sleep(0.02)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cycles", type=int, default=20)
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    work = Path(tempfile.mkdtemp(prefix="ddpm-fault-"))
    try:
        subprocess.run(
            command(work / "reference", args.steps, False), check=True, stdout=subprocess.DEVNULL
        )
        rows = (work / "reference" / "log.csv").read_text().strip().splitlines()
        seconds_per_step = float(rows[-1].split(",")[5]) / args.steps
        checkpoint_s = 10 * seconds_per_step  # train.checkpoint_every = 10
        out, kills, lost, progress = work / "killed", 0, 0, []
        resume = False
        while True:
            launched = time.time()
            process = subprocess.Popen(command(out, args.steps, resume), stdout=subprocess.DEVNULL)
            wait_until_training(process, out / "log.csv", launched)
            if kills < args.cycles:
                time.sleep(rng.uniform(0, 4 * checkpoint_s))  # a random moment of training
            if process.poll() is None and kills < args.cycles:
                process.kill()
                process.wait()
                kills += 1
                for path in list_checkpoints(out / "checkpoints"):
                    try:
                        load_checkpoint(path)
                    except DDPMError:
                        lost += 1
                saved = list_checkpoints(out / "checkpoints")
                progress.append(load_checkpoint(saved[-1]).step if saved else 0)
                resume = bool(saved)
                if not resume:
                    shutil.rmtree(out, ignore_errors=True)
                continue
            if process.wait() != 0:
                raise SystemExit(f"training failed with exit code {process.returncode}")
            break
        a, b = final_weights(work / "reference", args.steps), final_weights(out, args.steps)
        equal = a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
        print(
            f"kill-and-resume cycles: {kills} SIGKILLs at random moments of training, "
            f"{sum(1 for s in progress if s)} resumed from a checkpoint"
        )
        print(f"steps of the newest checkpoint after each kill: {progress}")
        print(f"checkpoints lost: {lost}")
        print(
            f"final weights (model and EMA) equal to the uninterrupted run: {'yes' if equal else 'NO'}"
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
