"""Where the time of a training step goes: torch.profiler on the Fashion-MNIST-size U-Net.

    python benchmarks/profile_fmnist.py [--batch 32] [--steps 5] [--precision auto|fp32|bf16]
        [--channels-last]

Runs ddpm's real training step (make_trainer) on the 3.9M-parameter model of
benchmarks/compare.py, prints the operators by self CPU time and the share that is convolution
(forward and backward) against everything else.
"""

from __future__ import annotations

import argparse

import torch
from compare import model_specs
from torch.profiler import ProfilerActivity, profile

from ddpm.config import from_dict
from ddpm.train.step import make_trainer

CONVOLUTION = ("aten::mkldnn_convolution", "aten::convolution_backward", "aten::_convolution")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--channels-last", action="store_true")
    args = parser.parse_args()
    spec = model_specs()["fmnist"]
    config = from_dict({"train": {"precision": args.precision}}, base=spec.config)
    trainer = make_trainer(config, torch.device("cpu"))
    if args.channels_last:
        trainer.model.use_memory_format(torch.channels_last)
    x0 = torch.rand(args.batch, 1, 28, 28).mul(2).sub(1)
    for n in range(3):
        trainer.step(n, x0, None)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for n in range(3, 3 + args.steps):
            trainer.step(n, x0, None)
    events = prof.key_averages()
    print(events.table(sort_by="self_cpu_time_total", row_limit=25))
    total = sum(e.self_cpu_time_total for e in events)
    conv = sum(e.self_cpu_time_total for e in events if e.key in CONVOLUTION)
    print(f"convolution (forward + backward): {conv / total:.0%} of self CPU time; "
          f"everything else: {1 - conv / total:.0%}; "
          f"{total / 1e3 / args.steps:.0f} ms per step")  # fmt: skip


if __name__ == "__main__":
    main()
