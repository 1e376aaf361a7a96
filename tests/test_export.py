"""ddpm <-> diffusers files without diffusers: an exact round trip of tensors and config, the
written layout, and every refusal naming the setting that blocks it (tests/test_export_diffusers.py
checks the files against diffusers itself)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from random_runs import MAPPABLE, random_run
from safetensors.torch import load_file, save_file

from ddpm.cli import main
from ddpm.config import to_dict
from ddpm.errors import DDPMError
from ddpm.interop.diffusers_names import from_diffusers, to_diffusers
from ddpm.interop.export import WEIGHTS_NAME, export_diffusers
from ddpm.interop.import_diffusers import import_diffusers
from ddpm.loaded_run import load_run


@pytest.mark.parametrize("name", sorted(MAPPABLE))
def test_ddpm_to_diffusers_to_ddpm_gives_the_same_tensors_and_config(name, tmp_path):
    run = random_run(MAPPABLE[name])
    export_diffusers(run, tmp_path / "hf")
    imported = import_diffusers(tmp_path / "hf", tmp_path / "run")
    back = load_run(tmp_path / "run")
    assert to_dict(back.config) == to_dict(run.config)
    assert imported.config == run.config and back.step == 0
    original, loaded = run.net.state_dict(), back.net.state_dict()
    assert original.keys() == loaded.keys()
    for key in original:
        assert torch.equal(original[key], loaded[key]), key
    raw = load_run(tmp_path / "run", use_ema=False).net.state_dict()
    assert all(torch.equal(raw[k], loaded[k]) for k in raw)  # EMA == raw weights


def test_the_folder_is_a_ddpm_pipeline_with_the_scheduler_ddpm_trained_with(tmp_path):
    run = random_run(MAPPABLE["trained-betas-v"])
    files = export_diffusers(run, tmp_path)
    names = sorted(str(p.relative_to(tmp_path)) for p in files)
    assert names == ["model_index.json", "scheduler/scheduler_config.json", "unet/config.json",
                     f"unet/{WEIGHTS_NAME}"]  # fmt: skip
    index = json.loads((tmp_path / "model_index.json").read_text())
    assert index["unet"] == ["diffusers", "UNet2DModel"]
    assert index["scheduler"] == ["diffusers", "DDPMScheduler"]
    scheduler = json.loads((tmp_path / "scheduler/scheduler_config.json").read_text())
    assert scheduler["prediction_type"] == "v_prediction"
    assert scheduler["variance_type"] == "fixed_large"
    assert scheduler["num_train_timesteps"] == 1000
    # no diffusers name for cosine with s = 0.02: the betas themselves, as ddpm computes them
    assert torch.equal(torch.tensor(scheduler["trained_betas"], dtype=torch.float64),
                       run.schedule.betas)  # fmt: skip
    unet = json.loads((tmp_path / "unet/config.json").read_text())
    assert unet["block_out_channels"] == [32, 64] and unet["sample_size"] == 8
    assert unet["down_block_types"] == ["DownBlock2D", "AttnDownBlock2D"]
    assert unet["up_block_types"] == ["AttnUpBlock2D", "UpBlock2D"]
    assert (unet["flip_sin_to_cos"], unet["freq_shift"], unet["norm_eps"]) == (True, 0, 1e-5)
    weights = load_file(tmp_path / "unet" / WEIGHTS_NAME)
    assert weights["down_blocks.1.attentions.0.to_q.weight"].shape == (64, 64)


def test_the_names_split_qkv_into_q_k_v_in_order():
    run = random_run({})
    state = run.net.state_dict()
    mapped = to_diffusers(state, run.config.model, 8)
    qkv = state["down.2.1.qkv.weight"]  # level 1 (4x4, attention), its first block
    for i, name in enumerate("qkv"):
        part = mapped[f"down_blocks.1.attentions.0.to_{name}.weight"]
        assert torch.equal(part, qkv[64 * i : 64 * (i + 1), :, 0, 0])
    assert torch.equal(mapped["time_embedding.linear_1.weight"], state["time_mlp.0.weight"])
    assert torch.equal(mapped["up_blocks.0.upsamplers.0.conv.weight"], state["up.1.2.conv.weight"])
    extra = {**mapped, "extra.weight": torch.zeros(1)}
    with pytest.raises(DDPMError, match="extra.weight"):
        from_diffusers(extra, state, run.config.model, 8)
    del mapped["mid_block.attentions.0.to_k.bias"]
    with pytest.raises(DDPMError, match="mid_block.attentions.0.to_k.bias"):
        from_diffusers(mapped, state, run.config.model, 8)


@pytest.mark.parametrize(
    ("overrides", "key"),
    [
        ({"model": {"block": "convnext"}}, "model.block=convnext"),
        ({"model": {"linear_attention": True}}, "model.linear_attention"),
        ({"model": {"augment_dim": 6}}, "model.augment_dim"),
        ({"diffusion": {"variance": "learned_range", "loss": "hybrid"}}, "diffusion.variance"),
        ({"diffusion": {"prediction": "edm"}}, "diffusion.prediction=edm"),
        ({"model": {"attention_head_dim": 24}}, "model.attention_head_dim"),  # 32: 1, 64: 2x32
    ],
)
def test_what_diffusers_cannot_represent_is_refused_by_its_key(overrides, key, tmp_path):
    run = random_run(overrides)
    with pytest.raises(DDPMError, match=key.replace(".", r"\.")):
        export_diffusers(run, tmp_path / "hf")
    assert not (tmp_path / "hf").exists()


def test_linear_attention_that_is_never_used_does_not_block(tmp_path):
    """linear_attention only fills the levels without full attention: with attention at every
    level it adds nothing, and the network maps."""
    run = random_run({"model": {"linear_attention": True, "attention_resolutions": [8, 4]}})
    assert not any("LinearAttention" in type(m).__name__ for m in run.net.modules())
    assert len(export_diffusers(run, tmp_path)) == 4


def _exported(tmp_path: Path, overrides: dict | None = None) -> Path:
    export_diffusers(random_run(overrides or {}), tmp_path / "hf")
    return tmp_path / "hf"


def _edit(path: Path, **changes: object) -> None:
    data = json.loads(path.read_text())
    path.write_text(json.dumps({**data, **changes}))


@pytest.mark.parametrize(
    ("file", "changes", "field"),
    [
        ("unet/config.json", {"freq_shift": 1}, "freq_shift=1"),
        ("unet/config.json", {"flip_sin_to_cos": "yes"}, "flip_sin_to_cos='yes'"),
        ("unet/config.json", {"norm_eps": 1e-6}, "norm_eps=1e-06"),
        ("unet/config.json", {"downsample_padding": 0}, "downsample_padding=0"),
        ("unet/config.json", {"mid_block_type": None}, "mid_block_type=None"),
        ("unet/config.json", {"time_embedding_type": "fourier"}, "time_embedding_type"),
        ("unet/config.json", {"center_input_sample": True}, "center_input_sample"),
        ("unet/config.json", {"out_channels": 2}, "out_channels=2"),
        ("unet/config.json", {"up_block_types": ["UpBlock2D", "UpBlock2D"]}, "up_block_types"),
        ("unet/config.json", {"down_block_types": ["ResnetDownsampleBlock2D", "DownBlock2D"]},
         "down_block_types"),
        ("unet/config.json", {"attention_head_dim": 24}, "attention_head_dim=24"),
        ("unet/config.json", {"block_out_channels": [32, 48]}, "block_out_channels"),
        ("unet/config.json", {"attn_norm_num_groups": None}, "attn_norm_num_groups=None"),
        ("unet/config.json", {"class_embed_type": "timestep"}, "class_embed_type"),
        ("unet/config.json", {"sample_size": [8, 16]}, "sample_size"),
        ("unet/config.json", {"_class_name": "UNet2DConditionModel"}, "UNet2DConditionModel"),
        ("scheduler/scheduler_config.json", {"thresholding": True}, "thresholding=True"),
        ("scheduler/scheduler_config.json", {"variance_type": "learned_range"}, "variance_type"),
        ("scheduler/scheduler_config.json", {"beta_schedule": "exponential"}, "beta_schedule"),
        ("scheduler/scheduler_config.json", {"rescale_betas_zero_snr": True}, "rescale_betas"),
        ("scheduler/scheduler_config.json", {"beta_end": "0.02"}, "beta_end='0.02'"),
        ("scheduler/scheduler_config.json", {"trained_betas": [0.5] * 1000}, "trained_betas"),
        ("scheduler/scheduler_config.json", {"_class_name": "EulerDiscreteScheduler"},
         "_class_name"),
    ],
)  # fmt: skip
def test_an_unrepresentable_diffusers_model_is_refused_naming_its_field(
    tmp_path, capsys, file, changes, field
):
    folder = _exported(tmp_path)
    _edit(folder / file, **changes)
    code = main(["import", "--from", "diffusers", str(folder), "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 2 and field in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_without_ddpm_config_the_run_is_read_from_the_diffusers_configs(tmp_path):
    """A folder diffusers made (no ddpm config in the weights' metadata): the model and diffusion
    sections from its configs, the data section the image size and channels (folder dataset)."""
    overrides = MAPPABLE["classes-3-levels"] | {"diffusion": {"schedule": "quadratic"}}
    run = random_run(overrides)
    folder = _exported(tmp_path, overrides)
    weights = folder / "unet" / WEIGHTS_NAME
    save_file(load_file(weights), weights, metadata={"format": "pt"})
    imported = import_diffusers(folder, tmp_path / "run")
    config = imported.config
    assert config.model == run.config.model and config.diffusion == run.config.diffusion
    assert (config.data.dataset, config.data.data_dir) == ("folder", None)
    assert (config.data.image_size, config.data.channels) == (16, 3)
    assert any("null class" in note for note in imported.notes)
    (folder / "scheduler" / "scheduler_config.json").unlink()
    imported = import_diffusers(folder / "unet", tmp_path / "run2")  # the model's own folder
    assert imported.config.diffusion.schedule == "linear" and imported.notes


def test_bad_files_are_one_line_each(tmp_path, capsys):
    folder = _exported(tmp_path)
    weights = folder / "unet" / WEIGHTS_NAME

    def run_import(out: str) -> str:
        code = main(["import", "--from", "diffusers", str(folder), "--out", str(tmp_path / out)])
        err = capsys.readouterr().err
        assert code == 2 and len(err.strip().splitlines()) == 1, err
        return err

    weights.write_bytes(weights.read_bytes()[:1000])  # truncated
    assert "not a readable safetensors file" in run_import("a")
    weights.unlink()
    (folder / "unet" / "diffusion_pytorch_model.bin").write_bytes(b"pickle")
    assert "never pickled .bin" in run_import("b")
    (folder / "unet" / "config.json").write_text("{not json")
    assert "cannot read" in run_import("c")
    code = main(["import", "--from", "diffusers", str(tmp_path / "nothing"), "--out", "x"])
    assert code == 2 and "holds no diffusers model" in capsys.readouterr().err


def test_import_never_overwrites_a_run(tmp_path, capsys):
    folder = _exported(tmp_path)
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "config.json").write_text("{}")
    code = main(["import", "--from", "diffusers", str(folder), "--out", str(tmp_path / "run")])
    assert code == 2 and "not empty" in capsys.readouterr().err
    assert (tmp_path / "run" / "config.json").read_text() == "{}"


def test_export_refuses_a_folder_holding_other_files(tmp_path, capsys):
    run_dir = tmp_path / "run"
    import_source = _exported(tmp_path)
    import_diffusers(import_source, run_dir)
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    args = ["export", "--run", str(run_dir), "--format", "diffusers", "--out"]
    assert main([*args, str(tmp_path / "busy")]) == 2
    assert "not empty" in capsys.readouterr().err
    assert main([*args, str(import_source)]) == 0  # an earlier export is replaced
    assert main([*args, str(tmp_path / "new")]) == 0
    assert "unet/config.json" in capsys.readouterr().out


def test_an_imported_run_samples_and_scores(tiny_run, tmp_path, capsys):
    """A trained run out through `ddpm export`, its ddpm config stripped as a folder diffusers
    saved would be, back through `ddpm import` with a dataset to score against."""
    hf, run = tmp_path / "hf", str(tmp_path / "run")
    assert main(["export", "--run", str(tiny_run), "--format", "diffusers", "--out", str(hf)]) == 0
    weights = hf / "unet" / WEIGHTS_NAME
    save_file(load_file(weights), weights, metadata={"format": "pt"})
    assert (
        main(["import", "--from", "diffusers", str(hf), "--out", run, "--dataset", "digits"]) == 0
    )
    assert "imported" in capsys.readouterr().out
    grid = tmp_path / "grid.png"
    assert (
        main(["sample", "--run", run, "--n", "4", "--steps", "2", "--out", str(grid), "--quiet"])
        == 0
    )
    assert main(["eval", "--run", run, "--metrics", "val-loss", "--bpd-n", "8", "--quiet"]) == 0
    assert "val" in capsys.readouterr().out
    assert torch.equal(load_run(run).net.conv_in.weight, load_run(tiny_run).net.conv_in.weight)


def test_an_imported_run_trains_on(tiny_run, tmp_path, capsys):
    """Fine-tuning an imported network: `ddpm train --resume` on the imported run (no optimizer
    state in its checkpoint: AdamW starts afresh) trains on and checkpoints."""
    hf, run = tmp_path / "hf", tmp_path / "run"
    assert main(["export", "--run", str(tiny_run), "--format", "diffusers", "--out", str(hf)]) == 0
    assert main(["import", "--from", "diffusers", str(hf), "--out", str(run), "--dataset",
                 "digits"]) == 0  # fmt: skip
    short = ["train.num_steps=2", "train.batch_size=4", "train.checkpoint_every=2",
             "train.sample_every=100000", "train.val_images=4", "train.log_every=1"]  # fmt: skip
    args = ["train", "--resume", str(run), "--quiet", *[a for s in short for a in ("--set", s)]]
    assert main(args) == 0, capsys.readouterr().err
    assert (run / "checkpoints" / "step_00000002.safetensors").is_file()
