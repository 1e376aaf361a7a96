"""Generating images from a trained run: batching, per-image seeds, progress.

`generate(run, sample, n=..., seed=...)` samples with a `SampleConfig` (sampler, steps, eta,
spacing, batch size, precision, compile); `sample_config(run.config, sampler=..., ...)` builds one
from the run's own, as `ddpm sample` does with its flags.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Literal, NoReturn

import torch
from tqdm.auto import tqdm

from .compiling import CompiledNetwork
from .conditioning import Conditioning, Inpainting, sample_conditioned
from .config import Precision, RunConfig, SampleConfig, SamplerName
from .errors import DDPMError
from .initial_noise import initial_noise
from .loaded_run import LoadedRun, config_denoiser
from .models import UNet
from .rng import seeded_generator
from .samplers import DEFAULT_SPACING, SAMPLERS, StepInfo, num_function_evals
from .schedules import Schedule, Spacing, sampling_timesteps

# a class choice (--class): one class index, "all" (image i of class i % num_classes) or None
ClassChoice = int | Literal["all"] | None


def sample_config(
    config: RunConfig,
    *,
    sampler: SamplerName | None = None,
    steps: int | None = None,
    eta: float | None = None,
    spacing: Spacing | None = None,
    batch_size: int | None = None,
    precision: Precision | None = None,
    compile: bool | None = None,
) -> SampleConfig:
    """config.sample with the given fields replaced (None: the config's own), through
    dataclasses.replace, so a value out of range is refused by SampleConfig's checks naming its
    key (sample.steps, sample.eta, ...). The spacing, unless given, is the sampler's own grid
    where it has one (heun: "karras", Karras et al. 2022's rho = 7), else sample.spacing."""
    own = config.sample
    sampler = own.sampler if sampler is None else sampler
    return dataclasses.replace(
        own,
        sampler=sampler,
        steps=own.steps if steps is None else steps,
        eta=own.eta if eta is None else eta,
        spacing=DEFAULT_SPACING.get(sampler, own.spacing) if spacing is None else spacing,
        batch_size=own.batch_size if batch_size is None else batch_size,
        precision=own.precision if precision is None else precision,
        compile=own.compile if compile is None else compile,
    )


def sampler_options(
    sample: SampleConfig, config: RunConfig, conditioning: Conditioning | None = None
) -> dict[str, object]:
    """The keyword options the sampler takes: DDIM's eta, DDPM's variance (config.diffusion's:
    beta~, beta or learned_range; the other samplers use only x0_hat and ignore a learned
    variance) and, for inpainting with resampling, RePaint's resample and jump (ddpm only)."""
    repaint = repaint_options(conditioning)
    if repaint and sample.sampler != "ddpm":
        raise DDPMError(f"resampling (RePaint) needs the ddpm sampler, not {sample.sampler}")
    if repaint and repaint["jump"] >= sample.steps:  # no jump point: silently no resampling
        raise DDPMError(
            f"RePaint's jump ({repaint['jump']}) must be below the steps ({sample.steps})"
        )
    if sample.sampler == "ddim":
        return {"eta": sample.eta}
    return {"variance": config.diffusion.variance, **repaint} if sample.sampler == "ddpm" else {}


def repaint_options(conditioning: Conditioning | None) -> dict[str, int]:
    """{"resample": R, "jump": J} for inpainting with resampling (R > 1), else {}."""
    if isinstance(conditioning, Inpainting) and conditioning.resample > 1:
        return {"resample": conditioning.resample, "jump": conditioning.jump}
    return {}


def class_labels(class_label: ClassChoice, n: int, num_classes: int = 0) -> torch.Tensor | None:
    """LongTensor [n] of one class, of image i's class i % num_classes for "all" (a grid with
    num_classes columns shows one class per column), or None (unconditional); generate() checks
    the labels fit the model."""
    if class_label is None:
        return None
    if class_label == "all":
        if num_classes < 1:
            raise DDPMError(
                "labels need a class-conditional model; this run has model.num_classes=0"
            )
        return torch.arange(n, dtype=torch.long) % num_classes
    return torch.full((n,), class_label, dtype=torch.long)


def resolve_guidance(guidance: float | None, sample: SampleConfig, labels_given: bool) -> float:
    """The guidance scale to use: `guidance` when given, else the sample config's
    (sample.guidance, the run's own by default) when there are labels, else 1 (no guidance)."""
    if guidance is not None:
        return guidance
    return sample.guidance if labels_given else 1.0


def check_class_labels(net: UNet, labels: torch.Tensor | None, guidance: float) -> None:
    """Raise DDPMError unless the labels suit the network: class-conditional, each in range."""
    num_classes = net.config.num_classes
    if labels is None:
        if guidance != 1.0:
            raise DDPMError("guidance needs labels (classifier-free guidance towards a class)")
        return
    if num_classes == 0:
        raise DDPMError("labels need a class-conditional model; this run has model.num_classes=0")
    if labels.numel() and not 0 <= int(labels.min()) <= int(labels.max()) < num_classes:
        raise DDPMError(f"labels must be in 0..{num_classes - 1} for this model")
    if guidance < 0:
        raise DDPMError(f"guidance must be >= 0, got {guidance}")


def _counted_denoiser(
    net: UNet | CompiledNetwork,
    null_label: int | None,
    schedule: Schedule,
    config: RunConfig,
    labels: torch.Tensor | None,
    guidance: float,
    precision: str,
    bar: tqdm[NoReturn],  # a bar without an iterable
    *,
    with_variance: bool = False,
) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor | tuple[torch.Tensor, torch.Tensor]]:
    """The run's denoiser for one batch, advancing the progress bar by one per evaluation;
    with_variance: `(x_t, t) -> (x0_hat, v)` for a sampler that uses a learned variance."""
    denoiser = config_denoiser(
        net, schedule, config, null_label=null_label, labels=labels, guidance=guidance,
        precision=precision, with_variance=with_variance,
    )  # fmt: skip

    def counted(
        x_t: torch.Tensor, t: torch.Tensor
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        bar.update(1)
        return denoiser(x_t, t)

    return counted


@torch.inference_mode()
def generate(
    run: LoadedRun,
    sample: SampleConfig | None = None,
    *,
    n: int,
    seed: int = 0,
    labels: torch.Tensor | None = None,
    guidance: float | None = None,
    noise: torch.Tensor | None = None,
    callback: Callable[[StepInfo], None] | None = None,
    progress: bool = True,
    conditioning: Conditioning | None = None,
) -> torch.Tensor:
    """Sample n images from the run's network -> float32 [n, C, H, W] in [-1, 1] on the CPU.

    sample: sampler, steps, eta (DDIM's), spacing, batch size, precision (the network's autocast,
    "auto" | "fp32" | "bf16" | "fp16", see ddpm.precision.resolve_precision) and compile
    (torch.compile the network once for all batches, ddpm.compiling), used as given; None is the
    run's own config.sample with the sampler's own spacing (`sample_config(run.config)`).
    Image i depends only on (seed, i), not on the batch size: its starting noise and any noise a
    stochastic sampler adds come from generators keyed by (seed, i). `noise` [n, C, H, W]
    replaces the seeded starting noise (interpolation). labels: LongTensor [n] for a
    class-conditional model, with classifier-free `guidance` (see `make_denoiser`; None: the
    sample config's sample.guidance when labels are given). callback
    receives each step's StepInfo; progress: a bar counting network evaluations. conditioning:
    inpainting or editing its n = conditioning.num_images rows (ddpm.conditioning), with the same
    seeds (the hook's own noise for image i from the generator keyed (seed, i, 2)).
    """
    net, schedule, config = run.net, run.schedule, run.config
    sample = sample_config(config) if sample is None else sample
    sampler, steps, batch_size = sample.sampler, sample.steps, sample.batch_size
    if sampler not in SAMPLERS:
        raise DDPMError(f"unknown sampler {sampler!r}; known: {', '.join(SAMPLERS)}")
    if n < 1:
        raise DDPMError(f"n must be >= 1, got {n}")
    if noise is not None and noise.shape[0] != n:
        raise ValueError(f"noise has {noise.shape[0]} rows for n={n}")
    if conditioning is not None and conditioning.num_images != n:
        raise ValueError(f"conditioning has {conditioning.num_images} rows for n={n}")
    guidance = resolve_guidance(guidance, sample, labels is not None)
    check_class_labels(net, labels, guidance)
    if conditioning is None:
        timesteps = sampling_timesteps(schedule, steps, sample.spacing)
    else:
        timesteps = conditioning.timesteps(schedule, steps, sample.spacing)
    options = sampler_options(sample, config, conditioning)
    device = next(net.parameters()).device
    shape = (config.data.channels, config.data.image_size, config.data.image_size)
    num_batches = -(-n // batch_size)
    evals = num_function_evals(sampler, len(timesteps), **repaint_options(conditioning))
    bar = tqdm(
        total=num_batches * evals,
        desc=f"{sampler}-{steps}",
        unit="NFE",
        disable=not progress,
    )
    network = CompiledNetwork(net) if sample.compile else net  # one compilation for every batch
    out = []
    for start in range(0, n, batch_size):
        count = min(batch_size, n - start)
        batch_labels = labels[start : start + count].to(device) if labels is not None else None
        denoiser = _counted_denoiser(
            network, net.null_label, schedule, config, batch_labels, guidance, sample.precision,
            bar, with_variance=options.get("variance") == "learned_range",
        )  # fmt: skip
        if noise is None:
            x_T = initial_noise(count, shape, seed=seed, start=start, device=device)
        else:
            x_T = noise[start : start + count].to(device)
        generators = [seeded_generator(seed, start + i, 1, device=device) for i in range(count)]
        hook_generators = None
        if conditioning is not None:  # the hook's own noise stream: (seed, i, 2)
            hook_generators = [
                seeded_generator(seed, start + i, 2, device=device) for i in range(count)
            ]
        x0 = sample_conditioned(
            sampler, denoiser, x_T, schedule, timesteps, conditioning=conditioning,
            rows=slice(start, start + count), generator=generators,
            hook_generator=hook_generators, callback=callback, **options,
        )  # fmt: skip
        out.append(x0.clamp(-1, 1).cpu())
    bar.close()
    return torch.cat(out)
