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


def test_featnet_train_refuses_a_split_without_labels_before_training(
    isolated, tmp_path, capsys, monkeypatch
):
    """Labelled training images but a loose image (no class) in the test split: refused before
    any epoch (it used to train, then crash scoring the test split, losing the network)."""
    import numpy as np
    from PIL import Image

    from ddpm.cli import main
    from ddpm.data.folder import in_test_split
    from ddpm.metrics.featnet import featnet_path

    root = tmp_path / "photos"
    for label in ("a", "b"):
        (root / label).mkdir(parents=True)
        for i in range(40):
            Image.fromarray(np.full((8, 8), i, dtype=np.uint8)).save(root / label / f"{i}.png")
    loose = next(f"loose{i}.png" for i in range(1000) if in_test_split(f"loose{i}.png"))
    Image.fromarray(np.zeros((8, 8), dtype=np.uint8)).save(root / loose)
    args = ["featnet", "train", "--dataset", "folder", "--data-dir", str(root), "--image-size",
            "8", "--channels", "1", "--name", "photos", "--epochs", "1", "--quiet"]  # fmt: skip
    import ddpm.metrics.featnet

    def no_training(*args, **kwargs):
        raise AssertionError("trained before checking the labels")

    monkeypatch.setattr(ddpm.metrics.featnet, "train_featnet", no_training)
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "needs every image in a sub-folder" in err and "loose" in err
    assert len(err.strip().splitlines()) == 1
    assert not featnet_path("photos").exists()
