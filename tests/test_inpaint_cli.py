"""`ddpm inpaint` and `ddpm edit` through the real CLI on the tiny digits run (8x8 grey) with real
PNG files: kept pixels bit for bit, the all-keep / all-generate / strength 0 / strength 1 limits,
folders, per-image seeds; `ddpm sample --class all` and sample.guidance on a class-conditional
run; the class-conditional presets; the Python API (ddpm.inpaint / ddpm.edit). Bad inputs:
tests/test_inpaint_inputs.py."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
from pictures import half_mask, picture, run_command, write_png
from PIL import Image
from tiny import train_tiny

import ddpm
from ddpm.cli import main
from ddpm.config import diff_keys, load_preset, preset_names
from ddpm.errors import DDPMError
from ddpm.generate import generate, sample_config
from ddpm.loaded_run import load_run
from ddpm.pixels import from_uint8

CELL = 64  # an 8x8 image in a grid, enlarged x8 by nearest neighbour to 64 pixels (viz)
PAD = 2  # torchvision make_grid's padding, as save_grid uses it


def grid_shape(rows: int, columns: int) -> tuple[int, int]:
    """(height, width) of a grid of 8x8 images: make_grid puts PAD around every cell."""
    return rows * (CELL + PAD) + PAD, columns * (CELL + PAD) + PAD


def grid_cell(grid: np.ndarray, row: int, column: int) -> np.ndarray:
    """The 8x8 image in a grid's cell, read back from its enlarged pixels."""
    top, left = PAD + row * (CELL + PAD), PAD + column * (CELL + PAD)
    return grid[top : top + CELL : CELL // 8, left : left + CELL : CELL // 8].astype(int)


def inpaint(run: Path, out: Path, image: Path, mask: Path, *extra: str) -> np.ndarray:
    return run_command("inpaint", run, out, "--image", str(image), "--mask", str(mask), *extra)


def sample(run: Path, out: Path, *extra: str) -> np.ndarray:
    return run_command("sample", run, out, *extra)


@pytest.fixture
def digit(tmp_path) -> tuple[Path, np.ndarray]:
    pixels = picture(1)
    return write_png(tmp_path / "in" / "digit.png", pixels), pixels


@pytest.mark.parametrize(
    "flags",
    [["--sampler", "ddpm", "--steps", "3"], ["--sampler", "ddim", "--steps", "3"],
     ["--sampler", "dpmpp-2m", "--steps", "3"], ["--sampler", "heun", "--steps", "3"],
     ["--resample", "3", "--jump", "2", "--steps", "6"]],
    ids=["ddpm", "ddim", "dpmpp-2m", "heun", "repaint"],
)  # fmt: skip
def test_known_pixels_are_the_inputs_bit_for_bit(tiny_run, tmp_path, digit, flags):
    image, pixels = digit
    mask = write_png(tmp_path / "in" / "mask.png", half_mask())
    out = inpaint(tiny_run, tmp_path / "out", image, mask, "--n", "3", "--seed", "4", *flags)
    keep = half_mask() == 255
    assert out.shape == (3, 8, 8, 1)
    assert np.array_equal(out[:, keep, 0], np.broadcast_to(pixels[keep], (3, int(keep.sum()))))
    generated = out[:, ~keep, 0]
    assert (generated != pixels[~keep]).any() and (generated[0] != generated[1]).any()


@pytest.mark.parametrize(
    "flags", [[], ["--resample", "3", "--jump", "2"]], ids=["replacement", "repaint"]
)
def test_the_kept_pixels_steer_the_generated_ones(tiny_run, tmp_path, digit, flags):
    """The generated half is not `ddpm sample`'s with the same seeds: the known pixels of x_t
    reach the network (a stochastic sampler: the tiny run's deterministic ones saturate to
    0/255 and differ in a pixel or two only)."""
    image, _ = digit
    mask = write_png(tmp_path / "in" / "mask.png", half_mask())
    common = ["--n", "3", "--seed", "4", "--sampler", "ddpm", "--steps", "6"]
    out = inpaint(tiny_run, tmp_path / "out", image, mask, *common, *flags)
    sampled = sample(tiny_run, tmp_path / "sample", *common)
    made = half_mask() == 0
    assert (out[:, made] != sampled[:, made]).sum() >= 5


def test_an_all_white_mask_returns_the_image(tiny_run, tmp_path, digit):
    image, pixels = digit
    white = write_png(tmp_path / "in" / "white.png", np.full((8, 8), 255, np.uint8))
    out = inpaint(tiny_run, tmp_path / "out", image, white, "--n", "3", "--sampler", "ddpm")
    assert np.array_equal(out[..., 0], np.stack([pixels] * 3))


@pytest.mark.parametrize("sampler", ["ddpm", "ddim"])
def test_an_all_black_mask_is_ddpm_sample(tiny_run, tmp_path, digit, sampler):
    image, _ = digit
    black = write_png(tmp_path / "in" / "black.png", np.zeros((8, 8), np.uint8))
    flags = ["--n", "4", "--seed", "7", "--sampler", sampler, "--steps", "3"]
    filled = inpaint(tiny_run, tmp_path / "inpaint", image, black, *flags)
    sampled = sample(tiny_run, tmp_path / "sample", *flags)
    assert np.array_equal(filled, sampled)


@pytest.mark.parametrize("sampler", ["ddpm", "heun"])
def test_edit_strength_0_is_the_image_1_is_sample_between_is_neither(
    tiny_run, tmp_path, digit, sampler
):
    image, pixels = digit
    flags = ["--image", str(image), "--n", "3", "--seed", "5", "--sampler", sampler, "--steps", "3"]
    results = {s: run_command("edit", tiny_run, tmp_path / s, *flags, "--strength", s)
               for s in ("0", "0.5", "1")}  # fmt: skip
    sampled = sample(tiny_run, tmp_path / "sample", *flags[2:])
    assert np.array_equal(results["0"][..., 0], np.stack([pixels] * 3))
    assert np.array_equal(results["1"], sampled)
    assert (results["0.5"] != sampled).any() and (results["0.5"] != results["0"]).any()


def test_edit_prints_the_steps_it_takes(tiny_run, tmp_path, digit, capsys):
    """Strength 0.002 of T = 1000 starts at t = 1: 2 steps (heun: 3 NFE), not the 20 asked for."""
    flags = ["--image", str(digit[0]), "--n", "1", "--steps", "20", "--strength", "0.002"]
    run_command("edit", tiny_run, tmp_path / "out", *flags, "--sampler", "heun")
    assert "sampler: heun, 2 steps (karras spacing), 3 NFE; SDEdit from t = 1 of 1000" in (
        capsys.readouterr().out
    )


def test_edit_strength_out_of_range_is_argparse_s_one_line(tiny_run, tmp_path, digit, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["edit", "--run", str(tiny_run), "--image", str(digit[0]), "--strength", "1.5",
              "--out", str(tmp_path / "e.png")])  # fmt: skip
    err = capsys.readouterr().err.strip()
    assert exit_info.value.code == 2 and len(err.splitlines()) == 1, err
    assert "--strength" in err and "must be in [0, 1]" in err, err
    assert not (tmp_path / "e.png").exists()


@pytest.fixture
def folder(tmp_path) -> tuple[Path, list[np.ndarray]]:
    """images/a.png, images/b.png, images/sub/c.png (list_images order: a, b, sub/c)."""
    pixels = [picture(10 + i) for i in range(3)]
    for name, array in zip(("a.png", "b.png", "sub/c.png"), pixels):
        write_png(tmp_path / "images" / name, array)
    return tmp_path / "images", pixels


def test_a_folder_with_a_mask_folder_is_image_major(tiny_run, tmp_path, folder):
    """Mask a (.png) all white, b (.bmp) all black, sub/c half: rows 0-1 are a, rows 2-3 are
    `ddpm sample`'s images 2-3, rows 4-5 keep c's left half; the grid a row per image."""
    images, pixels = folder
    write_png(tmp_path / "masks" / "a.png", np.full((8, 8), 255, np.uint8))
    write_png(tmp_path / "masks" / "b.bmp", np.zeros((8, 8), np.uint8))
    write_png(tmp_path / "masks" / "sub" / "c.png", half_mask())
    flags = ["--n", "2", "--seed", "3", "--sampler", "ddpm", "--steps", "3"]
    out = tmp_path / "out"
    results = inpaint(tiny_run, out, images, tmp_path / "masks", *flags,
                      "--out-dir", str(out / "pngs"))  # fmt: skip
    sampled = sample(tiny_run, tmp_path / "sample", *flags[:1], "6", *flags[2:])
    keep = half_mask() == 255
    assert results.shape == (6, 8, 8, 1)
    assert np.array_equal(results[:2, ..., 0], np.stack([pixels[0]] * 2))
    assert np.array_equal(results[2:4], sampled[2:4])
    assert np.array_equal(results[4:, keep, 0], np.stack([pixels[2][keep]] * 2))
    names = sorted(p.name for p in (out / "pngs").iterdir())
    assert names == ["a-00.png", "a-01.png", "b-00.png", "b-01.png", "sub_c-00.png", "sub_c-01.png"]
    for k, name in enumerate(names):
        assert np.array_equal(np.asarray(Image.open(out / "pngs" / name)), results[k, ..., 0])
    grid = np.asarray(Image.open(out / "grid.png"))
    assert grid.shape == grid_shape(3, 2 + 2)  # input, mask, 2 results
    masks = [np.full((8, 8), 255), np.zeros((8, 8)), half_mask()]
    for i in range(3):
        assert np.array_equal(grid_cell(grid, i, 0), pixels[i])
        assert np.array_equal(grid_cell(grid, i, 1), masks[i])
        for k in range(2):
            assert np.array_equal(grid_cell(grid, i, 2 + k), results[2 * i + k, ..., 0])


def test_a_folder_with_one_mask_file_and_edit_s_grid(tiny_run, tmp_path, folder):
    images, pixels = folder
    mask = write_png(tmp_path / "mask.png", half_mask())
    results = inpaint(tiny_run, tmp_path / "out", images, mask, "--n", "2", "--steps", "2")
    keep = half_mask() == 255
    for i in range(3):
        assert np.array_equal(results[2 * i : 2 * i + 2, keep, 0], np.stack([pixels[i][keep]] * 2))
    edited = run_command("edit", tiny_run, tmp_path / "edit", "--image", str(images), "--n", "3",
                         "--steps", "2", "--strength", "0.3")  # fmt: skip
    assert edited.shape == (9, 8, 8, 1)
    grid = np.asarray(Image.open(tmp_path / "edit" / "grid.png"))
    assert grid.shape == grid_shape(3, 1 + 3)  # input, 3 results
    assert np.array_equal(grid_cell(grid, 2, 0), pixels[2])
    assert np.array_equal(grid_cell(grid, 2, 3), edited[8, ..., 0])


def test_results_do_not_depend_on_the_batch_size(tiny_run, tmp_path, folder):
    images, _ = folder
    mask = write_png(tmp_path / "mask.png", half_mask())
    flags = ["--n", "2", "--seed", "9", "--sampler", "ddpm", "--steps", "3"]
    one = inpaint(tiny_run, tmp_path / "b1", images, mask, *flags, "--batch-size", "1")
    five = inpaint(tiny_run, tmp_path / "b5", images, mask, *flags, "--batch-size", "5")
    assert np.array_equal(one, five)
    edit = ["--image", str(images), *flags, "--strength", "0.6"]
    edit_one = run_command("edit", tiny_run, tmp_path / "e1", *edit, "--batch-size", "1")
    edit_five = run_command("edit", tiny_run, tmp_path / "e5", *edit, "--batch-size", "5")
    assert np.array_equal(edit_one, edit_five)


@pytest.fixture(scope="module")
def guided(tmp_path_factory) -> Path:
    """A class-conditional tiny digits run whose config asks for guidance 3."""
    path = tmp_path_factory.mktemp("runs") / "guided"
    return train_tiny(path, "model.num_classes=10", "sample.guidance=3.0")


def test_class_all_makes_one_class_per_column(guided, tmp_path):
    flags = ["--n", "20", "--seed", "2", "--sampler", "ddim", "--steps", "2"]
    every = sample(guided, tmp_path / "all", *flags, "--class", "all")
    threes = sample(guided, tmp_path / "three", *flags, "--class", "3")
    assert np.asarray(Image.open(tmp_path / "all" / "grid.png")).shape == grid_shape(2, 10)
    assert np.array_equal(every[[3, 13]], threes[[3, 13]])  # image i is of class i % 10
    assert (every[4] != threes[4]).any()


def test_guidance_defaults_to_the_run_s_sample_guidance(guided, tmp_path, digit):
    # ddpm: its added noise keeps the tiny run off the saturated 0/255 that hides guidance
    flags = ["--n", "3", "--seed", "1", "--class", "2", "--sampler", "ddpm", "--steps", "3"]
    default = sample(guided, tmp_path / "default", *flags)
    assert np.array_equal(default, sample(guided, tmp_path / "w3", *flags, "--guidance", "3.0"))
    assert (default != sample(guided, tmp_path / "w1", *flags, "--guidance", "1.0")).any()
    sample(guided, tmp_path / "unconditional", *flags[:4])  # no --class: no guidance, no error
    image, pixels = digit
    mask = write_png(tmp_path / "mask.png", half_mask())
    filled = inpaint(guided, tmp_path / "inpaint", image, mask, *flags)
    keep = half_mask() == 255
    assert np.array_equal(filled[:, keep, 0], np.stack([pixels[keep]] * 3))
    w3 = inpaint(guided, tmp_path / "inpaint3", image, mask, *flags, "--guidance", "3.0")
    assert np.array_equal(filled, w3)


@pytest.mark.parametrize("name", ["fashion-mnist", "mnist"])
def test_a_cond_preset_is_its_dataset_s_with_labels_and_guidance(name):
    base, cond = load_preset(name), load_preset(f"{name}-cond")
    # train.label_dropout's default is already 0.1: the preset says so, the diff need not show it
    assert {"model.num_classes", "sample.guidance"} <= set(diff_keys(base, cond))
    assert set(diff_keys(base, cond)) <= {
        "model.num_classes",
        "sample.guidance",
        "train.label_dropout",
    }
    assert cond.model.num_classes == 10 and cond.train.label_dropout == 0.1
    assert cond.sample.guidance > 1.0 and base.sample.guidance == 1.0


def test_every_preset_loads():
    names = preset_names()
    assert {"mnist-cond", "fashion-mnist-cond", "digits"} <= set(names)
    for name in names:
        assert load_preset(name).data.image_size > 0, name


@pytest.fixture(scope="module")
def loaded(tiny_run):
    return load_run(tiny_run)


def test_api_refuses_tensors_of_the_wrong_shape(loaded):
    images, keep = torch.zeros(2, 1, 8, 8), torch.ones(2, 1, 8, 8, dtype=torch.bool)
    for bad_images, bad_keep in [
        (torch.zeros(2, 1, 4, 4), keep),  # not the run's size
        (torch.zeros(2, 3, 8, 8), keep),  # not the run's channels
        (torch.zeros(1, 8, 8), keep[0]),  # not [N, C, H, W]
        (torch.full((2, 1, 8, 8), 2.0), keep),  # outside [-1, 1]
        (images, keep.float()),  # not bool
        (images, torch.ones(2, 1, 4, 4, dtype=torch.bool)),  # not the images' size
        (images, torch.ones(3, 1, 8, 8, dtype=torch.bool)),  # neither 1 nor N masks
        (images, torch.ones(2, 2, 8, 8, dtype=torch.bool)),  # neither 1 nor C channels
    ]:
        with pytest.raises(DDPMError):
            ddpm.inpaint(loaded, bad_images, bad_keep, progress=False)
    with pytest.raises(DDPMError):
        ddpm.edit(loaded, torch.zeros(2, 1, 4, 4), strength=0.5, progress=False)
    with pytest.raises(DDPMError, match="strength"):
        ddpm.edit(loaded, images, strength=1.5, progress=False)
    with pytest.raises(DDPMError, match="n must be"):
        ddpm.inpaint(loaded, images, keep, n=0, progress=False)


def test_api_one_mask_for_every_image_and_image_major_results(loaded):
    pixels = torch.from_numpy(np.stack([picture(20 + i) for i in range(3)]))[:, None]
    images = from_uint8(pixels)
    keep = torch.from_numpy(half_mask() == 255)[None, None]  # [1, 1, H, W]: every image
    results = ddpm.inpaint(loaded, images, keep, n=2, seed=6, progress=False)
    assert results.shape == (6, 1, 8, 8)
    for i in range(3):
        for k in range(2):
            kept = torch.where(keep[0], images[i], results[2 * i + k])
            assert torch.equal(kept, results[2 * i + k]), (i, k)
    # image 0 kept whole, image 1 generated whole: rows 0-1 are image 0, rows 2-3 the images
    # 2-3 of generate(n=4) with the same seed
    both = torch.zeros(2, 1, 8, 8, dtype=torch.bool)
    both[0] = True
    mixed = ddpm.inpaint(loaded, images[:2], both, n=2, seed=6, progress=False)
    assert torch.equal(mixed[:2], images[:1].expand(2, -1, -1, -1))
    plain = generate(loaded, sample_config(loaded.config), n=4, seed=6, progress=False)
    assert torch.equal(mixed[2:], plain[2:])
    edited = ddpm.edit(loaded, images, strength=0.0, n=2, progress=False)
    assert torch.equal(edited, images.repeat_interleave(2, dim=0))


def test_resample_without_steps_takes_at_most_the_run_s_timesteps(tmp_path, digit, capsys):
    """--resample without --steps is RePaint's 250 steps, or all of a shorter schedule's T."""
    run = train_tiny(tmp_path / "short", "diffusion.num_timesteps=40")
    image, pixels = digit
    mask = write_png(tmp_path / "mask.png", half_mask())
    capsys.readouterr()
    filled = inpaint(run, tmp_path / "out", image, mask, "--resample", "2", "--jump", "5")
    assert "ddpm, 40 steps" in capsys.readouterr().out
    keep = half_mask() == 255
    assert np.array_equal(filled[:, keep, 0], np.stack([pixels[keep]] * 4))


def test_resample_without_steps_is_repaint_s_250(tiny_run, tmp_path, digit, capsys):
    image, _ = digit
    mask = write_png(tmp_path / "mask.png", half_mask())
    capsys.readouterr()
    inpaint(tiny_run, tmp_path / "out", image, mask, "--n", "1", "--resample", "2", "--jump", "100")
    out = capsys.readouterr().out
    # jump points at 149 and 249 steps from the start, one jump back of 100 each
    assert "ddpm, 250 steps" in out and "450 NFE" in out and "RePaint (resample 2, jump 100)" in out


def test_eval_class_all_scores_class_balanced_samples(guided, tmp_path):
    """`ddpm eval --class all`: the samples are `ddpm sample --class all`'s (image i of class
    i % 10, the run's guidance) and metrics.csv says so."""
    import csv

    from tiny import untrained_featnet

    features = untrained_featnet(tmp_path / "features.safetensors")
    flags = ["--n", "20", "--seed", "4", "--sampler", "ddim", "--steps", "2", "--class", "all"]
    out = tmp_path / "eval"
    args = ["eval", "--run", str(guided), "--features", str(features), "--metrics", "fid"]
    assert main([*args, *flags, "--out", str(out), "--quiet"]) == 0
    with (out / "metrics.csv").open() as f:
        (row,) = list(csv.DictReader(f))
    assert (row["class_label"], float(row["guidance"])) == ("all", 3.0)
    (cached,) = (out / "samples").glob("*.npz")
    scored = np.load(cached)["arr_0"]
    scored = scored if scored.shape[-1] == 1 else scored.transpose(0, 2, 3, 1)
    assert np.array_equal(scored.astype(int), sample(guided, tmp_path / "s", *flags))


@pytest.mark.gpu
def test_inpaint_and_edit_on_cuda_keep_pixels_and_seeds(tiny_run):
    """On a CUDA device: kept pixels exact, results independent of the batch size up to float
    rounding (convolutions may sum in another order there)."""
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    run = load_run(tiny_run, device=torch.device("cuda"))
    images = from_uint8(torch.from_numpy(np.stack([picture(40), picture(41)]))[:, None])
    keep = torch.from_numpy(half_mask() == 255)[None, None]
    sample_cfg = sample_config(run.config, sampler="ddpm", steps=4)
    one = ddpm.inpaint(run, images, keep, n=2, seed=3, sample=sample_cfg, progress=False)
    small = dataclasses.replace(sample_cfg, batch_size=1)
    batched_apart = ddpm.inpaint(run, images, keep, n=2, seed=3, sample=small, progress=False)
    assert torch.allclose(one, batched_apart, atol=1e-4)
    assert torch.equal(torch.where(keep[0], images.repeat_interleave(2, 0), one), one)
    edited = ddpm.edit(run, images, strength=0.4, n=2, seed=3, sample=sample_cfg, progress=False)
    assert edited.shape == (4, 1, 8, 8) and edited.device.type == "cpu"


def test_an_all_black_mask_with_resampling_is_ddpm_sample_too(tiny_run, tmp_path, digit):
    image, _ = digit
    black = write_png(tmp_path / "in" / "black.png", np.zeros((8, 8), np.uint8))
    flags = ["--n", "3", "--seed", "5", "--steps", "6"]
    filled = inpaint(tiny_run, tmp_path / "inpaint", image, black, *flags, "--resample", "3",
                     "--jump", "2")  # fmt: skip
    assert np.array_equal(
        filled, sample(tiny_run, tmp_path / "sample", *flags, "--sampler", "ddpm")
    )


def test_the_api_takes_the_run_s_guidance_and_refuses_a_jump_without_jump_points(guided):
    """ddpm.generate / ddpm.inpaint with labels and no guidance use sample.guidance (3 here), as
    the commands do; RePaint with jump >= steps would resample nowhere: refused."""
    run = load_run(guided)
    cfg = sample_config(run.config, sampler="ddpm", steps=3)
    labels = torch.tensor([1, 2])
    default = generate(run, cfg, n=2, seed=1, labels=labels, progress=False)
    assert torch.equal(default, generate(run, cfg, n=2, seed=1, labels=labels, guidance=3.0,
                                         progress=False))  # fmt: skip
    assert not torch.equal(default, generate(run, cfg, n=2, seed=1, labels=labels, guidance=1.0,
                                             progress=False))  # fmt: skip
    images = from_uint8(torch.from_numpy(picture(8))[None, None])
    keep = torch.from_numpy(half_mask() == 255)[None, None]
    filled = ddpm.inpaint(run, images, keep, n=2, seed=1, sample=cfg, labels=labels, progress=False)
    assert torch.equal(filled, ddpm.inpaint(run, images, keep, n=2, seed=1, sample=cfg,
                                            labels=labels, guidance=3.0, progress=False))  # fmt: skip
    with pytest.raises(DDPMError, match="jump"):
        ddpm.inpaint(run, images, keep, sample=cfg, resample=2, jump=3, progress=False)
