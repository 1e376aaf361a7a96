"""ddpm against the usual alternatives, on the same architecture, side by side in one process.

    pip install -e '.[compare]'     # diffusers, denoising-diffusion-pytorch
    python benchmarks/compare.py --model fmnist
    python benchmarks/compare.py --model cifar10 --rounds 2
    python benchmarks/compare.py --model cifar10 --memory   # peak training memory, batch 32

Models: Ho et al.'s CIFAR-10 U-Net (ddpm's preset cifar10-ho2020; in diffusers, UNet2DModel with
google/ddpm-cifar10-32's configuration: the same 35.7M parameters) and a 3.9M-parameter
Fashion-MNIST U-Net (channels 32/64/128, two ResNet blocks per level, attention at 7x7, additive
time embedding; the same 3,939,393 parameters in ddpm and diffusers). lucidrains'
denoising_diffusion_pytorch.Unet has its own fixed block structure (RMSNorm, linear attention at
the other levels, pixel-unshuffle downsampling), so it is built at the nearest size with the
same widths and attention level; its parameter count and GFLOP/image are printed beside it.

Each system trains with its own usual code (diffusers: DDPMScheduler.add_noise and an MSE loss,
as its train_unconditional example, with EMAModel; lucidrains: GaussianDiffusion's own loss,
with ema_pytorch.EMA updated every step), AdamW, gradient clipping at 1, and samples with its own
DDIM-50 (diffusers: DDIMPipeline; lucidrains: GaussianDiffusion.ddim_sample). Settings: fp32 (the
alternatives' out-of-the-box default: for-loop AdamW and EMA), bf16 autocast, and bf16 autocast +
channels_last; the bf16 settings of the alternatives also get fused AdamW and foreach EMA. An
alternative's "best" is its fastest measured setting. ddpm runs its default path (precision
"auto": bf16 autocast on CPUs with AVX512-BF16/AMX; fused AdamW, foreach EMA) and fp32.

Timing: rounds alternate the systems (each round: a timed training window and one DDIM-50 run per
system); each figure is the median over rounds. Training GFLOP/s counts 3x the forward pass
(forward + backward); sampling 50 forward passes per image. The ceilings are a large 3x3
convolution (ddpm.bench.conv_ceiling_gflops), the best of the rounds.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import io
import resource
import statistics
import subprocess
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

import ddpm
from ddpm.bench import conv_ceiling_gflops
from ddpm.builders import build_model, build_schedule
from ddpm.config import RunConfig, from_dict
from ddpm.precision import resolve_precision
from ddpm.train.step import make_trainer

warnings.filterwarnings("ignore")
CPU = torch.device("cpu")
SAMPLE_STEPS = 50


@dataclass(frozen=True)
class ModelSpec:
    config: RunConfig  # ddpm's model (and the image shape)
    diffusers: dict
    lucidrains: dict
    batch: int


def model_specs() -> dict[str, ModelSpec]:
    fmnist = from_dict(
        {
            "model": {"num_res_blocks": 2, "linear_attention": False, "attention_head_dim": 32,
                      "conditioning": "additive", "dropout": 0.0},
            "train": {"grad_clip": 1.0},
        },
        base=ddpm.load_preset("fashion-mnist"),
    )  # fmt: skip
    return {
        "cifar10": ModelSpec(
            config=ddpm.load_preset("cifar10-ho2020"),
            diffusers=dict(
                sample_size=32,
                in_channels=3,
                out_channels=3,
                layers_per_block=2,
                block_out_channels=(128, 256, 256, 256),
                attention_head_dim=None,
                dropout=0.1,
                down_block_types=("DownBlock2D", "AttnDownBlock2D", "DownBlock2D", "DownBlock2D"),
                up_block_types=("UpBlock2D", "UpBlock2D", "AttnUpBlock2D", "UpBlock2D"),
            ),  # fmt: skip
            lucidrains=dict(
                dim=128,
                dim_mults=(1, 2, 2, 2),
                channels=3,
                dropout=0.1,
                full_attn=(False, True, False, False),
                attn_heads=1,
                attn_dim_head=256,
            ),  # fmt: skip
            batch=8,
        ),
        "fmnist": ModelSpec(
            config=fmnist,
            diffusers=dict(
                sample_size=28,
                in_channels=1,
                out_channels=1,
                layers_per_block=2,
                block_out_channels=(32, 64, 128),
                norm_num_groups=8,
                attention_head_dim=32,
                down_block_types=("DownBlock2D", "DownBlock2D", "AttnDownBlock2D"),
                up_block_types=("AttnUpBlock2D", "UpBlock2D", "UpBlock2D"),
            ),  # fmt: skip
            lucidrains=dict(dim=32, dim_mults=(1, 2, 4), channels=1),
            batch=32,
        ),
    }


@dataclass
class System:
    """One system at one setting: a training step, a DDIM-50 sampler, its network's size."""

    name: str
    precision: str  # "fp32" or "bf16": which ceiling its GFLOP/s are compared with
    train_step: Callable[[], None]
    sample: Callable[[int], None]
    parameters: int
    gflop_per_image: float


def forward_gflop(net: torch.nn.Module, call: Callable, shape: tuple) -> float:
    x, t = torch.zeros(1, *shape), torch.zeros(1, dtype=torch.long)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        call(net, x, t)
    return counter.get_total_flops() / 1e9


def autocast(bf16: bool) -> contextlib.AbstractContextManager:
    return torch.autocast("cpu", torch.bfloat16) if bf16 else contextlib.nullcontext()


def ddpm_system(spec: ModelSpec, precision: str, *, channels_last: bool = False) -> System:
    from ddpm.denoiser import make_denoiser
    from ddpm.samplers import sample_ddim
    from ddpm.schedules import sampling_timesteps

    config = from_dict({"train": {"precision": precision}}, base=spec.config)
    torch.manual_seed(0)
    trainer = make_trainer(config, CPU)
    if channels_last:  # not ddpm's CPU default (see the README, Performance); for the record
        trainer.model.use_memory_format(torch.channels_last)
        trainer.ema.use_memory_format(torch.channels_last)
    shape = (config.data.channels, config.data.image_size, config.data.image_size)
    x0 = torch.rand(spec.batch, *shape).mul(2).sub(1)
    counter = iter(range(10**9))
    schedule = build_schedule(config)
    timesteps = sampling_timesteps(schedule, SAMPLE_STEPS, "uniform")

    @torch.inference_mode()
    def sample(n: int) -> None:
        ema = trainer.ema
        d = config.diffusion
        denoiser = make_denoiser(ema, schedule, prediction=d.prediction, clip=True,
                                 precision=precision, sigma_data=d.sigma_data)  # fmt: skip
        sample_ddim(denoiser, torch.randn(n, *shape), schedule, timesteps)

    net = build_model(config)
    label = "ddpm" if precision == "auto" else f"ddpm {precision}"
    label += "+cl" if channels_last else ""
    return System(
        label,
        resolve_precision(precision, CPU),
        lambda: trainer.step(next(counter), x0, None),
        sample,
        sum(p.numel() for p in net.parameters()),
        forward_gflop(net, lambda n, x, t: n(x, t), shape),
    )


def _optimizer_and_ema_flags(setting: str) -> tuple[bool, bool]:
    best = setting != "fp32"
    return best, best  # fused AdamW, foreach EMA at the bf16 settings


def diffusers_system(spec: ModelSpec, setting: str) -> System:
    from diffusers import DDIMPipeline, DDIMScheduler, DDPMScheduler, UNet2DModel
    from diffusers.training_utils import EMAModel

    torch.manual_seed(0)
    net = UNet2DModel(**spec.diffusers)
    shape = (net.config.in_channels, net.config.sample_size, net.config.sample_size)
    gflop = forward_gflop(net, lambda n, x, t: n(x, t).sample, shape)
    bf16, channels_last = setting != "fp32", setting == "bf16+cl"
    if channels_last:
        net = net.to(memory_format=torch.channels_last)
    fused, foreach = _optimizer_and_ema_flags(setting)
    optimizer = torch.optim.AdamW(net.parameters(), lr=1e-4, fused=fused or None)
    ema = EMAModel(net.parameters(), decay=0.9999, use_ema_warmup=True, foreach=foreach)
    noise_scheduler = DDPMScheduler(num_train_timesteps=1000, beta_schedule="linear")
    x0 = torch.rand(spec.batch, *shape).mul(2).sub(1)

    def train_step() -> None:
        noise = torch.randn_like(x0)
        t = torch.randint(0, 1000, (x0.shape[0],))
        noisy = noise_scheduler.add_noise(x0, noise, t)
        with autocast(bf16):
            pred = net(noisy, t).sample
        loss = F.mse_loss(pred.float(), noise)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        ema.step(net.parameters())

    eval_net = copy.deepcopy(net).eval()
    pipe = DDIMPipeline(unet=eval_net, scheduler=DDIMScheduler(num_train_timesteps=1000))
    pipe.set_progress_bar_config(disable=True)

    def sample(n: int) -> None:
        with autocast(bf16):
            pipe(batch_size=n, num_inference_steps=SAMPLE_STEPS, output_type="np")

    params = sum(p.numel() for p in net.parameters())
    return System(
        f"diffusers {setting}", "bf16" if bf16 else "fp32", train_step, sample, params, gflop
    )


def lucidrains_system(spec: ModelSpec, setting: str) -> System:
    from denoising_diffusion_pytorch import GaussianDiffusion, Unet
    from ema_pytorch import EMA

    torch.manual_seed(0)
    net = Unet(**spec.lucidrains)
    size = spec.config.data.image_size
    shape = (net.channels, size, size)
    gflop = forward_gflop(net, lambda n, x, t: n(x, t), shape)
    bf16, channels_last = setting != "fp32", setting == "bf16+cl"
    diffusion = GaussianDiffusion(net, image_size=size, timesteps=1000,
                                  sampling_timesteps=SAMPLE_STEPS, objective="pred_noise",
                                  beta_schedule="linear")  # fmt: skip
    if channels_last:
        diffusion = diffusion.to(memory_format=torch.channels_last)
    fused, foreach = _optimizer_and_ema_flags(setting)
    optimizer = torch.optim.AdamW(diffusion.parameters(), lr=1e-4, fused=fused or None)
    ema = EMA(diffusion, beta=0.995, update_every=1, update_after_step=0, use_foreach=foreach)
    x0 = torch.rand(spec.batch, *shape)  # GaussianDiffusion takes [0, 1] images

    def train_step() -> None:
        with autocast(bf16):
            loss = diffusion(x0)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(diffusion.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        ema.update()

    def sample(n: int) -> None:
        with autocast(bf16), contextlib.redirect_stderr(io.StringIO()):
            ema.ema_model.sample(batch_size=n)

    params = sum(p.numel() for p in net.parameters())
    return System(
        f"lucidrains {setting}", "bf16" if bf16 else "fp32", train_step, sample, params, gflop
    )


def build_systems(spec: ModelSpec, names: list[str]) -> list[System]:
    makers = {
        "ddpm": lambda: ddpm_system(spec, "auto"),
        "ddpm-fp32": lambda: ddpm_system(spec, "fp32"),
        "ddpm-bf16+cl": lambda: ddpm_system(spec, "bf16", channels_last=True),
        **{f"diffusers-{s}": (lambda s=s: diffusers_system(spec, s)) for s in ("fp32", "bf16", "bf16+cl")},
        **{f"lucidrains-{s}": (lambda s=s: lucidrains_system(spec, s)) for s in ("fp32", "bf16", "bf16+cl")},
    }  # fmt: skip
    return [makers[name]() for name in names]


def timed(fn: Callable[[], None]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def run(
    spec: ModelSpec, systems: list[System], *, rounds: int, train_steps: int, what: str
) -> None:
    batch, do_train, do_sample = spec.batch, what in ("train", "both"), what in ("sample", "both")
    for system in systems:  # warm-up: first-touch allocations, oneDNN primitive creation
        for _ in range(2 if do_train else 0):
            system.train_step()
        if do_sample:
            system.sample(batch)
    train = {s.name: [] for s in systems}
    sample = {s.name: [] for s in systems}
    ceilings = {"fp32": [], "bf16": []}
    for r in range(rounds):
        ceilings["fp32"].append(conv_ceiling_gflops(CPU, torch.float32))
        ceilings["bf16"].append(conv_ceiling_gflops(CPU, torch.bfloat16))
        for system in systems:
            if do_train:
                seconds = timed(lambda s=system: [s.train_step() for _ in range(train_steps)])
                train[system.name].append(train_steps * batch / seconds)
            if do_sample:
                sample[system.name].append(batch / timed(lambda s=system: s.sample(batch)))
        print(f"round {r + 1}/{rounds} done", file=sys.stderr, flush=True)
    ceiling = {k: max(v) for k, v in ceilings.items()}
    print(f"ceilings (3x3 conv 256->256 ch, 32x32, batch 16, channels_last; best of {rounds}): "
          f"fp32 {ceiling['fp32']:.0f} GFLOP/s, bf16 {ceiling['bf16']:.0f} GFLOP/s")  # fmt: skip
    report(systems, train, sample, ceiling, batch)


def report(systems, train, sample, ceiling, batch) -> None:
    med = lambda values: statistics.median(values) if values else float("nan")  # noqa: E731
    ddpm_train, ddpm_sample = med(train["ddpm"]), med(sample["ddpm"])
    print(f"batch {batch}; training images/s, DDIM-{SAMPLE_STEPS} images/s; ratio = ddpm / this row "
          f"(median of rounds); % = achieved GFLOP/s of that precision's ceiling")  # fmt: skip
    header = (f"{'system':22s} {'params':>7s} {'GFLOP/img':>9s} {'train/s':>8s} {'x ddpm':>7s} "
              f"{'GFLOP/s':>7s} {'%ceil':>5s} {'ddim/s':>7s} {'x ddpm':>7s} {'GFLOP/s':>7s} {'%ceil':>5s}")  # fmt: skip
    print(header)
    print("-" * len(header))
    for s in systems:
        tr, sa, top = med(train[s.name]), med(sample[s.name]), ceiling[s.precision]
        tr_gf, sa_gf = 3 * s.gflop_per_image * tr, SAMPLE_STEPS * s.gflop_per_image * sa
        print(f"{s.name:22s} {s.parameters / 1e6:6.2f}M {s.gflop_per_image:9.3f} {tr:8.2f} "
              f"{ddpm_train / tr:6.2f}x {tr_gf:7.0f} {tr_gf / top:5.0%} {sa:7.3f} "
              f"{ddpm_sample / sa:6.2f}x {sa_gf:7.0f} {sa_gf / top:5.0%}")  # fmt: skip
    for task, rates in (("training", train), (f"DDIM-{SAMPLE_STEPS} sampling", sample)):
        for family in ("diffusers", "lucidrains"):
            values = [med(rates[s.name]) for s in systems if s.name.split()[0] == family]
            values = [v for v in values if v == v]  # measured rows only
            if values and rates["ddpm"]:
                print(f"ddpm {task} vs {family} at its best measured setting: "
                      f"{med(rates['ddpm']) / max(values):.2f}x")  # fmt: skip


def memory_child(model: str, name: str, batch: int, steps: int) -> None:
    """Peak RSS growth of training `name` at `batch`, in this fresh process."""
    spec = model_specs()[model]
    spec = ModelSpec(spec.config, spec.diffusers, spec.lucidrains, batch)
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    system = build_systems(spec, [name])[0]
    for _ in range(steps):
        system.train_step()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(f"{(peak - base) / 1024:.0f}")


def memory(model: str, names: list[str], batch: int) -> None:
    print(f"peak training memory, batch {batch} (growth of peak RSS over the imports, in a fresh "
          f"process per system: weights, optimizer, EMA, activations)")  # fmt: skip
    for name in names:
        out = subprocess.run(
            [sys.executable, __file__, "--model", model, "--memory-child", name, "--batch", str(batch)],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        print(f"{name:22s} {out.stdout.strip().splitlines()[-1]:>6s} MB")


DEFAULT_SYSTEMS = ("ddpm,ddpm-fp32,diffusers-fp32,diffusers-bf16,diffusers-bf16+cl,"
                   "lucidrains-fp32,lucidrains-bf16,lucidrains-bf16+cl")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=["cifar10", "fmnist"], default="fmnist")
    parser.add_argument("--systems", default=DEFAULT_SYSTEMS)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--train-steps", type=int, default=None, help="per timed window")
    parser.add_argument("--what", choices=["train", "sample", "both"], default="both")
    parser.add_argument("--memory", action="store_true", help="peak training memory instead")
    parser.add_argument("--batch", type=int, default=None)
    parser.add_argument("--memory-child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    import denoising_diffusion_pytorch  # noqa: F401
    import diffusers  # noqa: F401  (imported by every process alike, so RSS baselines match)

    names = args.systems.split(",")
    if args.memory_child:
        return memory_child(args.model, args.memory_child, args.batch, steps=3)
    if args.memory:
        return memory(args.model, names, args.batch or 32)
    spec = model_specs()[args.model]
    if args.batch:
        spec = ModelSpec(spec.config, spec.diffusers, spec.lucidrains, args.batch)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"CPU capability {torch.backends.cpu.get_cpu_capability()}; model {args.model}")  # fmt: skip
    systems = build_systems(spec, names)
    steps = args.train_steps or (3 if args.model == "cifar10" else 8)
    run(spec, systems, rounds=args.rounds, train_steps=steps, what=args.what)


if __name__ == "__main__":
    main()
