"""Non-leaky augmentation (Karras et al. 2022, EDM config F; ddpm.augment, data.augment_p,
model.augment_dim): every transform against torch.flip / torch.rot90 and a reflected shift written
out pixel by pixel here, parameters zero exactly for un-augmented images, binomial frequencies,
the network's zero-vector path, old state dicts, the step's seeded draws, resume and a tiny run."""

from __future__ import annotations

import copy
import hashlib
import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from tiny import TINY_MODEL, sets

from ddpm.augment import AUGMENT_DIM, AugmentDraws, augment, draw_augment
from ddpm.builders import build_model
from ddpm.cli import main
from ddpm.config import RESUMABLE_KEYS, from_dict, load_preset
from ddpm.diffusion import gather, training_loss
from ddpm.errors import DDPMError
from ddpm.models import UNet
from ddpm.rng import seeded_generator
from ddpm.schedules import make_schedule
from ddpm.train import make_trainer

SMALL = {"base_channels": 8, "channel_mult": [1, 2], "num_res_blocks": 1,
         "attention_resolutions": [4], "num_groups": 4, "dropout": 0.0}  # fmt: skip


def augmented_config(p: float = 0.5, **train):
    return from_dict(
        {
            "data": {"augment_p": p},
            "model": {**SMALL, "augment_dim": 6},
            "train": {"precision": "fp32", "seed": 7, "t_sampling": "uniform", **train},
        },
        base=load_preset("digits"),
    )


def perturb(net: torch.nn.Module) -> torch.nn.Module:
    """Move every weight off its initialisation: the zero-initialised output layer would make the
    output (and the loss) blind to the conditioning."""
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=generator))
    return net


def by_hand(image: torch.Tensor, xflip: bool, yflip: bool, k: int, tx: int, ty: int):
    """One image [C, H, W]: flips, rot90 (torch's), then out[i, j] = in[i - ty, j - tx] with the
    index reflected at the borders (-1 -> 1, H -> H - 2), written out pixel by pixel."""
    if xflip:
        image = torch.flip(image, dims=[-1])
    if yflip:
        image = torch.flip(image, dims=[-2])
    image = torch.rot90(image, k, dims=[-2, -1])
    _, height, width = image.shape

    def reflect(i: int, n: int) -> int:
        return -i if i < 0 else 2 * (n - 1) - i if i >= n else i

    out = torch.empty_like(image)
    for i in range(height):
        for j in range(width):
            out[:, i, j] = image[:, reflect(i - ty, height), reflect(j - tx, width)]
    return out


def expected_params(xflip: bool, yflip: bool, k: int, tx: int, ty: int, m: int) -> list[float]:
    theta = k * math.pi / 2
    return [float(xflip), float(yflip), round(math.cos(theta)) - 1.0, float(round(math.sin(theta))),
            tx / m, ty / m]  # fmt: skip


def test_p_0_leaves_the_images_and_gives_zero_vectors():
    x = torch.randn(32, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    draws = draw_augment(torch.Generator().manual_seed(1), 32, size=16)
    out, params = augment(x, draws, p=0.0)
    assert torch.equal(out, x) and params.shape == (32, AUGMENT_DIM) and not params.any()


@pytest.mark.parametrize("size", [8, 16])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_p_1_applies_every_transform_as_torch_flip_rot90_and_a_reflected_shift(size, seed):
    x = torch.randn(6, 2, size, size, generator=torch.Generator().manual_seed(seed))
    draws = draw_augment(torch.Generator().manual_seed(100 + seed), 6, size=size)
    out, params = augment(x, draws, p=1.0)
    m = size // 8
    for b in range(6):
        k = int(draws.quarter_turns[b])
        tx, ty = (int(v) for v in draws.shift[b])
        assert 1 <= k <= 3 and (tx, ty) != (0, 0) and max(abs(tx), abs(ty)) <= m
        assert torch.equal(out[b], by_hand(x[b], True, True, k, tx, ty))
        assert params[b].tolist() == expected_params(True, True, k, tx, ty, m)


def test_each_transform_is_applied_exactly_where_its_gate_is_below_p():
    size, m, p = 16, 2, 0.5
    x = torch.randn(16, 1, size, size, generator=torch.Generator().manual_seed(3))
    rows = torch.tensor([[(b >> j) & 1 for j in range(4)] for b in range(16)])  # every subset
    gates = torch.where(rows.bool(), torch.tensor(0.2), torch.tensor(0.7))
    turns = torch.tensor([1, 2, 3, 1] * 4)
    shift = torch.tensor([[2, -1], [0, 1], [-2, -2], [1, 0]] * 4)
    out, params = augment(x, AugmentDraws(gates, turns, shift), p=p)
    for b in range(16):
        xf, yf, rot, move = rows[b].bool().tolist()
        k = int(turns[b]) if rot else 0
        tx, ty = (int(v) for v in shift[b]) if move else (0, 0)
        assert torch.equal(out[b], by_hand(x[b], xf, yf, k, tx, ty)), b
        assert params[b].tolist() == expected_params(xf, yf, k, tx, ty, m), b
        assert bool(params[b].any()) == bool(rows[b].any()), b  # zero exactly when untouched


def test_the_fraction_augmented_at_p_0_3_is_binomial():
    n, p = 20_000, 0.3
    draws = draw_augment(torch.Generator().manual_seed(5), n, size=8)
    out, params = augment(torch.zeros(n, 1, 8, 8), draws, p=p)
    applied = [params[:, 0] != 0, params[:, 1] != 0, params[:, 2] != 0, params[:, 4:].any(1)]
    tolerance = 4 * math.sqrt(p * (1 - p) / n)
    for column in applied:
        assert abs(column.float().mean().item() - p) < tolerance
    any_p = 1 - (1 - p) ** 4
    assert abs(params.any(1).float().mean().item() - any_p) < 4 * math.sqrt(any_p * (1 - any_p) / n)
    # the rotation and the shift, once applied, are uniform over their non-identity values
    turns = torch.bincount(draws.quarter_turns, minlength=4)[1:].float() / n
    assert (turns - 1 / 3).abs().max() < 4 * math.sqrt(2 / 9 / n)
    offsets = torch.bincount((draws.shift[:, 1] + 1) * 3 + draws.shift[:, 0] + 1, minlength=9)
    assert offsets[4] == 0  # never the identity (0, 0)
    share = torch.cat([offsets[:4], offsets[5:]]).float() / n
    assert (share - 1 / 8).abs().max() < 4 * math.sqrt(7 / 64 / n)


def test_each_process_draws_its_rows_of_the_global_batch():
    whole = draw_augment(seeded_generator(7, 3, 4), 8, size=16)
    for rank in (0, 1):
        mine = draw_augment(seeded_generator(7, 3, 4), 4, size=16, rank=rank, world_size=2)
        rows = slice(rank * 4, (rank + 1) * 4)
        assert torch.equal(mine.gates, whole.gates[rows])
        assert torch.equal(mine.quarter_turns, whole.quarter_turns[rows])
        assert torch.equal(mine.shift, whole.shift[rows])


def test_non_square_images_are_refused():
    draws = draw_augment(torch.Generator().manual_seed(0), 2, size=8)
    with pytest.raises(DDPMError, match="square"):
        augment(torch.zeros(2, 1, 8, 16), draws, p=0.5)


@pytest.mark.slow
def test_a_zero_vector_gives_the_network_without_the_augment_path():
    cfg = augmented_config()
    net = perturb(build_model(cfg))
    generator = torch.Generator().manual_seed(2)
    plain = UNet(cfg.model.__class__(**{**cfg.model.__dict__, "augment_dim": 0}), image_size=8,
                 in_channels=1)  # fmt: skip
    weights = {k: v for k, v in net.state_dict().items() if k != "augment_emb.weight"}
    plain.load_state_dict(weights)  # strict: the same keys but one
    x = torch.randn(4, 1, 8, 8, generator=generator)
    t = torch.tensor([0, 10, 500, 999])
    expected = plain(x, t)
    assert torch.equal(net(x, t, augment=torch.zeros(4, 6)), expected)
    assert torch.equal(net(x, t), expected)  # what every sampler calls
    assert not torch.allclose(net(x, t, augment=torch.eye(6)[:4]), expected)


def test_old_configs_keep_their_state_dict_keys():
    # golden digests of the key lists before model.augment_dim existed
    def digest(cfg):
        keys = list(build_model(cfg).state_dict())
        return len(keys), hashlib.sha256("\n".join(keys).encode()).hexdigest()[:16]

    assert digest(load_preset("digits")) == (128, "9b6a3439b26f12bf")
    assert digest(load_preset("cifar10-ho2020")) == (304, "53b9b3b63413c0d0")
    classes = from_dict({"model": {"num_classes": 10}}, base=load_preset("digits"))
    assert digest(classes) == (129, "1a289d30e994be86")
    with_augment = set(build_model(augmented_config()).state_dict())
    without = set(build_model(from_dict({"model": SMALL}, base=load_preset("digits"))).state_dict())
    assert with_augment - without == {"augment_emb.weight"} and without <= with_augment


@pytest.mark.parametrize(
    "values, message",
    [
        ({"data": {"augment_p": 1.5}, "model": {"augment_dim": 6}}, "data.augment_p"),
        ({"data": {"augment_p": -0.1}}, "data.augment_p"),
        ({"data": {"augment_p": 0.12}}, "model.augment_dim=6"),
        ({"model": {"augment_dim": 4}}, "model.augment_dim"),
    ],
)
def test_bad_augment_configs_are_one_line_errors_naming_the_keys(values, message):
    with pytest.raises(DDPMError, match=message) as error:
        from_dict(values)
    assert "\n" not in str(error.value)


def test_the_keys_are_not_resumable_and_match_the_vector_size():
    assert AUGMENT_DIM == 6 and not {"data.augment_p", "model.augment_dim"} & RESUMABLE_KEYS


def test_the_step_augments_x0_from_the_seed_and_step_generator_before_noising():
    cfg = augmented_config(p=0.5)
    trainer = make_trainer(cfg, torch.device("cpu"))
    perturb(trainer.model)
    generator = torch.Generator().manual_seed(2)
    before = copy.deepcopy(trainer.model)
    x0 = torch.rand(6, 1, 8, 8, generator=generator) * 2 - 1
    loss, _, _ = trainer.step(5, x0, None)
    # written out: gates [B, 4], quarter turns in {1, 2, 3}, one of the 8 non-zero shifts
    g = seeded_generator(7, 5, 4)
    gates = torch.rand((6, 4), generator=g) < 0.5
    turns = torch.randint(1, 4, (6,), generator=g)
    index = torch.randint(8, (6,), generator=g)
    index = index + (index >= 4).long()  # skip the centre of the 3 x 3 grid of offsets
    rows = []
    for b in range(6):
        xf, yf, rot, move = gates[b].tolist()
        i = int(index[b])
        rows.append(
            (xf, yf, int(turns[b]) if rot else 0, *((i % 3 - 1, i // 3 - 1) if move else (0, 0)))
        )
    expected_x0 = torch.stack([by_hand(x0[b], *rows[b]) for b in range(6)])
    params = torch.tensor([expected_params(*row, m=1) for row in rows])
    g = seeded_generator(7, 5, 2)
    t = torch.randint(cfg.diffusion.num_timesteps, (6,), generator=g)
    eps = torch.randn(x0.shape, generator=g)
    d = cfg.diffusion
    alpha_bar = make_schedule(
        d.schedule, d.num_timesteps, beta_start=d.beta_start, beta_end=d.beta_end
    ).alpha_bar.float()

    def net(x, t, labels):
        return before(x, t, labels, augment=params)

    expected = training_loss(net, expected_x0, t, eps, gather(alpha_bar, t, 4)).mean()
    assert torch.equal(loss, expected.detach())
    assert params.any(1).sum() >= 2  # the draws of this step do augment some rows


@pytest.mark.slow
def test_the_compiled_step_takes_the_vector_without_recompiling():
    import torch._dynamo

    x0 = torch.rand(4, 1, 8, 8, generator=torch.Generator().manual_seed(0)) * 2 - 1
    eager = make_trainer(augmented_config(), torch.device("cpu"))
    compiled = make_trainer(augmented_config(compile=True), torch.device("cpu"),
                            compile_backend="eager")  # fmt: skip
    perturb(eager.model)
    compiled.model.load_state_dict(eager.model.state_dict())
    first = [eager.step(0, x0, None)[0], compiled.step(0, x0, None)[0]]
    with torch._dynamo.config.patch(error_on_recompile=True):
        losses = [(eager.step(n, x0, None)[0], compiled.step(n, x0, None)[0]) for n in (1, 2)]
    for a, b in [first, *losses]:
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-6)
    assert eager.model.augment_emb.weight.grad.abs().sum() > 0  # the vector reached the net


TINY = [*TINY_MODEL, "model.dropout=0.1", "model.augment_dim=6", "data.augment_p=0.5",
        "train.precision=fp32", "train.batch_size=8", "train.log_every=2",
        "train.checkpoint_every=4", "train.sample_every=100000", "train.num_sample_images=2",
        "train.val_images=16", "sample.steps=2"]  # fmt: skip


def train(out: Path, *extra: str, resume: bool = False) -> int:
    head = ["--resume", str(out)] if resume else ["--dataset", "digits", "--out", str(out)]
    return main(["train", *head, "--quiet", *sets(TINY), *extra])


@pytest.mark.slow
def test_resume_is_exact_with_augmentation_and_the_run_samples(tmp_path):
    """Stop at 4, resume to 8: the same weights as an uninterrupted run with augment_p 0.5;
    then the run samples un-augmented digits (no vector) through the Python API."""
    import ddpm

    reference, resumed = tmp_path / "reference", tmp_path / "resumed"
    assert train(reference, *sets(["train.num_steps=8"])) == 0
    assert train(resumed, *sets(["train.num_steps=4"])) == 0
    torch.manual_seed(12345)  # the caller's global RNG must not matter
    assert train(resumed, *sets(["train.num_steps=8"]), resume=True) == 0
    a = load_file(reference / "checkpoints" / "step_00000008.safetensors")
    b = load_file(resumed / "checkpoints" / "step_00000008.safetensors")
    keys = [k for k in a if k.startswith(("model.", "ema."))]
    assert "model.augment_emb.weight" in keys and all(torch.equal(a[k], b[k]) for k in keys)
    run = ddpm.load_run(resumed)
    assert run.config.data.augment_p == 0.5 and run.net.augment_emb is not None
    images = ddpm.generate(run, ddpm.sample_config(run.config, steps=3), n=3, progress=False)
    assert images.shape == (3, 1, 8, 8) and images.isfinite().all() and images.abs().max() <= 1


def test_the_augment_layer_trains_under_ddp_without_augmentation(tmp_path):
    """model.augment_dim with data.augment_p=0: the step passes zero vectors, so the layer takes
    part in every step and DDP finds no parameter without a gradient (it raised at step 1)."""
    import torch.distributed as dist

    dist.init_process_group(
        "gloo", init_method=f"file://{tmp_path / 'group'}", rank=0, world_size=1
    )
    try:
        trainer = make_trainer(augmented_config(p=0.0), torch.device("cpu"), world_size=2)
        x0 = torch.rand(4, 1, 8, 8) * 2 - 1
        results = [trainer.step(n, x0, None) for n in range(3)]
        assert all(bool(finite) for _, _, finite in results)
    finally:
        dist.destroy_process_group()
