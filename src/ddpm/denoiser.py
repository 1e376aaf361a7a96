"""The one wrapper between a network and the samplers.

A network is `net(x_t, t, labels) -> raw output`; a denoiser is any callable `(x_t, t) -> x0_hat`.
`make_denoiser` handles the prediction type, x0 clipping and classifier-free guidance, so samplers
never see any of them.

A network with a learned variance (diffusion.variance=learned_range) outputs 2C channels: the
prediction, then the variance interpolation (ddpm.learned_variance). `make_denoiser(...,
learned_variance=True)` uses the first C only, so DDIM, DPM-Solver and Heun, which need only x0,
run unchanged; `make_variance_denoiser` returns `(x_t, t) -> (x0_hat, v)` from the same single
network call, for the ancestral sampler and bits/dim. Neither keeps any state between calls.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol, cast

import torch

from .diffusion import Prediction, gather, network_input, x0_from_prediction
from .learned_variance import split_output
from .precision import autocast_context
from .schedules import Schedule


class Denoiser(Protocol):
    def __call__(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """x_t [B, C, H, W] float, t LongTensor [B] (0-based) -> estimate of x0, float32 [B, C, H, W],
        a new tensor on every call (samplers keep the previous one by reference)."""
        ...


class VarianceDenoiser(Protocol):
    def __call__(self, x_t: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x_t [B, C, H, W], t LongTensor [B] -> (x0_hat as a Denoiser's, v float32 [B, C, H, W],
        the learned-range interpolation weight of ddpm.learned_variance)."""
        ...


def make_denoiser(
    net: Callable[..., torch.Tensor],
    schedule: Schedule,
    *,
    prediction: Prediction,
    clip: bool = True,
    labels: torch.Tensor | None = None,
    null_label: int | None = None,
    guidance: float = 1.0,
    precision: str = "auto",
    sigma_data: float = 0.5,
    learned_variance: bool = False,
) -> Denoiser:
    """Wrap `net` into a denoiser.

    prediction: what `net` outputs, "eps", "x0", "v" or "edm" (ddpm.diffusion); required, since a
        wrong type gives plausible but wrong numbers. A loaded run's own denoiser, with every
        option from its config, is `LoadedRun.denoiser()` (ddpm.loaded_run).
    clip: clamp x0_hat to [-1, 1] (the data range), as in Ho et al.'s sampler.
    labels: LongTensor [B] of class labels for a class-conditional network, or None.
    guidance: classifier-free guidance scale w (Ho & Salimans 2022): the raw output becomes
        out_null + w (out_cond - out_null); both are computed in one network call. w = 1 is plain
        conditional sampling; `null_label` is the network's "no class" index.
    precision: the network call's autocast, as train.precision: "auto" is bf16 where the device
        has fast bf16 arithmetic (ddpm.precision.resolve_precision), else fp32. The output is
        cast to float32 before the prediction-type conversion, so only the network runs in bf16.
    sigma_data: EDM's data standard deviation, for prediction "edm" (ddpm.edm): the network sees
        c_in y (ddpm.diffusion.network_input, in float32 before autocast) and its output F
        becomes x0_hat = c_skip y + c_out F.
    learned_variance: the network outputs 2C channels (diffusion.variance=learned_range); only the
        first C, the prediction, make x0_hat (the variance channels are `make_variance_denoiser`'s).
    """
    denoise = _denoise_with_variance(
        net, schedule, prediction=prediction, clip=clip, labels=labels, null_label=null_label,
        guidance=guidance, precision=precision, sigma_data=sigma_data,
        learned_variance=learned_variance,
    )  # fmt: skip

    def denoiser(x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return denoise(x_t, t)[0]

    return denoiser


def make_variance_denoiser(
    net: Callable[..., torch.Tensor],
    schedule: Schedule,
    *,
    prediction: Prediction,
    clip: bool = True,
    labels: torch.Tensor | None = None,
    null_label: int | None = None,
    guidance: float = 1.0,
    precision: str = "auto",
    sigma_data: float = 0.5,
) -> VarianceDenoiser:
    """Wrap a learned-variance network (2C output channels) into `(x_t, t) -> (x0_hat, v)`: x0_hat
    exactly as `make_denoiser(..., learned_variance=True)` gives it (guidance and clipping act on
    the prediction only), v = (r + 1) / 2 from the last C channels (ddpm.learned_variance). Under
    classifier-free guidance v is the conditional output's (the guided mean's own class)."""
    denoise = _denoise_with_variance(
        net, schedule, prediction=prediction, clip=clip, labels=labels, null_label=null_label,
        guidance=guidance, precision=precision, sigma_data=sigma_data, learned_variance=True,
    )  # fmt: skip
    # with learned_variance=True, v is never None
    return cast(VarianceDenoiser, denoise)


def _denoise_with_variance(
    net: Callable[..., torch.Tensor],
    schedule: Schedule,
    *,
    prediction: Prediction,
    clip: bool,
    labels: torch.Tensor | None,
    null_label: int | None,
    guidance: float,
    precision: str,
    sigma_data: float,
    learned_variance: bool,
) -> Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor | None]]:
    """(x_t, t) -> (x0_hat, v or None): one network call, shared by the two public wrappers."""
    alpha_bar_by_device: dict[torch.device, torch.Tensor] = {}
    # conditional and null class, built once: every guided step is one network call on [2B]
    both_labels: torch.Tensor | None = None
    if labels is not None and guidance != 1.0:
        if null_label is None:
            raise ValueError("classifier-free guidance needs the network's null_label")
        both_labels = torch.cat([labels, torch.full_like(labels, null_label)])
    use_guidance = both_labels is not None

    def denoise(x_t: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        table = alpha_bar_by_device.get(x_t.device)
        if table is None:
            table = schedule.alpha_bar.to(device=x_t.device, dtype=torch.float32)
            alpha_bar_by_device[x_t.device] = table
        ab_t = gather(table, t, x_t.ndim)
        x_in = x_t.float() if x_t.dtype == torch.float64 else x_t  # float64 states: float32 net
        x_in = network_input(x_in, ab_t, prediction, sigma_data)  # float32, before autocast
        with autocast_context(x_t.device, precision):
            if use_guidance:
                both = net(torch.cat([x_in, x_in]), torch.cat([t, t]), both_labels)
            else:
                output = net(x_in, t, labels)
        raw = both.float() if use_guidance else output.float()
        channels = x_t.shape[1]
        if raw.shape[1] != (2 if learned_variance else 1) * channels:
            raise ValueError(
                f"the network outputs {raw.shape[1]} channels for {channels}-channel images; "
                f"learned_variance={learned_variance} expects {'2C' if learned_variance else 'C'}"
            )
        output, v = split_output(raw, channels) if learned_variance else (raw, None)
        if use_guidance:
            cond, uncond = output.chunk(2)
            output = torch.lerp(uncond, cond, guidance)  # uncond + w (cond - uncond)
            v = v.chunk(2)[0] if v is not None else None
        x0 = x0_from_prediction(output, x_t.float(), ab_t, prediction, sigma_data=sigma_data)
        return (x0.clamp(-1.0, 1.0) if clip else x0), v

    return denoise
