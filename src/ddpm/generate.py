"""Generating images from a trained network: batching, per-image seeds, progress, uint8 output."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from .builders import build_model, build_schedule
from .checkpoint import Checkpoint, load_checkpoint, load_latest
from .compiling import CompiledNetwork
from .config import RunConfig, from_dict
from .denoiser import Denoiser, VarianceDenoiser, make_denoiser, make_variance_denoiser
from .errors import DDPMError
from .models import UNet
from .rng import seeded_generator
from .samplers import DEFAULT_SPACING, SAMPLERS, StepInfo, num_function_evals
from .schedules import SPACINGS, Schedule, Spacing, sampling_timesteps


def config_denoiser(
    net: UNet | CompiledNetwork,
    schedule: Schedule,
    config: RunConfig,
    *,
    null_label: int | None = None,
    labels: torch.Tensor | None = None,
    guidance: float = 1.0,
    precision: str | None = None,
    with_variance: bool = False,
) -> Denoiser | VarianceDenoiser:
    """The denoiser of a network trained with `config`: its prediction type, clipping, EDM's
    sigma_data and learned variance all come from config.diffusion (see `make_denoiser` for the
    labels, guidance and precision; precision defaults to config.sample.precision).
    with_variance: `(x_t, t) -> (x0_hat, v)` for a learned variance (make_variance_denoiser)."""
    d = config.diffusion
    kwargs = dict(
        prediction=d.prediction, clip=d.clip_denoised, labels=labels, null_label=null_label,
        guidance=guidance, precision=precision or config.sample.precision,
        sigma_data=d.sigma_data,
    )  # fmt: skip
    if with_variance:
        if d.variance != "learned_range":
            raise ValueError(
                f"with_variance needs diffusion.variance=learned_range, not {d.variance}"
            )
        return make_variance_denoiser(net, schedule, **kwargs)
    return make_denoiser(net, schedule, learned_variance=d.variance == "learned_range", **kwargs)


@dataclass(frozen=True, eq=False)
class LoadedRun:
    """A trained network with the schedule and config it was trained with.

    checkpoint: the file it was loaded from; use_ema: whether `net` holds the EMA weights."""

    net: UNet
    schedule: Schedule
    config: RunConfig
    step: int
    use_ema: bool = True
    checkpoint: Path | None = None

    def denoiser(
        self,
        *,
        labels: torch.Tensor | None = None,
        guidance: float = 1.0,
        precision: str | None = None,
        with_variance: bool = False,
    ) -> Denoiser | VarianceDenoiser:
        """This run's denoiser `(x_t, t) -> x0_hat`, built from its config (prediction type,
        clipping, sigma_data, learned variance); see `config_denoiser`."""
        return config_denoiser(
            self.net, self.schedule, self.config, null_label=self.net.null_label, labels=labels,
            guidance=guidance, precision=precision, with_variance=with_variance,
        )  # fmt: skip


def model_from_checkpoint(
    checkpoint: Checkpoint, *, use_ema: bool, device: torch.device
) -> LoadedRun:
    """Rebuild the network from the config stored in the checkpoint and load its weights."""
    config = from_dict(checkpoint.config)
    net = build_model(config)
    state = checkpoint.state_dict("ema" if use_ema else "model")
    try:
        net.load_state_dict(state)
    except RuntimeError as error:
        first = str(error).splitlines()[0]
        raise DDPMError(
            f"checkpoint {checkpoint.path} does not match its model config ({first})"
        ) from None
    net = net.to(device).eval().requires_grad_(False)
    return LoadedRun(
        net=net, schedule=build_schedule(config), config=config, step=checkpoint.step,
        use_ema=use_ema, checkpoint=checkpoint.path,
    )  # fmt: skip


def load_run(
    run: str | Path, *, use_ema: bool = True, device: torch.device | str = "cpu"
) -> LoadedRun:
    """Load a run folder's newest checkpoint (or a checkpoint file) for sampling."""
    run = Path(run)
    if not run.exists():
        raise DDPMError(f"run folder not found: {run}")
    checkpoint = load_checkpoint(run) if run.is_file() else load_latest(run / "checkpoints")
    return model_from_checkpoint(checkpoint, use_ema=use_ema, device=torch.device(device))


def initial_noise(
    n: int,
    shape: tuple[int, int, int],
    *,
    seed: int,
    start: int = 0,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """x_T for images start..start+n-1 of a seed: image i's noise depends only on (seed, i)."""
    rows = [torch.randn(shape, generator=seeded_generator(seed, start + i)) for i in range(n)]
    return torch.stack(rows).to(device)


def sampler_options(sampler: str, config: RunConfig, eta: float | None) -> dict[str, object]:
    """The keyword options `sampler` takes from the config: DDIM's eta, DDPM's variance (beta~,
    beta or learned_range; the other samplers use only x0_hat and ignore a learned variance)."""
    if sampler == "ddim":
        eta = config.sample.eta if eta is None else eta
        if not 0.0 <= eta <= 1.0:
            raise DDPMError(f"--eta must be in [0, 1], got {eta}")
        return {"eta": eta}
    if eta is not None:
        raise DDPMError(f"--eta applies to the ddim sampler only, not {sampler}")
    return {"variance": config.diffusion.variance} if sampler == "ddpm" else {}


def check_class_labels(net: UNet, labels: torch.Tensor | None, guidance: float) -> None:
    """Raise DDPMError unless the labels suit the network: class-conditional, each in range."""
    num_classes = net.config.num_classes
    if labels is None:
        if guidance != 1.0:
            raise DDPMError("--guidance needs --class (classifier-free guidance towards a class)")
        return
    if num_classes == 0:
        raise DDPMError("--class needs a class-conditional model; this run has model.num_classes=0")
    if labels.numel() and not 0 <= int(labels.min()) <= int(labels.max()) < num_classes:
        raise DDPMError(f"--class must be in 0..{num_classes - 1} for this model")
    if guidance < 0:
        raise DDPMError(f"--guidance must be >= 0, got {guidance}")


def resolve_spacing(sampler: str, config: RunConfig, spacing: str | None = None) -> Spacing:
    """The asked-for spacing, else the sampler's own grid (heun: "karras"), else the config's."""
    spacing = spacing or DEFAULT_SPACING.get(sampler, config.sample.spacing)
    if spacing not in SPACINGS:
        raise DDPMError(f"unknown timestep spacing {spacing!r}; known: {', '.join(SPACINGS)}")
    return spacing


def _counted_denoiser(
    net: UNet | CompiledNetwork,
    null_label: int | None,
    schedule: Schedule,
    config: RunConfig,
    labels: torch.Tensor | None,
    guidance: float,
    precision: str,
    bar: tqdm,
    *,
    with_variance: bool = False,
) -> Denoiser | VarianceDenoiser:
    """The run's denoiser for one batch, advancing the progress bar by one per evaluation;
    with_variance: `(x_t, t) -> (x0_hat, v)` for a sampler that uses a learned variance."""
    denoiser = config_denoiser(
        net, schedule, config, null_label=null_label, labels=labels, guidance=guidance,
        precision=precision, with_variance=with_variance,
    )  # fmt: skip

    def counted(x_t: torch.Tensor, t: torch.Tensor):
        bar.update(1)
        return denoiser(x_t, t)

    return counted


@torch.inference_mode()
def generate(
    net: UNet,
    schedule: Schedule,
    config: RunConfig,
    *,
    n: int,
    seed: int = 0,
    sampler: str | None = None,
    steps: int | None = None,
    eta: float | None = None,
    spacing: Spacing | None = None,
    batch_size: int | None = None,
    labels: torch.Tensor | None = None,
    guidance: float = 1.0,
    precision: str | None = None,
    compile: bool | None = None,
    noise: torch.Tensor | None = None,
    callback: Callable[[StepInfo], None] | None = None,
    progress: bool = True,
) -> torch.Tensor:
    """Sample n images -> float32 [n, C, H, W] in [-1, 1] on the CPU.

    Image i depends only on (seed, i), not on the batch size: its starting noise and any noise a
    stochastic sampler adds come from generators keyed by (seed, i). `noise` [n, C, H, W] replaces
    the seeded starting noise (interpolation). labels: LongTensor [n] for a class-conditional
    model, with classifier-free `guidance` (see `make_denoiser`). Defaults come from
    config.sample (precision: the network's autocast, "auto" | "fp32" | "bf16" | "fp16", see
    ddpm.precision.resolve_precision; compile: torch.compile the network once for all batches,
    ddpm.compiling); the spacing defaults to the sampler's own grid (heun:
    Karras et al.'s rho = 7).
    """
    s = config.sample
    sampler = sampler or s.sampler
    steps = s.steps if steps is None else steps  # not `or`: steps=0 is an error, not "default"
    precision = precision or s.precision
    compile = s.compile if compile is None else compile
    if sampler not in SAMPLERS:
        raise DDPMError(f"unknown sampler {sampler!r}; known: {', '.join(SAMPLERS)}")
    if n < 1:
        raise DDPMError(f"--n must be >= 1, got {n}")
    if steps < 1 or (batch_size is not None and batch_size < 1):
        raise DDPMError(f"--steps and --batch-size must be >= 1, got {steps} and {batch_size}")
    if noise is not None and noise.shape[0] != n:
        raise ValueError(f"noise has {noise.shape[0]} rows for n={n}")
    check_class_labels(net, labels, guidance)
    timesteps = sampling_timesteps(schedule, steps, resolve_spacing(sampler, config, spacing))
    options = sampler_options(sampler, config, eta)
    device = next(net.parameters()).device
    shape = (config.data.channels, config.data.image_size, config.data.image_size)
    batch_size = batch_size or s.batch_size
    num_batches = -(-n // batch_size)
    bar = tqdm(
        total=num_batches * num_function_evals(sampler, steps),
        desc=f"{sampler}-{steps}",
        unit="NFE",
        disable=not progress,
    )
    network = CompiledNetwork(net) if compile else net  # one compilation for every batch
    out = []
    for start in range(0, n, batch_size):
        count = min(batch_size, n - start)
        batch_labels = labels[start : start + count].to(device) if labels is not None else None
        denoiser = _counted_denoiser(
            network, net.null_label, schedule, config, batch_labels, guidance, precision, bar,
            with_variance=options.get("variance") == "learned_range",
        )  # fmt: skip
        if noise is None:
            x_T = initial_noise(count, shape, seed=seed, start=start, device=device)
        else:
            x_T = noise[start : start + count].to(device)
        generators = [seeded_generator(seed, start + i, 1, device=device) for i in range(count)]
        x0 = SAMPLERS[sampler](
            denoiser, x_T, schedule, timesteps, generator=generators, callback=callback, **options
        )
        out.append(x0.clamp(-1, 1).cpu())
    bar.close()
    return torch.cat(out)


def slerp(z0: torch.Tensor, z1: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Spherical interpolation between two noises [C, H, W] at weights [F] in [0, 1] -> [F, C, H, W]:
    sin((1 - w) theta) / sin(theta) z0 + sin(w theta) / sin(theta) z1, theta the angle between them
    (Shoemake 1985; as in Song et al. 2020, DDIM, Sec. 5.3). Keeps the norm typical of Gaussian noise,
    which linear interpolation would shrink."""
    a, b = z0.double().flatten(), z1.double().flatten()
    theta = torch.arccos((a @ b / (a.norm() * b.norm())).clamp(-1, 1))
    w = weights.double().reshape(-1, 1)
    if float(theta) < 1e-6:  # (nearly) parallel: linear interpolation is the limit
        rows = (1 - w) * a + w * b
    else:
        rows = (torch.sin((1 - w) * theta) * a + torch.sin(w * theta) * b) / torch.sin(theta)
    return rows.reshape(-1, *z0.shape).to(z0.dtype)


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """[-1, 1] float -> uint8 [0, 255], rounding to nearest."""
    return ((images.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
