"""ddpm's diffusion section <-> the scheduler_config.json of diffusers' `DDPMScheduler`.

Betas: ddpm's schedules rescale their endpoints by 1000 / T (ddpm.schedules); diffusers' named
schedules do not, so the endpoints written are the rescaled ones:
    linear    -> "linear"            (linspace(beta_start, beta_end))
    quadratic -> "scaled_linear"     (linspace(sqrt(beta_start), sqrt(beta_end))^2)
    sigmoid   -> "sigmoid"           (sigmoid(linspace(-6, 6)) (beta_end - beta_start) + start)
    cosine    -> "squaredcos_cap_v2" with cosine_s = 0.008 (diffusers' fixed s), else the betas
                 themselves as trained_betas.
diffusers computes them in float32, ddpm in float64: they agree to float32 rounding.
prediction eps / x0 / v -> prediction_type epsilon / sample / v_prediction; clip_denoised ->
clip_sample (range 1); variance beta_tilde / beta -> variance_type fixed_small / fixed_large.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Literal

import torch

from ..config import DiffusionConfig
from ..errors import DDPMError, shorten
from ..schedules import make_schedule
from .diffusers_unet import DIFFUSERS_VERSION

_NAMES = {"linear": "linear", "quadratic": "scaled_linear", "sigmoid": "sigmoid"}
_VARIANCES = {"beta_tilde": "fixed_small", "beta": "fixed_large"}
_FROM_PREDICTION: dict[str, Literal["eps", "x0", "v"]] = {
    "epsilon": "eps", "sample": "x0", "v_prediction": "v"
}  # fmt: skip
_PREDICTIONS: dict[str, str] = {v: k for k, v in _FROM_PREDICTION.items()}
_FROM_VARIANCE: dict[str, Literal["beta_tilde", "beta"]] = {
    "fixed_small": "beta_tilde", "fixed_small_log": "beta_tilde",
    "fixed_large": "beta", "fixed_large_log": "beta",
}  # fmt: skip
COSINE_S = 0.008  # the s of diffusers' squaredcos_cap_v2 (Nichol & Dhariwal 2021)
SCHEDULER_DEFAULTS: dict[str, Any] = {
    "num_train_timesteps": 1000, "beta_start": 0.0001, "beta_end": 0.02,
    "beta_schedule": "linear", "trained_betas": None, "variance_type": "fixed_small",
    "clip_sample": True, "prediction_type": "epsilon", "thresholding": False,
    "dynamic_thresholding_ratio": 0.995, "clip_sample_range": 1.0, "sample_max_value": 1.0,
    "timestep_spacing": "leading", "steps_offset": 0, "rescale_betas_zero_snr": False,
}  # fmt: skip
SCHEDULERS = ("DDPMScheduler", "DDIMScheduler")  # the same forward process and fields


def ddpm_betas(d: DiffusionConfig) -> torch.Tensor:
    """The float64 betas [T] of a diffusion section."""
    return make_schedule(
        d.schedule, d.num_timesteps, beta_start=d.beta_start, beta_end=d.beta_end,
        cosine_s=d.cosine_s,
    ).betas  # fmt: skip


def scheduler_config(d: DiffusionConfig) -> dict[str, Any]:
    """The DDPMScheduler scheduler_config.json of a diffusion section (eps, x0 or v prediction,
    fixed variance: ddpm.interop.diffusers_unet.check_exportable refuses the others)."""
    scale = 1000.0 / d.num_timesteps  # as ddpm.schedules rescales the endpoints
    cfg = {"_class_name": "DDPMScheduler", "_diffusers_version": DIFFUSERS_VERSION,
           **SCHEDULER_DEFAULTS, "num_train_timesteps": d.num_timesteps,
           "variance_type": _VARIANCES[d.variance], "clip_sample": d.clip_denoised,
           "prediction_type": _PREDICTIONS[d.prediction]}  # fmt: skip
    if d.schedule in _NAMES:
        cfg |= {"beta_schedule": _NAMES[d.schedule], "beta_start": d.beta_start * scale,
                "beta_end": d.beta_end * scale}  # fmt: skip
    elif d.schedule == "cosine" and d.cosine_s == COSINE_S:
        cfg["beta_schedule"] = "squaredcos_cap_v2"
    else:
        cfg["trained_betas"] = ddpm_betas(d).tolist()
    return cfg


def _refuse(field: str, value: Any, why: str) -> DDPMError:
    return DDPMError(f"cannot import this scheduler: {field}={shorten(value)} ({why})")


def diffusion_from_scheduler(cfg: dict[str, Any], base: DiffusionConfig) -> DiffusionConfig:
    """A DDPMScheduler config -> the diffusion section over `base` (base's loss and the like
    stay). `base`'s schedule keys stay too when they give the same betas (to float32 rounding:
    a round trip keeps them); refuses, naming the field, what ddpm cannot represent."""
    cfg = {**SCHEDULER_DEFAULTS, **cfg}
    if cfg.get("_class_name", SCHEDULERS[0]) not in SCHEDULERS:
        raise _refuse("_class_name", cfg["_class_name"], f"ddpm reads {', '.join(SCHEDULERS)}")
    for field in ("thresholding", "rescale_betas_zero_snr"):
        if cfg[field]:
            raise _refuse(field, cfg[field], "ddpm has no such option")
    if cfg["clip_sample"] and cfg["clip_sample_range"] != 1:
        raise _refuse("clip_sample_range", cfg["clip_sample_range"], "ddpm clips to [-1, 1]")
    prediction = _FROM_PREDICTION.get(cfg["prediction_type"])
    if prediction is None:
        raise _refuse(
            "prediction_type", cfg["prediction_type"], "ddpm: " + ", ".join(_PREDICTIONS.values())
        )
    variance = _FROM_VARIANCE.get(cfg["variance_type"])
    if variance is None:
        raise _refuse("variance_type", cfg["variance_type"], "ddpm imports fixed variances only")
    T = cfg["num_train_timesteps"]
    if type(T) is not int:
        raise _refuse("num_train_timesteps", T, "expected an integer")
    d = dataclasses.replace(
        base, num_timesteps=T, prediction=prediction, variance=variance,
        clip_denoised=bool(cfg["clip_sample"]),
    )  # fmt: skip
    schedule = _schedule_keys(cfg, T, base)
    if base.num_timesteps == T and _same_betas(ddpm_betas(base), _target_betas(cfg, schedule, T)):
        return d  # base's schedule keys describe these betas
    if schedule is None:
        raise _refuse("trained_betas", "[...]", "not the betas of any ddpm schedule")
    return dataclasses.replace(d, **schedule)


def _schedule_keys(cfg: dict[str, Any], T: int, base: DiffusionConfig) -> dict[str, Any] | None:
    """ddpm's schedule keys for a named diffusers schedule (None for trained_betas)."""
    if cfg["trained_betas"] is not None:
        return None
    name = cfg["beta_schedule"]
    if name == "squaredcos_cap_v2":
        return {"schedule": "cosine", "cosine_s": COSINE_S}
    kind = {v: k for k, v in _NAMES.items()}.get(name)
    if kind is None:
        raise _refuse(
            "beta_schedule", name, "ddpm: " + ", ".join([*_NAMES.values(), "squaredcos_cap_v2"])
        )
    for field in ("beta_start", "beta_end"):
        if type(cfg[field]) not in (int, float):
            raise _refuse(field, cfg[field], "expected a number")
    scale = T / 1000.0  # ddpm multiplies the endpoints by 1000 / T
    return {"schedule": kind, "beta_start": cfg["beta_start"] * scale,
            "beta_end": cfg["beta_end"] * scale}  # fmt: skip


def _target_betas(cfg: dict[str, Any], keys: dict[str, Any] | None, T: int) -> torch.Tensor:
    if keys is None:
        try:
            betas = torch.tensor(cfg["trained_betas"], dtype=torch.float64)
        except (TypeError, ValueError, RuntimeError):
            raise _refuse("trained_betas", "[...]", "expected a list of numbers") from None
        if betas.shape != (T,):
            raise _refuse("trained_betas", f"{betas.numel()} values", f"expected {T}")
        return betas
    return ddpm_betas(dataclasses.replace(DiffusionConfig(), num_timesteps=T, **keys))


def _same_betas(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Equal to float32 rounding (diffusers keeps its betas in float32)."""
    return a.shape == b.shape and bool(torch.allclose(a, b, rtol=1e-6, atol=0.0))
