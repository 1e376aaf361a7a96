"""scikit-learn's bundled 8x8 handwritten digits (UCI optdigits test set, 1,797 images, 10 classes).

Pixel values 0..16 are scaled to uint8 0..255. The dataset has no official split, so a fixed
permutation (seed 0) holds out 297 images as the test split.
"""

from __future__ import annotations

import numpy as np
import torch

from .image_data import ImageData, Split

NUM_TEST = 297


def load_digits(split: Split = "train") -> ImageData:
    from sklearn.datasets import load_digits as sklearn_digits

    bunch = sklearn_digits()
    images = np.rint(bunch.images * (255.0 / 16.0)).clip(0, 255).astype(np.uint8)  # [N, 8, 8]
    order = np.random.RandomState(0).permutation(len(images))
    chosen = order[NUM_TEST:] if split == "train" else order[:NUM_TEST]
    return ImageData(
        images=torch.from_numpy(images[chosen][:, None].copy()),
        labels=torch.from_numpy(bunch.target[chosen].astype(np.int64)),
        num_classes=10,
        name="digits",
    )
