"""How far replacement and RePaint are from the exact conditional, on data with a known answer
(docs/editing.md, "How right is it"): a correlated Gaussian over 4 pixels whose ideal denoiser
and conditional are closed forms (tests/gaussian_data.py), the top row kept at (0.6, 0.5).

    python benchmarks/inpainting_bias.py [N] [SAMPLER:STEPS:RESAMPLE:JUMP ...]
    python benchmarks/inpainting_bias.py 20000 ddpm:1000:1:1 ddim:100:1:1 ddpm:1000:20:10

Prints, per method, the largest error of the generated pixels' mean (absolute and in standard
errors), their standard deviations and correlation, NFE and seconds, against the exact ones.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from gaussian_data import correlated_gaussian, moments  # noqa: E402

from ddpm.conditioning import Inpainting, sample_conditioned  # noqa: E402
from ddpm.samplers import num_function_evals  # noqa: E402
from ddpm.schedules import make_schedule  # noqa: E402

DEFAULT = ["ddpm:1000:1:1", "ddim:100:1:1", "dpmpp-2m:50:1:1", "ddpm:250:10:10", "ddpm:1000:20:10"]


def main() -> int:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 20000
    methods = sys.argv[2:] or DEFAULT
    torch.set_num_threads(1)
    gaussian, schedule = correlated_gaussian((1, 2, 2)), make_schedule("linear", 1000)
    keep = torch.tensor([True, True, False, False])
    known = torch.tensor([0.6, 0.5, 0.0, 0.0], dtype=torch.float64)
    mean, cov = gaussian.conditional(keep, known)
    std = cov.diagonal().sqrt()
    print(
        f"exact: mean {mean.tolist()}, stds {std.tolist()}, corr {float(cov[0, 1] / std.prod()):.3f}"
    )
    for method in methods:
        sampler, steps, resample, jump = method.split(":")
        K, R, J = int(steps), int(resample), int(jump)
        generator = torch.Generator().manual_seed(0)
        x_T = torch.randn(n, 1, 2, 2, generator=generator, dtype=torch.float64)
        inpainting = Inpainting(known.reshape(1, 1, 2, 2).expand(n, 1, 2, 2),
                                keep.reshape(1, 1, 2, 2).expand(n, 1, 2, 2), resample=R, jump=J)  # fmt: skip
        options = {"resample": R, "jump": J} if R > 1 else {}
        started = time.perf_counter()
        x0 = sample_conditioned(
            sampler, gaussian.denoiser(schedule), x_T, schedule,
            inpainting.timesteps(schedule, K, "uniform"), conditioning=inpainting,
            generator=generator, hook_generator=generator, **options,
        )  # fmt: skip
        seconds = time.perf_counter() - started
        m, c = moments(x0.reshape(n, 4)[:, ~keep])
        s = c.diagonal().sqrt()
        error = (m - mean).abs()
        nfe = num_function_evals(sampler, K, resample=R, jump=J)
        print(f"{method}: NFE {nfe}, mean error {float(error.max()):.3f} "
              f"({float((error / (std / n**0.5)).max()):.1f} standard errors), "
              f"stds {[round(v, 3) for v in s.tolist()]}, corr {float(c[0, 1] / s.prod()):.3f}, "
              f"{seconds:.1f} s")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
