"""The training step: forward, loss, backward, clip, AdamW, EMA, with no host synchronisation.

Every random draw of step n (augmentation, t, noise, label dropout, dropout masks) comes from
generators on the step's device seeded by (train.seed, n, purpose), drawn for the global batch
and sliced to this process's rows: nothing is copied from the host and nothing depends on what
ran before, so a resumed step and a step on N processes draw exactly what the uninterrupted
one-process step would.

Shared by the training loop and the benchmark, so `ddpm bench` times exactly what training runs.
"""

from __future__ import annotations

import copy
import functools
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from ..augment import augment, draw_augment
from ..builders import build_model, build_schedule
from ..compiling import CompiledNetwork, compile_errors
from ..config import RunConfig, TrainConfig
from ..errors import DDPMError
from ..models import DropoutNoise, UNet, set_dropout_noise
from ..noise_levels import laplace_timesteps, lognormal_timesteps
from ..precision import autocast_context, preferred_memory_format, resolve_precision
from ..rng import global_batch_rows, step_generator
from .ema import ema_decay_at, ema_tensor_lists, gamma_from_sigma_rel, lerp_ema, power_ema_decay_at
from .importance import ImportanceSampler, gather_global_rows
from .objective import objective


def lr_at(step: int, train: TrainConfig, *, fraction: float | None = None) -> float:
    """Learning rate at a step: linear warm-up to train.lr, then constant or cosine decay to 0.
    A pure function of the step, so the schedule's whole state is the step counter.

    With a time budget, `fraction` (of the budget spent, in [0, 1]) drives the cosine decay
    instead, multiplied by the warm-up factor so the rate has no jump where warm-up ends."""
    if fraction is not None:
        warm = min(1.0, (step + 1) / train.warmup_steps) if train.warmup_steps else 1.0
        decay = 0.5 * (1 + math.cos(math.pi * fraction)) if train.lr_schedule == "cosine" else 1.0
        return train.lr * warm * decay
    if step < train.warmup_steps:
        return train.lr * (step + 1) / train.warmup_steps
    if train.lr_schedule == "cosine":
        span = max(1, train.num_steps - train.warmup_steps)
        progress = min(1.0, (step - train.warmup_steps) / span)
        return train.lr * 0.5 * (1 + math.cos(math.pi * progress))
    return train.lr


def check_lr_continuity(saved: TrainConfig, resumed: TrainConfig, step: int) -> None:
    """Refuse a resume whose new train.num_steps would make a cosine schedule's learning rate jump
    at `step` (the decay is stretched over the new length, so the rate at `step` changes). An
    explicit change of train.lr or train.lr_schedule is the user's choice and is allowed."""
    if (saved.lr, saved.lr_schedule) != (resumed.lr, resumed.lr_schedule) or saved.time_budget:
        return  # a budget's decay follows its clock, not train.num_steps
    before, after = lr_at(step, saved), lr_at(step, resumed)
    if math.isclose(before, after, rel_tol=1e-9, abs_tol=1e-15):
        return
    how = (
        f"to go on at its current rate, add --set train.lr_schedule=constant "
        f"--set train.lr={before:.6g}"
        if before > 0
        else "to train on after its decay, choose a rate: --set train.lr_schedule=constant "
        "--set train.lr=RATE"
    )
    raise DDPMError(
        f"train.num_steps {saved.num_steps} -> {resumed.num_steps} would make the cosine "
        f"learning rate jump from {before:.3g} to {after:.3g} at step {step}; {how}"
    )


StepResult = tuple[torch.Tensor, torch.Tensor, torch.Tensor]
StepFunction = Callable[..., StepResult]  # (n, x0, labels, lr=None) -> (loss, grad norm, finite)


def ema_schedule(train: TrainConfig) -> Callable[[int], float]:
    """The EMA decay at each update n: train.ema_schedule "warmup" or "power" (ddpm.train.ema)."""
    if train.ema_schedule == "power":
        gamma = gamma_from_sigma_rel(train.ema_sigma_rel)
        return lambda n: power_ema_decay_at(n, gamma)
    return lambda n: ema_decay_at(n, train.ema_decay)


def timestep_sampler(
    config: RunConfig, alpha_bar_64: torch.Tensor, *, rank: int, world_size: int
) -> Callable[[torch.Generator, int], torch.Tensor]:
    """(generator, batch) -> this process's t [batch] by train.t_sampling, drawn for the global
    batch (ddpm.noise_levels); alpha_bar_64 [T] float64 on the step's device."""
    train, num_timesteps = config.train, config.diffusion.num_timesteps

    def draw(generator: torch.Generator, batch: int) -> torch.Tensor:
        def mine(fn: Callable[..., torch.Tensor]) -> torch.Tensor:
            return global_batch_rows(fn, (batch,), generator, rank=rank, world_size=world_size)

        if train.t_sampling == "lognormal":
            z = mine(torch.randn)
            return lognormal_timesteps(z, alpha_bar_64, p_mean=train.p_mean, p_std=train.p_std)
        if train.t_sampling == "laplace":
            u = mine(torch.rand)
            return laplace_timesteps(u, alpha_bar_64, mu=train.laplace_mu, b=train.laplace_b)
        return mine(lambda shape, **kw: torch.randint(num_timesteps, shape, **kw))

    return draw


@dataclass(eq=False)
class Trainer:
    """The objects a run trains: the network, its EMA copy and the optimizer, with the step; and
    with train.t_sampling=importance the sampler's history (ddpm.train.importance)."""

    model: UNet
    ema: UNet
    optimizer: torch.optim.Optimizer
    step: StepFunction
    importance: ImportanceSampler | None = None


def make_trainer(
    config: RunConfig,
    device: torch.device,
    *,
    rank: int = 0,
    world_size: int = 1,
    compile_backend: str | Callable[..., object] = "inductor",
) -> Trainer:
    """Build model, EMA and AdamW on `device` and the step function `step(n, x0, labels, lr=None)`
    (lr: the rate to use, default lr_at(n)), which runs optimizer step n on this process's share
    of the batch and returns device tensors
    (mean loss, grad norm, finite), with no host synchronisation. With world_size > 1 (inside a
    process group) the network is wrapped in DistributedDataParallel.

    A step whose gradient norm is not finite is skipped on the device: the fused AdamW kernel
    reads `found_inf` and leaves weights and moments untouched (fp16 runs use the grad scaler,
    which does the same and also lowers its scale).

    With train.compile the network runs through ddpm.compiling.CompiledNetwork (torch.compile with
    `compile_backend`, static shapes); a compile error, in the forward or the backward pass, reruns
    the step eagerly and keeps the run eager.
    """
    train, diff = config.train, config.diffusion
    model = build_model(config).to(device).use_memory_format(preferred_memory_format(device))
    ema = copy.deepcopy(model).requires_grad_(False).eval()
    ema_pairs = ema_tensor_lists(ema, model)
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=train.lr, weight_decay=train.weight_decay, fused=True
    )
    forward: Callable[..., torch.Tensor] = model
    if world_size > 1:
        from torch.nn.parallel import DistributedDataParallel

        forward = DistributedDataParallel(
            model, device_ids=[device] if device.type == "cuda" else None
        )
    compiled = CompiledNetwork(forward, backend=compile_backend) if train.compile else None
    alpha_bar_64 = build_schedule(config).alpha_bar.to(device)
    null_label = model.null_label
    scaler = torch.amp.GradScaler(device.type, enabled=train.precision == "fp16")
    dropout = DropoutNoise(step_generator(train.seed, 0, 3, device=device), rank, world_size)
    set_dropout_noise(model, dropout)
    precision = resolve_precision(train.precision, device)

    ema_decay = ema_schedule(train)
    draw_timesteps = timestep_sampler(config, alpha_bar_64, rank=rank, world_size=world_size)
    importance = (
        ImportanceSampler(diff.num_timesteps, device) if train.t_sampling == "importance" else None
    )

    def mine(
        draw: Callable[..., torch.Tensor], shape: tuple[int, ...], generator: torch.Generator
    ) -> torch.Tensor:
        return global_batch_rows(draw, shape, generator, rank=rank, world_size=world_size)

    def step(
        n: int, x0: torch.Tensor, labels: torch.Tensor | None, lr: float | None = None
    ) -> StepResult:
        lr = lr_at(n, train) if lr is None else lr
        if compiled is None or compiled.failed:
            return run_step(n, x0, labels, forward, lr)
        try:
            return run_step(n, x0, labels, compiled, lr)
        except compile_errors() as error:  # raised in the backward pass: nothing was updated yet
            compiled.fall_back(error)
        # retried outside the except block, whose traceback holds the failed step's activations
        return run_step(n, x0, labels, forward, lr)

    def run_step(
        n: int,
        x0: torch.Tensor,
        labels: torch.Tensor | None,
        net: Callable[..., torch.Tensor],
        lr: float,
    ) -> StepResult:
        model.train()
        generator = step_generator(train.seed, n, 2, device=device)
        dropout.generator = step_generator(train.seed, n, 3, device=device)
        batch = x0.shape[0]
        t_weights = None
        if importance is not None:  # Nichol & Dhariwal 2021, Sec. 3.3 (ddpm.train.importance)
            t, t_weights = importance.draw(generator, batch, rank=rank, world_size=world_size)
        else:
            t = draw_timesteps(generator, batch)
        eps = mine(torch.randn, tuple(x0.shape), generator)
        if labels is not None and config.model.num_classes:
            drop = mine(torch.rand, (batch,), generator)
            labels = torch.where(
                drop < train.label_dropout, torch.full_like(labels, null_label), labels
            )
        else:
            labels = None
        if config.data.augment_p > 0:  # x0 augmented before it is noised (Karras et al. 2022)
            draws = draw_augment(
                step_generator(train.seed, n, 4, device=device),
                batch,
                size=x0.shape[-1],
                rank=rank,
                world_size=world_size,
            )
            x0, params = augment(x0, draws, p=config.data.augment_p)
            net = functools.partial(net, augment=params)
        elif config.model.augment_dim:  # zeros: the layer still takes part, as DDP requires
            net = functools.partial(net, augment=x0.new_zeros(batch, config.model.augment_dim))
        with autocast_context(device, precision):
            losses, vlb = objective(net, x0, t, eps, alpha_bar_64, diff, labels=labels)
        loss = (losses if t_weights is None else losses * t_weights).mean()
        for group in optimizer.param_groups:
            group["lr"] = lr
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)
        grad_norm = nn.utils.clip_grad_norm_(model.parameters(), train.grad_clip or float("inf"))
        finite = grad_norm.isfinite() & loss.detach().isfinite()
        if not scaler.is_enabled():
            # read by the fused kernel: skip if 1 (an attribute torch's GradScaler sets the same way)
            optimizer.found_inf = (~finite).float()  # type: ignore[attr-defined]
        scaler.step(optimizer)
        scaler.update()
        lerp_ema(ema_pairs, ema_decay(n))
        if importance is not None:  # the unweighted L_vlb of the global batch's rows
            assert vlb is not None  # the config requires diffusion.loss=hybrid with importance
            importance.update(
                gather_global_rows(t, world_size),
                gather_global_rows(vlb.detach(), world_size),
                finite,
            )
        return loss.detach(), grad_norm.detach(), finite

    return Trainer(model=model, ema=ema, optimizer=optimizer, step=step, importance=importance)
