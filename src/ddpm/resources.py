"""The memory a training run needs, estimated from its config before anything is allocated, and
the memory of the machine it would run on.

`ddpm train` checks one against the other (`check_training_fits`) so that a config that cannot fit
(data.image_size=2048, model.base_channels=100000, ...) is one line naming both numbers, not an
allocator traceback minutes later. The estimate is rough but errs high: fp32 everywhere (bf16
autocast keeps less), every saved activation alive at once.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch

from .builders import build_model
from .config import RunConfig, UNetConfig
from .errors import DDPMError

BYTES_FP32 = 4
# weights, their gradients, AdamW's exp_avg and exp_avg_sq, and the EMA copy: five fp32 copies
PARAMETER_COPIES = 5
# Bytes one training step adds, per fp32 element of `activation_elements` x batch. Calibrated with
# benchmarks/activation_memory.py (fp32, CPU, torch 2.14, one step over a warmed-up baseline):
# the peak-RSS growth was 14.9 / 14.5 / 11.1 / 10.3 / 10.3 times that sum x batch x 4 bytes for
# digits (8x8, batch 64), digits with ConvNeXt blocks, fashion-mnist (28x28, linear attention,
# batch 64), cifar10-ho2020 (32x32, batch 8) and celeba64 (64x64, batch 4); the tiny digits
# runs carry the most fixed overhead. 16 stays above all five. Self-attention adds no
# H*W x H*W term: scaled_dot_product_attention's flash kernels (CPU and CUDA) are linear in H*W.
ACTIVATION_FACTOR = 16
# float64 tables of T entries: the schedule's betas and alpha_bar and the ones derived from them
# while training and sampling, and train.t_sampling=importance's history of 10 losses per t
SCHEDULE_TABLES = 16
IMPORTANCE_HISTORY = 10


def _gb(num_bytes: float) -> str:
    """'84.4 MB', '1.9 GB', '146.4 TB' (decimal units)."""
    for unit, size in (("TB", 1e12), ("GB", 1e9)):
        if num_bytes >= size / 10:
            return f"{num_bytes / size:.1f} {unit}"
    return f"{num_bytes / 1e6:.1f} MB"


def _count(n: int) -> str:
    """'755.0K', '35.7M', '7.3G' parameters."""
    for unit, size in (("G", 1e9), ("M", 1e6)):
        if n >= size / 10:
            return f"{n / size:.1f}{unit}"
    return f"{n / 1e3:.1f}K"


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes one training process needs, by what holds them."""

    parameters: int  # count of network parameters
    parameter_bytes: int  # weights, gradients, AdamW moments, EMA
    activation_bytes: int  # saved for the backward pass at `batch_size`
    schedule_bytes: int  # per-timestep tables
    batch_size: int

    @property
    def total(self) -> int:
        return self.parameter_bytes + self.activation_bytes + self.schedule_bytes

    def describe(self) -> str:
        """One line, e.g. '1.9 GB (35.7M parameters with gradients, AdamW and EMA: 0.7 GB;
        activations at batch 128: 1.2 GB; schedule tables: 0.1 MB)'."""
        return (
            f"{_gb(self.total)} ({_count(self.parameters)} parameters with gradients, AdamW "
            f"and EMA: {_gb(self.parameter_bytes)}; activations at batch {self.batch_size}: "
            f"{_gb(self.activation_bytes)}; schedule tables: {_gb(self.schedule_bytes)})"
        )


def count_parameters(config: RunConfig) -> int:
    """The network's exact parameter count, from a copy built on the meta device (shapes only:
    nothing is allocated, so a config of any size costs milliseconds)."""
    with torch.device("meta"):
        net = build_model(config)
    return sum(p.numel() for p in net.parameters())


def activation_elements(model: UNetConfig, image_size: int) -> int:
    """Per image: the sum over the U-Net's levels l of C_l * H_l * W_l * (layers at level l), at
    C_l = base_channels * channel_mult[l] channels and H_l = image_size / 2**l. A level has
    2 * num_res_blocks + 1 residual blocks (the encoder's, the decoder's one more) and as many
    attention layers when it has attention (model.attention_resolutions, or every level with
    model.linear_attention); the middle has two blocks and one attention layer. The size of the
    feature maps the network computes: ACTIVATION_FACTOR converts it to what training keeps."""
    blocks = 2 * model.num_res_blocks + 1
    total, size = 0, image_size
    for mult in model.channel_mult:
        attention = size in model.attention_resolutions or model.linear_attention
        total += model.base_channels * mult * size * size * blocks * (2 if attention else 1)
        size = max(1, size // 2)
    # the middle: the last level's size (int(): int ** int is typed Any, a negative power a float)
    size = int(image_size // 2 ** (len(model.channel_mult) - 1))
    return total + 3 * model.base_channels * model.channel_mult[-1] * size * size


def estimate_training_memory(config: RunConfig, *, batch_size: int | None = None) -> MemoryEstimate:
    """What one training process needs at `batch_size` (default train.batch_size)."""
    batch_size = batch_size or config.train.batch_size
    parameters = count_parameters(config)
    elements = activation_elements(config.model, config.data.image_size)
    tables = SCHEDULE_TABLES + (
        IMPORTANCE_HISTORY if config.train.t_sampling == "importance" else 0
    )
    return MemoryEstimate(
        parameters=parameters,
        parameter_bytes=PARAMETER_COPIES * BYTES_FP32 * parameters,
        activation_bytes=ACTIVATION_FACTOR * BYTES_FP32 * batch_size * elements,
        schedule_bytes=8 * tables * config.diffusion.num_timesteps,
        batch_size=batch_size,
    )


@dataclass(frozen=True)
class DeviceMemory:
    total: int  # bytes
    description: str  # e.g. "24.7 GB of RAM" or "16.9 GB on cuda:0 (12.0 GB free)"


def _cgroup_limit() -> int | None:
    """The memory limit of this process's cgroup (v2, else v1), if one is set."""
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            text = Path(path).read_text().strip()
        except OSError:
            continue
        if text.isdigit():
            return int(text)
    return None


def device_memory(device: torch.device) -> DeviceMemory:
    """The memory of `device`: a CUDA device's total (torch.cuda.mem_get_info), else the
    machine's RAM (os.sysconf), or the container's limit when that is lower."""
    if device.type == "cuda":
        free, total = torch.cuda.mem_get_info(device)
        return DeviceMemory(total, f"{_gb(total)} on {device} ({_gb(free)} free)")
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    limit = _cgroup_limit()
    if limit is not None and limit < total:
        return DeviceMemory(limit, f"{_gb(limit)} (this container's memory limit)")
    return DeviceMemory(total, f"{_gb(total)} of RAM")


def check_training_fits(
    config: RunConfig, device: torch.device, *, batch_size: int | None = None
) -> tuple[MemoryEstimate, DeviceMemory]:
    """(the estimate, the device's memory), or a DDPMError naming both when the estimate exceeds
    the memory."""
    estimate = estimate_training_memory(config, batch_size=batch_size)
    available = device_memory(device)
    if estimate.total > available.total:
        raise DDPMError(
            f"this config needs about {estimate.describe()}, more than the {available.description}"
            f" here; lower train.batch_size, data.image_size or model.base_channels"
        )
    return estimate, available


def check_images_fit(config: RunConfig, n: int, *, option: str) -> None:
    """DDPMError when n generated images cannot be held in RAM: generate() returns them as one
    float32 tensor on the CPU, concatenated from its batches (two copies at the peak), then
    converted to uint8. option: what the caller calls n in the message (a flag, a parameter)."""
    d = config.data
    needed = n * d.channels * d.image_size * d.image_size * (2 * BYTES_FP32 + 1)
    available = device_memory(torch.device("cpu"))
    if needed > available.total:
        raise DDPMError(
            f"{option} {n} images of {d.channels}x{d.image_size}x{d.image_size} need about "
            f"{_gb(needed)}, more than the {available.description} here"
        )
