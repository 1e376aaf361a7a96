"""Data loading figures for issue 3: the time to load a whole dataset into memory, and the share of
a training step spent producing its batch.

    python benchmarks/data_loading.py [--preset fashion-mnist] [--batch 128] [--steps 20]
"""

from __future__ import annotations

import argparse
import time

import torch

from ddpm.config import from_dict, load_preset
from ddpm.config_yaml import parse_overrides
from ddpm.data import InMemoryBatches, load_dataset
from ddpm.train import make_trainer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="fashion-mnist")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--set", action="append", default=[])
    args = parser.parse_args()
    config = from_dict(parse_overrides(args.set), base=load_preset(args.preset))

    start = time.perf_counter()
    data = load_dataset(config.data, "train")
    load_s = time.perf_counter() - start
    print(
        f"load {config.data.dataset} train split: {len(data):,} images "
        f"{tuple(data.images.shape[1:])} in {load_s:.2f} s"
    )

    batches = InMemoryBatches(
        data.images,
        data.labels,
        batch_size=args.batch,
        seed=0,
        random_flip=config.data.random_flip,
        device=torch.device("cpu"),
    )
    torch.manual_seed(0)
    trainer = make_trainer(config, torch.device("cpu"))
    for n in range(3):  # warm-up
        trainer.step(n, *batches.batch(n))
    data_s = step_s = 0.0
    for n in range(3, 3 + args.steps):
        t0 = time.perf_counter()
        batch = batches.batch(n)
        t1 = time.perf_counter()
        trainer.step(n, *batch)
        t2 = time.perf_counter()
        data_s, step_s = data_s + t1 - t0, step_s + t2 - t1
    total = data_s + step_s
    print(
        f"batch {args.batch}, {args.steps} steps, precision {config.train.precision}: "
        f"data {1000 * data_s / args.steps:.2f} ms/step, training {1000 * step_s / args.steps:.1f} "
        f"ms/step; data share {100 * data_s / total:.2f}% of the step"
    )


if __name__ == "__main__":
    main()
