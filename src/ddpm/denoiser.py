"""The one wrapper between a network and the samplers.

A network is `net(x_t, t, labels) -> raw output`; a denoiser is any callable `(x_t, t) -> x0_hat`.
`make_denoiser` handles the prediction type, x0 clipping and classifier-free guidance, so samplers
never see any of them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import torch

from .diffusion import Prediction, gather, network_input, x0_from_prediction
from .precision import autocast_context
from .schedules import Schedule


class Denoiser(Protocol):
    def __call__(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """x_t [B, C, H, W] float, t LongTensor [B] (0-based) -> estimate of x0, float32 [B, C, H, W],
        a new tensor on every call (samplers keep the previous one by reference)."""
        ...


def make_denoiser(
    net: Callable[..., torch.Tensor],
    schedule: Schedule,
    *,
    prediction: Prediction = "eps",
    clip: bool = True,
    labels: torch.Tensor | None = None,
    null_label: int | None = None,
    guidance: float = 1.0,
    precision: str = "auto",
    sigma_data: float = 0.5,
) -> Denoiser:
    """Wrap `net` into a denoiser.

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
    """
    alpha_bar_by_device: dict[torch.device, torch.Tensor] = {}
    use_guidance = labels is not None and guidance != 1.0
    if use_guidance and null_label is None:
        raise ValueError("classifier-free guidance needs the network's null_label")

    # conditional and null class, built once: every guided step is one network call on [2B]
    both_labels = torch.cat([labels, torch.full_like(labels, null_label)]) if use_guidance else None

    def denoise(x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
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
        if use_guidance:
            cond, uncond = both.float().chunk(2)
            output = torch.lerp(uncond, cond, guidance)  # uncond + w (cond - uncond)
        else:
            output = output.float()
        x0 = x0_from_prediction(output, x_t.float(), ab_t, prediction, sigma_data=sigma_data)
        return x0.clamp(-1.0, 1.0) if clip else x0

    return denoise
