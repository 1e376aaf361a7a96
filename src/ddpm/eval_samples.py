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
from dataclasses import asdict, dataclass

import torch

from .config import to_dict
from .generate import LoadedRun, check_class_labels, resolve_spacing, sampler_options
from .precision import resolve_precision


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
    class_label: int | None
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


def generation_key(
    run: LoadedRun,
    *,
    sampler: str,
    steps: int | None,
    spacing: str | None,
    eta: float | None,
    guidance: float,
    class_label: int | None,
    precision: str | None,
    compile: bool | None,
    seed: int,
    n: int,
) -> GenerationKey:
    """The key of `generate(run..., these options)`, each option resolved as generate resolves
    it (None: the run's config). Raises DDPMError for options generate would refuse (eta out of
    range or given to another sampler than DDIM, a class the model does not have, guidance
    without a class), so a bad option fails before any work."""
    s = run.config.sample
    options = sampler_options(sampler, run.config, eta)
    labels = None if class_label is None else torch.tensor([class_label])
    check_class_labels(run.net, labels, guidance)
    device = next(run.net.parameters()).device
    return GenerationKey(
        weights=weights_digest(run.net),
        config=config_digest(run),
        checkpoint_step=run.step,
        use_ema=run.use_ema,
        sampler=sampler,
        steps=steps or s.steps,
        spacing=resolve_spacing(sampler, run.config, spacing),
        eta=float(options["eta"]) if "eta" in options else None,
        guidance=float(guidance),
        class_label=class_label,
        precision=resolve_precision(precision or s.precision, device),
        compile=s.compile if compile is None else compile,
        device=device.type,
        seed=seed,
        n=n,
    )
