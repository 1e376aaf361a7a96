"""Precision and memory layout per device: what "auto" means, and the autocast region.

bf16 autocast runs convolutions and matrix products in bfloat16 (8-bit mantissa, fp32's range)
and keeps reductions, norms' statistics and the loss in float32; it needs no loss scaling.
"""

from __future__ import annotations

import contextlib

import torch

from .errors import DDPMError

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
PRECISIONS = ("auto", *DTYPES)


def has_fast_bf16(device: torch.device) -> bool:
    """Whether `device` does bf16 arithmetic natively (so bf16 autocast is faster than fp32):
    CUDA GPUs that report bf16 support, CPUs with AVX512-BF16 or AMX tiles."""
    if device.type == "cuda":
        return bool(torch.cuda.is_bf16_supported())  # untyped in torch
    if device.type == "cpu":
        probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
        return any(getattr(torch.cpu, name, lambda: False)() for name in probes)
    return False


def resolve_precision(precision: str, device: torch.device) -> str:
    """ "auto" -> "bf16" on devices with fast bf16 arithmetic, else "fp32"; others unchanged."""
    if precision not in PRECISIONS:
        raise DDPMError(f"unknown precision {precision!r}; known: {', '.join(PRECISIONS)}")
    if precision != "auto":
        return precision
    return "bf16" if has_fast_bf16(device) else "fp32"


def preferred_memory_format(device: torch.device) -> torch.memory_format:
    """channels_last on CUDA (cuDNN's fastest layout for convolutions, with bf16 or fp16); the
    default layout elsewhere: on CPUs, PyTorch's GroupNorm is 5-8x slower in channels_last at
    few channels per group, more than the convolutions gain (README, Performance)."""
    return torch.channels_last if device.type == "cuda" else torch.contiguous_format


def autocast_context(
    device: torch.device, precision: str
) -> contextlib.AbstractContextManager[None]:
    """The autocast region for a precision ("auto" is resolved for `device` first)."""
    precision = resolve_precision(precision, device)
    if precision == "fp32":
        return contextlib.nullcontext()
    if precision == "fp16" and device.type != "cuda":
        raise DDPMError("precision fp16 needs a CUDA device; use bf16 on the CPU")
    return torch.autocast(device.type, dtype=DTYPES[precision])
