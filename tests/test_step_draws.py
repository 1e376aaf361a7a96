"""Every random draw of a training step is a function of (seed, step), made on the step's device:
the CPU draws are bit-identical to drawing t then eps from the (seed, step) generator, dropout
masks are sliced from the global batch's, and on CUDA a step makes no host synchronisation."""

from __future__ import annotations

import copy

import pytest
import torch

from ddpm.config import from_dict, load_preset
from ddpm.data import InMemoryBatches
from ddpm.diffusion import gather, training_loss
from ddpm.models import DropoutNoise, SeededDropout
from ddpm.rng import seeded_generator
from ddpm.schedules import make_schedule
from ddpm.train import make_trainer

SMALL = {"base_channels": 8, "channel_mult": [1, 2], "num_res_blocks": 1,
         "attention_resolutions": [4], "num_groups": 4}  # fmt: skip


def config(dropout: float = 0.0):
    return from_dict(
        {
            "model": {**SMALL, "dropout": dropout},
            "train": {"precision": "fp32", "seed": 7, "t_sampling": "uniform"},
        },
        base=load_preset("digits"),
    )


def perturbed(trainer):
    """Move every weight off its initialisation: zero-initialised output layers would make the
    loss mean(eps^2) whatever t and the dropout masks are, and the tests below blind."""
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in trainer.model.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=generator))
    return trainer


def test_the_step_draws_t_then_eps_from_the_seed_and_step_generator():
    cfg = config()
    trainer = perturbed(make_trainer(cfg, torch.device("cpu")))
    x0 = torch.rand(6, 1, 8, 8) * 2 - 1
    before = copy.deepcopy(trainer.model)
    loss, _, _ = trainer.step(5, x0, None)
    g = seeded_generator(7, 5, 2)  # written out here, not through step_generator
    t = torch.randint(cfg.diffusion.num_timesteps, (6,), generator=g)
    eps = torch.randn(x0.shape, generator=g)
    d = cfg.diffusion
    alpha_bar = make_schedule(
        d.schedule, d.num_timesteps, beta_start=d.beta_start, beta_end=d.beta_end
    ).alpha_bar.float()
    expected = training_loss(
        before, x0, t, eps, gather(alpha_bar, t, 4), prediction=d.prediction, loss_type=d.loss
    ).mean()
    assert torch.equal(loss, expected.detach())


def test_dropout_masks_are_the_global_batch_sliced_per_process():
    layer = SeededDropout(0.5).train()
    x = torch.ones(8, 3, 4, 4)
    whole = layer.__class__(0.5).train()
    whole.noise = DropoutNoise(seeded_generator(1, 2, 3))
    expected = whole(x)
    for rank in (0, 1):
        layer.noise = DropoutNoise(seeded_generator(1, 2, 3), rank=rank, world_size=2)
        assert torch.equal(layer(x[rank * 4 : (rank + 1) * 4]), expected[rank * 4 : (rank + 1) * 4])
    assert 0.3 < (expected == 0).float().mean() < 0.7 and set(expected.unique().tolist()) == {0, 2}
    assert torch.equal(layer.eval()(x), x)


def test_a_step_with_dropout_repeats_exactly_and_depends_on_the_step():
    cfg = config(dropout=0.3)
    x0 = torch.rand(4, 1, 8, 8) * 2 - 1
    torch.manual_seed(0)
    weights = perturbed(make_trainer(cfg, torch.device("cpu"))).model.state_dict()
    losses = []
    for step in (3, 3, 4):
        torch.manual_seed(step * 1000 + len(losses))  # the global RNG must not matter
        trainer = make_trainer(cfg, torch.device("cpu"))
        trainer.model.load_state_dict(weights)
        losses.append(trainer.step(step, x0, None)[0])
    assert torch.equal(losses[0], losses[1]) and not torch.equal(losses[0], losses[2])


@pytest.mark.gpu
def test_a_cuda_training_step_makes_no_host_synchronisation():
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    device = torch.device("cuda")
    cfg = config(dropout=0.1)
    trainer = make_trainer(cfg, device)
    images = torch.randint(0, 256, (64, 1, 8, 8), dtype=torch.uint8)
    batches = InMemoryBatches(images, None, batch_size=8, seed=0, random_flip=True, device=device)
    trainer.step(0, *batches.batch(0))  # warm-up: lazy initialisation may synchronise once
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for step in range(1, 12):  # crosses an epoch boundary (8 steps per epoch)
            trainer.step(step, *batches.batch(step))
    finally:
        torch.cuda.set_sync_debug_mode("default")


@pytest.mark.slow
def test_seeded_dropout_compiles_without_recompiling_each_step():
    """A new generator every step must not make dynamo recompile (dropout 0.1, eager backend:
    dynamo's tracing and guards without inductor's compile time)."""
    import torch._dynamo

    cfg = from_dict({"train": {"compile": True}}, base=config(dropout=0.1))
    trainer = make_trainer(cfg, torch.device("cpu"), compile_backend="eager")
    x0 = torch.rand(4, 1, 8, 8) * 2 - 1
    trainer.step(0, x0, None)
    with torch._dynamo.config.patch(error_on_recompile=True):
        losses = [trainer.step(n, x0, None)[0] for n in range(1, 5)]
    assert all(torch.isfinite(loss) for loss in losses)
