"""Exponential moving average of the weights: a fixed decay with the usual warm-up, or the
power-function EMA of Karras et al. 2024 ("Analyzing and improving the training dynamics of
diffusion models", Sec. 3.1), whose averaging window grows with the run, so it suits a run of any
length: after t updates it weighs update tau by (tau^(gamma+1) - (tau-1)^(gamma+1)) / t^(gamma+1).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

TensorLists = tuple[list[torch.Tensor], list[torch.Tensor]]


def ema_decay_at(num_updates: int, decay: float) -> float:
    """decay_n = min(decay, (1 + n) / (10 + n)): early updates follow the weights closely, so a short
    run does not sample from weights that are still mostly the random initialisation."""
    return min(decay, (1 + num_updates) / (10 + num_updates))


def gamma_from_sigma_rel(sigma_rel: float) -> float:
    """The power-function EMA's exponent gamma for a relative standard deviation sigma_rel of its
    averaging profile: sigma_rel^2 = (gamma + 1) / ((gamma + 2)^2 (gamma + 3)) (Karras et al. 2024,
    Eq. 3), i.e. the largest real root of gamma^3 + 7 gamma^2 + (16 - s) gamma + (12 - s), s =
    1 / sigma_rel^2."""
    s = 1.0 / sigma_rel**2
    roots = np.roots([1.0, 7.0, 16.0 - s, 12.0 - s])
    return float(roots[np.isclose(roots.imag, 0)].real.max())


def power_ema_decay_at(num_updates: int, gamma: float) -> float:
    """beta = (1 - 1/t)^(gamma + 1) for update t = num_updates + 1 (the first copies the weights)."""
    # float() for the checker: float ** float is typed Any (a negative base would give a complex)
    return float((1.0 - 1.0 / (num_updates + 1)) ** (gamma + 1))


def ema_tensor_lists(ema: nn.Module, model: nn.Module) -> TensorLists:
    """The floating-point parameters and buffers of (ema, model), paired in order. Collected once
    per run: the tensors are updated in place, so the lists stay valid for every step."""
    ema_tensors = [t for t in (*ema.parameters(), *ema.buffers()) if t.is_floating_point()]
    tensors = [t for t in (*model.parameters(), *model.buffers()) if t.is_floating_point()]
    return ema_tensors, tensors


@torch.no_grad()
def lerp_ema(pairs: TensorLists, decay: float) -> None:
    """ema <- decay * ema + (1 - decay) * model over `ema_tensor_lists` pairs, in one fused
    foreach call (one multi-tensor kernel, no per-tensor Python loop, no host sync)."""
    torch._foreach_lerp_(pairs[0], pairs[1], 1.0 - decay)


def update_ema(ema: nn.Module, model: nn.Module, decay: float) -> None:
    """ema <- decay * ema + (1 - decay) * model, for all floating-point parameters and buffers."""
    lerp_ema(ema_tensor_lists(ema, model), decay)
