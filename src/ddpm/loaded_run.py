"""A trained run loaded for sampling and scoring: its network (EMA or raw weights), the schedule
and config it was trained with, and the denoiser its config describes."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from .builders import build_model, build_schedule
from .checkpoint import Checkpoint, load_latest
from .compiling import CompiledNetwork
from .config import RunConfig, from_dict
from .denoiser import Denoiser, VarianceDenoiser, make_denoiser, make_variance_denoiser
from .errors import DDPMError
from .models import UNet
from .schedules import Schedule
from .weights_file import load_model_file


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
    precision = precision or config.sample.precision
    if with_variance:
        if d.variance != "learned_range":
            raise ValueError(
                f"with_variance needs diffusion.variance=learned_range, not {d.variance}"
            )
        return make_variance_denoiser(
            net, schedule, prediction=d.prediction, clip=d.clip_denoised, labels=labels,
            null_label=null_label, guidance=guidance, precision=precision,
            sigma_data=d.sigma_data,
        )  # fmt: skip
    return make_denoiser(
        net, schedule, prediction=d.prediction, clip=d.clip_denoised, labels=labels,
        null_label=null_label, guidance=guidance, precision=precision, sigma_data=d.sigma_data,
        learned_variance=d.variance == "learned_range",
    )  # fmt: skip


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
    if not state:  # a weights file holds the EMA only
        raise DDPMError(
            f"{checkpoint.path} holds no {'EMA' if use_ema else 'raw (non-EMA)'} weights; "
            f"the run's checkpoints hold both"
        )
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
    """Load a run folder's newest checkpoint, a checkpoint file or a weights file
    (ddpm.weights_file: the EMA only, so use_ema=False is refused) for sampling."""
    run = Path(run)
    if not run.exists():
        raise DDPMError(f"run folder not found: {run}")
    checkpoint = load_model_file(run) if run.is_file() else load_latest(run / "checkpoints")
    return model_from_checkpoint(checkpoint, use_ema=use_ema, device=torch.device(device))
