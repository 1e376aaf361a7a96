"""Weights files: a trained network's EMA weights and its run's config, nothing else, in one
safetensors file (`ddpm export --format safetensors`), for sampling and scoring anywhere.

No optimizer state and no raw weights, so about a quarter of a checkpoint (which holds the raw
weights, the EMA and AdamW's two moments). The tensors keep the U-Net's own state-dict names
(`conv_in.weight`, ...), so any safetensors reader sees the network as it is; the metadata holds
the format, the config (JSON), the training step and a SHA-256 of the whole file, written and
checked as ddpm.checkpoint does. A weights file loads wherever a checkpoint file does
(ddpm.loaded_run.load_run): as a checkpoint with the EMA weights only.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load as load_safetensors

from .checkpoint import Checkpoint, load_checkpoint, read_sealed, sealed
from .config import from_dict
from .errors import DDPMError
from .files import atomic_write

FORMAT = "ddpm-weights-v1"
CHECKPOINT_FORMATS = ("ddpm-checkpoint-v1", "ddpm-checkpoint-v2")


def save_weights(
    path: str | Path, *, state: dict[str, torch.Tensor], config: dict[str, Any], step: int
) -> Path:
    """Write the network's state dict `state` (the EMA's) with its run config and step."""
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in state.items()}
    metadata = {"format": FORMAT, "config": json.dumps(config), "step": str(step)}
    return atomic_write(path, sealed(tensors, metadata))


def _header_format(path: Path) -> str | None:
    """The "format" entry of a safetensors file's metadata; None if it has none or the file
    does not start like a safetensors file."""
    try:
        with open(path, "rb") as f:
            size = int.from_bytes(f.read(8), "little")
            if not 2 <= size <= 100_000_000:
                return None
            header = json.loads(f.read(size))
        value = header.get("__metadata__", {}).get("format")
    except (OSError, ValueError, AttributeError):  # unreadable, not JSON, not a mapping
        return None
    return value if isinstance(value, str) else None


def load_weights(path: str | Path) -> Checkpoint:
    """Read and verify a weights file -> a Checkpoint holding `ema.*` tensors, no optimizer;
    any damage or a config that does not check (ddpm.config.from_dict) is one DDPMError."""
    path = Path(path)
    if not path.is_file():
        raise DDPMError(f"weights file not found: {path}")
    blob = path.read_bytes()
    try:
        metadata = read_sealed(blob)
        if metadata.get("format") != FORMAT:
            raise ValueError(f"format {metadata.get('format')!r}, not {FORMAT}")
        config = json.loads(metadata["config"])
        step = int(metadata["step"])
        tensors = load_safetensors(blob)
    except Exception as error:  # safetensors, json and our own checks all mean "damaged file"
        raise DDPMError(f"weights file {path} is corrupt or not ddpm's ({error})") from None
    from_dict(config)  # a DDPMError naming the key that does not check
    return Checkpoint(
        step=step, config=config, tensors={f"ema.{k}": v for k, v in tensors.items()},
        optimizer_groups=[], path=path,
    )  # fmt: skip


def load_model_file(path: str | Path) -> Checkpoint:
    """A weights file or a checkpoint file, told apart by the format in its header; another
    tool's safetensors file is one DDPMError saying so."""
    path = Path(path)
    kind = _header_format(path) if path.is_file() else None
    if kind == FORMAT:
        return load_weights(path)
    if kind is not None and kind not in CHECKPOINT_FORMATS:  # e.g. "pt": torch's, diffusers'
        raise DDPMError(
            f"{path} is not a ddpm weights file or checkpoint (its format is {kind[:40]!r}); a "
            f"weights file is written by exporting a run in the safetensors format"
        )
    return load_checkpoint(path)  # names damage (a torn header included) as before
