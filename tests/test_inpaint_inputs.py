"""The images and masks `ddpm inpaint` and `ddpm edit` read (ddpm.image_inputs) through the real
CLI on the tiny digits run (8x8 grey): what is refused (exit code 2, one line naming the file and
the flag that would accept it, no output written), what --resize and --convert accept, how a
mask with grey levels is thresholded."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from pictures import half_mask, one_error_line, picture, run_command, write_png
from PIL import Image

SRC = Path(__file__).resolve().parents[1] / "src"


@pytest.fixture
def files(tmp_path) -> dict[str, Path]:
    """A good 8x8 grey image and half mask, and an output grid that no failure may write."""
    return {
        "image": write_png(tmp_path / "in" / "digit.png", picture(1)),
        "mask": write_png(tmp_path / "in" / "mask.png", half_mask()),
        "grid": tmp_path / "out" / "grid.png",
    }


def refused(capsys, run: Path, files, command: str, *args: str, words: tuple[str, ...]) -> str:
    """`ddpm COMMAND --run RUN ARGS` fails with one line holding `words` and writes no grid."""
    argv = [command, "--run", str(run), "--out", str(files["grid"]), "--quiet", *args]
    err = one_error_line(capsys, argv, *words)
    assert not files["grid"].exists()
    return err


def inpaint_args(image: Path, mask: Path, *extra: str) -> tuple[str, ...]:
    return ("--image", str(image), "--mask", str(mask), "--n", "2", "--steps", "2", *extra)


def test_a_mask_of_another_size_than_its_image(tiny_run, tmp_path, files, capsys):
    mask = write_png(tmp_path / "in" / "big_mask.png", np.zeros((10, 10), np.uint8))
    err = refused(capsys, tiny_run, files, "inpaint", *inpaint_args(files["image"], mask),
                  words=("--mask", "big_mask.png", "10x10", "8x8", "size"))  # fmt: skip
    assert "digit.png" in err
    # under --resize too: a mask must have its own image's size, whatever the run's
    big = write_png(tmp_path / "in" / "big.png", picture(2, 16))
    refused(capsys, tiny_run, files, "inpaint", *inpaint_args(big, files["mask"], "--resize"),
            words=("--mask", "8x8", "16x16"))  # fmt: skip


def test_an_image_of_another_size_needs_resize(tiny_run, tmp_path, files, capsys):
    big = write_png(tmp_path / "in" / "big.png", np.full((16, 16), 77, np.uint8))
    big_mask = write_png(tmp_path / "in" / "big_mask.png", half_mask(16))
    for command, args in (("inpaint", inpaint_args(big, big_mask)),
                          ("edit", ("--image", str(big), "--steps", "2"))):  # fmt: skip
        refused(capsys, tiny_run, files, command, *args,
                words=("--image", "big.png", "16x16", "8x8", "--resize"))  # fmt: skip
    out = run_command(
        "inpaint", tiny_run, tmp_path / "ok", *inpaint_args(big, big_mask, "--resize")
    )
    assert out.shape == (2, 8, 8, 1)
    # a flat 77 stays 77 when resized; the mask is resized with it (left half kept)
    assert (out[:, :, :4, 0] == 77).all() and (out[:, :, 4:, 0] != 77).any()
    edited = run_command("edit", tiny_run, tmp_path / "edit", "--image", str(big), "--resize",
                         "--n", "2", "--steps", "2")  # fmt: skip
    assert edited.shape == (2, 8, 8, 1)


def test_a_colour_image_for_a_grey_run_needs_convert(tiny_run, tmp_path, files, capsys):
    rgb = np.random.default_rng(3).integers(0, 256, (8, 8, 3), dtype=np.uint8)
    colour = write_png(tmp_path / "in" / "colour.png", rgb)
    refused(capsys, tiny_run, files, "inpaint", *inpaint_args(colour, files["mask"]),
            words=("--image", "colour.png", "colour", "grey", "--convert"))  # fmt: skip
    refused(capsys, tiny_run, files, "edit", "--image", str(colour), words=("--convert",))
    out = run_command("inpaint", tiny_run, tmp_path / "ok",
                      *inpaint_args(colour, files["mask"], "--convert"))  # fmt: skip
    grey = np.asarray(Image.open(colour).convert("L"), dtype=int)  # PIL's luminance
    keep = half_mask() == 255
    assert out.shape == (2, 8, 8, 1) and np.array_equal(out[:, keep, 0], np.stack([grey[keep]] * 2))


def test_an_rgb_file_with_equal_channels_is_grey(tiny_run, tmp_path, files):
    pixels = picture(4)
    rgb = write_png(tmp_path / "in" / "rgb.png", np.stack([pixels] * 3, axis=-1))
    assert Image.open(rgb).mode == "RGB"
    out = run_command("inpaint", tiny_run, tmp_path / "ok", *inpaint_args(rgb, files["mask"]))
    keep = half_mask() == 255
    assert np.array_equal(out[:, keep, 0], np.stack([pixels[keep]] * 2))


LEVELS = [255, 255, 200, 150, 128, 127, 100, 0]  # a mask's columns


def test_a_mask_with_grey_levels_is_thresholded_at_128(tiny_run, tmp_path, files, caplog):
    grey = np.tile(np.array(LEVELS, np.uint8), (8, 1))
    mask = write_png(tmp_path / "in" / "grey_mask.png", grey)
    at_128 = write_png(tmp_path / "in" / "at_128.png", (grey >= 128).astype(np.uint8) * 255)
    at_100 = write_png(tmp_path / "in" / "at_100.png", (grey >= 100).astype(np.uint8) * 255)
    args = ("--seed", "3", "--sampler", "ddpm")
    with caplog.at_level(logging.WARNING):
        out = run_command("inpaint", tiny_run, tmp_path / "grey",
                          *inpaint_args(files["image"], mask, *args))  # fmt: skip
    assert "thresholded at 128" in caplog.text and "grey_mask.png" in caplog.text
    caplog.clear()
    binary = run_command("inpaint", tiny_run, tmp_path / "128",
                         *inpaint_args(files["image"], at_128, *args))  # fmt: skip
    assert "thresholded" not in caplog.text  # black and white: no warning
    lower = run_command("inpaint", tiny_run, tmp_path / "100",
                        *inpaint_args(files["image"], at_100, *args))  # fmt: skip
    pixels = picture(1)
    assert np.array_equal(out, binary) and not np.array_equal(out, lower)
    assert np.array_equal(out[:, :, :5, 0], np.stack([pixels[:, :5]] * 2))  # 255, 200, 150, 128
    assert (out[:, :, 5:7, 0] != pixels[:, 5:7]).any()  # 127 and 100: generated


def test_the_threshold_warning_is_one_line_on_stderr(tiny_run, tmp_path, files):
    """In a process of its own: pytest's log capture would hide where the warning goes."""
    mask = write_png(tmp_path / "in" / "grey_mask.png", np.tile(np.array(LEVELS, np.uint8), (8, 1)))
    args = ["inpaint", "--run", str(tiny_run), "--out", str(files["grid"]), "--quiet",
            *inpaint_args(files["image"], mask)]  # fmt: skip
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")]),
    }
    result = subprocess.run([sys.executable, "-m", "ddpm", *args], env=env, capture_output=True,
                            text=True, timeout=300)  # fmt: skip
    err = result.stderr.strip()
    assert result.returncode == 0 and len(err.splitlines()) == 1, err
    assert "grey_mask.png" in err and "thresholded at 128" in err and ">= 128" in err, err
    assert files["grid"].is_file()


def test_missing_and_unreadable_inputs(tiny_run, tmp_path, files, capsys):
    nowhere = tmp_path / "nowhere.png"
    refused(capsys, tiny_run, files, "inpaint", *inpaint_args(nowhere, files["mask"]),
            words=("--image", "no such file", "nowhere.png"))  # fmt: skip
    refused(capsys, tiny_run, files, "inpaint", *inpaint_args(files["image"], nowhere),
            words=("--mask", "no such file", "nowhere.png"))  # fmt: skip
    refused(capsys, tiny_run, files, "edit", "--image", str(nowhere), words=("no such file",))
    text = tmp_path / "in" / "x.png"
    text.write_text("not an image\n")
    refused(capsys, tiny_run, files, "inpaint", *inpaint_args(text, files["mask"]),
            words=("--image", "x.png", "not a readable image"))  # fmt: skip
    refused(capsys, tiny_run, files, "inpaint", *inpaint_args(files["image"], text),
            words=("--mask", "x.png", "not a readable image"))  # fmt: skip
    (tmp_path / "empty").mkdir()
    refused(capsys, tiny_run, files, "edit", "--image", str(tmp_path / "empty"),
            words=("--image", "no images"))  # fmt: skip


def test_a_mask_folder_without_one_image_s_mask(tiny_run, tmp_path, files, capsys):
    for name in ("a.png", "b.png"):
        write_png(tmp_path / "images" / name, picture(5))
    write_png(tmp_path / "masks" / "a.png", half_mask())
    write_png(tmp_path / "masks" / "c.png", half_mask())  # not b's
    refused(capsys, tiny_run, files, "inpaint",
            *inpaint_args(tmp_path / "images", tmp_path / "masks"),
            words=("--mask", "no mask for b.png", "masks"))  # fmt: skip


@pytest.mark.parametrize(
    "extra,words",
    [(["--resample", "3", "--sampler", "dpmpp-2m"], ("--resample", "ddpm", "dpmpp-2m")),
     (["--resample", "3", "--jump", "6", "--steps", "6"], ("--jump", "--steps", "6")),
     (["--resample", "2", "--jump", "9", "--steps", "6"], ("--jump must be below --steps",)),
     (["--class", "3"], ("--class", "model.num_classes=0")),
     (["--guidance", "2"], ("--guidance needs --class",)),
     (["--steps", "5000"], ("--steps must be",)),
     (["--eta", "0.5", "--sampler", "ddpm"], ("--eta",))],
    ids=["resample-sampler", "jump-equal", "jump-above", "class", "guidance", "steps", "eta"],
)  # fmt: skip
def test_flags_the_run_or_sampler_cannot_take(tiny_run, files, capsys, extra, words):
    args = ("--image", str(files["image"]), "--mask", str(files["mask"]), *extra)
    refused(capsys, tiny_run, files, "inpaint", *args, words=words)


@pytest.mark.parametrize("command", ["inpaint", "edit"])
def test_an_output_grid_that_is_not_an_image(tiny_run, tmp_path, files, capsys, command):
    mask = ["--mask", str(files["mask"])] if command == "inpaint" else []
    args = [command, "--run", str(tiny_run), "--image", str(files["image"]), *mask]
    out = tmp_path / "grid.txt"
    one_error_line(capsys, [*args, "--out", str(out)], "--out", "grid.txt", "image extension")
    assert not out.exists()
    png = str(out.with_suffix(".png"))
    one_error_line(capsys, [*args, "--out", png, "--npz", png], "--npz", "same file")


@pytest.mark.parametrize(
    "names", [("a.png", "a.bmp"), ("sub/c.png", "sub_c.png")], ids=["extension", "flattened"]
)
def test_two_inputs_that_would_write_the_same_out_dir_files(
    tiny_run, tmp_path, files, capsys, names
):
    """a.png and a.bmp would both be a-00.png, sub/c.png and sub_c.png both sub_c-00.png: one
    result overwritten in silence (it was); refused before sampling, naming both."""
    for name in names:
        write_png(tmp_path / "images" / name, picture(6))
    out_dir = tmp_path / "results"
    for command, mask in (("inpaint", ["--mask", str(files["mask"])]), ("edit", [])):
        refused(capsys, tiny_run, files, command, "--image", str(tmp_path / "images"), *mask,
                "--out-dir", str(out_dir), words=("--out-dir", *names, "rename"))  # fmt: skip
        assert not out_dir.exists()
    # without --out-dir nothing collides
    grid = run_command("edit", tiny_run, tmp_path / "ok", "--image", str(tmp_path / "images"),
                       "--n", "1", "--steps", "2")  # fmt: skip
    assert grid.shape == (2, 8, 8, 1)


def test_sixteen_bit_grey_images_are_scaled_not_clipped(tmp_path):
    """A 16-bit grey PNG (PIL's mode I;16) is scaled to 8 bits (v / 257): PIL's own convert("L")
    clips it to white above 255. The shared decoder serves training folders too."""
    from ddpm.image_inputs import read_images

    wide = np.linspace(0, 65535, 64).reshape(8, 8).astype(np.uint16)
    path = tmp_path / "wide.png"
    Image.fromarray(wide).save(path)
    assert Image.open(path).mode == "I;16"
    pixels = read_images(path, size=8, channels=1).pixels[0, 0].numpy()
    assert np.array_equal(pixels, np.round(wide / 257).astype(np.uint8))
    colour = read_images(path, size=8, channels=3, convert=True).pixels[0].numpy()
    assert np.array_equal(colour[1], pixels)
