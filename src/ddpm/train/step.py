"""The training step: forward, loss, backward, clip, AdamW, EMA, with no host synchronisation.

Shared by the training loop and the benchmark, so `ddpm bench` times exactly what training runs.
"""

from __future__ import annotations

import contextlib
import copy
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from ..builders import build_model, build_schedule
from ..config import RunConfig, TrainConfig
from ..data import step_generator
from ..diffusion import gather, training_loss
from ..errors import DDPMError
from ..models import UNet
from .ema import ema_decay_at, update_ema


def lr_at(step: int, train: TrainConfig) -> float:
    """Learning rate at a step: linear warm-up to train.lr, then constant or cosine decay to 0.
    A pure function of the step, so the schedule's whole state is the step counter."""
    if step < train.warmup_steps:
        return train.lr * (step + 1) / train.warmup_steps
    if train.lr_schedule == "cosine":
        span = max(1, train.num_steps - train.warmup_steps)
        progress = min(1.0, (step - train.warmup_steps) / span)
        return train.lr * 0.5 * (1 + math.cos(math.pi * progress))
    return train.lr


def autocast_context(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    if precision == "fp32":
        return contextlib.nullcontext()
    if precision == "fp16" and device.type != "cuda":
        raise DDPMError("train.precision=fp16 needs a CUDA device; use bf16 on the CPU")
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device.type, dtype=dtype)


@dataclass(eq=False)
class Trainer:
    """The objects a run trains: the network, its EMA copy and the optimizer, with the step."""

    model: UNet
    ema: UNet
    optimizer: torch.optim.Optimizer
    step: Callable[[int, torch.Tensor, torch.Tensor | None], tuple[torch.Tensor, torch.Tensor]]


def make_trainer(config: RunConfig, device: torch.device) -> Trainer:
    """Build model, EMA and AdamW on `device` and the step function `step(n, x0, labels)`, which
    runs optimizer step n on a batch and returns (mean loss, grad norm) as device tensors."""
    train, diff = config.train, config.diffusion
    model = build_model(config).to(device)
    ema = copy.deepcopy(model).requires_grad_(False).eval()
    fused = device.type == "cuda"
    optimizer = torch.optim.AdamW(
        model.parameters(),
        lr=train.lr,
        weight_decay=train.weight_decay,
        fused=fused,
        foreach=None if fused else True,
    )
    forward = torch.compile(model) if train.compile else model
    alpha_bar = build_schedule(config).alpha_bar.to(device=device, dtype=torch.float32)
    num_timesteps, null_label = config.diffusion.num_timesteps, model.null_label
    scaler = torch.amp.GradScaler(device.type, enabled=train.precision == "fp16")

    def step(
        n: int, x0: torch.Tensor, labels: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        model.train()
        generator = step_generator(train.seed, n, stream=2)
        t = torch.randint(num_timesteps, (x0.shape[0],), generator=generator).to(device)
        eps = torch.randn(x0.shape, generator=generator).to(device)
        if labels is not None and config.model.num_classes:
            drop = torch.rand(x0.shape[0], generator=generator).to(device) < train.label_dropout
            labels = torch.where(drop, torch.full_like(labels, null_label), labels)
        else:
            labels = None
        with autocast_context(device, train.precision):
            losses = training_loss(
                forward,
                x0,
                t,
                eps,
                gather(alpha_bar, t, x0.ndim),
                prediction=diff.prediction,
                loss_type=diff.loss,
                labels=labels,
            )
        loss = losses.mean()
        for group in optimizer.param_groups:
            group["lr"] = lr_at(n, train)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)
        grad_norm = nn.utils.clip_grad_norm_(model.parameters(), train.grad_clip or float("inf"))
        scaler.step(optimizer)
        scaler.update()
        update_ema(ema, model, ema_decay_at(n, train.ema_decay))
        return loss.detach(), grad_norm.detach()

    return Trainer(model=model, ema=ema, optimizer=optimizer, step=step)
