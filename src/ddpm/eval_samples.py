"""The sample sets `ddpm eval` generates, cached under `<eval>/samples/` and keyed on everything
that decides them, so a cached file is reused only where a new one would hold the same images.

What decides a sample set (ddpm.generate.generate): the weights (the checkpoint, and EMA or raw),
the run's config (schedule, prediction type, clipping, variance, image shape, the sample section's
defaults), the sampler, its steps and timestep spacing, DDIM's eta, the class and guidance scale,
the network's precision, torch.compile (other kernels round differently), the device type, the
seed and the number of images. The batch size is not part of it: image i depends only on
(seed, i). The weights and the config enter as SHA-256 digests of their content, so a run folder
that was retrained in place (same step, new weights) never reuses the old run's samples, and a
moved run folder still finds its own.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from .config import SampleConfig, to_dict
from .generate import ClassChoice, check_class_labels, class_labels, generate, resolve_guidance
from .loaded_run import LoadedRun
from .metrics.sample_files import load_samples, save_npz
from .pixels import to_uint8
from .precision import resolve_precision


@dataclass(frozen=True)
class SampleRequest:
    """The images to generate from a run and score: `generate(run, sample, n=n, seed=seed,
    labels=class_labels(class_label, n), guidance=guidance)` (see ddpm.generate)."""

    sample: SampleConfig
    n: int = 10_000
    seed: int = 0
    # every image of this class, or "all": image i of class i % num_classes (class-balanced)
    class_label: ClassChoice = None
    guidance: float | None = None  # None: sample.guidance with a class, else 1


@dataclass(frozen=True)
class GenerationKey:
    """Everything that decides a generated sample set, resolved (no "auto", no config default
    left open)."""

    weights: str  # SHA-256 of the loaded network's state (hex, 16 characters)
    config: str  # SHA-256 of the run's resolved config (hex, 16 characters)
    checkpoint_step: int
    use_ema: bool
    sampler: str
    steps: int
    spacing: str
    eta: float | None  # DDIM's eta; None for the other samplers
    guidance: float
    class_label: ClassChoice
    precision: str  # "fp32", "bf16" or "fp16"
    compile: bool
    device: str  # the device type: "cpu", "cuda", "mps"
    seed: int
    n: int

    def digest(self) -> str:
        """12 hex characters of the SHA-256 of every field."""
        text = json.dumps(asdict(self), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:12]

    def file_name(self) -> str:
        """The cache file's name: the main settings to read, the digest to tell all apart."""
        weights = "ema" if self.use_ema else "raw"
        return (
            f"step{self.checkpoint_step}-{self.sampler}-{self.steps}-{self.spacing}-n{self.n}"
            f"-seed{self.seed}-{self.precision}-{weights}-{self.digest()}.npz"
        )


def weights_digest(net: torch.nn.Module) -> str:
    """SHA-256 (16 hex characters) of a network's parameters and buffers: names, dtypes, shapes
    and bytes."""
    sha = hashlib.sha256()
    for name, tensor in sorted(net.state_dict().items()):
        tensor = tensor.detach().to("cpu").contiguous()
        sha.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)};".encode())
        sha.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return sha.hexdigest()[:16]


def config_digest(run: LoadedRun) -> str:
    """SHA-256 (16 hex characters) of the run's config as JSON with sorted keys."""
    text = json.dumps(to_dict(run.config), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def generation_key(run: LoadedRun, request: SampleRequest) -> GenerationKey:
    """The key of the images `request` makes from `run`, every option resolved ("auto"
    precision to the one the device uses). Raises DDPMError for a class or guidance the model
    cannot take, as generate would, so a bad request fails before any work."""
    sample = request.sample
    labels = class_labels(request.class_label, 1, run.net.config.num_classes)
    guidance = resolve_guidance(request.guidance, request.sample, labels is not None)
    check_class_labels(run.net, labels, guidance)
    device = next(run.net.parameters()).device
    return GenerationKey(
        weights=weights_digest(run.net),
        config=config_digest(run),
        checkpoint_step=run.step,
        use_ema=run.use_ema,
        sampler=sample.sampler,
        steps=sample.steps,
        spacing=sample.spacing,
        eta=float(sample.eta) if sample.sampler == "ddim" else None,
        guidance=float(guidance),
        class_label=request.class_label,
        precision=resolve_precision(sample.precision, device),
        compile=sample.compile,
        device=device.type,
        seed=request.seed,
        n=request.n,
    )


def generated_samples(
    run: LoadedRun, request: SampleRequest, folder: Path, *, quiet: bool = False
) -> tuple[torch.Tensor, Path, GenerationKey]:
    """The images `request` makes from `run`, generated and saved in `folder` (or read from the
    file an earlier call with the same key saved there) -> (uint8 [N, C, H, W], that .npz file,
    their key)."""
    key = generation_key(run, request)
    path = folder / key.file_name()
    if path.is_file():
        print(f"samples: reusing {path}")
        return load_samples(path), path, key
    started = time.perf_counter()
    images = generate(
        run, request.sample, n=request.n, seed=request.seed,
        labels=class_labels(request.class_label, request.n, run.net.config.num_classes),
        guidance=request.guidance,
        progress=not quiet,
    )  # fmt: skip
    images = to_uint8(images)
    save_npz(images, path)
    print(f"samples: {request.n} generated in {time.perf_counter() - started:.0f} s -> {path}")
    return images, path, key
