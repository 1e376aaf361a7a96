"""Importing a diffusers `UNet2DModel` (a DDPMPipeline folder, or the model's own folder) as a
ddpm run folder: config.json and checkpoints/step_00000000.safetensors, raw weights = EMA, so
`ddpm sample` and `ddpm eval` work on it. Read with JSON and safetensors only, never pickle.

The config: ddpm's own when the folder came from `export_diffusers` (kept in the weights' metadata)
and it still describes the files; else the model section from the UNet2DModel config, the
diffusion section from the scheduler config (defaults without one), and a data section naming
the image size and channels (dataset folder, data_dir unset unless given).
"""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import load as load_safetensors

from ..builders import build_model
from ..checkpoint import checkpoint_path, save_checkpoint
from ..config import DataConfig, RunConfig, from_dict, to_dict
from ..errors import DDPMError
from ..train.run_files import claim_new_run, write_config
from .diffusers_names import from_diffusers
from .diffusers_scheduler import diffusion_from_scheduler
from .diffusers_unet import sin_cos_to_cos_sin, unet_from_diffusers
from .export import CONFIG_KEY, WEIGHTS_NAME

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DiffusersFolder:
    """The files of a saved UNet2DModel (and its pipeline's scheduler, when there is one)."""

    unet_config: dict[str, Any]
    weights: Path
    scheduler_config: dict[str, Any] | None


@dataclass(frozen=True)
class ImportedRun:
    config: RunConfig
    checkpoint: Path
    notes: list[str]  # what the user should know (defaults taken, the null class)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_bytes().decode())
    except (OSError, ValueError) as error:
        raise DDPMError(f"cannot read {path}: {error}") from None
    if not isinstance(data, dict):
        raise DDPMError(f"{path} is not a diffusers config (a JSON object)")
    return data


def read_diffusers_folder(source: str | Path) -> DiffusersFolder:
    """DIR/unet/config.json (a pipeline folder, scheduler from DIR/scheduler/) or DIR/config.json
    (the model's own folder), with diffusion_pytorch_model.safetensors beside it."""
    source = Path(source)
    unet = source / "unet" if (source / "unet" / "config.json").is_file() else source
    if not (unet / "config.json").is_file():
        raise DDPMError(
            f"{source} holds no diffusers model: neither unet/config.json nor config.json"
        )
    cfg = _read_json(unet / "config.json")
    if cfg.get("_class_name", "UNet2DModel") != "UNet2DModel":
        raise DDPMError(
            f"{unet / 'config.json'} is a {cfg['_class_name']!s:.60}; ddpm imports UNet2DModel"
        )
    weights = unet / WEIGHTS_NAME
    if not weights.is_file():
        found = sorted(p.name for p in unet.glob("diffusion_pytorch_model*"))
        why = f"found {', '.join(found[:3])}: " if found else ""
        raise DDPMError(f"{weights} not found ({why}ddpm reads one unsharded safetensors file, "
                        f"never pickled .bin weights)")  # fmt: skip
    scheduler = source / "scheduler" / "scheduler_config.json"
    return DiffusersFolder(
        cfg, weights, _read_json(scheduler) if unet != source and scheduler.is_file() else None
    )


def _load_tensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    try:
        blob = path.read_bytes()
        tensors = load_safetensors(blob)
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
    except Exception as error:  # safetensors' own errors: a damaged or foreign file
        raise DDPMError(f"{path} is not a readable safetensors file ({error})") from None
    return tensors, metadata


def _embedded_config(metadata: dict[str, str]) -> RunConfig | None:
    """ddpm's config stored by export_diffusers, if present and valid."""
    if CONFIG_KEY not in metadata:
        return None
    try:
        return from_dict(json.loads(metadata[CONFIG_KEY]))
    except (ValueError, DDPMError) as error:
        log.warning("the exported ddpm config in the weights does not read (%s); ignored", error)
        return None


def imported_config(
    folder: DiffusersFolder, base: RunConfig | None, data: DataConfig | None
) -> tuple[RunConfig, list[str]]:
    """The run config of a diffusers folder over `base` (the embedded config, or defaults)."""
    notes = []
    start = base or RunConfig()
    model, size, channels, classes = unet_from_diffusers(folder.unet_config, start.model)
    if folder.scheduler_config is None:
        diffusion = start.diffusion
        if base is None:
            notes.append(
                "no scheduler config: the diffusion section is ddpm's default (linear, T=1000, eps)"
            )
    else:
        diffusion = diffusion_from_scheduler(folder.scheduler_config, start.diffusion)
    if classes and base is None:
        notes.append(
            f"class {classes - 1} (the last of num_class_embeds) is taken as the null class of guidance"
        )
    same_data = base is not None and (base.data.image_size, base.data.channels) == (size, channels)
    data_section = base.data if same_data and base is not None else DataConfig(dataset="folder")
    data_section = dataclasses.replace(data or data_section, image_size=size, channels=channels)
    sample = dataclasses.replace(
        start.sample, steps=min(start.sample.steps, diffusion.num_timesteps)
    )
    config = RunConfig(
        diffusion=diffusion, model=model, data=data_section, train=start.train, sample=sample
    )
    return config, notes


def import_diffusers(
    source: str | Path, out: str | Path, *, data: DataConfig | None = None
) -> ImportedRun:
    """Make the run folder `out` (new or empty) from the diffusers folder `source`; `data`: the
    data section to score against (its image size and channels are the model's)."""
    out = Path(out)
    folder = read_diffusers_folder(source)
    claim_new_run(out, overwrite=False)  # before the work: another run is never overwritten
    tensors, metadata = _load_tensors(folder.weights)
    config, notes = imported_config(folder, _embedded_config(metadata), data)
    net = build_model(config)
    expected = net.state_dict()
    first = "time_embedding.linear_1.weight"
    if folder.unet_config.get("flip_sin_to_cos") is False and first in tensors:
        tensors[first] = sin_cos_to_cos_sin(tensors[first])
    state = from_diffusers(tensors, expected, config.model, config.data.image_size)
    bad = [k for k, v in state.items() if not v.is_floating_point() or not torch.isfinite(v).all()]
    if bad:
        raise DDPMError(f"the diffusers tensor for ddpm's {bad[0]} is not finite floating point")
    net.load_state_dict(state)  # float16/bfloat16 weights become the network's float32
    path = checkpoint_path(out / "checkpoints", 0)
    ema = copy.deepcopy(net)  # its own tensors: safetensors stores no shared memory
    save_checkpoint(path, step=0, config=to_dict(config), model=net, ema=ema, optimizer=None)
    write_config(out, config)
    return ImportedRun(config, path, notes)
