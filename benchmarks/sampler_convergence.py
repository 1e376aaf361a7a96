"""How close each deterministic sampler gets to the probability-flow ODE's own solution.

All of ddim (eta = 0), dpmpp-2m and heun integrate the same ODE from the same x_T, so their
distance to a many-step reference (dpmpp-2m at --ref-steps) is their solver error on the real
model, free of the sampling noise of a distribution metric. Also prints the pixel-FD of n real
training images against the test split: the floor the sweep's score can reach at that n.

    python benchmarks/sampler_convergence.py --run runs/fmnist-60min --n 32 --steps 5,10,20,50
"""

from __future__ import annotations

import argparse

import torch

from ddpm.data import load_dataset
from ddpm.generate import generate, sample_config
from ddpm.loaded_run import load_run
from ddpm.metrics import pixel_fd
from ddpm.pixels import to_uint8
from ddpm.samplers import num_function_evals


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", required=True)
    parser.add_argument("--n", type=int, default=32)
    parser.add_argument("--steps", default="5,10,20,50")
    parser.add_argument("--samplers", default="ddim,dpmpp-2m,heun")
    parser.add_argument("--ref-steps", type=int, default=250)
    parser.add_argument("--fd-n", type=int, default=128, help="real images for the pixel-FD floor")
    args = parser.parse_args()
    run = load_run(args.run)
    common = dict(n=args.n, seed=0, progress=False)
    reference_sample = sample_config(run.config, sampler="dpmpp-2m", steps=args.ref_steps)
    reference = generate(run, reference_sample, **common)
    print(f"reference: dpmpp-2m, {args.ref_steps} steps, n={args.n}; RMSE in [-1, 1] units")
    for sampler in args.samplers.split(","):
        for k in (int(s) for s in args.steps.split(",")):
            images = generate(run, sample_config(run.config, sampler=sampler, steps=k), **common)
            rmse = (images - reference).pow(2).mean().sqrt().item()
            print(f"{sampler:>9s} {k:4d} steps {num_function_evals(sampler, k):4d} NFE  "
                  f"RMSE {rmse:.4f}")  # fmt: skip
    train, test = (load_dataset(run.config.data, split).images for split in ("train", "test"))
    for i in range(3):
        rows = torch.randperm(len(train), generator=torch.Generator().manual_seed(i))[: args.fd_n]
        print(f"pixel-FD of {args.fd_n} training images vs the test split (draw {i}): "
              f"{pixel_fd(train[rows], test):.3f}")  # fmt: skip
    generated = to_uint8(reference)
    print(f"(reference images, n={args.n}: pixel-FD {pixel_fd(generated, test):.3f})")


if __name__ == "__main__":
    main()
