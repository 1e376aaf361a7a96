"""What machine a run trained on, for its report: CPU model and the instruction-set flags that
decide its speed (bf16, AVX-512, AMX), core count, torch version and the device."""

from __future__ import annotations

import os
import platform
from pathlib import Path

import torch

# the /proc/cpuinfo flags that change the speed of convolutions and matrix products
SPEED_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_bf16",
               "amx_int8", "asimd", "sve")  # fmt: skip


def _cpuinfo(path: Path = Path("/proc/cpuinfo")) -> tuple[str, list[str]]:
    """(model name, speed flags present) from Linux's cpuinfo; ("", []) elsewhere."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "", []
    model, flags = "", set[str]()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip().lower()
        if key == "model name" and not model:
            model = value.strip()
        elif key in ("flags", "features") and not flags:  # x86 / arm64
            flags = set(value.split())
    return model, [f for f in SPEED_FLAGS if f in flags]


def machine_info(device: torch.device) -> dict[str, str]:
    """Plain strings describing this machine and `device`, e.g. {"cpu": "Intel(R) Xeon(R) ...",
    "cpu_flags": "avx2 fma avx512f", "cpus": "2", "torch": "2.14.1", "device": "cpu"}."""
    model, flags = _cpuinfo()
    info = {
        "cpu": model or platform.processor() or platform.machine() or "unknown",
        "cpu_flags": " ".join(flags) or "none of " + ", ".join(SPEED_FLAGS[:3]),
        "cpus": str(os.cpu_count() or "?"),
        "torch_threads": str(torch.get_num_threads()),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "device": str(device),
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info
