"""The parts of a training step that have no closed-form test elsewhere: the learning-rate
schedule's values, the label-dropout rate, gradient clipping, and the batch order's epochs.
Each expected value is written out here from the definition, not taken from the code."""

from __future__ import annotations

import math

import pytest
import torch

from ddpm.config import TrainConfig, from_dict
from ddpm.data.batches import InMemoryBatches
from ddpm.train.step import lr_at, make_trainer

TINY = {
    "model": {"base_channels": 8, "channel_mult": [1, 2], "num_res_blocks": 1,
              "attention_resolutions": [4], "num_groups": 4, "dropout": 0.0},
    "data": {"image_size": 8, "channels": 1},
    "train": {"precision": "fp32", "warmup_steps": 0},
}  # fmt: skip


def config_with(**sections):
    merged = {k: dict(v) for k, v in TINY.items()}
    for name, values in sections.items():
        merged.setdefault(name, {}).update(values)
    return from_dict(merged)


def test_learning_rate_warms_up_linearly_then_follows_a_half_cosine_to_zero():
    train = TrainConfig(lr=1e-3, warmup_steps=4, num_steps=14, lr_schedule="cosine")
    assert [lr_at(n, train) for n in range(4)] == pytest.approx([2.5e-4, 5e-4, 7.5e-4, 1e-3])
    # after warm-up: 1e-3 * (1 + cos(pi * k / 10)) / 2 for k = 0..10 steps into the decay
    for k in range(11):
        expected = 1e-3 * (1 + math.cos(math.pi * k / 10)) / 2
        assert lr_at(4 + k, train) == pytest.approx(expected, abs=1e-12)
    assert lr_at(14, train) == pytest.approx(0.0, abs=1e-12)
    assert lr_at(1000, train) == pytest.approx(0.0, abs=1e-12)  # past the end: stays at 0
    constant = TrainConfig(lr=1e-3, warmup_steps=0, num_steps=14, lr_schedule="constant")
    assert {lr_at(n, constant) for n in (0, 7, 100)} == {1e-3}


def test_with_a_time_budget_the_cosine_follows_the_fraction_spent():
    train = TrainConfig(lr=1e-3, warmup_steps=10, num_steps=14, lr_schedule="cosine")
    assert lr_at(100, train, fraction=0.5) == pytest.approx(5e-4)
    assert lr_at(100, train, fraction=1.0) == pytest.approx(0.0, abs=1e-12)
    # still in warm-up: the warm-up factor multiplies the decay, so no jump where it ends
    assert lr_at(4, train, fraction=0.5) == pytest.approx(1e-3 * 0.5 * 0.5)


def record_labels(model: torch.nn.Module) -> list[torch.Tensor]:
    """The labels each forward call of `model` receives, in call order."""
    seen: list[torch.Tensor] = []

    def hook(module, args, kwargs):
        labels = kwargs.get("labels", args[2] if len(args) > 2 else None)
        seen.append(labels.clone())

    model.register_forward_pre_hook(hook, with_kwargs=True)
    return seen


@pytest.mark.slow
@pytest.mark.parametrize("rate", [0.0, 0.3, 1.0])
def test_labels_are_dropped_to_the_null_class_at_train_label_dropout(rate):
    config = config_with(model={"num_classes": 3}, train={"label_dropout": rate})
    trainer = make_trainer(config, torch.device("cpu"))
    seen = record_labels(trainer.model)
    labels = torch.arange(512) % 3
    x0 = torch.zeros(512, 1, 8, 8)
    for n in range(4):
        trainer.step(n, x0, labels, lr=0.0)
    null = trainer.model.null_label
    assert null == 3
    given = torch.cat(seen)
    dropped = given == null
    kept = ~dropped
    assert torch.equal(given[kept], labels.repeat(4)[kept])  # the others keep their class
    fraction = dropped.float().mean().item()
    spread = 4 * math.sqrt(rate * (1 - rate) / given.numel())  # 4 binomial standard deviations
    assert abs(fraction - rate) <= spread + 1e-9, (fraction, rate)


def gradient_norm(model: torch.nn.Module) -> float:
    return torch.linalg.vector_norm(
        torch.stack([p.grad.norm() for p in model.parameters() if p.grad is not None])
    ).item()


@pytest.mark.slow
def test_gradients_are_clipped_to_train_grad_clip_and_the_step_reports_the_norm_before():
    x0 = torch.rand(16, 1, 8, 8) * 2 - 1
    norms = {}
    for clip in (0.0, 1e-3):  # 0: no clipping
        config = config_with(train={"grad_clip": clip})
        torch.manual_seed(0)
        trainer = make_trainer(config, torch.device("cpu"))
        _, reported, finite = trainer.step(0, x0, None, lr=0.0)
        assert bool(finite)
        norms[clip] = (reported.item(), gradient_norm(trainer.model))
    unclipped_reported, unclipped_after = norms[0.0]
    clipped_reported, clipped_after = norms[1e-3]
    assert unclipped_after == pytest.approx(unclipped_reported, rel=1e-4)  # left alone
    assert (
        clipped_reported == pytest.approx(unclipped_reported, rel=1e-4) and clipped_reported > 1e-2
    )
    assert clipped_after == pytest.approx(1e-3, rel=1e-3)  # scaled down to the limit


def test_each_epoch_visits_every_full_batch_once_in_a_new_order_and_drops_the_rest():
    images = torch.arange(10, dtype=torch.uint8).view(10, 1, 1, 1).expand(10, 1, 2, 2).clone()
    batches = InMemoryBatches(images, None, batch_size=3, seed=7, random_flip=False,
                              device=torch.device("cpu"))  # fmt: skip
    assert batches.steps_per_epoch == 3  # 10 // 3: the 10th image waits for another epoch

    def ids(step: int) -> list[int]:
        x0, _ = batches.batch(step)
        return ((x0[:, 0, 0, 0] + 1) * 127.5).round().long().tolist()

    epochs = [[i for step in range(3 * e, 3 * e + 3) for i in ids(step)] for e in range(4)]
    for visited in epochs:
        assert len(visited) == 9 and len(set(visited)) == 9  # no image twice within an epoch
    assert len({tuple(v) for v in epochs}) == 4  # each epoch in its own order
    assert set().union(*map(set, epochs)) == set(range(10))  # the dropped image differs by epoch
    fresh = InMemoryBatches(images, None, batch_size=3, seed=7, random_flip=False,
                            device=torch.device("cpu"))  # fmt: skip
    assert [fresh.batch(s)[0].tolist() for s in (7, 2)] == [
        batches.batch(s)[0].tolist() for s in (7, 2)
    ]  # a pure function of (seed, step): what a resumed run relies on
