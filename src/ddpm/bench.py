"""`ddpm bench`: parameters, forward GFLOP per image, training and sampling throughput, peak memory.

Times the same step function the training loop runs, after warm-up, with a device sync only at
the ends of each timed window.
"""

from __future__ import annotations

import resource
import sys
import time
from dataclasses import asdict, dataclass

import torch
from torch.utils.flop_counter import FlopCounterMode

from .builders import build_model, build_schedule
from .config import RunConfig
from .generate import generate
from .train.step import make_trainer


@dataclass(frozen=True)
class BenchResult:
    preset: str
    device: str
    batch_size: int
    precision: str
    parameters: int
    forward_gflop_per_image: float
    train_images_per_s: float
    sample_steps: int
    sample_images_per_s: float
    peak_memory_mb: float
    peak_memory_kind: str

    def as_dict(self) -> dict:
        return asdict(self)

    def lines(self) -> list[str]:
        return [
            f"preset: {self.preset}  device: {self.device}  batch: {self.batch_size}  "
            f"precision: {self.precision}",
            f"parameters: {self.parameters:,}",
            f"forward: {self.forward_gflop_per_image:.4f} GFLOP/image",
            f"train: {self.train_images_per_s:.1f} images/s",
            f"sample ddim-{self.sample_steps}: {self.sample_images_per_s:.1f} images/s",
            f"peak memory: {self.peak_memory_mb:.0f} MB ({self.peak_memory_kind})",
        ]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def forward_gflop_per_image(net: torch.nn.Module, config: RunConfig, device: torch.device) -> float:
    """Count the forward pass's floating-point operations (a multiply-add counts as 2)."""
    shape = (2, config.data.channels, config.data.image_size, config.data.image_size)
    x, t = torch.zeros(shape, device=device), torch.zeros(2, dtype=torch.long, device=device)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        net(x, t)
    return counter.get_total_flops() / 2 / 1e9


@dataclass(frozen=True)
class ModelSize:
    parameters: int
    forward_gflop_per_image: float


def model_size(config: RunConfig) -> ModelSize:
    """Parameter count and forward GFLOP per image, computed on the meta device (no memory, no
    arithmetic), so even large presets are described instantly."""
    with torch.device("meta"):
        net = build_model(config)
    parameters = sum(p.numel() for p in net.parameters())
    return ModelSize(parameters, forward_gflop_per_image(net, config, torch.device("meta")))


def _peak_memory(device: torch.device) -> tuple[float, str]:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20, "CUDA max allocated"
    kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return kib / (2**20 if sys.platform == "darwin" else 2**10), "process peak RSS"


def time_training(
    config: RunConfig, device: torch.device, *, batch_size: int, steps: int, warmup: int
) -> tuple[float, torch.nn.Module]:
    """Images/s of the real training step on random data in [-1, 1]."""
    trainer = make_trainer(config, device)
    shape = (batch_size, config.data.channels, config.data.image_size, config.data.image_size)
    x0 = torch.rand(shape, generator=torch.Generator().manual_seed(0)).mul(2).sub(1).to(device)
    for n in range(warmup):
        trainer.step(n, x0, None)
    _sync(device)
    start = time.perf_counter()
    for n in range(warmup, warmup + steps):
        trainer.step(n, x0, None)
    _sync(device)
    return steps * batch_size / (time.perf_counter() - start), trainer.ema


def run_bench(
    config: RunConfig,
    *,
    preset: str,
    device: torch.device,
    batch_size: int,
    train_steps: int = 20,
    sample_steps: int = 50,
) -> BenchResult:
    """Measure one configuration; the global RNG is left as it was."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        train_rate, net = time_training(
            config, device, batch_size=batch_size, steps=train_steps, warmup=3
        )
        net.eval()
        schedule = build_schedule(config)
        kwargs = dict(
            n=batch_size, sampler="ddim", steps=sample_steps, batch_size=batch_size, progress=False
        )
        generate(net, schedule, config, **{**kwargs, "steps": 2})  # warm-up
        _sync(device)
        start = time.perf_counter()
        generate(net, schedule, config, **kwargs)
        _sync(device)
        sample_rate = batch_size / (time.perf_counter() - start)
        memory, kind = _peak_memory(device)
        return BenchResult(
            preset=preset,
            device=str(device),
            batch_size=batch_size,
            precision=config.train.precision,
            parameters=sum(p.numel() for p in net.parameters()),
            forward_gflop_per_image=forward_gflop_per_image(net, config, device),
            train_images_per_s=train_rate,
            sample_steps=sample_steps,
            sample_images_per_s=sample_rate,
            peak_memory_mb=memory,
            peak_memory_kind=kind,
        )
