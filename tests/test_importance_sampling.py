"""train.t_sampling=importance (Nichol & Dhariwal 2021, Sec. 3.3): p_t proportional to
sqrt(E[L_t^2]) over the last 10 L_vlb values per t, uniform until every t has 10, weights
1 / (T p_t); expectations computed here with numpy or plain loops."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from tiny import TINY_MODEL, sets

from ddpm.builders import build_schedule
from ddpm.checkpoint import load_checkpoint
from ddpm.cli import main
from ddpm.config import from_dict
from ddpm.errors import DDPMError
from ddpm.learned_variance import hybrid_loss
from ddpm.rng import step_generator
from ddpm.train import make_trainer
from ddpm.train.importance import ImportanceSampler, record_losses

T, K = 7, 10


def filled_sampler(history: torch.Tensor) -> ImportanceSampler:
    sampler = ImportanceSampler(history.shape[0], torch.device("cpu"))
    sampler.history.copy_(history)
    sampler.count.fill_(history.shape[1])
    return sampler


def expected_p(history: torch.Tensor) -> np.ndarray:
    """sqrt(E[L^2]) normalised, with 0.001 of uniform probability mixed in (the authors' code)."""
    rms = np.sqrt((history.numpy().astype(np.float64) ** 2).mean(axis=1))
    return 0.999 * rms / rms.sum() + 0.001 / len(rms)


def test_probabilities_are_root_mean_squares_over_their_sum(generator):
    """...with a 0.001 uniform share: a t whose terms are all 0 keeps p = 0.001 / T."""
    history = (
        torch.rand(T, K, generator=generator, dtype=torch.float64) * torch.arange(1, T + 1)[:, None]
    )
    p, ready = filled_sampler(history).probabilities()
    assert bool(ready)
    np.testing.assert_allclose(p.numpy(), expected_p(history), rtol=1e-12)
    history[4] = 0
    p, _ = filled_sampler(history).probabilities()
    assert float(p[4]) == pytest.approx(0.001 / T, rel=1e-12)


def test_the_draw_is_uniform_until_every_t_has_ten_values_then_follows_p():
    history = torch.arange(1.0, T * K + 1, dtype=torch.float64).view(T, K) ** 2  # far from flat
    sampler = filled_sampler(history)
    sampler.count[3] = K - 1  # one t short of its tenth value
    t, w = sampler.draw(step_generator(0, 5, 2), 4000)
    u = torch.rand(4000, dtype=torch.float64, generator=step_generator(0, 5, 2)).numpy()
    np.testing.assert_array_equal(t.numpy(), np.floor(u * T).astype(np.int64))
    assert torch.equal(w, torch.ones(4000, dtype=torch.float64))

    sampler.count[3] = K
    t, w = sampler.draw(step_generator(0, 5, 2), 4000)
    p = expected_p(history)
    cdf = np.cumsum(p)
    expected_t = np.searchsorted(cdf / cdf[-1], u, side="right")
    np.testing.assert_array_equal(t.numpy(), expected_t)
    np.testing.assert_allclose(w.numpy(), 1 / (T * p[expected_t]), rtol=1e-12)


def test_the_draw_frequencies_match_p():
    history = torch.linspace(0.1, 5.0, T * K, dtype=torch.float64).view(T, K)
    n = 200_000
    t, _ = filled_sampler(history).draw(step_generator(1, 0, 2), n)
    p = expected_p(history)
    freq = np.bincount(t.numpy(), minlength=T) / n
    # each frequency is a binomial mean: 5 standard deviations is a false alarm in 1 of ~10^6
    assert np.all(np.abs(freq - p) < 5 * np.sqrt(p * (1 - p) / n))


def test_the_weighted_loss_is_an_unbiased_estimate_of_the_uniform_mean(generator):
    """A history unlike the per-t loss table (so w L is not constant): sum_t p_t w_t L_t equals
    mean_t L_t exactly, and a Monte Carlo mean of w L agrees within 5 of its standard errors."""
    history = torch.rand(T, K, generator=generator, dtype=torch.float64) + 0.05
    table = torch.rand(T, generator=generator, dtype=torch.float64) * 10
    p = expected_p(history)
    sampler = filled_sampler(history)
    all_t = torch.arange(T)
    p_model, _ = sampler.probabilities()
    weights_all = 1 / (T * p_model[all_t])
    assert float((p_model * weights_all * table).sum()) == pytest.approx(float(table.mean()))
    n = 200_000
    t, w = sampler.draw(step_generator(2, 0, 2), n)
    estimate = (w * table[t]).mean().item()
    terms = table.numpy() / (T * p)
    sd = np.sqrt((p * terms**2).sum() - table.mean().item() ** 2)
    assert abs(estimate - table.mean().item()) < 5 * sd / np.sqrt(n)


def pushed_one_at_a_time(history, count, t, values):
    history, count = history.clone(), count.clone()
    for ti, v in zip(t.tolist(), values.tolist()):
        history[ti, count[ti] % history.shape[1]] = v
        count[ti] += 1
    return history, count


@pytest.mark.parametrize("length", [3, 10])
def test_repeated_t_in_a_batch_are_all_recorded_in_row_order(generator, length):
    history = torch.rand(5, length, generator=generator, dtype=torch.float64)
    count = torch.tensor([0, 2, 7, 11, 1])
    # t = 2 repeated 14 times: more than K, so only its last K values remain
    t = torch.tensor([2, 0, 2, 2, 4] + [2] * 11 + [0, 3, 1, 3])
    values = torch.arange(1.0, len(t) + 1)
    new_history, new_count = record_losses(history, count, t, values)
    want_history, want_count = pushed_one_at_a_time(history, count, t, values)
    assert torch.equal(new_count, want_count)
    assert torch.equal(new_history, want_history)


def test_a_step_that_is_not_finite_records_nothing():
    sampler = ImportanceSampler(4, torch.device("cpu"))
    sampler.update(torch.tensor([1, 2]), torch.tensor([3.0, 4.0]), torch.tensor(False))
    assert sampler.count.sum() == 0 and sampler.history.abs().sum() == 0
    sampler.update(torch.tensor([1, 1]), torch.tensor([3.0, 4.0]), torch.tensor(True))
    assert sampler.count.tolist() == [0, 2, 0, 0] and sampler.history[1, :2].tolist() == [3, 4]


def test_two_processes_draw_the_global_batch_and_keep_the_same_history(generator):
    """One-process simulation of DDP: each rank's rows are its slice of the global batch's draw,
    and recording the gathered global rows leaves every rank with the same history."""
    history = torch.rand(T, K, generator=generator, dtype=torch.float64) + 0.1
    single = filled_sampler(history)
    ranks = [filled_sampler(history) for _ in range(2)]
    t, w = single.draw(step_generator(0, 9, 2), 16)
    parts = [r.draw(step_generator(0, 9, 2), 8, rank=i, world_size=2) for i, r in enumerate(ranks)]
    assert torch.equal(torch.cat([p[0] for p in parts]), t)
    assert torch.equal(torch.cat([p[1] for p in parts]), w)
    vlb = torch.rand(16, generator=generator)
    for sampler in (single, *ranks):
        sampler.update(t, vlb, torch.tensor(True))
    for r in ranks:
        assert torch.equal(r.history, single.history) and torch.equal(r.count, single.count)


def test_an_old_checkpoint_without_a_history_starts_the_warm_up(caplog):
    sampler = ImportanceSampler(4, torch.device("cpu"))
    sampler.load_state({})
    assert sampler.count.sum() == 0 and "warming up again" in caplog.text


def test_importance_sampling_needs_the_hybrid_loss():
    with pytest.raises(DDPMError, match="train.t_sampling=importance needs diffusion.loss=hybrid"):
        from_dict({"train": {"t_sampling": "importance"}})
    config = from_dict(
        {
            "train": {"t_sampling": "importance"},
            "diffusion": {"variance": "learned_range", "loss": "hybrid"},
        }
    )
    assert config.train.t_sampling == "importance"


@pytest.mark.slow
def test_the_training_step_weights_l_simple_and_l_vlb_and_records_raw_l_vlb(generator):
    """Warm-up step: weights 1, and the history receives the unweighted L_vlb at the drawn t.
    With a full history: loss = mean(w (L_simple + vlb_weight L_vlb)), w = 1 / (T p_t)."""
    num_t, batch, seed = 10, 8, 3
    config = from_dict(
        {
            "model": {"base_channels": 8, "channel_mult": [1, 2], "num_res_blocks": 1,
                      "attention_resolutions": [4], "num_groups": 4, "dropout": 0.0},
            "diffusion": {"variance": "learned_range", "loss": "hybrid", "vlb_weight": 0.5,
                          "num_timesteps": num_t, "schedule": "cosine"},
            "train": {"precision": "fp32", "batch_size": batch, "seed": seed,
                      "t_sampling": "importance"},
            "sample": {"steps": num_t},  # at most diffusion.num_timesteps
        }
    )  # fmt: skip
    alpha_bar = build_schedule(config).alpha_bar
    trainer = make_trainer(config, torch.device("cpu"))
    x0 = torch.rand(batch, 1, 8, 8, generator=generator) * 2 - 1

    def expected(n: int, probabilities: np.ndarray | None):
        before = copy.deepcopy(trainer.model).train()
        draws = step_generator(seed, n, 2)
        u = torch.rand(batch, dtype=torch.float64, generator=draws).numpy()
        if probabilities is None:
            t, w = np.floor(u * num_t).astype(np.int64), np.ones(batch)
        else:
            cdf = np.cumsum(probabilities)
            t = np.searchsorted(cdf / cdf[-1], u, side="right")
            w = 1 / (num_t * probabilities[t])
        eps = torch.randn(x0.shape, generator=draws)
        with torch.no_grad():
            simple, vlb = hybrid_loss(before, x0, torch.from_numpy(t), eps, alpha_bar)
        return t, (torch.from_numpy(w) * (simple + 0.5 * vlb)).mean(), vlb

    t, want, vlb = expected(0, None)
    loss, _, finite = trainer.step(0, x0, None)
    assert bool(finite) and float(loss) == pytest.approx(float(want), rel=1e-5)
    state = trainer.importance
    assert state.count.tolist() == np.bincount(t, minlength=num_t).tolist()
    last = {ti: v for ti, v in zip(t.tolist(), vlb.tolist())}  # the last value of each t
    for ti, v in last.items():
        count = int(state.count[ti])
        assert float(state.history[ti, count - 1]) == pytest.approx(v, rel=1e-5)

    history = torch.linspace(0.2, 3.0, num_t * K, dtype=torch.float64).view(num_t, K) ** 2
    state.history.copy_(history)
    state.count.fill_(K)
    t, want, vlb = expected(1, expected_p(history))
    loss, _, _ = trainer.step(1, x0, None)
    assert float(loss) == pytest.approx(float(want), rel=1e-5)
    last = {ti: v for ti, v in zip(t.tolist(), vlb.tolist())}  # unweighted, though w != 1
    for ti, v in last.items():
        slot = (int(state.count[ti]) - 1) % K
        assert float(state.history[ti, slot]) == pytest.approx(v, rel=1e-5)


TINY = [
    *TINY_MODEL,
    "model.dropout=0.1",
    "diffusion.variance=learned_range",
    "diffusion.loss=hybrid",
    "diffusion.num_timesteps=10",  # so the 10-value warm-up ends within a few steps
    "diffusion.schedule=cosine",  # the linear schedule's betas, scaled by 1000 / T, exceed 1
    "train.t_sampling=importance",
    "train.precision=fp32",
    "train.batch_size=32",
    "train.log_every=2",
    "train.checkpoint_every=6",
    "train.sample_every=100000",
    "train.num_sample_images=2",
    "train.val_images=16",
    "sample.steps=2",
]


def train(out, *extra: str, resume: bool = False) -> int:
    head = ["--resume", str(out)] if resume else ["--dataset", "digits", "--out", str(out)]
    return main(["train", *head, "--quiet", *sets(TINY), *extra])


@pytest.mark.slow
def test_a_tiny_run_trains_and_resumes_exactly_with_its_history(tmp_path):
    """`ddpm train` on digits with learned_range + hybrid + importance: stopped at step 6 (after
    the warm-up, so the draws depend on the history) and resumed to 12, it ends with the weights
    and history of an uninterrupted run; failed when the history was not checkpointed."""
    reference, resumed = tmp_path / "reference", tmp_path / "resumed"
    assert train(reference, *sets(["train.num_steps=12"])) == 0
    assert train(resumed, *sets(["train.num_steps=6"])) == 0
    at_6 = load_checkpoint(resumed / "checkpoints" / "step_00000006.safetensors").tensors
    assert int(at_6["importance.count"].min()) >= K  # the importance phase has begun
    assert int(at_6["importance.count"].sum()) == 6 * 32
    torch.manual_seed(12345)  # the caller's global RNG must not matter
    assert train(resumed, *sets(["train.num_steps=12"]), resume=True) == 0
    a = load_checkpoint(reference / "checkpoints" / "step_00000012.safetensors").tensors
    b = load_checkpoint(resumed / "checkpoints" / "step_00000012.safetensors").tensors
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert int(a["importance.count"].sum()) == 12 * 32
    assert bool(torch.isfinite(a["importance.history"]).all())


@pytest.mark.slow
def test_two_gloo_processes_hold_the_one_process_history(tmp_path):
    """torchrun, 2 CPU processes of 16 rows against one process of 32: every process records the
    gathered global batch, so the saved history (and the draws that depend on it after the
    warm-up) match the one-process run; failed when each process recorded only its own rows."""
    from test_distributed import torchrun

    single, ddp = tmp_path / "single", tmp_path / "ddp"
    assert train(single, *sets(["train.num_steps=6"])) == 0
    torchrun(
        "train", "--dataset", "digits", "--out", str(ddp), "--quiet",
        *sets([*TINY, "train.batch_size=16", "train.num_steps=6"]),
    )  # fmt: skip
    a = load_checkpoint(single / "checkpoints" / "step_00000006.safetensors").tensors
    b = load_checkpoint(ddp / "checkpoints" / "step_00000006.safetensors").tensors
    assert torch.equal(a["importance.count"], b["importance.count"])
    assert torch.allclose(a["importance.history"], b["importance.history"], rtol=1e-4, atol=1e-6)
    for key in (k for k in a if k.startswith("model.")):
        assert torch.allclose(a[key], b[key], rtol=1e-4, atol=1e-5), key
