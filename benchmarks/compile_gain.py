"""Does torch.compile pay on this machine? Eager against compiled, training and sampling, one run.

    python benchmarks/compile_gain.py [--preset fashion-mnist] [--batch 32] [--precision auto]
        [--what train,sample] [--set model.dropout=0.0 ...]

Times ddpm's real paths: the training step of make_trainer with train.compile off and on, and
generate() (DDIM) with compile off and on, after the compiled path's first calls (whose time is
printed as the compile cost). Prints images/s, the ratio compiled / eager and the break-even:
how long a job must run before the compile time is paid back.
"""

from __future__ import annotations

import argparse
import time

import torch

from ddpm.builders import build_model, build_schedule
from ddpm.config import RunConfig, from_dict, load_preset
from ddpm.config_yaml import parse_overrides
from ddpm.generate import generate, sample_config
from ddpm.loaded_run import LoadedRun
from ddpm.train.step import make_trainer

CPU = torch.device("cpu")


def train_rates(config: RunConfig, batch: int, steps: int) -> tuple[float, float, float]:
    """(eager images/s, compiled images/s, seconds of the compiled path's first two steps)."""
    shape = (batch, config.data.channels, config.data.image_size, config.data.image_size)
    x0 = torch.rand(shape, generator=torch.Generator().manual_seed(0)).mul(2).sub(1)
    rates, first = [], 0.0
    for compile_ in (False, True):
        trainer = make_trainer(from_dict({"train": {"compile": compile_}}, base=config), CPU)
        start = time.perf_counter()
        for n in range(2):
            trainer.step(n, x0, None)
        first = time.perf_counter() - start
        start = time.perf_counter()
        for n in range(2, 2 + steps):
            trainer.step(n, x0, None)
        rates.append(steps * batch / (time.perf_counter() - start))
    return rates[0], rates[1], first


def sample_rates(config: RunConfig, batch: int, steps: int) -> tuple[float, float, float]:
    """(eager images/s, compiled images/s, seconds of the compiled path's first call) of DDIM."""
    torch.manual_seed(0)
    run = LoadedRun(build_model(config).eval(), build_schedule(config), config, step=0)
    rates, first = [], 0.0
    for compile_ in (False, True):
        settings = dict(sampler="ddim", batch_size=batch, compile=compile_)
        start = time.perf_counter()
        generate(run, sample_config(config, steps=2, **settings), n=batch, progress=False)
        first = time.perf_counter() - start
        start = time.perf_counter()
        generate(run, sample_config(config, steps=steps, **settings), n=batch, progress=False)
        rates.append(batch / (time.perf_counter() - start))
    return rates[0], rates[1], first


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="fashion-mnist")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--train-steps", type=int, default=10)
    parser.add_argument("--sample-steps", type=int, default=50)
    parser.add_argument("--what", default="train,sample")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE")
    args = parser.parse_args()
    overrides = parse_overrides(args.set)
    overrides.setdefault("train", {})["precision"] = args.precision
    overrides.setdefault("sample", {})["precision"] = args.precision
    config = from_dict(overrides, base=load_preset(args.preset))
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU capability "
          f"{torch.backends.cpu.get_cpu_capability()}; preset {args.preset}, batch {args.batch}, "
          f"precision {args.precision}")  # fmt: skip
    what = args.what.split(",")
    for name, measure, steps in (("train", train_rates, args.train_steps),
                                 ("sample", sample_rates, args.sample_steps)):  # fmt: skip
        if name not in what:
            continue
        eager, compiled, first = measure(config, args.batch, steps)
        gain = compiled / eager
        # break-even: the eager seconds s after which s - s / gain exceeds the compile time
        paid = f"after {first / (1 - 1 / gain):.0f} s of eager work" if gain > 1 else "never"
        unit = f"DDIM-{steps} images/s" if name == "sample" else "images/s"
        print(f"{name:6s} eager {eager:7.2f} {unit}, compiled {compiled:7.2f} ({gain:.2f}x); "
              f"compile {first:.0f} s, paid back {paid}")  # fmt: skip


if __name__ == "__main__":
    main()
