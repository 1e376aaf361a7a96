"""The checkpoint digest covers the whole file, header included (version 2); version-1 files,
whose digest covers the tensor data only, still load with a notice."""

from __future__ import annotations

import hashlib
import json
import logging

import pytest
import torch
from safetensors.torch import load, save

from ddpm.checkpoint import load_checkpoint, save_checkpoint
from ddpm.errors import DDPMError

CONFIG = {"diffusion": {"beta_end": 0.02}}


@pytest.fixture
def saved(tmp_path):
    torch.manual_seed(0)
    model, ema = torch.nn.Linear(3, 2), torch.nn.Linear(3, 2)
    path = tmp_path / "step_00000060.safetensors"
    save_checkpoint(
        path, step=60, config=CONFIG, model=model, ema=ema, optimizer=None, val_loss=0.25
    )
    return path


def test_a_saved_checkpoint_loads_with_its_step_config_and_validation_loss(saved):
    checkpoint = load_checkpoint(saved)
    assert (checkpoint.step, checkpoint.config, checkpoint.val_loss) == (60, CONFIG, 0.25)


@pytest.mark.parametrize(
    "before, after",
    [
        (b'"step":"60"', b'"step":"70"'),  # resumed at 70 and skipped 10 steps, before
        (b'\\"beta_end\\": 0.02', b'\\"beta_end\\": 0.03'),  # loaded and changed every sample
        (b'"shape":[2,3]', b'"shape":[3,2]'),  # the same bytes read as another tensor
    ],
)
def test_one_changed_byte_in_the_header_is_refused(saved, before, after):
    blob = saved.read_bytes()
    assert before in blob
    saved.write_bytes(blob.replace(before, after, 1))
    with pytest.raises(DDPMError, match="checksum mismatch"):
        load_checkpoint(saved)


def test_a_version_1_checkpoint_loads_with_a_notice(saved, caplog):
    blob = saved.read_bytes()
    metadata = json.loads(blob[8 : 8 + int.from_bytes(blob[:8], "little")])["__metadata__"]
    metadata["format"] = "ddpm-checkpoint-v1"
    data = save(load(blob), metadata)
    metadata["sha256"] = hashlib.sha256(data[8 + int.from_bytes(data[:8], "little") :]).hexdigest()
    saved.write_bytes(save(load(blob), metadata))
    with caplog.at_level(logging.WARNING):
        checkpoint = load_checkpoint(saved)
    assert checkpoint.step == 60 and "version-1 checkpoint" in caplog.text
