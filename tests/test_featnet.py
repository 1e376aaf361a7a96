"""ddpm.metrics.featnet's small functions, without training a network."""

from __future__ import annotations

import pytest
import torch

from ddpm.data import ImageData
from ddpm.errors import DDPMError
from ddpm.metrics.featnet import FeatureNet, accuracy


def test_accuracy_of_unlabelled_images_is_one_line_naming_the_dataset():
    # a folder whose test split holds an image outside the class sub-folders has no labels there
    images = torch.zeros(3, 1, 8, 8, dtype=torch.uint8)
    unlabelled = ImageData(images=images, labels=None, num_classes=0, name="folder")
    with pytest.raises(DDPMError, match="dataset folder has no labels"):
        accuracy(FeatureNet(1, 2, (4,)), unlabelled)
