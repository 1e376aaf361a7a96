"""Device choice: `auto` picks CUDA when present, else the CPU."""

from __future__ import annotations

import os

import torch

from .errors import DDPMError


def resolve_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise DDPMError("device 'cuda' was asked for, but no CUDA device is available")
    if name not in ("cpu", "cuda"):
        raise DDPMError(f"unknown device {name!r}; use auto, cpu or cuda")
    return torch.device(name)


def use_deterministic_algorithms() -> None:
    """Ask PyTorch for deterministic kernels everywhere (slower on GPUs). On CUDA, cuBLAS also
    needs a fixed workspace, which it reads from its documented environment variable."""
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.benchmark = False
