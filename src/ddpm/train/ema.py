"""Exponential moving average of the weights, with the usual warm-up."""

from __future__ import annotations

import torch
from torch import nn

TensorLists = tuple[list[torch.Tensor], list[torch.Tensor]]


def ema_decay_at(num_updates: int, decay: float) -> float:
    """decay_n = min(decay, (1 + n) / (10 + n)): early updates follow the weights closely, so a short
    run does not sample from weights that are still mostly the random initialisation."""
    return min(decay, (1 + num_updates) / (10 + num_updates))


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
