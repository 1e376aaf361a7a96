"""Exponential moving average of the weights, with the usual warm-up."""

from __future__ import annotations

import torch
from torch import nn


def ema_decay_at(num_updates: int, decay: float) -> float:
    """decay_n = min(decay, (1 + n) / (10 + n)): early updates follow the weights closely, so a short
    run does not sample from weights that are still mostly the random initialisation."""
    return min(decay, (1 + num_updates) / (10 + num_updates))


@torch.no_grad()
def update_ema(ema: nn.Module, model: nn.Module, decay: float) -> None:
    """ema <- decay * ema + (1 - decay) * model, for all floating-point parameters and buffers,
    in one fused foreach call (no per-tensor Python loop on the device)."""
    ema_tensors = [t for t in (*ema.parameters(), *ema.buffers()) if t.is_floating_point()]
    tensors = [t for t in (*model.parameters(), *model.buffers()) if t.is_floating_point()]
    torch._foreach_lerp_(ema_tensors, tensors, 1.0 - decay)
