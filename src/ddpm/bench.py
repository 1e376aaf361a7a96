"""`ddpm bench`: parameters, forward GFLOP per image, training and sampling throughput, peak memory.

Times the same step function the training loop runs, after warm-up, with a device sync only at
the ends of each timed window.
"""

from __future__ import annotations

import resource
import sys
import time
from dataclasses import asdict, dataclass, replace

import torch
from torch.utils.flop_counter import FlopCounterMode

from .builders import build_model, build_schedule
from .config import RunConfig
from .generate import generate, sample_config
from .loaded_run import LoadedRun
from .models import UNet
from .precision import DTYPES, resolve_precision
from .train.step import make_trainer


@dataclass(frozen=True)
class BenchResult:
    preset: str
    device: str
    batch_size: int
    precision: str  # training's, resolved for the device
    sample_precision: str
    parameters: int
    forward_gflop_per_image: float
    train_images_per_s: float
    sample_steps: int
    sample_images_per_s: float
    peak_memory_mb: float
    peak_memory_kind: str
    ceiling_gflops: float  # a large 3x3 convolution at the training precision on this device
    sample_ceiling_gflops: float  # the same at the sampling precision

    @property
    def train_gflops(self) -> float:
        """Achieved training GFLOP/s: forward, backward (2x forward) per image."""
        return 3 * self.forward_gflop_per_image * self.train_images_per_s

    @property
    def sample_gflops(self) -> float:
        return self.sample_steps * self.forward_gflop_per_image * self.sample_images_per_s

    def as_dict(self) -> dict[str, object]:
        return {
            **asdict(self),
            "train_gflops": self.train_gflops,
            "sample_gflops": self.sample_gflops,
        }

    def lines(self) -> list[str]:
        return [
            f"preset: {self.preset}  device: {self.device}  batch: {self.batch_size}  "
            f"precision: train {self.precision}, sample {self.sample_precision}",
            f"parameters: {self.parameters:,}",
            f"forward: {self.forward_gflop_per_image:.4f} GFLOP/image",
            f"ceiling: {self.ceiling_gflops:.0f} GFLOP/s ({self.precision} 3x3 convolution, "
            f"{CEILING_SHAPE[1]} channels at {CEILING_SHAPE[2]}x{CEILING_SHAPE[3]}, batch {CEILING_SHAPE[0]})",
            f"train: {self.train_images_per_s:.1f} images/s, {self.train_gflops:.0f} GFLOP/s "
            f"({self.train_gflops / self.ceiling_gflops:.0%} of the ceiling)",
            f"sample ddim-{self.sample_steps}: {self.sample_images_per_s:.1f} images/s, "
            f"{self.sample_gflops:.0f} GFLOP/s ({self.sample_gflops / self.sample_ceiling_gflops:.0%} "
            f"of the {self.sample_precision} ceiling)",
            f"peak memory: {self.peak_memory_mb:.0f} MB ({self.peak_memory_kind})",
        ]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def forward_gflop_per_image(net: torch.nn.Module, config: RunConfig, device: torch.device) -> float:
    """Count the forward pass's floating-point operations per image (a multiply-add counts as 2,
    as in the papers' figures: 12.1 GFLOP for Ho et al.'s CIFAR-10 U-Net). Convolutions, matrix
    products and attention are counted; elementwise work is not."""
    shape = (2, config.data.channels, config.data.image_size, config.data.image_size)
    x, t = torch.zeros(shape, device=device), torch.zeros(2, dtype=torch.long, device=device)
    counter = FlopCounterMode(display=False)  # outside `with`: its __enter__ is untyped
    with counter, torch.no_grad():
        net(x, t)
    return counter.get_total_flops() / shape[0] / 1e9


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


CEILING_SHAPE = (16, 256, 32, 32)


def conv_ceiling_gflops(
    device: torch.device,
    dtype: torch.dtype,
    *,
    repeats: int = 5,
    shape: tuple[int, int, int, int] = CEILING_SHAPE,
) -> float:
    """GFLOP/s of a large 3x3 convolution (256 -> 256 channels, channels_last, no grad): what
    this device reaches on the U-Net's main operation when nothing else is in the way. The best
    of `repeats` timings after a warm-up, since the ceiling is a maximum."""
    b, c, h, w = shape
    x = torch.randn(shape, device=device, dtype=dtype).contiguous(memory_format=torch.channels_last)
    conv = torch.nn.Conv2d(c, c, 3, padding=1, bias=False).to(device=device, dtype=dtype)
    conv = conv.to(memory_format=torch.channels_last)
    flop = 2 * b * c * c * 9 * h * w
    best = float("inf")
    with torch.no_grad():
        for i in range(repeats + 1):
            _sync(device)
            start = time.perf_counter()
            conv(x)
            _sync(device)
            if i:
                best = min(best, time.perf_counter() - start)
    return flop / best / 1e9


def _peak_memory(device: torch.device) -> tuple[float, str]:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20, "CUDA max allocated"
    kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return kib / (2**20 if sys.platform == "darwin" else 2**10), "process peak RSS"


def time_training(
    config: RunConfig, device: torch.device, *, batch_size: int, steps: int, warmup: int
) -> tuple[float, UNet]:
    """Images/s of the real training step on random data in [-1, 1], and the EMA network."""
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


def estimate_training_rate(
    config: RunConfig, device: torch.device, *, batch_size: int, steps: int = 3
) -> float:
    """Training images/s of `config` here, from a few real steps on random data (after one
    warm-up step) at a small batch: a first estimate, not a benchmark (`ddpm bench` is one).
    The global RNG is left as it was."""
    with torch.random.fork_rng(devices=[]):
        rate, _ = time_training(config, device, batch_size=batch_size, steps=steps, warmup=1)
    return rate


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
        run = LoadedRun(net, schedule, config, step=train_steps)
        sample = sample_config(config, sampler="ddim", steps=sample_steps, batch_size=batch_size)
        generate(run, replace(sample, steps=2), n=batch_size, progress=False)  # warm-up
        _sync(device)
        start = time.perf_counter()
        generate(run, sample, n=batch_size, progress=False)
        _sync(device)
        sample_rate = batch_size / (time.perf_counter() - start)
        memory, kind = _peak_memory(device)
        precision = resolve_precision(config.train.precision, device)
        sample_precision = resolve_precision(config.sample.precision, device)
        ceiling = conv_ceiling_gflops(device, DTYPES[precision])
        return BenchResult(
            preset=preset,
            device=str(device),
            batch_size=batch_size,
            precision=precision,
            sample_precision=sample_precision,
            parameters=sum(p.numel() for p in net.parameters()),
            forward_gflop_per_image=forward_gflop_per_image(net, config, device),
            train_images_per_s=train_rate,
            sample_steps=sample_steps,
            sample_images_per_s=sample_rate,
            peak_memory_mb=memory,
            peak_memory_kind=kind,
            ceiling_gflops=ceiling,
            sample_ceiling_gflops=ceiling
            if sample_precision == precision
            else conv_ceiling_gflops(device, DTYPES[sample_precision]),
        )
