"""benchmarks/alternatives.py and time_to_quality.py's helpers: the alternatives' networks are
sampled through ddpm's denoiser with THEIR alpha_bar and prediction type, their snapshots fall at
training minutes that leave saving out, their data pipeline, and --curve's row per budget."""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path

import pytest
import torch

from ddpm.denoiser import make_denoiser

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


alternatives = _load("alternatives")
time_to_quality = _load("time_to_quality")


def _x_t(alpha_bar: torch.Tensor, t: torch.Tensor, x0: torch.Tensor, eps: torch.Tensor):
    ab = alpha_bar[t].view(-1, 1, 1, 1)
    return ab.sqrt() * x0 + (1 - ab).sqrt() * eps, ab


def _check_denoiser_recovers_x0(recipe, alpha_bar: torch.Tensor, output) -> None:
    """A network that returns the exact target gives x0 back through ddpm's denoiser."""
    g = torch.Generator().manual_seed(0)
    x0 = torch.rand(6, 1, 32, 32, generator=g) * 2 - 1
    eps = torch.randn(6, 1, 32, 32, generator=g)
    t = torch.tensor([0, 1, 10, 500, 900, 990])
    x_t, ab = _x_t(alpha_bar, t, x0, eps)

    def net(x, t_in, labels=None):
        assert torch.equal(t_in, t)
        return output(x0, eps, ab)

    denoiser = make_denoiser(net, recipe.schedule, prediction=recipe.prediction, clip=False,
                             precision="fp32")  # fmt: skip
    torch.testing.assert_close(denoiser(x_t.float(), t), x0, atol=2e-3, rtol=0)


@pytest.mark.slow
def test_diffusers_network_is_sampled_as_eps_with_its_linear_alpha_bar():
    pytest.importorskip("diffusers")
    recipe = alternatives.diffusers_recipe()
    # Ho et al. 2020: betas linear from 1e-4 to 0.02 over T = 1000 (DDPMScheduler "linear")
    betas = torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64)
    alpha_bar = torch.cumprod(1 - betas, 0)
    torch.testing.assert_close(recipe.schedule.alpha_bar, alpha_bar, atol=1e-6, rtol=1e-5)
    _check_denoiser_recovers_x0(recipe, alpha_bar, lambda x0, eps, ab: eps)


def test_lucidrains_network_is_sampled_as_v_with_its_sigmoid_alpha_bar():
    pytest.importorskip("denoising_diffusion_pytorch")
    recipe = alternatives.lucidrains_recipe()
    # sigmoid schedule (Jabri et al. 2022; Chen 2023, Fig. 8): start -3, end 3, tau 1, T = 1000,
    # betas clipped at 0.999
    s = torch.linspace(0, 1, 1001, dtype=torch.float64)
    lo, hi = 1 / (1 + math.exp(3)), 1 / (1 + math.exp(-3))
    f = (hi - torch.sigmoid(s * 6 - 3)) / (hi - lo)
    betas = (1 - f[1:] / f[:-1]).clamp(0, 0.999)
    alpha_bar = torch.cumprod(1 - betas, 0)
    torch.testing.assert_close(recipe.schedule.alpha_bar, alpha_bar, atol=1e-6, rtol=1e-4)
    # v = sqrt(ab) eps - sqrt(1 - ab) x0 (Salimans & Ho 2022, Appendix D)
    _check_denoiser_recovers_x0(
        recipe, alpha_bar, lambda x0, eps, ab: ab.sqrt() * eps - (1 - ab).sqrt() * x0
    )


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_snapshots_fall_at_training_minutes_and_saving_is_not_training(monkeypatch, tmp_path):
    clock = _Clock()
    monkeypatch.setattr(alternatives.time, "perf_counter", clock)
    seen = []

    def train_step(batch, generator):  # one step: 1 s of training
        seen.append(batch.shape)
        clock.now += 1.0

    def ema_state():  # saving: 100 s that must not count
        clock.now += 100.0
        return {"w": torch.zeros(1)}

    recipe = alternatives.Recipe(train_step, ema_state, None, None, "eps", "own", 1)
    images = torch.zeros(40, 1, 32, 32, dtype=torch.uint8)
    saved = alternatives.train(recipe, images, [0.1, 0.05], tmp_path, seed=0)
    assert [(m, steps, seconds) for m, steps, seconds, _ in saved] == [
        (0.05, 3, 3.0),
        (0.1, 6, 6.0),
    ]
    assert all(shape == (16, 1, 32, 32) for shape in seen[:2])  # batch 16 (last of an epoch: 8)
    assert torch.load(saved[1][3], weights_only=True)["step"] == 6


def test_batches_cover_each_epoch_once_and_flip_about_half():
    images = torch.arange(64 * 4, dtype=torch.uint8).view(64, 1, 2, 2)  # each image unique
    stream = alternatives.batches(images, 16, torch.Generator().manual_seed(0))
    epoch = torch.cat([next(stream) for _ in range(4)])
    keys = {tuple(sorted(img.flatten().tolist())) for img in epoch}
    assert len(keys) == 64  # every image once (as a set of pixel values, flip or not)
    originals = {tuple(img.flatten().tolist()) for img in images}
    num_flipped = sum(tuple(img.flatten().tolist()) not in originals for img in epoch)
    assert 16 <= num_flipped <= 48


def test_crop_removes_the_padding():
    x = torch.full((2, 1, 32, 32), -1.0)
    x[..., 2:30, 2:30] = 1.0
    out = alternatives.crop(x)
    assert out.shape == (2, 1, 28, 28) and out.dtype == torch.uint8
    assert (out == 255).all()


def test_curve_rows_are_the_first_evaluation_at_each_budget():
    rows = [{"train_seconds": s} for s in ("17.4", "35.9", "54.2", "71.8")]
    chosen = time_to_quality.at_budgets(rows, [0.3, 0.6, 2.0])
    assert [r and r["train_seconds"] for r in chosen] == ["17.4", "35.9", None]
