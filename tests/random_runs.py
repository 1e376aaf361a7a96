"""Networks with every parameter random (no zero-initialised layer left), for tests that compare
two implementations of one network: a freshly built U-Net's zero-initialised output layers would
hide any mismatch behind them."""

from __future__ import annotations

from typing import Any

import torch

from ddpm.builders import build_model, build_schedule
from ddpm.config import from_dict
from ddpm.loaded_run import LoadedRun

# configurations that map onto diffusers' UNet2DModel, each exercising a part of the mapping
MAPPABLE: dict[str, dict[str, Any]] = {
    "scale_shift": {},
    "additive": {"model": {"conditioning": "additive"}},
    "classes-3-levels": {
        "model": {"num_classes": 3, "channel_mult": [1, 2, 2], "attention_resolutions": [8, 4],
                  "num_res_blocks": 2, "attention_head_dim": 16},
        "data": {"image_size": 16, "channels": 3},
    },
    "one-head-each": {"model": {"attention_head_dim": 48}},  # widths 32, 64: one head each
    "cosine-x0": {"diffusion": {"schedule": "cosine", "prediction": "x0", "clip_denoised": False,
                                "num_timesteps": 200}},
    "trained-betas-v": {"diffusion": {"schedule": "cosine", "cosine_s": 0.02, "prediction": "v",
                                      "variance": "beta"}},
    "quadratic": {"diffusion": {"schedule": "quadratic", "num_timesteps": 500}},
    "sigmoid": {"diffusion": {"schedule": "sigmoid", "beta_end": 0.03}},
}  # fmt: skip


def random_run(overrides: dict[str, Any], seed: int = 0, scale: float = 0.2) -> LoadedRun:
    """A LoadedRun of the config `overrides` (over the defaults) with N(0, scale^2) weights."""
    config = from_dict(overrides)
    net = build_model(config).eval().requires_grad_(False)
    generator = torch.Generator().manual_seed(seed)
    for p in net.parameters():
        p.copy_(torch.randn(p.shape, generator=generator) * scale)
    return LoadedRun(net=net, schedule=build_schedule(config), config=config, step=7)


def random_inputs(
    run: LoadedRun, batch: int = 4, seed: int = 1
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """x [B, C, H, W], t [B] over the whole range, labels [B] (incl. the null class) or None."""
    generator = torch.Generator().manual_seed(seed)
    c, size = run.config.data.channels, run.config.data.image_size
    x = torch.randn(batch, c, size, size, generator=generator)
    T = run.schedule.num_timesteps
    t = torch.randint(0, T, (batch,), generator=generator)
    t[0], t[-1] = 0, T - 1
    classes = run.config.model.num_classes
    labels = torch.arange(batch) % (classes + 1) if classes else None
    return x, t, labels
