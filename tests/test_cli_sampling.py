"""`ddpm sample` with spacing, class and guidance; `ddpm interpolate`; `ddpm sweep`; on tiny runs."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from tiny import train_tiny

from ddpm.cli import main
from ddpm.generate import generate, sample_config
from ddpm.initial_noise import initial_noise
from ddpm.interpolate import slerp
from ddpm.loaded_run import load_run


@pytest.fixture(scope="module")
def conditional(tmp_path_factory) -> Path:
    return train_tiny(tmp_path_factory.mktemp("runs") / "cond", "model.num_classes=10")


@pytest.fixture
def unconditional(tiny_run) -> Path:
    return tiny_run


def sample(run: Path, tmp_path: Path, *extra: str) -> int:
    out = ["--out", str(tmp_path / "grid.png"), "--npz", str(tmp_path / "s.npz"), "--quiet"]
    return main(["sample", "--run", str(run), "--n", "4", "--steps", "3", *out, *extra])


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("ddpm: error:"), err
    return err


@pytest.mark.parametrize(
    "sampler,spacing,summary",
    [("ddim", "trailing", "ddim, 3 steps (trailing spacing), 3 NFE"),
     ("dpmpp-2m", None, "dpmpp-2m, 3 steps (uniform spacing), 3 NFE"),
     ("dpmpp-2m-sde", "quadratic", "dpmpp-2m-sde, 3 steps (quadratic spacing), 3 NFE"),
     ("heun", None, "heun, 3 steps (karras spacing), 5 NFE")],
)  # fmt: skip
def test_sample_prints_sampler_and_nfe(unconditional, tmp_path, capsys, sampler, spacing, summary):
    extra = ["--sampler", sampler] + (["--spacing", spacing] if spacing else [])
    assert sample(unconditional, tmp_path, *extra) == 0
    assert f"sampler: {summary}" in capsys.readouterr().out
    assert np.load(tmp_path / "s.npz")["arr_0"].shape == (4, 8, 8, 1)


def test_class_and_guidance_on_a_class_conditional_run(conditional, tmp_path, capsys):
    runs = {}
    for name, extra in {
        "class3": ["--class", "3"],
        "class3_again": ["--class", "3"],
        "class5": ["--class", "5"],
        "class3_w3": ["--class", "3", "--guidance", "3.0"],
        "unconditional": [],
    }.items():
        assert sample(conditional, tmp_path, "--sampler", "dpmpp-2m", *extra) == 0
        runs[name] = np.load(tmp_path / "s.npz")["arr_0"].astype(int)
    assert "conditional + null pair" in capsys.readouterr().out
    assert np.array_equal(runs["class3"], runs["class3_again"])
    for other in ("class5", "class3_w3", "unconditional"):
        assert np.abs(runs[other] - runs["class3"]).max() > 0, other


def test_guidance_is_the_formula_of_ho_and_salimans(conditional):
    """One guided evaluation equals null + w (cond - null) from two separate network calls."""
    run = load_run(conditional)
    from ddpm.denoiser import make_denoiser

    x = torch.randn(3, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    t, labels = torch.tensor([900, 500, 10]), torch.tensor([1, 2, 3])
    # fp32: the formula is checked exactly; bf16 (the "auto" default here) is tested elsewhere
    guided = make_denoiser(run.net, run.schedule, prediction="eps", labels=labels, null_label=10,
                           guidance=2.5, clip=False, precision="fp32")(x, t)  # fmt: skip
    ab = run.schedule.alpha_bar[t].float().reshape(-1, 1, 1, 1)
    cond, null = run.net(x, t, labels), run.net(x, t, torch.full_like(labels, 10))
    eps = null + 2.5 * (cond - null)
    assert torch.allclose(guided, (x - (1 - ab).sqrt() * eps) / ab.sqrt(), atol=1e-4)


@pytest.mark.parametrize(
    "extra,message",
    [(["--class", "10"], "--class must be in 0..9"),
     (["--class", "-1"], "--class must be in 0..9"),
     (["--guidance", "2"], "--guidance needs --class"),
     (["--class", "1", "--guidance", "-1"], "--guidance must be >= 0"),
     (["--sampler", "heun", "--eta", "0.5"], "--eta applies to the ddim sampler only")],
)  # fmt: skip
def test_bad_class_options_fail_with_one_line(conditional, tmp_path, capsys, extra, message):
    assert sample(conditional, tmp_path, *extra) == 2
    assert message in one_error_line(capsys)


def test_class_on_an_unconditional_run_fails_with_one_line(unconditional, tmp_path, capsys):
    assert sample(unconditional, tmp_path, "--class", "3") == 2
    assert "class-conditional" in one_error_line(capsys)


def test_interpolate_writes_a_strip_whose_ends_are_the_seeds_images(unconditional, tmp_path):
    out = tmp_path / "strip.png"
    args = ["interpolate", "--run", str(unconditional), "--seeds", "1", "2", "--frames", "5"]
    assert main([*args, "--sampler", "dpmpp-2m", "--steps", "4", "--out", str(out), "--quiet"]) == 0
    width, height = Image.open(out).size
    assert (width, height) == (5 * (64 + 2) + 2, 64 + 4)  # 8x8 enlarged to 64, 2-pixel padding
    run = load_run(unconditional)
    ends = [initial_noise(1, (1, 8, 8), seed=seed)[0] for seed in (1, 2)]
    noise = slerp(*ends, torch.linspace(0, 1, 5))
    assert torch.allclose(noise[0], ends[0], atol=1e-6) and torch.allclose(
        noise[-1], ends[1], atol=1e-6
    )
    sample = sample_config(run.config, sampler="dpmpp-2m", steps=4)
    strip = generate(run, sample, n=5, noise=noise, progress=False)
    first = generate(run, sample, n=1, seed=1, progress=False)
    assert torch.allclose(strip[0], first[0], atol=1e-5)


def test_slerp_keeps_the_norm_of_orthogonal_noises():
    a, b = torch.zeros(2, 2), torch.zeros(2, 2)
    a[0, 0], b[1, 1] = 3.0, 3.0
    middle = slerp(a, b, torch.tensor([0.5]))[0]
    assert middle.norm().item() == pytest.approx(3.0) and middle[0, 0] == pytest.approx(
        middle[1, 1]
    )


def test_interpolate_refuses_a_stochastic_sampler(unconditional, capsys):
    args = ["interpolate", "--run", str(unconditional), "--seeds", "1", "2", "--sampler", "ddpm"]
    with pytest.raises(SystemExit) as exit_info:  # argparse's choices
        main(args)
    assert exit_info.value.code == 2
    assert "invalid choice" in one_error_line(capsys)


def test_sweep_writes_csv_and_plot(unconditional, tmp_path):
    out = tmp_path / "sweep"
    args = ["sweep", "--run", str(unconditional), "--samplers", "ddpm:3,ddim,heun"]
    assert main([*args, "--steps", "2,3", "--n", "6", "--out", str(out), "--quiet"]) == 0
    with open(out / "sweep.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["sampler", "steps", "nfe", "n", "metric", "score", "images_per_s",
                             "seconds"]  # fmt: skip
    assert [(r["sampler"], int(r["steps"]), int(r["nfe"])) for r in rows] == [
        ("ddpm", 3, 3), ("ddim", 2, 2), ("ddim", 3, 3), ("heun", 2, 3), ("heun", 3, 5),
    ]  # fmt: skip
    assert all(r["metric"] == "pixel-FD" and r["n"] == "6" for r in rows)
    assert all(float(r["score"]) > 0 and float(r["images_per_s"]) > 0 for r in rows)
    assert Image.open(out / "sweep.png").size[0] > 500


def test_sweep_bad_plan_fails_with_one_line(unconditional, capsys):
    assert main(["sweep", "--run", str(unconditional), "--samplers", "ddim,magic"]) == 2
    assert "unknown sampler 'magic'" in one_error_line(capsys)
    assert main(["sweep", "--run", str(unconditional), "--steps", "5,x"]) == 2
    assert "comma-separated list of integers" in one_error_line(capsys)


def test_sweep_refuses_a_step_count_over_T_before_the_first_point(unconditional, tmp_path, capsys):
    """The whole plan is checked first: a sweep used to score its first points, write them, and
    then fail at the one over T."""
    out = tmp_path / "sweep"
    args = ["sweep", "--run", str(unconditional), "--samplers", "ddim", "--steps", "2,5000"]
    assert main([*args, "--n", "4", "--out", str(out), "--quiet"]) == 2
    assert "--steps must be between 1 and 1000, got 5000" in one_error_line(capsys)
    assert not (out / "sweep.csv").exists()
