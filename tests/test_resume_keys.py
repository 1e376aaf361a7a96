"""Every config field is classified for `ddpm train --resume`: RESUMABLE_KEYS may change, the
fields below may not (they change what the weights mean or what the next step draws). A field
added to a config class fails this test until it is placed in one of the two, so a new field is
never silently refused or, worse, silently allowed."""

from __future__ import annotations

import pytest

from ddpm.config import RESUMABLE_KEYS, RunConfig, to_dict

FIXED_ON_RESUME = {
    # the data the weights learnt and how a batch is drawn from it
    "data.augment_p", "data.channels", "data.dataset", "data.download", "data.fit",
    "data.image_size", "data.labels_from_subfolders", "data.random_flip",
    # the forward process and the objective
    "diffusion.beta_end", "diffusion.beta_start", "diffusion.clip_denoised", "diffusion.cosine_s",
    "diffusion.loss", "diffusion.loss_weight", "diffusion.min_snr_gamma",
    "diffusion.num_timesteps", "diffusion.prediction", "diffusion.schedule",
    "diffusion.sigma_data", "diffusion.variance", "diffusion.vlb_weight",
    # the network's shape: the checkpoint's tensors would not fit
    "model.attention_head_dim", "model.attention_resolutions", "model.augment_dim",
    "model.base_channels", "model.block", "model.channel_mult", "model.conditioning",
    "model.dropout", "model.linear_attention", "model.num_classes", "model.num_groups",
    "model.preset",
    "model.num_res_blocks",
    # the optimiser, EMA and the per-step draws that exact resume replays
    "train.ema_decay", "train.ema_schedule", "train.ema_sigma_rel", "train.grad_clip",
    "train.label_dropout", "train.laplace_b", "train.laplace_mu", "train.p_mean", "train.p_std",
    "train.precision", "train.seed", "train.t_sampling", "train.time_budget",
    "train.warmup_steps", "train.weight_decay",
}  # fmt: skip


def config_keys() -> set[str]:
    return {
        f"{section}.{key}" for section, values in to_dict(RunConfig()).items() for key in values
    }


def test_every_config_field_is_either_resumable_or_fixed():
    keys = config_keys()
    assert not RESUMABLE_KEYS & FIXED_ON_RESUME
    assert RESUMABLE_KEYS <= keys, f"stale RESUMABLE_KEYS: {sorted(RESUMABLE_KEYS - keys)}"
    assert FIXED_ON_RESUME <= keys, f"stale FIXED_ON_RESUME: {sorted(FIXED_ON_RESUME - keys)}"
    unclassified = keys - RESUMABLE_KEYS - FIXED_ON_RESUME
    assert not unclassified, f"classify for --resume: {sorted(unclassified)}"


@pytest.mark.slow
def test_a_fixed_field_is_refused_and_a_resumable_one_allowed(tmp_path, capsys):
    from tiny import sets, train_tiny

    from ddpm.cli import main

    run = train_tiny(tmp_path / "run", "train.num_steps=2", "train.checkpoint_every=2")
    capsys.readouterr()
    resume = ["train", "--resume", str(run), "--quiet"]
    assert main([*resume, *sets(["train.weight_decay=0.5"])]) == 2
    assert "cannot change train.weight_decay" in capsys.readouterr().err
    assert main([*resume, *sets(["train.num_steps=3", "train.log_every=1"])]) == 0
