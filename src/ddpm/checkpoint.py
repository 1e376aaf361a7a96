"""Checkpoints: one safetensors file per save, written atomically and verified on load.

No pickle anywhere: tensors (model, EMA, optimizer state) are safetensors entries; the step, the
config, the validation loss, the training seconds and the optimizer's hyper-parameters are JSON in the header's
metadata. A SHA-256 of the whole file (header included, with the digest's own 64 characters read
as zeros) catches truncation and bit rot anywhere, so a flipped bit in the stored step or config
is refused like one in the weights. Version-1 files, whose digest covers the tensor data only,
still load with a notice. Files are `checkpoints/step_{step:08d}.safetensors`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors
from torch import nn

from .errors import DDPMError
from .files import atomic_write

log = logging.getLogger(__name__)
FORMAT = "ddpm-checkpoint-v2"
FORMAT_V1 = "ddpm-checkpoint-v1"  # digest of the tensor data only
_PLACEHOLDER = "0" * 64  # the digest's place in the header while the file is hashed
NAME = re.compile(r"^step_(\d{8,})\.safetensors$")


@dataclass(frozen=True, eq=False)
class Checkpoint:
    step: int
    config: dict[str, Any]
    tensors: dict[str, torch.Tensor]
    optimizer_groups: list[dict[str, Any]]
    path: Path
    val_loss: float | None = None  # the EMA's validation loss at this step, if it was measured
    train_seconds: float | None = None  # training seconds spent up to this step (time budgets)

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
    """Version 1: SHA-256 of the tensor data only."""
    header_len = int.from_bytes(blob[:8], "little")
    return hashlib.sha256(memoryview(blob)[8 + header_len :]).hexdigest()


def _file_digest(blob: bytes | bytearray, digest: str) -> str:
    """Version 2: SHA-256 of the whole file with `digest`'s text in the header read as zeros."""
    header_end = 8 + int.from_bytes(blob[:8], "little")
    at = _digest_position(blob[:header_end], digest)
    sha = hashlib.sha256(memoryview(blob)[:at])
    sha.update(_PLACEHOLDER.encode())
    sha.update(memoryview(blob)[at + len(digest) :])
    return sha.hexdigest()


def _digest_position(header: bytes | bytearray, digest: str) -> int:
    """Offset of the digest's 64 characters in the header (as serde_json writes it: no spaces)."""
    key = b'"sha256":"'
    at = bytes(header).find(key + digest.encode() + b'"')
    if at < 0 or len(digest) != 64:
        raise ValueError("no digest in the header")
    return at + len(key)


def save_checkpoint(
    path: Path,
    *,
    step: int,
    config: dict[str, Any],
    model: nn.Module,
    ema: nn.Module,
    optimizer: torch.optim.Optimizer | None,
    val_loss: float | None = None,
    train_seconds: float | None = None,
    extra: dict[str, torch.Tensor] | None = None,
) -> None:
    """Save everything needed to resume (and to rebuild the model from this file alone); `extra`:
    further training state under its own prefix (e.g. `importance.history`)."""
    tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
    tensors |= {f"ema.{k}": v for k, v in ema.state_dict().items()}
    groups: list[dict[str, Any]] = []
    if optimizer is not None:
        optim_state = optimizer.state_dict()
        for index, entries in optim_state["state"].items():
            tensors |= {f"optim.{index}.{n}": torch.as_tensor(v) for n, v in entries.items()}
        groups = optim_state["param_groups"]
    tensors |= extra or {}
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    metadata = {
        "format": FORMAT,
        "step": str(step),
        "config": json.dumps(config),
        "optimizer_groups": json.dumps(groups),
    }
    if val_loss is not None:
        metadata["val_loss"] = repr(float(val_loss))
    if train_seconds is not None:
        metadata["train_seconds"] = repr(float(train_seconds))
    atomic_write(path, sealed(tensors, metadata), note="earlier checkpoints are intact")


def sealed(tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> bytes:
    """The safetensors bytes of `tensors` (contiguous, CPU) with `metadata` and, in its "sha256"
    entry, the version-2 digest of the whole file (see the module docstring)."""
    # Serialised once with the placeholder; the digest then takes its place, same length, so the
    # header's size and every offset stay as hashed.
    blob = bytearray(save_safetensors(tensors, {**metadata, "sha256": _PLACEHOLDER}))
    digest = _file_digest(blob, _PLACEHOLDER)
    at = _digest_position(blob, _PLACEHOLDER)
    blob[at : at + 64] = digest.encode()
    return bytes(blob)


def read_sealed(blob: bytes) -> dict[str, str]:
    """The metadata of a file written by `sealed`; ValueError if its digest does not match its
    content (truncated or modified) or it has none."""
    metadata = _read_metadata(blob)
    if _file_digest(blob, metadata.get("sha256", "")) != metadata.get("sha256"):
        raise ValueError("checksum mismatch (truncated or modified)")
    return metadata


def _read_metadata(blob: bytes) -> dict[str, str]:
    header_len = int.from_bytes(blob[:8], "little")
    if len(blob) < 8 or header_len > len(blob) - 8:
        raise ValueError("truncated header")
    return json.loads(bytes(blob[8 : 8 + header_len])).get("__metadata__") or {}


def _verify(blob: bytes, metadata: dict[str, str], path: Path) -> None:
    """Raise ValueError unless the file's digest matches its content."""
    digest = metadata.get("sha256", "")
    if metadata.get("format") == FORMAT:
        if _file_digest(blob, digest) != digest:
            raise ValueError("checksum mismatch (truncated or modified)")
    elif metadata.get("format") == FORMAT_V1:
        if _data_digest(blob) != digest:
            raise ValueError("checksum mismatch (truncated or modified)")
        log.warning(
            "%s is a version-1 checkpoint: its checksum covers the weights but not the stored "
            "step and config; the next save writes version 2",
            path,
        )
    else:
        raise ValueError("not a ddpm checkpoint")


def load_checkpoint(path: str | Path) -> Checkpoint:
    """Read and verify a checkpoint; any damage is a DDPMError naming the file."""
    path = Path(path)
    if not path.is_file():
        raise DDPMError(f"checkpoint not found: {path}")
    blob = path.read_bytes()
    try:
        metadata = _read_metadata(blob)
        _verify(blob, metadata, path)
        tensors = load_safetensors(blob)
        val_loss, seconds = metadata.get("val_loss"), metadata.get("train_seconds")
        return Checkpoint(
            step=int(metadata["step"]),
            config=json.loads(metadata["config"]),
            tensors={k: v for k, v in tensors.items() if not k.startswith("rng.")},
            path=path,
            optimizer_groups=json.loads(metadata["optimizer_groups"]),
            val_loss=float(val_loss) if val_loss is not None else None,
            train_seconds=float(seconds) if seconds is not None else None,
        )
    except Exception as error:  # safetensors, json and our own checks all mean "damaged file"
        raise DDPMError(
            f"checkpoint {path} is corrupt or not a ddpm checkpoint ({error})"
        ) from None


@dataclass(frozen=True)
class CheckpointStatus:
    """What a run report shows of a checkpoint file: its step and whether its checksum holds."""

    path: Path
    size: int  # bytes
    ok: bool
    problem: str = ""  # why it is not ok (truncated, modified, not a ddpm checkpoint)
    step: int | None = None
    val_loss: float | None = None
    train_seconds: float | None = None


def inspect_checkpoint(path: str | Path) -> CheckpointStatus:
    """Verify a checkpoint's checksum and read its header, without building its tensors (cheaper
    than load_checkpoint: a hash of the file). Never raises for a damaged or unreadable file: the
    status says what is wrong."""
    path = Path(path)
    try:
        blob = path.read_bytes()
    except OSError as error:
        return CheckpointStatus(path, 0, False, f"unreadable ({error.strerror or error})")
    try:
        metadata = _read_metadata(blob)
        _verify(blob, metadata, path)
        val_loss, seconds = metadata.get("val_loss"), metadata.get("train_seconds")
        return CheckpointStatus(
            path, len(blob), True, step=int(metadata["step"]),
            val_loss=float(val_loss) if val_loss is not None else None,
            train_seconds=float(seconds) if seconds is not None else None,
        )  # fmt: skip
    except Exception as error:  # any damage: the header, the JSON or the digest
        return CheckpointStatus(path, len(blob), False, str(error) or type(error).__name__)


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
