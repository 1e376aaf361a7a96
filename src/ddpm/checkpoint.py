"""Checkpoints: one safetensors file per save, written atomically and verified on load.

No pickle anywhere: tensors (model, EMA, optimizer state, RNG states) are safetensors entries;
the step, the config and the optimizer's hyper-parameters are JSON in the header's metadata. A
SHA-256 of the tensor data in the metadata catches truncation and bit rot. Files are
`checkpoints/step_{step:08d}.safetensors`.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors
from torch import nn

from .errors import DDPMError

FORMAT = "ddpm-checkpoint-v1"
NAME = re.compile(r"^step_(\d{8,})\.safetensors$")


@dataclass(frozen=True, eq=False)
class Checkpoint:
    step: int
    config: dict[str, Any]
    tensors: dict[str, torch.Tensor]
    optimizer_groups: list[dict[str, Any]]
    path: Path

    def state_dict(self, prefix: str) -> dict[str, torch.Tensor]:
        """The entries under `prefix.` ("model", "ema") with the prefix removed."""
        cut = len(prefix) + 1
        return {k[cut:]: v for k, v in self.tensors.items() if k.startswith(prefix + ".")}

    def optimizer_state(self) -> dict[str, Any]:
        """Rebuild a torch optimizer state_dict from the flattened `optim.{index}.{name}` entries."""
        state: dict[int, dict[str, torch.Tensor]] = {}
        for key, value in self.state_dict("optim").items():
            index, name = key.split(".", 1)
            state.setdefault(int(index), {})[name] = value
        return {"state": state, "param_groups": self.optimizer_groups}


def checkpoint_path(folder: Path, step: int) -> Path:
    return folder / f"step_{step:08d}.safetensors"


def list_checkpoints(folder: Path) -> list[Path]:
    """Checkpoint files in `folder`, oldest step first."""
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := NAME.match(p.name))]
    return [p for _, p in sorted(found)]


def _data_digest(blob: bytes) -> str:
    header_len = int.from_bytes(blob[:8], "little")
    return hashlib.sha256(memoryview(blob)[8 + header_len :]).hexdigest()


def atomic_write(path: Path, blob: bytes) -> None:
    """Write to a temporary file beside `path`, fsync, rename over `path`, fsync the folder: a kill
    or a full disk at any moment leaves either the old file or the new one, never half of one."""
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            f.write(blob)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as error:
        tmp.unlink(missing_ok=True)
        raise DDPMError(
            f"could not write {path}: {error.strerror or error}; earlier checkpoints are intact"
        ) from error
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def save_checkpoint(
    path: Path,
    *,
    step: int,
    config: dict[str, Any],
    model: nn.Module,
    ema: nn.Module,
    optimizer: torch.optim.Optimizer | None,
) -> None:
    """Save everything needed to resume (and to rebuild the model from this file alone)."""
    tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
    tensors |= {f"ema.{k}": v for k, v in ema.state_dict().items()}
    groups: list[dict[str, Any]] = []
    if optimizer is not None:
        optim_state = optimizer.state_dict()
        for index, entries in optim_state["state"].items():
            tensors |= {f"optim.{index}.{n}": torch.as_tensor(v) for n, v in entries.items()}
        groups = optim_state["param_groups"]
    tensors["rng.cpu"] = torch.get_rng_state()
    if torch.cuda.is_available():
        for i, state in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng.cuda.{i}"] = state
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    metadata = {
        "format": FORMAT,
        "step": str(step),
        "config": json.dumps(config),
        "optimizer_groups": json.dumps(groups),
    }
    # The data section does not depend on the metadata, so hashing a first serialisation is valid.
    metadata["sha256"] = _data_digest(save_safetensors(tensors, metadata))
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, save_safetensors(tensors, metadata))


def _read_metadata(blob: bytes) -> dict[str, str]:
    header_len = int.from_bytes(blob[:8], "little")
    if len(blob) < 8 or header_len > len(blob) - 8:
        raise ValueError("truncated header")
    return json.loads(bytes(blob[8 : 8 + header_len])).get("__metadata__") or {}


def load_checkpoint(path: str | Path) -> Checkpoint:
    """Read and verify a checkpoint; any damage is a DDPMError naming the file."""
    path = Path(path)
    if not path.is_file():
        raise DDPMError(f"checkpoint not found: {path}")
    blob = path.read_bytes()
    try:
        metadata = _read_metadata(blob)
        if metadata.get("format") != FORMAT:
            raise ValueError("not a ddpm checkpoint")
        if _data_digest(blob) != metadata.get("sha256"):
            raise ValueError("checksum mismatch (truncated or modified)")
        tensors = load_safetensors(blob)
        return Checkpoint(
            step=int(metadata["step"]),
            config=json.loads(metadata["config"]),
            tensors=tensors,
            path=path,
            optimizer_groups=json.loads(metadata["optimizer_groups"]),
        )
    except Exception as error:  # safetensors, json and our own checks all mean "damaged file"
        raise DDPMError(
            f"checkpoint {path} is corrupt or not a ddpm checkpoint ({error})"
        ) from None


def load_latest(folder: Path) -> Checkpoint:
    """The newest checkpoint in `folder` that loads; a damaged newest one is named in the error,
    together with the previous good one, so nothing is silently skipped."""
    paths = list_checkpoints(folder)
    if not paths:
        raise DDPMError(f"no checkpoint in {folder}")
    try:
        return load_checkpoint(paths[-1])
    except DDPMError as error:
        for older in reversed(paths[:-1]):
            try:
                load_checkpoint(older)
            except DDPMError:
                continue
            raise DDPMError(
                f"{error}; the previous good checkpoint is {older}: delete the damaged "
                f"file to resume from it"
            ) from None
        raise


def prune_checkpoints(folder: Path, keep: int) -> None:
    """Delete all but the newest `keep` checkpoints (keep <= 0 keeps all)."""
    if keep > 0:
        for old in list_checkpoints(folder)[:-keep]:
            old.unlink(missing_ok=True)
