"""The README's inpainting and SDEdit pictures, from a trained run, through the real commands.

    python benchmarks/editing_examples.py RUN OUT_PREFIX [--dataset fashion-mnist|digits]

Writes test-split images as PNGs (Fashion-MNIST's t10k file, or scikit-learn's digits) and masks
(a folder, one mask per image: a centre hole, the right half, the top half, the left third),
two hand-drawn sketches for SDEdit (a T-shirt and a boot silhouette from rectangles), then runs
    ddpm inpaint (replacement, DPM-Solver++ 20)         -> OUT_PREFIX-inpaint.png
    ddpm inpaint --resample 10 --jump 10 (RePaint)      -> OUT_PREFIX-repaint.png
    ddpm edit --strength 0.5 on the sketches and images  -> OUT_PREFIX-edit.png
and, with the Python API, one image edited at strengths 0 ... 1 -> OUT_PREFIX-strengths.png.
"""

from __future__ import annotations

import argparse
import gzip
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

FASHION = Path("/usr/share/datasets/fashion-mnist")
FASHION_PICKS = [0, 1, 4, 8]  # ankle boot, pullover, shirt, sandal: the first of four classes


def test_images(dataset: str) -> tuple[np.ndarray, int]:
    """A few test-split images, uint8 [4, S, S], and S."""
    if dataset == "fashion-mnist":
        raw = gzip.open(FASHION / "t10k-images-idx3-ubyte.gz").read()
        images = np.frombuffer(raw, np.uint8, offset=16).reshape(-1, 28, 28)
        return images[FASHION_PICKS], 28
    from sklearn.datasets import load_digits

    digits = load_digits().images[-4:]  # the last four: never in a 4-step test, any split
    return np.round(digits * 255 / 16).astype(np.uint8), 8


def masks(size: int) -> list[np.ndarray]:
    """White keeps, black generates: a centre hole, right half, top half, left third."""
    out = [np.full((size, size), 255, np.uint8) for _ in range(4)]
    quarter, half, third = size // 4, size // 2, size // 3
    out[0][quarter : size - quarter, quarter : size - quarter] = 0
    out[1][:, half:] = 0
    out[2][:half, :] = 0
    out[3][:, :third] = 0
    return out


def sketches(size: int) -> list[np.ndarray]:
    """A T-shirt and a boot drawn from rectangles, white on black, as a user might."""
    s = size / 28
    shirt = Image.new("L", (size, size))
    draw = ImageDraw.Draw(shirt)
    draw.rectangle([8 * s, 5 * s, 20 * s, 25 * s], fill=200)  # body
    draw.rectangle([3 * s, 5 * s, 25 * s, 11 * s], fill=200)  # sleeves
    boot = Image.new("L", (size, size))
    draw = ImageDraw.Draw(boot)
    draw.rectangle([12 * s, 4 * s, 20 * s, 22 * s], fill=170)  # shaft
    draw.rectangle([4 * s, 16 * s, 20 * s, 22 * s], fill=170)  # foot
    return [np.asarray(shirt), np.asarray(boot)]


def ddpm(*args: str) -> None:
    command = [sys.executable, "-m", "ddpm", *args]
    print("$ ddpm " + " ".join(args), flush=True)
    subprocess.run(command, check=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("run")
    parser.add_argument("out_prefix")
    parser.add_argument("--dataset", choices=["fashion-mnist", "digits"], default="fashion-mnist")
    args = parser.parse_args()
    images, size = test_images(args.dataset)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for folder in ("images", "masks", "edit"):
            (work / folder).mkdir()
        for i, (image, mask) in enumerate(zip(images, masks(size))):
            Image.fromarray(image).save(work / "images" / f"{i}.png")
            Image.fromarray(mask).save(work / "masks" / f"{i}.png")
        edit_inputs = ([*sketches(size), *images[:2]] if args.dataset == "fashion-mnist"
                       else list(images))  # fmt: skip
        for i, image in enumerate(edit_inputs):
            Image.fromarray(image).save(work / "edit" / f"{i}.png")
        common = ["--run", args.run, "--n", "4", "--quiet"]
        ddpm("inpaint", *common, "--image", str(work / "images"), "--mask", str(work / "masks"),
             "--out", f"{args.out_prefix}-inpaint.png")  # fmt: skip
        ddpm("inpaint", *common, "--image", str(work / "images"), "--mask", str(work / "masks"),
             "--resample", "10", "--jump", "10", "--out", f"{args.out_prefix}-repaint.png")  # fmt: skip
        ddpm("edit", *common, "--image", str(work / "edit"), "--strength", "0.5",
             "--out", f"{args.out_prefix}-edit.png")  # fmt: skip
        strengths_strip(args.run, work / "edit" / "0.png", f"{args.out_prefix}-strengths.png")
    return 0


def strengths_strip(run_dir: str, image_file: Path, out: str) -> None:
    """One image edited at strengths 0, 0.2, ..., 1 with one seed: the Python API."""
    import ddpm as api

    run = api.load_run(run_dir)
    pixels = torch.from_numpy(np.asarray(Image.open(image_file)).copy())[None, None]
    image = api.from_uint8(pixels)
    strip = [api.edit(run, image, strength=s / 5, seed=1, progress=False) for s in range(6)]
    print(f"strengths 0, 0.2, ..., 1: {api.save_grid(torch.cat(strip), out, nrow=6)}")


if __name__ == "__main__":
    sys.exit(main())
