"""Write Fashion-MNIST's 60,000 training images as PNGs, one sub-folder per class: a real folder of
images, for measuring `ddpm train --data-dir` as a user runs it (docs/evaluation.md, Your own folder).

    python benchmarks/fmnist_as_folder.py OUT_DIR [IDX_DIR]
"""

from __future__ import annotations

import gzip
import sys
from pathlib import Path

import numpy as np
from PIL import Image

CLASSES = ["tshirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag",
           "boot"]  # fmt: skip


def main() -> int:
    out = Path(sys.argv[1])
    source = Path(sys.argv[2] if len(sys.argv) > 2 else "/usr/share/datasets/fashion-mnist")
    raw = gzip.open(source / "train-images-idx3-ubyte.gz").read()
    images = np.frombuffer(raw, np.uint8, offset=16).reshape(-1, 28, 28)
    labels = np.frombuffer(
        gzip.open(source / "train-labels-idx1-ubyte.gz").read(), np.uint8, offset=8
    )
    for name in CLASSES:
        (out / name).mkdir(parents=True, exist_ok=True)
    for i, (image, label) in enumerate(zip(images, labels)):
        Image.fromarray(image).save(out / CLASSES[label] / f"{i:05d}.png")
    print(f"{len(images)} PNGs in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
