"""Time per step of 2-process DDP (torchrun, gloo on the CPU) against one process with the same
global batch, in one run (issue 6).

    python benchmarks/ddp_scaling.py [--preset digits] [--global-batch 64] [--steps 60]

Both runs train the same preset on the same data; images/s is read from each run's log.csv,
ignoring the first log interval (warm-up).
"""

from __future__ import annotations

import argparse
import csv
import os
import subprocess
import sys
import tempfile
from pathlib import Path


def run(out: Path, preset: str, batch: int, steps: int, processes: int) -> float:
    sets = [
        f"train.batch_size={batch}",
        f"train.num_steps={steps}",
        "train.log_every=10",
        "train.checkpoint_every=100000",
        "train.sample_every=100000",
        "train.val_images=0",
    ]
    args = [
        "train",
        "--preset",
        preset,
        "--out",
        str(out),
        "--quiet",
        *[a for s in sets for a in ("--set", s)],
    ]
    if processes == 1:
        command = [sys.executable, "-m", "ddpm", *args]
    else:
        command = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            f"--nproc_per_node={processes}",
            "-m",
            "ddpm",
            *args,
        ]
    subprocess.run(command, check=True, env={**os.environ}, stdout=subprocess.DEVNULL)
    with open(out / "log.csv", newline="") as f:
        rates = [float(r["images_per_s"]) for r in csv.DictReader(f)][1:]
    return sum(rates) / len(rates)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="digits")
    parser.add_argument("--global-batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=60)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as work:
        one = run(Path(work) / "one", args.preset, args.global_batch, args.steps, 1)
        two = run(Path(work) / "two", args.preset, args.global_batch // 2, args.steps, 2)
    print(f"preset {args.preset}, global batch {args.global_batch}, {os.cpu_count()} cores")
    print(f"1 process : {one:8.1f} images/s ({1000 * args.global_batch / one:.1f} ms/step)")
    print(
        f"2 processes (DDP, gloo): {two:8.1f} images/s ({1000 * args.global_batch / two:.1f} ms/step)"
    )
    print(f"ratio 2-process / 1-process time per step: {one / two:.2f}")


if __name__ == "__main__":
    main()
