"""Exporting a run's EMA network: a diffusers pipeline folder or a ddpm weights file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from safetensors.torch import save as save_safetensors

from ..config import to_dict
from ..errors import DDPMError
from ..files import atomic_write
from ..loaded_run import LoadedRun
from ..weights_file import save_weights
from .diffusers_names import to_diffusers
from .diffusers_scheduler import scheduler_config
from .diffusers_unet import DIFFUSERS_VERSION, check_exportable, unet_config

WEIGHTS_NAME = "diffusion_pytorch_model.safetensors"  # what UNet2DModel.from_pretrained reads
# safetensors metadata of the exported U-Net: diffusers checks "format" ("pt": torch tensors);
# ddpm's own config and step let `ddpm import` restore the run's config exactly
CONFIG_KEY, STEP_KEY = "ddpm_config", "ddpm_step"


def _json(data: dict[str, Any]) -> bytes:
    return (json.dumps(data, indent=2) + "\n").encode()


def check_export_folder(out: Path) -> None:
    """A new or empty folder, or an earlier export (its model_index.json): never another
    folder's files mixed with ours."""
    if out.exists() and not out.is_dir():
        raise DDPMError(f"the export folder {out} is a file, not a folder")
    if out.is_dir() and any(out.iterdir()) and not (out / "model_index.json").is_file():
        raise DDPMError(f"the export folder {out} is not empty; give a new folder")


def export_diffusers(run: LoadedRun, out: str | Path) -> list[Path]:
    """Write `run`'s network and schedule as a diffusers DDPMPipeline folder:
    out/model_index.json, out/unet/{config.json, diffusion_pytorch_model.safetensors},
    out/scheduler/scheduler_config.json. DDPMError naming the config key when the run has no
    diffusers counterpart. Returns the files written."""
    out = Path(out)
    check_exportable(run.config)
    check_export_folder(out)
    size = run.config.data.image_size
    tensors = to_diffusers(run.net.state_dict(), run.config.model, size)
    metadata = {"format": "pt", CONFIG_KEY: json.dumps(to_dict(run.config)),
                STEP_KEY: str(run.step)}  # fmt: skip
    index = {"_class_name": "DDPMPipeline", "_diffusers_version": DIFFUSERS_VERSION,
             "scheduler": ["diffusers", "DDPMScheduler"], "unet": ["diffusers", "UNet2DModel"]}  # fmt: skip
    files = {
        out / "unet" / WEIGHTS_NAME: save_safetensors(tensors, metadata),
        out / "unet" / "config.json": _json(unet_config(run.config)),
        out / "scheduler" / "scheduler_config.json": _json(scheduler_config(run.config.diffusion)),
        out / "model_index.json": _json(index),  # last: the folder is complete once it is there
    }
    return [atomic_write(path, blob) for path, blob in files.items()]


def export_weights(run: LoadedRun, out: str | Path) -> Path:
    """Write `run`'s network (use the EMA: load_run's default) with its config as a ddpm weights
    file (ddpm.weights_file)."""
    if not run.use_ema:
        raise DDPMError("a weights file holds the EMA weights; load the run with use_ema=True")
    return save_weights(out, state=run.net.state_dict(), config=to_dict(run.config), step=run.step)
