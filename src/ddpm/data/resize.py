"""Bringing images to the configured size and channel count, in the two places it happens.

- Image files (CelebA, any folder) are cropped and resized one by one as they are decoded:
  `crop_and_resize`, PIL's antialiased bicubic filter (torchvision's Resize + CenterCrop).
- Datasets stored at one fixed size (digits 8x8, MNIST 28x28, CIFAR-10 32x32) are fitted as a
  whole tensor: `fit`, a zero border or torch's antialiased bilinear filter, rounded to uint8.

The two filters differ and each is kept: a loader's pixels (and so its decode cache and the models
trained on it) do not change with this module.
"""

from __future__ import annotations

from dataclasses import replace

import torch
import torch.nn.functional as F
from PIL import Image
from torchvision.transforms import InterpolationMode
from torchvision.transforms import functional as TF

from ..errors import DDPMError
from .decode import Preprocess
from .image_data import ImageData


def crop_and_resize(size: int, *, crop: int | None = None) -> Preprocess:
    """A function PIL image [W, H] -> [size, size]: with `crop`, first the centred square of side
    min(crop, W, H) (CelebA's 140x140 face crop); then the shorter side scaled to `size` (bicubic,
    antialiased) and the centred size x size square kept. Centring rounds as torchvision does:
    the top-left corner is round((H - side) / 2), round((W - side) / 2)."""

    def apply(image: Image.Image) -> Image.Image:
        if crop is not None:
            side = min(crop, *image.size)
            image = TF.center_crop(image, [side, side])
        image = TF.resize(image, size, interpolation=InterpolationMode.BICUBIC, antialias=True)
        square: Image.Image = TF.center_crop(image, [size, size])  # torchvision is untyped
        return square

    return apply


def fit(data: ImageData, *, image_size: int, channels: int, mode: str = "resize") -> ImageData:
    """Convert channels (grey <-> RGB) and size: "pad" centres the images on a zero border when
    the target is larger by an even margin (MNIST 28 -> 32); otherwise antialiased resizing."""
    images = data.images
    c, h, w = images.shape[1:]
    if (c, h, w) == (channels, image_size, image_size):
        return data
    if c not in (1, 3) or channels not in (1, 3):
        raise DDPMError(f"cannot convert {c} channels to {channels} (data.channels)")
    x = images.float()
    if c == 1 and channels == 3:
        x = x.expand(-1, 3, -1, -1)
    elif c == 3 and channels == 1:
        x = (x * torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)).sum(1, keepdim=True)
    margin_h, margin_w = image_size - h, image_size - w
    if (
        mode == "pad"
        and margin_h >= 0
        and margin_w >= 0
        and margin_h % 2 == 0
        and margin_w % 2 == 0
    ):
        x = F.pad(x, (margin_w // 2, margin_w // 2, margin_h // 2, margin_h // 2))
    elif (h, w) != (image_size, image_size):
        x = F.interpolate(x, size=(image_size, image_size), mode="bilinear", antialias=True,
                          align_corners=False)  # fmt: skip
    return replace(data, images=x.round().clamp(0, 255).to(torch.uint8))
