"""The exported folder read by diffusers itself (the optional `compare` extra): UNet2DModel and
DDPMPipeline load it and compute ddpm's network, DDPMScheduler holds ddpm's schedule, and a
UNet2DModel made by diffusers imports as a ddpm run computing the same. Skipped, saying so, when
diffusers is not installed."""

from __future__ import annotations

import logging

import pytest
import torch
from random_runs import MAPPABLE, random_inputs, random_run

from ddpm.interop.export import export_diffusers
from ddpm.interop.import_diffusers import import_diffusers
from ddpm.loaded_run import load_run

diffusers = pytest.importorskip(
    "diffusers", reason="diffusers is not installed (pip install -e '.[compare]')"
)
logging.getLogger("diffusers").setLevel(logging.ERROR)  # its notes on attention_head_dim=None

PREDICTIONS = {"eps": "epsilon", "x0": "sample", "v": "v_prediction"}


def close(ours: torch.Tensor, theirs: torch.Tensor) -> None:
    """float32 agreement: the two compute the same operations, in places in another order."""
    scale = ours.abs().max().item()
    assert (ours - theirs).abs().max().item() <= 1e-5 * max(scale, 1.0), (ours - theirs).abs().max()


@pytest.mark.parametrize("name", sorted(MAPPABLE))
def test_diffusers_computes_the_exported_network(name, tmp_path):
    run = random_run(MAPPABLE[name])
    export_diffusers(run, tmp_path)
    unet = diffusers.UNet2DModel.from_pretrained(tmp_path / "unet").eval()
    pipeline = diffusers.DDPMPipeline.from_pretrained(tmp_path)
    x, t, labels = random_inputs(run)
    with torch.no_grad():
        ours = run.net(x, t, labels)
        theirs = unet(x, t, class_labels=labels).sample
        piped = pipeline.unet(x, t, class_labels=labels).sample
    assert ours.abs().max() > 0.1  # random weights everywhere: nothing hides behind zeros
    close(ours, theirs)
    close(ours, piped)


@pytest.mark.parametrize("name", sorted(MAPPABLE))
def test_the_scheduler_holds_ddpms_schedule_and_prediction(name, tmp_path):
    run = random_run(MAPPABLE[name])
    export_diffusers(run, tmp_path)
    scheduler = diffusers.DDPMPipeline.from_pretrained(tmp_path).scheduler
    assert isinstance(scheduler, diffusers.DDPMScheduler)
    d = run.config.diffusion
    assert scheduler.config.num_train_timesteps == d.num_timesteps
    assert scheduler.config.prediction_type == PREDICTIONS[d.prediction]
    assert scheduler.config.clip_sample == d.clip_denoised
    # diffusers keeps the schedule in float32: agreement to float32 rounding
    torch.testing.assert_close(scheduler.betas.double(), run.schedule.betas, rtol=1e-6, atol=0)
    torch.testing.assert_close(
        scheduler.alphas_cumprod.double(), run.schedule.alpha_bar, rtol=1e-5, atol=1e-8
    )


def test_the_pipeline_samples_from_the_exported_folder(tmp_path):
    run = random_run({"data": {"channels": 3}})
    export_diffusers(run, tmp_path)
    pipeline = diffusers.DDPMPipeline.from_pretrained(tmp_path)
    images = pipeline(batch_size=2, num_inference_steps=3, output_type="np",
                      generator=torch.Generator().manual_seed(0)).images  # fmt: skip
    assert images.shape == (2, 8, 8, 3)


DIFFUSERS_MADE = {
    "default-shift": dict(attention_head_dim=8),
    "sin-cos-order": dict(attention_head_dim=16, flip_sin_to_cos=False),  # columns swapped
    "scale-shift-classes": dict(
        resnet_time_scale_shift="scale_shift", attn_norm_num_groups=8, num_class_embeds=4,
        attention_head_dim=None,
    ),
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(DIFFUSERS_MADE))
def test_a_diffusers_made_unet_imports_as_a_run_computing_the_same(name, tmp_path):
    torch.manual_seed(0)  # diffusers draws its initialisation from the global generator
    unet = diffusers.UNet2DModel(
        sample_size=16, in_channels=3, out_channels=3, block_out_channels=(16, 32, 32),
        layers_per_block=1, norm_num_groups=8,
        down_block_types=("DownBlock2D", "AttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "AttnUpBlock2D", "UpBlock2D"), **DIFFUSERS_MADE[name],
    ).eval()  # fmt: skip
    with torch.no_grad():  # its zero-initialised layers (none here) would hide a mismatch
        for p in unet.parameters():
            p.copy_(torch.randn_like(p) * 0.2)
    unet.save_pretrained(tmp_path / "hf" / "unet")
    diffusers.DDPMScheduler(beta_schedule="squaredcos_cap_v2", prediction_type="v_prediction",
                            num_train_timesteps=400).save_pretrained(tmp_path / "hf" / "scheduler")  # fmt: skip
    import_diffusers(tmp_path / "hf", tmp_path / "run")
    run = load_run(tmp_path / "run")
    d = run.config.diffusion
    assert (d.schedule, d.prediction, d.num_timesteps) == ("cosine", "v", 400)
    assert (run.config.data.image_size, run.config.data.channels) == (16, 3)
    x, t, labels = random_inputs(run)
    with torch.no_grad():
        close(run.net(x, t, labels), unet(x, t, class_labels=labels).sample)
