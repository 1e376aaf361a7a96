"""Kill-and-resume fault test (issue 6): train a short digits run, SIGKILL it at random moments,
resume each time, and compare the final weights with an uninterrupted run.

    python benchmarks/fault_test.py [--cycles 20] [--steps 200] [--seed 0]

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cycles", type=int, default=20)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    work = Path(tempfile.mkdtemp(prefix="ddpm-fault-"))
    try:
        start = time.perf_counter()
        subprocess.run(command(work / "reference", args.steps, False), check=True)
        reference_s = time.perf_counter() - start
        out, kills, lost, survived = work / "killed", 0, 0, 0
        process = subprocess.Popen(command(out, args.steps, False))
        while True:
            if kills < args.cycles:
                time.sleep(rng.uniform(0.5, max(1.0, reference_s / 4)))
            code = process.poll()
            if code is None and kills < args.cycles:
                process.kill()
                process.wait()
                kills += 1
                for path in list_checkpoints(out / "checkpoints"):
                    try:
                        load_checkpoint(path)
                    except DDPMError:
                        lost += 1
                if not list_checkpoints(out / "checkpoints"):  # killed before the first save
                    shutil.rmtree(out, ignore_errors=True)
                    process = subprocess.Popen(command(out, args.steps, False))
                    continue
                survived += 1
                process = subprocess.Popen(command(out, args.steps, True))
                continue
            if process.wait() != 0:
                raise SystemExit(f"training failed with exit code {process.returncode}")
            break
        a, b = final_weights(work / "reference", args.steps), final_weights(out, args.steps)
        equal = a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
        print(
            f"kill-and-resume cycles: {kills} (survived {survived}, the rest killed before the "
            f"first checkpoint and restarted)"
        )
        print(f"checkpoints lost: {lost}")
        print(f"final weights equal to the uninterrupted run: {'yes' if equal else 'NO'}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
