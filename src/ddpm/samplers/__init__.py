"""Samplers: small stateless functions over a denoiser `(x_t, t) -> x0_hat`, one module per
algorithm, each step written as its paper writes it.

Each takes the starting noise x_T [B, C, H, W], the schedule and the K descending timesteps to
visit, evaluates the denoiser at each of them, takes a last step to x0 after the final one, and
returns x0. Randomness comes only from `generator` (one torch.Generator, or one per image so that
image i depends only on its own generator, whatever the batch size). A `callback` receives a
`StepInfo` per step, for progressive-denoising pictures. Add a sampler: one module, one function
and one `SAMPLERS` entry (plus `num_function_evals` if it does not evaluate once per step).

Samplers by order and noise, and where they live:
    ddpm          ancestral.py   ancestral, stochastic, first order; K NFE
    ddim          ddim.py        eta = 0 deterministic (the probability-flow ODE's Euler step),
                                 eta > 0 stochastic; K NFE
    dpmpp-2m      dpm_solver.py  DPM-Solver++(2M), deterministic, second-order multistep; K NFE
    dpmpp-2m-sde  dpm_solver.py  its SDE variant, stochastic, second order; K NFE
    heun          heun.py        Karras et al.'s second-order Heun on the probability-flow ODE;
                                 2K - 1 NFE
common.py holds StepInfo, the noise drawn from the generators and the timestep pairs.
resampling.py RePaint's walk back up the noise levels, which the ancestral sampler takes.

Every sampler takes a `condition` hook `(x_t, t) -> x_t` that rewrites the state before each
evaluation: inpainting and image editing (ddpm.conditioning) are built on it, not on copies.

The steps are plain tensor expressions, not in-place updates on preallocated buffers: measured,
the buffers did not matter. On an AMD EPYC (Zen 4) 2-core KVM guest, 1 thread, 50 steps, the
samplers' own work per step without a network (medians of 3 alternating rounds) was, in place vs
plain, 18 vs 39 us (ddim, batch 64 at 8x8), 52 vs 98 us (ddim, 64 at 28x28) and at most 1.3 vs
1.7 ms (dpmpp-2m-sde, 256 at 28x28, mostly the noise draw), against ~20 ms per step for the digits
preset's network at batch 64 and ~190 ms for the fashion-mnist preset's (`ddpm bench`, bf16):
at most 0.15% of a step. generate() itself (ddim-50, batch 64, bf16, 5 alternating rounds under a
load of ~10) was within noise: digits 37.2 vs 39.9 images per CPU-second, fashion-mnist 3.01 vs
2.98; peak RSS 712 vs 711 MB and 800 vs 805 MB.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeGuard

import torch

from ..config import SamplerName
from ..schedules import Spacing
from .ancestral import VarianceType, sample_ancestral
from .common import Callback, Condition, Generators, StepInfo, randn_like
from .ddim import sample_ddim
from .dpm_solver import sample_dpmpp_2m, sample_dpmpp_2m_sde
from .heun import sample_heun
from .resampling import repaint_walk, walk_evaluations

SAMPLERS: dict[str, Callable[..., torch.Tensor]] = {
    "ddpm": sample_ancestral,
    "ddim": sample_ddim,
    "dpmpp-2m": sample_dpmpp_2m,
    "dpmpp-2m-sde": sample_dpmpp_2m_sde,
    "heun": sample_heun,
}
# Samplers whose output is a deterministic function of x_T (ddim with eta = 0).
DETERMINISTIC_SAMPLERS = ("ddim", "dpmpp-2m", "heun")
# Timestep spacing a sampler uses unless one is asked for (others: config.sample.spacing).
DEFAULT_SPACING: dict[str, Spacing] = {"heun": "karras"}


def is_sampler_name(name: str) -> TypeGuard[SamplerName]:
    """Whether `name` is one of SAMPLERS' (config.SamplerName, which a test keeps in step)."""
    return name in SAMPLERS


def num_function_evals(sampler: str, steps: int, *, resample: int = 1, jump: int = 1) -> int:
    """Denoiser evaluations (NFE) of `sampler` over `steps` timesteps (the ancestral sampler with
    RePaint's `resample` and `jump`: more). A guided evaluation runs the conditional and the null
    class in one batched network call and counts once."""
    if sampler == "heun":
        return 2 * steps - 1
    if resample > 1:
        return walk_evaluations(repaint_walk(steps, jump=jump, resample=resample))
    return steps


__all__ = [
    "DEFAULT_SPACING",
    "DETERMINISTIC_SAMPLERS",
    "SAMPLERS",
    "Callback",
    "Condition",
    "Generators",
    "StepInfo",
    "VarianceType",
    "is_sampler_name",
    "num_function_evals",
    "randn_like",
    "repaint_walk",
    "sample_ancestral",
    "sample_ddim",
    "sample_dpmpp_2m",
    "sample_dpmpp_2m_sde",
    "sample_heun",
]
