"""Calibrates ddpm.resources.ACTIVATION_FACTOR: what one training step really keeps, per element of
`activation_elements` x batch x 4 bytes.

    python benchmarks/activation_memory.py

Each configuration runs in a fresh process (so the peak RSS is its own): build the trainer (fp32),
take two steps at batch 1 (gradients and AdamW's moments now exist), read the resident set size,
take one step at the configuration's batch, and read the peak RSS. The growth is the activation
memory of the step as the allocator really saw it; the bytes the autograd graph saved (counted by
unique storage through saved_tensors_hooks) are printed beside it. Prints one line per config and
the largest ratio, which ACTIVATION_FACTOR must not be below.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys

import torch

from ddpm.config import from_dict, load_preset
from ddpm.resources import BYTES_FP32, activation_elements
from ddpm.train.step import make_trainer

CONFIGS = {  # name: (preset, overrides, batch)
    "digits": ("digits", {}, 64),
    "digits convnext": ("digits", {"model": {"block": "convnext"}}, 64),
    "fashion-mnist": ("fashion-mnist", {}, 64),
    "cifar10-ho2020": ("cifar10-ho2020", {}, 8),
    "celeba64": ("celeba64", {}, 4),
}


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()


def measure(name: str) -> dict:
    """Run in a fresh process: the peak RSS growth and the saved bytes of one step at `batch`."""
    preset, overrides, batch = CONFIGS[name]
    config = from_dict({**overrides, "train": {"precision": "fp32"}}, base=load_preset(preset))
    trainer = make_trainer(config, torch.device("cpu"))
    shape = (config.data.channels, config.data.image_size, config.data.image_size)
    x = torch.rand((batch, *shape), generator=torch.Generator().manual_seed(0)) * 2 - 1
    for n in range(2):
        trainer.step(n, x[:1], None)
    baseline = _rss_bytes()
    saved: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        saved[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        trainer.step(2, x, None)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    unit = activation_elements(config.model, config.data.image_size) * batch * BYTES_FP32
    return {"growth": peak - baseline, "saved": sum(saved.values()), "unit": unit}


def main() -> None:
    if len(sys.argv) == 2:
        print(json.dumps(measure(sys.argv[1])))
        return
    worst = 0.0
    for name in CONFIGS:
        out = subprocess.run(
            [sys.executable, __file__, name], capture_output=True, text=True, check=True
        )
        m = json.loads(out.stdout.splitlines()[-1])
        ratio = m["growth"] / m["unit"]
        worst = max(worst, ratio)
        print(
            f"{name:16s} peak RSS growth {m['growth'] / 1e6:8.1f} MB  saved {m['saved'] / 1e6:8.1f}"
            f" MB  sum x batch x 4 B {m['unit'] / 1e6:7.2f} MB  growth / sum {ratio:5.1f}"
            f"  saved / sum {m['saved'] / m['unit']:5.1f}"
        )
    print(f"largest growth / sum: {worst:.1f}")


if __name__ == "__main__":
    main()
